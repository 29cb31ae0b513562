package failover

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"raftgres/pgmanager"
	"raftgres/raftstore"
)

// Logger names of this package.
const (
	SupervisorLoggerName  = "failover.supervisor"
	CoordinatorLoggerName = "failover.coordinator"
)

// Config is what the supervisor and coordinator need besides the FSM.
type Config struct {
	Member string
	Tags   raftstore.Tags
	// MaxCrashes is how many unexpected PostgreSQL exits in a row the
	// holder tolerates before releasing the leader key.
	MaxCrashes int
	// Watchdog arms a hardware watchdog while this member is primary.
	Watchdog WatchdogConfig
	// WatchdogDevice is that watchdog (internal/watchdog's Linux driver in
	// the agent); unused when Watchdog.Mode is off.
	WatchdogDevice Watchdog
}

// standby is the replication intent of the local server, derived from
// PostgreSQL where it can be; act (follow, promote, handOver, requests)
// sets it, and Decide reads it through the Observation.
type standby struct {
	upstream     string    // member the local standby follows ("" unknown)
	rewindFailed bool      // pg_rewind cannot bring the data onto the primary's timeline: reclone
	rewoundFails int       // starts that failed, or standbys that never streamed, right after a successful rewind
	rewound      bool      // the running standby was started right after a pg_rewind
	dataPos      Position  // a stopped data directory's position (pg_control), zero when unknown
	handedOver   bool      // shut down cleanly in a switchover: follow without rewind
	startFailed  bool      // the last start as a standby failed: check with pg_rewind
	notStreaming time.Time // since when a running standby has not been streaming
	slotsWaiting string    // the logical slots last said to wait for their copy, and why
}

// pacer paces the loop: a holder wakes for each renewal; when the round
// before was steady and nothing else woke it, it renews only (renewOnly,
// TestSteadyHolderRenewsWithoutLookingAtPostgres).
type pacer struct {
	timerWake bool             // the last wait ended on its timer, nothing else
	wasSteady bool             // the last full round ended steady
	lastLook  time.Time        // when the last full round looked at PostgreSQL
	lastPG    pgmanager.Status // what it saw
}

// reporter is the report step's state: when this member's own report was
// last acknowledged (a steady member reports every ReportInterval), and
// when each member's report last changed on this host's clock (freshness,
// TestSwitchoverCandidateFreshnessUsesThisHostsReportClock).
type reporter struct {
	last time.Time
	seen reportClock
	// slots are the permanent slots' positions here, as last seen: they
	// go with every report, and change no report's due time.
	slots []raftstore.SlotPosition
	// over is the key state whose lease had ended, on this host's clock,
	// before this round read PostgreSQL's status (leaseOver): a running
	// replica's report then carries it (quorum mode).
	over *raftstore.KeyRef
}

// Supervisor runs on every node: observe → decide → act → report, in one
// goroutine. Its state is grouped by owner: the lease (lease.go, shared
// with the commit gate and the fencer), the current epoch's term
// (holderTerm: the crash count and synchronous replication, syncmode.go),
// the postmaster's runs (pgRuns, crash.go), the replication intent
// (standby), the loop's pacing (pacer), reports (reporter) and callbacks.
type Supervisor struct {
	cfg      Config
	pg       Postgres
	store    Store
	proposer Proposer
	logger   hclog.Logger
	clock    Clock

	lease *lease
	// term is the state of the leader key's current epoch (term.go): the
	// crash count and the synchronous replication intent.
	term *holderTerm
	runs pgRuns
	// retry spaces the retries of a failed initdb, restore or clone.
	retry retryBackoff

	standby standby
	sysid   string

	confVersion uint64 // cluster config version last applied to postgres
	reporter    reporter
	runRole     raftstore.Role // role of the running postgres last seen: primary, replica, "" stopped
	lastRole    raftstore.Role // role it had when it last ran

	pacer pacer

	gateDownSince time.Time // since when this holder's commit gate has not been connected
	// gatePushed is the quorum rule the commit gate was last given (nil:
	// none yet in this process).
	gatePushed *quorumRule
	// keySeen is when this member first saw the key's current state
	// (leaseOver).
	keySeen struct {
		ref raftstore.KeyRef
		at  time.Time
	}
	// holderSeen is when this member first saw the key's current epoch
	// held by another member (Observation.PrimaryOverdue).
	holderSeen struct {
		epoch uint64
		at    time.Time
	}

	local atomic.Pointer[Local]
	reqs  chan request
	// act, when set, runs renewWhile's action instead of a goroutine
	// (runAction).
	act func(f func() error) <-chan error
	wd  Watchdog // nil when watchdog.mode is off (or automatic and unusable)
	// vip is the virtual address (vip.go); nil without one.
	vip *vipHolder
}

// NewSupervisor returns a supervisor; Run starts it.
func NewSupervisor(cfg Config, pg Postgres, store Store, proposer Proposer, logger hclog.Logger) *Supervisor {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if cfg.MaxCrashes == 0 {
		cfg.MaxCrashes = 3
	}
	sup := &Supervisor{cfg: cfg, pg: pg, store: store, proposer: proposer, logger: logger.Named(SupervisorLoggerName),
		clock: realClock{}, lease: newLease(), reqs: make(chan request),
		reporter: reporter{seen: reportClock{}}}
	if m := cfg.Watchdog.Mode; m == WatchdogAutomatic || m == WatchdogRequired {
		sup.wd = cfg.WatchdogDevice
		if sup.wd == nil {
			sup.wd = noWatchdog{}
		}
	}
	return sup
}

// Run loops until ctx ends, then stops PostgreSQL and, as holder, releases
// the leader key so a failover need not wait for the ttl. Beside the loop
// run the commit gate (acknowledges commits only under a valid lease) and
// the fencer (stops the postmaster at a lease's end).
func (s *Supervisor) Run(ctx context.Context) error {
	gctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		s.runFencer(gctx)
	}()
	go func() {
		defer wg.Done()
		if err := s.pg.RunGate(gctx, s.lease.End, s.lease.changes); err != nil {
			s.logger.Error("commit gate stopped", "error", err)
		}
	}()
	defer func() {
		cancel()
		wg.Wait()
	}()
	for {
		wait := s.cycle(ctx)
		if !s.waitNext(ctx, wait) {
			s.shutdown()
			return nil
		}
	}
}

// waitNext waits until the next cycle is due: after wait, when local
// PostgreSQL exits, or when the FSM changes in a way that matters to this
// member (leader key, config, sync set, pending switchover, the set of
// members: a new one needs its slot on the primary at once). Status
// reports of other members do not wake it: every cycle reports, so waking
// on reports would make the members drive each other in a loop.
// It returns false when ctx ended.
func (s *Supervisor) waitNext(ctx context.Context, wait time.Duration) bool {
	s.pacer.timerWake = false
	t := time.NewTimer(wait)
	defer t.Stop()
	last := relevant(s.store.State())
	for {
		changes, exited := s.store.Changes(), s.pg.Exited()
		st := s.store.State()
		s.seeKey(st, s.clock.Now())
		if relevant(st) != last {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-changes:
		case <-exited:
			return true
		case <-t.C:
			s.pacer.timerWake = true
			return true
		case r := <-s.reqs:
			err := s.serve(ctx, r.Request)
			if err != nil {
				s.logger.Warn("request failed", "request", r.Kind, "error", err)
			}
			r.done <- err
			return true
		}
	}
}

