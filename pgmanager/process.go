package pgmanager

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// StopMode is PostgreSQL's shutdown mode.
type StopMode int

// Shutdown modes, in escalation order.
const (
	// StopSmart waits for clients to disconnect (SIGTERM).
	StopSmart StopMode = iota
	// StopFast disconnects clients and writes a shutdown checkpoint (SIGINT).
	StopFast
	// StopImmediate quits at once; crash recovery at next start (SIGQUIT).
	StopImmediate
)

func (m StopMode) String() string {
	switch m {
	case StopSmart:
		return "smart"
	case StopFast:
		return "fast"
	case StopImmediate:
		return "immediate"
	}
	return fmt.Sprintf("StopMode(%d)", int(m))
}

func (m StopMode) signal() syscall.Signal {
	switch m {
	case StopSmart:
		return syscall.SIGTERM
	case StopFast:
		return syscall.SIGINT
	}
	return syscall.SIGQUIT
}

// postmaster is a running postgres child process.
type postmaster struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // exit status, valid after done
	// Its walreceiver's failures that do not heal by themselves (see
	// noteLine): the last one's time and line, and since when they keep
	// coming.
	failMu              sync.Mutex
	failLast, failSince time.Time
	failLine            string
}

// startPostmaster runs `postgres -D data_dir` as a direct child with a
// parent-death signal (SIGQUIT: immediate shutdown), so a killed agent can
// never leave an unfenced PostgreSQL behind.
func (m *Manager) startPostmaster() (*postmaster, error) {
	// lc_messages=C on the command line, which beats postgresql.conf,
	// postgresql.base.conf and ALTER SYSTEM: the server's log must be in
	// English for the walreceiver failures streamfail.go looks for
	// (isStreamFailure); a user's lc_messages would silently break that
	// detection. Clients can still choose their own (SET lc_messages).
	cmd := exec.Command(filepath.Join(m.cfg.BinDir, "postgres"), "-D", m.cfg.DataDir,
		"--config-file="+filepath.Join(m.cfg.DataDir, confFile), "-c", "lc_messages=C")
	cmd.Env = m.baseEnv()
	cmd.Dir = m.cfg.DataDir
	cmd.SysProcAttr = m.sysProcAttr(true)
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start postgres for %s: %w", m.member, err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		_ = pr.Close()
		_ = pw.Close()
		return nil, fmt.Errorf("start postgres for %s: %w", m.member, err)
	}
	_ = pw.Close()
	p := &postmaster{cmd: cmd, done: make(chan struct{})}
	m.child.Store(p) // at once: Fence must see it from now on
	m.tellKeeper(cmd.Process.Pid)
	go streamLines(pr, m.logger.Named("postgres"), p.noteLine, m.noteTLSLine)
	go func() {
		p.err = cmd.Wait()
		_ = pr.Close()
		close(p.done)
		if m.keeper != nil {
			m.keeper.clearTarget(cmd.Process.Pid)
		}
	}()
	m.logger.Info("postgres started", "pid", cmd.Process.Pid, "data_dir", m.cfg.DataDir)
	return p, nil
}

func (p *postmaster) pid() int { return p.cmd.Process.Pid }

