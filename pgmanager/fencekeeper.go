package pgmanager

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"raftgres/internal/boottime"
	"raftgres/internal/vip"
)

// The fence keeper is a small child process of the agent that SIGKILLs
// the postmaster's process group when the lease ends, even if the agent
// is stopped (SIGSTOP), wedged or dead by then: the fencer goroutine of
// the agent freezes with it, the keeper does not. The agent starts it in
// its own process group (a SIGSTOP of the agent's group does not reach
// it) with a pipe on its stdin, and tells it over that pipe what to kill
// and when.
//
// Protocol: the agent writes lines of ASCII text, each the whole state:
//
//	fence PID START DEADLINE\n
//
// PID is the postmaster (the leader of its own process group: PostgreSQL
// is started with Setpgid), 0 for none; START its start time, field 22
// of /proc/PID/stat (clock ticks since boot), 0 with PID 0, so that a
// recycled pid is never killed; DEADLINE the lease's end as a
// CLOCK_BOOTTIME reading in nanoseconds, 0 for disarmed. Numbers are
// decimal without sign or leading zeros. A line replaces everything the
// keeper knew; there is nothing else. A line that does not parse is
// treated as the end of the pipe: the keeper keeps the last good state.
//
// The keeper kills the group when CLOCK_BOOTTIME reaches DEADLINE, once
// per deadline. When its stdin ends (the agent died) it keeps the last
// deadline, fires at it if armed, then exits; disarmed, it exits at once.
// With a VIP (`fence-keeper --vip ADDRESS/LEN --vip-interface IF`, given
// when the agent has a vip: section) it also removes that address from the
// interface when it fires, right after the kill: an agent that is stopped
// or dead can no more remove it than fence PostgreSQL. The protocol is
// the same with or without.
// It logs lines "LEVEL message" to stderr, which the agent forwards to its
// logger; if that pipe breaks it writes to fd 3 (the agent's own stderr,
// such as the journal) instead.

// FenceKeeperCommand is the hidden raftgres subcommand that runs
// RunFenceKeeper.
const FenceKeeperCommand = "fence-keeper"

// maxFenceLine bounds a protocol line (without its newline); a real one
// is at most 6+8+21+20 bytes.
const maxFenceLine = 80

// maxPid is Linux's PID_MAX_LIMIT.
const maxPid = 1 << 22

// fenceState is what the keeper knows: one protocol line.
type fenceState struct {
	Pid      int    // the postmaster, leader of its process group; 0: none
	Start    uint64 // its start time (/proc/PID/stat field 22); 0 with Pid 0
	Deadline int64  // CLOCK_BOOTTIME nanoseconds; 0: disarmed
}

// line encodes s as a protocol line, newline included.
func (s fenceState) line() string {
	return fmt.Sprintf("fence %d %d %d\n", s.Pid, s.Start, s.Deadline)
}

func (s fenceState) armed() bool { return s.Deadline != 0 }

// parseFenceLine decodes one protocol line (without its newline). It is
// strict: anything but exactly the encoder's output is an error.
func parseFenceLine(line []byte) (fenceState, error) {
	if len(line) > maxFenceLine {
		return fenceState{}, fmt.Errorf("fence line of %d bytes (at most %d)", len(line), maxFenceLine)
	}
	f := bytes.Split(line, []byte{' '})
	if len(f) != 4 || string(f[0]) != "fence" {
		return fenceState{}, fmt.Errorf("fence line %q: want \"fence PID START DEADLINE\"", line)
	}
	pid, err := parseDecimal(f[1], maxPid)
	if err != nil {
		return fenceState{}, fmt.Errorf("fence line %q: pid: %w", line, err)
	}
	start, err := parseDecimal(f[2], math.MaxUint64)
	if err != nil {
		return fenceState{}, fmt.Errorf("fence line %q: start time: %w", line, err)
	}
	deadline, err := parseDecimal(f[3], math.MaxInt64)
	if err != nil {
		return fenceState{}, fmt.Errorf("fence line %q: deadline: %w", line, err)
	}
	switch {
	case pid == 1:
		// kill(-1, SIGKILL) kills every process the keeper may signal.
		return fenceState{}, fmt.Errorf("fence line %q: pid 1 is never a postmaster", line)
	case pid == 0 && start != 0:
		return fenceState{}, fmt.Errorf("fence line %q: a start time without a pid", line)
	case pid != 0 && start == 0:
		return fenceState{}, fmt.Errorf("fence line %q: a pid without its start time", line)
	}
	return fenceState{Pid: int(pid), Start: start, Deadline: int64(deadline)}, nil
}

