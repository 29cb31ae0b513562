package failover

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"raftgres/pgmanager"
	"raftgres/raftstore"
)

func TestWidenRecord(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name            string
		cur, next, want quorumRule
	}{
		{"the primary alone stays alone", quorumRule{}, quorumRule{q: 1, names: []string{"b"}}, quorumRule{}},
		{"a standby added", quorumRule{q: 1, names: []string{"b"}}, quorumRule{q: 1, names: []string{"b", "c"}},
			quorumRule{q: 1, names: []string{"b", "c"}}},
		{"a standby gone: the set keeps it", quorumRule{q: 1, names: []string{"b", "c"}}, quorumRule{q: 1, names: []string{"b"}},
			quorumRule{q: 1, names: []string{"b", "c"}}},
		{"q lowered at once", quorumRule{q: 2, names: []string{"b", "c", "d"}}, quorumRule{q: 1, names: []string{"b"}},
			quorumRule{q: 1, names: []string{"b", "c", "d"}}},
		{"q raised only later", quorumRule{q: 1, names: []string{"b", "c"}}, quorumRule{q: 2, names: []string{"b", "c"}},
			quorumRule{q: 1, names: []string{"b", "c"}}},
		{"no standby next: the primary alone", quorumRule{q: 1, names: []string{"b", "c"}}, quorumRule{}, quorumRule{}},
	} {
		if got := widenRecord(tc.cur, tc.next); !got.equal(tc.want) {
			t.Errorf("%s: widenRecord(%+v, %+v) = %+v, want %+v", tc.name, tc.cur, tc.next, got, tc.want)
		}
	}
}

func TestQuorumFlushed(t *testing.T) {
	t.Parallel()
	pgst := pgmanager.Status{Replicas: []pgmanager.Replica{
		{ApplicationName: "b", State: "streaming", FlushLSN: 300},
		{ApplicationName: "c", State: "streaming", FlushLSN: 100},
		{ApplicationName: "c", State: "streaming", FlushLSN: 200}, // a second walsender of c: its best counts once
		{ApplicationName: "d", State: "catchup", FlushLSN: 900},
		{ApplicationName: "e", State: "streaming", FlushLSN: 800}, // not in the set
	}}
	for _, tc := range []struct {
		r    quorumRule
		want uint64
	}{
		{quorumRule{q: 1, names: []string{"b", "c", "d"}}, 300},
		{quorumRule{q: 2, names: []string{"b", "c", "d"}}, 200},
		{quorumRule{q: 3, names: []string{"b", "c", "d"}}, 0},
	} {
		if got := quorumFlushed(pgst, tc.r); got != tc.want {
			t.Errorf("quorumFlushed(%+v) = %d, want %d", tc.r, got, tc.want)
		}
	}
}

// quorumHolderRig is pg1 holding the key in quorum mode (k of pg2, pg3)
// with a fresh lease and the primary alone recorded.
func quorumHolderRig(t *testing.T, k int) *rig {
	t.Helper()
	st := testState("pg1", "pg1", "pg2", "pg3")
	st.Config.SynchronousMode, st.Config.SynchronousQuorum, st.Config.SynchronousNodeCount = true, true, k
	st.Sync = raftstore.SyncState{Primary: "pg1"}
	r := newRig(t, "pg1", st, runningPrimary)
	r.renew()
	return r
}

func quorumStatus(cur uint64, flush map[string]uint64) pgmanager.Status {
	s := runningPrimary
	s.CurrentLSN, s.SyncStandbyNames = cur, gateOnly
	for _, n := range slices.Sorted(func(yield func(string) bool) {
		for n := range flush {
			if !yield(n) {
				return
			}
		}
	}) {
		s.Replicas = append(s.Replicas, pgmanager.Replica{ApplicationName: n, State: "streaming", SyncState: "async", FlushLSN: flush[n]})
	}
	return s
}

// The record names a set only once the gate counts it and q of it hold
// what was confirmed before; the gate stops counting a standby before the
// record drops it, and the record drops it only once the others hold what
// was confirmed with its help.
func TestQuorumRecordFollowsTheGate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := quorumHolderRig(t, 1)
	step := func(cur uint64, flush map[string]uint64) raftstore.SyncState {
		r.sup.manageSync(ctx, r.store.State(), quorumStatus(cur, flush))
		return r.store.State().Sync
	}
	if s := step(1000, map[string]uint64{"pg2": 900, "pg3": 900}); len(s.Standbys) != 0 {
		t.Fatalf("recorded %v before the gate counted them", s.Standbys)
	}
	if q, names := r.pg.gateRule(); q != 1 || !slices.Equal(names, []string{"pg2", "pg3"}) {
		t.Fatalf("gate rule %d of %v, want 1 of [pg2 pg3]", q, names)
	}
	step(1100, map[string]uint64{"pg2": 1000, "pg3": 1000}) // since = 1100
	if s := step(1200, map[string]uint64{"pg2": 1050, "pg3": 1000}); len(s.Standbys) != 0 {
		t.Fatalf("recorded %v although neither holds 1100, confirmed before the gate counted them", s.Standbys)
	}
	if s := step(1300, map[string]uint64{"pg2": 1150, "pg3": 1000}); !slices.Equal(s.Standbys, []string{"pg2", "pg3"}) || s.Quorum != 1 {
		t.Fatalf("record %+v, want 1 of [pg2 pg3]", s)
	}
	// pg3 stops streaming for longer than a blip.
	r.clock.Advance(SyncBlip(r.store.State().Config) + time.Second)
	if s := step(1400, map[string]uint64{"pg2": 1300}); !slices.Equal(s.Standbys, []string{"pg2", "pg3"}) {
		t.Fatalf("record %v dropped pg3 before the gate stopped counting it", s.Standbys)
	}
	if q, names := r.pg.gateRule(); q != 1 || !slices.Equal(names, []string{"pg2"}) {
		t.Fatalf("gate rule %d of %v, want 1 of [pg2]", q, names)
	}
	step(1500, map[string]uint64{"pg2": 1400}) // since = 1500: pg3 may hold what pg2 lacks up to here
	if s := step(1600, map[string]uint64{"pg2": 1450}); !slices.Equal(s.Standbys, []string{"pg2", "pg3"}) {
		t.Fatalf("record %v dropped pg3 while pg2 lacks 1450..1500", s.Standbys)
	}
	if s := step(1700, map[string]uint64{"pg2": 1600}); !slices.Equal(s.Standbys, []string{"pg2"}) || s.Quorum != 1 {
		t.Fatalf("record %+v, want 1 of [pg2]", s)
	}
	// The order, as committed.
	ev := strings.Join(r.ev.all(), "\n")
	if gate, rec := strings.Index(ev, "gate quorum 1 of [pg2]"), strings.Index(ev, "SetSync pg1 [pg2] q1"); gate < 0 || rec < gate {
		t.Fatalf("the record named pg2 alone before the gate counted it alone:\n%s", ev)
	}
}

