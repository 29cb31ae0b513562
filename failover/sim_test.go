package failover

// Deterministic simulation of the failover brain, in the
// style of FoundationDB's and TigerBeetle's simulation testing. Each
// schedule is one seed: it draws the cluster (3 or 5 members, synchronous
// mode or not, ttl), a fault schedule and every network outcome from one
// math/rand source, runs the members' real Supervisor and Coordinator code
// on a virtual clock against the simulated store and PostgreSQL
// (sim_world_test.go, sim_pg_test.go), and checks the invariants at every
// step. A failing seed is run again with a trace (step, virtual time,
// member, event) and must fail the same way.
//
//	go test -run TestSimSweep ./failover/                 # short sweep
//	SIM_SCHEDULES=50000 go test -run TestSimSweep ./failover/
//	SIM_SEED=1234 go test -run TestSimSweep -v ./failover/ # one seed, traced
//
// How the real code is driven: Supervisor.cycle is called at the time its
// last call asked for (or at once when the member's FSM view changes in a
// way relevant() sees, or its PostgreSQL was fenced), with timerWake set
// as waitNext would; a cycle runs in a goroutine of its own and parks at
// each wait on the clock (Clock.After: renewWhile's pacing, a switchover's
// polling and deadlines) until the virtual clock reaches its end, the rest
// of the world running meanwhile (sim_admin_test.go); renewWhile's action
// runs at once (Supervisor.act); the fencer is fenceIfEnded at the lease
// end; Coordinator.lead runs in a goroutine parked at Changes() and is
// stepped one loop iteration at a time, woken at nextWake or on a change of
// the leader's FSM view. Commands never take virtual time: a proposal fails
// at once or commits at once, later (after other members' commands), or
// commits with its reply lost.
//
// Faults (drawn per schedule, then all healed; one member may stay lost):
// kill and restart of an agent (its PostgreSQL dies with it; in a quarter
// of the schedules a newly elected holder's host dies before its first
// renewal, and may stay lost), SIGSTOP of an
// agent (loop, Raft peer and gate frozen; the fence keeper, armed through
// FenceAt, still kills PostgreSQL at the lease end), host suspend (agent and
// PostgreSQL frozen; the boot clock runs on), partitions of a group from
// the rest over Raft, the API, PostgreSQL or all, both ways or one way, a
// stalled walreceiver, edit-config ttl (2.4s…9s), cluster pause/resume, and
// a lossy proposer (lost, late or reply-lost commands). Admin operations
// (drawn from a second source, sim_admin_test.go): switchover to a named
// member or to any, manual failover to a named member, leave (the member's
// agent stops, it leaves the members and the Raft voters) and join again,
// and, in one schedule in eight, a majority lost for good followed by
// `raftgres recover` on the survivors (raftstore.RecoveryEdit; with
// --allow-data-loss when no recorded synchronous member survives). A
// member left while another is lost for good is recovered at the heal too.
//
// Invariants, checked as they can break (every tick, every ack, every
// promotion, every rewind or clone):
//   - single-writer-instant: at most one member can acknowledge a commit at
//     any instant (its gate replies, until GateMargin before its lease end,
//     and its synchronous rule can be met);
//   - single-writer-ack: no member acknowledges, under an older epoch, a
//     commit the newest writable primary lacks;
//   - lease-end: nothing is acknowledged after the acknowledging member's
//     lease ended (the cancel path included);
//   - sync-durability: in synchronous mode every acknowledged commit is on
//     every newly writable primary;
//   - only-copy: in synchronous mode no data directory holding the only
//     copy of an acknowledged commit is rewound or recloned;
//     (these two skip exactly the commits acknowledged before a recover
//     --allow-data-loss, which clears the record of who holds them:
//     simAck.waived);
//   - lag: in asynchronous mode an election (not a switchover's
//     hand-over) gives the key only to a member whose reported position is
//     within maximum_lag_on_failover of the furthest position the last
//     primary reported (drawn at 1-16 records in half the asynchronous
//     schedules, so that elections meet it);
//   - liveness: after the heal a commit is acknowledged within
//     8·max(ttl, 9s)+6s (asynchronous mode: unless every live member is
//     further than maximum_lag_on_failover behind and the last primary is
//     lost for good; synchronous mode: when
//     the last holder that renewed, or its recorded standby, is alive, or
//     after a recover, unless strict mode is left with one member).
//
// Not modelled yet: a command that takes virtual time (the supervisor's
// apply and waitApplied still time out on real-time context deadlines: a
// proposal fails or commits at once, and waitApplied's wait on a member
// cut off from Raft lets its own entry apply instead of timing out), a
// scheduled switchover, clock-rate drift.

import (
	"cmp"
	"context"
	"fmt"
	"math/rand"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"raftgres/pgmanager"
	"raftgres/raftstore"
)

