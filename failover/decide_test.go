package failover

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"raftgres/pgmanager"
	"raftgres/raftstore"
)

const sysid = "7000000000000000001"

var reportedAt = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func state(holder string, members ...string) raftstore.State {
	st := raftstore.NewState()
	st.Initialize = sysid
	st.Leader = raftstore.LeaderKey{Holder: holder, Epoch: 3, Rev: 10}
	st.Config = raftstore.DefaultClusterConfig()
	for _, m := range members {
		role := raftstore.RoleReplica
		if m == holder {
			role = raftstore.RolePrimary
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
	// pg2 reported a standby's data directory, behind pg1's below (#7:
	// adoption compares positions).
	uninit.Members["pg2"].Status = raftstore.MemberStatus{Role: "replica", State: "running", SystemID: sysid,
		Timeline: 1, ReceivedLSN: 0x100, ReplayedLSN: 0x100, ReportedAt: reportedAt}
	at := func(tl uint32, lsn uint64) func(*Observation) {
		return func(o *Observation) {
			o.Data = Position{Timeline: tl, LSN: lsn}
			o.PG.Timeline, o.PG.CurrentLSN = tl, lsn
		}
	}
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
		// Adoption: a primary data directory takes the key, a
		// standby waits, the holder records the system it runs.
		{"stopped primary data adopted", obs("pg1", uninit, stoppedPG, at(1, 0x200)), []ActionKind{ActAcquireBootstrap}},
		{"running primary adopted, not fenced", obs("pg1", uninit, primaryPG, at(1, 0x200)), []ActionKind{ActAcquireBootstrap}},
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
	// Positions: timelines 0 (unknown) to 3, LSNs 0 (unknown) to 3.
	o.Data = Position{Timeline: uint32(r.IntN(4)), LSN: uint64(r.IntN(4))}
	o.PG.Timeline, o.PG.CurrentLSN, o.PG.ReceivedLSN = uint32(r.IntN(4)), uint64(r.IntN(4)), uint64(r.IntN(4))
	for _, name := range names {
		ms := &o.State.Members[name].Status
		ms.Timeline, ms.WrittenLSN, ms.ReceivedLSN = uint32(r.IntN(4)), uint64(r.IntN(4)), uint64(r.IntN(4))
		if r.IntN(6) == 0 {
			ms.Role = "uninitialized"
		}
	}
	if r.IntN(4) == 0 {
		// A standby cluster (standbycluster_test.go checks its invariants).
		o.State.Config.StandbyCluster = &raftstore.StandbyCluster{Host: "dr1,dr2", Port: 5432}
		o.PG.WalReceiverDiverged = o.PG.InRecovery && r.IntN(3) == 0
		if r.IntN(2) == 0 {
			o.Upstream = SourceCluster
		}
		if h, ok := o.State.Members[o.State.Leader.Holder]; ok && r.IntN(2) == 0 {
			h.Status.Role = raftstore.RoleStandbyLeader
		}
	}
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
		// A standby cluster never makes a writable server, and its
		// holder stops one that is (rewound or recloned onto the source).
		if o.State.Config.IsStandbyCluster() {
			if p.Has(ActPromote) || p.Has(ActStartPrimary) || p.Has(ActInit) {
				t.Fatalf("makes a writable server in a standby cluster: %+v -> %s", o, p)
			}
			if writable && !foreign && holdsKey && !o.State.Config.Pause && !p.Has(ActDemote) && !p.Has(ActReclone) &&
				!(p.Has(ActFollow) && p.Actions[0].Primary == SourceCluster) && !p.Has(ActRelease) {
				t.Fatalf("a primary left writable in a standby cluster: %+v -> %s", o, p)
			}
		}
		// #7: a data directory known to be behind another's is never
		// adopted, and newer data is never rewound or recloned onto an
		// older timeline.
		if p.Has(ActAcquireBootstrap) && o.HasData {
			if name, _ := newerPeer(o); name != "" {
				t.Fatalf("adopts a data directory behind %s's: %+v -> %s", name, o, p)
			}
		}
		// (A standby cluster's members follow the source's history
		// whatever its timeline numbers: demote-cluster discards theirs.)
		if h, ok := o.State.Members[o.State.Leader.Holder]; ok && o.State.Leader.Holder != o.Member && !o.State.Config.IsStandbyCluster() {
			mine, theirs := localPosition(o), reportedPosition(h.Status)
			destroys := p.Has(ActReclone)
			for _, a := range p.Actions {
				destroys = destroys || a.Kind == ActFollow && a.Rewind
			}
			if destroys && mine.Timeline != 0 && theirs.Timeline != 0 && mine.Timeline > theirs.Timeline {
				t.Fatalf("rewinds or reclones timeline %d onto %s's older %d: %+v -> %s", mine.Timeline,
					o.State.Leader.Holder, theirs.Timeline, o, p)
			}
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

// TestDecideAdoption: when several members find data directories at
// bootstrap, the one adopted is the most advanced (timeline, then LSN);
// when raftgres cannot tell, or the histories diverged, nobody takes the
// key and the refusal says how the operator chooses; newer data is never
// rewound or recloned onto an older timeline.
func TestDecideAdoption(t *testing.T) {
	t.Parallel()
	// reported builds a member's report: a running primary (written LSN),
	// a running replica (received/replayed), or a stopped data directory
	// with its pg_control position.
	type peer struct {
		name  string
		role  raftstore.Role
		state raftstore.PGState
		tl    uint32
		lsn   uint64
		sysid string
	}
	cluster := func(holder string, peers ...peer) raftstore.State {
		st := raftstore.NewState()
		st.Config = raftstore.DefaultClusterConfig()
		st.Leader = raftstore.LeaderKey{Holder: holder, Epoch: 1, Rev: 5}
		st.Members["pg1"] = &raftstore.Member{Name: "pg1", Tags: raftstore.DefaultTags()}
		for _, p := range peers {
			ms := raftstore.MemberStatus{Role: p.role, State: p.state, Timeline: p.tl, SystemID: sysid, ReportedAt: reportedAt}
			if p.sysid != "" {
				ms.SystemID = p.sysid
			}
			switch {
			case p.role == "primary":
				ms.WrittenLSN = p.lsn
			case p.role == "":
				ms = raftstore.MemberStatus{} // registered, not reported yet
			default:
				ms.ReceivedLSN, ms.ReplayedLSN = p.lsn, p.lsn
			}
			st.Members[p.name] = &raftstore.Member{Name: p.name, Tags: raftstore.DefaultTags(), Status: ms}
		}
		return st
	}
	// Positions: the live primary is on timeline 3; the stale former
	// primary stopped on timeline 2 without standby.signal.
	livePrimary := peer{"pg2", "primary", "running", 3, 0x9000000, ""}
	staleStopped := peer{"pg2", "replica", "stopped", 2, 0x5000000, ""}
	stopped := func(tl uint32, lsn uint64) func(*Observation) {
		return func(o *Observation) { o.Data = Position{Timeline: tl, LSN: lsn} }
	}
	running := func(tl uint32, lsn uint64) func(*Observation) {
		return func(o *Observation) {
			o.PG = pgmanager.Status{Running: true, SystemID: sysid, Timeline: tl, CurrentLSN: lsn}
		}
	}
	standby := func(o *Observation) { o.Standby = true }
	for _, tc := range []struct {
		name string
		obs  Observation
		want []ActionKind
		// says is what the reason must mention (the operator's way out).
		says []string
	}{
		// The stale former primary no longer wins the key, whichever
		// agent starts first; the live primary takes it.
		{"stale stopped ex-primary does not adopt against the live primary",
			obs("pg1", cluster("", livePrimary), stoppedPG, stopped(2, 0x5000000)),
			[]ActionKind{ActRefuse}, []string{"pg2's data directory is more advanced", "timeline 3", "move those directories aside"}},
		{"live primary adopts against the stale ex-primary's report",
			obs("pg1", cluster("", staleStopped), primaryPG, running(3, 0x9000000)),
			[]ActionKind{ActAcquireBootstrap}, nil},
		{"stale ex-primary does not adopt against a newer standby",
			obs("pg1", cluster("", peer{"pg3", "replica", "running", 3, 0x6000000, ""}), stoppedPG, stopped(2, 0x5000000)),
			[]ActionKind{ActRefuse}, []string{"pg3's data directory is more advanced", "remove its standby.signal"}},
		{"same timeline: the higher LSN adopts",
			obs("pg1", cluster("", peer{"pg2", "replica", "stopped", 3, 0x5000000, ""}), stoppedPG, stopped(3, 0x6000000)),
			[]ActionKind{ActAcquireBootstrap}, nil},
		{"same timeline: the lower LSN refuses",
			obs("pg1", cluster("", peer{"pg2", "replica", "stopped", 3, 0x6000000, ""}), stoppedPG, stopped(3, 0x5000000)),
			[]ActionKind{ActRefuse}, []string{"more advanced"}},
		// A stopped primary's position is its latest checkpoint; a
		// running standby that received its last records is past it
		// without being ahead: cannot tell. A stopped standby's
		// restartpoint is its primary's checkpoint: comparable.
		{"running standby past a stopped primary's checkpoint: cannot tell",
			obs("pg1", cluster("", peer{"pg2", "replica", "running", 3, 0x6000078, ""}), stoppedPG, stopped(3, 0x6000000)),
			[]ActionKind{ActRefuse}, []string{"cannot tell", "latest checkpoint"}},
		{"running standby behind a running primary: adopt",
			obs("pg1", cluster("", peer{"pg2", "replica", "running", 3, 0x6000000, ""}), primaryPG, running(3, 0x6000078)),
			[]ActionKind{ActAcquireBootstrap}, nil},
		{"stopped standby at the stopped primary's shutdown checkpoint: adopt",
			obs("pg1", cluster("", peer{"pg2", "replica", "stopped", 3, 0x6000000, ""}), stoppedPG, stopped(3, 0x6000000)),
			[]ActionKind{ActAcquireBootstrap}, nil},
		{"same position: either may adopt",
			obs("pg1", cluster("", peer{"pg2", "replica", "stopped", 3, 0x6000000, ""}), stoppedPG, stopped(3, 0x6000000)),
			[]ActionKind{ActAcquireBootstrap}, nil},
		// Cannot tell: refuse and say how to choose.
		{"equal timelines, peer's LSN unknown: refused",
			obs("pg1", cluster("", peer{"pg2", "replica", "stopped", 3, 0, ""}), stoppedPG, stopped(3, 0x6000000)),
			[]ActionKind{ActRefuse}, []string{"cannot tell", "move those directories aside", "standby.signal"}},
		{"own position unknown: refused",
			obs("pg1", cluster("", peer{"pg2", "replica", "stopped", 2, 0x5000000, ""}), stoppedPG),
			[]ActionKind{ActRefuse}, []string{"cannot tell"}},
		{"peer's timeline unknown: refused",
			obs("pg1", cluster("", peer{"pg2", "replica", "stopped", 0, 0, ""}), stoppedPG, stopped(3, 0x6000000)),
			[]ActionKind{ActRefuse}, []string{"cannot tell"}},
		{"diverged: newer timeline behind the older one's LSN, the newer refuses",
			obs("pg1", cluster("", peer{"pg2", "replica", "stopped", 2, 0x7000000, ""}), primaryPG, running(3, 0x6000000)),
			[]ActionKind{ActRefuse}, []string{"diverged", "move those directories aside"}},
		{"diverged: the older timeline refuses too",
			obs("pg1", cluster("", peer{"pg2", "primary", "running", 3, 0x6000000, ""}), stoppedPG, stopped(2, 0x7000000)),
			[]ActionKind{ActRefuse}, []string{"diverged"}},
		// Who is compared.
		{"a registered member's first report is awaited",
			obs("pg1", cluster("", peer{"pg2", "", "", 0, 0, ""}), stoppedPG, stopped(3, 0x6000000)),
			[]ActionKind{}, []string{"waiting for pg2's first report", "raftgres leave pg2"}},
		{"a Raft voter not yet registered is awaited",
			obs("pg1", cluster("", staleStopped), primaryPG, running(3, 0x9000000), func(o *Observation) { o.Voters = []string{"pg1", "pg2", "pg3"} }),
			[]ActionKind{}, []string{"waiting for pg3 (a Raft voter)"}},
		{"a member without data is not compared",
			obs("pg1", cluster("", peer{"pg2", "uninitialized", "stopped", 0, 0, ""}), stoppedPG, stopped(2, 0x5000000)),
			[]ActionKind{ActAcquireBootstrap}, nil},
		{"another system's data directory is not compared",
			obs("pg1", cluster("", peer{"pg2", "primary", "running", 5, 0x9000000, "42"}), stoppedPG, stopped(2, 0x5000000)),
			[]ActionKind{ActAcquireBootstrap}, nil},
		{"a standby waits, even the most advanced",
			obs("pg1", cluster("", staleStopped), replicaPG, standby, func(o *Observation) { o.PG.Timeline, o.PG.ReceivedLSN = 3, 0x9000000 }),
			[]ActionKind{}, nil},
		// The key taken before a newer directory reported is given up
		// before the system is recorded.
		{"adopter gives the key up when a newer directory reports",
			obs("pg1", cluster("pg1", livePrimary), stoppedPG, stopped(2, 0x5000000)),
			[]ActionKind{ActRelease}, []string{"more advanced", "giving the bootstrap key up"}},
		{"adopter records when it is the most advanced",
			obs("pg1", cluster("pg1", staleStopped), primaryPG, running(3, 0x9000000)),
			[]ActionKind{ActRecordInit}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.obs.State.Initialize = ""
			got := Decide(tc.obs)
			if diff := cmp.Diff(tc.want, kinds(got)); diff != "" {
				t.Fatalf("plan %s\n(-want +got):\n%s", got, diff)
			}
			for _, w := range tc.says {
				if !strings.Contains(got.Reason, w) {
					t.Errorf("reason %q lacks %q", got.Reason, w)
				}
			}
		})
	}

	// Once a stale directory holds the key and the system is recorded,
	// a member whose data is on a newer timeline is fenced (stopped) but
	// never rewound or recloned onto the older timeline.
	staleHolder := cluster("pg2", peer{"pg2", "primary", "running", 2, 0x5000000, ""})
	staleHolder.Initialize = sysid
	for _, tc := range []struct {
		name string
		obs  Observation
		want []ActionKind
	}{
		{"newer writer is fenced", obs("pg1", staleHolder, primaryPG, running(3, 0x9000000)), []ActionKind{ActDemote}},
		{"newer stopped ex-primary is not rewound", obs("pg1", staleHolder, stoppedPG, stopped(3, 0x9000000)), []ActionKind{ActRefuse}},
		{"newer data is not recloned after a failed rewind", obs("pg1", staleHolder, stoppedPG, stopped(3, 0x9000000),
			func(o *Observation) { o.RewindFailed = true }), []ActionKind{ActRefuse}},
		{"newer standby that failed to start is not rewound", obs("pg1", staleHolder, stoppedPG, stopped(3, 0x9000000), standby,
			func(o *Observation) { o.StandbyStartFailed = true }), []ActionKind{ActRefuse}},
		{"newer data is not recloned with pg_rewind off", obs("pg1", func() raftstore.State {
			s := staleHolder.Clone()
			s.Config.PostgreSQL.UsePgRewind = false
			return s
		}(), stoppedPG, stopped(3, 0x9000000), standby, func(o *Observation) { o.StandbyStartFailed = true }), []ActionKind{ActRefuse}},
		// Starting as a standby touches nothing (PostgreSQL refuses to
		// follow an older timeline, and the start then counts as failed).
		{"newer stopped standby may still start as a standby", obs("pg1", staleHolder, stoppedPG, stopped(3, 0x9000000), standby),
			[]ActionKind{ActStartStandby}},
		{"older ex-primary is rewound as ever", obs("pg1", staleHolder, stoppedPG, stopped(1, 0x9000000)), []ActionKind{ActFollow}},
		{"same timeline ex-primary follows as ever", obs("pg1", staleHolder, stoppedPG, stopped(2, 0x4000000)), []ActionKind{ActFollow}},
		{"position unknown: follows as ever", obs("pg1", staleHolder, stoppedPG), []ActionKind{ActFollow}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := Decide(tc.obs)
			if diff := cmp.Diff(tc.want, kinds(got)); diff != "" {
				t.Fatalf("plan %s\n(-want +got):\n%s", got, diff)
			}
			if got.Has(ActRefuse) && (!strings.Contains(got.Reason, "raftgres reinit pg1") || !strings.Contains(got.Reason, "newer timeline")) {
				t.Errorf("refusal %q does not say how to discard the data", got.Reason)
			}
		})
	}
}

func TestControlPosition(t *testing.T) {
	t.Parallel()
	out := []byte(`pg_control version number:            1300
Database cluster state:               shut down in recovery
Latest checkpoint location:           0/3000060
Latest checkpoint's REDO location:    0/3000028
Latest checkpoint's TimeLineID:       2
Minimum recovery ending location:     0/5000100
Min recovery ending loc's timeline:   3
`)
	if got, want := ControlPosition(pgmanager.ParseControlData(out)), (Position{Timeline: 3, LSN: 0x5000100}); got != want {
		t.Fatalf("standby: %+v, want %+v", got, want)
	}
	primary := []byte("Latest checkpoint location:           1/A0000028\nLatest checkpoint's TimeLineID:       4\n" +
		"Minimum recovery ending location:     0/0\nMin recovery ending loc's timeline:   0\n")
	if got, want := ControlPosition(pgmanager.ParseControlData(primary)), (Position{Timeline: 4, LSN: 0x1A0000028}); got != want {
		t.Fatalf("primary: %+v, want %+v", got, want)
	}
	// A standby shut down cleanly after replaying its primary's shutdown
	// checkpoint: its restartpoint is that checkpoint (the minimum
	// recovery point, the record's end, is not compared on one timeline).
	clean := []byte("Latest checkpoint location:           0/6000000\nLatest checkpoint's TimeLineID:       3\n" +
		"Minimum recovery ending location:     0/6000078\nMin recovery ending loc's timeline:   3\n")
	if got, want := ControlPosition(pgmanager.ParseControlData(clean)), (Position{Timeline: 3, LSN: 0x6000000}); got != want {
		t.Fatalf("clean standby: %+v, want %+v", got, want)
	}
	if got := ControlPosition(map[string]string{"Dernier point de contrôle": "0/1"}); got != (Position{}) {
		t.Fatalf("unreadable: %+v, want zero", got)
	}
}

// TestFirstElectionAfterRecover runs the coordinator on the state
// `raftgres recover` leaves. (It lives here because this file is the
// recover work's; it belongs with the coordinator's tests.) Five members
// in synchronous mode, pg1 primary and pg2 its recorded synchronous
// standby; pg1, pg4 and pg5 are lost. pg3, an asynchronous replica, reports
// at once; pg2, the only survivor holding every acknowledged commit, is
// still in PostgreSQL's crash recovery (no report) well past StaleAfter,
// when the coordinator stops waiting for the recovering survivors. The
// kept record still makes pg3 ineligible: nobody is elected until pg2
// reports, then pg2 is. With --allow-data-loss (no recorded member
// survives) the record is cleared and the most advanced survivor wins.
func TestFirstElectionAfterRecover(t *testing.T) {
	t.Parallel()
	recovered := func(survivors []string, allowLoss bool) raftstore.State {
		st := testState("pg1", "pg1", "pg2", "pg3", "pg4", "pg5")
		st.Config.SynchronousMode = true
		st.Sync = raftstore.SyncState{Primary: "pg1", Standbys: []string{"pg2"}}
		edit := raftstore.RecoveryEdit
		if allowLoss {
			edit = raftstore.RecoveryEditAllowingLoss
		}
		edit(&st, 60, survivors, time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC), "test")
		return st
	}
	running := func(s *raftstore.State, name string, lsn uint64, at time.Time) {
		s.Members[name].Status = raftstore.MemberStatus{Role: "replica", State: "running", SystemID: testSysID,
			Timeline: 2, ReceivedLSN: lsn, ReplayedLSN: lsn, ReportedAt: at}
	}
	t.Run("the synchronous standby in crash recovery is waited for", func(t *testing.T) {
		t.Parallel()
		st := recovered([]string{"pg2", "pg3"}, false)
		if st.Sync.Primary != "pg1" || !slices.Equal(st.Sync.Standbys, []string{"pg2"}) {
			t.Fatalf("sync after recover = %+v, want the record kept", st.Sync)
		}
		r := newCoordRig(t, st)
		stale := st.Config.StaleAfter()
		for elapsed := time.Duration(0); elapsed < 3*stale; elapsed += time.Second {
			r.clock.Advance(time.Second)
			r.store.edit(func(s *raftstore.State) { running(s, "pg3", 0x1000, r.clock.Now()) })
			r.step()
			if got := r.holder(); got.Holder != "" {
				t.Fatalf("elected %+v %s after taking office while pg2 (the synchronous standby) was in crash recovery",
					got, elapsed+time.Second)
			}
		}
		r.clock.Advance(time.Second)
		r.store.edit(func(s *raftstore.State) {
			running(s, "pg3", 0x1000, r.clock.Now())
			running(s, "pg2", 0x900, r.clock.Now()) // replayed less than pg3 received: still the one with every ack
		})
		r.step()
		if got := r.holder(); got.Holder != "pg2" {
			t.Fatalf("key = %+v, want pg2, the recorded synchronous standby", got)
		}
	})
	t.Run("data loss allowed: no record, the most advanced survivor", func(t *testing.T) {
		t.Parallel()
		st := recovered([]string{"pg3", "pg4"}, true)
		if st.Sync.Primary != "" || len(st.Sync.Standbys) != 0 {
			t.Fatalf("sync after recover --allow-data-loss = %+v, want no record", st.Sync)
		}
		r := newCoordRig(t, st)
		r.clock.Advance(time.Second)
		r.store.edit(func(s *raftstore.State) {
			running(s, "pg3", 0x1000, r.clock.Now())
			running(s, "pg4", 0x2000, r.clock.Now())
		})
		r.step()
		if got := r.holder(); got.Holder != "pg4" {
			t.Fatalf("key = %+v, want pg4 (most WAL)", got)
		}
	})
}
