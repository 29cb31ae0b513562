package failover

import (
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"

	"raftgres/pgmanager"
	"raftgres/raftstore"
)

const sysid = "7000000000000000001"

func state(holder string, members ...string) raftstore.State {
	st := raftstore.NewState()
	st.Initialize = sysid
	st.Leader = raftstore.LeaderKey{Holder: holder, Epoch: 3, Rev: 10}
	st.Config = raftstore.DefaultClusterConfig()
	for _, m := range members {
		role := "replica"
		if m == holder {
			role = "primary"
		}
		st.Members[m] = &raftstore.Member{Name: m, Tags: raftstore.DefaultTags(), Status: raftstore.MemberStatus{Role: role, State: "running"}}
	}
	return st
}

var (
	primaryPG = pgmanager.Status{Running: true, InRecovery: false, SystemID: sysid}
	replicaPG = pgmanager.Status{Running: true, InRecovery: true, SystemID: sysid}
	stoppedPG = pgmanager.Status{}
	// stuckPG is a standby that refuses connections (not yet consistent)
	// while its walreceiver keeps failing.
	stuckPG = pgmanager.Status{Running: true, InRecovery: true, StreamFailing: true,
		Error: "FATAL: the database system is not yet accepting connections (SQLSTATE 57P03)"}
)

func obs(me string, st raftstore.State, pg pgmanager.Status, mods ...func(*Observation)) Observation {
	o := Observation{Member: me, State: st, PG: pg, HasData: true, DataSystemID: sysid,
		Standby: pg.InRecovery, LeaseValid: true, Tags: raftstore.DefaultTags(), MaxCrashes: 3}
	for _, m := range mods {
		m(&o)
	}
	return o
}

func kinds(p Plan) []ActionKind {
	out := []ActionKind{}
	for _, a := range p.Actions {
		out = append(out, a.Kind)
	}
	return out
}