// stateKey is the part of the FSM whose change wakes a supervisor.
type stateKey struct {
	holder     string
	epoch      uint64
	version    uint64
	initialize string
	sync       string
	failover   raftstore.FailoverRequest
	// members: a member that registers needs its replication slot on the
	// primary before its standby can stream (TestNewMemberGetsItsSlotAtOnce).
	members string
}

func relevant(st raftstore.State) stateKey {
	k := stateKey{holder: st.Leader.Holder, epoch: st.Leader.Epoch, version: st.Config.Version,
		initialize: st.Initialize, sync: st.Sync.Primary + ":" + strings.Join(st.Sync.Standbys, ","),
		members: strings.Join(st.MemberNames(), ",")}
	if st.Failover != nil {
		k.failover = *st.Failover
	}
	return k
}

func (s *Supervisor) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := s.store.State()
	holder := st.Leader.Holder == s.cfg.Member
	_ = s.renewWhile(ctx, holder, func() error { s.beforeStop(ctx); return nil })
	if holder {
		if err := s.stopAndRelease(ctx, st, pgmanager.StopFast, "agent shut down"); err != nil {
			s.logger.Error("shutting down as primary", "error", err)
		}
	} else if err := s.pg.Stop(ctx, pgmanager.StopFast); err != nil {
		s.logger.Error("stop postgres on shutdown", "error", err)
	}
	if s.wd != nil && s.wd.Armed() && !s.pg.Running() {
		s.wd.Disarm()
		s.logger.Info("watchdog disarmed: postgres stopped")
	}
}

// watchGate gives the leader key up when the commit gate has not been
// connected for ttl while this holder's PostgreSQL runs as a primary
// under a valid lease: every commit waits for the gate, so without it
// (max_wal_senders exhausted, an hba or password change, a socket it
// cannot reach) writes would hang for good while the holder renews and
// /primary answers 200 (TestHolderWhoseGateCannotConnectReleasesTheKey).
// Released, the key goes to a member whose gate can work; paused, nothing
// is done automatically.
func (s *Supervisor) watchGate(ctx context.Context, st raftstore.State, pgst pgmanager.Status) {
	now := s.clock.Now()
	if st.Leader.Holder != s.cfg.Member || st.Config.Pause || !pgst.Running || pgst.InRecovery ||
		pgst.Error != "" || !s.lease.valid(st, s.cfg.Member, now) || s.pg.GateConnected() {
		s.gateDownSince = time.Time{}
		return
	}
	if s.gateDownSince.IsZero() {
		s.gateDownSince = now
		return
	}
	down := now.Sub(s.gateDownSince)
	if down < st.Config.TTL {
		return
	}
	s.gateDownSince = time.Time{}
	reason := fmt.Sprintf("commit gate not connected for %s: every commit waits for it", down.Round(time.Millisecond))
	s.logger.Error("giving up the leader key", "reason", reason,
		"hint", "check max_wal_senders, pg_hba.conf for the replication user on the local socket, and the gate's log lines")
	if err := s.stopAndRelease(ctx, st, pgmanager.StopFast, reason); err != nil {
		s.logger.Error("giving up the leader key", "error", err)
	}
}

// beforeStop runs postgresql.before_stop ahead of a planned stop of a
// running PostgreSQL (agent shutdown, a switchover's clean stop, a
// restart), never before fencing or an immediate stop. As in Patroni its
// failure is logged and the stop goes on.
func (s *Supervisor) beforeStop(ctx context.Context) {
	if !s.pg.Running() {
		return
	}
	if err := s.pg.Hook(ctx, pgmanager.BeforeStop); err != nil {
		s.logger.Warn("before_stop failed: stopping postgres anyway", "error", err)
	}
}

// stopAndRelease stops PostgreSQL, then gives the leader key up: stopped,
// then released, always in that order (a released key is elected on at
// once). When the stop fails the key is kept: the lease then ends on its
// own and the fencer and the commit gate take over.
func (s *Supervisor) stopAndRelease(ctx context.Context, st raftstore.State, mode pgmanager.StopMode, reason string) error {
	// Renewing through a clean stop keeps the commit gate confirming the
	// WAL flushed on the way down (and the fencer from cutting it short).
	stop := func() error { return s.pg.Stop(ctx, mode) }
	if err := s.renewWhile(ctx, st.Leader.Holder == s.cfg.Member, stop); err != nil {
		return fmt.Errorf("stop postgres before releasing the leader key: %w", err)
	}
	s.release(ctx, st, reason)
	return nil
}

// requestLoop is the loop's period while a switchover or failover
// request is due.
const requestLoop = 50 * time.Millisecond

// cycle runs one observe → decide → act → report round and returns how
// long to wait before the next one.
func (s *Supervisor) cycle(ctx context.Context) time.Duration {
	st := s.store.State()
	loopWait := st.Config.LoopWait
	if loopWait <= 0 {
		loopWait = time.Second
	}
	s.renew(ctx, st)
	if wait, ok := s.renewOnly(st); ok {
		return wait
	}
	s.reporter.over = s.leaseOver(st, s.clock.Now()) // before PostgreSQL is read
	sctx, cancel := s.leaseBound(ctx, st, max(st.Config.RetryTimeout, time.Second))
	pgst, err := s.pg.Status(sctx)
	cancel()
	if err != nil {
		s.logger.Warn("postgres status", "error", err)
		if pgst.Error == "" {
			pgst.Error = err.Error()
		}
	}
	term := s.termAt(st.Leader.Epoch)
	if crashed, fresh := s.runs.observe(pgst, s.pg.Running(), st.Config.TTL, s.clock.Now()); fresh || crashed {
		if fresh {
			term.crashes = 0
		}
		if crashed {
			term.crashes++
			s.logger.Warn("postgres exited unexpectedly", "crashes", term.crashes)
		}
	}
	s.readUpstream(st, pgst)
	s.watchStreaming(st, pgst)
	s.watchSource(st, pgst)
	o := s.observe(ctx, st, pgst)
	p := Decide(o)
	retryIn := s.retry.wait(p, s.clock.Now())
	if retryIn > 0 {
		s.logger.Debug("retrying a failed action later", "action", p.Steps(), "in", retryIn.Round(time.Millisecond))
		loopWait = min(loopWait, retryIn)
	} else if !p.Noop() {
		s.logger.Info("acting", "action", p.Steps(), "reason", p.Reason, "epoch", st.Leader.Epoch)
		err := s.execute(ctx, st, p)
		if err != nil {
			s.logger.Error("action failed", "action", p.Steps(), "error", err)
		}
		s.retry.done(p, err, s.clock.Now())
		if w := s.retry.wait(p, s.clock.Now()); w > 0 {
			s.logger.Warn("will retry after a pause", "action", p.Steps(), "in", w, "failures", s.retry.failures)
		}
		if after, err := s.pg.Status(ctx); err == nil || !after.Running {
			pgst = after
		}
		s.runs.acted(pgst.Running, s.clock.Now()) // stops we asked for are not crashes
	}
	s.tendWatchdog(ctx, s.store.State(), pgst)
	s.tendVIP(s.store.State(), pgst)
	s.watchGate(ctx, s.store.State(), pgst)
	s.callbacks(pgst)
	s.applyConfig(ctx, st, pgst)
	s.report(ctx, pgst)
	s.publish(s.store.State(), pgst)
	s.pacer.lastLook, s.pacer.lastPG = s.clock.Now(), pgst
	s.pacer.wasSteady = s.steady(st, p, pgst)
	if s.pacer.wasSteady {
		// Nothing to watch closely: look again at the next report, or
		// ttl/2 on (events still wake the loop at once:
		// a change of the leader key, config or sync set, a request,
		// PostgreSQL exiting; the holder also wakes for each renewal,
		// below).
		ri := st.Config.ReportInterval()
		loopWait = max(loopWait, min(steadyLook(st.Config), s.reporter.last.Add(ri).Sub(s.clock.Now())))
	}
	if f := st.Failover; f != nil && !s.clock.Now().Before(f.ScheduledAt) {
		// A switchover or failover is under way: its primary waits on
		// this member's reports (catching up, promoted), so report at
		// once rather than a loop_wait late.
		loopWait = min(loopWait, requestLoop)
	}
	if d := s.untilLeaseOver(st, s.clock.Now()); d > 0 && d < loopWait {
		// Quorum mode: report a position read after the holder's lease
		// ended as soon as it has (an election waits for it).
		loopWait = d
	}
	if st.Leader.Holder == s.cfg.Member && !s.lease.End().IsZero() {
		// Wake for the next renewal on time rather than up to a
		// loop_wait late (the coordinator's detection window counts
		// from the renewal interval).
		if next := s.untilRenewal(st, s.clock.Now()); next < loopWait {
			return max(next, time.Millisecond)
		}
	}
	return loopWait
}

