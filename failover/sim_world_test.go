package failover

// The deterministic simulator's world: one seeded
// math/rand source, one virtual clock, a linearizable store built from the
// real FSM rules (raftstore.Apply) with per-member views that lag, a Raft
// leader that moves, a network with cuts per link kind and direction, and
// a proposer that delays, reorders and loses replies. The members run their
// REAL Supervisor (cycle) and Coordinator (lead, stepped one loop iteration
// at a time); the simulated PostgreSQL is in sim_pg_test.go, schedules and
// invariants in sim_test.go.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"raftgres/raftstore"
)

// Link kinds of the simulated network.
const (
	linkRaft = iota // Raft RPCs: replication, heartbeats, elections
	linkAPI         // the HTTP API: commands forwarded to the Raft leader
	linkPG          // PostgreSQL: streaming replication, pg_rewind, clone
	linkKinds
)

var errSimUnreachable = errors.New("sim: raft leader unreachable")
var errSimNoLeader = errors.New("sim: no raft leader")
var errSimNoQuorum = errors.New("sim: raft leader has no quorum")
var errSimReplyLost = errors.New("sim: reply lost (outcome unknown)")
var errSimNotLeader = errors.New("sim: not the raft leader")

type simEntry struct {
	cmd  raftstore.Command
	from string
	at   time.Time
}

type simPending struct {
	due  time.Time
	seq  int
	cmd  raftstore.Command
	from string
}

type simMember struct {
	w    *simWorld
	i    int
	name string

	alive     bool // the agent process runs (killed: false)
	paused    bool // SIGSTOP of the agent: its loop, its Raft peer, its gate
	suspended bool // host suspended: agent and PostgreSQL frozen
	dead      bool // permanently lost in the heal phase
	left      bool // removed from the members and the Raft voters (leave; lost and recovered without)

	sup       *Supervisor
	cyc       *simCycle // a cycle parked at a wait on the clock (sim_admin_test.go)
	nextCycle time.Time
	lastKey   stateKey
	lastIdx   uint64
	woken     bool // an event (FSM change, PostgreSQL exit) wakes the loop

	viewIdx     uint64 // the member's FSM has applied the log up to here
	lastUntil   time.Time
	lastContact time.Time

	coord *simCoord
	pg    *simPG
	// stalled stops its walreceiver from receiving (a slow disk or link).
	stalled bool
	// disturbedAt is the last instant a fault touched its path to the
	// Raft leader (frozen, killed, cut, no leader, a failed proposal).
	disturbedAt time.Time
}

func (m *simMember) responsive() bool { return m.alive && !m.paused && !m.suspended }

// simWorld is everything the simulation owns. mu guards it against the
// goroutines the real code starts (renewWhile's action, the coordinator's
// loop); the driver never holds mu while calling into the real code.
type simWorld struct {
	mu  sync.Mutex
	rng *rand.Rand
	// rng2 draws what later versions added (a stream apart, so that
	// the schedules of the seeds found before stay as they were).
	rng2 *rand.Rand
	// rng3 draws the unclean stops (another stream, for the same reason).
	rng3 *rand.Rand
	// rng4 draws the hard failovers (another stream, for the same reason).
	rng4 *rand.Rand
	// rng5 draws quorum mode (another stream, for the same reason).
	rng5 *rand.Rand
	// rng6 draws a small maximum_lag_on_failover in asynchronous mode
	// (another stream, for the same reason).
	rng6   *rand.Rand
	toKill []string
	seed   int64
	cfg    simParams

	start time.Time
	now   time.Time
	step  int

	mem []*simMember
	by  map[string]*simMember

	// The committed log and the state after each entry: states[i] is the
	// state once entries up to index base+i are applied.
	base   uint64
	states []raftstore.State
	log    []simEntry

	leader        *simMember
	weakSince     time.Time // the leader lost quorum (or froze) since
	electAt       time.Time // when a leaderless cluster elects
	transferTo    *string
	pending       []simPending
	pendSeq       int
	failedAt      map[string]time.Time // member/command type → instant of a failed proposal
	cut           map[[4]int]int       // from, to, kind → how many faults cut it
	changeWaiters int

	// PostgreSQL side (sim_pg_test.go).
	nextRecord uint64
	recPos     map[uint64]int
	acks       []simAck
	ackIdx     map[uint64]int
	nextTL     uint32
	latestW    simWritable
	// lastRenewed is the last holder that renewed (held a lease): the
	// newest member that may have acknowledged anything.
	lastRenewed string
	lastWriter  *simMember
	stats       simStats

	admins    []*simAdmin
	recovered bool // raftgres recover ran
	// lastPrimaryLSN is the simulator's own account of the end of the
	// last primary's WAL as the store saw it: the furthest position the
	// key's holder reported since it took the key, kept across a release
	// (the lag invariant measures elections against it).
	lastPrimaryLSN uint64

	healAt     time.Time
	ackAfter   bool // a full ack happened after healAt
	violations []string

	trace   *simTrace
	stopped bool
}

