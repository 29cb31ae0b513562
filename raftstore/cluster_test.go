package raftstore

import (
	"context"
	"errors"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/go-hclog"

	"raftgres/internal/testutil"
)

// testLogWriter writes through t.Log until the test's cleanups have run, so
// a late line from a raft goroutine cannot fail the test.
type testLogWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// testLogger is a per-node logger; RAFTGRES_TEST_LOG=debug (or trace,
// info, …) turns it on, it is off by default.
func testLogger(t *testing.T, name string) hclog.Logger {
	level := hclog.LevelFromString(os.Getenv("RAFTGRES_TEST_LOG"))
	if level == hclog.NoLevel {
		level = hclog.Off
	}
	w := &testLogWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() }) // runs after the stores close
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: level, Output: w})
}

// newTestStore opens a store over real TCP on 127.0.0.1:0 in a temporary
// directory, with short Raft timeouts (Nomad's TestServer idea). With
// bootstrap set it founds a one-voter cluster; otherwise it waits to be
// added by a leader.
func newTestStore(t *testing.T, id string, bootstrap bool) *Store {
	t.Helper()
	logger := testLogger(t, id)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.NodeID, cfg.Dir, cfg.Listen = id, t.TempDir(), ln.Addr().String()
	if bootstrap {
		cfg.BootstrapPeers = []Peer{{ID: id, Address: cfg.Listen}}
	}
	// Short enough for a leader change in well under a second, long enough
	// that a busy test machine does not make leaders step down.
	cfg.HeartbeatTimeout, cfg.ElectionTimeout = 200*time.Millisecond, 200*time.Millisecond
	cfg.LeaderLeaseTimeout, cfg.CommitTimeout = 200*time.Millisecond, 5*time.Millisecond
	cfg.ApplyTimeout = 5 * time.Second
	s, err := New(cfg, logger)
	if err != nil {
		_ = ln.Close()
		t.Fatal(err)
	}
	s.listener = ln
	if err := s.Open(); err != nil {
		_ = ln.Close()
		t.Fatalf("open %s: %v", id, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// waitFor polls cond every 10ms (elections here take tens of
// milliseconds) until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.WaitEvery(t, timeout, 10*time.Millisecond, what, func() (bool, error) { return cond(), nil })
}

// waitLeader returns the one store among stores that leads.
func waitLeader(t *testing.T, stores ...*Store) *Store {
	t.Helper()
	var leader *Store
	waitFor(t, 5*time.Second, "a raft leader", func() bool {
		for _, s := range stores {
			if s.IsLeader() {
				leader = s
				return true
			}
		}
		return false
	})
	return leader
}

// suffrage returns each server's suffrage in s's Raft configuration.
func suffrage(t *testing.T, s *Store) map[string]string {
	t.Helper()
	st, err := s.Status()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, srv := range st.Servers {
		out[srv.ID] = srv.Suffrage
	}
	return out
}

// join adds j through leader as a nonvoter, waits until it has caught up,
// then promotes it to voter, as the agent's join does.
func join(t *testing.T, ctx context.Context, leader, j *Store) {
	t.Helper()
	req := JoinRequest{ID: j.ID(), RaftAddr: j.cfg.Listen}
	idx, err := leader.Join(ctx, req)
	if err != nil {
		t.Fatalf("join %s as nonvoter: %v", j.ID(), err)
	}
	if got := suffrage(t, leader)[j.ID()]; got != "Nonvoter" {
		t.Fatalf("%s joined as %q, want Nonvoter", j.ID(), got)
	}
	if again, err := leader.Join(ctx, req); err != nil || again < idx {
		t.Fatalf("repeated join of %s: index %d (first %d), %v", j.ID(), again, idx, err)
	}
	if err := j.WaitApplied(ctx, idx); err != nil {
		t.Fatalf("%s catching up: %v", j.ID(), err)
	}
	req.Voter, req.AppliedIndex = true, j.AppliedIndex()
	if _, err := leader.Join(ctx, req); err != nil {
		t.Fatalf("promote %s: %v", j.ID(), err)
	}
	if got := suffrage(t, leader)[j.ID()]; got != "Voter" {
		t.Fatalf("%s is %q after promotion, want Voter", j.ID(), got)
	}
}

// TestCluster runs three stores in one process over real TCP: bootstrap,
// join (nonvoter, then voter once caught up), replication, the loss of the
// Raft leader, and leave, including the refused leave of the leader key
// holder and the refused invalid proposal.
func TestCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	n1 := newTestStore(t, "n1", true)
	waitFor(t, 5*time.Second, "n1 to lead its new cluster", n1.IsLeader)
	n2, n3 := newTestStore(t, "n2", false), newTestStore(t, "n3", false)
	if _, err := n2.Join(ctx, JoinRequest{ID: "n3", RaftAddr: n3.cfg.Listen}); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("join through a node that does not lead: %v, want ErrNotLeader", err)
	}
	join(t, ctx, n1, n2)
	join(t, ctx, n1, n3)
	if diff := cmp.Diff(map[string]string{"n1": "Voter", "n2": "Voter", "n3": "Voter"}, suffrage(t, n1)); diff != "" {
		t.Fatalf("raft configuration (-want +got):\n%s", diff)
	}

	// Apply on the leader; the followers see the same state.
	leader := waitLeader(t, n1, n2, n3)
	cmds := []Command{Bootstrap{Config: DefaultClusterConfig(), Actor: "n1", At: t0}}
	for _, s := range []*Store{n1, n2, n3} {
		cmds = append(cmds, RegisterMember{Name: s.ID(), APIAddr: "http://" + s.ID(), RaftAddr: s.cfg.Listen, Tags: DefaultTags(), At: t0})
	}
	// The key goes to a Raft follower: key holder and Raft leader are
	// independent, and the holder survives the leader's loss below.
	holder := "n2"
	if leader == n2 {
		holder = "n3"
	}
	cmds = append(cmds, SetLeader{Holder: holder, Reason: "test", Actor: "n1", At: t0})
	var last uint64
	for _, c := range cmds {
		idx, err := Commit(ctx, leader, c)
		if err != nil {
			t.Fatalf("commit %s: %v", c.Type(), err)
		}
		last = idx
	}
	if err := leader.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	want := leader.State()
	for _, s := range []*Store{n1, n2, n3} {
		if err := s.WaitApplied(ctx, last); err != nil {
			t.Fatalf("%s: %v", s.ID(), err)
		}
		if diff := cmp.Diff(want, s.State()); diff != "" {
			t.Fatalf("%s's state differs from the leader's:\n%s", s.ID(), diff)
		}
	}

	// #15: an invalid command is refused by the proposer and never reaches
	// the log.
	tight := DefaultClusterConfig()
	tight.TTL, tight.LoopWait, tight.RetryTimeout = time.Second, 100*time.Millisecond, 100*time.Millisecond
	before, err := leader.Status()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []Command{
		SetConfig{Config: tight, PrevVersion: want.Config.Version, Actor: "test", At: t0},
		RegisterMember{Name: "bad name", APIAddr: "http://x", At: t0},
	} {
		if _, err := leader.Apply(ctx, c); !errors.Is(err, ErrInvalidCommand) {
			t.Fatalf("Apply of an invalid %s: %v, want ErrInvalidCommand", c.Type(), err)
		}
	}
	if after, err := leader.Status(); err != nil || after.LastIndex != before.LastIndex {
		t.Fatalf("raft last index %d -> %d (%v): an invalid command reached the log", before.LastIndex, after.LastIndex, err)
	}

	// Lose the Raft leader: another is elected and the state is intact.
	if err := leader.Close(); err != nil {
		t.Fatal(err)
	}
	var survivors []*Store
	for _, s := range []*Store{n1, n2, n3} {
		if s != leader {
			survivors = append(survivors, s)
		}
	}
	next := waitLeader(t, survivors...)
	if err := next.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, next.State()); diff != "" {
		t.Fatalf("state after the leader change:\n%s", diff)
	}
	if _, err := Commit(ctx, next, SetPause{Pause: true, Actor: "test", At: t0}); err != nil {
		t.Fatalf("commit on the new leader: %v", err)
	}

	// #9: the key holder cannot leave; nothing changes.
	if err := next.Leave(ctx, holder, "test"); !errors.Is(err, ErrHolderLeave) {
		t.Fatalf("leave of the key holder: %v, want ErrHolderLeave", err)
	}
	if got := len(suffrage(t, next)); got != 3 {
		t.Fatalf("%d raft servers after a refused leave, want 3", got)
	}
	if _, ok := next.State().Members[holder]; !ok {
		t.Fatalf("the refused leave removed %s from the state", holder)
	}

	// A member that does not hold the key leaves: the old, stopped leader.
	gone := leader.ID()
	if err := next.Leave(ctx, gone, "test"); err != nil {
		t.Fatalf("leave of %s: %v", gone, err)
	}
	if got := slices.Sorted(maps.Keys(suffrage(t, next))); slices.Contains(got, gone) || len(got) != 2 {
		t.Fatalf("raft servers %v after %s left", got, gone)
	}
	idx, err := Commit(ctx, next, SetPause{Pause: false, Actor: "test", At: t0})
	if err != nil {
		t.Fatalf("commit after the leave: %v", err)
	}
	for _, s := range survivors {
		if err := s.WaitApplied(ctx, idx); err != nil {
			t.Fatalf("%s: %v", s.ID(), err)
		}
		st := s.State()
		if _, ok := st.Members[gone]; ok || st.Config.Pause {
			t.Fatalf("%s: members %v, pause %v", s.ID(), st.MemberNames(), st.Config.Pause)
		}
	}
}

