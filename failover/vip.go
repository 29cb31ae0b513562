package failover

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"raftgres/pgmanager"
	"raftgres/raftstore"
)

// VIP is the virtual address this member holds only while PostgreSQL runs
// here as primary under a valid lease (the vip: section; internal/vip
// drives Linux through netlink, the agent hands it in with SetVIP). Both
// methods are idempotent and return quickly: Add announces the address
// with gratuitous ARP without waiting for it.
type VIP interface {
	Add() error
	Remove() error
}

// VIPLoggerName names the VIP's sub-logger.
const VIPLoggerName = "failover.vip"

// vipHolder decides when the VIP is added and removed. The loop adds it
// (tendVIP); the loop, the fencer and every stop or fence of PostgreSQL
// remove it. mu orders them: an Add is decided under it with the lease
// still valid, so a removal at the lease's end, which waits for mu,
// comes after any Add decided before that end.
type vipHolder struct {
	mu      sync.Mutex
	vip     VIP
	lease   *lease
	member  string
	logger  hclog.Logger
	held    bool   // added, and not removed since
	tried   bool   // an Add was tried since the last removal: the address may be there
	lastErr string // the last error logged, so a failing call is logged once

	// The previous holder's lease (mayOverlap, previousLeaseBound): the epoch last
	// seen, the earliest time this member may add the VIP at it, the
	// longest ttl seen, and the timer that tries again then.
	epoch     uint64
	notBefore time.Time
	maxTTL    time.Duration
	retry     *time.Timer
}

