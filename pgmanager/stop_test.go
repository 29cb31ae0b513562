package pgmanager

import (
	"context"
	"testing"
	"time"

	"raftgres/internal/testutil"
)

// TestFastStopDoesNotWaitForSilentStandbys: a replication client that
// stopped answering (its replies lost on a cut link) would hold a fast
// shutdown until wal_sender_timeout, since a walsender waits for its
// standby to confirm the shutdown checkpoint. Once the checkpoint is
// written, Stop goes on as immediate after walsenderGrace, and the cluster
// is cleanly shut down.
func TestFastStopDoesNotWaitForSilentStandbys(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 2*time.Minute)
	m := e.initPrimary(t, ctx, "pg1")
	if err := m.Exec(ctx, "ALTER SYSTEM SET wal_sender_timeout = '60s'"); err != nil {
		t.Fatal(err)
	}
	if err := m.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	// The silent standby: it reads what it is sent and never answers
	// (its replies lost on a cut link, say).
	conn, _ := startReplicationClient(ctx, t, m, "silent")
	go func() {
		for {
			if _, err := conn.ReceiveMessage(context.Background()); err != nil {
				return
			}
		}
	}()
	if err := m.Exec(ctx, "CREATE TABLE t AS SELECT generate_series(1, 10000) AS id"); err != nil {
		t.Fatal(err)
	}
	q, err := m.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the silent walsender streaming", func() (bool, error) {
		var n int
		err := q.QueryRow(ctx, "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'silent' AND state = 'streaming'").Scan(&n)
		return n == 1, err
	})
	q.Close(ctx)

	start := time.Now()
	if err := m.Stop(ctx, StopFast); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if took > walsenderGrace+5*time.Second {
		t.Fatalf("fast stop took %s with a silent walsender (grace %s)", took, walsenderGrace)
	}
	cd, err := m.ControlData(ctx)
	if err != nil || cd["Database cluster state"] != "shut down" {
		t.Fatalf("after the stop: %q (%v), want a clean shutdown", cd["Database cluster state"], err)
	}
	t.Logf("fast stop with a silent walsender took %s", took.Round(time.Millisecond))
}