type simStats struct {
	commits, acks, cancelAcks, elections, fastPaths, renewals, proposals, lostReplies, delayed, dropped int
	cycles, coordSteps                                                                                  int
	needlessFences                                                                                      int
	// Admin operations carried out, and supervisor waits on the clock.
	switchovers, manualFailovers, hardFailovers, leaves, joins, recovers, waits int
	// Elections checked against a drawn maximum_lag_on_failover, and
	// those of a member behind the last primary's reported end of WAL.
	lagElections, lagBehind int
}

// simTrace collects the readable trace of a rerun.
type simTrace struct {
	mu    sync.Mutex
	lines []string
}

func (w *simWorld) elapsed() time.Duration { return w.now.Sub(w.start) }

// tracef records one event (mu held or not: the trace has its own lock).
func (w *simWorld) tracef(member, format string, args ...any) {
	if w.trace == nil {
		return
	}
	line := fmt.Sprintf("%6d %9.3fs %-3s %s", w.step, w.elapsed().Seconds(), member, fmt.Sprintf(format, args...))
	w.trace.mu.Lock()
	w.trace.lines = append(w.trace.lines, line)
	w.trace.mu.Unlock()
}

// violate records a broken invariant (mu held).
func (w *simWorld) violate(format string, args ...any) {
	msg := fmt.Sprintf("t=%.3fs step %d: ", w.elapsed().Seconds(), w.step) + fmt.Sprintf(format, args...)
	w.violations = append(w.violations, msg)
	w.tracef("!!", "VIOLATION %s", fmt.Sprintf(format, args...))
}

// ---------------------------------------------------------------- clock

// simClock is a member's clock (m nil: the coordinator's, which never
// waits through After).
type simClock struct {
	w *simWorld
	m *simMember
}

func (c simClock) Now() time.Time {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	return c.w.now
}

// ---------------------------------------------------------------- log and views

func (w *simWorld) commitIndex() uint64 { return w.base + uint64(len(w.states)) - 1 }

func (w *simWorld) stateAt(idx uint64) raftstore.State { return w.states[idx-w.base] }

func (w *simWorld) committed() raftstore.State { return w.states[len(w.states)-1] }

// commitLocked appends cmd to the committed log and applies it with the
// FSM's own rules (mu held). A refused command takes its index too.
func (w *simWorld) commitLocked(cmd raftstore.Command, from string) raftstore.ApplyResult {
	idx := w.commitIndex() + 1
	ns := w.committed().Clone()
	err := raftstore.Apply(&ns, idx, cmd)
	if err != nil {
		ns = w.committed() // unchanged (shared: never written)
	}
	w.states = append(w.states, ns)
	w.log = append(w.log, simEntry{cmd: cmd, from: from, at: w.now})
	if w.leader != nil {
		w.leader.viewIdx = idx
	}
	if err != nil {
		w.tracef(from, "commit #%d %s REFUSED: %v", idx, simDescribe(cmd), err)
	} else {
		w.tracef(from, "commit #%d %s", idx, simDescribe(cmd))
		w.afterCommit(ns, cmd)
	}
	return raftstore.ApplyResult{Index: idx, Err: err}
}

