package failover

// Coordinator tests against the fake clock and store: the lease countdown
// (lead's loop, stepped one iteration at a time), shouldElect, and elect's
// rate-limited "no eligible candidate".

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"raftgres/raftstore"
)

// coordRig runs Coordinator.lead in a goroutine whose loop stops at every
// iteration (fakeStore.Changes is a barrier): step lets exactly one
// iteration run with the clock and state the test set, and returns when it
// is done. Nothing sleeps; the loop's own ticker never decides anything.
type coordRig struct {
	t       *testing.T
	clock   *fakeClock
	store   *fakeStore
	c       *Coordinator
	logs    *syncBuffer
	pending chan struct{}
}

func newCoordRig(t *testing.T, st raftstore.State, opts ...func(*Coordinator)) *coordRig {
	t.Helper()
	r := &coordRig{t: t, clock: newFakeClock(), logs: &syncBuffer{}}
	r.store = newFakeStore(st, &events{})
	r.store.iterate = make(chan chan struct{})
	logger := hclog.New(&hclog.LoggerOptions{Output: r.logs, Level: hclog.Debug})
	r.c = NewCoordinator("pg3", st.Config, r.store, logger)
	r.c.clock = r.clock
	for _, o := range opts {
		o(r.c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := r.c.lead(ctx); err != nil {
			t.Errorf("lead = %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		if r.pending != nil {
			close(r.pending)
		}
		for { // let the loop run out
			select {
			case s := <-r.store.iterate:
				close(s)
			case <-done:
				if t.Failed() {
					t.Logf("log:\n%s", r.logs.String())
				}
				return
			}
		}
	})
	r.wait()
	return r
}

// wait waits until the loop is at its next iteration.
func (r *coordRig) wait() {
	r.t.Helper()
	select {
	case r.pending = <-r.store.iterate:
	case <-time.After(5 * time.Second):
		r.t.Fatalf("coordinator loop did not come back")
	}
}

// step runs one iteration of the loop at the current clock and state.
func (r *coordRig) step() {
	r.t.Helper()
	close(r.pending)
	r.pending = nil
	r.wait()
}

// report makes every member but the holder report again (changed
// ReportedAt), so they stay fresh on the coordinator's report clock.
func (r *coordRig) report() {
	now := r.clock.Now()
	r.store.edit(func(s *raftstore.State) {
		for name, m := range s.Members {
			if name != s.Leader.Holder {
				m.Status.ReportedAt = now
			}
		}
	})
}

// advance moves the clock, lets the members report and runs one iteration.
func (r *coordRig) advance(d time.Duration) {
	r.t.Helper()
	r.clock.Advance(d)
	r.report()
	r.step()
}

func (r *coordRig) holder() raftstore.LeaderKey { return r.store.cluster().Leader }

// The countdown starts when leadership is established (never earlier,
// whatever the key's history) and restarts at every applied renewal;
// reports of other members do not restart it.
func TestCoordinatorCountdownRestartsOnRenewalAndNeverElectsBeforeTTL(t *testing.T) {
	t.Parallel()
	const ttl = 3 * time.Second
	t.Run("no renewal after leadership was established", func(t *testing.T) {
		t.Parallel()
		r := newCoordRig(t, testState("pg1", "pg1", "pg2", "pg3"))
		r.advance(0)
		r.advance(ttl - time.Millisecond)
		if got := r.holder(); got.Holder != "pg1" {
			t.Fatalf("elected %+v before ttl passed since leadership was established", got)
		}
		r.advance(time.Millisecond)
		if got := r.holder(); got.Holder != "pg2" || got.Epoch != 6 {
			t.Fatalf("key after ttl without renewal = %+v, want pg2 at epoch 6", got)
		}
	})
	t.Run("a member whose Raft heartbeats fail is not fresh at the first election", func(t *testing.T) {
		t.Parallel()
		// pg2 died before this coordinator started: its last report still
		// says "running replica" and it sorts first by name, but the Raft
		// leader's heartbeats to it fail.
		r := newCoordRig(t, testState("pg1", "pg1", "pg2", "pg3"))
		r.store.setUnreachable("pg2", r.clock.Now().Add(-time.Second))
		r.step()
		for i := 0; i < 3; i++ {
			r.clock.Advance(time.Second)
			r.store.edit(func(s *raftstore.State) { s.Members["pg3"].Status.ReportedAt = r.clock.Now() })
			r.step()
		}
		if got := r.holder(); got.Holder != "pg3" {
			t.Fatalf("key after ttl = %+v, want pg3 (pg2 is unreachable over Raft)", got)
		}
	})
	t.Run("a member whose report stopped changing is not fresh after StaleAfter", func(t *testing.T) {
		t.Parallel()
		stale := testState("pg1", "pg1", "pg2", "pg3").Config.StaleAfter()
		for _, tc := range []struct {
			unchanged time.Duration
			want      string
		}{{stale - time.Second, "pg2"}, {stale, "pg3"}} {
			st := testState("pg1", "pg1", "pg2", "pg3")
			st.Config.Pause = true // no election while the reports age
			r := newCoordRig(t, st)
			r.step()
			for elapsed := time.Duration(0); elapsed < tc.unchanged; elapsed += time.Second {
				r.clock.Advance(time.Second)
				r.store.edit(func(s *raftstore.State) { s.Members["pg3"].Status.ReportedAt = r.clock.Now() })
				r.step()
			}
			r.store.edit(func(s *raftstore.State) { s.Config.Pause = false })
			r.step()
			if got := r.holder(); got.Holder != tc.want {
				t.Errorf("key after pg2's report was unchanged for %s (stale after %s) = %+v, want %s",
					tc.unchanged, stale, got, tc.want)
			}
		}
	})
	t.Run("every renewal restarts the countdown", func(t *testing.T) {
		t.Parallel()
		r := newCoordRig(t, testState("pg1", "pg1", "pg2", "pg3"))
		for i := 0; i < 4; i++ { // renewals every 2.9s for ~12s: never elected
			r.advance(ttl - 100*time.Millisecond)
			if res := r.store.commit(raftstore.RenewLeader{Holder: "pg1", Epoch: 5}); res.Err != nil {
				t.Fatal(res.Err)
			}
			r.step() // the renewal is applied and seen now
			if got := r.holder(); got.Holder != "pg1" || got.Epoch != 5 {
				t.Fatalf("round %d: elected %+v although pg1 renewed within ttl", i, got)
			}
		}
		r.advance(ttl - time.Millisecond)
		if got := r.holder(); got.Holder != "pg1" {
			t.Fatalf("elected %+v before ttl since the last renewal", got)
		}
		r.advance(time.Millisecond)
		if got := r.holder(); got.Holder != "pg2" {
			t.Fatalf("key after ttl since the last renewal = %+v, want pg2", got)
		}
	})
}

// A paused cluster never elects: not on an expired lease, not on a
// released key.
func TestCoordinatorNeverElectsWhilePaused(t *testing.T) {
	t.Parallel()
	for _, holder := range []string{"pg1", ""} {
		t.Run("holder="+holder, func(t *testing.T) {
			t.Parallel()
			st := testState(holder, "pg1", "pg2", "pg3")
			st.Config.Pause = true
			r := newCoordRig(t, st)
			for i := 0; i < 10; i++ {
				r.advance(time.Second)
			}
			if got := r.holder(); got.Holder != holder || got.Epoch != 5 {
				t.Fatalf("paused cluster: key = %+v, want %q at epoch 5", got, holder)
			}
			r.store.edit(func(s *raftstore.State) { s.Config.Pause = false }) // resume
			r.advance(0)
			if holder == "" && r.holder().Holder == "" {
				t.Errorf("released key not elected on at once after resume")
			}
		})
	}
	st := testState("pg1", "pg1", "pg2")
	c := &Coordinator{}
	for _, tc := range []struct {
		name   string
		edit   func(*raftstore.State)
		since  time.Duration
		should bool
	}{
		{"paused, lease long expired", func(s *raftstore.State) { s.Config.Pause = true }, time.Hour, false},
		{"paused, key released", func(s *raftstore.State) { s.Config.Pause = true; s.Leader.Holder = "" }, 0, false},
		{"not initialized", func(s *raftstore.State) { s.Initialize = "" }, time.Hour, false},
		{"within ttl", func(*raftstore.State) {}, st.Config.TTL - 1, false},
		{"ttl passed", func(*raftstore.State) {}, st.Config.TTL, true},
		{"key released", func(s *raftstore.State) { s.Leader.Holder = "" }, 0, true},
	} {
		s := st.Clone()
		tc.edit(&s)
		t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
		if got := c.shouldElect(s, t0.Add(tc.since), t0.Add(s.LeaseTTL())); got != tc.should {
			t.Errorf("shouldElect(%s) = %v, want %v", tc.name, got, tc.should)
		}
	}
}

// "no eligible candidate" is logged at most once per ttl while the
// cluster has no primary and nobody can be promoted.
func TestCoordinatorLogsNoEligibleCandidateAtMostOncePerTTL(t *testing.T) {
	t.Parallel()
	st := testState("", "pg1", "pg2", "pg3")
	st.Members["pg1"].Status.State = "stopped"
	st.Members["pg2"].Tags.NoFailover = true
	st.Members["pg3"].Status.Role = "uninitialized"
	clock := newFakeClock()
	logs := &syncBuffer{}
	store := newFakeStore(st, &events{})
	c := NewCoordinator("pg3", st.Config, store, hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug}))
	c.clock = clock
	seen := reportClock{}
	for i := 0; i <= 12; i++ { // every 500ms for 6s = 2 ttl
		now := clock.Now()
		seen.observe(store.State(), now)
		c.elect(context.Background(), store.State(), seen, now, "")
		clock.Advance(st.Config.TTL / 6)
	}
	if n := strings.Count(logs.String(), "no eligible candidate"); n != 3 {
		t.Errorf("\"no eligible candidate\" logged %d times over 2 ttl, want 3 (at 0, ttl, 2 ttl):\n%s", n, logs.String())
	}
	if got := store.cluster().Leader; got.Holder != "" || got.Epoch != 5 {
		t.Errorf("key = %+v, want still released", got)
	}
}

