package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"raftgres/raftstore"
)

// fastDCS gives failover tests a short lease: ttl 3s, loop 300ms.
const fastDCS = "{ttl: 3, loop_wait: 300ms, retry_timeout: 1, maximum_lag_on_failover: 1048576}"

func newPGCluster(t testing.TB, n int) *cluster {
	t.Helper()
	return newPGClusterWith(t, n, nil)
}

// newPGClusterWith starts n members; tags[name] sets a member's tags.
func newPGClusterWith(t testing.TB, n int, tags map[string]string) *cluster {
	return newPGClusterDCS(t, n, tags, fastDCS)
}

// newPGClusterDCS starts n members with the given bootstrap.dcs.
func newPGClusterDCS(t testing.TB, n int, tags map[string]string, dcs string) *cluster {
	t.Helper()
	return startCluster(t, n, func(nd *Node, all []*Node) NodeOptions {
		return NodeOptions{Peers: all, Postgres: true, DCS: dcs, Tags: tags[nd.Name]}
	})
}

// state reads the FSM from every live node and returns the most recent
// (highest applied index) copy, so a lagging follower cannot mislead.
func (c *cluster) state() (raftstore.State, error) { return c.stateExcept(nil) }

// stateExcept is state without the nodes in skip (e.g. frozen ones).
func (c *cluster) stateExcept(skip map[*Node]bool) (raftstore.State, error) {
	var best raftstore.State
	found, last := false, error(errors.New("no member reachable"))
	for _, n := range c.nodes {
		if _, exited := n.Exited(); exited || skip[n] {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := n.Client().Cluster(ctx)
		cancel()
		if err != nil {
			last = err
			continue
		}
		if !found || st.Index > best.Index {
			best, found = st, true
		}
	}
	if !found {
		return raftstore.State{}, last
	}
	return best, nil
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
		// The FSM keeps the last report of a dead member: check the holder
		// really is a live, writable PostgreSQL.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var inRecovery bool
		if err := pgQueryRow(ctx, primary, "SELECT pg_is_in_recovery()", &inRecovery); err != nil || inRecovery {
			return false, fmt.Errorf("holder %s not writable (in recovery %v): %v", primary.Name, inRecovery, err)
		}
		return true, nil
	})
	return primary
}

// waitNewPrimaryWriting waits until a member other than old holds the
// leader key and accepts the write sql, and returns it.
func (c *cluster) waitNewPrimaryWriting(old *Node, sql string) *Node {
	c.t.Helper()
	var newPrimary *Node
	waitFor(c.t, 60*time.Second, "a new primary accepting writes", func() (bool, error) {
		st, err := c.state()
		if err != nil || st.Leader.Holder == old.Name || st.Leader.Holder == "" {
			return false, err
		}
		newPrimary = c.byName(st.Leader.Holder)
		wctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return pgExec(wctx, newPrimary, sql) == nil, nil
	})
	return newPrimary
}

// pgQueryRow runs one query as superuser on n and scans its single row.
func pgQueryRow(ctx context.Context, n *Node, sql string, dest ...any) error {
	conn, err := pgx.Connect(ctx, n.PGConn())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.QueryRow(ctx, sql).Scan(dest...)
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
	var k int
	err := pgQueryRow(ctx, n, "SELECT count(*) FROM probe", &k)
	return k, err
}