// afterCommit follows the committed state for the checks and stats.
func (w *simWorld) afterCommit(st raftstore.State, cmd raftstore.Command) {
	switch c := cmd.(type) {
	case raftstore.ReportStatus:
		if c.Name == st.Leader.Holder {
			w.lastPrimaryLSN = max(w.lastPrimaryLSN, raftstore.PositionLSN(c.Status))
		}
	case raftstore.SetLeader:
		w.checkLag(c)
		if n := len(w.states); n >= 2 {
			if f := w.states[n-2].Failover; f != nil && f.Hard && c.Holder != "" && c.Holder == f.From {
				w.violate("%s elected back while its hard failover was pending", c.Holder)
			}
		}
		if c.Holder != "" && w.cfg.killElected > 0 && c.Cause != raftstore.CauseBootstrap && w.rng2.Float64() < w.cfg.killElected {
			// The new holder's host dies before it can renew.
			w.toKill = append(w.toKill, c.Holder)
		}
		switch {
		case c.Cause == raftstore.CauseRelease && strings.Contains(c.Reason, "hard failover requested"):
			w.stats.hardFailovers++
		case c.Cause == raftstore.CauseSwitchover:
			w.stats.switchovers++
		case c.Cause == raftstore.CauseManualFailover:
			w.stats.manualFailovers++
		}
		if c.Holder != "" {
			w.stats.elections++
			if strings.Contains(c.Reason, "before its lease ended") {
				w.stats.fastPaths++
			}
		}
	case raftstore.RenewLeader:
		w.stats.renewals++
		w.lastRenewed = c.Holder
	case raftstore.RemoveMember, raftstore.RegisterMember:
		w.membershipCommitted(cmd)
	}
}

func simDescribe(cmd raftstore.Command) string {
	switch c := cmd.(type) {
	case raftstore.RenewLeader:
		return fmt.Sprintf("RenewLeader %s@%d", c.Holder, c.Epoch)
	case raftstore.SetLeader:
		return fmt.Sprintf("SetLeader %q prev=%d/%d cause=%s (%s)", c.Holder, c.PrevEpoch, c.PrevRev, c.Cause, c.Reason)
	case raftstore.SetSync:
		return fmt.Sprintf("SetSync %s %v @%d", c.Primary, c.Standbys, c.Epoch)
	case raftstore.ReportStatus:
		return fmt.Sprintf("ReportStatus %s %s %s tl=%d lsn=%d/%d/%d", c.Name, c.Status.Role, c.Status.State,
			c.Status.Timeline, c.Status.WrittenLSN, c.Status.ReceivedLSN, c.Status.ReplayedLSN)
	case raftstore.SetFailover:
		if c.Request == nil {
			return "SetFailover clear (" + c.Reason + ")"
		}
		return fmt.Sprintf("SetFailover %+v", *c.Request)
	case raftstore.SetConfig:
		return fmt.Sprintf("SetConfig ttl=%s prev=%d", c.Config.TTL, c.PrevVersion)
	case raftstore.SetPause:
		return fmt.Sprintf("SetPause %v", c.Pause)
	}
	return fmt.Sprintf("%T", cmd)
}

// ---------------------------------------------------------------- network and Raft

func (w *simWorld) linkOK(from, to *simMember, kind int) bool {
	return from == to || w.cut[[4]int{from.i, to.i, kind}] == 0
}

func (w *simWorld) bidir(a, b *simMember, kind int) bool {
	return w.linkOK(a, b, kind) && w.linkOK(b, a, kind)
}

// raftReach: a leader and a peer exchange AppendEntries and replies.
func (w *simWorld) raftReach(l, m *simMember) bool {
	return m == l || (!m.left && m.responsive() && w.bidir(l, m, linkRaft))
}

// hasQuorum: l reaches a majority of the voters (the members that did
// not leave).
func (w *simWorld) hasQuorum(l *simMember) bool {
	if !l.responsive() || l.left {
		return false
	}
	n, voters := 0, 0
	for _, m := range w.mem {
		if m.left {
			continue
		}
		voters++
		if w.raftReach(l, m) {
			n++
		}
	}
	return n >= voters/2+1
}