// steady reports whether nothing is going on after this round: nothing
// was done, PostgreSQL runs in the role the Raft state gives this member
// (a standby streams from the holder), and no request is pending. The
// loop then looks at PostgreSQL every ttl/2 (steadyLook) or at the next
// report, whichever comes first: looking every loop_wait when
// nothing asked was most of an idle agent's own CPU. A change there
// (stopped streaming, new LSNs) reaches the Raft store up to ttl/2 later.
func (s *Supervisor) steady(st raftstore.State, p Plan, pgst pgmanager.Status) bool {
	if !p.Noop() || st.Failover != nil || !pgst.Running || pgst.Error != "" || s.curTerm().crashes > 0 {
		return false
	}
	if st.Leader.Holder == s.cfg.Member && st.Config.IsStandbyCluster() {
		return pgst.InRecovery && s.standby.upstream == SourceCluster
	}
	if st.Leader.Holder == s.cfg.Member {
		return !pgst.InRecovery
	}
	return pgst.InRecovery && pgst.WalReceiver == pgmanager.Streaming && s.standby.upstream == st.Leader.Holder
}

// renewOnly ends a round right after the renewal when only the renewal
// timer woke a steady holder and it looked at PostgreSQL less than ttl/2
// ago: the round would find what the last one found (PostgreSQL exiting,
// a change of the FSM and requests wake the loop, and a full round
// follows). It republishes the last status with the new lease, and says
// how long to wait.
func (s *Supervisor) renewOnly(st raftstore.State) (time.Duration, bool) {
	now := s.clock.Now()
	look := s.pacer.lastLook.Add(steadyLook(st.Config))
	if !s.pacer.timerWake || !s.pacer.wasSteady || st.Leader.Holder != s.cfg.Member || st.Failover != nil || !now.Before(look) {
		return 0, false
	}
	next := s.untilRenewal(st, now)
	if next == 0 {
		return 0, false // the renewal failed: a full round, as ever
	}
	s.publish(st, s.pacer.lastPG)
	return max(min(next, look.Sub(now)), time.Millisecond), true
}

// commit commits cmd and folds the command's refusal into the error.
func (s *Supervisor) commit(ctx context.Context, cmd raftstore.Command) (uint64, error) {
	return raftstore.Commit(ctx, s.proposer, cmd)
}

// callbacks runs postgresql.callbacks on what changed since the last
// cycle: on_start when postgres came up in the role it last had, on_stop
// when it went down, on_role_change when it runs in another role than
// before (promoted, or back as a replica after a demotion). A status that
// could not be read says nothing about the role.
func (s *Supervisor) callbacks(pgst pgmanager.Status) {
	var role raftstore.Role
	switch {
	case !pgst.Running:
	case pgst.Error != "" || pgst.SystemID == "":
		return
	case pgst.InRecovery:
		role = raftstore.RoleReplica
	default:
		role = raftstore.RolePrimary
	}
	prev := s.runRole
	s.runRole = role
	switch {
	case role == prev:
	case role == "":
		s.pg.Callback(pgmanager.OnStop, string(prev))
	case prev == "" && (s.lastRole == "" || s.lastRole == role):
		s.pg.Callback(pgmanager.OnStart, string(role))
	default:
		s.pg.Callback(pgmanager.OnRoleChange, string(role))
	}
	if role != "" {
		s.lastRole = role
	}
}

// feedWatchdog feeds an armed watchdog right after an acknowledged
// renewal, and only then: an agent that cannot renew stops feeding it, and
// one that freezes is reset before anyone else may be promoted
// (WatchdogTimeout). A renewal slower than FenceBudget/2 feeds nothing.
func (s *Supervisor) feedWatchdog(st raftstore.State) {
	if s.wd == nil || !s.wd.Armed() {
		return
	}
	sent, _, _, _ := s.lease.snapshot()
	if !s.lease.valid(st, s.cfg.Member, s.clock.Now()) || s.clock.Now().Sub(sent) > FenceBudget/2 {
		return
	}
	if err := s.wd.Keepalive(); err != nil {
		s.logger.Error("watchdog keepalive failed", "error", err)
	}
}

// tendWatchdog arms the watchdog while this member runs as primary under a
// valid lease and disarms it once it does not. In required mode a
// watchdog that cannot be armed means the primary stops and gives up the
// key; in automatic mode the member goes on without one.
func (s *Supervisor) tendWatchdog(ctx context.Context, st raftstore.State, pgst pgmanager.Status) {
	if s.wd == nil {
		return
	}
	primary := st.Leader.Holder == s.cfg.Member && pgst.Running && !pgst.InRecovery
	switch {
	case !primary && s.wd.Armed():
		s.wd.Disarm()
		s.logger.Info("watchdog disarmed: not primary any more")
	case primary && s.lease.valid(st, s.cfg.Member, s.clock.Now()) && !s.wd.Armed():
		timeout, ok := WatchdogTimeout(st.Config.TTL)
		err := fmt.Errorf("%w: ttl %s leaves no whole-second timeout (use ttl ≥ 5s)", ErrWatchdog, st.Config.TTL)
		if ok {
			err = s.wd.Arm(timeout)
		}
		if err == nil {
			s.feedWatchdog(st)
			s.logger.Info("watchdog armed", "device", s.wd.String(), "timeout", timeout)
			return
		}
		if s.cfg.Watchdog.Mode == WatchdogRequired {
			s.logger.Error("watchdog required but not armed: stopping postgres and giving up the leader key", "error", err)
			if serr := s.stopAndRelease(ctx, st, pgmanager.StopFast, "watchdog required: "+err.Error()); serr != nil {
				s.logger.Error("giving up the leader key", "error", serr)
			}
			return
		}
		s.logger.Warn("watchdog unusable: running without it (watchdog.mode automatic)", "error", err)
		s.wd = nil
	}
}