// simRegressions are seeds that once failed, with the finding each
// showed. They run before every sweep (SIM_NO=regressions skips them).
// A seed replays the same schedule only on the code it was found on: a
// change in what the real code proposes shifts the draws that follow.
var simRegressions = []struct {
	seed    int64
	finding string
}{
	// Open on main at c9a6c5f (testdata/sim/FINDINGS.md):
	{4224, "F4 (async): c promoted, renews, reports primary, and its host dies for good; a and b, ex-primaries, must rewind onto c, which is gone: pg_rewind fails for ever, neither runs, no candidate"},
	// Found with the admin operations (592618c), fixed after it:
	{8381, "F6: b, frozen while holder, elected away by the fast path; resumed, it starts a requested hand-over and polls for the candidate with its PostgreSQL a primary and its lease forgotten: cancelled commits acknowledged with no lease"},
	{2247, "F7: b, handed the key by a switchover, dies before its first renewal; a (inherited) leaves and joins again, dropped from the record: nobody electable"},
	// Found on main at ef7e1f7, fixed in 4ea931c (testdata/sim/FINDINGS.md):
	{2865, "F1: the last primary a, stopped, waits for b (elected, never renewed, lost) to report itself a running primary: never a running replica, never elected"},
	{4257, "F1 in asynchronous mode: a and b restarted stopped while c, the holder, was fenced; c lost for good; both wait for c for ever"},
	{4695, "F1"},
	{4860, "F1"},
	{8263, "F1"},
	{6883, "F2 (strict mode): a's SetSync recording b commits 1.1s late, after a set FIRST 2 (gate, *); b elected by the fast path; a acknowledges with the gate and c commits b lacks"},
	// Found on main at 0f1cb86, fixed in 4ea931c (on later code these
	// schedules may no longer reach the same states):
	{76, "F1"},
	{738, "F1"},
	{586, "F2: a's SetSync recording b commits 1.35s late, after a dropped b from synchronous_standby_names (no record change between, so its compare-and-set still matches); b elected by the fast path while a acknowledges with the gate alone"},
	{662, "F2, 5 members, strict mode"},
	{1557, "F2: b promoted without commit 53, acknowledged by a with the gate alone"},
	{6591, "F2: 1.37s late (beyond retry_timeout)"},
	{8703, "F2: 1.19s late"},
	// Found by make sim on main at 4eb63e3 (testdata/sim/FINDINGS.md F8, F9):
	{22577, "F8 (sync): a's first SetSync (the record naming it) lost; a acknowledges with the gate alone while the record is empty (anyone electable); a dies, b elected without the commit"},
	{34270, "F8"},
	{47074, "F8"},
	{37965, "F9 (quorum 3 of 4): after a recover to b and e, b leaves: the set drops to 2 of c, d, e, and e alone can never prove it holds everything"},
	{30982, "the oracle: strict mode with one member left and one lost for good cannot acknowledge (not a finding)"},
	// Seeds that found re-introduced findings (testdata/sim/mutations) and
	// pass on the fixed code (counts on main c9a6c5f):
	{117, "mutation review2-ttl-lowered (117 schedules): ttl lowered while the holder's lease runs under the old ttl"},
	{1543, "mutation review3-sync-not-atomic (1543 schedules): elections not checked against the synchronous record, SetSync not compare-and-set, writes acted on before the local FSM applied them"},
	{325, "mutation review10-last-primary (325 schedules): the new holder dies before its first renewal; the last primary must be electable again"},
	{1037, "mutation review3-sync-not-atomic, its FSM half (1037 schedules on 0f1cb86)"},
}

// simKind names the invariant a violation message breaks.
func simKind(v string) string {
	for _, k := range []struct{ sub, kind string }{
		{"two members can acknowledge", "single-writer-instant"},
		{"two writers", "single-writer-ack"},
		{"after its lease ended", "lease-end"},
		{"acknowledged commit lost", "sync-durability"},
		{"only copy", "only-copy"},
		{"liveness", "liveness"},
		{"lag: ", "lag"},
	} {
		if strings.Contains(v, k.sub) {
			return k.kind
		}
	}
	return "other"
}

type simParams struct {
	members    int
	sync       bool
	strict     bool
	ttl        time.Duration
	faultPhase time.Duration
	pDrop      float64
	pDelay     float64
	pLostReply float64
	pCommit    float64
	permanent  bool // one member stays lost after the heal
	// quorum is synchronous_mode: quorum with synchronous_node_count
	// nodeCount (drawn from rng5, in half the synchronous schedules).
	quorum    bool
	nodeCount int
	// killElected is the chance that a newly elected holder's host dies
	// at once, before its first renewal.
	killElected float64
	// pUnclean is the chance that a fast stop of a primary escalates to
	// an immediate one before its shutdown checkpoint.
	pUnclean float64
	// maxLagRecords, when set (half the asynchronous schedules), is
	// maximum_lag_on_failover in simulated records: small enough for
	// elections to meet it (the default 1 MiB is 4,096 records).
	maxLagRecords int
	maxFaultGap   time.Duration
}

const simTick = 50 * time.Millisecond

var simTTLs = []time.Duration{2400 * time.Millisecond, 3 * time.Second, 4500 * time.Millisecond, 9 * time.Second}

func simDraw(r *rand.Rand) simParams {
	p := simParams{members: 3, ttl: simTTLs[r.Intn(len(simTTLs))], pCommit: 0.5, maxFaultGap: 5 * time.Second}
	if r.Intn(10) < 3 {
		p.members = 5
	}
	p.sync = r.Intn(2) == 0
	p.strict = p.sync && r.Intn(5) == 0
	p.faultPhase = time.Duration(15+r.Intn(25)) * time.Second
	p.pDrop = r.Float64() * 0.05
	p.pDelay = r.Float64() * 0.05
	p.pLostReply = r.Float64() * 0.05
	p.permanent = r.Intn(3) == 0
	return p
}

// simFault is one scheduled fault or admin operation.
type simFault struct {
	at   time.Duration
	desc string
	do   func(w *simWorld)
}

// ---------------------------------------------------------------- building a world