// TestHaltedStoreProposesNothing: once a committed entry from a newer
// release halts the FSM, the store refuses every proposal (ErrHalted), so
// the member renews no lease and its coordinator acts on nothing, and it
// says so through Halted.
func TestHaltedStoreProposesNothing(t *testing.T) {
	t.Parallel()
	s := newTestStore(t, "n1", true)
	waitLeader(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := Commit(ctx, s, RegisterMember{Name: "n1", APIAddr: "http://n1", Tags: DefaultTags(), At: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	future := []byte{byte(CmdRegisterMember)}
	future = append(future, []byte(`{"name":"n2","api_addr":"http://n2","tags":{},"at":"2026-01-01T00:00:00Z","field_from_the_future":1}`)...)
	res, err := s.applyBytes(ctx, future)
	var h *Halt
	if err != nil || !errors.As(res.Err, &h) {
		t.Fatalf("entry from a newer release: %+v, %v: want it committed and halting the FSM", res, err)
	}
	if got, halted := s.Halted(); !halted || got.Index != res.Index {
		t.Fatalf("Halted() = %+v, %v", got, halted)
	}
	if _, err := s.Apply(ctx, RenewLeader{Holder: "n1", Epoch: 1, At: time.Now().UTC()}); !errors.Is(err, ErrHalted) {
		t.Fatalf("proposal on a halted store: %v, want ErrHalted", err)
	}
	if _, ok := s.State().Members["n2"]; ok {
		t.Fatal("the entry from the newer release was applied")
	}
}