func TestDecide(t *testing.T) {
	t.Parallel()
	uninit := state("", "pg1", "pg2")
	uninit.Initialize = ""
	paused := state("pg2", "pg1", "pg2")
	paused.Config.Pause = true
	pausedHolder := state("pg1", "pg1", "pg2")
	pausedHolder.Config.Pause = true
	for _, tc := range []struct {
		name string
		obs  Observation
		want []ActionKind
	}{
		{"fresh cluster races", obs("pg1", uninit, stoppedPG, func(o *Observation) { o.HasData = false }),
			[]ActionKind{ActAcquireBootstrap}},
		{"bootstrap winner inits", obs("pg1", func() raftstore.State { s := uninit.Clone(); s.Leader.Holder = "pg1"; return s }(),
			stoppedPG, func(o *Observation) { o.HasData = false }), []ActionKind{ActInit}},
		{"nofailover does not race", obs("pg1", uninit, stoppedPG, func(o *Observation) { o.HasData = false; o.Tags.NoFailover = true }),
			[]ActionKind{}},
		// Adoption (issue 11): a primary data directory takes the key, a
		// standby waits, the holder records the system it runs.
		{"stopped primary data adopted", obs("pg1", uninit, stoppedPG), []ActionKind{ActAcquireBootstrap}},
		{"running primary adopted, not fenced", obs("pg1", uninit, primaryPG), []ActionKind{ActAcquireBootstrap}},
		{"running standby waits", obs("pg2", uninit, replicaPG), []ActionKind{}},
		{"stopped standby waits", obs("pg2", uninit, stoppedPG, func(o *Observation) { o.Standby = true }), []ActionKind{}},
		{"nofailover data waits", obs("pg1", uninit, primaryPG, func(o *Observation) { o.Tags.NoFailover = true }), []ActionKind{}},
		{"adopter records the running primary", obs("pg1", func() raftstore.State { s := uninit.Clone(); s.Leader.Holder = "pg1"; return s }(),
			primaryPG), []ActionKind{ActRecordInit}},
		{"adopter starts a stopped primary, then records", obs("pg1", func() raftstore.State { s := uninit.Clone(); s.Leader.Holder = "pg1"; return s }(),
			stoppedPG), []ActionKind{ActStartPrimary, ActRecordInit}},
		{"second writer fenced once another adopts", obs("pg2", func() raftstore.State { s := uninit.Clone(); s.Leader.Holder = "pg1"; return s }(),
			primaryPG), []ActionKind{ActDemote}},
		{"data waits for the adopter", obs("pg2", func() raftstore.State { s := uninit.Clone(); s.Leader.Holder = "pg1"; return s }(),
			replicaPG), []ActionKind{}},
		{"empty replica clones", obs("pg3", state("pg1", "pg1", "pg2", "pg3"), stoppedPG, func(o *Observation) { o.HasData = false }),
			[]ActionKind{ActClone, ActStartStandby}},
		{"foreign system id refused", obs("pg2", state("pg1", "pg1", "pg2"), replicaPG, func(o *Observation) { o.DataSystemID = "42" }),
			[]ActionKind{ActRefuse}},
		{"holder replica promotes", obs("pg2", state("pg2", "pg1", "pg2"), replicaPG), []ActionKind{ActPromote}},
		{"holder without lease waits", obs("pg2", state("pg2", "pg1", "pg2"), replicaPG, func(o *Observation) { o.LeaseValid = false }),
			[]ActionKind{}},
		{"holder primary fenced without lease", obs("pg1", state("pg1", "pg1", "pg2"), primaryPG, func(o *Observation) { o.LeaseValid = false }),
			[]ActionKind{ActDemote}},
		{"healthy primary", obs("pg1", state("pg1", "pg1", "pg2"), primaryPG), []ActionKind{}},
		{"stopped holder starts", obs("pg1", state("pg1", "pg1", "pg2"), stoppedPG), []ActionKind{ActStartPrimary}},
		{"crash loop releases", obs("pg1", state("pg1", "pg1", "pg2"), stoppedPG, func(o *Observation) { o.Crashes = 3 }),
			[]ActionKind{ActRelease}},
		{"old primary demoted", obs("pg1", state("pg2", "pg1", "pg2"), primaryPG), []ActionKind{ActDemote}},
		{"stopped old primary follows with rewind", obs("pg1", state("pg2", "pg1", "pg2"), stoppedPG),
			[]ActionKind{ActFollow}},
		{"failed rewind reclones", obs("pg1", state("pg2", "pg1", "pg2"), stoppedPG, func(o *Observation) { o.RewindFailed = true }),
			[]ActionKind{ActReclone}},
		{"replica repoints", obs("pg3", state("pg2", "pg1", "pg2", "pg3"), replicaPG, func(o *Observation) { o.Upstream = "pg1" }),
			[]ActionKind{ActFollow}},
		{"replica streaming", obs("pg3", state("pg2", "pg1", "pg2", "pg3"), replicaPG, func(o *Observation) { o.Upstream = "pg2" }),
			[]ActionKind{}},
		{"unowned primary fenced", obs("pg1", state("", "pg1", "pg2"), primaryPG), []ActionKind{ActDemote}},
		{"no primary: replica waits", obs("pg2", state("", "pg1", "pg2"), replicaPG), []ActionKind{}},
		{"paused: nothing", obs("pg1", paused, stoppedPG), []ActionKind{}},
		{"paused: writer of another holder still fenced", obs("pg1", paused, primaryPG), []ActionKind{ActDemote}},
		// #3: pause stops automatic actions, not the holder's own fencing.
		{"paused holder without a lease fenced", obs("pg1", pausedHolder, primaryPG, func(o *Observation) { o.LeaseValid = false }),
			[]ActionKind{ActDemote}},
		{"paused holder with a lease keeps serving", obs("pg1", pausedHolder, primaryPG), []ActionKind{}},
		// Part 3 (3): a failed status query is not a role.
		{"status error is not read as writable", obs("pg2", state("pg1", "pg1", "pg2"),
			pgmanager.Status{Running: true, Error: "context deadline exceeded"}), []ActionKind{}},
		// A rewound standby that can never become consistent (its
		// walreceiver keeps failing) is rewound again, then recloned; a
		// status error alone, or a standby not yet found stuck, waits.
		{"stuck standby: status error and stream failing, start failed: rewind", obs("pg2", state("pg1", "pg1", "pg2"),
			stuckPG, func(o *Observation) { o.Standby, o.StandbyStartFailed = true, true }), []ActionKind{ActFollow}},
		{"stuck standby beyond rewind: reclone", obs("pg2", state("pg1", "pg1", "pg2"),
			stuckPG, func(o *Observation) { o.Standby, o.RewindFailed = true, true }), []ActionKind{ActReclone}},
		{"stream failing but not yet found stuck: wait", obs("pg2", state("pg1", "pg1", "pg2"),
			stuckPG, func(o *Observation) { o.Standby = true }), []ActionKind{}},
		{"status error without stream failure: wait even after a failed rewind", obs("pg2", state("pg1", "pg1", "pg2"),
			pgmanager.Status{Running: true, Error: "57P03"}, func(o *Observation) { o.Standby, o.RewindFailed = true, true }), []ActionKind{}},
		{"stream failing on the holder: wait", obs("pg1", state("pg1", "pg1", "pg2"),
			stuckPG, func(o *Observation) { o.Standby, o.RewindFailed = true, true }), []ActionKind{}},
		{"stream failing while paused: nothing", obs("pg2", paused,
			stuckPG, func(o *Observation) { o.Standby, o.RewindFailed = true, true }), []ActionKind{}},
		// #10: starts or promotions that keep failing give the key up.
		{"holder failing to promote releases", obs("pg1", state("pg1", "pg1", "pg2"), replicaPG, func(o *Observation) { o.Crashes = 3 }),
			[]ActionKind{ActRelease}},
		{"switchover due: hand over", obs("pg1", state("pg1", "pg1", "pg2"), primaryPG, func(o *Observation) { o.SwitchoverDue = true }),
			[]ActionKind{ActHandOver}},
		{"handed over: follow without rewind", obs("pg1", state("pg2", "pg1", "pg2"), stoppedPG, func(o *Observation) { o.HandedOver = true }),
			[]ActionKind{ActFollow}},
		{"nofailover holder releases", obs("pg2", state("pg2", "pg1", "pg2"), replicaPG, func(o *Observation) { o.Tags.NoFailover = true }),
			[]ActionKind{ActRelease}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := Decide(tc.obs)
			if diff := cmp.Diff(tc.want, kinds(got)); diff != "" {
				t.Fatalf("plan %s\n(-want +got):\n%s", got, diff)
			}
		})
	}
}

