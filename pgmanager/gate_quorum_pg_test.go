package pgmanager

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"raftgres/internal/boottime"
	"raftgres/internal/testutil"
)

// newPrimaryAndStandbys starts a primary named pg1 with pd and, for each
// name, a standby of that member name streaming from it through its slot.
func newPrimaryAndStandbys(t *testing.T, e *pgEnv, pd Desired, names ...string) (*Manager, []*Manager) {
	t.Helper()
	ctx := ctxT(t, 3*time.Minute)
	p := e.initPrimaryWith(t, ctx, "pg1", pd)
	var slots []string
	for _, n := range names {
		slots = append(slots, SlotName(n))
	}
	if _, err := p.EnsureSlots(ctx, physical(slots...), keepNone); err != nil {
		t.Fatal(err)
	}
	if err := p.Exec(ctx, "CREATE TABLE t (id int primary key)"); err != nil {
		t.Fatal(err)
	}
	var standbys []*Manager
	for _, n := range names {
		r := e.manager(t, n, e.config(t, n))
		d := Desired{Standby: upstreamOf(t, "pg1", p), Slot: SlotName(n)}
		if err := r.Clone(ctx, d); err != nil {
			t.Fatal(err)
		}
		if err := r.Start(ctx, d); err != nil {
			t.Fatal(err)
		}
		standbys = append(standbys, r)
	}
	for _, n := range names {
		waitStreaming(t, p, n)
	}
	return p, standbys
}

// frozen is a standby whose postmaster and children are stopped (SIGSTOP):
// its walsender on the primary stays 'streaming', but nothing it receives
// is flushed or acknowledged.
type frozen struct{ pids []int }

