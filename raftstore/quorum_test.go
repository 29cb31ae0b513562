package raftstore

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// quorumCluster is a bootstrapped quorum-mode cluster of a..e where a
// took the key at epoch 1 and renewed, with b, c, d, e recorded and each
// commit on q of them.
func quorumCluster(t *testing.T, q int) *applier {
	t.Helper()
	a := newApplier(t)
	cfg := DefaultClusterConfig()
	cfg.SynchronousMode, cfg.SynchronousQuorum, cfg.SynchronousNodeCount = true, true, q
	a.mustApply(Bootstrap{Config: cfg, Actor: "a", At: t0})
	a.register("a", "b", "c", "d", "e")
	a.mustApply(Initialize{SystemID: "1", Actor: "a", At: t0})
	a.mustApply(SetLeader{Holder: "a", Cause: CauseBootstrap, Actor: "a", Rules: RulesSyncKey, At: t0})
	a.mustApply(RenewLeader{Holder: "a", Epoch: 1, At: t0, TTL: cfg.TTL})
	st := a.f.State()
	a.mustApply(SetSync{Primary: "a", Standbys: []string{"b", "c", "d", "e"}, Quorum: q, Epoch: 1, Prev: &st.Sync})
	return a
}

// report records member's position; over marks it read after the
// current key's lease ended.
func report(a *applier, member string, lsn uint64, over bool) {
	st := a.f.State()
	r := ReportStatus{Name: member, Status: MemberStatus{Role: RoleReplica, State: StateRunning, ReceivedLSN: lsn}}
	if over {
		ref := st.Leader.Ref()
		r.LeaseOver = &ref
	}
	a.mustApply(r)
}

// In quorum mode a standby is electable only once n − q + 1 of the n
// recorded standbys reported a position read after the lease ended, and
// it is the furthest of them: a commit on q of them is on one that
// reported.
func TestQuorumElectable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		q       int
		reports map[string]uint64 // read after the lease ended
		stale   map[string]uint64 // read before
		want    []string          // electable
	}{
		{"q1 of 4 needs all four", 1, map[string]uint64{"b": 10, "c": 20, "d": 5}, nil, nil},
		{"q1 of 4, all reported: the furthest", 1, map[string]uint64{"b": 10, "c": 20, "d": 5, "e": 20}, nil, []string{"c", "e"}},
		{"q2 of 4 needs three", 2, map[string]uint64{"b": 10, "c": 20}, nil, nil},
		{"q2 of 4, three reported", 2, map[string]uint64{"b": 10, "c": 20, "d": 15}, nil, []string{"c"}},
		{"a report from before the lease end does not count", 2, map[string]uint64{"b": 10, "c": 20}, map[string]uint64{"d": 30}, nil},
		{"nor does it make its member electable", 2, map[string]uint64{"b": 10, "c": 20, "e": 1}, map[string]uint64{"d": 30}, []string{"c"}},
		{"q4 of 4: every standby holds everything", 4, nil, nil, []string{"b", "c", "d", "e"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := quorumCluster(t, tc.q)
			for m, l := range tc.stale {
				report(a, m, l, false)
			}
			for m, l := range tc.reports {
				report(a, m, l, true)
			}
			st := a.f.State()
			var got []string
			for _, m := range []string{"a", "b", "c", "d", "e"} {
				if ok, _ := st.Electable(m); ok {
					got = append(got, m)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("electable %v, want %v", got, tc.want)
			}
			// The apply of SetLeader judges the same way.
			for _, m := range []string{"b", "c", "d", "e"} {
				res := elect(a, m, CauseFailover)
				if ok := res.Err == nil; ok != slices.Contains(tc.want, m) {
					t.Fatalf("election of %s: err %v", m, res.Err)
				}
				if res.Err == nil {
					break
				}
				if !errors.Is(res.Err, ErrNotElectable) {
					t.Fatalf("election of %s: err %v, want ErrNotElectable", m, res.Err)
				}
			}
		})
	}
}

