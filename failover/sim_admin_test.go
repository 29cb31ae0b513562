package failover

// The simulator's admin operations beyond edit-config and pause: switchover
// (to a named member or to any), manual failover, leave and join of a
// member, and `raftgres recover` after a majority is lost for good; and
// the machinery they need: a supervisor cycle that waits on the clock
// (renewWhile's pacing, a switchover's polling and deadlines, all through
// Clock.After) runs in a goroutine of its own and parks at each wait until
// the virtual clock reaches its end, while the world runs on.

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"time"

	"raftgres/raftstore"
)

// simCycle is a supervisor cycle in progress, parked at a wait.
type simCycle struct {
	events  chan simCycleEvent
	due     time.Time
	release chan bool // false: the wait ends; true: the agent was killed
}

type simCycleEvent struct {
	done    bool
	wait    time.Duration // done: what the cycle returned
	due     time.Time     // parked: when its wait ends
	release chan bool
}

// After parks the calling cycle until the virtual clock reaches now+d
// (the driver releases it, simWorld.resumeCycle), or ends its goroutine
// when the agent is killed meanwhile: a killed process runs no further.
func (c simClock) After(d time.Duration) <-chan time.Time {
	m := c.m
	if m == nil || m.cyc == nil {
		panic("sim: Clock.After outside a supervisor cycle")
	}
	c.w.mu.Lock()
	due := c.w.now.Add(d)
	c.w.mu.Unlock()
	rel := make(chan bool)
	m.cyc.events <- simCycleEvent{due: due, release: rel}
	if killed := <-rel; killed {
		runtime.Goexit()
	}
	ch := make(chan time.Time, 1)
	ch <- c.Now()
	return ch
}

// simActNow runs renewWhile's action at once (Supervisor.act).
func simActNow(f func() error) <-chan error {
	done := make(chan error, 1)
	done <- f()
	return done
}

// startCycle runs one cycle of m's supervisor until it returns or parks
// (mu not held).
func (w *simWorld) startCycle(m *simMember, ctx context.Context) {
	cyc := &simCycle{events: make(chan simCycleEvent)}
	m.cyc = cyc
	sup := m.sup
	go func() {
		var wait time.Duration
		defer func() { cyc.events <- simCycleEvent{done: true, wait: wait} }()
		wait = sup.cycle(ctx)
	}()
	w.awaitCycle(m)
}

// resumeCycle ends the wait m's cycle is parked at and runs it until it
// returns or parks again (mu not held).
func (w *simWorld) resumeCycle(m *simMember) {
	m.cyc.release <- false
	w.awaitCycle(m)
}

func (w *simWorld) awaitCycle(m *simMember) {
	ev := <-m.cyc.events
	if !ev.done {
		w.stats.waits++
		m.cyc.due, m.cyc.release = ev.due, ev.release
		return
	}
	m.cyc = nil
	m.nextCycle = w.now.Add(ev.wait)
	w.fencer(m)
	w.mu.Lock()
	m.lastIdx = m.viewIdx
	m.lastKey = relevant(w.stateAt(m.viewIdx))
	w.mu.Unlock()
}

// abandonCycle ends the goroutine of a cycle parked when its agent is
// killed (mu held or not: the goroutine only unwinds).
func (w *simWorld) abandonCycle(m *simMember) {
	if m.cyc == nil {
		return
	}
	m.cyc.release <- true
	<-m.cyc.events
	m.cyc = nil
}

// ---------------------------------------------------------------- switchover and manual failover

// simSwitchover asks the holder to hand over, to the member named to or
// (to "") to the best candidate, with the API's checks (validateSwitchover).
func simSwitchover(to string) simAdmin {
	desc := "switchover"
	if to != "" {
		desc += " to " + to
	}
	return simAdmin{desc: desc, build: func(st raftstore.State) (raftstore.Command, bool) {
		if st.Failover != nil || st.Leader.Holder == "" || to != "" && !simCandidateOK(st, to) {
			return nil, false
		}
		return raftstore.SetFailover{Request: &raftstore.FailoverRequest{Kind: "switchover", From: st.Leader.Holder, To: to,
			RequestedBy: "admin"}, CAS: true, Actor: "admin"}, true
	}}
}

// simManualFailover asks for to to be promoted: handed over by a healthy
// holder, elected by the coordinator otherwise.
func simManualFailover(to string) simAdmin {
	return simAdmin{desc: "failover to " + to, build: func(st raftstore.State) (raftstore.Command, bool) {
		if st.Failover != nil || !simCandidateOK(st, to) {
			return nil, false
		}
		return raftstore.SetFailover{Request: &raftstore.FailoverRequest{Kind: "failover", To: to, RequestedBy: "admin"},
			CAS: true, Actor: "admin"}, true
	}}
}

