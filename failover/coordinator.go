package failover

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"raftgres/raftstore"
)

// Coordinator runs leader duties while this node is the Raft leader: it
// seeds the cluster config, counts the leader key's lease down on its own
// monotonic clock and elects a new primary when the lease expires. Being
// Raft leader authorises nothing by itself: every decision is a committed
// compare-and-set command.
type Coordinator struct {
	member string
	seed   raftstore.ClusterConfig
	store  LeaderStore
	logger hclog.Logger
	clock  Clock

	lastNoCandidate time.Time // when "no eligible candidate" was last logged

	// probe, when set, asks whether a member's API answers: the path the
	// holder's renewals take. Raft's heartbeats missing a holder whose API
	// answers (only the Raft port cut) do not make it lost.
	// wakeAt is when the leader loop's last wait ends (when nothing
	// wakes it before): the simulator steps the loop then.
	wakeAt time.Time

	probe       func(ctx context.Context, member string) error
	probeOKAt   time.Time // when the holder last answered a probe
	probeLogged time.Time // when "answers over HTTP" was last logged
}

// SetProbe sets the check that a member's API answers (api.Proposer.Probe
// in the agent). Call it before Run.
func (c *Coordinator) SetProbe(probe func(ctx context.Context, member string) error) { c.probe = probe }

// NewCoordinator returns a coordinator; seed is bootstrap.dcs.
func NewCoordinator(member string, seed raftstore.ClusterConfig, store LeaderStore, logger hclog.Logger) *Coordinator {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &Coordinator{member: member, seed: seed, store: store, logger: logger.Named(CoordinatorLoggerName), clock: realClock{}}
}