func newSimWorld(seed int64, traced bool) *simWorld {
	r := rand.New(rand.NewSource(seed))
	w := &simWorld{rng: r, seed: seed, cfg: simDraw(r), by: map[string]*simMember{}, failedAt: map[string]time.Time{},
		cut: map[[4]int]int{}, recPos: map[uint64]int{}, nextTL: 2}
	w.rng2 = rand.New(rand.NewSource(seed*7919 + 1))
	if w.rng2.Intn(4) == 0 {
		w.cfg.killElected = 0.3
	}
	w.rng3 = rand.New(rand.NewSource(seed*104729 + 3))
	if w.rng3.Intn(4) == 0 {
		w.cfg.pUnclean = 0.3
	}
	w.rng4 = rand.New(rand.NewSource(seed*1299709 + 5))
	w.rng5 = rand.New(rand.NewSource(seed*15485863 + 7))
	w.rng6 = rand.New(rand.NewSource(seed*32452843 + 11))
	if !w.cfg.sync && w.rng6.Intn(2) == 0 {
		w.cfg.maxLagRecords = 1 + w.rng6.Intn(16)
	}
	if w.cfg.sync && w.rng5.Intn(2) == 0 && !slices.ContainsFunc(simRegressions, func(r struct {
		seed    int64
		finding string
	}) bool {
		return r.seed == seed
	}) {
		w.cfg.quorum, w.cfg.nodeCount = true, 1+w.rng5.Intn(w.cfg.members-2)
	}
	if traced {
		w.trace = &simTrace{}
	}
	w.start = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	w.now = w.start
	names := []string{"a", "b", "c", "d", "e"}[:w.cfg.members]
	for i, n := range names {
		m := &simMember{w: w, i: i, name: n, alive: true}
		m.pg = &simPG{m: m, hasData: true, timeline: 2, sysid: simSysID, signal: i != 0, upstream: "a"}
		w.mem = append(w.mem, m)
		w.by[n] = m
	}
	// The committed log: config, members, the system, a's leader key.
	cfg := raftstore.DefaultClusterConfig()
	cfg.TTL = w.cfg.ttl
	cfg.SynchronousMode, cfg.SynchronousModeStrict = w.cfg.sync, w.cfg.strict
	if w.cfg.quorum {
		cfg.SynchronousQuorum, cfg.SynchronousNodeCount = true, w.cfg.nodeCount
	}
	if w.cfg.maxLagRecords > 0 {
		cfg.MaximumLagOnFailover = int64(w.cfg.maxLagRecords) * simRecordBytes
	}
	cfg.PostgreSQL.UseSlots = false
	w.base = 0
	w.states = []raftstore.State{raftstore.NewState()}
	w.leader = w.mem[0]
	at := w.start.Add(-time.Minute)
	w.commitLocked(raftstore.Bootstrap{Config: cfg, Actor: "a", At: at}, "init")
	for _, m := range w.mem {
		reg := raftstore.RegisterMember{Name: m.name, PGAddr: simPGAddr(m.i), APIAddr: fmt.Sprintf("10.0.0.%d:8008", m.i+1),
			RaftAddr: fmt.Sprintf("10.0.0.%d:7001", m.i+1), Tags: raftstore.DefaultTags(), At: at}
		if w.cfg.quorum { // quorum mode's reports need protocol 2 of every member
			reg.Agent = raftstore.AgentVersion{Version: "sim", Protocol: raftstore.Protocol}
		}
		w.commitLocked(reg, "init")
	}
	w.commitLocked(raftstore.Initialize{SystemID: simSysID, Actor: "a", At: at}, "init")
	w.commitLocked(raftstore.SetLeader{Holder: "a", PrevEpoch: 0, PrevRev: 0, Reason: "sim start", Cause: raftstore.CauseBootstrap,
		Actor: "a", At: at}, "init")
	for i := 0; i < 5; i++ {
		w.newRecord(w.mem[0].pg)
	}
	for _, m := range w.mem {
		m.viewIdx = w.commitIndex()
		m.pg.wal = slices.Clone(w.mem[0].pg.wal)
		m.pg.ckpt = len(m.pg.wal)
		w.startAgent(m)
	}
	w.tracef("--", "seed %d: %d members, synchronous_mode=%v quorum=%v/%d strict=%v ttl=%s faults for %s, drop/delay/lost %.3f/%.3f/%.3f, permanent loss %v, new holder dies %.2f, unclean fast stops %.2f, maximum_lag_on_failover %d bytes",
		seed, w.cfg.members, w.cfg.sync, w.cfg.quorum, w.cfg.nodeCount, w.cfg.strict, w.cfg.ttl, w.cfg.faultPhase, w.cfg.pDrop, w.cfg.pDelay, w.cfg.pLostReply, w.cfg.permanent, w.cfg.killElected, w.cfg.pUnclean, cfg.MaximumLagOnFailover)
	return w
}

// startAgent starts a member's agent with a fresh supervisor (mu held or
// not: it calls no real code that locks).
func (w *simWorld) startAgent(m *simMember) {
	m.alive, m.paused = true, false
	m.sup = NewSupervisor(Config{Member: m.name, Tags: raftstore.DefaultTags(), MaxCrashes: 3}, m.pg, simStore{m}, simProposer{m}, w.logger(m.name))
	m.sup.clock = simClock{w: w, m: m}
	m.sup.act = simActNow
	m.nextCycle = w.now
	m.woken = true
}

// ---------------------------------------------------------------- faults

func (w *simWorld) pick() *simMember { return w.mem[w.rng.Intn(len(w.mem))] }

func (w *simWorld) schedule() []simFault {
	var fs []simFault
	add := func(at time.Duration, desc string, do func(w *simWorld)) {
		fs = append(fs, simFault{at: at, desc: desc, do: do})
	}
	for t := time.Duration(w.rng.Int63n(int64(w.cfg.maxFaultGap))); t < w.cfg.faultPhase; t += time.Duration(w.rng.Int63n(int64(w.cfg.maxFaultGap))) {
		m := w.pick()
		d := time.Duration(200+w.rng.Intn(8000)) * time.Millisecond
		switch k := w.rng.Intn(100); {
		case k < 14:
			add(t, "kill agent "+m.name, func(w *simWorld) { w.kill(m) })
			add(t+d, "restart agent "+m.name, func(w *simWorld) { w.restart(m) })
		case k < 28:
			add(t, "pause agent "+m.name, func(w *simWorld) { m.paused = true })
			add(t+d, "resume agent "+m.name, func(w *simWorld) { w.resume(m) })
		case k < 36:
			add(t, "suspend host "+m.name, func(w *simWorld) { m.suspended = true })
			add(t+d, "wake host "+m.name, func(w *simWorld) { w.wake(m) })
		case k < 62:
			cuts := w.drawPartition()
			desc := "partition " + w.describeCuts(cuts)
			add(t, desc, func(w *simWorld) {
				for _, c := range cuts {
					w.cut[c]++
				}
			})
			add(t+d, "heal "+desc, func(w *simWorld) {
				for _, c := range cuts {
					w.cut[c]--
				}
			})
		case k < 70:
			add(t, "stall walreceiver "+m.name, func(w *simWorld) { m.stalled = true })
			add(t+d, "unstall walreceiver "+m.name, func(w *simWorld) { m.stalled = false })
		case k < 88:
			ttl := simTTLs[w.rng.Intn(len(simTTLs))]
			if simOff("ttl") {
				continue
			}
			add(t, fmt.Sprintf("edit-config ttl=%s", ttl), func(w *simWorld) { w.admin(simEditTTL(ttl)) })
		default:
			add(t, "pause cluster", func(w *simWorld) { w.admin(simSetPause(true)) })
			add(t+d, "resume cluster", func(w *simWorld) { w.admin(simSetPause(false)) })
		}
	}
	fs = append(fs, w.scheduleAdmin()...)
	slices.SortStableFunc(fs, func(a, b simFault) int { return int(a.at - b.at) })
	return fs
}