// parseDecimal parses an unsigned decimal without sign or leading zeros,
// at most limit.
func parseDecimal(b []byte, limit uint64) (uint64, error) {
	if len(b) == 0 || len(b) > 20 {
		return 0, fmt.Errorf("%q is not a number", b)
	}
	if b[0] == '0' && len(b) > 1 {
		return 0, fmt.Errorf("%q has a leading zero", b)
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not a number", b)
		}
		d := uint64(c - '0')
		if n > (limit-d)/10 {
			return 0, fmt.Errorf("%q is out of range", b)
		}
		n = n*10 + d
	}
	return n, nil
}

// keeperAction is what the keeper does next.
type keeperAction int

const (
	// keeperWait: wait for a line, the end of the pipe or the deadline.
	keeperWait keeperAction = iota
	// keeperFire: the deadline has come: kill the postmaster's group.
	keeperFire
	// keeperExit: the agent is gone and nothing is armed.
	keeperExit
)

// keeperNext decides, from the state, a CLOCK_BOOTTIME reading and
// whether the pipe has ended, what the keeper does next. After a fire the
// keeper disarms (each deadline fires once).
func keeperNext(s fenceState, now int64, closed bool) keeperAction {
	switch {
	case s.armed() && now >= s.Deadline:
		return keeperFire
	case closed && !s.armed():
		return keeperExit
	}
	return keeperWait
}

// procStat is what the keeper reads of /proc/PID/stat.
type procStat struct {
	State byte   // field 3: R, S, D, T, Z…
	Ppid  int    // field 4
	Pgrp  int    // field 5
	Start uint64 // field 22, clock ticks since boot
}

func (st procStat) dead() bool { return st.State == 'Z' || st.State == 'X' }

// readProcStat reads /proc/PID/stat under procRoot.
func readProcStat(procRoot string, pid int) (procStat, error) {
	data, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(data)
}

// parseProcStat parses a /proc/PID/stat line: "pid (comm) state ppid
// pgrp …", where comm may hold spaces and parentheses.
func parseProcStat(data []byte) (procStat, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return procStat{}, errors.New("malformed /proc stat")
	}
	f := bytes.Fields(data[i+1:]) // f[0] is field 3
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, errors.New("malformed /proc stat")
	}
	ppid, err1 := strconv.Atoi(string(f[1]))
	pgrp, err2 := strconv.Atoi(string(f[2]))
	start, err3 := strconv.ParseUint(string(f[19]), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return procStat{}, errors.New("malformed /proc stat")
	}
	return procStat{State: f[0][0], Ppid: ppid, Pgrp: pgrp, Start: start}, nil
}

// fenceAction is what the keeper does to its target when it fires.
type fenceAction int

const (
	fenceNothing fenceAction = iota
	// fenceTree: killPostmaster, the postmaster and every child of it.
	fenceTree
	// fenceGroup: the postmaster is gone; kill what is left of its
	// process group.
	fenceGroup
)

// fenceVictim decides what the keeper kills for s, given the target's
// /proc/PID/stat st (gone when it does not exist), and why.
//
// A pid is never reused while a process still uses it as its process
// group id, so when the postmaster itself is gone, signalling its group
// reaches only what is left of that group, or no one.
func fenceVictim(s fenceState, st procStat, gone bool) (fenceAction, string) {
	switch {
	case s.Pid == 0:
		return fenceNothing, "no postgres was running"
	case gone:
		return fenceGroup, fmt.Sprintf("postmaster %d already gone; killed what was left of its process group", s.Pid)
	case st.Start != s.Start:
		return fenceNothing, fmt.Sprintf("pid %d is another process now (start time %d, the postmaster's was %d): not killed", s.Pid, st.Start, s.Start)
	}
	return fenceTree, fmt.Sprintf("killed postmaster %d", s.Pid)
}