// randomObservation draws an observation from a space that covers every
// branch of Decide.
func randomObservation(r *rand.Rand) Observation {
	names := []string{"pg1", "pg2", "pg3"}
	holders := append([]string{""}, names...)
	st := state(holders[r.IntN(len(holders))], names...)
	if r.IntN(5) == 0 {
		st.Initialize = ""
	}
	st.Config.Pause = r.IntN(4) == 0
	pgs := []pgmanager.Status{primaryPG, replicaPG, stoppedPG, stuckPG}
	o := obs(names[r.IntN(3)], st, pgs[r.IntN(len(pgs))])
	o.StandbyStartFailed = r.IntN(4) == 0
	o.HasData = r.IntN(5) != 0
	o.LeaseValid = r.IntN(2) == 0
	o.Standby = r.IntN(2) == 0
	o.RewindFailed = r.IntN(6) == 0
	o.Crashes = r.IntN(5)
	o.Tags.NoFailover = r.IntN(4) == 0
	if r.IntN(6) == 0 {
		o.DataSystemID = "42"
	}
	o.Upstream = holders[r.IntN(len(holders))]
	return o
}

// TestDecideInvariants checks DESIGN.md's invariants over many random
// observations.
func TestDecideInvariants(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		o := randomObservation(r)
		p := Decide(o)
		holdsKey := o.State.Leader.Holder == o.Member
		if (p.Has(ActPromote) || p.Has(ActStartPrimary) || p.Has(ActInit)) && !holdsKey {
			t.Fatalf("promotes without the leader key: %+v -> %s", o, p)
		}
		if (p.Has(ActPromote) || p.Has(ActStartPrimary) || p.Has(ActInit)) && !o.LeaseValid {
			t.Fatalf("promotes without a confirmed lease: %+v -> %s", o, p)
		}
		if p.Has(ActPromote) && o.Tags.NoFailover {
			t.Fatalf("promotes a nofailover member: %+v -> %s", o, p)
		}
		foreign := o.HasData && o.State.Initialize != "" && o.DataSystemID != o.State.Initialize
		if foreign && (len(p.Actions) != 1 || p.Actions[0].Kind != ActRefuse) {
			t.Fatalf("foreign system id not refused: %+v -> %s", o, p)
		}
		writable := o.PG.Running && !o.PG.InRecovery
		if writable && !foreign && o.State.Leader.Holder != "" && !holdsKey && !p.Has(ActDemote) {
			t.Fatalf("writer of another holder not fenced: %+v -> %s", o, p)
		}
		if writable && !foreign && holdsKey && !o.LeaseValid && !p.Has(ActDemote) {
			t.Fatalf("holder without a lease not fenced (paused or not): %+v -> %s", o, p)
		}
		if o.State.Config.Pause && !foreign {
			for _, a := range p.Actions {
				if a.Kind != ActDemote {
					t.Fatalf("paused but acts: %+v -> %s", o, p)
				}
			}
		}
		if !p.Noop() && p.Reason == "" {
			t.Fatalf("plan without a reason: %s", p)
		}
	}
}

