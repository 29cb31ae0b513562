package pgmanager

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"raftgres/internal/testutil"
)

func TestParsePidFile(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in string
		pid      int
		dir      string
		ok       bool
	}{
		{"postgres 15", "4242\n/var/lib/pg\n1700000000\n5432\n/run\n*\n  5432001  32769\nready   \n", 4242, "/var/lib/pg", true},
		{"pid only", "4242\n", 4242, "", true},
		{"no newline", "4242", 0, "", false},
		{"empty", "", 0, "", false},
		{"garbage", "abc\n/d\n", 0, "", false},
		{"negative", "-1\n/d\n", 0, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pid, dir, ok := parsePidFile([]byte(tc.in))
			if pid != tc.pid || dir != tc.dir || ok != tc.ok {
				t.Fatalf("parsePidFile(%q) = %d %q %v, want %d %q %v", tc.in, pid, dir, ok, tc.pid, tc.dir, tc.ok)
			}
		})
	}
}

// TestIsPostmasterOf runs the identity check against fake procfs trees.
func TestPidFileSocket(t *testing.T) {
	for _, tc := range []struct {
		in   string
		dir  string
		port uint16
		ok   bool
	}{
		{"4242\n/var/lib/pg\n1700000000\n5433\n/var/run/postgresql\n127.0.0.1\n  5433001 0\nready   \n", "/var/run/postgresql", 5433, true},
		{"4242\n/var/lib/pg\n1700000000\n5433\n\n*\n", "", 0, false},
		{"4242\n/var/lib/pg\n1700000000\n", "", 0, false},
		{"4242\n/var/lib/pg\n1700000000\nnope\n/tmp\n", "", 0, false},
		{"4242\n/var/lib/pg\n1700000000\n5433\nrelative\n", "", 0, false},
		{"", "", 0, false},
	} {
		dir, port, ok := pidFileSocket([]byte(tc.in))
		if dir != tc.dir || port != tc.port || ok != tc.ok {
			t.Errorf("%q: %q %d %v, want %q %d %v", tc.in, dir, port, ok, tc.dir, tc.port, tc.ok)
		}
	}
}

func TestIsPostmasterOf(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	other := t.TempDir()
	type proc struct{ exe, cwd, cmdline string }
	for _, tc := range []struct {
		name    string
		p       proc
		pidFile string // data dir named in postmaster.pid
		want    bool
	}{
		{"our postmaster", proc{exe: "/usr/lib/postgresql/15/bin/postgres", cwd: dataDir}, dataDir, true},
		{"upgraded binary", proc{exe: "/usr/lib/postgresql/15/bin/postgres (deleted)", cwd: dataDir}, dataDir, true},
		{"reused pid", proc{exe: "/usr/bin/sleep", cwd: dataDir}, dataDir, false},
		{"postmaster of another data dir", proc{exe: "/usr/lib/postgresql/15/bin/postgres", cwd: other}, dataDir, false},
		{"pid file of another data dir", proc{exe: "/usr/lib/postgresql/15/bin/postgres", cwd: dataDir}, other, false},
		{"exe unreadable, cmdline postgres", proc{cmdline: "/usr/lib/postgresql/15/bin/postgres\x00-D\x00" + dataDir + "\x00", cwd: dataDir}, dataDir, true},
		{"exe unreadable, cmdline sleep", proc{cmdline: "sleep\x00100\x00"}, dataDir, false},
		{"nothing readable: assume it is", proc{}, dataDir, true},
		{"nothing readable, wrong pid file", proc{}, other, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			dir := filepath.Join(root, "77")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if tc.p.exe != "" {
				must(t, os.Symlink(tc.p.exe, filepath.Join(dir, "exe")))
			}
			if tc.p.cwd != "" {
				must(t, os.Symlink(tc.p.cwd, filepath.Join(dir, "cwd")))
			}
			if tc.p.cmdline != "" {
				must(t, os.WriteFile(filepath.Join(dir, "cmdline"), []byte(tc.p.cmdline), 0o644))
			}
			if got := isPostmasterOf(77, tc.pidFile, dataDir, root); got != tc.want {
				t.Fatalf("isPostmasterOf = %v, want %v", got, tc.want)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestStalePidFileIsNotAPostmaster: postmaster.pid naming a live process
// that is not a postmaster (a reused pid) is neither running nor fenced.
func TestStalePidFileIsNotAPostmaster(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sleep := exec.Command("sleep", "60")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleep.Process.Kill(); _ = sleep.Wait() })
	pidFile := fmt.Sprintf("%d\n%s\n", sleep.Process.Pid, dir)
	must(t, os.WriteFile(filepath.Join(dir, "postmaster.pid"), []byte(pidFile), 0o600))
	m, err := New(Config{Listen: "127.0.0.1:5432", DataDir: dir, BinDir: pgBin,
		Superuser: Credentials{Username: "postgres"}, Replication: Credentials{Username: "r"}}, "pg1", nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Running() || m.Fence() {
		t.Fatal("a sleep named in postmaster.pid was taken for a postmaster")
	}
	if st, err := m.Status(context.Background()); err != nil || st.Running {
		t.Fatalf("status: %+v (%v)", st, err)
	}
	if !processAlive(sleep.Process.Pid) {
		t.Fatal("the sleep was signalled")
	}
	_ = sleep.Process.Kill()
	_ = sleep.Wait()
	if processAlive(sleep.Process.Pid) {
		t.Fatal("a reaped process is alive")
	}
}

// startByHand starts postgres on m's data directory the way a DBA would:
// not through m (the test process is its parent, so it is reaped).
func startByHand(t *testing.T, e *pgEnv, m *Manager) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(filepath.Join(pgBin, "postgres"), "-D", m.cfg.DataDir)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: e.runAs}
	cmd.Stdout, cmd.Stderr = testWriter{t}, testWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); <-done })
	ctx := ctxT(t, time.Minute)
	testutil.WaitFor(t, 30*time.Second, "the hand-started postgres to accept connections", func() (bool, error) {
		conn, err := m.connect(ctx)
		if err == nil {
			_ = conn.Close(ctx)
		}
		return err == nil, err
	})
	return cmd
}

