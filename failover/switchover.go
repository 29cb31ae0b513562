package failover

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"raftgres/pgmanager"
	"raftgres/raftstore"
)

// ErrNoCandidate means a switchover found no member to hand over to.
var ErrNoCandidate = errors.New("no eligible switchover candidate")

// switchoverDue reports whether State.Failover asks this holder for a
// switchover now. Scheduled times are wall-clock by nature.
func (s *Supervisor) switchoverDue(st raftstore.State, now time.Time) bool {
	f := st.Failover
	if f == nil || f.Hard || st.Leader.Holder != s.cfg.Member {
		return false // a hard failover is no hand-over (decideHolder)
	}
	// A manual failover aimed at a healthy primary is carried out as a
	// switchover to its candidate: nothing is lost that way.
	if f.Kind == raftstore.KindFailover && (f.To == "" || f.To == s.cfg.Member) {
		return false
	}
	if f.From != "" && f.From != s.cfg.Member {
		return false
	}
	return f.ScheduledAt.IsZero() || !now.Before(f.ScheduledAt)
}

// switchoverCandidate is the requested member, else the best ranked one
// among fresh members (whose reports this host saw change within
// StaleAfter: no clocks of other hosts are compared;
// TestSwitchoverCandidateFreshnessUsesThisHostsReportClock). Lag does not
// disqualify: the hand-over waits until the candidate has everything up to
// the shutdown checkpoint, so under a steady write load a switchover still
// succeeds.
func switchoverCandidate(st raftstore.State, me, requested string, fresh map[string]bool) (string, error) {
	ranked := RankCandidates(st, ElectionInput{Fresh: fresh, Exclude: me, Candidate: requested, IgnoreLag: true})
	if len(ranked) == 0 || ranked[0].Why != "" {
		why := "no other member"
		if len(ranked) > 0 {
			why = ranked[0].Name + ": " + ranked[0].Why
		}
		for _, c := range ranked {
			if requested != "" && c.Name == requested {
				why = c.Name + ": " + c.Why // the one asked for, not the first refused
			}
		}
		if requested != "" && !slices.ContainsFunc(ranked, func(c Candidate) bool { return c.Name == requested }) {
			why = requested + ": not a member"
		}
		return "", fmt.Errorf("%w (%s)", ErrNoCandidate, why)
	}
	return ranked[0].Name, nil
}

// handOver is the holder's side of a switchover: stop cleanly (shutdown
// checkpoint), wait until the candidate has received WAL past that
// checkpoint, then move the key with a compare-and-set. If the stop was
// not clean or the candidate does not catch up in time, PostgreSQL is
// started again as primary (while the lease allows) and the request is
// dropped.
func (s *Supervisor) handOver(ctx context.Context, st raftstore.State, requested string) error {
	target, err := switchoverCandidate(st, s.cfg.Member, requested, s.freshMembers(st))
	if err != nil {
		s.clearFailover(ctx, st.Failover, err.Error())
		return err
	}
	if !s.waitStreamingFrom(ctx, target, st.Leader.Epoch, st.Config.TTL) {
		if s.keyMoved(st.Leader.Epoch) {
			// Elected away meanwhile (this holder was cut off or
			// frozen): the next cycle demotes at once; the coordinator
			// drops the request it overtook.
			return errKeyMoved
		}
		reason := fmt.Sprintf("candidate %s is not streaming from %s", target, s.cfg.Member)
		s.clearFailover(ctx, st.Failover, "refused: "+reason)
		return fmt.Errorf("%w: %s", ErrNoCandidate, reason)
	}
	if st.Config.IsStandbyCluster() {
		// A standby leader acknowledges nothing and keeps running: the
		// candidate, streaming from it, takes over the stream from the
		// source, and this member follows the candidate.
		_, until, epoch, rev := s.lease.snapshot()
		s.lease.forget()
		if err := s.handKey(ctx, target, epoch, rev, until.Add(-FenceBudget)); err != nil {
			return fmt.Errorf("switchover: hand the key to %s: %w", target, err)
		}
		s.lease.reset()
		s.clearFailover(ctx, st.Failover, "switchover of the standby leader to "+target+" done")
		s.logger.Info("switchover: standby leader's key handed over", "member", target)
		return nil
	}
	s.logger.Info("switchover: shutting down cleanly", "candidate", target)
	// Keep renewing through the shutdown checkpoint: the commit gate must
	// confirm the WAL the walsenders flush on the way down, and a lease
	// that ended meanwhile would turn the clean stop into an immediate one.
	stop := func() error {
		s.beforeStop(ctx)
		return s.pg.Stop(ctx, pgmanager.StopFast)
	}
	if err := s.renewWhile(ctx, true, stop); err != nil {
		return err
	}
	cd, err := s.pg.ControlData(ctx)
	if err != nil {
		return err
	}
	final, err := shutdownCheckpoint(cd)
	if err == nil {
		err = s.waitCaughtUp(ctx, target, final, st.Config.TTL)
	}
	if err != nil {
		s.logger.Warn("switchover aborted: restarting as primary", "candidate", target, "error", err)
		s.clearFailover(ctx, st.Failover, "aborted: "+err.Error())
		cur := s.store.State()
		d, _ := s.desired(cur, "", false)
		if s.leaseLeft(cur) >= FenceBudget {
			return s.pg.Start(ctx, d)
		}
		return err
	}
	// From the first attempt on, the outcome may be that the key moved:
	// the lease is over for this member (the gate acknowledges nothing,
	// and a later cycle starts nothing as primary) until a fresh renewal
	// confirms the key is still ours (TestLostHandOverReplyLeavesNoLeaseToStartOn).
	_, until, epoch, rev := s.lease.snapshot()
	s.lease.forget()
	if err := s.handKey(ctx, target, epoch, rev, until.Add(-FenceBudget)); err != nil {
		return fmt.Errorf("switchover: hand the key to %s: %w", target, err)
	}
	s.lease.reset()
	s.standby.handedOver = true
	s.clearFailover(ctx, st.Failover, "switchover to "+target+" done")
	s.logger.Info("switchover: leader key handed over", "member", target, "lsn", pgmanager.FormatLSN(final))
	return nil
}