// SetVIP makes the supervisor hold v while it is primary under a valid
// lease; call it before Run. Every Stop and Fence of PostgreSQL removes v
// first (Fence: right after): a VIP never points at a server that is
// stopping, demoted or fenced. logger is the VIP's own (VIPLoggerName,
// naming the address).
func (s *Supervisor) SetVIP(v VIP, logger hclog.Logger) {
	if v == nil {
		return
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	s.vip = &vipHolder{vip: v, lease: s.lease, member: s.cfg.Member, logger: logger}
	s.pg = vipPostgres{Postgres: s.pg, vip: s.vip}
}

// VIPState is the VIP as Local reports it.
type VIPState struct {
	Configured bool
	Held       bool
}

func (h *vipHolder) state() VIPState {
	if h == nil {
		return VIPState{}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return VIPState{Configured: true, Held: h.held}
}

// vipWanted is tendVIP's decision: add (PostgreSQL runs here as primary,
// with no error, and this member holds a valid lease), drop (not the
// holder, no valid lease, PostgreSQL stopped or a standby), or leave as
// it is (a status that could not be read: a busy primary keeps its VIP,
// and the fencer removes it at the lease's end anyway).
func vipWanted(holder, leaseValid bool, pgst pgmanager.Status) (add, drop bool, reason string) {
	switch {
	case !holder:
		return false, true, "not the leader key's holder"
	case !leaseValid:
		return false, true, "no valid lease"
	case !pgst.Running:
		return false, true, "postgres not running"
	case pgst.Error != "":
		return false, false, ""
	case pgst.InRecovery:
		return false, true, "postgres runs as a standby"
	}
	return true, false, "primary under a valid lease"
}

// tendVIP adds or removes the VIP after a round of the loop.
func (s *Supervisor) tendVIP(st raftstore.State, pgst pgmanager.Status) {
	h := s.vip
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	now := s.clock.Now()
	h.observe(st, now)
	// The lease is read under mu: see vipHolder.
	add, drop, reason := vipWanted(st.Leader.Holder == h.member, h.lease.valid(st, h.member, now), pgst)
	switch {
	case add && !h.held && now.Before(h.notBefore):
		wait := h.notBefore.Sub(now)
		if h.retry == nil {
			h.logger.Info("vip waits for the previous holder's lease to end", "epoch", st.Leader.Epoch,
				"wait", wait.Round(time.Millisecond))
			h.retry = time.AfterFunc(wait+time.Millisecond, func() { s.retryVIP() })
		}
	case add && !h.held:
		// A failed Add is tried again next round (its error logged once).
		h.tried = true
		err := h.vip.Add()
		h.held = err == nil
		h.log(err, "vip added", "add vip", "reason", reason, "epoch", st.Leader.Epoch)
	case drop && (h.held || h.tried):
		h.removeLocked(reason)
	}
}

// observe notes the first sight of each epoch of the key.
func (h *vipHolder) observe(st raftstore.State, now time.Time) {
	h.maxTTL = max(h.maxTTL, st.Config.TTL, st.Leader.MaxTTL, st.Leader.TTL)
	if st.Leader.Epoch == h.epoch {
		return
	}
	h.epoch = st.Leader.Epoch
	h.notBefore = time.Time{}
	if mayOverlap(st) {
		h.notBefore = now.Add(previousLeaseBound(h.maxTTL))
	}
}

// mayOverlap reports whether the previous holder's lease may still run
// when this epoch's holder sees its key: the coordinator replaced it
// (cause failover or manual_failover) in synchronous mode, where the fast
// path elects as soon as the holder looks gone, before its lease ends
// (docs/guarantees.md, the fast path). A frozen or cut-off holder still
// has the VIP on its interface until its fencer or fence keeper removes
// it at that end, and its host still answers ARP for it: the new holder
// waits. A hand-over (switchover) or a release comes after the old holder
// removed it; an election after the countdown comes after the old lease
// ended. A History without the epoch's event counts as overlapping.
func mayOverlap(st raftstore.State) bool {
	for i := len(st.History) - 1; i >= 0; i-- {
		e := st.History[i]
		if e.Kind != raftstore.EventLeader || e.Epoch != st.Leader.Epoch {
			continue
		}
		switch e.Cause {
		case raftstore.CauseFailover, raftstore.CauseManualFailover:
			return st.Config.SynchronousMode
		}
		return false
	}
	return st.Leader.Epoch > 1
}

// previousLeaseBound is how long after a holder's key was replaced its
// lease may still run, on this host's clock: it ends ttl − margin after
// its last renewal was sent, which was before the replacement, so before
// this member saw it; plus the drift between the two clocks and the
// fencing budget (the keeper removes the VIP right after its kill).
func previousLeaseBound(ttl time.Duration) time.Duration {
	return ttl - Margin(ttl) + time.Duration(2*raftstore.ClockRate*float64(ttl)) + FenceBudget
}

// retryVIP is tendVIP again once the previous holder's lease has ended,
// with PostgreSQL's last published status (the loop may be between
// rounds for a while: a steady holder only renews).
func (s *Supervisor) retryVIP() {
	h := s.vip
	h.mu.Lock()
	h.retry = nil
	h.mu.Unlock()
	l := s.local.Load()
	if l == nil || !s.pg.Running() {
		return
	}
	s.tendVIP(s.store.State(), l.PG)
}

// drop removes the VIP if held (the fencer, a stop, a fence, the agent's
// shutdown).
func (h *vipHolder) drop(reason string) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.retry != nil {
		// A stop or a lease end cancels a pending add; the next round
		// decides again.
		h.retry.Stop()
		h.retry = nil
	}
	if h.held || h.tried {
		h.removeLocked(reason)
	}
}

func (h *vipHolder) removeLocked(reason string) {
	err := h.vip.Remove()
	if err == nil {
		h.held, h.tried = false, false
	}
	// A failed removal is tried again by the next round, stop, fence or
	// lease end (and the fence keeper removes it at the lease's end).
	h.log(err, "vip removed", "remove vip", "reason", reason)
}

// log says what was done, or logs a failure once until it changes or the
// call succeeds.
func (h *vipHolder) log(err error, done, what string, kv ...any) {
	if err == nil {
		h.lastErr = ""
		h.logger.Info(done, kv...)
		return
	}
	if err.Error() != h.lastErr {
		h.lastErr = err.Error()
		h.logger.Error(what+" failed", append(kv, "error", err)...)
	}
}

// vipPostgres removes the VIP before every stop of PostgreSQL and right
// after every fence, whoever calls them (a demotion, a switchover's
// clean stop, a hard failover, a release, the agent's shutdown, the
// fencer).
type vipPostgres struct {
	Postgres
	vip *vipHolder
}

func (p vipPostgres) Stop(ctx context.Context, mode pgmanager.StopMode) error {
	p.vip.drop("postgres stopping")
	return p.Postgres.Stop(ctx, mode)
}

func (p vipPostgres) Fence() bool {
	fenced := p.Postgres.Fence()
	p.vip.drop("postgres fenced")
	return fenced
}

// vipLeaseEnded is the fencer's part: at the end of a lease that was not
// renewed, and when the lease is given up or moves on, the VIP goes.
func (s *Supervisor) vipLeaseEnded(reason string) { s.vip.drop(reason) }