// freeze stops m's postmaster, then its children; thaw (also run at the
// test's end) resumes them.
func freeze(t *testing.T, m *Manager) *frozen {
	t.Helper()
	pm := m.child.Load()
	if pm == nil {
		t.Fatalf("%s: no postmaster", m.member)
	}
	f := &frozen{pids: []int{pm.pid()}}
	if err := syscall.Kill(pm.pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	for _, c := range childrenOf("/proc", pm.pid()) {
		f.pids = append(f.pids, c.pid)
	}
	for _, pid := range f.pids[1:] {
		_ = syscall.Kill(pid, syscall.SIGSTOP)
	}
	t.Cleanup(f.thaw)
	return f
}

func (f *frozen) thaw() {
	for _, pid := range slices.Backward(f.pids) {
		_ = syscall.Kill(pid, syscall.SIGCONT)
	}
}

// commit is one client's INSERT running in the background.
type commit struct {
	done   chan error
	cancel context.CancelFunc
}

func startCommit(ctx context.Context, client *pgx.Conn, id int) *commit {
	cctx, cancel := context.WithCancel(ctx)
	c := &commit{done: make(chan error, 1), cancel: cancel}
	go func() {
		_, err := client.Exec(cctx, "INSERT INTO t VALUES ($1)", id)
		c.done <- err
	}()
	return c
}

// waits checks that the commit has not returned after d and that its
// backend waits for synchronous replication (a cancelled wait would
// still commit locally: the row proves nothing).
func (c *commit) waits(ctx context.Context, t *testing.T, p *Manager, d time.Duration, why string) {
	t.Helper()
	select {
	case err := <-c.done:
		t.Fatalf("%s: a commit returned (%v), want it waiting", why, err)
	case <-time.After(d):
	}
	if n := syncRepWaiters(ctx, t, p); n != 1 {
		t.Fatalf("%s: %d backends wait for synchronous replication, want 1", why, n)
	}
}

// returns checks that the commit succeeds within d.
func (c *commit) returns(t *testing.T, d time.Duration, why string) {
	t.Helper()
	select {
	case err := <-c.done:
		if err != nil {
			t.Fatalf("%s: commit: %v", why, err)
		}
	case <-time.After(d):
		t.Fatalf("%s: the commit still waits after %s", why, d)
	}
}

func syncRepWaiters(ctx context.Context, t *testing.T, p *Manager) int {
	t.Helper()
	conn, err := p.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// commitNow commits one row within d.
func commitNow(ctx context.Context, t *testing.T, client *pgx.Conn, id int, d time.Duration, why string) {
	t.Helper()
	startCommit(ctx, client, id).returns(t, d, why)
}

// TestGateQuorumCommits: a primary with two streaming standbys s1, s2,
// synchronous_standby_names the gate alone, the gate running under a
// valid lease. With a quorum of 1 of {s1, s2} a commit goes through with
// one standby stopped, waits with both stopped, and goes through once one
// resumes; with 2 of 2 it waits while one is stopped; with the lease
// ended it waits with both streaming; with no quorum the gate alone
// confirms.
func TestGateQuorumCommits(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 5*time.Minute)
	p, st := newPrimaryAndStandbys(t, e, gateOnly, "s1", "s2")
	s1, s2 := st[0], st[1]
	l := newLease(boottime.Now().Add(time.Hour))
	runGate(t, p, l)
	testutil.WaitFor(t, 10*time.Second, "gate connected", func() (bool, error) { return p.GateConnected(), nil })
	client := clientConn(ctx, t, p)
	commitNow(ctx, t, client, 1, 10*time.Second, "the gate alone")

	// The poller's query sees the standbys and the gate, all physical.
	conn, err := p.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	senders, err := listWalSenders(ctx, conn)
	conn.Close(context.Background())
	var names []string
	for _, s := range senders {
		names = append(names, s.name+"/"+s.state)
	}
	slices.Sort(names)
	if err != nil || !slices.Equal(names, []string{"raftgres_fence/streaming", "s1/streaming", "s2/streaming"}) {
		t.Fatalf("walsenders %v (%v)", names, err)
	}

	both := []string{"s1", "s2"}
	p.SetGateQuorum(1, both)
	commitNow(ctx, t, client, 2, 10*time.Second, "1 of 2, both streaming")
	f2 := freeze(t, s2)
	for i := range 5 {
		commitNow(ctx, t, client, 10+i, 10*time.Second, "1 of 2, s2 stopped")
	}
	f1 := freeze(t, s1)
	c := startCommit(ctx, client, 20)
	c.waits(ctx, t, p, 2*time.Second, "1 of 2, both stopped")
	f1.thaw()
	c.returns(t, 10*time.Second, "1 of 2, s1 resumed")
	f2.thaw()
	commitNow(ctx, t, client, 21, 10*time.Second, "1 of 2, both resumed")

	p.SetGateQuorum(2, both)
	commitNow(ctx, t, client, 30, 10*time.Second, "2 of 2, both streaming")
	f1 = freeze(t, s1)
	c = startCommit(ctx, client, 31)
	c.waits(ctx, t, p, 2*time.Second, "2 of 2, s1 stopped")
	f1.thaw()
	c.returns(t, 10*time.Second, "2 of 2, s1 resumed")

	// A name not streaming cannot make up the quorum.
	p.SetGateQuorum(2, []string{"s1", "pg9"})
	c = startCommit(ctx, client, 40)
	c.waits(ctx, t, p, 2*time.Second, "2 of {s1, pg9}")
	p.SetGateQuorum(1, []string{"s1", "pg9"}) // released by the new setting
	c.returns(t, 10*time.Second, "1 of {s1, pg9}")

	// The lease ended: commits wait with every standby streaming.
	p.SetGateQuorum(2, both)
	l.set(boottime.Now().Add(-time.Second))
	testutil.WaitFor(t, 10*time.Second, "gate to disconnect at the lease end", func() (bool, error) { return !p.GateConnected(), nil })
	c = startCommit(ctx, client, 50)
	c.waits(ctx, t, p, 2*time.Second, "2 of 2 with the lease ended")
	l.set(boottime.Now().Add(time.Hour))
	c.returns(t, 10*time.Second, "2 of 2 with the lease valid again")

	// No quorum again: the gate alone confirms, standbys stopped or not.
	f1, f2 = freeze(t, s1), freeze(t, s2)
	c = startCommit(ctx, client, 60)
	c.waits(ctx, t, p, time.Second, "2 of 2, both stopped")
	p.SetGateQuorum(0, nil)
	c.returns(t, 5*time.Second, "no quorum")
	commitNow(ctx, t, client, 61, 5*time.Second, "no quorum, both stopped")
	f1.thaw()
	f2.thaw()
	if got := p.count(ctx, t); got != 15 {
		t.Fatalf("%d rows, want 15", got)
	}
}

// TestGateQuorumLogicalWalsenderDoesNotCount: a logical decoding
// walsender named like a member streams, but is no standby.
func TestGateQuorumLogicalWalsenderDoesNotCount(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 3*time.Minute)
	params := map[string]string{"wal_level": "logical"}
	p := e.initPrimaryWith(t, ctx, "pg1", Desired{ClusterParams: params, SyncStandbyNames: gateOnly.SyncStandbyNames})
	if _, err := p.EnsureSlots(ctx, []Slot{{Name: "cdc", Type: SlotLogical, Database: "postgres", Plugin: "test_decoding"}}, keepNone); err != nil {
		t.Fatal(err)
	}
	if err := p.Exec(ctx, "CREATE TABLE t (id int primary key)"); err != nil {
		t.Fatal(err)
	}
	cc, err := p.gateConfig()
	if err != nil {
		t.Fatal(err)
	}
	recv := exec.CommandContext(ctx, pgBin+"/pg_recvlogical", "-S", "cdc", "--start", "-f", "/dev/null", "-s", "1",
		"-d", fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres application_name=s1", cc.Host, cc.Port))
	recv.Env = append(os.Environ(), "PGPASSWORD=super-secret")
	if err := recv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = recv.Process.Kill(); _ = recv.Wait() })
	testutil.WaitFor(t, 10*time.Second, "pg_recvlogical streaming as s1", func() (bool, error) {
		conn, err := p.connect(ctx)
		if err != nil {
			return false, err
		}
		defer conn.Close(context.Background())
		var n int
		err = conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_replication WHERE application_name = 's1' AND state = 'streaming'").Scan(&n)
		return n == 1, err
	})
	l := newLease(boottime.Now().Add(time.Hour))
	runGate(t, p, l)
	testutil.WaitFor(t, 10*time.Second, "gate connected", func() (bool, error) { return p.GateConnected(), nil })
	p.SetGateQuorum(1, []string{"s1"})
	client := clientConn(ctx, t, p)
	c := startCommit(ctx, client, 1)
	c.waits(ctx, t, p, 2*time.Second, "1 of {s1} with s1 a logical walsender")
	p.SetGateQuorum(0, nil)
	c.returns(t, 5*time.Second, "no quorum")
}