// raftTick moves Raft leadership and the members' FSM views.
func (w *simWorld) raftTick() {
	if l := w.leader; l != nil {
		switch {
		case !l.alive || l.left:
			w.depose("leader died")
		case w.hasQuorum(l):
			w.weakSince = time.Time{}
		case w.weakSince.IsZero():
			w.weakSince = w.now
		case w.now.Sub(w.weakSince) >= 500*time.Millisecond: // LeaderLeaseTimeout
			w.depose("leader lost quorum")
		}
	}
	if w.transferTo != nil && w.leader != nil {
		to := *w.transferTo
		w.transferTo = nil
		var cand *simMember
		for _, m := range w.mem {
			if (to == "" && m != w.leader || m.name == to) && w.raftReach(w.leader, m) && m != w.leader && !m.left {
				cand = m
				break
			}
		}
		if cand != nil {
			w.depose("leadership transferred to " + cand.name)
			w.becomeLeader(cand)
		}
	}
	if w.leader == nil {
		if w.electAt.IsZero() {
			w.electAt = w.now.Add(time.Duration(300+w.rng.Intn(700)) * time.Millisecond)
		}
		if !w.now.Before(w.electAt) {
			var cands []*simMember
			for _, m := range w.mem {
				if w.hasQuorum(m) {
					cands = append(cands, m)
				}
			}
			if len(cands) == 0 {
				w.electAt = w.now.Add(time.Duration(200+w.rng.Intn(300)) * time.Millisecond)
			} else {
				w.becomeLeader(cands[w.rng.Intn(len(cands))])
			}
		}
	}
	ci := w.commitIndex()
	for _, m := range w.mem {
		if l := w.leader; !m.responsive() || l == nil || !w.hasQuorum(l) || !w.linkOK(m, l, linkAPI) || !w.linkOK(l, m, linkAPI) {
			m.disturbedAt = w.now
		}
		if l := w.leader; l != nil && w.raftReach(l, m) {
			m.lastContact = w.now
			if m.viewIdx < ci {
				switch r := w.rng.Intn(10); {
				case r < 6:
					m.viewIdx = ci
				case r < 8:
					m.viewIdx += uint64(w.rng.Int63n(int64(ci-m.viewIdx) + 1))
				}
			}
		}
	}
}

func (w *simWorld) depose(why string) {
	l := w.leader
	w.tracef(l.name, "raft: loses leadership (%s)", why)
	w.leader = nil
	w.weakSince = time.Time{}
	w.electAt = time.Time{}
	if l.coord != nil {
		l.coord.stopping = true
	}
}

func (w *simWorld) becomeLeader(m *simMember) {
	w.leader = m
	w.weakSince, w.electAt = time.Time{}, time.Time{}
	m.viewIdx = w.commitIndex() // Barrier: applies everything committed
	for _, o := range w.mem {
		o.lastContact = w.now
	}
	w.tracef(m.name, "raft: becomes leader")
}

// propose is a member's command forwarded to the Raft leader through the
// API (mu held). It may commit and reply, commit and lose the reply,
// commit later (after other members' commands), or be lost.
func (w *simWorld) propose(m *simMember, cmd raftstore.Command) (raftstore.ApplyResult, error) {
	w.stats.proposals++
	l := w.leader
	if l == nil {
		return raftstore.ApplyResult{}, errSimNoLeader
	}
	key := fmt.Sprintf("%s/%T", m.name, cmd)
	if t, ok := w.failedAt[key]; ok && t.Equal(w.now) {
		// A retry within the same instant (renewWhile beside an action)
		// meets the same network: fails again, draws nothing.
		return raftstore.ApplyResult{}, errSimUnreachable
	}
	fail := func(err error) (raftstore.ApplyResult, error) {
		w.failedAt[key] = w.now
		m.disturbedAt = w.now
		w.tracef(m.name, "propose %s: %v", simDescribe(cmd), err)
		return raftstore.ApplyResult{}, err
	}
	if l != m && !w.linkOK(m, l, linkAPI) {
		return fail(errSimUnreachable)
	}
	if !w.hasQuorum(l) {
		return fail(errSimNoQuorum)
	}
	replyLost := l != m && !w.linkOK(l, m, linkAPI)
	r := w.rng.Float64()
	switch {
	case r < w.cfg.pDrop:
		w.stats.dropped++
		return fail(errors.New("sim: command lost"))
	case r < w.cfg.pDrop+w.cfg.pDelay:
		w.stats.delayed++
		w.pendSeq++
		d := time.Duration(w.rng.Int63n(int64(2 * time.Second)))
		w.pending = append(w.pending, simPending{due: w.now.Add(d), seq: w.pendSeq, cmd: cmd, from: m.name})
		return fail(fmt.Errorf("sim: timed out (commits in %s)", d.Round(time.Millisecond)))
	case r < w.cfg.pDrop+w.cfg.pDelay+w.cfg.pLostReply:
		replyLost = true
	}
	res := w.commitLocked(cmd, m.name)
	if replyLost {
		w.stats.lostReplies++
		return fail(errSimReplyLost)
	}
	return res, nil
}