// The coordinator sleeps until the next deadline it decides on (the lease
// at ttl, the fast path's detection), and at most loop_wait otherwise.
func TestCoordinatorNextWake(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name        string
		st          func() raftstore.State
		sinceChange time.Duration
		unreachable time.Duration // > 0: the holder's heartbeats fail since t0+this
		want        time.Duration
	}{
		{"no holder: poll at loop_wait", func() raftstore.State { return testState("", "pg1", "pg2") }, 0, 0, 300 * time.Millisecond},
		{"async, fresh renewal: loop_wait", func() raftstore.State { return testState("pg1", "pg1", "pg2") }, 0, 0, 300 * time.Millisecond},
		{"async, lease ends in 100ms", func() raftstore.State { return testState("pg1", "pg1", "pg2") }, 2900 * time.Millisecond, 0, 100 * time.Millisecond},
		{"async, lease ended", func() raftstore.State { return testState("pg1", "pg1", "pg2") }, 4 * time.Second, 0, time.Millisecond},
		{"sync, renewal 1.3s ago: detection in 100ms", syncTestState, 1300 * time.Millisecond, 0, 100 * time.Millisecond},
		{"sync, unreachable: window from last contact", syncTestState, 200 * time.Millisecond, 100 * time.Millisecond, 300 * time.Millisecond},
		{"sync, unreachable since long: window from the renewal", syncTestState, 200 * time.Millisecond, -time.Second, 200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.st()
			st.Config.LoopWait = 300 * time.Millisecond
			store := newFakeStore(st, &events{})
			if tc.unreachable != 0 {
				store.setUnreachable(st.Leader.Holder, t0.Add(tc.unreachable))
			}
			c := NewCoordinator("pg3", st.Config, store, hclog.NewNullLogger())
			if got := c.nextWake(st, t0.Add(tc.sinceChange), t0, t0.Add(st.LeaseTTL())); got != tc.want {
				t.Fatalf("nextWake = %s, want %s", got, tc.want)
			}
		})
	}
}

