package failover

import (
	"context"
	"errors"
	"fmt"
	"strings"
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
	// Watchdog arms a Linux watchdog while this member is primary.
	Watchdog WatchdogConfig
}

// Supervisor runs on every node: observe → decide → act → report.
type Supervisor struct {
	cfg      Config
	pg       Postgres
	store    Store
	proposer Proposer
	logger   hclog.Logger

	lastAck      time.Time // send time of the last acknowledged renewal (monotonic)
	ackEpoch     uint64
	ackRev       uint64 // Raft index of that renewal: the key's rev after it
	upstream     string
	rewindFailed bool
	crashes      int
	sysid        string
	wasRunning   bool
	runningSince time.Time   // when postgres was last seen starting to run
	handedOver   bool        // shut down cleanly in a switchover: follow without rewind
	startFailed  bool        // the last start as a standby failed: check with pg_rewind
	notStreaming time.Time   // since when a running standby has not been streaming
	syncNames    string      // synchronous_standby_names as last set here
	confVersion  uint64      // cluster config version last applied to postgres
	seen         reportClock // when each member's report last changed
	runRole      string      // role of the running postgres last seen: primary, replica, "" stopped
	lastRole     string      // role it had when it last ran

	local atomic.Pointer[Local]
	reqs  chan request
	wd    *watchdog // nil when watchdog.mode is off (or automatic and unusable)
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
		reqs: make(chan request), seen: reportClock{}}
	if m := cfg.Watchdog.Mode; m == WatchdogAutomatic || m == WatchdogRequired {
		sup.wd = &watchdog{device: cfg.Watchdog.Device}
	}
	return sup
}

// Margin is the holder's safety margin for ttl: the lease ends ttl−margin
// after the send time of the last acknowledged renewal, so that it ends
// before the coordinator's countdown (ttl from when it applied that
// renewal) even with fencing time and clock-rate error. The rule
// margin ≥ FenceBudget + 2·ρ·ttl is checked by raftstore's config
// validation (raftstore.MinMargin).
func Margin(ttl time.Duration) time.Duration { return ttl / 3 }

// FenceBudget bounds the time from the lease's end to PostgreSQL refusing
// writes: no call the supervisor makes while holding a lease outlives the
// lease by more than half of it (leaseBound), and an immediate stop takes
// effect when the signal lands.
const FenceBudget = raftstore.FenceBudget

// leaseBound gives a call at most d, and never more than what is left of
// this holder's lease (but at least FenceBudget/2): fencing at the lease's
// end must not wait for a renewal or report stuck on a lost network.
func (s *Supervisor) leaseBound(ctx context.Context, st raftstore.State, d time.Duration) (context.Context, context.CancelFunc) {
	if st.Leader.Holder == s.cfg.Member && !s.lastAck.IsZero() {
		d = min(d, max(time.Until(s.leaseEnd(st)), FenceBudget/2))
	}
	return context.WithTimeout(ctx, d)
}

