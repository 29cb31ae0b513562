package failover

import (
	"context"
	"errors"
	"fmt"
	"time"

	"raftgres/pgmanager"
	"raftgres/raftstore"
)

// RequestKind names an operator request the supervisor carries out in its
// own loop, so it never races a failover action.
type RequestKind string

// Operator requests (the REST API's /restart, /reload, /reinitialize).
const (
	RequestRestart RequestKind = "restart"
	RequestReload  RequestKind = "reload"
	RequestReinit  RequestKind = "reinitialize"
	// RequestRewind runs pg_rewind from the current primary on a stopped
	// (stopped here) standby or former primary, then starts it as a
	// standby; with ReinitOnFailure a rewind that cannot work reclones.
	RequestRewind RequestKind = "rewind"
)

// Request is one operator request.
type Request struct {
	Kind RequestKind
	// OnlyPending restarts only when PostgreSQL reports pending_restart.
	OnlyPending bool
	// ReinitOnFailure reclones when a rewind fails (RequestRewind).
	ReinitOnFailure bool
}

// ErrRequestRefused wraps a request that is not safe or not possible now.
var ErrRequestRefused = errors.New("request refused")

type request struct {
	Request
	done chan error
}

// Do hands r to the supervisor loop and waits for its outcome. A request
// arriving while the supervisor acts (a clone, a promotion) waits its turn.
func (s *Supervisor) Do(ctx context.Context, r Request) error {
	req := request{Request: r, done: make(chan error, 1)}
	select {
	case s.reqs <- req:
	case <-ctx.Done():
		return fmt.Errorf("%s of %s: supervisor busy: %w", r.Kind, s.cfg.Member, ctx.Err())
	}
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%s of %s: %w", r.Kind, s.cfg.Member, ctx.Err())
	}
}

// serve carries out one operator request.
func (s *Supervisor) serve(ctx context.Context, r Request) error {
	st := s.store.State()
	holder := st.Leader.Holder == s.cfg.Member
	if !s.pg.HasDataDir() && r.Kind != RequestReinit {
		return fmt.Errorf("%w: %s of %s: no data directory yet", ErrRequestRefused, r.Kind, s.cfg.Member)
	}
	upstream := s.standby.upstream
	if !holder && upstream == "" {
		upstream = st.Leader.Holder
	}
	d, err := s.desired(st, upstream, !holder)
	if err != nil {
		return fmt.Errorf("%w: %s of %s: %w", ErrRequestRefused, r.Kind, s.cfg.Member, err)
	}
	switch r.Kind {
	case RequestRestart:
		pgst, _ := s.pg.Status(ctx)
		if r.OnlyPending && !pgst.PendingRestart {
			s.logger.Info("restart skipped: no pending restart")
			return nil
		}
		s.logger.Info("restarting postgres on request", "primary", holder)
		err := s.renewWhile(ctx, holder, func() error {
			s.beforeStop(ctx)
			return s.pg.Restart(ctx, d)
		})
		s.runs.acted(s.pg.Running(), s.clock.Now())
		return err
	case RequestReload:
		ch, err := s.pg.Reload(ctx, d)
		if err == nil {
			s.confVersion = st.Config.Version
			s.logger.Info("postgres reloaded on request", "changed", ch.Files)
		}
		return err
	case RequestReinit:
		if holder {
			return fmt.Errorf("%w: %s holds the leader key: switch over before reinitializing it", ErrRequestRefused, s.cfg.Member)
		}
		if st.Leader.Holder == "" {
			return fmt.Errorf("%w: no primary to clone %s from", ErrRequestRefused, s.cfg.Member)
		}
		src, err := s.desired(st, st.Leader.Holder, true)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrRequestRefused, err)
		}
		s.logger.Warn("reinitializing: wiping the data directory and cloning", "from", st.Leader.Holder)
		if err := s.pg.Stop(ctx, pgmanager.StopImmediate); err != nil {
			return err
		}
		s.runs.acted(false, s.clock.Now())
		s.sysid, s.standby.rewindFailed, s.standby.rewoundFails, s.standby.rewound, s.standby.startFailed, s.standby.upstream = "", false, 0, false, false, ""
		return s.pg.Reclone(ctx, src)
	case RequestRewind:
		return s.rewindOnRequest(ctx, st, r.ReinitOnFailure)
	}
	return fmt.Errorf("%w: unknown request %q", ErrRequestRefused, r.Kind)
}