func waitCount(t testing.TB, n *Node, want int) {
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
	newPrimary := c.waitNewPrimaryWriting(primary, "INSERT INTO probe VALUES (1000)")
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

// raftLeader returns the node that is Raft leader.
func (c *cluster) raftLeader() *Node {
	c.t.Helper()
	var leader *Node
	waitFor(c.t, 20*time.Second, "a raft leader", func() (bool, error) {
		for _, n := range c.nodes {
			if _, exited := n.Exited(); exited {
				continue
			}
			if st, err := status(n); err == nil && st.State == "Leader" {
				leader = n
				return true, nil
			}
		}
		return false, nil
	})
	return leader
}

// TestRaftLeaderLossIsNotFailover kills the Raft leader while another node
// is the PostgreSQL primary: a new Raft leader restarts the lease countdown
// from zero and the primary keeps renewing, so the leader key never moves.
func TestRaftLeaderLossIsNotFailover(t *testing.T) {
	c := newPGCluster(t, 3)
	primary := c.waitPrimary(90*time.Second, c.nodes...)
	raftLeader := c.raftLeader()
	if raftLeader == primary {
		if err := primary.Client().TransferLeadership(ctxT(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, "raft leadership away from the primary", func() (bool, error) {
			raftLeader = c.raftLeader()
			return raftLeader != primary, nil
		})
	}
	st, _ := c.state()
	epoch := st.Leader.Epoch
	raftLeader.Kill9()
	// Wait for a new Raft leader, then watch for two ttls.
	c.raftLeader()
	deadline := time.Now().Add(2 * 3 * time.Second)
	for time.Now().Before(deadline) {
		st, err := c.state()
		if err == nil && (st.Leader.Holder != primary.Name || st.Leader.Epoch != epoch) {
			t.Fatalf("the leader key moved to %q (epoch %d→%d) after the Raft leader died", st.Leader.Holder, epoch, st.Leader.Epoch)
		}
		time.Sleep(100 * time.Millisecond) // sampling an invariant over a window
	}
	ctx := ctxT(t, 10*time.Second)
	if err := pgExec(ctx, primary, "CREATE TABLE still_primary (x int)"); err != nil {
		t.Fatalf("the primary stopped taking writes: %v", err)
	}
	raftLeader.Start()
	c.waitPrimary(60*time.Second, c.nodes...)
}

// TestFullClusterRestart stops every agent (cleanly) and starts them again:
// same data, exactly one primary.
func TestFullClusterRestart(t *testing.T) {
	c := newPGCluster(t, 3)
	primary := c.waitPrimary(90*time.Second, c.nodes...)
	ctx := ctxT(t, 3*time.Minute)
	if err := pgExec(ctx, primary, "CREATE TABLE probe AS SELECT generate_series(1, 500) AS id"); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		waitCount(t, n, 500)
	}
	st0, _ := c.state()
	for _, n := range c.nodes {
		n.Stop()
	}
	for _, n := range c.nodes {
		n.Start()
	}
	primary = c.waitPrimary(90*time.Second, c.nodes...)
	st, _ := c.state()
	if st.Initialize != st0.Initialize {
		t.Fatalf("system id changed: %s -> %s", st0.Initialize, st.Initialize)
	}
	primaries := 0
	for _, n := range c.nodes {
		waitCount(t, n, 500)
		var inRecovery bool
		if err := pgQueryRow(ctx, n, "SELECT pg_is_in_recovery()", &inRecovery); err != nil {
			t.Fatal(err)
		}
		if !inRecovery {
			primaries++
		}
	}
	if primaries != 1 {
		t.Fatalf("%d writable members after a full restart, want 1", primaries)
	}
	if err := pgExec(ctx, primary, "INSERT INTO probe VALUES (501)"); err != nil {
		t.Fatal(err)
	}
}

// TestPostgresCrashIsRestartedInPlace kills the primary's postmaster (not
// its agent): the supervisor starts it again and keeps the leader key.
func TestPostgresCrashIsRestartedInPlace(t *testing.T) {
	c := newPGCluster(t, 3)
	primary := c.waitPrimary(90*time.Second, c.nodes...)
	st, _ := c.state()
	epoch := st.Leader.Epoch
	pidFile := primary.PGDataDir() + "/postmaster.pid"
	pid := readPID(t, pidFile)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the primary's postgres restarted and writable", func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return pgExec(ctx, primary, "CREATE TABLE IF NOT EXISTS after_crash (x int)") == nil, nil
	})
	st, _ = c.state()
	if st.Leader.Holder != primary.Name || st.Leader.Epoch != epoch {
		t.Fatalf("leader key moved after a PostgreSQL-only crash: %+v", st.Leader)
	}
}