// After `raftgres recover` the first election waits for every survivor's
// report, so that the most advanced one is promoted and not the first to
// start; a survivor that never reports is waited for StaleAfter at most.
func TestCoordinatorWaitsForRecoveredSurvivors(t *testing.T) {
	t.Parallel()
	recovered := func() raftstore.State {
		st := testState("", "pg1", "pg2", "pg3")
		st.Config.SynchronousMode = true
		raftstore.RecoveryEdit(&st, 60, []string{"pg1", "pg2"}, time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC), "test")
		return st
	}
	running := func(s *raftstore.State, name string, lsn uint64, at time.Time) {
		s.Members[name].Status = raftstore.MemberStatus{Role: "replica", State: "running", SystemID: testSysID,
			ReceivedLSN: lsn, ReplayedLSN: lsn, ReportedAt: at}
	}
	t.Run("the more advanced survivor, reporting second, is elected", func(t *testing.T) {
		t.Parallel()
		r := newCoordRig(t, recovered())
		r.clock.Advance(time.Second)
		r.store.edit(func(s *raftstore.State) { running(s, "pg1", 0x1000, r.clock.Now()) })
		r.step()
		if got := r.holder(); got.Holder != "" {
			t.Fatalf("elected %+v while pg2 was still recovering", got)
		}
		r.clock.Advance(time.Second)
		r.store.edit(func(s *raftstore.State) { running(s, "pg2", 0x2000, r.clock.Now()) })
		r.step()
		if got := r.holder(); got.Holder != "pg2" {
			t.Fatalf("key = %+v, want pg2 (most WAL)", got)
		}
	})
	t.Run("a survivor that never reports is waited for StaleAfter", func(t *testing.T) {
		t.Parallel()
		st := recovered()
		r := newCoordRig(t, st)
		for elapsed := time.Duration(0); elapsed < st.Config.StaleAfter(); elapsed += time.Second {
			if got := r.holder(); got.Holder != "" {
				t.Fatalf("elected %+v %s after taking office, before StaleAfter (%s)", got, elapsed, st.Config.StaleAfter())
			}
			r.clock.Advance(time.Second)
			r.store.edit(func(s *raftstore.State) { running(s, "pg1", 0x1000, r.clock.Now()) })
			r.step()
		}
		if got := r.holder(); got.Holder != "pg1" {
			t.Fatalf("key after StaleAfter = %+v, want pg1", got)
		}
	})
}
