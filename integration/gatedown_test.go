package integration

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"raftgres/raftstore"
)

// TestPrimaryWhoseGateCannotConnectGivesUpTheKey: the commit
// gate of the primary is terminated while every walsender slot is taken
// (max_wal_senders exhausted by idle replication connections), so it
// cannot connect again and every commit would wait for it for good. The
// holder must stop its PostgreSQL and release the key after ttl, and a
// replica then takes writes; History says why.
func TestPrimaryWhoseGateCannotConnectGivesUpTheKey(t *testing.T) {
	requireIntegration(t)
	c := newPGCluster(t, 3)
	primary := c.waitPrimary(120*time.Second, c.nodes...)
	c.waitStreaming(primary)
	ctx := ctxT(t, 2*time.Minute)
	if err := pgExec(ctx, primary, "CREATE TABLE gatedown (id int)"); err != nil {
		t.Fatal(err)
	}
	var senders int
	if err := pgQueryRow(ctx, primary, "SELECT setting::int FROM pg_settings WHERE name = 'max_wal_senders'", &senders); err != nil {
		t.Fatal(err)
	}
	// Fill every free walsender slot with an idle replication connection.
	dsn := fmt.Sprintf("postgres://%s@%s:%d/postgres?replication=true&sslmode=disable&connect_timeout=2",
		url.UserPassword("replicator", "repl-pw"), primary.probeHost(), primary.PGPort)
	var held []*pgconn.PgConn
	t.Cleanup(func() {
		for _, conn := range held {
			conn.Close(context.Background())
		}
	})
	for i := 0; i < senders; i++ {
		conn, err := pgconn.Connect(ctx, dsn)
		if err != nil {
			if !strings.Contains(err.Error(), "max_wal_senders") {
				t.Fatalf("replication connection %d: %v", i+1, err)
			}
			break
		}
		held = append(held, conn)
	}
	t.Logf("%d idle replication connections hold the free walsender slots (max_wal_senders %d)", len(held), senders)
	// The gate's slot: its agent is frozen for a moment (well inside its
	// lease), the gate's walsender terminated and its slot taken by one
	// more idle connection, then the agent resumes and its gate cannot
	// connect again.
	if err := syscall.Kill(primary.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = syscall.Kill(primary.PID(), syscall.SIGCONT)
		}
	}
	defer resume()
	killedAt := time.Now()
	if err := pgExec(ctx, primary, "SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE application_name = 'raftgres_fence'"); err != nil {
		t.Fatal(err)
	}
	var last error
	for deadline := time.Now().Add(5 * time.Second); ; {
		conn, err := pgconn.Connect(ctx, dsn)
		if err == nil {
			held = append(held, conn)
			break
		}
		last = err
		if time.Now().After(deadline) {
			t.Fatalf("the gate's walsender slot never came free: %v", last)
		}
		time.Sleep(10 * time.Millisecond) // polling PostgreSQL's walsender slots: nothing to wait on
	}
	resume()
	next := c.waitNewPrimaryWriting(primary, "INSERT INTO gatedown VALUES (1)")
	t.Logf("%s took writes %s after %s's gate was cut off", next.Name, time.Since(killedAt).Round(100*time.Millisecond), primary.Name)
	st, err := c.state()
	if err != nil {
		t.Fatal(err)
	}
	var released *raftstore.Event
	for i := range st.History {
		if e := &st.History[i]; e.Kind == raftstore.EventLeader && e.Member == "" && strings.Contains(e.Reason, "commit gate not connected") {
			released = e
		}
	}
	if released == nil {
		t.Fatalf("no release by %s saying its commit gate was not connected in History", primary.Name)
	}
}
