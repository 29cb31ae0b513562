package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"raftgres/raftstore"
)

// fastDCS gives failover tests a short lease: ttl 3s, loop 300ms.
const fastDCS = "{ttl: 3, loop_wait: 300ms, retry_timeout: 1, maximum_lag_on_failover: 1048576}"

func newPGCluster(t *testing.T, n int) *cluster {
	t.Helper()
	requireIntegration(t)
	c := &cluster{t: t, base: baseDir(t)}
	for i := range n {
		c.nodes = append(c.nodes, newNode(t, c.base, fmt.Sprintf("pg%d", i+1)))
	}
	for _, nd := range c.nodes {
		nd.WriteConfig(NodeOptions{Peers: c.nodes, Postgres: true, DCS: fastDCS})
		nd.Start()
	}
	return c
}

// state reads the FSM through any live node.
func (c *cluster) state() (raftstore.State, error) {
	var last error
	for _, n := range c.nodes {
		if _, exited := n.Exited(); exited {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := n.Client().Cluster(ctx)
		cancel()
		if err == nil {
			return st, nil
		}
		last = err
	}
	return raftstore.State{}, last
}

// waitPrimary waits until the leader key holder runs as primary and every
// member in replicas reports a running replica, all on one system id.
func (c *cluster) waitPrimary(timeout time.Duration, replicas ...*Node) *Node {
	c.t.Helper()
	var primary *Node
	waitFor(c.t, timeout, "a primary and running replicas", func() (bool, error) {
		st, err := c.state()
		if err != nil {
			return false, err
		}
		h, ok := st.Members[st.Leader.Holder]
		if !ok || h.Status.Role != "primary" || h.Status.State != "running" || st.Initialize == "" {
			return false, fmt.Errorf("leader key %+v, holder status %+v", st.Leader, h)
		}
		for _, r := range replicas {
			m, ok := st.Members[r.Name]
			if r.Name == st.Leader.Holder {
				continue
			}
			if !ok || m.Status.Role != "replica" || m.Status.State != "running" || m.Status.SystemID != st.Initialize {
				return false, fmt.Errorf("%s status %+v", r.Name, m)
			}
		}
		primary = c.byName(st.Leader.Holder)
		return true, nil
	})
	return primary
}

func pgExec(ctx context.Context, n *Node, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, n.PGConn())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

func pgCount(ctx context.Context, n *Node) (int, error) {
	conn, err := pgx.Connect(ctx, n.PGConn())
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var k int
	err = conn.QueryRow(ctx, "SELECT count(*) FROM probe").Scan(&k)
	return k, err
}

func waitCount(t *testing.T, n *Node, want int) {
	t.Helper()
	waitFor(t, 30*time.Second, fmt.Sprintf("%d rows on %s", want, n.Name), func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		k, err := pgCount(ctx, n)
		return k == want, err
	})
}

func TestFailoverBootstrapAndKillPrimary(t *testing.T) {
	c := newPGCluster(t, 3)
	primary := c.waitPrimary(90*time.Second, c.nodes...)
	ctx := ctxT(t, 3*time.Minute)
	if err := pgExec(ctx, primary, "CREATE TABLE probe (id int primary key)"); err != nil {
		t.Fatal(err)
	}
	if err := pgExec(ctx, primary, "INSERT INTO probe SELECT generate_series(1, 100)"); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		waitCount(t, n, 100)
	}
	st, _ := c.state()
	epoch := st.Leader.Epoch

	// kill -9 of the primary's agent: its PostgreSQL dies with it, a
	// replica takes over once the lease has expired.
	killedAt := time.Now()
	primary.Kill9()
	others := []*Node{}
	for _, n := range c.nodes {
		if n != primary {
			others = append(others, n)
		}
	}
	var newPrimary *Node
	waitFor(t, 60*time.Second, "a new primary accepting writes", func() (bool, error) {
		st, err := c.state()
		if err != nil || st.Leader.Holder == primary.Name || st.Leader.Holder == "" {
			return false, err
		}
		newPrimary = c.byName(st.Leader.Holder)
		wctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return pgExec(wctx, newPrimary, "INSERT INTO probe VALUES (1000)") == nil, nil
	})
	t.Logf("failover: kill -9 of %s's agent to first write on %s: %s", primary.Name, newPrimary.Name, time.Since(killedAt).Round(time.Millisecond))
	st, _ = c.state()
	if st.Leader.Epoch <= epoch {
		t.Fatalf("epoch %d not above %d", st.Leader.Epoch, epoch)
	}
	for _, n := range others {
		waitCount(t, n, 101)
	}
	// The old primary comes back as a replica of the new one.
	primary.Start()
	c.waitPrimary(90*time.Second, c.nodes...)
	waitCount(t, primary, 101)
	if err := pgExec(ctx, newPrimary, "INSERT INTO probe VALUES (1001)"); err != nil {
		t.Fatal(err)
	}
	waitCount(t, primary, 102)
	leaderEvents := 0
	st, _ = c.state()
	for _, e := range st.History {
		if e.Kind == raftstore.EventLeader {
			leaderEvents++
		}
	}
	if leaderEvents != 2 {
		t.Fatalf("history has %d leader changes, want 2 (bootstrap, failover): %+v", leaderEvents, st.History)
	}
}
