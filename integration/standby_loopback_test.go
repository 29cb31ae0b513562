package integration

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"raftgres/raftstore"
)

// loseHost kills n's agent and PostgreSQL (its postmaster's process
// group) with SIGKILL, as the loss of its host would.
func loseHost(t *testing.T, n *Node) {
	t.Helper()
	pm, err := postmasterPID(n)
	if err != nil {
		t.Fatal(err)
	}
	_ = syscall.Kill(n.PID(), syscall.SIGKILL)
	if err := syscall.Kill(-pm, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 of %s's postmaster process group: %v", n.Name, err)
	}
	n.Kill9()
}

// waitStandbyLeader waits until c's leader key holder reports itself the
// standby leader, other than not (""), and every other member a running
// replica streaming from it, and returns it.
func (c *cluster) waitStandbyLeader(timeout time.Duration, not string) *Node {
	c.t.Helper()
	var leader *Node
	waitFor(c.t, timeout, "a standby leader", func() (bool, error) {
		st, err := c.state()
		if err != nil {
			return false, err
		}
		h, ok := st.Members[st.Leader.Holder]
		if !ok || h.Name == not || h.Status.Role != raftstore.RoleStandbyLeader || h.Status.State != raftstore.StateRunning {
			return false, fmt.Errorf("leader key %+v, holder %+v", st.Leader, h)
		}
		for _, n := range c.nodes {
			if m, ok := st.Members[n.Name]; n.Name != h.Name && (!ok || m.Status.Role != raftstore.RoleReplica ||
				m.Status.State != raftstore.StateRunning) {
				return false, fmt.Errorf("%s: %+v", n.Name, m)
			}
		}
		leader = c.byName(h.Name)
		// And each streams from it (its /patroni lists its cascade): a
		// switchover's candidate must.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		ms, err := leader.Client().MemberStatus(ctx)
		if err != nil {
			return false, err
		}
		streaming := map[string]bool{}
		for _, r := range ms.Replication {
			streaming[r.ApplicationName] = r.State == "streaming"
		}
		for _, n := range c.nodes {
			if n != leader && !streaming[n.Name] {
				return false, fmt.Errorf("%s not streaming from %s (%+v)", n.Name, leader.Name, ms.Replication)
			}
		}
		return true, nil
	})
	return leader
}

// waitRows waits until every member of c has the ids want in t, and no
// other.
func waitRows(t *testing.T, c *cluster, want string, what string) {
	t.Helper()
	waitFor(t, 90*time.Second, what, func() (bool, error) {
		for _, n := range c.nodes {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			var got string
			err := pgQueryRow(ctx, n, "SELECT string_agg(id::text, ',' ORDER BY id) FROM t WHERE id > 100 OR id = 1", &got)
			cancel()
			if err != nil || got != want {
				return false, fmt.Errorf("%s: ids %s, want %s (%v)", n.Name, got, want, err)
			}
		}
		return true, nil
	})
}

