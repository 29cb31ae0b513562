package raftstore

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// syncCluster is a bootstrapped synchronous-mode cluster of a, b and c
// where a took the key at epoch 1 and renewed, with b recorded as its
// synchronous standby.
func syncCluster(t *testing.T) *applier {
	t.Helper()
	a := newApplier(t)
	cfg := DefaultClusterConfig()
	cfg.SynchronousMode = true
	a.mustApply(Bootstrap{Config: cfg, Actor: "a", At: t0})
	a.register("a", "b", "c")
	a.mustApply(Initialize{SystemID: "1", Actor: "a", At: t0})
	a.mustApply(SetLeader{Holder: "a", Cause: CauseBootstrap, Actor: "a", Rules: RulesSyncKey, At: t0})
	a.mustApply(RenewLeader{Holder: "a", Epoch: 1, At: t0, TTL: cfg.TTL})
	st := a.f.State()
	a.mustApply(SetSync{Primary: "a", Standbys: []string{"b"}, Epoch: 1, Prev: &st.Sync})
	return a
}

func elect(a *applier, holder, cause string) ApplyResult {
	st := a.f.State()
	return a.apply(SetLeader{Holder: holder, PrevEpoch: st.Leader.Epoch, PrevRev: st.Leader.Rev,
		Cause: cause, Actor: "c", Rules: RulesSyncKey, At: t0})
}

// Review #3(c): the coordinator read Sync=[b], then the holder's narrowing
// committed; the election of b must fail at apply time.
func TestSetLeaderChecksTheSyncRecordAtApply(t *testing.T) {
	t.Parallel()
	a := syncCluster(t)
	st := a.f.State()
	a.mustApply(SetSync{Primary: "a", Standbys: nil, Epoch: 1, Prev: &st.Sync})
	if res := a.apply(SetLeader{Holder: "b", PrevEpoch: st.Leader.Epoch, PrevRev: st.Leader.Rev,
		Cause: CauseFailover, Actor: "c", Rules: RulesSyncKey, At: t0}); !errors.Is(res.Err, ErrNotElectable) {
		t.Fatalf("election of a narrowed-out standby: err %v, want ErrNotElectable", res.Err)
	}
	if res := elect(a, "c", CauseFailover); !errors.Is(res.Err, ErrNotElectable) {
		t.Fatalf("election of a never-synchronous member: err %v, want ErrNotElectable", res.Err)
	}
	// An entry of an older binary (no Rules) applies as it always did.
	st = a.f.State()
	a.mustApply(SetLeader{Holder: "c", PrevEpoch: st.Leader.Epoch, PrevRev: st.Leader.Rev, Cause: CauseFailover, Actor: "c", At: t0})
}

// An election resets the record to the new holder with no standbys, and
// what was electable is inherited until the new holder's first renewal
// (the last primary is electable again while the new holder never
// renewed).
func TestElectionResetsSyncAndInheritsUntilFirstRenewal(t *testing.T) {
	t.Parallel()
	a := syncCluster(t)
	elect(a, "b", CauseFailover)
	st := a.f.State()
	if st.Sync.Primary != "b" || len(st.Sync.Standbys) != 0 || !slices.Equal(st.Sync.Inherited, []string{"a"}) {
		t.Fatalf("sync after the election of b = %+v, want primary b, no standbys, inherited [a]", st.Sync)
	}
	if ok, _ := st.Electable("a"); !ok {
		t.Fatal("a, the replaced holder, is not electable while b never renewed")
	}
	if ok, _ := st.Electable("c"); ok {
		t.Fatal("c, never synchronous, is electable")
	}
	// b wedges before its first renewal: a can take the key back.
	if res := elect(a, "a", CauseFailover); res.Err != nil {
		t.Fatalf("re-election of the last primary: %v", res.Err)
	}
	st = a.f.State()
	if !slices.Equal(st.Sync.Inherited, []string{"b"}) {
		t.Fatalf("inherited after a's re-election = %v, want [b]", st.Sync.Inherited)
	}
	a.mustApply(RenewLeader{Holder: "a", Epoch: st.Leader.Epoch, At: t0, TTL: time.Second})
	st = a.f.State()
	if len(st.Sync.Inherited) != 0 || !st.Leader.Renewed {
		t.Fatalf("after a's renewal: sync %+v renewed %v, want nothing inherited", st.Sync, st.Leader.Renewed)
	}
	if res := elect(a, "b", CauseFailover); !errors.Is(res.Err, ErrNotElectable) {
		t.Fatalf("b after a renewed without recording it: err %v, want ErrNotElectable", res.Err)
	}
}