// shutdownCheckpoint is the location of the checkpoint a clean stop
// wrote, from pg_controldata's output. A stop that escalated to immediate
// (pgmanager's step timeout) leaves the cluster state "in production" and
// the latest checkpoint an older regular one: a candidate that reached it
// may lack commits acknowledged after it, so no hand-over starts from
// such a stop (TestHandOverRequiresACleanShutdown).
func shutdownCheckpoint(cd map[string]string) (uint64, error) {
	if state := cd["Database cluster state"]; state != "shut down" {
		return 0, fmt.Errorf("the stop was not clean (database cluster state %q, want \"shut down\")", state)
	}
	lsn, err := pgmanager.ParseLSN(cd["Latest checkpoint location"])
	if err != nil {
		return 0, fmt.Errorf("read shutdown checkpoint: %w", err)
	}
	return lsn, nil
}

// errKeyMoved means a hand-over found the leader key moved on from the
// epoch it started under.
var errKeyMoved = errors.New("switchover: the leader key moved on")

// keyMoved reports whether this member's view shows the leader key no
// longer its own at epoch.
func (s *Supervisor) keyMoved(epoch uint64) bool {
	k := s.store.State().Leader
	return k.Holder != s.cfg.Member || k.Epoch != epoch
}

// waitStreamingFrom waits up to timeout (renewing the key meanwhile) until
// target streams from the local primary: right after a restart the
// standbys need a moment to reconnect. It gives up at once when the key
// moved on from epoch: the primary, elected away, must not run on until
// the timeout with its lease forgotten
// (TestHandOverStopsWaitingWhenTheKeyMoves).
func (s *Supervisor) waitStreamingFrom(ctx context.Context, target string, epoch uint64, timeout time.Duration) bool {
	deadline := s.clock.Now().Add(timeout)
	for {
		if s.keyMoved(epoch) {
			return false
		}
		if pgst, err := s.pg.Status(ctx); err == nil && streaming(pgst, target) {
			return true
		}
		if s.clock.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		s.renew(ctx, s.store.State())
		select {
		case <-ctx.Done():
			return false
		case <-s.clock.After(50 * time.Millisecond): // polling pg_stat_replication
		}
	}
}

// handKey moves the leader key to target with a compare-and-set against
// our own last acknowledged renewal (the local FSM may not show it yet).
// A Raft leader change in flight leaves the outcome unknown: it retries
// while the lease lasts and reads the key back to see what happened.
func (s *Supervisor) handKey(ctx context.Context, target string, epoch, rev uint64, deadline time.Time) error {
	cmd := raftstore.SetLeader{Holder: target, PrevEpoch: epoch, PrevRev: rev,
		Reason: "switchover from " + s.cfg.Member, Cause: raftstore.CauseSwitchover, Actor: s.cfg.Member,
		Rules: raftstore.RulesSyncKey}
	for {
		cmd.At = s.clock.Now().UTC()
		err := s.apply(ctx, cmd)
		if err == nil {
			return nil
		}
		if st := s.store.State(); st.Leader.Holder == target && st.Leader.Epoch == cmd.PrevEpoch+1 {
			return nil // an earlier attempt committed
		}
		if errors.Is(err, raftstore.ErrEpochMismatch) || ctx.Err() != nil || !s.clock.Now().Before(deadline) {
			return err
		}
		s.logger.Info("switchover: key hand-over not confirmed, retrying", "error", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.clock.After(50 * time.Millisecond):
		}
	}
}

// waitCaughtUp waits up to timeout (on the supervisor's clock) until
// target reports WAL received past lsn, renewing the key meanwhile so the
// coordinator does not elect someone else.
func (s *Supervisor) waitCaughtUp(ctx context.Context, target string, lsn uint64, timeout time.Duration) error {
	deadline := s.clock.Now().Add(timeout)
	for {
		st := s.store.State()
		if m, ok := st.Members[target]; ok && max(m.Status.ReceivedLSN, m.Status.ReplayedLSN) > lsn {
			return nil
		}
		if !s.clock.Now().Before(deadline) {
			return fmt.Errorf("%s did not receive WAL past %s within %s", target, pgmanager.FormatLSN(lsn), timeout)
		}
		s.renew(ctx, st)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not receive WAL past %s: %w", target, pgmanager.FormatLSN(lsn), ctx.Err())
		case <-s.clock.After(20 * time.Millisecond):
		}
	}
}

// clearFailover drops the request f this holder acted on, and only that
// one (a compare-and-set: a newer request stays).
func (s *Supervisor) clearFailover(ctx context.Context, f *raftstore.FailoverRequest, reason string) {
	if err := s.apply(ctx, raftstore.SetFailover{Actor: s.cfg.Member, Reason: reason, At: s.clock.Now().UTC(),
		CAS: f != nil, Prev: f}); err != nil {
		s.logger.Warn("clear switchover request", "error", err)
	}
}

func streaming(st pgmanager.Status, member string) bool {
	for _, r := range st.Replicas {
		if r.ApplicationName == member && r.State == pgmanager.Streaming {
			return true
		}
	}
	return false
}
