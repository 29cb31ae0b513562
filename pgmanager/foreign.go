package pgmanager

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A foreign postmaster is one this Manager did not start (a DBA's pg_ctl,
// or the child of a previous agent that survived it) but that runs on this
// data directory. It is seen everywhere a child is: Running, Status, Stop,
// Fence, and every operation that would modify the data directory refuses
// while it lives.

// parsePidFile reads postmaster.pid: the pid on line 1 and the data
// directory on line 2.
func parsePidFile(data []byte) (pid int, dataDir string, ok bool) {
	lines := strings.SplitN(string(data), "\n", 3)
	if len(lines) < 2 {
		return 0, "", false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(lines[0]))
	if err != nil || pid <= 0 {
		return 0, "", false
	}
	return pid, strings.TrimSpace(lines[1]), true
}

// pidFileSocket reads the port (line 4) and first Unix socket directory
// (line 5) from postmaster.pid; ok is false when either is missing (a
// server starting up, or one without Unix sockets).
func pidFileSocket(data []byte) (dir string, port uint16, ok bool) {
	lines := strings.Split(string(data), "\n")
	if len(lines) < 5 {
		return "", 0, false
	}
	p, err := strconv.ParseUint(strings.TrimSpace(lines[3]), 10, 16)
	dir = strings.TrimSpace(lines[4])
	if err != nil || p == 0 || dir == "" || !filepath.IsAbs(dir) {
		return "", 0, false
	}
	return dir, uint16(p), true
}

// foreignPID returns the pid of a live postmaster that owns the data
// directory and is not this Manager's running child. A stale
// postmaster.pid whose pid now belongs to another process (a reused pid,
// a postgres of another data directory) does not count.
func (m *Manager) foreignPID() (int, bool) {
	data, err := os.ReadFile(filepath.Join(m.cfg.DataDir, "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	pid, dir, ok := parsePidFile(data)
	if !ok {
		return 0, false
	}
	if p := m.child.Load(); p != nil && !p.exited() && p.pid() == pid {
		return 0, false
	}
	if !processAlive(pid) || !isPostmasterOf(pid, dir, m.cfg.DataDir, "/proc") {
		return 0, false
	}
	return pid, true
}

// processAlive reports whether pid names a process that is not a zombie.
func processAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	// "pid (comm) S ...": comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 || i+2 >= len(data) {
		return true
	}
	return data[i+2] != 'Z' && data[i+2] != 'X'
}

// isPostmasterOf decides from procfs (root procRoot, "/proc" outside
// tests) whether live process pid is a postgres postmaster serving
// dataDir, given pidFileDir, the directory postmaster.pid names. Where
// procfs cannot be read (another OS user) it answers yes: the question
// guards deleting a data directory, so doubt means "a postmaster owns it".
func isPostmasterOf(pid int, pidFileDir, dataDir, procRoot string) bool {
	if !sameDir(pidFileDir, dataDir) {
		return false
	}
	base := filepath.Join(procRoot, strconv.Itoa(pid))
	if exe, err := os.Readlink(filepath.Join(base, "exe")); err == nil {
		if !isPostgresBinary(strings.TrimSuffix(exe, " (deleted)")) {
			return false
		}
	} else if cmdline, err := os.ReadFile(filepath.Join(base, "cmdline")); err == nil {
		argv0, _, _ := bytes.Cut(cmdline, []byte{0})
		if !isPostgresBinary(string(argv0)) && !bytes.HasPrefix(argv0, []byte("postgres:")) {
			return false
		}
	}
	// The postmaster runs in its data directory (ChangeToDataDir).
	if cwd, err := os.Readlink(filepath.Join(base, "cwd")); err == nil {
		return sameDir(strings.TrimSuffix(cwd, " (deleted)"), dataDir)
	}
	return true
}

func isPostgresBinary(path string) bool {
	b := filepath.Base(path)
	return b == "postgres" || b == "postmaster"
}

// sameDir reports whether a and b name the same directory.
func sameDir(a, b string) bool {
	if filepath.Clean(a) == filepath.Clean(b) {
		return true
	}
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

// stopForeign shuts down a foreign postmaster with mode, escalating as for
// a child, and polls until it is gone. Before each signal it checks that
// pid still is the postmaster of this data directory.
func (m *Manager) stopForeign(ctx context.Context, pid int, mode StopMode) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for md := mode; ; md++ {
		cur, ok := m.foreignPID()
		if !ok || cur != pid {
			return nil
		}
		if md > StopImmediate {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			if pgid, err := syscall.Getpgid(pid); err == nil && pgid == pid {
				_ = syscall.Kill(-pid, syscall.SIGKILL) // its backends too
			}
		} else if err := syscall.Kill(pid, md.signal()); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("signal postmaster %d: %w", pid, err)
		}
		deadline := time.Now().Add(m.step)
		for processAlive(pid) && time.Now().Before(deadline) {
			select {
			case <-ctx.Done():
				_ = syscall.Kill(pid, syscall.SIGQUIT)
				return fmt.Errorf("stop postmaster %d (%s): %w", pid, md, ctx.Err())
			case <-tick.C:
			}
		}
		if !processAlive(pid) {
			return nil
		}
		if md > StopImmediate {
			return fmt.Errorf("postmaster %d did not exit after SIGKILL", pid)
		}
	}
}

// orphanBackends lists live processes under procRoot that run in dataDir
// (postgres backends chdir there): after a postmaster was killed, its
// backends can outlive it briefly, and a new postmaster refuses to start
// while they hold the old shared memory ("pre-existing shared memory block
// is still in use").
func orphanBackends(procRoot, dataDir string) []int {
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		exe, err := os.Readlink(filepath.Join(procRoot, e.Name(), "exe"))
		if err != nil || !isPostgresBinary(strings.TrimSuffix(exe, " (deleted)")) {
			continue // not postgres (a shell cd'ed there), or not ours to read
		}
		cwd, err := os.Readlink(filepath.Join(procRoot, e.Name(), "cwd"))
		if err != nil || !sameDir(strings.TrimSuffix(cwd, " (deleted)"), dataDir) {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// waitOrphans waits (polling, at most d) until no orphan backend of a
// killed postmaster runs in the data directory. It reports the ones left.
func (m *Manager) waitOrphans(ctx context.Context, d time.Duration) []int {
	deadline := time.Now().Add(d)
	for {
		left := orphanBackends("/proc", m.cfg.DataDir)
		if len(left) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return left
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}