// TestStandbyClusterOnLoopback: a standby cluster of three members
// bootstraps by copying a source cluster, switches its standby leader
// over (the source's rows keep arriving), loses its standby leader's host
// (another takes over the stream), is promoted (promote-cluster
// and its account of the source's position), and the old source is
// demoted onto it: its diverged row is gone (pg_rewind), and both
// commands are safe to re-run. The network-namespace test
// (standby_cluster_test.go) covers the failovers and the cut site.
func TestStandbyClusterOnLoopback(t *testing.T) {
	ctx := context.Background()
	a := newPGClusterDCS(t, 2, nil, "{ttl: 3, loop_wait: 300ms, retry_timeout: 1, slots: {dr: {type: physical}}}")
	pa := a.waitPrimary(90*time.Second, a.nodes...)
	if err := pgExec(ctx, pa, "CREATE TABLE t (id int primary key); INSERT INTO t SELECT generate_series(1, 100)"); err != nil {
		t.Fatal(err)
	}
	b := newPGClusterDCS(t, 3, nil, fmt.Sprintf("{ttl: 3, loop_wait: 300ms, retry_timeout: 1, "+
		"standby_cluster: {host: 127.0.0.1, port: %d, primary_slot_name: dr}}", pa.PGPort))
	first := b.waitStandbyLeader(120*time.Second, "")
	waitRows(t, b, "1", "the source's rows on the standby cluster")
	if out, stderr, code := runCLI(t, "list", "-c", b.nodes[0].Config); code != 0 || !strings.Contains(out, "Standby Leader") ||
		!strings.Contains(out, "Standby cluster of 127.0.0.1") {
		t.Fatalf("list of the standby cluster (%d):\n%s%s", code, out, stderr)
	}

	// A switchover inside the standby cluster moves the standby leader;
	// the stream from the source goes on.
	if out, stderr, code := runCLI(t, "switchover", "--force", "-c", b.nodes[0].Config); code != 0 {
		t.Fatalf("switchover of the standby leader (%d):\n%s%s", code, out, stderr)
	}
	second := b.waitStandbyLeader(60*time.Second, first.Name)
	if err := pgExec(ctx, pa, "INSERT INTO t VALUES (500)"); err != nil {
		t.Fatal(err)
	}
	waitRows(t, b, "1,500", "the source's rows after the standby cluster's switchover")

	// The standby leader's host is lost: B elects another one, which
	// streams from the source; the lost member comes back as its replica.
	loseHost(t, second)
	waitFor(t, 60*time.Second, "a new standby leader after "+second.Name+"'s loss", func() (bool, error) {
		st, err := b.state()
		if err != nil {
			return false, err
		}
		h, ok := st.Members[st.Leader.Holder]
		return ok && h.Name != second.Name && h.Status.Role == raftstore.RoleStandbyLeader, fmt.Errorf("leader key %+v", st.Leader)
	})
	if err := pgExec(ctx, pa, "INSERT INTO t VALUES (600)"); err != nil {
		t.Fatal(err)
	}
	second.Start()
	third := b.waitStandbyLeader(90*time.Second, second.Name)
	waitRows(t, b, "1,500,600", "the source's rows after the standby leader's loss")

	// promote-cluster: writable, with the source's position shown (once
	// the new standby leader reported it).
	waitFor(t, 30*time.Second, "the source's position", func() (bool, error) {
		view, err := b.nodes[0].Client().ClusterView(ctx)
		if err != nil || view.StandbyCluster == nil || view.StandbyCluster.SourceLSN == "" {
			return false, fmt.Errorf("standby cluster view %+v (%v)", view.StandbyCluster, err)
		}
		return true, nil
	})
	out, stderr, code := runCLI(t, "promote-cluster", "--force", "-c", b.nodes[0].Config)
	if code != 0 || !strings.Contains(out, "source's last known position:   0/") || !strings.Contains(out, "is writable: "+third.Name) {
		t.Fatalf("promote-cluster (%d):\n%s%s", code, out, stderr)
	}
	t.Logf("promote-cluster:\n%s", out)
	pb := b.waitPrimary(60*time.Second, b.nodes...)
	if err := pgExec(ctx, pb, "INSERT INTO t VALUES (1000)"); err != nil {
		t.Fatal(err)
	}
	if out, _, code := runCLI(t, "promote-cluster", "--force", "-c", b.nodes[0].Config); code != 0 || !strings.Contains(out, "nothing to do") {
		t.Fatalf("promote-cluster again (%d): %s", code, out)
	}

	// The old source wrote on its own meanwhile (diverged); demote-cluster
	// discards that write and follows the new primary.
	if err := pgExec(ctx, pa, "INSERT INTO t VALUES (2000)"); err != nil {
		t.Fatal(err)
	}
	args := []string{"demote-cluster", "--force", "--host", "127.0.0.1", "--port", fmt.Sprint(pb.PGPort), "-c", a.nodes[0].Config}
	if out, stderr, code := runCLI(t, args...); code != 0 {
		t.Fatalf("demote-cluster (%d):\n%s%s", code, out, stderr)
	}
	a.waitStandbyLeader(90*time.Second, "")
	// The new primary's row, and not the diverged one (2000).
	waitRows(t, a, "1,500,600,1000", "the new primary's rows on the demoted cluster, without its diverged one")
	if out, _, code := runCLI(t, args...); code != 0 || !strings.Contains(out, "nothing to do") {
		t.Fatalf("demote-cluster again (%d): %s", code, out)
	}

	// A wrong host: B demoted onto another system (a cluster of its own)
	// stops taking writes but keeps its data; the agent says why, and
	// promote-cluster brings it back as it was.
	c := newPGClusterDCS(t, 1, nil, "{ttl: 3, loop_wait: 300ms, retry_timeout: 1}")
	other := c.waitPrimary(90 * time.Second)
	wrong := []string{"demote-cluster", "--force", "--host", "127.0.0.1", "--port", fmt.Sprint(other.PGPort), "-c", b.nodes[0].Config}
	if out, stderr, code := runCLI(t, wrong...); code != 0 {
		t.Fatalf("demote-cluster onto another system (%d):\n%s%s", code, out, stderr)
	}
	waitFor(t, 60*time.Second, "B's primary refusing the foreign source", func() (bool, error) {
		return strings.Contains(pb.Log(), "the source cluster is another system"), nil
	})
	waitFor(t, 30*time.Second, "B taking no writes", func() (bool, error) {
		for _, n := range b.nodes {
			wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := pgExec(wctx, n, "INSERT INTO t VALUES (3000)")
			cancel()
			if err == nil {
				return false, fmt.Errorf("%s took a write", n.Name)
			}
		}
		return true, nil
	})
	if out, stderr, code := runCLI(t, "promote-cluster", "--force", "-c", b.nodes[0].Config); code != 0 {
		t.Fatalf("promote-cluster after the wrong demote (%d):\n%s%s", code, out, stderr)
	}
	pb = b.waitPrimary(60*time.Second, b.nodes...)
	if err := pgExec(ctx, pb, "INSERT INTO t VALUES (3000)"); err != nil {
		t.Fatal(err)
	}
	waitRows(t, b, "1,500,600,1000,3000", "B's own rows, kept through the wrong demote-cluster")
}