// simHardFailover is a drill's hard failover (`raftgres drill
// --failover`): the holder stops PostgreSQL immediate and releases the
// key, and the election decides without it; to, if set, first when
// eligible. With the API's checks (validateHard): a holder, and a member
// other than it that could be elected.
func simHardFailover(to string) simAdmin {
	desc := "hard failover"
	if to != "" {
		desc += " to " + to
	}
	return simAdmin{desc: desc, build: func(st raftstore.State) (raftstore.Command, bool) {
		h := st.Leader.Holder
		if st.Failover != nil || h == "" || to != "" && !simCandidateOK(st, to) {
			return nil, false
		}
		if !slices.ContainsFunc(st.MemberNames(), func(n string) bool { return n != h && RequestRefusal(st, n) == "" }) {
			return nil, false
		}
		return raftstore.SetFailover{Request: &raftstore.FailoverRequest{Kind: "failover", From: h, To: to, Hard: true,
			RequestedBy: "admin"}, CAS: true, Actor: "admin"}, true
	}}
}

// simCandidateOK is the API's checkCandidate.
func simCandidateOK(st raftstore.State, name string) bool {
	m, ok := st.Members[name]
	return ok && st.Leader.Holder != name && !m.Tags.NoFailover && m.Status.Role == "replica" && m.Status.State == "running"
}

// ---------------------------------------------------------------- leave and join

// leave removes m from the member list and the Raft voters (`raftgres
// leave`; refused while m holds the key); its agent is stopped when the
// removal commits (afterCommit), its PostgreSQL with it, and its data
// directory stays (mu held).
func (w *simWorld) leave(m *simMember) {
	if m.left || m.dead {
		return
	}
	w.admin(simAdmin{desc: "leave " + m.name, build: func(raftstore.State) (raftstore.Command, bool) {
		// raftstore.Store.Leave checks on the Raft leader, after a
		// barrier: the committed state.
		st := w.committed()
		others := slices.ContainsFunc(w.mem, func(o *simMember) bool { return o != m && !o.left })
		if _, ok := st.Members[m.name]; !ok || st.CheckLeave(m.name) != nil || m.left || m.dead || !others {
			return nil, false // refused (Store.Leave: State.CheckLeave, the last voter)
		}
		return raftstore.RemoveMember{Name: m.name, Actor: "admin"}, true
	}})
}

// join registers a member that left again; once that commits its agent
// starts on the data directory it kept (`raftgres agent` with raft.join)
// (mu held).
func (w *simWorld) join(m *simMember) {
	if !m.left || m.dead {
		return
	}
	w.admin(simAdmin{desc: "join " + m.name, build: func(st raftstore.State) (raftstore.Command, bool) {
		if _, ok := st.Members[m.name]; ok || !m.left || m.dead {
			return nil, false
		}
		reg := raftstore.RegisterMember{Name: m.name, PGAddr: simPGAddr(m.i), APIAddr: fmt.Sprintf("10.0.0.%d:8008", m.i+1),
			RaftAddr: fmt.Sprintf("10.0.0.%d:7001", m.i+1), Tags: raftstore.DefaultTags(), At: w.now}
		if w.cfg.quorum {
			reg.Agent = raftstore.AgentVersion{Version: "sim", Protocol: raftstore.Protocol}
		}
		return reg, true
	}})
}

// membershipCommitted follows a committed leave or join (mu held).
func (w *simWorld) membershipCommitted(cmd raftstore.Command) {
	switch c := cmd.(type) {
	case raftstore.RemoveMember:
		w.stats.leaves++
		m := w.by[c.Name]
		w.kill(m)
		m.left = true
		w.tracef(m.name, "left the cluster: agent stopped, no longer a Raft voter")
		if w.leader == m {
			w.depose("left the cluster")
		}
	case raftstore.RegisterMember:
		if m := w.by[c.Name]; m.left && !m.dead {
			w.stats.joins++
			m.left = false
			m.viewIdx = w.commitIndex()
			w.tracef(m.name, "joined the cluster again")
			w.restart(m)
		}
	}
}

// ---------------------------------------------------------------- recover

// loseMajority loses a majority of the members for good (hosts and disks
// gone): the cluster has no Raft quorum until the operator recovers
// (mu held).
func (w *simWorld) loseMajority() {
	if w.anyDead() || slices.ContainsFunc(w.mem, func(m *simMember) bool { return m.left }) {
		return
	}
	for _, i := range w.rng2.Perm(len(w.mem))[:len(w.mem)/2+1] {
		m := w.mem[i]
		w.kill(m)
		m.dead = true
		w.tracef(m.name, "lost for good (with a majority)")
	}
}