func TestForeignPostmaster(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 3*time.Minute)
	cfg := e.config(t, "pg1")
	first := e.manager(t, "pg1", cfg)
	if _, err := first.Init(ctx, Desired{}); err != nil {
		t.Fatal(err)
	}
	if err := first.Stop(ctx, StopFast); err != nil {
		t.Fatal(err)
	}
	byHand := startByHand(t, e, first)

	m := e.manager(t, "pg1", cfg) // a fresh agent
	if !m.Running() || m.Exited() != nil {
		t.Fatalf("foreign postmaster: running %v, exited channel %v", m.Running(), m.Exited())
	}
	st, err := m.Status(ctx)
	if err != nil || !st.Running || !st.Foreign || st.InRecovery || st.SystemID == "" {
		t.Fatalf("status of the foreign postmaster: %+v (%v)", st, err)
	}
	src := &Upstream{Name: "elsewhere", Host: "127.0.0.1", Port: 1}
	for name, op := range map[string]func() error{
		"start":           func() error { return m.Start(ctx, Desired{}) },
		"rewind":          func() error { return m.Rewind(ctx, Desired{Standby: src}) },
		"remove data dir": m.RemoveDataDir,
		"reclone":         func() error { return m.Reclone(ctx, Desired{Standby: src}) },
		"clone":           func() error { return m.Clone(ctx, Desired{Standby: src}) },
	} {
		if err := op(); err == nil || !strings.Contains(err.Error(), "postmaster") {
			t.Errorf("%s under a foreign postmaster: %v, want a refusal", name, err)
		}
	}
	if !m.HasDataDir() {
		t.Fatal("data directory gone")
	}
	// Reload reaches it too.
	if _, err := m.Reload(ctx, Desired{SyncStandbyNames: `"nobody"`}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the foreign postmaster to reload", func() (bool, error) {
		st, err := m.Status(ctx)
		return st.SyncStandbyNames == `"nobody"`, err
	})
	// Stop signals it and waits for it to exit.
	if err := m.Stop(ctx, StopFast); err != nil {
		t.Fatal(err)
	}
	if m.Running() || processAlive(byHand.Process.Pid) {
		t.Fatal("foreign postmaster still running after Stop")
	}
	if cd, err := m.ControlData(ctx); err != nil || cd["Database cluster state"] != "shut down" {
		t.Fatalf("after a fast stop: %q (%v)", cd["Database cluster state"], err)
	}

	// Fence: immediate shutdown of a foreign postmaster.
	byHand = startByHand(t, e, m)
	if !m.Fence() {
		t.Fatal("Fence found nothing to signal")
	}
	testutil.WaitFor(t, 20*time.Second, "the fenced postmaster to exit", func() (bool, error) {
		return !processAlive(byHand.Process.Pid) && !m.Running(), nil
	})
	if cd, err := m.ControlData(ctx); err != nil || cd["Database cluster state"] != "in production" {
		t.Fatalf("after fencing (immediate): %q (%v)", cd["Database cluster state"], err)
	}
	if m.Fence() {
		t.Fatal("Fence signalled something with nothing running")
	}
	// And the agent can start its own child again.
	if err := m.Start(ctx, Desired{}); err != nil {
		t.Fatal(err)
	}
	if st, err := m.Status(ctx); err != nil || st.Foreign {
		t.Fatalf("own child reported as foreign: %+v (%v)", st, err)
	}
}

// TestFenceDuringStart: Fence answers while Start holds the manager's
// lock waiting for readiness, and stops the postmaster being started.
func TestFenceDuringStart(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 2*time.Minute)
	m := e.initPrimary(t, ctx, "pg1")
	if err := m.Stop(ctx, StopFast); err != nil {
		t.Fatal(err)
	}
	// Race Fence against Start: it must not wait for Start's lock, and
	// whichever wins, the postmaster ends up stopped.
	errc := make(chan error, 1)
	go func() { errc <- m.Start(ctx, Desired{}) }()
	var fenced bool
	testutil.WaitFor(t, 30*time.Second, "Fence to find the starting postmaster", func() (bool, error) {
		fenced = m.Fence()
		return fenced, nil
	})
	select {
	case err := <-errc:
		if err == nil {
			// Start won the race and returned before the SIGQUIT landed.
			testutil.WaitFor(t, 20*time.Second, "fenced postmaster to exit", func() (bool, error) { return !m.Running(), nil })
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Start did not return after Fence")
	}
	if m.Running() {
		t.Fatal("still running after Fence")
	}
}