// With no standby streaming (not strict), the record falls back to the
// primary alone before the gate stops waiting for standbys.
func TestQuorumWithNoStandbyRecordsThePrimaryAloneFirst(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := quorumHolderRig(t, 1)
	r.store.edit(func(s *raftstore.State) {
		s.Sync = raftstore.SyncState{Primary: "pg1", Standbys: []string{"pg2", "pg3"}, Quorum: 1, Rev: s.Sync.Rev}
	})
	r.sup.manageSync(ctx, r.store.State(), quorumStatus(1000, map[string]uint64{"pg2": 1000, "pg3": 1000})) // the term starts from the record
	r.clock.Advance(SyncBlip(r.store.State().Config) + time.Second)
	r.sup.manageSync(ctx, r.store.State(), quorumStatus(1100, nil))
	if s := r.store.State().Sync; len(s.Standbys) != 0 {
		t.Fatalf("record %+v, want the primary alone", s)
	}
	if q, _ := r.pg.gateRule(); q != 0 {
		t.Fatalf("gate still waits for %d standbys", q)
	}
	ev := strings.Join(r.ev.all(), "\n")
	if rec, gate := strings.Index(ev, "SetSync pg1 []"), strings.LastIndex(ev, "gate quorum 0 of []"); rec < 0 || gate < rec {
		t.Fatalf("the gate stopped waiting before the record gave the standbys up:\n%s", ev)
	}
}

// A replica reports the key state whose lease it saw end with a position
// that is the end of its WAL, and only then.
func TestReplicaReportsPositionsReadAfterTheLeaseEnded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testState("pg1", "pg1", "pg2", "pg3")
	st.Config.SynchronousMode, st.Config.SynchronousQuorum = true, true
	for _, m := range st.Members {
		m.Agent.Protocol = raftstore.Protocol
	}
	st.Sync = raftstore.SyncState{Primary: "pg1", Standbys: []string{"pg2", "pg3"}, Quorum: 1}
	restarted := runningReplica
	restarted.ReceivedLSN, restarted.WalReceiver = 0, "" // no walreceiver since the start
	for _, tc := range []struct {
		name  string
		pgst  pgmanager.Status
		after time.Duration
		want  bool
	}{
		{"within the lease", runningReplica, time.Second, false},
		{"after it", runningReplica, st.LeaseTTL(), true},
		{"restarted, replay still going", restarted, st.LeaseTTL(), false},
		{"restarted, replay waits for WAL", func() pgmanager.Status { s := restarted; s.ReplayExhausted = true; return s }(), st.LeaseTTL(), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, "pg2", st.Clone(), tc.pgst)
			r.sup.cycle(ctx)
			r.clock.Advance(tc.after)
			r.sup.cycle(ctx)
			m := r.store.State().Members["pg2"]
			if got := m.LeaseOver != nil; got != tc.want {
				t.Fatalf("report carries lease_over = %v, want %v", m.LeaseOver, tc.want)
			}
			if tc.want && *m.LeaseOver != st.Leader.Ref() {
				t.Fatalf("lease_over %+v, want the key's %+v", *m.LeaseOver, st.Leader.Ref())
			}
		})
	}
}

// F8: in synchronous mode a holder whose record does not name it yet (a
// new cluster, the mode just turned on: anyone may be elected) lets its
// gate confirm nothing until the record naming it is committed.
func TestGateConfirmsNothingUntilTheRecordNamesThePrimary(t *testing.T) {
	t.Parallel()
	for _, quorum := range []bool{false, true} {
		st := testState("pg1", "pg1", "pg2")
		st.Config.SynchronousMode, st.Config.SynchronousQuorum = true, quorum
		r := newRig(t, "pg1", st, runningPrimary)
		r.renew()
		if q, names := r.pg.gateRule(); q != 1 || len(names) != 0 {
			t.Fatalf("quorum %v: gate rule before the record %d of %v, want 1 of none", quorum, q, names)
		}
		s := runningPrimary
		s.SyncStandbyNames = gateOnly
		r.sup.manageSync(context.Background(), r.store.State(), s)
		if got := r.store.State().Sync.Primary; got != "pg1" {
			t.Fatalf("quorum %v: record names %q", quorum, got)
		}
		if q, _ := r.pg.gateRule(); q != 0 {
			t.Fatalf("quorum %v: gate still waits for %d standbys once the record names the primary", quorum, q)
		}
	}
}
