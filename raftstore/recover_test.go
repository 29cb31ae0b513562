package raftstore

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestRecover loses two of three voters for good and recovers the
// survivor offline, as `raftgres recover` does: refused while its own
// store is open and while a quorum answers; refused, in synchronous mode,
// while the survivor is not in the recorded synchronous set (n2 primary,
// n3 standby), with or without an attempt to Recover the refused plan;
// with data loss allowed, the survivor alone is the configuration, the
// lost members, the leader key (epoch kept) and the synchronous record are
// gone, History says that acknowledged commits may be lost, and the
// recovered store commits again.
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

	if _, err := PlanRecovery(n1.cfg, nil, 200*time.Millisecond, false); !errors.Is(err, ErrAgentRunning) {
		t.Fatalf("plan while the store is open: %v, want ErrAgentRunning", err)
	}
	cfg := n1.cfg
	if err := n1.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := PlanRecovery(cfg, nil, 200*time.Millisecond, false); !errors.Is(err, ErrQuorumReachable) {
		t.Fatalf("plan while n2 and n3 answer: %v, want ErrQuorumReachable", err)
	}
	if _, err := PlanRecovery(cfg, []string{"n1", "n9"}, 200*time.Millisecond, false); err == nil {
		t.Fatal("plan with a survivor outside the configuration succeeded")
	}
	_ = n2.Close()
	_ = n3.Close()
	refused, err := PlanRecovery(cfg, nil, 200*time.Millisecond, false)
	if !errors.Is(err, ErrSyncLost) || refused == nil || !refused.SyncLost ||
		!strings.Contains(err.Error(), "--allow-data-loss") || !strings.Contains(refused.String(), "every acknowledged commit may be lost") {
		t.Fatalf("plan without a recorded synchronous member: %v, plan %+v", err, refused)
	}
	if err := refused.Recover(t0.Add(time.Hour), "test"); !errors.Is(err, ErrSyncLost) {
		t.Fatalf("recover on the refused plan: %v, want ErrSyncLost", err)
	}
	plan, err := PlanRecovery(cfg, nil, 200*time.Millisecond, true)
	if err != nil {
		t.Fatalf("plan with n2 and n3 gone, data loss allowed: %v", err)
	}
	if !strings.Contains(plan.String(), "DATA LOSS ALLOWED") {
		t.Fatalf("plan does not say data loss is allowed:\n%s", plan)
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
	if st.Members["n1"].Status.State != StateRecovering || st.Sync.Primary != "" || len(st.Sync.Standbys) != 0 {
		t.Fatalf("survivor status %q, sync %+v; want recovering, no record", st.Members["n1"].Status.State, st.Sync)
	}
	if ev := st.History[len(st.History)-1]; ev.Kind != EventRecover || !strings.Contains(ev.Reason, "DATA LOSS ALLOWED") {
		t.Fatalf("last event %+v, want %s allowing data loss", ev, EventRecover)
	}
	if _, err := Commit(ctx, r, SetLeader{Holder: "n1", PrevEpoch: st.Leader.Epoch, PrevRev: st.Leader.Rev,
		Reason: "test", Actor: "n1", At: t0.Add(time.Hour)}); err != nil {
		t.Fatalf("elect on the recovered store: %v", err)
	}
}