// A renewal makes earlier reports stale: they name the key's old
// revision.
func TestQuorumReportsNameTheKeyRevision(t *testing.T) {
	t.Parallel()
	a := quorumCluster(t, 1)
	for _, m := range []string{"b", "c", "d", "e"} {
		report(a, m, 10, true)
	}
	if ok, why := a.f.State().Electable("b"); !ok {
		t.Fatalf("b not electable: %s", why)
	}
	a.mustApply(RenewLeader{Holder: "a", Epoch: 1, At: t0, TTL: DefaultClusterConfig().TTL})
	if ok, _ := a.f.State().Electable("b"); ok {
		t.Fatal("b electable on reports made before the holder renewed again")
	}
}

// The winner's record inherits only members as far as it (they hold
// every commit), with no quorum; the first renewal clears them.
func TestQuorumTakeoverInheritsTheFurthest(t *testing.T) {
	t.Parallel()
	a := quorumCluster(t, 2)
	report(a, "b", 30, true)
	report(a, "c", 30, true)
	report(a, "d", 10, true)
	if res := elect(a, "b", CauseFailover); res.Err != nil {
		t.Fatal(res.Err)
	}
	sync := a.f.State().Sync
	if sync.Primary != "b" || len(sync.Standbys) != 0 || sync.Quorum != 0 || !slices.Equal(sync.Inherited, []string{"a", "c"}) {
		t.Fatalf("record after takeover %+v, want primary b inheriting a and c", sync)
	}
}

// Removing a member of a quorum set lowers q: a commit on q of n is on
// q − 1 of the others; at q = 0 nothing is proven and the record keeps
// no standby.
func TestRemoveMemberLowersTheQuorum(t *testing.T) {
	t.Parallel()
	a := quorumCluster(t, 2)
	a.mustApply(RemoveMember{Name: "e", Actor: "a", At: t0})
	if s := a.f.State().Sync; !slices.Equal(s.Standbys, []string{"b", "c", "d"}) || s.Quorum != 1 {
		t.Fatalf("after removing e: %+v", s)
	}
	a.mustApply(RemoveMember{Name: "d", Actor: "a", At: t0})
	if s := a.f.State().Sync; len(s.Standbys) != 0 || s.Quorum != 0 || s.Primary != "a" {
		t.Fatalf("after removing d: %+v, want the primary alone", s)
	}
}

func TestSetSyncQuorumValidation(t *testing.T) {
	t.Parallel()
	for _, q := range []int{-1, 3} {
		if err := (SetSync{Primary: "a", Standbys: []string{"b", "c"}, Quorum: q, Epoch: 1}).Validate(); err == nil {
			t.Errorf("quorum %d of 2 accepted", q)
		}
	}
	if err := (SetSync{Primary: "a", Standbys: []string{"b", "c"}, Quorum: 1, Epoch: 1}).Validate(); err != nil {
		t.Error(err)
	}
}

func TestCheckProtocolGatesQuorum(t *testing.T) {
	t.Parallel()
	st := NewState()
	st.Members["a"] = &Member{Name: "a", Agent: AgentVersion{Protocol: 1}}
	cfg := DefaultClusterConfig()
	cfg.SynchronousMode, cfg.SynchronousQuorum = true, true
	ref := KeyRef{Epoch: 1, Rev: 2}
	for _, cmd := range []Command{
		SetConfig{Config: cfg},
		ReportStatus{Name: "a", LeaseOver: &ref},
		SetSync{Primary: "a", Standbys: []string{"b", "c"}, Quorum: 1},
		SetSync{Primary: "a", Prev: &SyncState{Primary: "a", Standbys: []string{"b", "c"}, Quorum: 1}},
	} {
		if err := CheckProtocol(st, []string{"a"}, cmd); !errors.Is(err, ErrNeedsUpgrade) {
			t.Errorf("%T %+v: err %v, want ErrNeedsUpgrade", cmd, cmd, err)
		}
	}
}

