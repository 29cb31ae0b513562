package failover

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"raftgres/pgmanager"
	"raftgres/raftstore"
)

// fakeVIP records Add and Remove in the rig's events, so their order with
// PostgreSQL's stops and fences can be checked.
type fakeVIP struct {
	ev     *events
	mu     sync.Mutex
	held   bool
	addErr error
}

func (v *fakeVIP) Add() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.ev.add("vip Add")
	if v.addErr != nil {
		return v.addErr
	}
	v.held = true
	return nil
}

func (v *fakeVIP) Remove() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.ev.add("vip Remove")
	v.held = false
	return nil
}

func (v *fakeVIP) isHeld() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.held
}

// newVIPRig is newRig with a fake VIP; the key's epoch was an election
// (no previous lease to wait for) unless st's History says otherwise.
func newVIPRig(t *testing.T, me string, st raftstore.State, pgst pgmanager.Status) (*rig, *fakeVIP) {
	t.Helper()
	if len(st.History) == 0 {
		st.History = append(st.History, raftstore.Event{Kind: raftstore.EventLeader, Epoch: st.Leader.Epoch,
			Member: st.Leader.Holder, Cause: raftstore.CauseElection})
	}
	r := newRig(t, me, st, pgst)
	v := &fakeVIP{ev: r.ev}
	r.sup.SetVIP(v, hclog.New(&hclog.LoggerOptions{Output: r.logs, Level: hclog.Debug}).Named(VIPLoggerName))
	return r, v
}

func TestVIPWanted(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name              string
		holder, lease     bool
		pgst              pgmanager.Status
		wantAdd, wantDrop bool
	}{
		{"primary under a valid lease", true, true, runningPrimary, true, false},
		{"not the holder", false, true, runningPrimary, false, true},
		{"lease not valid", true, false, runningPrimary, false, true},
		{"postgres stopped", true, true, stopped, false, true},
		{"standby (before its promotion)", true, true, runningReplica, false, true},
		{"status unreadable: keep as is", true, true, pgmanager.Status{Running: true, Error: "timeout"}, false, false},
		{"not the holder, status unreadable", false, true, pgmanager.Status{Running: true, Error: "timeout"}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			add, drop, reason := vipWanted(tc.holder, tc.lease, tc.pgst)
			if add != tc.wantAdd || drop != tc.wantDrop || (add || drop) && reason == "" {
				t.Errorf("vipWanted = add %v drop %v (%q), want add %v drop %v", add, drop, reason, tc.wantAdd, tc.wantDrop)
			}
		})
	}
}

// The holder adds the VIP once PostgreSQL runs as primary under its
// lease, once; the fencer removes it at the lease's end, after fencing.
func TestVIPHeldOnlyUnderTheLease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, v := newVIPRig(t, "pg1", testState("pg1", "pg1", "pg2"), runningPrimary)
	r.sup.cycle(ctx) // renews, then adds
	if !v.isHeld() || r.ev.count("vip Add") != 1 {
		t.Fatalf("after a round as primary under a lease: held %v, events %v", v.isHeld(), r.ev.all())
	}
	if !r.sup.Local().VIP.Held || !r.sup.Local().VIP.Configured {
		t.Errorf("Local().VIP = %+v, want configured and held", r.sup.Local().VIP)
	}
	r.sup.cycle(ctx)
	if n := r.ev.count("vip Add"); n != 1 {
		t.Errorf("%d adds after two rounds, want 1", n)
	}
	until := r.sup.lease.End()
	r.clock.Advance(leaseLength + time.Millisecond)
	// A round after the lease's end but before the fencer ran: the loop
	// itself sees no valid lease.
	r.sup.tendVIP(r.store.State(), runningPrimary)
	if v.isHeld() {
		t.Fatalf("still held after the lease's end")
	}
	// Added back (the lease was renewed), then the fencer at its end.
	r.renew()
	r.sup.tendVIP(r.store.State(), runningPrimary)
	until = r.sup.lease.End()
	r.clock.Advance(leaseLength + time.Millisecond)
	if !r.sup.fenceIfEnded(until) {
		t.Fatalf("fenceIfEnded = false at the lease's end")
	}
	fence, remove := r.ev.index("pg Fence"), lastIndex(r.ev, "vip Remove")
	if v.isHeld() || fence < 0 || remove < fence {
		t.Errorf("at the lease's end: held %v, want it removed after the fence; events %v", v.isHeld(), r.ev.all())
	}
	if r.sup.Local().VIP.Held {
		t.Errorf("Local().VIP.Held after the lease's end")
	}
}

func lastIndex(e *events, prefix string) int {
	all := e.all()
	for i := len(all) - 1; i >= 0; i-- {
		if len(all[i]) >= len(prefix) && all[i][:len(prefix)] == prefix {
			return i
		}
	}
	return -1
}

// A member that is not the holder never adds it, whatever PostgreSQL
// says; nor does a holder whose PostgreSQL is still a standby.
func TestVIPNeverHeldWithoutTheKey(t *testing.T) {
	t.Parallel()
	r, v := newVIPRig(t, "pg2", testState("pg1", "pg1", "pg2"), runningReplica)
	r.sup.cycle(context.Background())
	r.sup.tendVIP(r.store.State(), runningPrimary) // a primary here without the key (before its demotion)
	if r.ev.count("vip Add") != 0 || v.isHeld() {
		t.Errorf("a member without the key added the VIP: %v", r.ev.all())
	}
	h, hv := newVIPRig(t, "pg1", testState("pg1", "pg1", "pg2"), runningReplica)
	h.renew()
	h.sup.tendVIP(h.store.State(), runningReplica)
	if h.ev.count("vip Add") != 0 || hv.isHeld() {
		t.Errorf("a holder whose postgres is a standby added the VIP: %v", h.ev.all())
	}
}