// rewindOnRequest rewinds this member from the current primary and
// starts it as its standby (raftgres rewind MEMBER). It refuses on the
// primary and without one; a rewind that fails leaves the member stopped
// unless reinit reclones it.
func (s *Supervisor) rewindOnRequest(ctx context.Context, st raftstore.State, reinit bool) error {
	holder := st.Leader.Holder
	switch {
	case holder == s.cfg.Member:
		return fmt.Errorf("%w: %s holds the leader key (it is the primary): switch over before rewinding it", ErrRequestRefused, s.cfg.Member)
	case holder == "":
		return fmt.Errorf("%w: no primary to rewind %s from", ErrRequestRefused, s.cfg.Member)
	}
	src, err := s.desired(st, holder, true)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrRequestRefused, err)
	}
	if err := s.sendReport(ctx, raftstore.MemberStatus{State: raftstore.StateRewinding, Role: raftstore.RoleReplica, SystemID: s.sysid}); err != nil {
		s.logger.Warn("report status", "state", raftstore.StateRewinding, "error", err)
	}
	s.logger.Warn("rewinding on request: stopping postgres", "from", holder, "reinit_on_failure", reinit)
	if err := s.pg.Stop(ctx, pgmanager.StopFast); err != nil {
		return err
	}
	s.runs.acted(false, s.clock.Now())
	s.standby.upstream, s.standby.startFailed = "", false
	if err := s.pg.Rewind(ctx, src); err != nil {
		if !reinit || errors.Is(err, pgmanager.ErrRewindSourceUnavailable) {
			return fmt.Errorf("rewind of %s failed (it stays stopped; the supervisor retries on its own, or ask again with --reinit-on-failure to reclone): %w", s.cfg.Member, err)
		}
		s.logger.Warn("rewind failed: recloning on request", "from", holder, "error", err)
		s.sysid, s.standby.rewindFailed, s.standby.rewoundFails, s.standby.rewound = "", false, 0, false
		if err := s.pg.Reclone(ctx, src); err != nil {
			return fmt.Errorf("reclone of %s after a failed rewind: %w", s.cfg.Member, err)
		}
	} else {
		s.standby.rewound = true
	}
	if err := s.pg.Start(ctx, src); err != nil {
		return fmt.Errorf("start %s as a standby of %s after the rewind: %w", s.cfg.Member, holder, err)
	}
	s.standby.upstream = holder
	s.logger.Info("rewound on request and started as a standby", "primary", holder)
	return nil
}

// applyConfig reloads a running PostgreSQL after the cluster
// configuration changed (parameters, pg_hba).
func (s *Supervisor) applyConfig(ctx context.Context, st raftstore.State, pgst pgmanager.Status) {
	if !pgst.Running || pgst.Error != "" || st.Config.Version == s.confVersion || (pgst.InRecovery && s.standby.upstream == "") {
		return
	}
	d, err := s.desired(st, s.standby.upstream, pgst.InRecovery)
	if err != nil {
		return
	}
	ch, err := s.pg.Reload(ctx, d)
	if err != nil {
		s.logger.Warn("apply cluster config", "version", st.Config.Version, "error", err)
		return
	}
	s.confVersion = st.Config.Version
	if ch.Changed() {
		s.logger.Info("cluster config applied", "version", st.Config.Version, "changed", ch.Files)
	}
}

// renewWhile runs f beside the loop (runAction) and, when holder, keeps
// renewing the leader key every loop_wait from this goroutine until f
// returns: a primary restarting on request keeps its key instead of being
// failed over. The supervisor's own state is touched only here.
func (s *Supervisor) renewWhile(ctx context.Context, holder bool, f func() error) error {
	if !holder {
		return f()
	}
	done := s.runAction(f)
	for {
		st := s.store.State()
		if st.Leader.Holder != s.cfg.Member {
			return <-done
		}
		s.renew(ctx, st)
		select {
		case err := <-done: // already over: no wait on the clock
			return err
		default:
		}
		// Renew at least every loop_wait and well inside the lease.
		select {
		case err := <-done:
			return err
		case <-s.clock.After(max(min(st.Config.LoopWait, Margin(st.Config.TTL)/2), 10*time.Millisecond)):
		}
	}
}

// runAction runs f in a goroutine of its own and delivers its result
// (the simulator's act runs f at once instead: its PostgreSQL answers in
// no time, and a goroutine would make a schedule's replay depend on the
// Go scheduler).
func (s *Supervisor) runAction(f func() error) <-chan error {
	if s.act != nil {
		return s.act(f)
	}
	done := make(chan error, 1)
	go func() { done <- f() }()
	return done
}