func TestSynchronousModeDocument(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		yaml, json string
		mode       SyncMode
	}{
		{"synchronous_mode: true", `{"synchronous_mode":true}`, SyncOn},
		{"synchronous_mode: off", `{"synchronous_mode":"off"}`, SyncOff},
		{"synchronous_mode: quorum\nsynchronous_node_count: 2", `{"synchronous_mode":"quorum","synchronous_node_count":2}`, SyncQuorum},
	} {
		var y, j ConfigDoc
		if err := yaml.Unmarshal([]byte(tc.yaml), &y); err != nil {
			t.Fatalf("%s: %v", tc.yaml, err)
		}
		if err := json.Unmarshal([]byte(tc.json), &j); err != nil {
			t.Fatalf("%s: %v", tc.json, err)
		}
		for _, d := range []ConfigDoc{y, j} {
			c := d.Config()
			if SyncModeOf(c) != tc.mode || c.QuorumCommit() != (tc.mode == SyncQuorum) {
				t.Fatalf("%s: mode %s, want %s", tc.yaml, SyncModeOf(c), tc.mode)
			}
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			out, err := json.Marshal(DocOf(c))
			if err != nil {
				t.Fatal(err)
			}
			var back ConfigDoc
			if err := json.Unmarshal(out, &back); err != nil {
				t.Fatal(err)
			}
			if got := back.Config(); got.SynchronousQuorum != c.SynchronousQuorum || got.SynchronousNodeCount != c.SynchronousNodeCount {
				t.Fatalf("round trip of %s lost the mode: %s", tc.yaml, out)
			}
		}
	}
	var d ConfigDoc
	if err := yaml.Unmarshal([]byte("synchronous_mode: maybe"), &d); err == nil || !strings.Contains(err.Error(), "on, off or quorum") {
		t.Fatalf("synchronous_mode: maybe: err %v", err)
	}
	bad := DefaultClusterConfig()
	bad.SynchronousNodeCount = 2
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "needs synchronous_mode: quorum") {
		t.Fatalf("synchronous_node_count 2 without quorum: err %v", err)
	}
}

// A recovery keeps a quorum record only when n − q + 1 of its set
// survive: a commit may be on any q of them.
func TestRecoveryKeepsAQuorumRecordOnlyWithEnoughOfTheSet(t *testing.T) {
	t.Parallel()
	a := quorumCluster(t, 2) // 2 of b, c, d, e: an election needs 3 of them
	st := a.f.State()
	for _, tc := range []struct {
		survivors []string
		lost      bool
	}{
		{[]string{"b", "c", "d"}, false},
		{[]string{"b", "c"}, true},
		{[]string{"a", "b"}, false}, // the last primary holds everything it acknowledged
	} {
		alive, lost := syncSurvivors(st, tc.survivors)
		if lost != tc.lost {
			t.Errorf("survivors %v: lost %v (alive %v), want %v", tc.survivors, lost, alive, tc.lost)
		}
	}
}

// F9: while no holder renewed, a member of a quorum set may not leave:
// RemoveMember lowers q, and the rest may never prove they hold every
// commit.
func TestCheckLeaveKeepsTheQuorumSet(t *testing.T) {
	t.Parallel()
	a := quorumCluster(t, 2)
	st := a.f.State()
	if err := st.CheckLeave("b"); err != nil {
		t.Fatalf("with a holder that renewed: %v", err)
	}
	a.mustApply(SetLeader{Holder: "", PrevEpoch: st.Leader.Epoch, PrevRev: st.Leader.Rev, Cause: CauseRelease, Actor: "a",
		Rules: RulesSyncKey, At: t0})
	if err := a.f.State().CheckLeave("b"); !errors.Is(err, ErrSyncLeave) {
		t.Fatalf("released key: CheckLeave(b) = %v, want ErrSyncLeave", err)
	}
}