func readPID(t testing.TB, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(data), "\n", 2)[0]))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// assertKeyStays samples the leader key for d and fails if it moves.
func (c *cluster) assertKeyStays(holder string, epoch uint64, d time.Duration, why string) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		st, err := c.state()
		if err == nil && (st.Leader.Holder != holder || st.Leader.Epoch != epoch) {
			c.t.Fatalf("%s: the leader key moved to %q (epoch %d→%d)", why, st.Leader.Holder, epoch, st.Leader.Epoch)
		}
		time.Sleep(100 * time.Millisecond) // sampling an invariant over a window
	}
}

func (c *cluster) apply(cmd raftstore.Command) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range c.nodes {
		if _, exited := n.Exited(); exited {
			continue
		}
		res, err := n.Client().Apply(ctx, cmd)
		if err == nil && res.Err == nil {
			return
		}
		c.t.Fatalf("apply %T: %v %v", cmd, err, res.Err)
	}
	c.t.Fatal("no live node")
}

// TestPauseMeansNoAction pauses the cluster and kills the primary's
// postmaster: nothing restarts it and nobody is promoted; on resume the
// supervisor brings it back under the same key.
func TestPauseMeansNoAction(t *testing.T) {
	c := newPGCluster(t, 3)
	primary := c.waitPrimary(90*time.Second, c.nodes...)
	c.apply(raftstore.SetPause{Pause: true, Actor: "itest", At: time.Now().UTC()})
	for _, n := range c.nodes { // a member acts on the pause once it has applied it
		waitFor(t, 10*time.Second, n.Name+" applied the pause", func() (bool, error) {
			st, err := n.Client().Cluster(context.Background())
			return err == nil && st.Config.Pause, err
		})
	}
	st, _ := c.state()
	if err := syscall.Kill(readPID(t, primary.PGDataDir()+"/postmaster.pid"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.assertKeyStays(primary.Name, st.Leader.Epoch, 3*3*time.Second, "paused cluster")
	ctx := ctxT(t, 5*time.Second)
	if err := pgExec(ctx, primary, "SELECT 1"); err == nil {
		t.Fatal("paused: the killed postgres was restarted")
	}
	c.apply(raftstore.SetPause{Pause: false, Actor: "itest", At: time.Now().UTC()})
	if p := c.waitPrimary(60*time.Second, c.nodes...); p != primary {
		t.Fatalf("after resume the primary is %s, want %s", p.Name, primary.Name)
	}
	st, _ = c.state()
	var kinds []string
	for _, e := range st.History {
		if e.Kind == raftstore.EventPause || e.Kind == raftstore.EventResume {
			kinds = append(kinds, e.Kind)
		}
	}
	if strings.Join(kinds, ",") != "pause,resume" {
		t.Fatalf("history pause/resume events: %v", kinds)
	}
}

// TestNoFailoverTagRespected: with both replicas tagged nofailover, losing
// the primary promotes nobody.
func TestNoFailoverTagRespected(t *testing.T) {
	c := newPGClusterWith(t, 3, map[string]string{"pg2": "{nofailover: true}", "pg3": "{nofailover: true}"})
	primary := c.waitPrimary(90*time.Second, c.nodes...)
	if primary.Name != "pg1" {
		t.Fatalf("a nofailover member (%s) won the bootstrap", primary.Name)
	}
	st, _ := c.state()
	primary.Kill9()
	c.assertKeyStays("pg1", st.Leader.Epoch, 3*3*time.Second, "only nofailover replicas left")
	for _, n := range c.nodes[1:] {
		ctx := ctxT(t, 5*time.Second)
		if err := pgExec(ctx, n, "CREATE TABLE x (i int)"); err == nil {
			t.Fatalf("nofailover member %s accepts writes", n.Name)
		}
	}
}

// TestFiveMembersLoseTwo kills the primary and another member of five at
// once: three voters remain, and one of them becomes primary.
func TestFiveMembersLoseTwo(t *testing.T) {
	c := newPGCluster(t, 5)
	primary := c.waitPrimary(150*time.Second, c.nodes...)
	var other *Node
	for _, n := range c.nodes {
		if n != primary {
			other = n
			break
		}
	}
	primary.Kill9()
	other.Kill9()
	var survivors []*Node
	for _, n := range c.nodes {
		if n != primary && n != other {
			survivors = append(survivors, n)
		}
	}
	waitFor(t, 60*time.Second, "the leader key on a survivor", func() (bool, error) {
		st, err := c.state()
		return err == nil && st.Leader.Holder != "" && st.Leader.Holder != primary.Name && st.Leader.Holder != other.Name, err
	})
	newPrimary := c.waitPrimary(60*time.Second, survivors...)
	if newPrimary == primary || newPrimary == other {
		t.Fatalf("primary is a killed member: %s", newPrimary.Name)
	}
	ctx := ctxT(t, 10*time.Second)
	if err := pgExec(ctx, newPrimary, "CREATE TABLE after_two_losses (i int)"); err != nil {
		t.Fatal(err)
	}
}

// TestSwitchoverUnderLoad asks for a switchover while a probe writes:
// no acknowledged write is lost and the old primary follows without
// pg_rewind.
func TestSwitchoverUnderLoad(t *testing.T) {
	c := newPGCluster(t, 3)
	primary := c.waitPrimary(90*time.Second, c.nodes...)
	p := startProbe(t, c, primary)
	waitFor(t, 10*time.Second, "the probe's first writes", func() (bool, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.acked) > 20, nil
	})
	var target *Node
	for _, n := range c.nodes {
		if n != primary {
			target = n
			break
		}
	}
	c.apply(raftstore.SetFailover{Request: &raftstore.FailoverRequest{Kind: "switchover", From: primary.Name, To: target.Name,
		RequestedBy: "itest", RequestedAt: time.Now().UTC()}, Actor: "itest", At: time.Now().UTC()})
	waitFor(t, 30*time.Second, target.Name+" primary after the switchover", func() (bool, error) {
		st, err := c.state()
		return err == nil && st.Leader.Holder == target.Name && st.Failover == nil, err
	})
	c.waitPrimary(60*time.Second, c.nodes...)
	ackedBefore := len(p.acked)
	waitFor(t, 10*time.Second, "writes on the new primary", func() (bool, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.acked) > ackedBefore+20, nil
	})
	p.stop()
	if m, err := p.missing(target); err != nil || len(m) > 0 {
		t.Fatalf("%d acknowledged writes lost in the switchover (%v): %v", len(m), err, m)
	}
	t.Logf("switchover: longest write gap %s over %d acknowledged writes", p.maxGap().Round(time.Millisecond), len(p.acked))
	waitFor(t, 30*time.Second, "the old primary streaming every acknowledged write", func() (bool, error) {
		m, err := p.missing(primary)
		return err == nil && len(m) == 0, err
	})
	if strings.Contains(primary.Log(), "rewinding") {
		t.Fatal("the old primary ran pg_rewind after a clean switchover")
	}
}