// readUpstream takes the member a running standby follows from the
// server itself (primary_conninfo), so an agent restart does not mistake
// a healthy replica for one following nobody
// (TestRestartedAgentLeavesAStreamingReplicaOfTheHolderAlone).
func (s *Supervisor) readUpstream(st raftstore.State, pgst pgmanager.Status) {
	if !pgst.Running || !pgst.InRecovery || pgst.Error != "" {
		return
	}
	s.standby.upstream = ""
	if sc := st.Config.StandbyCluster; sc != nil && st.Leader.Holder == s.cfg.Member &&
		(sc.Host == "" && pgst.UpstreamHost == "" ||
			sc.Host != "" && pgst.UpstreamHost == sc.Host && pgst.UpstreamPort == fmt.Sprint(sc.SourcePort())) {
		s.standby.upstream = SourceCluster
		return
	}
	if pgst.UpstreamAddr == "" {
		return
	}
	for _, name := range st.MemberNames() {
		if addr := st.Members[name].PGAddr; addr != "" && sameAddr(addr, pgst.UpstreamAddr) {
			s.standby.upstream = name
			return
		}
	}
}

func sameAddr(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil {
		return a == b
	}
	return pa == pb && (ha == hb || (isLoopback(ha) && isLoopback(hb)))
}