// drawPartition cuts a group from the rest: all links or one kind, both
// directions or one.
func (w *simWorld) drawPartition() [][4]int {
	n := len(w.mem)
	var in []bool
	for {
		in = make([]bool, n)
		k := 0
		for i := range in {
			if w.rng.Intn(2) == 0 {
				in[i] = true
				k++
			}
		}
		if k > 0 && k < n {
			break
		}
	}
	kinds := []int{linkRaft, linkAPI, linkPG}
	switch w.rng.Intn(5) {
	case 0:
		kinds = []int{linkRaft}
	case 1:
		kinds = []int{linkAPI}
	case 2:
		kinds = []int{linkPG}
	}
	dir := w.rng.Intn(4) // 0,1: both; 2: group→rest; 3: rest→group
	var cuts [][4]int
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			if !in[i] || in[j] {
				continue
			}
			for _, k := range kinds {
				if dir != 3 {
					cuts = append(cuts, [4]int{i, j, k})
				}
				if dir != 2 {
					cuts = append(cuts, [4]int{j, i, k})
				}
			}
		}
	}
	return cuts
}

func (w *simWorld) describeCuts(cuts [][4]int) string {
	kinds := []string{"raft", "api", "pg"}
	seen := map[string]bool{}
	var out []string
	for _, c := range cuts {
		s := fmt.Sprintf("%s->%s", w.mem[c[0]].name, w.mem[c[1]].name)
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	ks := map[int]bool{}
	for _, c := range cuts {
		ks[c[2]] = true
	}
	var kn []string
	for k := range linkKinds {
		if ks[k] {
			kn = append(kn, kinds[k])
		}
	}
	return strings.Join(out, ",") + " [" + strings.Join(kn, "+") + "]"
}

func (w *simWorld) anyDead() bool {
	return slices.ContainsFunc(w.mem, func(m *simMember) bool { return m.dead })
}

func (w *simWorld) kill(m *simMember) {
	if !m.alive {
		return
	}
	m.alive, m.paused, m.suspended = false, false, false
	m.pg.fenceLocked("parent-death signal")
	w.abandonCycle(m)
	m.sup = nil
}

func (w *simWorld) restart(m *simMember) {
	if m.alive || m.dead || m.left {
		return
	}
	w.startAgent(m)
}

func (w *simWorld) resume(m *simMember) {
	if m.paused {
		m.paused = false
		m.woken = true
	}
}

func (w *simWorld) wake(m *simMember) {
	if m.suspended {
		m.suspended = false
		m.woken = true
	}
}

// simAdmin is an admin command sent through some member's API, retried
// each tick until it commits (or 40 tries).
type simAdmin struct {
	desc  string
	build func(st raftstore.State) (raftstore.Command, bool)
	tries int
}

func simEditTTL(ttl time.Duration) simAdmin {
	return simAdmin{desc: "edit-config ttl=" + ttl.String(), build: func(st raftstore.State) (raftstore.Command, bool) {
		c := st.Config.Clone()
		c.TTL = ttl
		if c.Validate() != nil || st.Config.TTL == ttl {
			return nil, false
		}
		return raftstore.SetConfig{Config: c, PrevVersion: st.Config.Version, Actor: "admin"}, true
	}}
}

func simSetPause(p bool) simAdmin {
	return simAdmin{desc: fmt.Sprintf("pause=%v", p), build: func(raftstore.State) (raftstore.Command, bool) {
		return raftstore.SetPause{Pause: p, Actor: "admin"}, true
	}}
}

func (w *simWorld) admin(a simAdmin) { w.admins = append(w.admins, &a) }

// adminTick sends the queued admin commands (mu held).
func (w *simWorld) adminTick() {
	keep := w.admins[:0]
	for _, a := range w.admins {
		m := w.pick()
		if !m.responsive() {
			keep = append(keep, a)
			continue
		}
		st := w.stateAt(m.viewIdx)
		cmd, ok := a.build(st)
		if !ok {
			w.tracef(m.name, "admin %s: nothing to do", a.desc)
			continue
		}
		switch v := cmd.(type) {
		case raftstore.SetConfig:
			v.At = w.now
			cmd = v
		case raftstore.SetPause:
			v.At = w.now
			cmd = v
		}
		res, err := w.propose(m, cmd)
		if err == nil && res.Err == nil {
			w.tracef(m.name, "admin %s: done", a.desc)
			continue
		}
		a.tries++
		if a.tries < 40 {
			keep = append(keep, a)
		}
	}
	w.admins = keep
}

// heal ends every fault: links, pauses, suspends, stalls, cluster pause;
// the killed agents restart, but one member may stay lost for good.
func (w *simWorld) heal() {
	w.tracef("--", "HEAL")
	w.healAt = w.now
	clear(w.cut)
	for _, m := range w.mem {
		m.stalled = false
		w.resume(m)
		w.wake(m)
	}
	if w.cfg.permanent && !w.anyDead() {
		if m := w.pick(); !w.lastVoter(m) {
			w.kill(m)
			m.dead = true
			w.tracef(m.name, "lost for good")
		}
	}
	w.admins = nil
	for _, m := range w.mem {
		w.restart(m)
	}
	if !w.quorumPossible() {
		// A member left and another is lost for good: the operator
		// recovers on the survivors (sim_admin_test.go).
		w.recoverRaft()
	}
	for _, m := range w.mem {
		w.join(m)
	}
	w.admin(simSetPause(false))
}

// ---------------------------------------------------------------- invariants

// becameWritable checks a PostgreSQL that now accepts writes (mu held):
// in synchronous mode it must hold every commit acknowledged so far.
func (w *simWorld) becameWritable(p *simPG) {
	st := w.stateAt(p.m.viewIdx)
	epoch := uint64(0)
	if st.Leader.Holder == p.m.name {
		epoch = st.Leader.Epoch
	}
	p.epoch = epoch
	w.tracef(p.m.name, "writable at epoch %d", epoch)
	if epoch < w.latestW.epoch {
		// A stale primary (its view lags): what it could acknowledge is
		// judged by single-writer-ack and the per-instant check.
		return
	}
	w.latestW = simWritable{member: p.m.name, epoch: epoch, at: w.now}
	if !w.cfg.sync {
		return
	}
	for _, a := range w.acks {
		if a.full && !a.waived && !w.has(p.wal, a.id) {
			w.violate("acknowledged commit lost: %s became writable at epoch %d without commit %d (acknowledged by %s at %.3fs, epoch %d)",
				p.m.name, epoch, a.id, a.member, a.at.Sub(w.start).Seconds(), a.epoch)
			return
		}
	}
}

// checkLag checks an election against maximum_lag_on_failover (mu held,
// before the state that cmd made is followed): in asynchronous mode the
// coordinator's elections (not a switchover's hand-over, which waits for
// its candidate instead) give the key only to a member whose reported
// position is within maximum_lag_on_failover of the end of the last
// primary's WAL, as the reports the store committed showed it. Then the
// account starts again with the new holder (a release keeps it).
func (w *simWorld) checkLag(c raftstore.SetLeader) {
	n := len(w.states)
	if n < 2 {
		return
	}
	prev := w.states[n-2]
	cause := cmp.Or(c.Cause, raftstore.DefaultCause(prev.Leader.Holder, c.Holder))
	if c.Holder == "" {
		return
	}
	defer func() { w.lastPrimaryLSN = 0 }()
	if prev.Config.SynchronousMode || cause == raftstore.CauseSwitchover || cause == raftstore.CauseBootstrap || simOff("lag") {
		return
	}
	m, ok := prev.Members[c.Holder]
	if !ok {
		return
	}
	pos, limit := raftstore.PositionLSN(m.Status), prev.Config.MaximumLagOnFailover
	if w.cfg.maxLagRecords > 0 {
		w.stats.lagElections++
		if w.lastPrimaryLSN > pos {
			w.stats.lagBehind++
		}
	}
	if w.lastPrimaryLSN > pos && int64(w.lastPrimaryLSN-pos) > limit {
		w.violate("lag: %s elected (%s) %d bytes behind the last primary's reported end of WAL %d, maximum_lag_on_failover %d",
			c.Holder, cause, w.lastPrimaryLSN-pos, w.lastPrimaryLSN, limit)
	}
}

// lagStuck reports whether, in asynchronous mode, no live member can ever
// be elected: each holds less than the last primary's reported WAL minus
// maximum_lag_on_failover, and that primary is lost for good (mu held).
func (w *simWorld) lagStuck() bool {
	st := w.committed()
	if st.Config.SynchronousMode || w.lastPrimaryLSN == 0 {
		return false
	}
	for _, m := range w.mem {
		if m.dead || m.left {
			continue
		}
		if m.name == st.Leader.Holder || m.name == w.lastRenewed {
			return false // it takes the key back
		}
		if pos := simLSN(len(m.pg.wal)); pos >= w.lastPrimaryLSN || int64(w.lastPrimaryLSN-pos) <= st.Config.MaximumLagOnFailover {
			return false
		}
	}
	return true
}

// ack records a commit acknowledged to its client (mu held) and checks
// that it came under a valid lease and that no newer primary lacks it.
func (w *simWorld) ack(m *simMember, c simCommit, full bool) {
	p := m.pg
	epoch := p.epoch
	var end time.Time
	if m.sup != nil {
		_, until, le, _ := m.sup.lease.snapshot()
		end = until
		if full && le > epoch {
			epoch = le
		}
	}
	a := simAck{id: c.id, member: m.name, at: w.now, epoch: epoch, full: full}
	w.acks = append(w.acks, a)
	if full {
		w.stats.acks++
		if !w.healAt.IsZero() && w.now.After(w.healAt) {
			w.ackAfter = true
		}
	} else {
		w.stats.cancelAcks++
	}
	kind := "acknowledged"
	if !full {
		kind = "acknowledged after a cancelled wait (committed locally)"
	}
	w.tracef(m.name, "commit %d %s (epoch %d, lease end %.3fs)", c.id, kind, epoch, end.Sub(w.start).Seconds())
	if !w.now.Before(end) {
		w.violate("%s acknowledged commit %d at epoch %d after its lease ended (lease end %.3fs)", m.name, c.id, epoch, end.Sub(w.start).Seconds())
	}
	lw := w.latestW
	if full && lw.member != m.name && lw.epoch > epoch && !w.has(w.by[lw.member].pg.wal, c.id) {
		w.violate("two writers: %s acknowledged commit %d at epoch %d after %s became writable at epoch %d (%.3fs) without it",
			m.name, c.id, epoch, lw.member, lw.epoch, lw.at.Sub(w.start).Seconds())
	}
}

// dropping checks records about to be removed from p's data directory
// (keeping n): in synchronous mode no acknowledged commit may lose its
// last copy (mu held).
func (w *simWorld) dropping(p *simPG, n int, why string) {
	if !w.cfg.sync {
		return
	}
	for _, a := range w.acks {
		if !a.full || a.waived || !w.has(p.wal, a.id) || w.recPos[a.id] < n {
			continue
		}
		elsewhere := false
		for _, o := range w.mem {
			if o != p.m && o.pg.hasData && w.has(o.pg.wal, a.id) {
				elsewhere = true
				break
			}
		}
		if !elsewhere {
			w.violate("%s removes the only copy of acknowledged commit %d (%s)", p.m.name, a.id, why)
			return
		}
	}
}

// ackable reports whether m's PostgreSQL could acknowledge a commit now:
// its gate replies and the synchronous rule holds for its current WAL
// with every sync walsender caught up (mu held).
func (w *simWorld) ackable(m *simMember) bool {
	p := m.pg
	if !p.running || p.recovery || m.suspended || !m.alive || m.paused || m.sup == nil || !w.now.Before(m.sup.lease.End().Add(-pgmanager.GateMargin)) {
		return false
	}
	method, num, _ := p.parsed()
	if method == "" {
		return true
	}
	n := 0
	ws := w.walsenders(p)
	for _, s := range ws {
		if s.syncState == "sync" || s.syncState == "quorum" {
			if !s.gate && w.by[s.name].stalled {
				continue
			}
			if s.gate && !w.gateQuorumStreams(p, ws) {
				continue
			}
			n++
		}
	}
	return n >= num
}

// gateQuorumStreams reports whether enough of the gate's quorum set
// streams from p for the gate to confirm anything new (mu held).
func (w *simWorld) gateQuorumStreams(p *simPG, ws []simWalsender) bool {
	n := 0
	for _, s := range ws {
		if !s.gate && slices.Contains(p.gateNames, s.name) && !w.by[s.name].stalled {
			n++
		}
	}
	return n >= p.gateQ
}

// checkTick checks what holds at every instant (mu held).
func (w *simWorld) checkTick() {
	var open []string
	for _, m := range w.mem {
		if w.ackable(m) {
			open = append(open, m.name)
		}
	}
	if len(open) > 1 && !simOff("instant") {
		w.violate("two members can acknowledge commits at the same instant: %v", open)
	}
}

// livenessRequired says whether a writable primary must come back after the
// heal: always in asynchronous mode; in synchronous mode when the last
// holder that renewed (the newest that may have acknowledged anything) is
// alive, or a standby recorded for it. A holder elected and lost before its
// first renewal acknowledged nothing: the one before it counts.
func (w *simWorld) livenessRequired() (bool, string) {
	if !w.cfg.sync {
		if w.lagStuck() {
			return false, ""
		}
		return true, "asynchronous mode"
	}
	if w.cfg.strict {
		// Strict mode acknowledges nothing without a standby (quorum
		// mode: k of them) besides the primary (seed 30982: one member
		// left, one lost for good).
		alive, need := 0, 2
		if w.cfg.quorum {
			need = 1 + w.cfg.nodeCount
		}
		for _, m := range w.mem {
			if !m.dead && !m.left {
				alive++
			}
		}
		if alive < need {
			return false, ""
		}
	}
	if w.recovered {
		// The kept record names a survivor, or --allow-data-loss
		// cleared it; strict mode needs a standby besides.
		alive := 0
		for _, m := range w.mem {
			if !m.dead {
				alive++
			}
		}
		if w.cfg.strict && alive < 2 || w.cfg.quorum && w.cfg.strict && alive < 1+w.cfg.nodeCount {
			return false, ""
		}
		return true, "raftgres recover left the survivors a record naming one of them, or none"
	}
	lr, ok := w.by[w.lastRenewed]
	if ok && !lr.dead {
		return true, "the last holder that renewed, " + lr.name + ", is alive"
	}
	st := w.committed()
	if st.Sync.Primary == w.lastRenewed && st.Sync.QuorumNeed() > 0 {
		// Quorum mode: an election needs n − q + 1 of the recorded
		// standbys.
		alive := 0
		for _, s := range st.Sync.Standbys {
			if m, ok := w.by[s]; ok && !m.dead {
				alive++
			}
		}
		if alive >= st.Sync.QuorumNeed() {
			return true, fmt.Sprintf("%d of the quorum set %v of the last holder that renewed are alive", alive, st.Sync.Standbys)
		}
		return false, ""
	}
	if st.Sync.Primary == w.lastRenewed {
		for _, s := range st.Sync.Standbys {
			if m, ok := w.by[s]; ok && !m.dead {
				return true, "the synchronous standby " + s + " of the last holder that renewed is alive"
			}
		}
	}
	return false, ""
}

// ---------------------------------------------------------------- the run

func (w *simWorld) run() {
	faults := w.schedule()
	healed := false
	var end time.Time
	ctx := context.Background()
	for {
		w.mu.Lock()
		w.now = w.now.Add(simTick)
		w.step++
		for len(faults) > 0 && w.elapsed() >= faults[0].at {
			f := faults[0]
			faults = faults[1:]
			w.tracef("--", "FAULT %s", f.desc)
			f.do(w)
		}
		for _, name := range w.toKill {
			m := w.by[name]
			if !m.alive || healed {
				continue
			}
			w.tracef(name, "FAULT the new holder's host dies before its first renewal")
			w.kill(m)
			if w.cfg.permanent && !w.anyDead() && !w.lastVoter(m) {
				m.dead = true
				w.tracef(name, "lost for good")
			} else {
				at := w.elapsed() + time.Duration(500+w.rng2.Intn(8000))*time.Millisecond
				faults = append(faults, simFault{at: at, desc: "restart agent " + name, do: func(w *simWorld) { w.restart(m) }})
				slices.SortStableFunc(faults, func(a, b simFault) int { return int(a.at - b.at) })
			}
		}
		w.toKill = nil
		if !healed && w.elapsed() >= w.cfg.faultPhase {
			healed = true
			faults = nil // what was left of the schedule (its heals included)
			w.heal()
			ttl := w.committed().Config.TTL
			end = w.now.Add(8*max(ttl, 9*time.Second) + 6*time.Second)
		}
		if healed && (!w.now.Before(end) || w.ackAfter && w.now.Sub(w.healAt) > 10*time.Second) {
			w.mu.Unlock()
			break
		}
		if healed && w.committed().Config.Pause && len(w.admins) == 0 {
			// A pause sent before the heal that committed late: the
			// operator resumes again.
			w.admin(simSetPause(false))
		}
		w.adminTick()
		w.deliverPending()
		w.raftTick()
		w.mu.Unlock()

		// Coordinators follow Raft leadership.
		for _, m := range w.mem {
			if m.coord != nil && (m.coord.stopping || w.leader != m || !m.alive) {
				w.stopCoord(m)
			}
		}
		if l := w.leader; l != nil && l.coord == nil && l.responsive() {
			w.startCoord(l)
		}
		// Fencers: the agent's (runFencer: fenceIfEnded at the lease
		// end) and the fence keeper's (a separate process, armed by the
		// real code through FenceAt, frozen only with the whole host).
		for _, m := range w.mem {
			if m.suspended {
				continue
			}
			w.mu.Lock()
			if k := m.pg.keeperAt; !k.IsZero() && !w.now.Before(k) && m.pg.running {
				m.pg.fenceLocked("fence keeper")
			}
			w.mu.Unlock()
			if m.sup == nil || !m.responsive() {
				continue
			}
			w.fencer(m)
		}
		w.mu.Lock()
		w.pgTick()
		w.mu.Unlock()

		if l := w.leader; l != nil && l.coord != nil && l.responsive() {
			if !w.now.Before(l.coord.next) || l.viewIdx != l.coord.seenIdx {
				l.coord.seenIdx = l.viewIdx
				w.stepCoord(l)
			}
		}
		order := w.rng.Perm(len(w.mem))
		for _, i := range order {
			m := w.mem[i]
			if !m.responsive() || m.sup == nil {
				continue
			}
			if m.cyc != nil {
				// A cycle parked at a wait on the clock runs on when
				// the wait ends; no other cycle starts meanwhile.
				if !w.now.Before(m.cyc.due) {
					w.resumeCycle(m)
				}
				continue
			}
			changed := false
			if m.viewIdx != m.lastIdx {
				w.mu.Lock()
				changed = relevant(w.stateAt(m.viewIdx)) != m.lastKey
				w.mu.Unlock()
			}
			if !m.woken && !changed && w.now.Before(m.nextCycle) {
				continue
			}
			m.sup.pacer.timerWake = !m.woken && !changed
			m.woken = false
			w.stats.cycles++
			w.startCycle(m, ctx)
		}
		w.mu.Lock()
		w.checkTick()
		stop := len(w.violations) > 0
		w.mu.Unlock()
		if stop {
			break
		}
	}
	w.mu.Lock()
	if len(w.violations) == 0 && !simOff("liveness") {
		if ok, why := w.livenessRequired(); ok && !w.ackAfter {
			w.violate("liveness: no commit acknowledged within %.1fs of the heal (%s); key %+v, sync %+v",
				w.now.Sub(w.healAt).Seconds(), why, w.committed().Leader, w.committed().Sync)
		}
	}
	w.stopped = true
	w.mu.Unlock()
	for _, m := range w.mem {
		w.abandonCycle(m)
		w.stopCoord(m)
	}
}

// fencer is runFencer's loop body: it hands every new lease end to the
// fence keeper, and fences at the end of a lease not renewed in time.
func (w *simWorld) fencer(m *simMember) {
	until := m.sup.lease.End()
	if !until.Equal(m.lastUntil) {
		m.lastUntil = until
		if !until.IsZero() {
			m.pg.FenceAt(until)
		}
	}
	if !until.IsZero() && !w.now.Before(until) {
		m.sup.fenceIfEnded(until)
	}
}

// simResult is what one schedule produced.
type simResult struct {
	seed       int64
	violations []string
	stats      simStats
	virtual    time.Duration
	params     simParams
	trace      []string
}

func runSim(seed int64, traced bool) simResult {
	w := newSimWorld(seed, traced)
	w.run()
	r := simResult{seed: seed, violations: w.violations, stats: w.stats, virtual: w.elapsed(), params: w.cfg}
	if w.trace != nil {
		r.trace = w.trace.lines
	}
	return r
}

// simOff reports whether SIM_NO (a comma list) turns off a fault or a
// check: ttl (no ttl edits), admin (no switchover, failover, leave, join
// or recover), liveness, instant (the per-instant check of two members
// able to acknowledge). Meant for hunting one bug while
// another is known; the sweep checks everything by default.
func simOff(what string) bool {
	return slices.Contains(strings.Split(os.Getenv("SIM_NO"), ","), what)
}

// simOn reports whether SIM_STRICT (a comma list) turns on an extra
// check: fence (a holder that nothing kept from renewing is fenced).
func simOn(what string) bool {
	return slices.Contains(strings.Split(os.Getenv("SIM_STRICT"), ","), what)
}

func envInt(name string, def int64) int64 {
	if v := os.Getenv(name); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return n
		}
	}
	return def
}

