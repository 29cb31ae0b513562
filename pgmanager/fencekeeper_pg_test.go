package pgmanager

import (
	"context"
	"slices"
	"syscall"
	"testing"
	"time"
)

// TestFenceKillsAll: Fence SIGKILLs the postmaster and every backend,
// even with the postmaster stopped (SIGSTOP), and returns once they are
// gone.
func TestFenceKillsAll(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 3*time.Minute)
	m := e.initPrimary(t, ctx, "pg1")
	busy, err := m.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = busy.Exec(context.Background(), "SELECT pg_sleep(60)") }()
	pm := m.child.Load().pid()
	var procs []int
	waitFor(t, 10*time.Second, "a busy backend", func() (bool, error) {
		procs = orphanBackends("/proc", m.cfg.DataDir)
		return len(procs) >= 7, nil // postmaster, 5 auxiliaries, the backend
	})
	if err := syscall.Kill(pm, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if !m.Fence() {
		t.Fatal("Fence reported no postmaster")
	}
	took := time.Since(start)
	if left := slices.DeleteFunc(procs, func(pid int) bool { return !processAlive(pid) }); len(left) > 0 {
		t.Fatalf("Fence returned after %s with %v still alive", took, left)
	}
	t.Logf("Fence returned after %s with all %d processes gone", took, len(procs))
	waitFor(t, 5*time.Second, "the manager to see postgres exited", func() (bool, error) { return !m.Running(), nil })
	if err := m.Start(ctx, Desired{}); err != nil {
		t.Fatalf("start after the fence: %v", err)
	}
}