// recoverRaft is `raftgres recover` on every survivor, agents stopped:
// the survivors become the only voters, the others leave the member list,
// the key is cleared (raftstore.RecoveryEdit). In synchronous mode, when
// no recorded synchronous member survives, the operator gives
// --allow-data-loss: the record is cleared, so every commit acknowledged
// until then is written off in the durability checks (simAck.waived), and
// only those (mu held).
func (w *simWorld) recoverRaft() {
	if !w.anyDead() || w.recovered || w.quorumPossible() {
		return
	}
	var survivors []string
	for _, m := range w.mem {
		if !m.dead && !m.left {
			survivors = append(survivors, m.name)
			w.kill(m)
		}
	}
	if w.leader != nil {
		w.depose("raft recover")
	}
	w.pending = nil
	idx := w.commitIndex() + 1
	ns := w.committed().Clone()
	raftstore.RecoveryEdit(&ns, idx, survivors, w.now, "recover")
	lost := ns.Config.SynchronousMode && !ns.Sync.NoRecord() && !slices.ContainsFunc(survivors, func(n string) bool {
		ok, _ := ns.Electable(n)
		return ok
	})
	if lost {
		ns = w.committed().Clone()
		raftstore.RecoveryEditAllowingLoss(&ns, idx, survivors, w.now, "recover")
		// The record no longer says who holds what was acknowledged
		// before: all of it is written off, by this operation alone.
		n := 0
		for i, a := range w.acks {
			if a.full && !a.waived {
				w.acks[i].waived = true
				n++
			}
		}
		w.tracef("--", "%d acknowledged commits written off by recover --allow-data-loss", n)
	}
	w.states = append(w.states, ns)
	w.log = append(w.log, simEntry{from: "recover", at: w.now})
	w.recovered = true
	w.lastPrimaryLSN = 0 // recover's key is not an election
	w.stats.recovers++
	w.tracef("--", "RECOVER survivors %v (allow-data-loss %v): %s", survivors, lost, ns.History[len(ns.History)-1].Reason)
	for _, m := range w.mem {
		switch {
		case m.dead:
			m.left = true // no longer a voter
		case !m.left:
			m.viewIdx = w.commitIndex()
			w.startAgent(m)
		}
	}
}

// lastVoter reports whether m is the only voter not lost for good: the
// others left, and losing it too would leave nobody to recover on (mu
// held).
func (w *simWorld) lastVoter(m *simMember) bool {
	return !m.left && !slices.ContainsFunc(w.mem, func(o *simMember) bool { return o != m && !o.left && !o.dead })
}

// quorumPossible reports whether the voters not lost for good make a
// majority (mu held).
func (w *simWorld) quorumPossible() bool {
	voters, alive := 0, 0
	for _, m := range w.mem {
		if !m.left {
			voters++
			if !m.dead {
				alive++
			}
		}
	}
	return alive >= voters/2+1
}

// ---------------------------------------------------------------- drawing them

// scheduleAdmin draws the admin operations of a schedule from rng2 (so
// that the faults drawn from rng stay those of the seeds found before).
func (w *simWorld) scheduleAdmin() []simFault {
	var fs []simFault
	add := func(at time.Duration, desc string, do func(w *simWorld)) {
		fs = append(fs, simFault{at: at, desc: desc, do: do})
	}
	r := w.rng2
	if simOff("admin") {
		return nil
	}
	if w.cfg.faultPhase > 12*time.Second && r.Intn(8) == 0 {
		t := time.Duration(1000+r.Intn(int(w.cfg.faultPhase/time.Millisecond)-9000)) * time.Millisecond
		add(t, "lose a majority for good", func(w *simWorld) { w.loseMajority() })
		add(t+time.Duration(500+r.Intn(4500))*time.Millisecond, "raftgres recover on the survivors", func(w *simWorld) { w.recoverRaft() })
	}
	for t := time.Duration(r.Int63n(int64(3 * w.cfg.maxFaultGap))); t < w.cfg.faultPhase; t += time.Duration(r.Int63n(int64(3 * w.cfg.maxFaultGap))) {
		m := w.mem[r.Intn(len(w.mem))]
		switch k := r.Intn(10); {
		case k < 4:
			to := ""
			if r.Intn(2) == 0 {
				to = m.name
			}
			a := simSwitchover(to)
			add(t, a.desc, func(w *simWorld) { w.admin(a) })
		case k < 7:
			a := simManualFailover(m.name)
			add(t, a.desc, func(w *simWorld) { w.admin(a) })
		default:
			add(t, "leave "+m.name, func(w *simWorld) { w.leave(m) })
			add(t+time.Duration(1000+r.Intn(8000))*time.Millisecond, "join "+m.name, func(w *simWorld) { w.join(m) })
		}
	}
	// Drills: in a third of the schedules, one to three hard failovers
	// (from rng4, so that the operations above stay those of the seeds
	// found before).
	if r4 := w.rng4; r4.Intn(3) == 0 {
		for range 1 + r4.Intn(3) {
			t := time.Duration(r4.Int63n(int64(w.cfg.faultPhase)))
			to := ""
			if r4.Intn(2) == 0 {
				to = w.mem[r4.Intn(len(w.mem))].name
			}
			a := simHardFailover(to)
			add(t, a.desc, func(w *simWorld) { w.admin(a) })
		}
	}
	return fs
}