// fireFence kills what fenceVictim chooses and says what it did.
func fireFence(s fenceState, procRoot string) string {
	st, err := readProcStat(procRoot, s.Pid)
	gone := errors.Is(err, os.ErrNotExist)
	if s.Pid != 0 && err != nil && !gone {
		return fmt.Sprintf("cannot read the postmaster's /proc entry (%v): not killed", err)
	}
	action, why := fenceVictim(s, st, gone)
	switch action {
	case fenceGroup:
		_ = syscall.Kill(-s.Pid, syscall.SIGKILL)
	case fenceTree:
		kids := killPostmaster(procRoot, s.Pid, st.Pgrp == s.Pid)
		why += fmt.Sprintf(" and its %d processes %v", len(kids), kids)
	}
	return why
}

// killPostmaster SIGKILLs postmaster pm and every process it started, and
// returns those. A process-group kill alone is not enough: PostgreSQL
// makes each child (backend, walsender, checkpointer…) a session and
// group leader (setsid in InitPostmasterChild), so kill(-pm) reaches the
// postmaster only. Hence: stop the postmaster (SIGSTOP: it forks nothing
// more and reaps nothing, so its children keep their pids and their
// parent), SIGKILL each child and the child's own process group (an
// archive_command shell), then the postmaster and, when it leads one
// (leader), its group. Children forked before the stop took effect (a
// postmaster in uninterruptible sleep stops late) are still its children
// until it exits, and a second pass gets them. Backends of a postmaster
// that was already gone are out of reach here: they notice its death at
// their next wait (and never finish a synchronous commit wait without
// it); Start waits for them.
func killPostmaster(procRoot string, pm int, leader bool) []int {
	_ = syscall.Kill(pm, syscall.SIGSTOP)
	for deadline := time.Now().Add(50 * time.Millisecond); time.Now().Before(deadline); {
		st, err := readProcStat(procRoot, pm)
		if err != nil || st.State == 'T' || st.State == 't' || st.dead() {
			break
		}
		time.Sleep(time.Millisecond) // polling the kernel
	}
	var killed []int
	sweep := func() {
		for _, c := range childrenOf(procRoot, pm) {
			if slices.Contains(killed, c.pid) {
				continue
			}
			if c.pgrp == c.pid {
				_ = syscall.Kill(-c.pid, syscall.SIGKILL)
			}
			_ = syscall.Kill(c.pid, syscall.SIGKILL)
			killed = append(killed, c.pid)
		}
	}
	sweep()
	if leader {
		_ = syscall.Kill(-pm, syscall.SIGKILL)
	}
	_ = syscall.Kill(pm, syscall.SIGKILL)
	sweep()
	return killed
}

type child struct{ pid, pgrp int }

// childrenOf lists the live (not zombie) children of ppid under procRoot.
func childrenOf(procRoot string, ppid int) []child {
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil
	}
	var kids []child
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readProcStat(procRoot, pid)
		if err != nil || st.Ppid != ppid || st.dead() {
			continue
		}
		kids = append(kids, child{pid: pid, pgrp: st.Pgrp})
	}
	return kids
}

// fenceLogFDEnv names the keeper's fallback log descriptor (the agent's
// stderr), set by the agent that passes it.
const fenceLogFDEnv = "RAFTGRES_FENCE_LOG_FD"

// FenceKeeperMain runs the fence keeper on this process's stdin and
// stderr (`raftgres fence-keeper`) and returns its exit code. v is the
// VIP it removes when it fires (zero: none).
func FenceKeeperMain(v vip.Config) int {
	var fallback io.Writer
	if fd, err := strconv.Atoi(os.Getenv(fenceLogFDEnv)); err == nil && fd > 2 {
		fallback = os.NewFile(uintptr(fd), "agent-stderr")
	}
	return RunFenceKeeper(os.Stdin, os.Stderr, fallback, v)
}

// Fence keeper flags naming the VIP (cmd/raftgres/fencekeeper.go).
const (
	FenceKeeperVIPFlag          = "vip"
	FenceKeeperVIPInterfaceFlag = "vip-interface"
)