// Run follows Raft leadership until ctx ends: leader duties start after a
// Barrier on every gain and stop at once on every loss.
func (c *Coordinator) Run(ctx context.Context) error {
	var stop func() // stops the running leader duties, nil when none run
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	for {
		changed := c.store.LeaderChanges()
		leader := c.store.IsLeader()
		switch {
		case leader && stop == nil:
			stop = c.startDuties(ctx)
		case !leader && stop != nil:
			c.logger.Info("lost raft leadership: stopping leader duties")
			stop()
			stop = nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

// startDuties runs lead in a goroutine and returns the function that
// cancels it and waits for it to return.
func (c *Coordinator) startDuties(ctx context.Context) func() {
	lctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			err := c.lead(lctx)
			if lctx.Err() != nil {
				return
			}
			c.logger.Error("leader duties failed, retrying", "error", err)
			select {
			case <-lctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}()
	return func() {
		cancel()
		wg.Wait()
	}
}

// memberSeen is when this host last saw a member's status change.
type memberSeen struct {
	reportedAt time.Time // the member's own timestamp, compared for change only
	seenAt     time.Time // this host's monotonic clock
}

// reportClock times, on this host's monotonic clock, when each member's
// reported status last changed, so that freshness never compares clocks of
// different hosts. A member first seen counts as just reported.
type reportClock map[string]memberSeen

// observe records the members' current reports at now and forgets members
// that left.
func (rc reportClock) observe(st raftstore.State, now time.Time) {
	for name, m := range st.Members {
		if s, ok := rc[name]; !ok || !s.reportedAt.Equal(m.Status.ReportedAt) {
			rc[name] = memberSeen{reportedAt: m.Status.ReportedAt, seenAt: now}
		}
	}
	for name := range rc {
		if _, ok := st.Members[name]; !ok {
			delete(rc, name)
		}
	}
}

// fresh returns the members whose report changed within d before now.
func (rc reportClock) fresh(now time.Time, d time.Duration) map[string]bool {
	out := make(map[string]bool, len(rc))
	for name, s := range rc {
		out[name] = now.Sub(s.seenAt) < d
	}
	return out
}

// fresh returns the members that count as alive for an election or for
// Raft leadership: their report changed within StaleAfter, and Raft's
// heartbeats to them do not fail (this coordinator runs on the Raft
// leader, so it hears of a lost host long before its reports go stale).
func (c *Coordinator) fresh(st raftstore.State, seen reportClock, now time.Time) map[string]bool {
	out := seen.fresh(now, st.Config.StaleAfter())
	for name, ok := range out {
		if ok && name != c.member {
			if _, unreachable := c.store.PeerUnreachable(name); unreachable {
				out[name] = false
			}
		}
	}
	return out
}

func (c *Coordinator) lead(ctx context.Context) error {
	bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := c.store.Barrier(bctx)
	cancel()
	if err != nil {
		return fmt.Errorf("barrier: %w", err)
	}
	if err := c.seedConfig(ctx); err != nil {
		return fmt.Errorf("seed cluster config: %w", err)
	}
	established := c.clock.Now()
	c.logger.Info("leader duties started")
	st := c.store.State()
	lease := startCountdown(st, established)
	seen := reportClock{}
	var lastMove time.Time // last attempt to move raft leadership elsewhere
	loggedRecovering := false
	wake := time.NewTimer(time.Hour)
	defer wake.Stop()
	for {
		changes, peers := c.store.Changes(), c.store.PeerChanges()
		st = c.store.State()
		now := c.clock.Now()
		seen.observe(st, now)
		lease.observe(st, now)
		lastChange := lease.lastChange
		if c.shouldElect(st, now, lease.until) {
			if waiting := Recovering(st); len(waiting) > 0 && now.Sub(established) < st.Config.StaleAfter() {
				if !loggedRecovering {
					loggedRecovering = true
					c.logger.Info("raft store recovered: waiting for the survivors' first reports before electing",
						"waiting_for", waiting, "at_most", (st.Config.StaleAfter() - now.Sub(established)).Round(time.Millisecond).String())
				}
			} else {
				c.elect(ctx, st, seen, now, "")
			}
		} else if lost, why := c.holderLost(ctx, st, now, lastChange); lost {
			c.elect(ctx, st, seen, now, why)
		}
		c.clearFulfilled(ctx, st)
		if why, to := RaftLeaderPlacement(st, c.member, c.fresh(st, seen, now)); why != "" &&
			st.Failover == nil && now.Sub(established) > st.Config.TTL && now.Sub(lastMove) >= st.Config.TTL {
			// Not during a switchover: its hand-over would be cut off.
			lastMove = now
			tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := c.store.TransferLeadershipTo(tctx, to)
			cancel()
			if err != nil {
				c.logger.Info("could not move raft leadership", "why", why, "to", to, "error", err)
			} else {
				c.logger.Info("moved raft leadership", "why", why, "to", to)
			}
		}
		wait := c.nextWake(st, c.clock.Now(), lastChange, lease.until)
		c.wakeAt = c.clock.Now().Add(wait)
		wake.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-changes:
		case <-peers:
		case <-wake.C:
		}
	}
}

// nextWake is how long the coordinator may sleep when no event (an FSM
// change, a peer's reachability changing) wakes it: until the holder's
// lease or the fast path's detection could next fire, and at most
// loop_wait (kept between 100ms and 1s) for the rest (a retried election,
// reports going stale, Raft leadership placement). Polling every 100ms
// was a tenth of the Raft leader host's idle CPU.
func (c *Coordinator) nextWake(st raftstore.State, now, lastRenewal, leaseUntil time.Time) time.Duration {
	wait := min(max(st.Config.LoopWait, 100*time.Millisecond), time.Second)
	if st.Config.Pause || st.Initialize == "" || st.Leader.Holder == "" {
		return wait
	}
	deadlines := []time.Time{leaseUntil}
	if fastPath(st) {
		lastContact, unreachable := c.store.PeerUnreachable(st.Leader.Holder)
		deadlines = append(deadlines, HolderLostAt(st, lastRenewal, unreachable, lastContact))
	}
	for _, d := range deadlines {
		wait = min(wait, d.Sub(now))
	}
	return max(wait, time.Millisecond)
}

// RaftLeaderPlacement says whether the Raft leader (member) should hand
// Raft leadership on, and to whom ("" lets Raft choose). Losing the host
// that runs the primary and the Raft leader costs a Raft election on top
// of the failover; losing the recorded synchronous standby's host while it
// leads Raft stalls every commit until a new Raft leader can narrow Sync.
// The best Raft leader is a fresh member that is neither.
func RaftLeaderPlacement(st raftstore.State, member string, fresh map[string]bool) (why, to string) {
	busy := func(name string) bool {
		// A member of a quorum set stalls no commit when lost.
		return name == st.Leader.Holder || (st.Config.SynchronousMode && st.Sync.QuorumNeed() == 0 &&
			slices.Contains(st.Sync.Standbys, name))
	}
	if st.Leader.Holder == "" || !busy(member) {
		return "", ""
	}
	for _, name := range st.MemberNames() {
		if name != member && fresh[name] && !busy(name) {
			to = name
			break
		}
	}
	switch {
	case member == st.Leader.Holder:
		return "this host runs the primary", to
	case to != "":
		return "this host runs the synchronous standby", to
	}
	return "", "" // a synchronous standby with nowhere better to go stays
}

// holderLost decides the fast path of synchronous mode: the holder is
// known to be gone before its lease ends, and a recorded synchronous
// standby may be promoted at once. lastRenewal is when this coordinator
// applied the key's last acquire or renewal (or took office, if later).
func (c *Coordinator) holderLost(ctx context.Context, st raftstore.State, now, lastRenewal time.Time) (bool, string) {
	lastContact, unreachable := time.Time{}, false
	if st.Leader.Holder != "" {
		lastContact, unreachable = c.store.PeerUnreachable(st.Leader.Holder)
	}
	lost, why := HolderLost(st, now.Sub(lastRenewal), unreachable, now.Sub(lastContact))
	if !lost || !unreachable || c.probe == nil {
		return lost, why
	}
	if renewalsStopped, _ := HolderLost(st, now.Sub(lastRenewal), false, 0); renewalsStopped {
		return lost, why
	}
	// Only Raft's heartbeats say it is gone. Its renewals travel over
	// the API: if that answers, the holder is cut off from Raft only and
	// keeps renewing; failing over would be needless
	// (TestFastPathAsksTheRenewalPathBeforeFiring).
	w := st.Config.Detection()
	if now.Sub(c.probeOKAt) < w {
		return false, ""
	}
	pctx, cancel := context.WithTimeout(ctx, min(w, 300*time.Millisecond))
	err := c.probe(pctx, st.Leader.Holder)
	cancel()
	if err != nil {
		return lost, why + "; its API does not answer either"
	}
	c.probeOKAt = c.clock.Now()
	if now.Sub(c.probeLogged) >= st.Config.TTL {
		c.probeLogged = now
		c.logger.Warn("holder unreachable over Raft but its API answers: not failing over before its lease ends",
			"holder", st.Leader.Holder, "raft", why)
	}
	return false, ""
}

// HolderLost is the pure rule of synchronous mode's fast failover. Every
// commit the holder acknowledged is on its recorded synchronous standby,
// and once that standby is promoted the holder's synchronous_standby_names
// (FIRST 2 (gate, standby)) can never be satisfied again: promoting it
// before the old lease ends loses nothing and lets nothing be
// acknowledged twice. The holder counts as lost when, with detection
// window w,
//   - Raft's heartbeats to it fail (connection refused or reset, or no
//     answer within the heartbeat deadline) and neither Raft contact nor
//     a renewal happened for w, or
//   - it renewed nothing for its renewal interval plus a loop_wait plus w
//     (a renewal can be a loop_wait late).
//
// Outside synchronous mode, when paused, or when no standby is recorded
// for the holder, the lease is always awaited.
func HolderLost(st raftstore.State, sinceRenewal time.Duration, unreachable bool, sinceContact time.Duration) (bool, string) {
	if !fastPath(st) {
		return false, ""
	}
	c := renewalConfig(st)
	w := c.Detection()
	switch {
	case unreachable && sinceContact >= w && sinceRenewal >= w:
		return true, fmt.Sprintf("%s unreachable over Raft for %s", st.Leader.Holder, sinceContact.Round(time.Millisecond))
	case sinceRenewal >= c.RenewInterval()+c.LoopWait+w:
		return true, fmt.Sprintf("%s renewed nothing for %s", st.Leader.Holder, sinceRenewal.Round(time.Millisecond))
	}
	return false, ""
}

// Recovering names the members still in the status a Raft recovery gave
// them (raftstore.StateRecovering): after `raftgres recover`, the first
// election waits for their reports (at most StaleAfter from taking
// office) so that the most advanced survivor is promoted, not the first
// to start.
func Recovering(st raftstore.State) []string {
	var out []string
	for _, name := range st.MemberNames() {
		if st.Members[name].Status.State == raftstore.StateRecovering {
			out = append(out, name)
		}
	}
	return out
}

// fastPath reports whether synchronous mode's fast path may apply: not
// paused, a holder, and a synchronous standby recorded for it that holds
// every commit (not a quorum set: which of its members does is known
// only from positions read after the lease ended).
func fastPath(st raftstore.State) bool {
	c := st.Config
	return !c.Pause && c.SynchronousMode && st.Initialize != "" && st.Leader.Holder != "" &&
		st.Sync.Primary == st.Leader.Holder && len(st.Sync.Standbys) > 0 && st.Sync.QuorumNeed() == 0
}

// renewalConfig is the config whose renewal interval the holder may still
// be on: the ttl of its last renewal when that is longer than the one in
// force (it learns a lowered ttl a moment after this coordinator, and a
// renewal it was late by that much is no sign of its loss).
func renewalConfig(st raftstore.State) raftstore.ClusterConfig {
	c := st.Config
	c.TTL = st.LeaseTTL()
	return c
}

// HolderLostAt is the earliest time at which HolderLost can turn true
// with no new renewal and no change of the holder's reachability (the
// coordinator's wake-up for the fast path; fastPath must hold).
func HolderLostAt(st raftstore.State, lastRenewal time.Time, unreachable bool, lastContact time.Time) time.Time {
	c := renewalConfig(st)
	w := c.Detection()
	at := lastRenewal.Add(c.RenewInterval() + c.LoopWait + w)
	if unreachable {
		rule1 := lastRenewal
		if lastContact.After(rule1) {
			rule1 = lastContact
		}
		if rule1 = rule1.Add(w); rule1.Before(at) {
			at = rule1
		}
	}
	return at
}

func (c *Coordinator) shouldElect(st raftstore.State, now, leaseUntil time.Time) bool {
	if st.Config.Pause || st.Initialize == "" {
		return false
	}
	return st.Leader.Holder == "" || !now.Before(leaseUntil)
}

// leaseCountdown is the coordinator's count of the holder's lease, on its
// own clock: a renewal applied at t, made under ttl T, lets the holder's
// lease run until at most t + T. The countdown ends at the latest such
// end over the epoch's renewals, and never before this leadership was
// established plus the longest ttl any renewal of the epoch carried. A
// ttl lowered later shortens nothing already given
// (TestLoweredTTLDoesNotShortenAGivenLease), and neither does a late
// renewal made under a shorter ttl, committed after one made under a
// longer ttl (TestLateRenewalUnderAShorterTTLDoesNotShortenTheCountdown).
type leaseCountdown struct {
	epoch, rev uint64
	lastChange time.Time // when the key's last acquire or renewal was seen applied
	until      time.Time // when the holder's lease has ended for certain
}

func startCountdown(st raftstore.State, established time.Time) leaseCountdown {
	return leaseCountdown{epoch: st.Leader.Epoch, rev: st.Leader.Rev, lastChange: established,
		until: established.Add(st.LeaseTTL())}
}

// observe counts a newly applied acquire or renewal seen at now.
func (l *leaseCountdown) observe(st raftstore.State, now time.Time) {
	if st.Leader.Epoch == l.epoch && st.Leader.Rev == l.rev {
		return
	}
	end := now.Add(max(st.Config.TTL, st.Leader.TTL))
	if st.Leader.Epoch != l.epoch || end.After(l.until) {
		l.until = end // a new epoch: the old holder's lease is not the new one's
	}
	l.epoch, l.rev, l.lastChange = st.Leader.Epoch, st.Leader.Rev, now
}

// elect chooses and commits a new primary. lost, when set, says why the
// holder is known to be gone before its lease ended (synchronous mode's
// fast path, HolderLost).
func (c *Coordinator) elect(ctx context.Context, st raftstore.State, seen reportClock, now time.Time, lost string) {
	fresh := c.fresh(st, seen, now)
	reason := "no primary"
	switch {
	case lost != "":
		reason = "holder lost before its lease ended: " + lost
	case st.Leader.Holder != "":
		reason = "leader key of " + st.Leader.Holder + " expired"
	}
	exclude := st.Leader.Holder
	hard := st.Failover != nil && st.Failover.Hard
	if hard {
		// A drill of a crash: the old holder stopped immediate and
		// released the key; the others' own positions decide, as after a
		// crash, and it is not elected back.
		exclude, reason = st.Failover.From, "hard failover from "+st.Failover.From+" ("+reason+")"
	}
	refused := PromotionRefusedBy(st)
	if !hard && refused != "" {
		exclude, reason = refused, reason+"; "+refused+" refused the promotion ("+PrePromoteFailed+")"
	}
	in := ElectionInput{Fresh: fresh, Exclude: exclude, Reason: reason, Actor: c.member}
	cmd, ok := raftstore.SetLeader{}, false
	if f := st.Failover; f != nil && f.Kind == raftstore.KindFailover && f.To != "" {
		// A manual failover names the member to promote; if it cannot be
		// promoted safely, the ordinary election decides.
		req := in
		req.Candidate, req.Reason = f.To, "manual failover to "+f.To+" ("+reason+")"
		if cmd, ok = Elect(st, req); !ok {
			c.logger.Warn("manual failover candidate not eligible", "candidate", f.To,
				"ranking", RankCandidates(st, req))
		}
		cmd.Cause = raftstore.CauseManualFailover
	}
	if !ok {
		cmd, ok = Elect(st, in)
		cmd.Cause = raftstore.CauseFailover
		if st.Leader.Epoch == 0 {
			cmd.Cause = raftstore.CauseElection // nobody ever held the key
		}
	}
	if !ok && !hard && refused != "" {
		// Nobody else can be promoted: the member whose pre_promote
		// failed may try again rather than leave the cluster without a
		// primary.
		retry := in
		retry.Exclude = ""
		cmd, ok = Elect(st, retry)
		cmd.Cause = raftstore.CauseFailover
	}
	if !ok && hard && st.Leader.Holder == "" {
		// Nobody but the old holder can be promoted: the drill ends
		// here, and the next round's ordinary election may elect it
		// back rather than leave the cluster without a primary.
		c.logger.Warn("hard failover: no eligible candidate but the old primary: dropping the request",
			"from", st.Failover.From, "ranking", RankCandidates(st, in))
		c.dropRequest(ctx, st.Failover, "hard failover: no eligible candidate but "+st.Failover.From)
		return
	}
	if !ok {
		// The cluster has no primary and nobody can be promoted: say why,
		// at most every ttl.
		if now.Sub(c.lastNoCandidate) >= st.Config.TTL {
			c.lastNoCandidate = now
			c.logger.Warn("no eligible candidate", "reason", reason,
				"ranking", RankCandidates(st, ElectionInput{Fresh: fresh, Exclude: exclude}))
		}
		return
	}
	cmd.At = now.UTC()
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := raftstore.Commit(actx, c.store, cmd); err != nil {
		c.logger.Warn("election not committed", "candidate", cmd.Holder, "error", err)
		return
	}
	c.lastNoCandidate = time.Time{}
	c.logger.Info("new primary elected", "member", cmd.Holder, "epoch", cmd.PrevEpoch+1, "reason", reason,
		"fast_path", lost != "")
}

func (c *Coordinator) seedConfig(ctx context.Context) error {
	if c.store.State().Bootstrap {
		return nil
	}
	idx, err := raftstore.Commit(ctx, c.store, raftstore.Bootstrap{Config: c.seed, Actor: c.member, At: c.clock.Now().UTC()})
	if err != nil && !errors.Is(err, raftstore.ErrAlreadyBootstrapped) {
		return err
	}
	c.logger.Info("cluster config seeded from bootstrap.dcs", "raft_index", idx)
	return nil
}

// clearFulfilled drops a switchover request whose primary no longer holds
// the key (done, or overtaken by a failover): the holder's own clean-up
// may have failed in a Raft leader change. A hard failover is done the
// same way: once another member holds the key (From released it, and
// nobody holds it meanwhile, so it stays pending until the election).
func (c *Coordinator) clearFulfilled(ctx context.Context, st raftstore.State) {
	f := st.Failover
	if f == nil || st.Leader.Holder == "" {
		return
	}
	switch {
	case f.From != "" && st.Leader.Holder != f.From:
	case f.Kind == raftstore.KindFailover && f.To != "" && st.Leader.Holder == f.To:
	default:
		return
	}
	c.dropRequest(ctx, f, string(f.Kind)+" done: "+st.Leader.Holder+" holds the key")
}

// dropRequest clears the request f, and only that one: a compare-and-set
// on the request read, so a newer one is never cleared (raftstore's
// TestSetFailoverComparesAndSets).
func (c *Coordinator) dropRequest(ctx context.Context, f *raftstore.FailoverRequest, reason string) {
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := raftstore.Commit(actx, c.store, raftstore.SetFailover{Actor: c.member, CAS: true, Prev: f,
		Reason: reason, At: c.clock.Now().UTC()})
	if err != nil {
		c.logger.Warn("clear failover request", "reason", reason, "error", err)
	}
}

// PromotionRefusedBy names the member that released the leader key
// because its postgresql.pre_promote failed, while the key is still
// unheld since: the next election passes it over, unless nobody else
// can be promoted. "" otherwise.
func PromotionRefusedBy(st raftstore.State) string {
	if st.Leader.Holder != "" {
		return ""
	}
	for i := len(st.History) - 1; i >= 0; i-- {
		e := st.History[i]
		if e.Kind != raftstore.EventLeader {
			continue
		}
		if e.Cause == raftstore.CauseRelease && e.Actor != "" &&
			strings.HasPrefix(e.Reason, "released by "+e.Actor+": "+PrePromoteFailed) {
			return e.Actor
		}
		return ""
	}
	return ""
}
