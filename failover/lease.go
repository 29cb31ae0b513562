package failover

import (
	"context"
	"sync"
	"time"

	"raftgres/internal/boottime"
	"raftgres/raftstore"
)

// Clock reads the time and paces waits. The supervisor and the
// coordinator read every instant through one, so unit tests can drive
// lease arithmetic without sleeping; the supervisor's waits inside an
// action (renewWhile's pacing, a switchover's polling and deadlines) wait
// through After, so the simulator runs them on its virtual clock
// (TestSimSweep drives switchover and manual failover through them).
type Clock interface {
	Now() time.Time
	// After delivers the time once d has passed.
	After(d time.Duration) <-chan time.Time
}

// realClock is CLOCK_BOOTTIME (internal/boottime): unlike Go's monotonic
// clock it keeps counting while the host is suspended, so a holder that
// resumes sees its lease as ended, and the commit gate and the fence
// keeper read the same clock.
type realClock struct{}

func (realClock) Now() time.Time { return boottime.Now() }

// After paces polling on Go's timers: a deadline is always checked
// against Now, so a suspend that stretches one wait ends no lease late.
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Now reads the clock the supervisor stamps Local with (LeaseUntil,
// ObservedAt): compare those with it, not with time.Now.
func Now() time.Time { return realClock{}.Now() }

// lease is the holder's own view of its lease on the leader key: it ends
// ttl − margin after the send time of the last acknowledged renewal, on
// this host's monotonic clock. It is safe for concurrent use: the commit
// gate and the fencer read it from their own goroutines, while renewals
// run in the supervisor loop (and beside long actions).
type lease struct {
	mu    sync.Mutex
	sent  time.Time     // send time of the last acknowledged renewal; zero: no lease
	until time.Time     // sent + ttl − margin
	epoch uint64        // epoch that renewal was for
	rev   uint64        // Raft index of that renewal: the key's rev after it
	ttl   time.Duration // the ttl that renewal was made under
	// changed is closed and replaced whenever until changes, so the fencer
	// can wait for a new deadline.
	changed chan struct{}
}

func newLease() *lease { return &lease{changed: make(chan struct{})} }

// renewed records an acknowledged renewal sent at sent.
func (l *lease) renewed(sent time.Time, epoch, rev uint64, ttl time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent, l.until, l.epoch, l.rev, l.ttl = sent, sent.Add(ttl-Margin(ttl)), epoch, rev, ttl
	l.notify()
}

// forget ends the lease now (the key moved, was released or handed
// over). The epoch and rev of the last renewal are kept: a hand-over or
// release whose outcome is unknown still compare-and-sets against them.
func (l *lease) forget() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sent.IsZero() {
		return
	}
	l.sent, l.until = time.Time{}, time.Time{}
	l.notify()
}

// reset forgets the lease and its epoch (the key names someone else).
func (l *lease) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	had := !l.sent.IsZero()
	l.sent, l.until, l.epoch, l.rev = time.Time{}, time.Time{}, 0, 0
	if had {
		l.notify()
	}
}

func (l *lease) notify() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// End is when the lease ends (zero when there is none). The commit gate
// acknowledges WAL only before it.
func (l *lease) End() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.until
}

// changes returns a channel closed at the lease's next change (the commit
// gate sleeps on it while there is no lease).
func (l *lease) changes() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

// snapshot returns the lease's fields at once.
func (l *lease) snapshot() (sent, until time.Time, epoch, rev uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sent, l.until, l.epoch, l.rev
}

// watch returns the current end and a channel closed at its next change.
func (l *lease) watch() (time.Time, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.until, l.changed
}

// valid reports whether member holds a lease at now for the key in st:
// the one predicate every holder-side decision uses.
func (l *lease) valid(st raftstore.State, member string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return st.Leader.Holder == member && !l.sent.IsZero() && l.epoch == st.Leader.Epoch && now.Before(l.until)
}

// Margin is the holder's safety margin for ttl: the lease ends ttl−margin
// after the send time of the last acknowledged renewal, so that it ends
// before the coordinator's countdown (ttl from when it applied that
// renewal) even with fencing time and clock-rate error. The rule
// margin ≥ FenceBudget + 2·ρ·ttl is checked by raftstore's config
// validation (raftstore.MinMargin).
func Margin(ttl time.Duration) time.Duration { return ttl / 3 }

// FenceBudget bounds the time from the lease's end to PostgreSQL refusing
// writes. The commit gate refuses commits at the lease's end itself; the
// fencer stops the postmaster then, whatever the supervisor loop is
// doing.
const FenceBudget = raftstore.FenceBudget

// leaseBound gives a call at most d, and never more than what is left of
// this holder's lease (but at least FenceBudget/2): a renewal or report
// stuck on a lost network must not hold the loop past the lease.
func (s *Supervisor) leaseBound(ctx context.Context, st raftstore.State, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.leaseBudget(st, d))
}

// leaseBudget is leaseBound's time: d, but no more than what is left of
// this holder's lease (and at least FenceBudget/2).
func (s *Supervisor) leaseBudget(st raftstore.State, d time.Duration) time.Duration {
	if until := s.lease.End(); st.Leader.Holder == s.cfg.Member && !until.IsZero() {
		d = min(d, max(until.Sub(s.clock.Now()), FenceBudget/2))
	}
	return d
}