func switchoverTo(from, to string) raftstore.Command {
	return raftstore.SetFailover{Request: &raftstore.FailoverRequest{Kind: "switchover", From: from, To: to,
		RequestedBy: "itest", RequestedAt: time.Now().UTC()}, Actor: "itest", At: time.Now().UTC()}
}

// waitStreaming waits until every other live member streams from primary.
func (c *cluster) waitStreaming(primary *Node) {
	c.t.Helper()
	want := 0
	for _, n := range c.nodes {
		if _, exited := n.Exited(); !exited && n != primary {
			want++
		}
	}
	waitFor(c.t, 60*time.Second, fmt.Sprintf("%d standbys streaming from %s", want, primary.Name), func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var k int
		err := pgQueryRow(ctx, primary, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND application_name NOT IN ('raftgres_fence', 'pg_recvlogical')", &k)
		return k == want, err
	})
}

// lastLeaderEvent is the newest leader change in History.
func lastLeaderEvent(st raftstore.State) raftstore.Event {
	for i := len(st.History) - 1; i >= 0; i-- {
		if st.History[i].Kind == raftstore.EventLeader {
			return st.History[i]
		}
	}
	return raftstore.Event{}
}

const syncDCS = "{ttl: 3, loop_wait: 300ms, retry_timeout: 1, synchronous_mode: true}"