func (p *postmaster) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop signals the postmaster with mode and escalates (smart → fast →
// immediate → SIGKILL) when it does not exit within the step's timeout,
// or, in fast mode, walsenderGrace after checkpointed (nil: never) says
// the shutdown checkpoint is written.
func (p *postmaster) stop(ctx context.Context, mode StopMode, step time.Duration, log hclog.Logger, checkpointed func() bool) error {
	for m := mode; ; m++ {
		sig := syscall.SIGKILL
		if m <= StopImmediate {
			sig = m.signal()
		}
		if sig == syscall.SIGKILL {
			// Every child too: backends must not outlive the postmaster.
			killPostmaster("/proc", p.pid(), true)
		} else {
			_ = p.cmd.Process.Signal(sig)
		}
		t := time.NewTimer(step)
		// A fast shutdown ends when every walsender has had its standby
		// confirm the shutdown checkpoint: one whose standby stopped
		// answering (a cut link, a frozen host) holds the shutdown, and
		// the primary's leader key with it, until TCP or
		// wal_sender_timeout gives up. Once the checkpoint is written
		// (the control file says "shut down") nothing is left to save:
		// after walsenderGrace the stop goes on as immediate, which
		// leaves the cluster cleanly shut down.
		var grace <-chan time.Time
		if m == StopFast && checkpointed != nil {
			g := time.NewTicker(walsenderGrace)
			defer g.Stop()
			grace = g.C
		}
	wait:
		select {
		case <-p.done:
			t.Stop()
			return nil
		case <-ctx.Done():
			t.Stop()
			_ = p.cmd.Process.Signal(syscall.SIGQUIT)
			return fmt.Errorf("stop postgres (%s): %w", m, ctx.Err())
		case <-grace:
			if !checkpointed() {
				goto wait
			}
			t.Stop()
			log.Warn("fast shutdown: the shutdown checkpoint is written but postgres still waits (for walsenders whose standbys do not answer): stopping immediately",
				"waited", walsenderGrace)
			continue
		case <-t.C:
		}
		if sig == syscall.SIGKILL {
			return errors.New("postgres did not exit after SIGKILL")
		}
	}
}

// walsenderGrace is how long a fast shutdown may wait, once its
// shutdown checkpoint is written, before it goes on as immediate. A
// standby that streams confirms the checkpoint within milliseconds.
const walsenderGrace = 2 * time.Second

// tellKeeper names the new postmaster pid to the fence keeper, with its
// start time so that the keeper never kills a process that got the pid
// later.
func (m *Manager) tellKeeper(pid int) {
	if m.keeper == nil {
		return
	}
	st, err := readProcStat("/proc", pid)
	if err != nil {
		// Already gone (a postmaster that failed at once): nothing to kill.
		m.logger.Warn("cannot read the new postmaster's start time; the fence keeper is not told of it", "pid", pid, "error", err)
		return
	}
	m.keeper.setTarget(pid, st.Start)
}

// previousWait bounds how long Start waits for what is left of an
// earlier postmaster.
const previousWait = 30 * time.Second

// waitPrevious waits, before a start, until nothing is left of an earlier
// postmaster that was killed (kill -9, Fence, the fence keeper): its
// orphaned backends can outlive it for a while (they notice its death
// only at their next wait, and a SIGKILLed process in uninterruptible
// sleep exits only when its I/O ends), and while any of them holds the
// old shared memory segment a new postmaster refuses to start
// ("pre-existing shared memory block is still in use"). It polls for
// postgres processes in the data directory (PostgreSQL's children are not
// in the postmaster's process group: each calls setsid) and for the
// segment postmaster.pid names to be gone or detached (nattch 0, what
// PostgreSQL itself checks), for at most previousWait; then it starts
// anyway (PostgreSQL then says what is in the way).
func (m *Manager) waitPrevious(ctx context.Context) {
	// After a crash postmaster.pid stays behind, naming the old segment.
	data, _ := os.ReadFile(filepath.Join(m.cfg.DataDir, "postmaster.pid"))
	seg, hasSeg := pidFileShm(data)
	waitingFor := func() string {
		var what []string
		if left := orphanBackends("/proc", m.cfg.DataDir); len(left) > 0 {
			what = append(what, fmt.Sprintf("postgres processes %v in the data directory", left))
		}
		if n := seg.attached(); hasSeg && n > 0 {
			what = append(what, fmt.Sprintf("shared memory segment %d (key %d), still attached by %d processes", seg.id, seg.key, n))
		}
		return strings.Join(what, "; ")
	}
	what := waitingFor()
	if what == "" {
		return
	}
	m.logger.Info("waiting for what is left of the previous postgres before starting", "waiting_for", what)
	begin := time.Now()
	for what != "" && time.Since(begin) < previousWait && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond): // polling the kernel
		}
		what = waitingFor()
	}
	if what != "" {
		m.logger.Warn("what is left of the previous postgres is still there; starting anyway", "waiting_for", what, "waited", time.Since(begin).Round(time.Millisecond))
		return
	}
	m.logger.Info("previous postgres gone", "waited", time.Since(begin).Round(time.Millisecond))
}

// shmSegment is the System V shared memory segment a postmaster names
// in postmaster.pid (line 7: "key id").
type shmSegment struct {
	key uint32
	id  int
}

// pidFileShm reads the shared memory segment from postmaster.pid; ok is
// false when there is none.
func pidFileShm(data []byte) (seg shmSegment, ok bool) {
	lines := strings.Split(string(data), "\n")
	if len(lines) < 7 {
		return shmSegment{}, false
	}
	f := strings.Fields(lines[6])
	if len(f) != 2 {
		return shmSegment{}, false
	}
	key, err1 := strconv.ParseUint(f[0], 10, 32)
	id, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || id < 0 {
		return shmSegment{}, false
	}
	return shmSegment{key: uint32(key), id: id}, true
}

// attached is the number of processes attached to the segment: 0 when it
// is gone, cannot be read, or its id now names another segment.
func (seg shmSegment) attached() uint64 {
	var d unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(seg.id, unix.IPC_STAT, &d); err != nil || uint32(d.Perm.Key) != seg.key {
		return 0
	}
	return d.Nattch
}