// Every stop of PostgreSQL removes the VIP first: a demotion, a
// switchover's clean stop, the agent's shutdown all go through Stop.
func TestVIPRemovedBeforePostgresStops(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, v := newVIPRig(t, "pg1", testState("pg1", "pg1", "pg2"), runningPrimary)
	r.sup.cycle(ctx)
	if !v.isHeld() {
		t.Fatalf("not added: %v", r.ev.all())
	}
	r.sup.shutdown()
	remove, stop := r.ev.index("vip Remove"), r.ev.index("pg Stop")
	if v.isHeld() || remove < 0 || stop < 0 || remove > stop {
		t.Errorf("shutdown: held %v, want the VIP removed before postgres stops; events %v", v.isHeld(), r.ev.all())
	}
}

// When the lease is given up (a hand-over, a release) or the key moves,
// the fencer removes the VIP without waiting for a round of the loop.
func TestFencerRemovesTheVIPWhenTheLeaseIsGivenUp(t *testing.T) {
	t.Parallel()
	r, v := newVIPRig(t, "pg1", testState("pg1", "pg1", "pg2"), runningPrimary)
	r.sup.cycle(context.Background())
	if !v.isHeld() {
		t.Fatalf("not added: %v", r.ev.all())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.sup.runFencer(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	r.sup.lease.forget()
	deadline := time.Now().Add(5 * time.Second)
	for v.isHeld() && time.Now().Before(deadline) {
		<-time.After(time.Millisecond)
	}
	if v.isHeld() {
		t.Errorf("VIP still held after the lease was given up: %v", r.ev.all())
	}
}

// A failing Add is tried again each round and logged once; a removal is
// tried all the same (the address may be there).
func TestVIPFailingAddIsRetriedAndRemoved(t *testing.T) {
	t.Parallel()
	r, v := newVIPRig(t, "pg1", testState("pg1", "pg1", "pg2"), runningPrimary)
	v.mu.Lock()
	v.addErr = errors.New("no such interface")
	v.mu.Unlock()
	r.renew()
	r.sup.tendVIP(r.store.State(), runningPrimary)
	r.sup.tendVIP(r.store.State(), runningPrimary)
	if r.sup.Local().VIP.Held {
		t.Errorf("a failed Add counts as held")
	}
	if n := r.ev.count("vip Add"); n != 2 {
		t.Errorf("%d adds, want 2 (tried again next round)", n)
	}
	if n := strings.Count(r.logs.String(), "add vip failed"); n != 1 {
		t.Errorf("the failure was logged %d times, want once:\n%s", n, r.logs.String())
	}
	r.sup.vip.drop("test")
	if n := r.ev.count("vip Remove"); n != 1 {
		t.Errorf("%d removals after a failed Add, want 1", n)
	}
}

// After a failover in synchronous mode (the fast path may have elected
// this member before the old lease ended) the new holder adds the VIP only
// once the old lease must have ended: ttl − margin after it saw its key,
// plus drift and the fencing budget. After a switchover it adds at once.
func TestVIPWaitsForThePreviousLeaseAfterAFailover(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		cause string
		sync  bool
		wait  bool
	}{
		{"fast path possible", raftstore.CauseFailover, true, true},
		{"manual failover, sync", raftstore.CauseManualFailover, true, true},
		{"failover, async: after the countdown", raftstore.CauseFailover, false, false},
		{"switchover", raftstore.CauseSwitchover, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := testState("pg2", "pg1", "pg2")
			st.Config.SynchronousMode = tc.sync
			st.History = []raftstore.Event{{Kind: raftstore.EventLeader, Epoch: st.Leader.Epoch, Member: "pg2", Cause: tc.cause}}
			r, v := newVIPRig(t, "pg2", st, runningPrimary)
			defer r.sup.vip.drop("test over")
			r.renew()
			r.sup.tendVIP(r.store.State(), runningPrimary)
			if v.isHeld() == tc.wait {
				t.Fatalf("held %v right after taking the key, want %v", v.isHeld(), !tc.wait)
			}
			if !tc.wait {
				return
			}
			bound := previousLeaseBound(st.Config.TTL)
			r.clock.Advance(bound - 10*time.Millisecond)
			r.renew()
			r.sup.tendVIP(r.store.State(), runningPrimary)
			if v.isHeld() {
				t.Fatalf("added %s after seeing the key, before the old lease's bound %s", bound-10*time.Millisecond, bound)
			}
			r.clock.Advance(20 * time.Millisecond)
			r.sup.tendVIP(r.store.State(), runningPrimary)
			if !v.isHeld() {
				t.Fatalf("not added after the old lease's bound: %v", r.ev.all())
			}
		})
	}
	if b := previousLeaseBound(3 * time.Second); b < 3*time.Second-Margin(3*time.Second)+FenceBudget {
		t.Errorf("previousLeaseBound(3s) = %s, shorter than the lease plus the fencing budget", b)
	}
}