// simReport prints a failing seed's trace (run again, which must fail the
// same way).
func simReport(t *testing.T, r simResult) {
	t.Helper()
	again := runSim(r.seed, true)
	if !slices.Equal(again.violations, r.violations) {
		t.Errorf("seed %d is not deterministic: first %q, rerun %q", r.seed, r.violations, again.violations)
	}
	lines := again.trace
	const keep = 400
	if len(lines) > keep && os.Getenv("SIM_FULL_TRACE") == "" {
		lines = append(append([]string{}, lines[:3]...), append([]string{fmt.Sprintf("… %d lines (SIM_FULL_TRACE=1 prints all) …", len(lines)-keep)}, lines[len(lines)-keep:]...)...)
	}
	t.Errorf("seed %d fails (SIM_SEED=%d reproduces it): %s\ntrace:\n%s", r.seed, r.seed, strings.Join(r.violations, "; "), strings.Join(lines, "\n"))
}

// TestSimSweep runs the regression seeds, then SIM_SCHEDULES schedules
// (default 2000) from SIM_SEED (default 1), on two workers. With SIM_SEED
// set and SIM_SCHEDULES unset it runs that one seed and prints its trace.
func TestSimSweep(t *testing.T) {
	if testing.Short() {
		t.Skip("simulation sweep")
	}
	_, one := os.LookupEnv("SIM_SEED")
	_, many := os.LookupEnv("SIM_SCHEDULES")
	first := envInt("SIM_SEED", 1)
	if one && !many {
		r := runSim(first, true)
		t.Logf("seed %d: %s virtual, stats %+v", first, r.virtual.Round(time.Millisecond), r.stats)
		if len(r.violations) > 0 {
			simReport(t, r)
		} else if testing.Verbose() {
			t.Logf("trace:\n%s", strings.Join(r.trace, "\n"))
		}
		return
	}
	var regFailed []simResult
	for _, reg := range simRegressions {
		if simOff("regressions") {
			break
		}
		if r := runSim(reg.seed, false); len(r.violations) > 0 {
			t.Logf("regression seed %d fails (%s): %s", reg.seed, reg.finding, r.violations[0])
			regFailed = append(regFailed, r)
		}
	}
	if len(regFailed) > 0 {
		t.Logf("SIM-FIRST-FAIL seed=%d invariant=%s schedules=0 (a regression seed)", regFailed[0].seed, simKind(regFailed[0].violations[0]))
		simReport(t, regFailed[0])
		return
	}
	n := envInt("SIM_SCHEDULES", 2000)
	start := time.Now()
	var next atomic.Int64
	var mu sync.Mutex
	var failed []simResult
	var total simStats
	var fenceSeeds []int64
	var virtual time.Duration
	workers := min(runtime.GOMAXPROCS(0), 2)
	maxFail := int(envInt("SIM_MAX_FAILURES", 5))
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= n {
					return
				}
				mu.Lock()
				stop := len(failed) >= maxFail
				mu.Unlock()
				if stop {
					return
				}
				r := runSim(first+i, false)
				mu.Lock()
				if len(r.violations) > 0 {
					failed = append(failed, r)
				}
				total.commits += r.stats.commits
				total.acks += r.stats.acks
				total.cancelAcks += r.stats.cancelAcks
				total.elections += r.stats.elections
				total.fastPaths += r.stats.fastPaths
				total.cycles += r.stats.cycles
				total.coordSteps += r.stats.coordSteps
				total.needlessFences += r.stats.needlessFences
				total.switchovers += r.stats.switchovers
				total.manualFailovers += r.stats.manualFailovers
				total.hardFailovers += r.stats.hardFailovers
				total.leaves += r.stats.leaves
				total.joins += r.stats.joins
				total.recovers += r.stats.recovers
				total.waits += r.stats.waits
				total.lagElections += r.stats.lagElections
				total.lagBehind += r.stats.lagBehind
				if r.stats.needlessFences > 0 && len(fenceSeeds) < 10 {
					fenceSeeds = append(fenceSeeds, r.seed)
				}
				virtual += r.virtual
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	ran := min(next.Load(), n)
	t.Logf("%d schedules from seed %d in %s (%.0f/s), %s virtual; %d commits, %d acknowledged, %d after a cancelled wait, %d elections (%d fast path), %d supervisor cycles, %d coordinator steps",
		ran, first, el.Round(time.Millisecond), float64(ran)/el.Seconds(), virtual.Round(time.Second), total.commits, total.acks,
		total.cancelAcks, total.elections, total.fastPaths, total.cycles, total.coordSteps)
	t.Logf("admin operations: %d switchovers, %d manual failovers and %d hard failovers (drills) carried out, %d leaves, %d joins, %d recovers; %d supervisor waits on the clock",
		total.switchovers, total.manualFailovers, total.hardFailovers, total.leaves, total.joins, total.recovers, total.waits)
	t.Logf("maximum_lag_on_failover: %d elections in the schedules that draw a small one, %d of them of a member behind the last primary's reported end of WAL",
		total.lagElections, total.lagBehind)
	if total.needlessFences > 0 {
		slices.Sort(fenceSeeds)
		t.Logf("%d needless fences (a holder nothing kept from renewing lost its lease; SIM_STRICT=fence fails on them), seeds %v", total.needlessFences, fenceSeeds)
	}
	if len(failed) == 0 {
		return
	}
	slices.SortFunc(failed, func(a, b simResult) int { return int(a.seed - b.seed) })
	t.Logf("SIM-FIRST-FAIL seed=%d invariant=%s schedules=%d", failed[0].seed, simKind(failed[0].violations[0]), failed[0].seed-first+1)
	for _, r := range failed {
		t.Logf("FAILED seed %d (%d members, sync=%v, ttl %s): %s", r.seed, r.params.members, r.params.sync, r.params.ttl, strings.Join(r.violations, "; "))
	}
	simReport(t, failed[0])
}

