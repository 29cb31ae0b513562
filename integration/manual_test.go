package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestManualFailover names the member to promote: with a healthy primary
// the CLI's failover is a clean hand-over to it; with the primary dead the
// coordinator promotes the named replica at the lease's end, even though
// the ordinary ranking would pick another.
func TestManualFailover(t *testing.T) {
	c := newPGCluster(t, 3)
	primary := c.waitPrimary(90*time.Second, c.nodes...)
	c.waitStreaming(primary)
	var replicas []*Node
	for _, n := range c.nodes {
		if n != primary {
			replicas = append(replicas, n)
		}
	}
	target := replicas[1] // by name, the ranking prefers replicas[0] on equal LSNs
	out, stderr, code := runCLI(t, "failover", "-c", primary.Config, "--candidate", target.Name, "--force")
	if code != 0 {
		t.Fatalf("failover to %s: exit %d: %s %s", target.Name, code, out, stderr)
	}
	if p := c.waitPrimary(60*time.Second, c.nodes...); p != target {
		t.Fatalf("primary is %s, want %s", p.Name, target.Name)
	}
	c.waitStreaming(target)

	// The primary dies; the operator names the replica the ranking would
	// not choose (the last by name).
	var rest []*Node
	for _, n := range c.nodes {
		if n != target {
			rest = append(rest, n)
		}
	}
	pick := rest[len(rest)-1]
	// The operator acts on what the cluster shows: wait until pick's own
	// API shows it as a running replica (its report has reached its FSM).
	waitFor(t, 30*time.Second, pick.Name+" shown as a running replica", func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := pick.Client().Cluster(ctx)
		if err != nil {
			return false, nil
		}
		m, ok := st.Members[pick.Name]
		return ok && m.Status.Role == "replica" && m.Status.State == "running", nil
	})
	target.Kill9()
	out, stderr, code = runCLI(t, "failover", "-c", pick.Config, "--candidate", pick.Name, "--force")
	if code != 0 {
		t.Fatalf("failover to %s with the primary dead: exit %d: %s %s", pick.Name, code, out, stderr)
	}
	st, err := c.state()
	if err != nil || st.Leader.Holder != pick.Name {
		t.Fatalf("key holder %q (%v), want %s", st.Leader.Holder, err, pick.Name)
	}
	ctx := ctxT(t, 30*time.Second)
	waitFor(t, 30*time.Second, pick.Name+" accepting writes", func() (bool, error) {
		return pgExec(ctx, pick, "CREATE TABLE IF NOT EXISTS manual (i int)") == nil, nil
	})
}

// TestScheduledSwitchover schedules a switchover a few seconds ahead: the
// key does not move before the time and moves soon after it; a second one
// is scheduled far ahead and cancelled.
func TestScheduledSwitchover(t *testing.T) {
	c := newPGCluster(t, 3)
	primary := c.waitPrimary(90*time.Second, c.nodes...)
	c.waitStreaming(primary)
	at := time.Now().Add(4 * time.Second).UTC().Truncate(time.Second).Add(time.Second)
	out, stderr, code := runCLI(t, "switchover", "-c", primary.Config, "--scheduled", at.Format(time.RFC3339), "--force")
	if code != 0 || !strings.Contains(out, "scheduled") {
		t.Fatalf("scheduled switchover: exit %d: %s %s", code, out, stderr)
	}
	if out, _, _ := runCLI(t, "list", "-c", primary.Config); !strings.Contains(out, "Pending switchover") {
		t.Fatalf("list does not show the pending switchover:\n%s", out)
	}
	var movedAt time.Time
	waitFor(t, time.Until(at)+20*time.Second, "the scheduled switchover", func() (bool, error) {
		st, err := c.state()
		if err != nil {
			return false, err
		}
		if st.Leader.Holder != primary.Name {
			movedAt = time.Now()
			return true, nil
		}
		return false, fmt.Errorf("holder still %s", st.Leader.Holder)
	})
	if movedAt.Before(at) {
		t.Fatalf("switchover happened at %s, before its scheduled time %s", movedAt, at)
	}
	t.Logf("scheduled for %s, key moved %s after it", at.Format(time.RFC3339), movedAt.Sub(at).Round(time.Millisecond))
	newPrimary := c.waitPrimary(60*time.Second, c.nodes...)

	later := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	if _, stderr, code := runCLI(t, "switchover", "-c", newPrimary.Config, "--scheduled", later, "--force"); code != 0 {
		t.Fatalf("schedule: %s", stderr)
	}
	if _, stderr, code := runCLI(t, "switchover", "-c", newPrimary.Config, "--cancel", "--force"); code != 0 {
		t.Fatalf("cancel: %s", stderr)
	}
	st, err := c.state()
	if err != nil || st.Failover != nil {
		t.Fatalf("after cancel the request is %+v (%v)", st.Failover, err)
	}
}

