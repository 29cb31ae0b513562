package failover

import (
	"context"
	"sync"

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
}

// SetVIP makes the supervisor hold v while it is primary under a valid
// lease; call it before Run. Every Stop and Fence of PostgreSQL removes v
// first (Fence: right after): a VIP never points at a server that is
// stopping, demoted or fenced.
func (s *Supervisor) SetVIP(v VIP, name string) {
	if v == nil {
		return
	}
	s.vip = &vipHolder{vip: v, lease: s.lease, member: s.cfg.Member,
		logger: s.logger.ResetNamed(VIPLoggerName).With("vip", name)}
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
	// The lease is read under mu: see vipHolder.
	add, drop, reason := vipWanted(st.Leader.Holder == h.member, h.lease.valid(st, h.member, s.clock.Now()), pgst)
	switch {
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

// drop removes the VIP if held (the fencer, a stop, a fence, the agent's
// shutdown).
func (h *vipHolder) drop(reason string) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
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