// Review #3(b): a SetSync whose reply was lost commits after a newer one;
// its compare-and-set on the previous record refuses it.
func TestSetSyncComparesAndSets(t *testing.T) {
	t.Parallel()
	a := syncCluster(t)
	old := a.f.State().Sync // {a, [b]}
	a.mustApply(SetSync{Primary: "a", Epoch: 1, Prev: &old})
	narrowed := a.f.State().Sync
	a.mustApply(SetSync{Primary: "a", Standbys: []string{"c"}, Epoch: 1, Prev: &narrowed})
	if res := a.apply(SetSync{Primary: "a", Standbys: nil, Epoch: 1, Prev: &old}); !errors.Is(res.Err, ErrSyncMismatch) {
		t.Fatalf("stale SetSync: err %v, want ErrSyncMismatch", res.Err)
	}
	if st := a.f.State(); !slices.Equal(st.Sync.Standbys, []string{"c"}) {
		t.Fatalf("standbys = %v, want [c]", st.Sync.Standbys)
	}
}

// A switchover proposed by the holder may hand the key to any member (it
// waited for the candidate to replay its last WAL); anyone else's may not.
func TestSwitchoverByTheHolderIsExempt(t *testing.T) {
	t.Parallel()
	a := syncCluster(t)
	st := a.f.State()
	if res := a.apply(SetLeader{Holder: "c", PrevEpoch: st.Leader.Epoch, PrevRev: st.Leader.Rev,
		Cause: CauseSwitchover, Actor: "b", Rules: RulesSyncKey, At: t0}); !errors.Is(res.Err, ErrNotElectable) {
		t.Fatalf("switchover proposed by a non-holder: err %v, want ErrNotElectable", res.Err)
	}
	a.mustApply(SetLeader{Holder: "c", PrevEpoch: st.Leader.Epoch, PrevRev: st.Leader.Rev,
		Cause: CauseSwitchover, Actor: "a", Rules: RulesSyncKey, At: t0})
	if st := a.f.State(); st.Sync.Primary != "c" || !slices.Equal(st.Sync.Inherited, []string{"a", "b"}) {
		t.Fatalf("sync after the switchover = %+v, want primary c inheriting [a b]", st.Sync)
	}
}

// A release keeps the record: the last holder and its standbys stay
// electable, nobody else.
func TestReleaseKeepsTheRecord(t *testing.T) {
	t.Parallel()
	a := syncCluster(t)
	st := a.f.State()
	a.mustApply(SetLeader{Holder: "", PrevEpoch: st.Leader.Epoch, PrevRev: st.Leader.Rev,
		Cause: CauseRelease, Actor: "a", Rules: RulesSyncKey, At: t0})
	st = a.f.State()
	for name, want := range map[string]bool{"a": true, "b": true, "c": false} {
		if ok, why := st.Electable(name); ok != want {
			t.Errorf("Electable(%s) = %v (%s), want %v", name, ok, why, want)
		}
	}
}

// Review #2: the lease carries its ttl; LeaseTTL is never shorter than it.
func TestLeaseTTLIsTheLongerOfRenewalAndConfig(t *testing.T) {
	t.Parallel()
	a := syncCluster(t)
	st := a.f.State()
	a.mustApply(RenewLeader{Holder: "a", Epoch: st.Leader.Epoch, At: t0, TTL: 30 * time.Second})
	cfg := a.f.State().Config
	cfg.TTL = 3 * time.Second
	cfg.LoopWait, cfg.RetryTimeout = 500*time.Millisecond, 500*time.Millisecond
	a.mustApply(SetConfig{Config: cfg, PrevVersion: cfg.Version, Actor: "c", At: t0})
	if got := a.f.State().LeaseTTL(); got != 30*time.Second {
		t.Fatalf("LeaseTTL after lowering ttl to 3s = %s, want the renewal's 30s", got)
	}
	a.mustApply(RenewLeader{Holder: "a", Epoch: st.Leader.Epoch, At: t0, TTL: 3 * time.Second})
	// A coordinator taking office now cannot tell when the 30s renewal
	// was applied: it waits the epoch's longest renewal ttl.
	if got := a.f.State().LeaseTTL(); got != 30*time.Second {
		t.Fatalf("LeaseTTL after a renewal under 3s that followed one under 30s = %s, want 30s", got)
	}
	if got := a.f.State().Leader.TTL; got != 3*time.Second {
		t.Fatalf("Leader.TTL after a renewal under 3s = %s, want 3s", got)
	}
	// The next epoch starts afresh.
	a.mustApply(SetLeader{Holder: "b", PrevEpoch: st.Leader.Epoch, PrevRev: a.f.State().Leader.Rev,
		Cause: CauseSwitchover, Actor: "a", Rules: RulesSyncKey, At: t0})
	if got := a.f.State().LeaseTTL(); got != 3*time.Second {
		t.Fatalf("LeaseTTL at a new epoch = %s, want the config's 3s", got)
	}
}