// TestSimDeterministic runs a few seeds twice, once traced: the same
// seed must give the same run.
func TestSimDeterministic(t *testing.T) {
	for _, seed := range []int64{3, 4, 5} {
		a, b := runSim(seed, false), runSim(seed, true)
		if a.stats != b.stats || a.virtual != b.virtual || !slices.Equal(a.violations, b.violations) {
			t.Errorf("seed %d: %+v %s %q, then %+v %s %q", seed, a.stats, a.virtual, a.violations, b.stats, b.virtual, b.violations)
		}
	}
}

// TestSimParseSSN checks the synchronous_standby_names parser the
// simulated PostgreSQL uses.
func TestSimParseSSN(t *testing.T) {
	for _, c := range []struct {
		in     string
		method string
		num    int
		names  []string
	}{
		{`"raftgres_fence"`, "FIRST", 1, []string{"raftgres_fence"}},
		{`FIRST 2 ("raftgres_fence", "b")`, "FIRST", 2, []string{"raftgres_fence", "b"}},
		{`ANY 1 (a, "B")`, "ANY", 1, []string{"a", "B"}},
		{`2 (a, b, c)`, "FIRST", 2, []string{"a", "b", "c"}},
		{`a, b`, "FIRST", 1, []string{"a", "b"}},
		{`FIRST 2 ("raftgres_fence", *)`, "FIRST", 2, []string{"raftgres_fence", "*"}},
		{``, "", 0, nil},
	} {
		m, n, names := parseSSN(c.in)
		if m != c.method || n != c.num || !slices.Equal(names, c.names) {
			t.Errorf("parseSSN(%q) = %s %d %q, want %s %d %q", c.in, m, n, names, c.method, c.num, c.names)
		}
	}
	_ = pgmanager.GateName
}