// TestRecoveryEdit: the recovery keeps the synchronous record exactly as
// the log had it (only a recorded member holds every acknowledged
// commit), whoever survives; it clears it only when the operator allowed
// data loss and no recorded member survives; in asynchronous mode, and
// with no record, there is nothing to keep.
func TestRecoveryEdit(t *testing.T) {
	t.Parallel()
	at := t0.Add(time.Hour)
	base := func(syncMode bool, sync SyncState) State {
		st := NewState()
		st.Config = DefaultClusterConfig()
		st.Config.SynchronousMode = syncMode
		for _, name := range []string{"s1", "s2", "s3", "s4", "s5"} {
			st.Members[name] = &Member{Name: name, Status: MemberStatus{Role: "replica", State: "running", Timeline: 3,
				ReceivedLSN: 0x5000, ReplayedLSN: 0x5000, SystemID: "42"}}
		}
		st.Members["s1"].Status.Role = "primary"
		st.Leader = LeaderKey{Holder: "s1", Epoch: 7, Rev: 90}
		st.Sync = sync
		return st
	}
	for _, tc := range []struct {
		name      string
		syncMode  bool
		sync      SyncState
		survivors []string
		allow     bool
		wantSync  SyncState
		wantLost  bool
		wantWhy   string
		renewed   bool
	}{
		{"sync standby survives: record kept, lost primary named", true, SyncState{Primary: "s1", Standbys: []string{"s2"}},
			[]string{"s2", "s4"}, false, SyncState{Primary: "s1", Standbys: []string{"s2"}}, false, "s2 may be elected first", false},
		{"only the last primary survives: record kept", true, SyncState{Primary: "s1", Standbys: []string{"s2"}},
			[]string{"s1", "s5"}, false, SyncState{Primary: "s1", Standbys: []string{"s2"}}, false, "s1 may be elected first", false},
		{"allowing loss changes nothing while a recorded member survives", true, SyncState{Primary: "s1", Standbys: []string{"s2", "s3"}},
			[]string{"s3", "s4"}, true, SyncState{Primary: "s1", Standbys: []string{"s2", "s3"}}, false, "s3 may be elected first", false},
		{"no recorded member survives: kept, nobody electable", true, SyncState{Primary: "s1", Standbys: []string{"s2"}},
			[]string{"s4", "s5"}, false, SyncState{Primary: "s1", Standbys: []string{"s2"}}, true, "nobody may be elected", false},
		{"no recorded member survives, loss allowed: cleared", true, SyncState{Primary: "s1", Standbys: []string{"s2"}},
			[]string{"s4", "s5"}, true, SyncState{}, true, "DATA LOSS ALLOWED", false},
		{"no record: nothing to keep, anyone may be elected", true, SyncState{},
			[]string{"s4", "s5"}, false, SyncState{}, false, "leader key of \"s1\" cleared", false},
		{"asynchronous mode: a stale record is kept, never a reason to refuse", false, SyncState{Primary: "s1", Standbys: []string{"s2"}},
			[]string{"s4", "s5"}, false, SyncState{Primary: "s1", Standbys: []string{"s2"}}, false, "leader key of \"s1\" cleared", false},
		// The holder s1 took the key from s2 and never renewed: s2 (and
		// s3, electable then) still hold every acknowledged commit.
		{"holder never renewed: an inherited survivor is electable", true, SyncState{Primary: "s1", Inherited: []string{"s2", "s3"}},
			[]string{"s3", "s4"}, false, SyncState{Primary: "s1", Inherited: []string{"s2", "s3"}}, false, "s3 may be elected first", false},
		// Its renewal ended the inherited members' claim (a release
		// drops them the same way).
		{"holder renewed: inherited members are not electable", true, SyncState{Primary: "s1", Standbys: []string{"s5"}, Inherited: []string{"s3"}},
			[]string{"s3", "s4"}, false, SyncState{Primary: "s1", Standbys: []string{"s5"}}, true, "nobody may be elected", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := base(tc.syncMode, tc.sync)
			st.Leader.Renewed = tc.renewed
			if _, lost := syncSurvivors(st, tc.survivors); lost != tc.wantLost {
				t.Fatalf("syncSurvivors lost = %v, want %v", lost, tc.wantLost)
			}
			if tc.allow {
				RecoveryEditAllowingLoss(&st, 100, tc.survivors, at, "test")
			} else {
				RecoveryEdit(&st, 100, tc.survivors, at, "test")
			}
			if !st.Sync.Equal(tc.wantSync) {
				t.Fatalf("sync after recovery = %+v, want %+v", st.Sync, tc.wantSync)
			}
			if st.Leader.Holder != "" || st.Leader.Epoch != 7 || st.Leader.Rev != 100 {
				t.Fatalf("leader key after recovery = %+v", st.Leader)
			}
			if got := st.MemberNames(); !slices.Equal(got, tc.survivors) {
				t.Fatalf("members after recovery = %v, want %v", got, tc.survivors)
			}
			for _, name := range tc.survivors {
				if ms := st.Members[name].Status; ms.State != StateRecovering || ms.Timeline != 3 || ms.SystemID != "42" {
					t.Fatalf("%s status after recovery = %+v", name, ms)
				}
			}
			var electable []string
			for _, name := range tc.survivors {
				if ok, _ := st.Electable(name); ok {
					electable = append(electable, name)
				}
			}
			if lostAfter := tc.wantLost && !tc.allow; lostAfter != (len(electable) == 0) {
				t.Fatalf("electable survivors after recovery: %v (want none: %v)", electable, lostAfter)
			}
			ev := st.History[len(st.History)-1]
			if ev.Kind != EventRecover || !strings.Contains(ev.Reason, tc.wantWhy) {
				t.Fatalf("event %+v, want %s saying %q", ev, EventRecover, tc.wantWhy)
			}
		})
	}
}