// renew sends a renewal when this node holds the key; the lease counts from
// the send time of the last acknowledged renewal. An armed watchdog is fed
// right after an acknowledged renewal, wherever renew is called from (the
// loop, a long action, a switchover's waits).
func (s *Supervisor) renew(ctx context.Context, st raftstore.State) {
	if st.Leader.Holder != s.cfg.Member {
		// A lease that already ended is fenced even when the key is seen
		// to have moved first (the fencer's timer may not have run yet).
		if end := s.lease.End(); !end.IsZero() {
			s.fenceIfEnded(end)
		}
		s.lease.reset()
		return
	}
	sent := s.clock.Now()
	if !s.renewDue(st, sent) {
		return
	}
	// The gate must hold this term's quorum rule before it can confirm
	// anything under the lease this renewal gives (quorum.go).
	s.pushGate(s.gateRule(st))
	rctx, cancel := s.leaseBound(ctx, st, st.Config.RetryTimeout)
	defer cancel()
	idx, err := s.commit(rctx, raftstore.RenewLeader{Holder: s.cfg.Member, Epoch: st.Leader.Epoch, At: sent.UTC(),
		TTL: st.Config.TTL})
	if err != nil {
		s.logger.Warn("leader key renewal failed", "epoch", st.Leader.Epoch, "error", err)
		return
	}
	s.lease.renewed(sent, st.Leader.Epoch, idx, st.Config.TTL)
	_, until, _, _ := s.lease.snapshot()
	// The keeper learns the new end before anything acts on the lease
	// (a start or promotion right after this renewal); the fencer
	// goroutine hands it over too, later.
	s.pg.FenceAt(until)
	// lease_end is the wall-clock reading of the monotonic deadline, for
	// incident reviews and the chaos test's checker.
	s.logger.Debug("lease renewed", "epoch", st.Leader.Epoch, "lease_end", until.UTC().Format(time.RFC3339Nano))
	s.feedWatchdog(st)
}

// renewDue reports whether the holder should renew at now: it holds no
// lease for the key's epoch, or its last acknowledged renewal was sent
// RenewInterval ago. Renewing only then (not every loop) keeps an idle
// cluster's Raft commits, and their disk flushes, few.
func (s *Supervisor) renewDue(st raftstore.State, now time.Time) bool {
	sent, _, epoch, _ := s.lease.snapshot()
	return sent.IsZero() || epoch != st.Leader.Epoch || now.Sub(sent) >= s.renewInterval(st)
}

// renewInterval is the renewal interval for the lease held: that of the
// shorter of the ttl in force and the ttl the lease was given under. A ttl
// raised since must not schedule the next renewal after the end of a
// lease given under the old one: ttl 3s → 9s fenced a healthy primary
// (TestRaisedTTLKeepsTheRenewalIntervalOfTheLeaseHeld).
func (s *Supervisor) renewInterval(st raftstore.State) time.Duration {
	c := st.Config
	s.lease.mu.Lock()
	if t := s.lease.ttl; t > 0 && t < c.TTL {
		c.TTL = t
	}
	s.lease.mu.Unlock()
	return c.RenewInterval()
}

// untilRenewal is how long the holder may wait before its next renewal
// is due (0 when due now).
func (s *Supervisor) untilRenewal(st raftstore.State, now time.Time) time.Duration {
	sent, _, epoch, _ := s.lease.snapshot()
	if sent.IsZero() || epoch != st.Leader.Epoch {
		return 0
	}
	return max(s.renewInterval(st)-now.Sub(sent), 0)
}

// runFencer stops the local postmaster at the end of every lease that was
// not renewed in time, whatever the supervisor loop is doing (a promote
// waiting for replay, a start in crash recovery, a restart, a frozen
// report). It owns no decision: the loop still demotes and restarts as
// usual; this only makes the lease end take effect on time.
//
// The fence keeper, a separate process, is handed every new lease end as
// well (Postgres.FenceAt): it kills PostgreSQL at that moment even when
// this agent is frozen, wedged or dead, which this goroutine, frozen with
// it, cannot (TestFencerHandsEveryLeaseEndToTheFenceKeeper).
func (s *Supervisor) runFencer(ctx context.Context) {
	for {
		until, changed := s.lease.watch()
		if !until.IsZero() {
			// A lease that ended or was given up leaves the keeper
			// armed with its end: only PostgreSQL started as a standby
			// (which acknowledges nothing) disarms it.
			s.pg.FenceAt(until)
		} else {
			s.vipLeaseEnded("no lease") // given up (hand-over, release) or moved on
		}
		var fire <-chan time.Time
		var t *time.Timer
		if !until.IsZero() {
			t = time.NewTimer(until.Sub(s.clock.Now()))
			fire = t.C
		}
		select {
		case <-ctx.Done():
		case <-changed:
		case <-fire:
			s.fenceIfEnded(until)
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// fenceIfEnded stops PostgreSQL when the lease that ends at until has not
// been renewed: a later renewal would have changed the end.
func (s *Supervisor) fenceIfEnded(until time.Time) bool {
	_, cur, epoch, _ := s.lease.snapshot()
	if !cur.Equal(until) || s.clock.Now().Before(until) {
		return false
	}
	s.lease.forget()
	s.logger.Warn("lease ended", "epoch", epoch, "lease_end", until.UTC().Format(time.RFC3339Nano))
	if s.pg.Running() && s.pg.Fence() {
		s.logger.Warn("lease ended without renewal: postgres stopped (immediate)", "epoch", epoch)
	}
	s.vipLeaseEnded("lease ended")
	return true
}