// RunFenceKeeper is the fence keeper's main loop (the hidden subcommand
// fence-keeper): it reads protocol lines from in, logs to log (and, once
// that breaks, to fallback, which may be nil) and returns the exit code.
//
// It waits with a timerfd on CLOCK_BOOTTIME armed with the absolute
// deadline (TFD_TIMER_ABSTIME), polled together with its stdin: the
// kernel wakes it at the deadline even when the host was suspended in
// between (a Go timer counts on CLOCK_MONOTONIC, which stops during a
// suspend, so it would fire late by the time slept), and it does not
// spin. While armed, poll also times out every second and the keeper
// rereads CLOCK_BOOTTIME, a safety net should the timerfd ever fail to
// wake it; without a timerfd (creation failed) that 10 ms polling is all.
func RunFenceKeeper(in *os.File, log, fallback io.Writer, v vip.Config) int {
	// SIGPIPE: a write to a broken stderr must fail, not kill the keeper
	// (the fallback takes over). SIGHUP, SIGINT: meant for the agent's
	// terminal. SIGTTOU: a background process group writing to a terminal
	// with tostop set would be stopped.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGTTOU)
	l := newKeeperLog(log, fallback)
	defer l.close(time.Second)
	k := &keeper{in: int(in.Fd()), log: l, procRoot: "/proc", now: boottime.Raw}
	if v.Enabled() {
		k.vip = v.String()
		k.removeVIP = func() error { return vip.Remove(v) }
		// A stale address is not removed here: the agent does that at its
		// start, and a keeper started for a live holder must not.
	}
	return k.run()
}

type keeper struct {
	in       int // stdin
	log      *keeperLog
	procRoot string
	now      func() int64
	s        fenceState
	closed   bool
	dec      fenceDecoder
	// removeVIP removes the VIP (nil: none), named vip in the log.
	removeVIP func() error
	vip       string
}

func (k *keeper) run() int {
	tfd, err := unix.TimerfdCreate(unix.CLOCK_BOOTTIME, unix.TFD_CLOEXEC|unix.TFD_NONBLOCK)
	if err != nil {
		k.log.printf("WARN", "no timerfd on CLOCK_BOOTTIME (%v): polling the clock every 10ms", err)
		tfd = -1
	} else {
		defer unix.Close(tfd)
	}
	k.log.printf("INFO", "started (pid %d)", os.Getpid())
	var set int64 = -1 // the deadline the timerfd holds
	for {
		now := k.now()
		switch keeperNext(k.s, now, k.closed) {
		case keeperFire:
			k.fire(now)
			continue
		case keeperExit:
			k.log.printf("INFO", "agent gone, nothing armed: exiting")
			return 0
		}
		if tfd >= 0 && set != k.s.Deadline {
			// Value zero disarms; an absolute deadline already passed
			// fires at once.
			spec := unix.ItimerSpec{Value: unix.NsecToTimespec(k.s.Deadline)}
			if err := unix.TimerfdSettime(tfd, unix.TFD_TIMER_ABSTIME, &spec, nil); err != nil {
				k.log.printf("WARN", "arm timerfd: %v: polling the clock every 10ms", err)
				unix.Close(tfd)
				tfd = -1
			}
			set = k.s.Deadline
		}
		timeout := -1
		if k.s.armed() {
			timeout = 1000
			if tfd < 0 {
				timeout = 10
			}
		}
		fds := make([]unix.PollFd, 0, 2)
		if tfd >= 0 {
			fds = append(fds, unix.PollFd{Fd: int32(tfd), Events: unix.POLLIN})
		}
		if !k.closed {
			fds = append(fds, unix.PollFd{Fd: int32(k.in), Events: unix.POLLIN})
		}
		if len(fds) == 0 { // disarmed and closed: keeperExit above
			return 0
		}
		if _, err := unix.Poll(fds, timeout); err != nil && !errors.Is(err, unix.EINTR) {
			k.log.printf("ERROR", "poll: %v", err)
			return 1 // not reached in practice; the agent restarts a dead keeper
		}
		for _, fd := range fds {
			switch {
			case fd.Revents == 0:
			case int(fd.Fd) == tfd:
				var b [8]byte
				_, _ = unix.Read(tfd, b[:]) // clear the expiration count
			default:
				k.readInput()
			}
		}
	}
}