// TestMaximumLagOnFailover: the only promotable replica has stopped
// receiving WAL and lags more than maximum_lag_on_failover (1 MiB) when
// the primary dies: nobody is promoted, and the old primary takes its key
// back when it returns, so no acknowledged write is lost.
func TestMaximumLagOnFailover(t *testing.T) {
	c := newPGClusterWith(t, 3, map[string]string{"pg3": "{nofailover: true}"})
	primary := c.waitPrimary(90*time.Second, c.nodes...)
	c.waitStreaming(primary)
	lagger := c.byName(map[string]string{"pg1": "pg2", "pg2": "pg1"}[primary.Name])
	ctx := ctxT(t, 3*time.Minute)
	var wr int
	if err := pgQueryRow(ctx, lagger, "SELECT pid FROM pg_stat_wal_receiver", &wr); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(wr, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stoppedAt := time.Now()
	t.Cleanup(func() { _ = syscall.Kill(wr, syscall.SIGCONT) })
	if err := pgExec(ctx, primary, "CREATE TABLE big AS SELECT i, repeat('x', 1000) AS pad FROM generate_series(1, 4000) i"); err != nil {
		t.Fatal(err)
	}
	var written int64
	if err := pgQueryRow(ctx, primary, "SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint", &written); err != nil {
		t.Fatal(err)
	}
	var rows int
	// Both reports must be from after the stop: the primary's with the
	// table written, the lagger's with what it received before its
	// walreceiver stopped (a report from before it streamed says nothing).
	waitFor(t, 15*time.Second, "the lag to show in the replicated state", func() (bool, error) {
		st, err := c.state()
		if err != nil {
			return false, err
		}
		p, l := st.Members[primary.Name].Status, st.Members[lagger.Name].Status
		lsn := max(l.ReceivedLSN, l.ReplayedLSN)
		return p.WrittenLSN >= uint64(written) && l.ReportedAt.After(stoppedAt) && p.WrittenLSN > lsn &&
				int64(p.WrittenLSN-lsn) > st.Config.MaximumLagOnFailover,
			fmt.Errorf("primary at %d (wrote %d), %s at %d reported %s", p.WrittenLSN, written, lagger.Name, lsn, l.ReportedAt.Format("15:04:05.000"))
	})
	st, _ := c.state()
	primary.Kill9()
	c.assertKeyStays(primary.Name, st.Leader.Epoch, 4*3*time.Second, lagger.Name+" lags over maximum_lag_on_failover")
	var inRecovery bool
	if err := pgQueryRow(ctx, lagger, "SELECT pg_is_in_recovery()", &inRecovery); err != nil || !inRecovery {
		t.Fatalf("%s: in recovery %v (%v), want a standby", lagger.Name, inRecovery, err)
	}
	// The lagger's walreceiver stays stopped until the old primary is
	// back: resumed earlier, it reads the WAL still queued in its socket
	// and may come within maximum_lag_on_failover of the dead primary,
	// which then rightly makes it a candidate (CI saw it promoted).
	primary.Start()
	if p := c.waitPrimary(90*time.Second, c.nodes...); p != primary {
		t.Fatalf("primary is %s, want %s back with its key", p.Name, primary.Name)
	}
	_ = syscall.Kill(wr, syscall.SIGCONT)
	c.waitStreaming(primary)
	if err := pgQueryRow(ctx, primary, "SELECT count(*) FROM big", &rows); err != nil || rows != 4000 {
		t.Fatalf("big has %d rows (%v), want 4000", rows, err)
	}
}

// TestCallbacks runs postgresql.callbacks scripts with Patroni's arguments
// (event, role, scope): on_start at bootstrap, on_role_change on both sides
// of a switchover, on_stop when the old primary is demoted.
func TestCallbacks(t *testing.T) {
	script := func(n *Node) string {
		path := filepath.Join(n.Dir, "callback.sh")
		body := "#!/bin/sh\necho \"$@\" >> " + filepath.Join(n.Dir, "callbacks.log") + "\n"
		if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		return path
	}
	c := startCluster(t, 3, func(nd *Node, all []*Node) NodeOptions {
		s := script(nd)
		return NodeOptions{Peers: all, Postgres: true, DCS: fastDCS,
			Callbacks: fmt.Sprintf("{on_start: %s, on_stop: %s, on_role_change: %s}", s, s, s)}
	})
	primary := c.waitPrimary(90*time.Second, c.nodes...)
	c.waitStreaming(primary)
	events := func(n *Node) string {
		b, _ := os.ReadFile(filepath.Join(n.Dir, "callbacks.log"))
		return string(b)
	}
	waitEvent := func(n *Node, line string) {
		t.Helper()
		waitFor(t, 30*time.Second, n.Name+" callback "+line, func() (bool, error) {
			return strings.Contains(events(n), line+"\n"), fmt.Errorf("log: %q", events(n))
		})
	}
	var target *Node
	for _, n := range c.nodes {
		if n == primary {
			waitEvent(n, "on_start primary itest")
		} else {
			waitEvent(n, "on_start replica itest")
			target = n
		}
	}
	c.apply(switchoverTo(primary.Name, target.Name))
	waitEvent(target, "on_role_change primary itest")
	waitEvent(primary, "on_stop primary itest")
	waitEvent(primary, "on_role_change replica itest")
}
