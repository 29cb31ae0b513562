package raftstore

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// TestRecover loses two of three voters for good and recovers the
// survivor offline, as `raftgres recover` does: refused while its own
// store is open and while a quorum answers; then the survivor alone is the
// configuration, the lost members and the leader key are gone (epoch
// kept), and the recovered store commits again.
func TestRecover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n1 := newTestStore(t, "n1", true)
	waitFor(t, 5*time.Second, "n1 to lead its new cluster", n1.IsLeader)
	n2, n3 := newTestStore(t, "n2", false), newTestStore(t, "n3", false)
	join(t, ctx, n1, n2)
	join(t, ctx, n1, n3)
	leader := waitLeader(t, n1, n2, n3)
	cc := DefaultClusterConfig()
	cc.SynchronousMode = true
	cmds := []Command{Bootstrap{Config: cc, Actor: "n1", At: t0}}
	for _, s := range []*Store{n1, n2, n3} {
		cmds = append(cmds, RegisterMember{Name: s.ID(), APIAddr: "http://" + s.ID(), RaftAddr: s.cfg.Listen, Tags: DefaultTags(), At: t0})
	}
	cmds = append(cmds, SetLeader{Holder: "n2", Reason: "test", Actor: "n1", At: t0},
		SetSync{Primary: "n2", Standbys: []string{"n3"}, Epoch: 1})
	var last uint64
	for _, c := range cmds {
		idx, err := Commit(ctx, leader, c)
		if err != nil {
			t.Fatalf("commit %s: %v", c.Type(), err)
		}
		last = idx
	}
	if err := n1.WaitApplied(ctx, last); err != nil {
		t.Fatal(err)
	}
	epoch := n1.State().Leader.Epoch

	if _, err := PlanRecovery(n1.cfg, nil, 200*time.Millisecond); !errors.Is(err, ErrAgentRunning) {
		t.Fatalf("plan while the store is open: %v, want ErrAgentRunning", err)
	}
	cfg := n1.cfg
	if err := n1.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := PlanRecovery(cfg, nil, 200*time.Millisecond); !errors.Is(err, ErrQuorumReachable) {
		t.Fatalf("plan while n2 and n3 answer: %v, want ErrQuorumReachable", err)
	}
	if _, err := PlanRecovery(cfg, []string{"n1", "n9"}, 200*time.Millisecond); err == nil {
		t.Fatal("plan with a survivor outside the configuration succeeded")
	}
	_ = n2.Close()
	_ = n3.Close()
	plan, err := PlanRecovery(cfg, nil, 200*time.Millisecond)
	if err != nil {
		t.Fatalf("plan with n2 and n3 gone: %v", err)
	}
	if !slices.Equal(plan.Removed, []string{"n2", "n3"}) || plan.Holder != "n2" || len(plan.Survivors) != 1 {
		t.Fatalf("plan = %+v", plan)
	}
	if err := plan.Recover(t0.Add(time.Hour), "test"); err != nil {
		t.Fatal(err)
	}

	cfg.BootstrapPeers = nil
	r, err := New(cfg, testLogger(t, "n1-recovered"))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Open(); err != nil {
		t.Fatalf("open the recovered store: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	waitFor(t, 5*time.Second, "the survivor to lead alone", r.IsLeader)
	if got := suffrage(t, r); len(got) != 1 || got["n1"] != "Voter" {
		t.Fatalf("recovered configuration %v, want n1 alone", got)
	}
	st := r.State()
	if _, ok := st.Members["n2"]; ok || len(st.Members) != 1 {
		t.Fatalf("members after recovery: %v", st.MemberNames())
	}
	if st.Leader.Holder != "" || st.Leader.Epoch != epoch {
		t.Fatalf("leader key after recovery %+v, want cleared at epoch %d", st.Leader, epoch)
	}
	if st.Members["n1"].Status.State != StateRecovering || !slices.Equal(st.Sync.Standbys, []string{"n1"}) {
		t.Fatalf("survivor status %q, sync %+v", st.Members["n1"].Status.State, st.Sync)
	}
	if ev := st.History[len(st.History)-1]; ev.Kind != EventRecover {
		t.Fatalf("last event %+v, want %s", ev, EventRecover)
	}
	if _, err := Commit(ctx, r, SetLeader{Holder: "n1", PrevEpoch: st.Leader.Epoch, PrevRev: st.Leader.Rev,
		Reason: "test", Actor: "n1", At: t0.Add(time.Hour)}); err != nil {
		t.Fatalf("elect on the recovered store: %v", err)
	}
}