// deliverPending commits delayed proposals whose time has come, in
// order (mu held).
func (w *simWorld) deliverPending() {
	for {
		best := -1
		for i, p := range w.pending {
			if !p.due.After(w.now) && (best < 0 || p.due.Before(w.pending[best].due) ||
				p.due.Equal(w.pending[best].due) && p.seq < w.pending[best].seq) {
				best = i
			}
		}
		if best < 0 {
			return
		}
		p := w.pending[best]
		w.pending = append(w.pending[:best], w.pending[best+1:]...)
		if w.leader != nil && w.hasQuorum(w.leader) {
			w.tracef(p.from, "delayed command arrives")
			w.commitLocked(p.cmd, p.from)
		} else {
			w.tracef(p.from, "delayed command lost: %s", simDescribe(p.cmd))
		}
	}
}

// ---------------------------------------------------------------- store and proposer of a member

type simStore struct{ m *simMember }

var simNever = make(chan struct{})

func (s simStore) State() raftstore.State {
	w := s.m.w
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stateAt(s.m.viewIdx).Clone()
}

// Changes is what Supervisor.waitApplied waits on after a commit: the
// local FSM applies what the leader committed when this member is in
// contact with it. Cut off from Raft it applies nothing: waitApplied
// polls on the clock until contact returns or its deadline passes
// (retry_timeout of virtual time).
func (s simStore) Changes() <-chan struct{} {
	w := s.m.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.leader != nil && w.raftReach(w.leader, s.m) {
		s.m.viewIdx = w.commitIndex()
	}
	return simClosed
}

type simProposer struct{ m *simMember }

// Apply proposes cmd. Half the proposals that fail in a way a real
// client may wait out (the leader unreachable or without a quorum, the
// command lost or delayed, its reply lost: a partition or a lost packet,
// where a refused or reset connection fails at once; not "no leader",
// which api.Proposer returns at once) park, when they come from
// Supervisor.apply (a deadline on the clock in ctx) in a cycle, until
// that deadline: they take their retry_timeout of virtual time while the
// world runs on. The draw is from the third random source.
func (p simProposer) Apply(ctx context.Context, cmd raftstore.Command) (raftstore.ApplyResult, error) {
	w := p.m.w
	w.mu.Lock()
	res, err := w.propose(p.m, cmd)
	now := w.now
	deadline, ok := clockDeadline(ctx)
	wait := ok && err != nil && !errors.Is(err, errSimNoLeader) && p.m.cyc != nil && deadline.After(now) &&
		w.rng3.Intn(2) == 0
	w.mu.Unlock()
	if wait {
		<-simClock{w: w, m: p.m}.After(deadline.Sub(now))
	}
	return res, err
}

// ---------------------------------------------------------------- the coordinator, stepped

// simCoord runs the real Coordinator.lead in a goroutine, one loop
// iteration per step: the loop calls Changes() at the top of every
// iteration, where it parks until the driver steps it.
type simCoord struct {
	m        *simMember
	c        *Coordinator
	cancel   context.CancelFunc
	arrive   chan chan struct{}
	done     chan struct{}
	held     chan struct{}
	stopping bool      // Raft leadership lost: stop at the next chance
	dead     bool      // commands fail from now on
	next     time.Time // when the loop's wait ends (Coordinator.wakeAt)
	seenIdx  uint64
}

type simLeaderStore struct {
	simStore
	sc *simCoord
}

var simClosed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (s simLeaderStore) Changes() <-chan struct{} {
	step := make(chan struct{})
	s.sc.arrive <- step
	<-step
	return simClosed
}

func (s simLeaderStore) State() raftstore.State {
	w := s.m.w
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stateAt(s.m.viewIdx).Clone()
}

func (s simLeaderStore) IsLeader() bool {
	w := s.m.w
	w.mu.Lock()
	defer w.mu.Unlock()
	return !s.sc.dead && w.leader == s.m
}

func (s simLeaderStore) LeaderChanges() <-chan struct{} { return simNever }
func (s simLeaderStore) Barrier(context.Context) error  { return nil }
func (s simLeaderStore) PeerChanges() <-chan struct{}   { return nil }