func isLoopback(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// watchStreaming flags a running standby of the current primary that has
// not streamed for two ttls, so Decide checks it for divergence.
func (s *Supervisor) watchStreaming(st raftstore.State, pgst pgmanager.Status) {
	// A standby that cannot even become consistent because its
	// walreceiver keeps failing (StreamFailing) is not streaming either.
	following := pgst.Running && pgst.InRecovery && (pgst.Error == "" || pgst.StreamFailing) &&
		s.standby.upstream != "" && s.standby.upstream == st.Leader.Holder
	now := s.clock.Now()
	switch {
	case !following || pgst.WalReceiver == pgmanager.Streaming:
		s.standby.notStreaming = time.Time{}
		if following {
			s.standby.rewoundFails, s.standby.rewound = 0, false
		}
	case s.standby.notStreaming.IsZero():
		s.standby.notStreaming = now
	case now.Sub(s.standby.notStreaming) > 2*st.Config.TTL && !s.standby.startFailed:
		s.logger.Warn("standby is not streaming from the primary", "primary", s.standby.upstream,
			"for", now.Sub(s.standby.notStreaming).Round(time.Millisecond))
		s.standby.startFailed = true
		if s.standby.rewound {
			// Started after a successful pg_rewind but never streams
			// (typically: the WAL it needs is gone from the new
			// primary): rewinding again does not heal that; after two
			// such rounds, reclone (as for a start that fails).
			s.standby.rewoundFails++
			if s.standby.rewoundFails >= 2 {
				s.logger.Warn("standby does not stream after pg_rewind: recloning", "primary", s.standby.upstream, "tries", s.standby.rewoundFails)
				s.standby.rewindFailed = true
			}
		}
	}
}

func (s *Supervisor) observe(ctx context.Context, st raftstore.State, pgst pgmanager.Status) Observation {
	has := s.pg.HasDataDir()
	if !has {
		s.sysid = ""
	} else if pgst.SystemID != "" {
		s.sysid = pgst.SystemID
	} else if s.sysid == "" {
		if id, err := s.pg.SystemID(ctx); err == nil {
			s.sysid = id
		}
	}
	// A stopped data directory's position, from pg_control: adoption
	// compares it (TestDecideAdoption), a follower's rewind checks it; reported too.
	s.standby.dataPos = Position{}
	if has && (!pgst.Running || pgst.Error != "") && (st.Initialize == "" || st.Leader.Holder != s.cfg.Member) {
		if cd, err := s.pg.ControlData(ctx); err == nil {
			s.standby.dataPos = ControlPosition(cd)
		}
	}
	now := s.clock.Now()
	overdue := false
	if h := st.Leader.Holder; h != "" && h != s.cfg.Member {
		if s.holderSeen.epoch != st.Leader.Epoch || s.holderSeen.at.IsZero() {
			s.holderSeen.epoch, s.holderSeen.at = st.Leader.Epoch, now
		}
		m, ok := st.Members[h]
		up := ok && leads(st, m.Status)
		overdue = (!up || !s.freshMembers(st)[h]) && now.Sub(s.holderSeen.at) >= st.Config.TTL
	}
	return Observation{
		Member: s.cfg.Member, Tags: s.cfg.Tags, State: st, PG: pgst, Data: s.standby.dataPos, Voters: s.voters(st),
		HasData: has, DataSystemID: s.sysid, Standby: s.pg.IsStandbyConfigured(), Upstream: s.standby.upstream,
		LeaseValid: s.lease.valid(st, s.cfg.Member, now), PrimaryOverdue: overdue,
		RewindFailed: s.standby.rewindFailed, Crashes: s.termAt(st.Leader.Epoch).crashes, MaxCrashes: s.cfg.MaxCrashes,
		SwitchoverDue: s.switchoverDue(st, now.Round(0)), HandedOver: s.standby.handedOver, StandbyStartFailed: s.standby.startFailed,
	}
}

// protocolVoters are the members CheckProtocol counts: the Raft voters
// when the store can say (a voter that has not registered yet holds the
// protocol at 0), else the registered members.
func (s *Supervisor) protocolVoters(st raftstore.State) []string {
	if v := s.raftVoters(); len(v) > 0 {
		return v
	}
	return st.MemberNames()
}

// voters names the Raft voters while the cluster is not initialised:
// adoption waits for each to report its data directory
// (TestDecideAdoption). Nil when
// the store cannot say.
func (s *Supervisor) voters(st raftstore.State) []string {
	if st.Initialize != "" {
		return nil
	}
	return s.raftVoters()
}

// raftVoters are the voters of the Raft configuration, nil when the store
// cannot say.
func (s *Supervisor) raftVoters() []string {
	rs, ok := s.store.(interface {
		Status() (raftstore.Status, error)
	})
	if !ok {
		return nil
	}
	status, err := rs.Status()
	if err != nil {
		return nil
	}
	var out []string
	for _, srv := range status.Servers {
		if srv.Suffrage == "Voter" {
			out = append(out, srv.ID)
		}
	}
	return out
}

// desired builds the PostgreSQL settings to follow primary ("" = none).
// synchronous_standby_names is always part of it (the commit gate on
// every member), so no reload or restart can drop it.
func (s *Supervisor) desired(st raftstore.State, primary string, replica bool) (pgmanager.Desired, error) {
	d := pgmanager.Desired{ClusterParams: st.Config.PostgreSQL.Parameters, Replica: replica, SyncStandbyNames: s.syncNames(st)}
	if primary == "" {
		return d, nil
	}
	if primary == SourceCluster {
		sc := st.Config.StandbyCluster
		if sc == nil {
			return d, fmt.Errorf("following the source cluster: this is no longer a standby cluster")
		}
		return sourceDesired(d, sc), nil
	}
	m, ok := st.Members[primary]
	if !ok || m.PGAddr == "" {
		return d, fmt.Errorf("postgres address of %s unknown", primary)
	}
	up, err := pgmanager.ParseUpstream(primary, m.PGAddr)
	if err != nil {
		return d, err
	}
	// In a standby cluster every member's upstream is itself a standby.
	up.Cascade = st.Config.IsStandbyCluster()
	d.Standby = &up
	if st.Config.PostgreSQL.UseSlots {
		d.Slot = pgmanager.SlotName(s.cfg.Member)
	}
	return d, nil
}

// desiredOrReadOnly is desired, or when primary's address is unknown a
// read-only server following nobody yet.
func (s *Supervisor) desiredOrReadOnly(st raftstore.State, primary string) pgmanager.Desired {
	d, err := s.desired(st, primary, true)
	if err != nil {
		d, _ = s.desired(st, "", true)
	}
	return d
}

// holderActions run while the lease is renewed beside them: a promotion
// waiting for replay or a start in crash recovery must not lose the key
// for taking longer than the lease (and if renewals fail, the fencer
// stops the server at the lease's end).
var holderActions = map[ActionKind]bool{ActInit: true, ActStartPrimary: true, ActStartStandby: true,
	ActPromote: true, ActRecordInit: true}

// standbyLeaderActions run under renewals too on a standby cluster's
// holder: the first copy of the source, and a rewind or a new copy onto
// it, last as long as the data is large, and a lease lost meanwhile would
// hand the key on (and the fencer stop the server just started).
var standbyLeaderActions = map[ActionKind]bool{ActClone: true, ActReclone: true, ActFollow: true}

func (s *Supervisor) execute(ctx context.Context, st raftstore.State, p Plan) error {
	s.reportBusy(ctx, p)
	for _, a := range p.Actions {
		do := func() error { return s.do(ctx, st, a, p.Reason) }
		var err error
		if st.Leader.Holder == s.cfg.Member && (holderActions[a.Kind] || st.Config.IsStandbyCluster() && standbyLeaderActions[a.Kind]) {
			err = s.renewWhile(ctx, true, do)
			if err != nil && a.Kind != ActInit && a.Kind != ActRecordInit && !errors.Is(err, ErrLeaseShort) {
				t := s.curTerm()
				t.crashes++
				s.logger.Warn("postgres did not come up as the leader", "action", a.Kind, "failures", t.crashes,
					"max", s.cfg.MaxCrashes)
			}
		} else {
			err = do()
		}
		if err != nil {
			return fmt.Errorf("%s: %w", a.Kind, err)
		}
	}
	return nil
}

// reportBusy tells the cluster, before a long action that stops or
// replaces the local server, that this member cannot be promoted now, so
// an election does not pick a member busy in pg_rewind or a clone.
func (s *Supervisor) reportBusy(ctx context.Context, p Plan) {
	var state raftstore.PGState
	for _, a := range p.Actions {
		switch {
		case a.Kind == ActFollow && a.Rewind:
			state = raftstore.StateRewinding
		case a.Kind == ActReclone:
			state = raftstore.StateCloning
		}
	}
	if state == "" {
		return
	}
	ms := raftstore.MemberStatus{State: state, Role: raftstore.RoleReplica, SystemID: s.sysid}
	if err := s.sendReport(ctx, ms); err != nil {
		s.logger.Warn("report status", "state", state, "error", err)
	}
}

// sendReport commits ms as this member's status, stamped now.
func (s *Supervisor) sendReport(ctx context.Context, ms raftstore.MemberStatus) error {
	return s.sendReportOver(ctx, ms, nil)
}

// sameRef reports whether m's last report carried over.
func sameRef(m *raftstore.Member, over *raftstore.KeyRef) bool {
	if m == nil || m.LeaseOver == nil || over == nil {
		return over == nil && (m == nil || m.LeaseOver == nil)
	}
	return *m.LeaseOver == *over
}

// sendReportOver is sendReport with the key state whose lease had ended
// before ms was read (quorum mode; nil for none).
func (s *Supervisor) sendReportOver(ctx context.Context, ms raftstore.MemberStatus, over *raftstore.KeyRef) error {
	now := s.clock.Now()
	ms.ReportedAt = now.UTC()
	rs := raftstore.ReportStatus{Name: s.cfg.Member, Status: ms, LeaseOver: over}
	// Slot and source positions need protocol 2 of every member
	// (raftstore's CheckProtocol would refuse the whole report otherwise).
	st := s.store.State()
	p2 := false
	if len(st.Config.Slots) > 0 || ms.SourceLSN != 0 || !ms.SourceAt.IsZero() {
		p, _ := st.MinProtocol(s.protocolVoters(st))
		p2 = p >= 2
	}
	if len(st.Config.Slots) > 0 && p2 {
		rs.Slots = s.reporter.slots
	}
	if !p2 {
		rs.Status.SourceLSN, rs.Status.SourceAt = 0, time.Time{}
	}
	if err := s.apply(ctx, rs); err != nil {
		return err
	}
	s.reporter.last = now
	return nil
}

// reportDue reports whether ms must be sent: it differs from the status
// the FSM holds for this member, or the last report is ReportInterval
// old (so that the coordinator keeps counting this member as fresh).
// Unchanged reports are otherwise skipped: each is a Raft commit.
func (s *Supervisor) reportDue(st raftstore.State, ms raftstore.MemberStatus, now time.Time) bool {
	m, ok := st.Members[s.cfg.Member]
	if !ok || s.reporter.last.IsZero() || now.Sub(s.reporter.last) >= st.Config.ReportInterval() {
		return true
	}
	cur := m.Status
	cur.ReportedAt, ms.ReportedAt = time.Time{}, time.Time{}
	return cur != ms
}

// leaseLeft is how long this holder's lease still runs (0 when none).
func (s *Supervisor) leaseLeft(st raftstore.State) time.Duration {
	now := s.clock.Now()
	if !s.lease.valid(st, s.cfg.Member, now) {
		return 0
	}
	return s.lease.End().Sub(now)
}

func (s *Supervisor) do(ctx context.Context, st raftstore.State, a Action, reason string) error {
	now := s.clock.Now().UTC()
	switch a.Kind {
	case ActAcquireBootstrap:
		return s.apply(ctx, raftstore.SetLeader{Holder: s.cfg.Member, PrevEpoch: st.Leader.Epoch, PrevRev: st.Leader.Rev,
			Reason: "bootstrap: " + reason, Cause: raftstore.CauseBootstrap, Actor: s.cfg.Member, At: now,
			Rules: raftstore.RulesSyncKey})
	case ActInit:
		d, _ := s.desired(st, "", false)
		id, err := s.pg.Init(ctx, d)
		if err != nil {
			return err
		}
		s.sysid = id
		return s.apply(ctx, raftstore.Initialize{SystemID: id, Actor: s.cfg.Member, At: now})
	case ActRecordInit:
		id, err := s.pg.SystemID(ctx)
		if err != nil {
			return err
		}
		return s.apply(ctx, raftstore.Initialize{SystemID: id, Actor: s.cfg.Member, At: now})
	case ActClone, ActReclone:
		d, err := s.desired(st, a.From, true)
		if err != nil {
			return err
		}
		if a.From == SourceCluster {
			if err := s.checkSourceOrStop(ctx, st, d); err != nil {
				return err
			}
		}
		s.sysid, s.standby.rewindFailed, s.standby.rewoundFails, s.standby.rewound = "", false, 0, false
		// A new copy has not failed to start yet: without this, a
		// reclone after a failed start was rewound at once, failed, and
		// recloned a second time.
		s.standby.startFailed, s.standby.notStreaming = false, time.Time{}
		if a.Kind == ActReclone {
			if err := s.pg.Stop(ctx, pgmanager.StopImmediate); err != nil {
				return err
			}
			return s.pg.Reclone(ctx, d)
		}
		return s.pg.Clone(ctx, d)
	case ActStartPrimary:
		// Writable only with enough lease left to be fenced on time; the
		// commit gate holds every commit until then anyway.
		if left := s.leaseLeft(st); left < FenceBudget {
			return fmt.Errorf("%w: %s of lease left, need %s to start as primary", ErrLeaseShort, left, FenceBudget)
		}
		d, _ := s.desired(st, "", false)
		s.standby.upstream = ""
		return s.pg.Start(ctx, d)
	case ActStartStandby:
		d := s.desiredOrReadOnly(st, a.Primary)
		s.standby.upstream = a.Primary
		err := s.pg.Start(ctx, d)
		s.standby.startFailed = err != nil && a.Primary != ""
		return err
	case ActPromote:
		return s.promote(ctx, st)
	case ActDemote:
		mode := pgmanager.StopImmediate
		if a.Mode == "fast" {
			mode = pgmanager.StopFast
		}
		return s.pg.Stop(ctx, mode)
	case ActFollow:
		return s.follow(ctx, st, a)
	case ActRelease:
		mode := pgmanager.StopFast
		if a.Mode == "immediate" {
			mode = pgmanager.StopImmediate
		}
		return s.stopAndRelease(ctx, st, mode, reason)
	case ActRefuse:
		s.logger.Error("refusing to touch the local data", "reason", reason)
		return nil
	case ActHandOver:
		return s.handOver(ctx, st, a.Primary)
	}
	return fmt.Errorf("unknown action %q", a.Kind)
}

// ErrLeaseShort means a holder action needing a lease was not started
// because too little of it was left; the next cycle renews first.
var ErrLeaseShort = errors.New("lease too short")

// promote promotes the local standby. synchronous_standby_names already
// names the commit gate (it is in every member's managed config), so the
// first commit after the promotion waits until the gate connects under
// this member's lease.
func (s *Supervisor) promote(ctx context.Context, st raftstore.State) error {
	if s.wd != nil && s.cfg.Watchdog.Mode == WatchdogRequired {
		if err := s.wd.Usable(); err != nil {
			if rerr := s.stopAndRelease(ctx, st, pgmanager.StopFast, "watchdog required: "+err.Error()); rerr != nil {
				s.logger.Error("giving up the leader key", "error", rerr)
			}
			return err
		}
	}
	if left := s.leaseLeft(st); left < FenceBudget {
		return fmt.Errorf("%w: %s of lease left, need %s to promote", ErrLeaseShort, left, FenceBudget)
	}
	// The gate must be in the running server's setting before it becomes
	// writable (a server started before this agent, or by an older one).
	pgst, err := s.pg.Status(ctx)
	if err != nil {
		return fmt.Errorf("read the commit gate's setting before promoting: %w", err)
	}
	if pgst.SyncStandbyNames != s.syncNames(st) {
		d, _ := s.desired(st, "", true)
		if err := s.pg.SetSynchronousStandbyNames(ctx, d); err != nil {
			return fmt.Errorf("set the commit gate before promoting: %w", err)
		}
	}
	if refused, err := s.prePromote(ctx, st); refused || err != nil {
		return err
	}
	// The keeper must know this lease's end before the server is
	// writable (the fencer goroutine hands it over too, but later).
	s.pg.FenceAt(s.lease.End())
	s.standby.upstream = ""
	if err := s.pg.Promote(ctx); err != nil {
		return err
	}
	if !s.lease.valid(s.store.State(), s.cfg.Member, s.clock.Now()) {
		// The fencer stops it too; say why here.
		s.logger.Warn("lease ended while promoting: stopping postgres")
		return s.pg.Stop(ctx, pgmanager.StopImmediate)
	}
	return nil
}

// PrePromoteFailed starts the reason of the release that follows a failed
// postgresql.pre_promote: the coordinator's next election passes the
// releasing member over (PromotionRefusedBy).
const PrePromoteFailed = "pre_promote failed"

// prePromote runs postgresql.pre_promote, bounded by its timeout and by
// what is left of the lease, so a hook that hangs never holds the key
// past it. When the hook fails (or times out) the key is released with
// PostgreSQL left as it is, a read-only standby, and refused is true.
// err is set when the lease did not outlast a hook that succeeded.
func (s *Supervisor) prePromote(ctx context.Context, st raftstore.State) (refused bool, err error) {
	hctx, cancel := s.leaseBound(ctx, st, s.leaseLeft(st))
	herr := s.pg.Hook(hctx, pgmanager.PrePromote)
	cancel()
	if herr != nil {
		reason := PrePromoteFailed + ": " + herr.Error()
		s.logger.Error("not promoting: giving up the leader key", "reason", reason)
		s.release(ctx, st, reason)
		return true, nil
	}
	if left := s.leaseLeft(s.store.State()); left < FenceBudget {
		return false, fmt.Errorf("%w: %s of lease left after pre_promote, need %s to promote", ErrLeaseShort, left, FenceBudget)
	}
	return false, nil
}

func (s *Supervisor) follow(ctx context.Context, st raftstore.State, a Action) error {
	d, err := s.desired(st, a.Primary, true)
	if err != nil {
		return err
	}
	if s.pg.Running() && !a.Rewind {
		s.standby.upstream = a.Primary
		return s.pg.Follow(ctx, d)
	}
	if a.Primary == SourceCluster && a.Rewind {
		if err := s.checkSourceOrStop(ctx, st, d); err != nil {
			return err
		}
	}
	s.standby.handedOver, s.standby.startFailed, s.standby.notStreaming = false, false, time.Time{}
	if err := s.pg.Stop(ctx, pgmanager.StopFast); err != nil {
		return err
	}
	if a.Rewind {
		if err := s.pg.Rewind(ctx, d); err != nil {
			if errors.Is(err, pgmanager.ErrRewindFailed) {
				s.standby.rewindFailed = true
			}
			return err
		}
	}
	s.standby.upstream = a.Primary
	s.standby.rewound = a.Rewind
	if err := s.pg.Start(ctx, d); err != nil {
		if a.Rewind && errors.Is(err, pgmanager.ErrCannotStream) {
			// Rewound, but the WAL (or timeline history) it must replay
			// from is gone from the source: a second rewind would start
			// from the same checkpoint. Reclone.
			s.logger.Warn("standby cannot stream after pg_rewind: recloning", "primary", a.Primary, "error", err)
			s.standby.rewindFailed, s.standby.startFailed = true, true
			return err
		}
		if a.Rewind {
			// A start that fails after a successful rewind for another
			// reason does not heal by rewinding again either: after two in
			// a row, reclone
			// (TestStandbyFailingToStartAfterRewindIsRecloned).
			s.standby.rewoundFails++
			if s.standby.rewoundFails >= 2 {
				s.logger.Warn("standby does not start after pg_rewind: recloning", "primary", a.Primary, "tries", s.standby.rewoundFails)
				s.standby.rewindFailed = true
			}
		}
		s.standby.startFailed = true
		return err
	}
	return nil
}

// release gives the leader key up (compare-and-set against our last
// renewal). Call it only with PostgreSQL stopped (stopAndRelease) or
// still a standby (prePromote): never with a primary.
func (s *Supervisor) release(ctx context.Context, st raftstore.State, reason string) {
	epoch, rev := st.Leader.Epoch, st.Leader.Rev
	if _, _, le, lr := s.lease.snapshot(); le == epoch && lr > rev {
		rev = lr // our last renewal, which the local FSM may not show yet
	}
	s.lease.forget()
	err := s.apply(ctx, raftstore.SetLeader{Holder: "", PrevEpoch: epoch, PrevRev: rev,
		Reason: "released by " + s.cfg.Member + ": " + reason, Cause: raftstore.CauseRelease, Actor: s.cfg.Member, At: s.clock.Now().UTC(),
		Rules: raftstore.RulesSyncKey})
	if err != nil {
		s.logger.Warn("release leader key", "error", err)
		return
	}
	s.lease.reset()
	s.curTerm().crashes = 0
	s.logger.Info("leader key released", "reason", reason, "epoch", epoch)
}

// apply commits cmd, giving up after retry_timeout (no later than the
// lease allows, leaseBound) on the supervisor's clock: a request stuck on
// an unreachable leader must not hold the loop (and the member's status
// reports) for longer. The deadline also travels in ctx (clockDeadline)
// for a proposer that waits on the same clock: the simulator's parks
// until it, so a command that times out takes its retry_timeout of
// virtual time.
func (s *Supervisor) apply(ctx context.Context, cmd raftstore.Command) error {
	st := s.store.State()
	timeout := st.Config.RetryTimeout
	if timeout <= 0 {
		timeout = time.Second
	}
	d := s.leaseBudget(st, timeout)
	deadline := s.clock.Now().Add(d)
	ctx, cancel := context.WithTimeout(context.WithValue(ctx, clockDeadlineKey{}, deadline), d)
	defer cancel()
	idx, err := s.commit(ctx, cmd)
	if err != nil || !actedOn(cmd) {
		return err
	}
	return s.waitApplied(ctx, idx, deadline)
}

// clockDeadlineKey carries, in the context of a proposal apply makes, its
// deadline on the supervisor's clock.
type clockDeadlineKey struct{}

// clockDeadline is the deadline on the supervisor's clock that ctx
// carries, if any.
func clockDeadline(ctx context.Context) (time.Time, bool) {
	t, ok := ctx.Value(clockDeadlineKey{}).(time.Time)
	return t, ok
}

// actedOn reports whether the supervisor acts on cmd's effect once it is
// committed (the synchronous record before changing the setting, the
// leader key, requests, the system identifier): apply then waits until
// the local store shows it. These are the commands the Raft leader
// follows with a barrier, so a follower applies them within a round trip.
// A status report is not waited for: a follower learns its commit up to
// two CommitTimeouts later, and the loop, which also renews the lease,
// must not stall on it.
func actedOn(cmd raftstore.Command) bool {
	switch cmd.(type) {
	case raftstore.SetSync, raftstore.SetLeader, raftstore.SetFailover, raftstore.Initialize:
		return true
	}
	return false
}

// waitApplied waits until the local FSM has applied the entry at idx, or
// until deadline on the supervisor's clock (polled through Clock.After,
// so the simulator runs the wait in virtual time): the supervisor acts on
// its own writes (a narrowed synchronous record before changing
// synchronous_standby_names, a released key) only once its next look at
// the store shows them, never on a view that still lacks them.
func (s *Supervisor) waitApplied(ctx context.Context, idx uint64, deadline time.Time) error {
	for {
		changed := s.store.Changes()
		if s.store.State().Index >= idx {
			return nil
		}
		now := s.clock.Now()
		if !now.Before(deadline) {
			return fmt.Errorf("committed at index %d but not yet applied here: %w", idx, context.DeadlineExceeded)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("committed at index %d but not yet applied here: %w", idx, ctx.Err())
		case <-changed:
		case <-s.clock.After(min(deadline.Sub(now), 50*time.Millisecond)):
		}
	}
}

// report records the local status in the FSM (and, on a primary, keeps
// a replication slot for every other member and synchronous replication
// with the commit gate in place). A status that could not be read says
// nothing about the role: nothing is reported then.
func (s *Supervisor) report(ctx context.Context, pgst pgmanager.Status) {
	st := s.store.State()
	ms := raftstore.MemberStatus{State: raftstore.StateStopped, Role: raftstore.RoleReplica, SystemID: s.sysid}
	switch {
	case !s.pg.HasDataDir():
		ms.Role = raftstore.RoleUninitialized
	case pgst.Running && pgst.Error != "":
		return
	case !pgst.Running:
		ms.Timeline, ms.ReplayedLSN = s.standby.dataPos.Timeline, s.standby.dataPos.LSN
	case pgst.Running:
		ms.State = raftstore.StateRunning
		ms.Timeline, ms.Version, ms.PendingRestart = pgst.Timeline, pgst.Version, pgst.PendingRestart
		ms.ReceivedLSN, ms.ReplayedLSN = pgst.ReceivedLSN, pgst.ReplayedLSN
		switch {
		case !pgst.InRecovery:
			ms.Role, ms.WrittenLSN = raftstore.RolePrimary, pgst.CurrentLSN
			s.ensureSlots(ctx, st, true)
			if st.Leader.Holder == s.cfg.Member {
				s.manageSync(ctx, st, pgst)
			}
		case st.Config.IsStandbyCluster() && st.Leader.Holder == s.cfg.Member:
			// The standby leader keeps its cascade's slots; the
			// permanent slots are the source's business until a
			// promote-cluster.
			ms.Role, ms.SourceLSN, ms.SourceAt = raftstore.RoleStandbyLeader, pgst.SourceLSN, pgst.SourceAt
			s.ensureSlots(ctx, st, false)
			s.restartpointOnNewTimeline(ctx, pgst)
		case st.Config.IsStandbyCluster():
			s.reporter.slots = nil
		default:
			s.syncStandbySlots(ctx, st, pgst)
		}
	}
	// A position read after the lease ended counts in a quorum election
	// only when it is the end of the WAL the replica holds: it received
	// by streaming since it started (the walreceiver starts only after
	// replay used up the local WAL), or its replay waits for WAL that no
	// source has (a restarted standby whose primary is gone).
	var over *raftstore.KeyRef
	if pgst.Running && pgst.InRecovery && pgst.Error == "" && (pgst.ReceivedLSN > 0 || pgst.ReplayExhausted) {
		over = s.reporter.over
	}
	if !s.reportDue(st, ms, s.clock.Now()) && sameRef(st.Members[s.cfg.Member], over) {
		return
	}
	if err := s.sendReportOver(ctx, ms, over); err != nil {
		s.logger.Warn("report status", "error", err)
	}
}

// restartpointOnNewTimeline asks the standby leader for a restartpoint
// while pg_control still names an older timeline than the one it
// replays (after a rewind onto the source, or the source's failover):
// until then a pg_rewind of its own replicas against it finds "no rewind
// required" though they diverged, and they are cloned again instead.
func (s *Supervisor) restartpointOnNewTimeline(ctx context.Context, pgst pgmanager.Status) {
	if pgst.CheckpointTimeline == 0 || pgst.Timeline <= pgst.CheckpointTimeline {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, restartpointTimeout)
	defer cancel()
	if err := s.pg.Checkpoint(cctx); err != nil {
		s.logger.Warn("restartpoint on the new timeline", "timeline", pgst.Timeline, "error", err)
	}
}

func (s *Supervisor) ensureSlots(ctx context.Context, st raftstore.State, permanent bool) {
	if !st.Config.PostgreSQL.UseSlots && (len(st.Config.Slots) == 0 || !permanent) {
		s.reporter.slots = nil
		return
	}
	var want []pgmanager.Slot
	if st.Config.PostgreSQL.UseSlots {
		keep, absent := SlotMembers(st, s.cfg.Member, s.clock.Now())
		if t := s.curTerm(); !slices.Equal(t.absent, absent) {
			if len(absent) > 0 {
				s.logger.Warn("members absent longer than member_slots_ttl: their replication slots go, and with them the WAL kept for them; "+
					"back, they catch up from the WAL archive or are cloned again", "members", strings.Join(absent, ","), "member_slots_ttl", st.Config.SlotsTTL())
			}
			t.absent = absent
		}
		for _, name := range keep {
			want = append(want, pgmanager.Slot{Name: pgmanager.SlotName(name), Type: pgmanager.SlotPhysical})
		}
	}
	var perm []pgmanager.Slot
	if permanent {
		perm = s.permanentSlots(st)
	}
	want = append(want, perm...)
	// Without use_slots raftgres drops no slot; ignore_slots are never
	// its to drop.
	keepSlot := func(h pgmanager.SlotState) bool {
		return !st.Config.PostgreSQL.UseSlots || st.Config.Ignored(h.Name, raftstore.SlotType(h.Type), h.Database, h.Plugin)
	}
	sctx, cancel := s.leaseBound(ctx, st, max(st.Config.RetryTimeout, time.Second))
	defer cancel()
	have, err := s.pg.EnsureSlots(sctx, want, keepSlot)
	if err != nil {
		s.logger.Warn("replication slots", "error", err)
		return
	}
	s.reporter.slots = slotPositions(have, perm)
}

// permanentSlots are the slots: of the cluster's config, but for one
// named as a member's slot (the member's slot wins; said once per term).
func (s *Supervisor) permanentSlots(st raftstore.State) []pgmanager.Slot {
	members := map[string]bool{}
	for name := range st.Members {
		members[pgmanager.SlotName(name)] = true
	}
	var out []pgmanager.Slot
	var clash []string
	for _, name := range slices.Sorted(maps.Keys(st.Config.Slots)) {
		if members[name] {
			clash = append(clash, name)
			continue
		}
		p := st.Config.Slots[name]
		out = append(out, pgmanager.Slot{Name: name, Type: string(p.Type), Database: p.Database, Plugin: p.Plugin})
	}
	if t := s.curTerm(); !slices.Equal(t.slotClash, clash) {
		if len(clash) > 0 {
			s.logger.Warn("permanent slots named as a member's replication slot are not kept: rename them", "slots", strings.Join(clash, ","))
		}
		t.slotClash = clash
	}
	return out
}

// slotPositions are the positions of the permanent slots among have.
func slotPositions(have []pgmanager.SlotState, perm []pgmanager.Slot) []raftstore.SlotPosition {
	var out []raftstore.SlotPosition
	for _, h := range have {
		if slices.ContainsFunc(perm, func(p pgmanager.Slot) bool { return p.Name == h.Name && p.Type == h.Type }) {
			out = append(out, raftstore.SlotPosition{Name: h.Name, Type: raftstore.SlotType(h.Type), LSN: h.LSN})
		}
	}
	return out
}

// slotSyncTimeout bounds a standby's slot upkeep in one look (advancing a
// logical slot decodes the WAL since its last position).
const slotSyncTimeout = 10 * time.Second

// restartpointTimeout bounds the wait for a standby leader's restartpoint
// (the report path waits for it). One not done by then goes on in the
// checkpointer; the next report asks again while pg_control still names
// the older timeline.
const restartpointTimeout = 10 * time.Second

// syncStandbySlots keeps the permanent slots on this streaming standby
// near the positions the primary last reported (pgmanager's
// SyncStandbySlots), and restarts the standby when it copied a logical
// slot's state from the primary: PostgreSQL 15 loads slots only at start.
// Paused, the copy waits for the next restart.
func (s *Supervisor) syncStandbySlots(ctx context.Context, st raftstore.State, pgst pgmanager.Status) {
	holder := st.Leader.Holder
	hm, ok := st.Members[holder]
	if len(st.Config.Slots) == 0 || holder == "" || holder == s.cfg.Member || !ok || hm.PGAddr == "" {
		s.reporter.slots = nil
		return
	}
	src, err := pgmanager.ParseUpstream(holder, hm.PGAddr)
	if err != nil {
		s.logger.Warn("permanent slots: primary's address", "error", err)
		return
	}
	primaryLSN := map[string]uint64{}
	for _, p := range hm.Slots {
		primaryLSN[p.Name] = p.LSN
	}
	perm := s.permanentSlots(st)
	sctx, cancel := context.WithTimeout(ctx, slotSyncTimeout)
	defer cancel()
	res, err := s.pg.SyncStandbySlots(sctx, perm, primaryLSN, src, pgst.ReplayedLSN)
	if err != nil {
		s.logger.Warn("permanent slots on this standby", "error", err)
		return
	}
	s.reporter.slots = slotPositions(res.Slots, perm)
	if w := fmt.Sprint(res.Waiting); len(res.Waiting) > 0 && w != s.standby.slotsWaiting {
		s.logger.Info("logical slots not yet copied from the primary", "waiting", w)
		s.standby.slotsWaiting = w
	}
	if len(res.Copied) == 0 {
		return
	}
	if st.Config.Pause {
		s.logger.Warn("paused: the logical slots copied from the primary load at the next restart of this standby", "slots", strings.Join(res.Copied, ","))
		return
	}
	upstream := s.standby.upstream
	if upstream == "" {
		upstream = holder
	}
	d, err := s.desired(st, upstream, true)
	if err != nil {
		s.logger.Warn("permanent slots: restart to load the copied slots", "error", err)
		return
	}
	s.logger.Info("restarting this standby so that PostgreSQL loads the logical slots copied from the primary", "slots", strings.Join(res.Copied, ","))
	s.beforeStop(ctx)
	if err := s.pg.Restart(ctx, d); err != nil {
		s.logger.Warn("restart to load the copied logical slots", "error", err)
	}
	s.runs.acted(s.pg.Running(), s.clock.Now())
}

// steadyLook is how often a steady member looks at PostgreSQL: ttl/2,
// whatever the report interval, so that a change there (a standby that
// stopped streaming, seen by the primary) still reaches the Raft store
// within ttl/2.
func steadyLook(c raftstore.ClusterConfig) time.Duration { return c.TTL / 2 }