func TestSetFailoverComparesAndSets(t *testing.T) {
	t.Parallel()
	a := syncCluster(t)
	first := &FailoverRequest{Kind: "switchover", From: "a", To: "b", RequestedAt: t0}
	second := &FailoverRequest{Kind: "switchover", From: "a", To: "c", RequestedAt: t0.Add(time.Second)}
	a.mustApply(SetFailover{Request: first, CAS: true, Actor: "x", At: t0})
	if res := a.apply(SetFailover{Request: second, CAS: true, Actor: "x", At: t0}); !errors.Is(res.Err, ErrFailoverPending) {
		t.Fatalf("second request over a pending one: err %v, want ErrFailoverPending", res.Err)
	}
	if res := a.apply(SetFailover{CAS: true, Prev: second, Actor: "c", At: t0}); !errors.Is(res.Err, ErrFailoverPending) {
		t.Fatalf("clearing another request: err %v, want ErrFailoverPending", res.Err)
	}
	a.mustApply(SetFailover{CAS: true, Prev: first, Actor: "c", At: t0})
	if a.f.State().Failover != nil {
		t.Fatal("request not cleared")
	}
}

// Review #5: no member may be named like the commit gate, in any case.
func TestMemberNamedLikeTheGateRefused(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"raftgres_fence", "RAFTGRES_FENCE", "Raftgres_Fence"} {
		if err := (RegisterMember{Name: name, APIAddr: "http://x:8008"}).Validate(); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("RegisterMember %q: err %v, want ErrInvalidCommand", name, err)
		}
	}
	if err := CheckMemberName("raftgres_fence2"); err != nil {
		t.Errorf("raftgres_fence2: %v", err)
	}
}

// A Barrier round-trips, changes nothing but the index, and an older
// binary may skip it (its type carries SkipUnknownFlag).
func TestBarrierChangesNothing(t *testing.T) {
	t.Parallel()
	a := syncCluster(t)
	before := a.f.State()
	res := a.mustApply(Barrier{Actor: "c"})
	after := a.f.State()
	if after.Index != res.Index {
		t.Fatalf("index after the barrier = %d, want %d", after.Index, res.Index)
	}
	after.Index = before.Index
	if !after.Sync.Equal(before.Sync) || after.Leader != before.Leader || len(after.History) != len(before.History) {
		t.Fatalf("barrier changed the state: %+v -> %+v", before, after)
	}
	if CmdBarrier&SkipUnknownFlag == 0 {
		t.Fatal("CmdBarrier lacks SkipUnknownFlag: an older binary would stop on it")
	}
}

// Found by the simulator: the holder's SetSync recording b loses its
// reply; the holder re-records what it sees (nothing changed) before it
// drops b from synchronous_standby_names; the late SetSync must then fail
// although the members it compared against are the same.
func TestALateSetSyncCannotCommitAfterAConfirmation(t *testing.T) {
	t.Parallel()
	a := syncCluster(t)
	st := a.f.State()
	a.mustApply(SetSync{Primary: "a", Epoch: 1, Prev: &st.Sync}) // narrowed to none
	view := a.f.State().Sync
	late := SetSync{Primary: "a", Standbys: []string{"b"}, Epoch: 1, Prev: &view} // its reply is lost
	a.mustApply(SetSync{Primary: "a", Epoch: 1, Prev: &view})                     // the confirmation
	if res := a.apply(late); !errors.Is(res.Err, ErrSyncMismatch) {
		t.Fatalf("late SetSync after the confirmation: err %v, want ErrSyncMismatch", res.Err)
	}
}

// CheckLeave: the holder never leaves; a synchronous standby may leave
// while its holder has renewed; while a new holder never renewed, the
// replaced holder (inherited) may not: it may hold the only copy of
// acknowledged commits besides a holder that is lost, and RemoveMember
// would drop that claim for good.
func TestCheckLeave(t *testing.T) {
	t.Parallel()
	a := syncCluster(t)
	st := a.f.State()
	if err := st.CheckLeave("a"); !errors.Is(err, ErrHolderLeave) {
		t.Fatalf("holder leaves: %v, want ErrHolderLeave", err)
	}
	for _, m := range []string{"b", "c"} {
		if err := st.CheckLeave(m); err != nil {
			t.Fatalf("%s leaves while a renewed: %v, want nil", m, err)
		}
	}
	elect(a, "b", CauseSwitchover)
	st = a.f.State()
	if err := st.CheckLeave("a"); !errors.Is(err, ErrSyncLeave) {
		t.Fatalf("inherited a leaves while b never renewed: %v, want ErrSyncLeave", err)
	}
	if err := st.CheckLeave("c"); err != nil {
		t.Fatalf("c, never synchronous, leaves: %v, want nil", err)
	}
	a.mustApply(RenewLeader{Holder: "b", Epoch: st.Leader.Epoch, At: t0, TTL: time.Second})
	if err := a.f.State().CheckLeave("a"); err != nil {
		t.Fatalf("a leaves after b renewed: %v, want nil", err)
	}
}