// Run loops until ctx ends, then stops PostgreSQL and, as holder, releases
// the leader key so a failover need not wait for the ttl.
func (s *Supervisor) Run(ctx context.Context) error {
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
// member (leader key, config, sync set, pending switchover). Status
// reports of other members do not wake it: every cycle reports, so waking
// on reports would make the members drive each other in a loop.
// It returns false when ctx ended.
func (s *Supervisor) waitNext(ctx context.Context, wait time.Duration) bool {
	t := time.NewTimer(wait)
	defer t.Stop()
	last := relevant(s.store.State())
	for {
		changes, exited := s.store.Changes(), s.pg.Exited()
		if relevant(s.store.State()) != last {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-changes:
		case <-exited:
			return true
		case <-t.C:
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
}

func relevant(st raftstore.State) stateKey {
	k := stateKey{holder: st.Leader.Holder, epoch: st.Leader.Epoch, version: st.Config.Version,
		initialize: st.Initialize, sync: st.Sync.Primary + ":" + strings.Join(st.Sync.Standbys, ",")}
	if st.Failover != nil {
		k.failover = *st.Failover
	}
	return k
}

func (s *Supervisor) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.pg.Stop(ctx, pgmanager.StopFast); err != nil {
		s.logger.Error("stop postgres on shutdown", "error", err)
	}
	if s.wd != nil && s.wd.armed() {
		s.wd.disarm()
		s.logger.Info("watchdog disarmed: postgres stopped")
	}
	st := s.store.State()
	if st.Leader.Holder == s.cfg.Member {
		s.release(ctx, st, "agent shut down")
	}
}

// cycle runs one observe → decide → act → report round and returns how
// long to wait before the next one.
func (s *Supervisor) cycle(ctx context.Context) time.Duration {
	st := s.store.State()
	loopWait := st.Config.LoopWait
	if loopWait <= 0 {
		loopWait = time.Second
	}
	s.renew(ctx, st)
	s.feedWatchdog(st)
	sctx, cancel := s.leaseBound(ctx, st, max(st.Config.RetryTimeout, time.Second))
	pgst, err := s.pg.Status(sctx)
	cancel()
	if err != nil {
		s.logger.Debug("postgres status", "error", err)
	}
	s.countCrash(pgst, st.Config.TTL)
	s.watchStreaming(st, pgst)
	o := s.observe(ctx, st, pgst)
	p := Decide(o)
	if !p.Noop() {
		s.logger.Info("acting", "action", p.Steps(), "reason", p.Reason)
		if err := s.execute(ctx, st, p); err != nil {
			s.logger.Error("action failed", "action", p.Steps(), "error", err)
		}
		pgst, _ = s.pg.Status(ctx)
		if pgst.Running && !s.wasRunning {
			s.runningSince = time.Now()
		}
		s.wasRunning = pgst.Running // stops we asked for are not crashes
	}
	s.tendWatchdog(ctx, s.store.State(), pgst)
	s.callbacks(pgst)
	s.applyConfig(ctx, st, pgst)
	s.report(ctx, pgst)
	s.publish(s.store.State(), pgst)
	if st.Leader.Holder == s.cfg.Member && !s.lastAck.IsZero() {
		if until := time.Until(s.leaseEnd(st)); until > 0 && until < loopWait {
			return until
		}
	}
	return loopWait
}

func (s *Supervisor) leaseEnd(st raftstore.State) time.Time {
	return s.lastAck.Add(st.Config.TTL - Margin(st.Config.TTL))
}

// renew sends a renewal when this node holds the key; the lease counts from
// the send time of the last acknowledged renewal.
func (s *Supervisor) renew(ctx context.Context, st raftstore.State) {
	if st.Leader.Holder != s.cfg.Member {
		s.lastAck, s.ackEpoch = time.Time{}, 0
		return
	}
	sent := time.Now()
	rctx, cancel := s.leaseBound(ctx, st, st.Config.RetryTimeout)
	defer cancel()
	res, err := s.proposer.Apply(rctx, raftstore.RenewLeader{Holder: s.cfg.Member, Epoch: st.Leader.Epoch, At: sent.UTC()})
	if err == nil {
		err = res.Err
	}
	if err != nil {
		s.logger.Warn("leader key renewal failed", "epoch", st.Leader.Epoch, "error", err)
		return
	}
	s.lastAck, s.ackEpoch, s.ackRev = sent, st.Leader.Epoch, res.Index
}

// callbacks runs postgresql.callbacks on what changed since the last
// cycle: on_start when postgres came up in the role it last had, on_stop
// when it went down, on_role_change when it runs in another role than
// before (promoted, or back as a replica after a demotion). A status that
// could not be read says nothing about the role.
func (s *Supervisor) callbacks(pgst pgmanager.Status) {
	role := ""
	switch {
	case !pgst.Running:
	case pgst.Error != "" || pgst.SystemID == "":
		return
	case pgst.InRecovery:
		role = "replica"
	default:
		role = "primary"
	}
	prev := s.runRole
	s.runRole = role
	switch {
	case role == prev:
	case role == "":
		s.pg.Callback(pgmanager.OnStop, prev)
	case prev == "" && (s.lastRole == "" || s.lastRole == role):
		s.pg.Callback(pgmanager.OnStart, role)
	default:
		s.pg.Callback(pgmanager.OnRoleChange, role)
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
	if s.wd == nil || !s.wd.armed() || st.Leader.Holder != s.cfg.Member || s.ackEpoch != st.Leader.Epoch ||
		s.lastAck.IsZero() || time.Since(s.lastAck) > FenceBudget/2 {
		return
	}
	if err := s.wd.keepalive(); err != nil {
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
	leaseOK := s.ackEpoch == st.Leader.Epoch && !s.lastAck.IsZero() && time.Now().Before(s.leaseEnd(st))
	switch {
	case !primary && s.wd.armed():
		s.wd.disarm()
		s.logger.Info("watchdog disarmed: not primary any more")
	case primary && leaseOK && !s.wd.armed():
		timeout, ok := WatchdogTimeout(st.Config.TTL)
		err := fmt.Errorf("%w: ttl %s leaves no whole-second timeout (use ttl ≥ 5s)", ErrWatchdog, st.Config.TTL)
		if ok {
			err = s.wd.arm(timeout)
		}
		if err == nil {
			s.feedWatchdog(st)
			s.logger.Info("watchdog armed", "device", s.wd.device, "timeout", timeout)
			return
		}
		if s.cfg.Watchdog.Mode == WatchdogRequired {
			s.logger.Error("watchdog required but not armed: stopping postgres and giving up the leader key", "error", err)
			if serr := s.pg.Stop(ctx, pgmanager.StopFast); serr != nil {
				s.logger.Error("stop postgres", "error", serr)
			}
			s.release(ctx, st, "watchdog required: "+err.Error())
			return
		}
		s.logger.Warn("watchdog unusable: running without it (watchdog.mode automatic)", "error", err)
		s.wd = nil
	}
}

// watchStreaming flags a running standby of the current primary that has
// not streamed for two ttls, so Decide checks it for divergence.
func (s *Supervisor) watchStreaming(st raftstore.State, pgst pgmanager.Status) {
	following := pgst.Running && pgst.InRecovery && s.upstream != "" && s.upstream == st.Leader.Holder
	switch {
	case !following || pgst.WalReceiver == "streaming":
		s.notStreaming = time.Time{}
	case s.notStreaming.IsZero():
		s.notStreaming = time.Now()
	case time.Since(s.notStreaming) > 2*st.Config.TTL && !s.startFailed:
		s.logger.Warn("standby is not streaming from the primary", "primary", s.upstream,
			"for", time.Since(s.notStreaming).Round(time.Millisecond))
		s.startFailed = true
	}
}

// countCrash counts unexpected PostgreSQL exits that follow each other
// within ttl of a (re)start; a server that ran longer starts a new count.
func (s *Supervisor) countCrash(pgst pgmanager.Status, ttl time.Duration) {
	switch {
	case s.wasRunning && !pgst.Running && !s.pg.Running():
		if time.Since(s.runningSince) > ttl {
			s.crashes = 0
		}
		s.crashes++
		s.logger.Warn("postgres exited unexpectedly", "crashes", s.crashes)
	case !s.wasRunning && pgst.Running:
		s.runningSince = time.Now()
	}
	s.wasRunning = pgst.Running
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
	return Observation{
		Member: s.cfg.Member, Tags: s.cfg.Tags, State: st, PG: pgst,
		HasData: has, DataSystemID: s.sysid, Standby: s.pg.IsStandbyConfigured(), Upstream: s.upstream,
		LeaseValid:   s.ackEpoch == st.Leader.Epoch && !s.lastAck.IsZero() && time.Now().Before(s.leaseEnd(st)),
		RewindFailed: s.rewindFailed, Crashes: s.crashes, MaxCrashes: s.cfg.MaxCrashes,
		SwitchoverDue: s.switchoverDue(st, time.Now()), HandedOver: s.handedOver, StandbyStartFailed: s.startFailed,
	}
}

// desired builds the PostgreSQL settings to follow primary ("" = none).
func (s *Supervisor) desired(st raftstore.State, primary string, replica bool) (pgmanager.Desired, error) {
	d := pgmanager.Desired{ClusterParams: st.Config.PostgreSQL.Parameters, Replica: replica}
	if primary == "" {
		return d, nil
	}
	m, ok := st.Members[primary]
	if !ok || m.PGAddr == "" {
		return d, fmt.Errorf("postgres address of %s unknown", primary)
	}
	up, err := pgmanager.ParseUpstream(primary, m.PGAddr)
	if err != nil {
		return d, err
	}
	d.Standby = &up
	if st.Config.PostgreSQL.UseSlots {
		d.Slot = pgmanager.SlotName(s.cfg.Member)
	}
	return d, nil
}

func (s *Supervisor) execute(ctx context.Context, st raftstore.State, p Plan) error {
	for _, a := range p.Actions {
		if err := s.do(ctx, st, a, p.Reason); err != nil {
			return fmt.Errorf("%s: %w", a.Kind, err)
		}
	}
	return nil
}

func (s *Supervisor) do(ctx context.Context, st raftstore.State, a Action, reason string) error {
	switch a.Kind {
	case ActStartPrimary, ActStartStandby, ActFollow, ActClone, ActReclone, ActInit:
		s.syncNames = "" // a (re)started server comes up without synchronous standbys
	}
	switch a.Kind {
	case ActAcquireBootstrap:
		return s.apply(ctx, raftstore.SetLeader{Holder: s.cfg.Member, PrevEpoch: st.Leader.Epoch, PrevRev: st.Leader.Rev,
			Reason: "bootstrap: " + reason, Actor: s.cfg.Member, At: time.Now().UTC()})
	case ActInit:
		d, _ := s.desired(st, "", false)
		id, err := s.pg.Init(ctx, d)
		if err != nil {
			return err
		}
		s.sysid = id
		return s.apply(ctx, raftstore.Initialize{SystemID: id, Actor: s.cfg.Member, At: time.Now().UTC()})
	case ActRecordInit:
		id, err := s.pg.SystemID(ctx)
		if err != nil {
			return err
		}
		return s.apply(ctx, raftstore.Initialize{SystemID: id, Actor: s.cfg.Member, At: time.Now().UTC()})
	case ActClone, ActReclone:
		d, err := s.desired(st, a.From, true)
		if err != nil {
			return err
		}
		s.sysid, s.rewindFailed = "", false
		if a.Kind == ActReclone {
			if err := s.pg.Stop(ctx, pgmanager.StopImmediate); err != nil {
				return err
			}
			return s.pg.Reclone(ctx, d)
		}
		return s.pg.Clone(ctx, d)
	case ActStartPrimary:
		d, _ := s.desired(st, "", false)
		s.upstream = ""
		return s.pg.Start(ctx, d)
	case ActStartStandby:
		d, err := s.desired(st, a.Primary, true)
		if err != nil {
			d, _ = s.desired(st, "", true)
		}
		s.upstream = a.Primary
		err = s.pg.Start(ctx, d)
		s.startFailed = err != nil && a.Primary != ""
		return err
	case ActPromote:
		if s.wd != nil && s.cfg.Watchdog.Mode == WatchdogRequired {
			if err := WatchdogUsable(s.wd.device); err != nil {
				s.release(ctx, st, "watchdog required: "+err.Error())
				return err
			}
		}
		s.upstream = ""
		return s.pg.Promote(ctx)
	case ActDemote:
		mode := pgmanager.StopImmediate
		if a.Mode == "fast" {
			mode = pgmanager.StopFast
		}
		return s.pg.Stop(ctx, mode)
	case ActFollow:
		return s.follow(ctx, st, a)
	case ActRelease:
		if err := s.pg.Stop(ctx, pgmanager.StopFast); err != nil {
			return err
		}
		s.release(ctx, st, reason)
		return nil
	case ActRefuse:
		s.logger.Error("refusing to touch the local data", "reason", reason)
		return nil
	case ActHandOver:
		return s.handOver(ctx, st, a.Primary)
	}
	return fmt.Errorf("unknown action %q", a.Kind)
}

func (s *Supervisor) follow(ctx context.Context, st raftstore.State, a Action) error {
	d, err := s.desired(st, a.Primary, true)
	if err != nil {
		return err
	}
	if s.pg.Running() && !a.Rewind {
		s.upstream = a.Primary
		return s.pg.Follow(ctx, d)
	}
	s.handedOver, s.startFailed = false, false
	if err := s.pg.Stop(ctx, pgmanager.StopFast); err != nil {
		return err
	}
	if a.Rewind {
		if err := s.pg.Rewind(ctx, d); err != nil {
			if errors.Is(err, pgmanager.ErrRewindFailed) {
				s.rewindFailed = true
			}
			return err
		}
	}
	s.upstream = a.Primary
	return s.pg.Start(ctx, d)
}

func (s *Supervisor) release(ctx context.Context, st raftstore.State, reason string) {
	epoch, rev := st.Leader.Epoch, st.Leader.Rev
	if s.ackEpoch == epoch && s.ackRev > rev {
		rev = s.ackRev // our last renewal, which the local FSM may not show yet
	}
	err := s.apply(ctx, raftstore.SetLeader{Holder: "", PrevEpoch: epoch, PrevRev: rev,
		Reason: "released by " + s.cfg.Member + ": " + reason, Actor: s.cfg.Member, At: time.Now().UTC()})
	if err != nil {
		s.logger.Warn("release leader key", "error", err)
		return
	}
	s.lastAck, s.ackEpoch = time.Time{}, 0
	s.logger.Info("leader key released", "reason", reason)
}

// apply commits cmd, giving up after retry_timeout: a request stuck on an
// unreachable leader must not hold the loop (and the member's status
// reports) for longer.
func (s *Supervisor) apply(ctx context.Context, cmd raftstore.Command) error {
	st := s.store.State()
	timeout := st.Config.RetryTimeout
	if timeout <= 0 {
		timeout = time.Second
	}
	ctx, cancel := s.leaseBound(ctx, st, timeout)
	defer cancel()
	res, err := s.proposer.Apply(ctx, cmd)
	if err == nil {
		err = res.Err
	}
	return err
}

// report records the local status in the FSM (and, on a primary, keeps
// a replication slot for every other member).
func (s *Supervisor) report(ctx context.Context, pgst pgmanager.Status) {
	st := s.store.State()
	ms := raftstore.MemberStatus{State: "stopped", Role: "replica", SystemID: s.sysid, ReportedAt: time.Now().UTC()}
	switch {
	case !s.pg.HasDataDir():
		ms.Role = "uninitialized"
	case pgst.Running:
		ms.State = "running"
		ms.Timeline, ms.Version, ms.PendingRestart = pgst.Timeline, pgst.Version, pgst.PendingRestart
		ms.ReceivedLSN, ms.ReplayedLSN = pgst.ReceivedLSN, pgst.ReplayedLSN
		if !pgst.InRecovery {
			ms.Role, ms.WrittenLSN = "primary", pgst.CurrentLSN
			s.ensureSlots(ctx, st)
			if st.Leader.Holder == s.cfg.Member {
				s.manageSync(ctx, st, pgst)
			}
		}
	}
	if err := s.apply(ctx, raftstore.ReportStatus{Name: s.cfg.Member, Status: ms}); err != nil {
		s.logger.Debug("report status", "error", err)
	}
}

func (s *Supervisor) ensureSlots(ctx context.Context, st raftstore.State) {
	if !st.Config.PostgreSQL.UseSlots {
		return
	}
	var want []string
	for _, name := range st.MemberNames() {
		if name != s.cfg.Member {
			want = append(want, pgmanager.SlotName(name))
		}
	}
	if _, _, err := s.pg.EnsureSlots(ctx, want); err != nil {
		s.logger.Warn("replication slots", "error", err)
	}
}