func (s simLeaderStore) Apply(_ context.Context, cmd raftstore.Command) (raftstore.ApplyResult, error) {
	w := s.m.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if s.sc.dead || w.leader != s.m {
		return raftstore.ApplyResult{}, errSimNotLeader
	}
	if !w.hasQuorum(s.m) {
		w.tracef(s.m.name, "coordinator: %s: %v", simDescribe(cmd), errSimNoQuorum)
		return raftstore.ApplyResult{}, errSimNoQuorum
	}
	res := w.commitLocked(cmd, s.m.name)
	if w.rng.Float64() < w.cfg.pLostReply/2 {
		w.tracef(s.m.name, "coordinator: reply lost")
		return raftstore.ApplyResult{}, errSimReplyLost
	}
	return res, nil
}

func (s simLeaderStore) TransferLeadershipTo(_ context.Context, to string) error {
	w := s.m.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if s.sc.dead || w.leader != s.m {
		return errSimNotLeader
	}
	w.tracef(s.m.name, "raft: transfer leadership to %q", to)
	w.transferTo = &to
	return nil
}

func (s simLeaderStore) PeerUnreachable(member string) (time.Time, bool) {
	w := s.m.w
	w.mu.Lock()
	defer w.mu.Unlock()
	o, ok := w.by[member]
	if !ok || w.leader != s.m || w.raftReach(s.m, o) {
		return time.Time{}, false
	}
	return o.lastContact, true
}

// startCoord starts the real coordinator of m (the driver, mu not held).
func (w *simWorld) startCoord(m *simMember) {
	sc := &simCoord{m: m, arrive: make(chan chan struct{}), done: make(chan struct{})}
	store := simLeaderStore{simStore: simStore{m}, sc: sc}
	c := NewCoordinator(m.name, w.committed().Config, store, w.logger(m.name+"c"))
	c.clock = simClock{w: w}
	c.SetProbe(func(_ context.Context, member string) error {
		w.mu.Lock()
		defer w.mu.Unlock()
		o, ok := w.by[member]
		if !ok || !o.responsive() || !w.bidir(m, o, linkAPI) {
			return fmt.Errorf("sim: %s's API does not answer", member)
		}
		return nil
	})
	sc.c = c
	ctx, cancel := context.WithCancel(context.Background())
	sc.cancel = cancel
	go func() {
		defer close(sc.done)
		_ = c.lead(ctx)
	}()
	m.coord = sc
	w.mu.Lock()
	sc.next = w.now
	w.mu.Unlock()
	sc.wait()
}

// wait waits until the loop parks at its next iteration, or returns.
func (sc *simCoord) wait() {
	select {
	case h := <-sc.arrive:
		sc.held = h
	case <-sc.done:
		sc.held = nil
	}
}

// stepCoord runs one iteration of the coordinator's loop (mu not held).
func (w *simWorld) stepCoord(m *simMember) {
	sc := m.coord
	if sc.held == nil {
		return
	}
	w.stats.coordSteps++
	h := sc.held
	sc.held = nil
	close(h)
	sc.wait()
	sc.next = sc.c.wakeAt // the loop's own wait, read after it parked again
}

// stopCoord ends m's coordinator: its commands fail from now on, and its
// loop is run until it returns (mu not held).
func (w *simWorld) stopCoord(m *simMember) {
	sc := m.coord
	if sc == nil {
		return
	}
	w.mu.Lock()
	sc.dead = true
	w.mu.Unlock()
	sc.cancel()
	for sc.held != nil {
		h := sc.held
		sc.held = nil
		close(h)
		sc.wait()
	}
	<-sc.done
	m.coord = nil
}

// ---------------------------------------------------------------- logging

// simLogWriter puts the real code's log lines into the trace.
type simLogWriter struct {
	w    *simWorld
	name string
}

func (l simLogWriter) Write(p []byte) (int, error) {
	w := l.w
	// The clock is read without mu: log lines come from code that may run
	// while the driver holds it (never the other way round).
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w.tracef(l.name, "  log: %s", line)
	}
	return len(p), nil
}

func (w *simWorld) logger(name string) hclog.Logger {
	if w.trace == nil {
		return hclog.NewNullLogger()
	}
	var out io.Writer = simLogWriter{w: w, name: name}
	return hclog.New(&hclog.LoggerOptions{Output: out, Level: hclog.Info, DisableTime: true})
}