// TestSyncModeFaults runs synchronous mode through 20 random faults on
// random members (kill -9 of the agent, SIGSTOP of the agent, or a cut of
// its network link, each held past one ttl): no acknowledged write is
// lost, no two members ever accept writes at once, and a lost primary is
// always replaced by its synchronous standby.
func TestSyncModeFaults(t *testing.T) {
	requireIntegration(t)
	// Each member in its own network namespace, so that a partition is a
	// real cut link (newNetLab skips, saying why, where namespaces cannot
	// be made).
	lab, c := startNetnsCluster(t, 3, syncDCS)
	primary := c.waitPrimary(120*time.Second, c.nodes...)
	c.waitStreaming(primary)
	ctx := ctxT(t, 20*time.Minute)
	if err := pgExec(ctx, primary, "CREATE TABLE windows (node text, seq int)"); err != nil {
		t.Fatal(err)
	}
	w := startWriterProbe(c)
	defer w.stop()
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 7))
	t.Logf("fault seed %d", seed)
	const faults = 20
	for i := range faults {
		waitFor(t, 60*time.Second, "a synchronous standby recorded", func() (bool, error) {
			st, err := c.state()
			return err == nil && st.Sync.Primary == st.Leader.Holder && len(st.Sync.Standbys) == 1, err
		})
		st, _ := c.state()
		primary = c.byName(st.Leader.Holder)
		syncStandby := st.Sync.Standbys[0]
		waitFor(t, 30*time.Second, "writes on "+primary.Name, func() (bool, error) {
			_, n := w.lastOn(primary.Name)
			return n > 5, nil
		})
		vi := rng.IntN(len(c.nodes))
		victim := c.nodes[vi]
		fault := []string{"kill", "stop", "partition"}[rng.IntN(3)]
		t.Logf("fault %d: %s of %s (primary %s, sync standby %s)", i+1, fault, victim.Name, primary.Name, syncStandby)
		switch fault {
		case "kill":
			victim.Kill9()
		case "stop":
			if err := syscall.Kill(victim.PID(), syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
		case "partition":
			if err := lab.cut(vi + 1); err != nil {
				t.Fatal(err)
			}
		}
		if victim == primary {
			waitFor(t, 60*time.Second, "a new primary", func() (bool, error) {
				s, err := c.state()
				return err == nil && s.Leader.Holder != "" && s.Leader.Holder != primary.Name, err
			})
			s, _ := c.state()
			if s.Leader.Holder != syncStandby {
				t.Fatalf("promoted %s, but the synchronous standby was %s", s.Leader.Holder, syncStandby)
			}
			// Synchronous mode's fast path: the standby was promoted
			// because the primary was seen gone, not because its lease
			// ran out.
			if ev := lastLeaderEvent(s); !strings.Contains(ev.Reason, "holder lost before its lease ended") {
				t.Fatalf("%s of the primary: promotion not by the fast path: %+v", fault, ev)
			}
		} else {
			// A replica fault: writes go on (the other standby becomes
			// synchronous if the victim was); hold the fault past one ttl.
			at := time.Now()
			waitFor(t, 60*time.Second, "writes after a replica fault", func() (bool, error) {
				last, _ := w.lastOn(primary.Name)
				return last.After(at.Add(3 * time.Second)), nil
			})
		}
		switch fault {
		case "stop":
			_ = syscall.Kill(victim.PID(), syscall.SIGCONT)
		case "partition":
			if err := lab.heal(vi + 1); err != nil {
				t.Fatal(err)
			}
		default:
			victim.Start()
		}
		s, _ := c.state()
		c.waitPrimary(90*time.Second, c.nodes...)
		c.waitStreaming(c.byName(s.Leader.Holder))
	}
	w.stop()
	st, _ := c.state()
	lost, err := w.lost(ctx, c.byName(st.Leader.Holder))
	if err != nil {
		t.Fatal(err)
	}
	if len(lost) > 0 {
		t.Fatalf("%d acknowledged writes lost: %v", len(lost), lost)
	}
	if o := w.overlaps(); len(o) > 0 {
		t.Fatalf("two members accepted writes at once:\n%s", strings.Join(o, "\n"))
	}
	w.mu.Lock()
	t.Logf("%d acknowledged writes over %d faults, none lost", len(w.windows), faults)
	w.mu.Unlock()
}
