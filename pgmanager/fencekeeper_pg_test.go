package pgmanager

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"raftgres/internal/boottime"
	"raftgres/internal/testutil"
)

// TestFenceKeeperKillsPostgres: with the keeper armed at now+500ms and
// nothing more done by the Go code that armed it, the postmaster and all
// its backends are gone shortly after the deadline; a start after that
// SIGKILL succeeds, and the deadline holds for the postmaster of a later
// restart. It also checks that lc_messages is pinned to C
// whatever the user sets.
func TestFenceKeeperKillsPostgres(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 3*time.Minute)
	cfg := e.config(t, "pg1")
	cfg.Parameters["lc_messages"] = "C.UTF-8" // a user's choice, overridden
	log := &logBuf{}
	logger := hclog.New(&hclog.LoggerOptions{Name: "pg1", Level: hclog.Info, Output: io.MultiWriter(log, testWriter{t})})
	m, err := New(cfg, "pg1", logger, Options{Scope: "test", RunAs: e.runAs, StopStep: 10 * time.Second, FenceKeeper: testKeeperCmd})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = m.Stop(context.Background(), StopImmediate)
		m.keeper.close()
	})
	if _, err := m.Init(ctx, Desired{}); err != nil {
		t.Fatal(err)
	}
	conn, err := m.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Closed at the end only: an unreachable connection's socket may be
	// closed by the garbage collector, and its backend exit by itself.
	defer conn.Close(context.Background())
	var lcMessages string
	if err := conn.QueryRow(ctx, "SHOW lc_messages").Scan(&lcMessages); err != nil {
		t.Fatal(err)
	}
	if lcMessages != "C" {
		t.Errorf("lc_messages = %q, want C (pinned on the command line)", lcMessages)
	}
	// A backend busy in a statement, besides the idle one.
	busy, err := m.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = busy.Exec(context.Background(), "SELECT pg_sleep(60)") }()
	defer busy.Close(context.Background())
	var backends []int
	testutil.WaitFor(t, 10*time.Second, "two client backends", func() (bool, error) {
		backends = backends[:0]
		rows, err := conn.Query(ctx, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'")
		if err != nil {
			return false, err
		}
		defer rows.Close()
		for rows.Next() {
			var pid int
			if err := rows.Scan(&pid); err != nil {
				return false, err
			}
			backends = append(backends, pid)
		}
		return len(backends) >= 2, rows.Err()
	})
	pm := m.child.Load().pid()
	procs := orphanBackends("/proc", cfg.DataDir) // every postgres process in the data directory
	for _, b := range append(backends, pm) {
		if !slices.Contains(procs, b) {
			t.Fatalf("backend %d not among the postgres processes %v", b, procs)
		}
	}
	log.wait(t, fmt.Sprintf("postgres runs as pid %d", pm), 10*time.Second)

	deadline := boottime.Now().Add(500 * time.Millisecond)
	m.FenceAt(deadline)
	// From here on the test only watches.
	var goneAt time.Time
	for limit := time.Now().Add(10 * time.Second); ; {
		left := slices.DeleteFunc(slices.Clone(procs), func(pid int) bool { return !processAlive(pid) })
		if len(left) == 0 {
			goneAt = boottime.Now()
			break
		}
		if time.Now().After(limit) {
			t.Fatalf("postgres processes %v still alive 10s after arming the keeper", left)
		}
		time.Sleep(2 * time.Millisecond) // polling interval
	}
	log.wait(t, fmt.Sprintf("killed postmaster %d and its", pm), 5*time.Second)
	late := goneAt.Sub(deadline)
	t.Logf("postgres (%d processes, %d client backends) gone %s after the deadline (polled every 2ms); keeper's lateness %v",
		len(procs), len(backends), late, keeperLateness(t, log.String()))
	if late < 0 {
		t.Fatalf("postgres gone %s before the deadline", -late)
	}
	if late > time.Second {
		t.Fatalf("postgres gone %s after the deadline, want within 1s", late)
	}
	if left := orphanBackends("/proc", cfg.DataDir); len(left) > 0 {
		t.Fatalf("postgres processes %v in the data directory after the fence", left)
	}

	// Disarmed, it starts again: nothing of the killed server is in the way.
	m.FenceAt(time.Time{})
	testutil.WaitFor(t, 10*time.Second, "the manager to see postgres exited", func() (bool, error) { return !m.Running(), nil })
	if err := m.Start(ctx, Desired{}); err != nil {
		t.Fatalf("start after the fence: %v", err)
	}
	if err := m.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}

	// The deadline holds across a restart: the keeper learns the new
	// postmaster and kills that one.
	deadline = boottime.Now().Add(2 * time.Second)
	m.FenceAt(deadline)
	if err := m.Restart(ctx, Desired{}); err != nil {
		t.Fatal(err)
	}
	pm = m.child.Load().pid()
	if now := boottime.Now(); !now.Before(deadline) {
		t.Skipf("the restart took until %s past the deadline: too slow to check", now.Sub(deadline))
	}
	log.wait(t, fmt.Sprintf("postgres runs as pid %d", pm), 5*time.Second)
	testutil.WaitFor(t, 10*time.Second, "the restarted postmaster killed", func() (bool, error) { return !processAlive(pm), nil })
	if late := boottime.Now().Sub(deadline); late < 0 || late > time.Second {
		t.Fatalf("the restarted postmaster died %s after the deadline, want within [0, 1s]", late)
	}
	log.wait(t, fmt.Sprintf("killed postmaster %d and its", pm), 5*time.Second)
}

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
	testutil.WaitFor(t, 10*time.Second, "a busy backend", func() (bool, error) {
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
	testutil.WaitFor(t, 5*time.Second, "the manager to see postgres exited", func() (bool, error) { return !m.Running(), nil })
	if err := m.Start(ctx, Desired{}); err != nil {
		t.Fatalf("start after the fence: %v", err)
	}
}

// TestStartWaitsForOrphans: after the postmaster alone was killed -9, a
// backend busy in a statement that does not check for the postmaster's
// death still holds the old shared memory; Start waits for it instead of
// meeting "pre-existing shared memory block is still in use".
func TestStartWaitsForOrphans(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 3*time.Minute)
	cfg := e.config(t, "pg1")
	log := &logBuf{}
	logger := hclog.New(&hclog.LoggerOptions{Name: "pg1", Level: hclog.Info, Output: io.MultiWriter(log, testWriter{t})})
	m, err := New(cfg, "pg1", logger, Options{Scope: "test", RunAs: e.runAs, StopStep: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop(context.Background(), StopImmediate) })
	if _, err := m.Init(ctx, Desired{}); err != nil {
		t.Fatal(err)
	}
	conn, err := m.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	busy, err := m.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var backend int
	if err := busy.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(backend, syscall.SIGKILL) })
	// A PL/pgSQL busy loop checks for interrupts (a cancel) but not for
	// the postmaster's death.
	go func() { _, _ = busy.Exec(context.Background(), "DO $$BEGIN LOOP END LOOP; END$$") }()
	testutil.WaitFor(t, 10*time.Second, "the busy loop running", func() (bool, error) {
		var state string
		err := conn.QueryRow(ctx, "SELECT state FROM pg_stat_activity WHERE pid = $1", backend).Scan(&state)
		return state == "active", err
	})
	pm := m.child.Load()
	if err := syscall.Kill(pm.pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-pm.done
	started := make(chan error, 1)
	go func() { started <- m.Start(ctx, Desired{}) }()
	log.wait(t, "waiting for what is left of the previous postgres", 30*time.Second)
	if !strings.Contains(log.String(), fmt.Sprint(backend)) {
		t.Errorf("the wait does not name the busy backend %d", backend)
	}
	// Still waiting a while later: the backend runs on.
	hold := time.Now().Add(time.Second)
	for time.Now().Before(hold) {
		select {
		case err := <-started:
			t.Fatalf("Start returned (%v) while the old backend still held the shared memory", err)
		case <-time.After(50 * time.Millisecond): // polling interval
		}
	}
	if !processAlive(backend) {
		t.Fatalf("backend %d exited by itself: the test proves nothing", backend)
	}
	// A cancel ends the loop; the backend then sees the postmaster gone.
	if err := syscall.Kill(backend, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("start after the orphan left: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Start did not return")
	}
	log.wait(t, "previous postgres gone", time.Second)
}