func TestDecideHandedOverSkipsRewind(t *testing.T) {
	t.Parallel()
	p := Decide(obs("pg1", state("pg2", "pg1", "pg2"), stoppedPG, func(o *Observation) { o.HandedOver = true }))
	if len(p.Actions) != 1 || p.Actions[0].Rewind {
		t.Fatalf("plan %s: want follow without rewind", p)
	}
	p = Decide(obs("pg1", state("pg2", "pg1", "pg2"), stoppedPG))
	if len(p.Actions) != 1 || !p.Actions[0].Rewind {
		t.Fatalf("plan %s: want follow with rewind after an unclean end", p)
	}
}

func TestGateStandbyNames(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in     []string
		strict bool
		want   string
	}{
		{nil, false, `"raftgres_fence"`},
		{nil, true, `FIRST 2 ("raftgres_fence", *)`},
		{[]string{"pg2"}, false, `FIRST 2 ("raftgres_fence", "pg2")`},
		{[]string{"pg2"}, true, `FIRST 2 ("raftgres_fence", "pg2")`},
		{[]string{"pg2", `we"ird`}, false, `FIRST 3 ("raftgres_fence", "pg2", "we""ird")`},
	} {
		if got := GateStandbyNames(tc.in, tc.strict); got != tc.want {
			t.Errorf("GateStandbyNames(%q, %v) = %s, want %s", tc.in, tc.strict, got, tc.want)
		}
	}
}

func TestChooseSync(t *testing.T) {
	t.Parallel()
	st := state("pg1", "pg1", "pg2", "pg3")
	st.Members["pg2"].Tags.NoSync = true
	pgst := pgmanager.Status{Replicas: []pgmanager.Replica{
		{ApplicationName: "pg2", State: "streaming"}, {ApplicationName: "pg3", State: "streaming"}}}
	all := map[string]bool{"pg1": true, "pg2": true, "pg3": true}
	if got := chooseSync(st, "pg1", pgst, all); len(got) != 1 || got[0] != "pg3" {
		t.Fatalf("nosync pg2 must be skipped: %v", got)
	}
	st.Members["pg2"].Tags.NoSync = false
	st.Sync = raftstore.SyncState{Primary: "pg1", Standbys: []string{"pg3"}}
	if got := chooseSync(st, "pg1", pgst, all); len(got) != 1 || got[0] != "pg3" {
		t.Fatalf("current sync standby kept: %v", got)
	}
	// A partitioned standby still "streams" in pg_stat_replication until
	// wal_sender_timeout; its reports stopped reaching the store.
	if got := chooseSync(st, "pg1", pgst, map[string]bool{"pg1": true, "pg2": true}); len(got) != 1 || got[0] != "pg2" {
		t.Fatalf("a stale sync standby must be replaced: %v", got)
	}
	st.Members["pg2"].Tags.NoFailover = true
	if got := chooseSync(st, "pg1", pgst, map[string]bool{"pg1": true, "pg2": true}); len(got) != 0 {
		t.Fatalf("a nofailover standby cannot be synchronous: %v", got)
	}
	st.Members["pg2"].Tags.NoFailover = false
	pgst.Replicas = pgst.Replicas[:1]
	if got := chooseSync(st, "pg1", pgst, all); len(got) != 1 || got[0] != "pg2" {
		t.Fatalf("switch to a streaming standby: %v", got)
	}
}