// fire kills what the state names, removes the VIP, and disarms.
func (k *keeper) fire(now int64) {
	level := "WARN"
	if k.s.Pid == 0 {
		// Typically the same lease end again, with the postmaster
		// this keeper killed gone: the agent's state has it armed.
		level = "INFO"
	}
	what := fireFence(k.s, k.procRoot)
	if k.removeVIP != nil {
		if err := k.removeVIP(); err != nil {
			what += fmt.Sprintf("; cannot remove vip %s: %v", k.vip, err)
			level = "ERROR"
		} else {
			what += "; vip " + k.vip + " removed (if it was there)"
		}
	}
	k.log.printf(level, "lease ended at %s (%s late): %s",
		boottime.FromNanos(k.s.Deadline).UTC().Format(time.RFC3339Nano), time.Duration(now-k.s.Deadline), what)
	k.s.Deadline = 0
}

// readInput reads what stdin has and applies every complete line.
func (k *keeper) readInput() {
	var b [512]byte
	n, err := unix.Read(k.in, b[:])
	if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
		return
	}
	if n <= 0 {
		k.endInput("the agent closed the pipe (it exited or died)", err)
		return
	}
	states, err := k.dec.feed(b[:n])
	for _, s := range states {
		k.apply(s)
	}
	if err != nil {
		k.endInput("protocol error", err)
	}
}

// fenceDecoder cuts the bytes read from the pipe into protocol lines and
// decodes them.
type fenceDecoder struct {
	buf []byte // an incomplete line
}

// feed takes the next bytes of the stream and returns the states of the
// lines they complete, in order. After an error (a bad line, or more
// than maxFenceLine bytes without a newline) the stream is over: the
// states before it are valid, nothing after it is.
func (d *fenceDecoder) feed(p []byte) ([]fenceState, error) {
	d.buf = append(d.buf, p...)
	var states []fenceState
	for {
		i := bytes.IndexByte(d.buf, '\n')
		if i < 0 {
			if len(d.buf) > maxFenceLine {
				return states, fmt.Errorf("no newline in %d bytes", len(d.buf))
			}
			return states, nil
		}
		s, err := parseFenceLine(d.buf[:i])
		d.buf = d.buf[i+1:]
		if err != nil {
			return states, err
		}
		states = append(states, s)
	}
}

func (k *keeper) apply(s fenceState) {
	old := k.s
	k.s = s
	if s.Pid != old.Pid {
		if s.Pid == 0 {
			k.log.printf("INFO", "postgres stopped (was pid %d)", old.Pid)
		} else {
			k.log.printf("INFO", "postgres runs as pid %d (start time %d)", s.Pid, s.Start)
		}
	}
	if s.armed() != old.armed() {
		if s.armed() {
			k.log.printf("INFO", "armed: lease ends at %s", boottime.FromNanos(s.Deadline).UTC().Format(time.RFC3339Nano))
		} else {
			k.log.printf("INFO", "disarmed")
		}
	}
}

// endInput stops reading stdin: the keeper keeps its last state.
func (k *keeper) endInput(why string, err error) {
	k.closed = true
	msg := why
	if err != nil {
		msg += ": " + err.Error()
	}
	if k.s.armed() {
		k.log.printf("WARN", "%s; keeping the lease end %s armed", msg, boottime.FromNanos(k.s.Deadline).UTC().Format(time.RFC3339Nano))
	} else {
		k.log.printf("INFO", "%s", msg)
	}
}

// keeperLog writes log lines from a goroutine, so the keeper never blocks
// on a full pipe to a stopped agent; lines that do not fit are dropped.
type keeperLog struct {
	ch   chan string
	done chan struct{}
}

func newKeeperLog(w, fallback io.Writer) *keeperLog {
	l := &keeperLog{ch: make(chan string, 64), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for line := range l.ch {
			if w != nil {
				if _, err := io.WriteString(w, line+"\n"); err == nil {
					continue
				}
				w = nil // the agent's end is gone
			}
			if fallback != nil {
				_, _ = fmt.Fprintf(fallback, "%s raftgres fence-keeper[%d]: %s\n",
					time.Now().UTC().Format(time.RFC3339Nano), os.Getpid(), line)
			}
		}
	}()
	return l
}

func (l *keeperLog) printf(level, format string, args ...any) {
	select {
	case l.ch <- level + " " + fmt.Sprintf(format, args...):
	default:
	}
}

// close flushes what it can within d.
func (l *keeperLog) close(d time.Duration) {
	close(l.ch)
	select {
	case <-l.done:
	case <-time.After(d):
	}
}
