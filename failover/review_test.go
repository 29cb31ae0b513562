package failover

// Tests of the findings of the review of 2f0509d that live in the
// failover package: each fails without its fix.

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"raftgres/pgmanager"
	"raftgres/raftstore"
)

// Review #2: a lease renewed under ttl 30s outlives a ttl lowered to 3s
// later; the coordinator must wait for the renewal's ttl.
func TestLoweredTTLDoesNotShortenAGivenLease(t *testing.T) {
	t.Parallel()
	st := testState("pg1", "pg1", "pg2", "pg3")
	st.Leader.Renewed, st.Leader.TTL = true, 30*time.Second // renewed under ttl 30s
	st.Config.TTL = 3 * time.Second                         // then lowered by edit-config
	r := newCoordRig(t, st)
	r.advance(0)
	for elapsed := time.Duration(0); elapsed < 30*time.Second-time.Second; elapsed += time.Second {
		r.advance(time.Second)
		if got := r.holder(); got.Holder != "pg1" {
			t.Fatalf("elected %+v %s after the last renewal, whose lease runs 30s", got, elapsed+time.Second)
		}
	}
	r.advance(time.Second)
	if got := r.holder(); got.Holder == "pg1" {
		t.Fatalf("no election once the renewal's 30s passed: key %+v", got)
	}
}

// Review #3(c): the coordinator ranked pg2 on a view where Sync held it;
// the holder's narrowing committed first; the election must not commit.
func TestElectionOnAStaleSyncViewIsRefused(t *testing.T) {
	t.Parallel()
	st := syncTestState()
	st.Leader.Renewed = true
	f := newFakeStore(st, &events{})
	cmd, ok := Elect(st, ElectionInput{Fresh: map[string]bool{"pg2": true, "pg3": true}, Exclude: "pg1", Actor: "pg3"})
	if !ok || cmd.Holder != "pg2" {
		t.Fatalf("Elect = %+v, %v; want pg2", cmd, ok)
	}
	prev := st.Sync
	if res := f.commit(raftstore.SetSync{Primary: "pg1", Epoch: st.Leader.Epoch, Prev: &prev}); res.Err != nil {
		t.Fatalf("narrowing: %v", res.Err)
	}
	if res := f.commit(cmd); !errors.Is(res.Err, raftstore.ErrNotElectable) {
		t.Fatalf("election after the narrowing committed: err %v, want ErrNotElectable", res.Err)
	}
}

// Review #10: pg2 was elected (fast path) and wedged before its first
// renewal; pg1, the replaced primary, now a running replica, holds every
// acknowledged commit and must be electable. Review #4: once the new
// holder renewed (it may have acknowledged commits alone), nobody else is.
func TestLastPrimaryElectableWhileTheNewHolderNeverRenewed(t *testing.T) {
	t.Parallel()
	st := syncTestState()
	st.Leader.Renewed = true
	f := newFakeStore(st, &events{})
	cmd, _ := Elect(st, ElectionInput{Fresh: map[string]bool{"pg2": true, "pg3": true}, Exclude: "pg1", Actor: "pg3"})
	if res := f.commit(cmd); res.Err != nil {
		t.Fatalf("election of pg2: %v", res.Err)
	}
	st = f.State()
	st.Members["pg1"].Status.Role, st.Members["pg2"].Status.Role = "replica", "primary"
	fresh := map[string]bool{"pg1": true, "pg3": true}
	ranked := RankCandidates(st, ElectionInput{Fresh: fresh, Exclude: "pg2"})
	if ranked[0].Name != "pg1" || ranked[0].Why != "" {
		t.Fatalf("ranking with pg2 never renewed = %+v, want pg1 eligible first", ranked)
	}
	if c := ranked[1]; c.Name == "pg3" && c.Why == "" {
		t.Fatalf("pg3, never synchronous, eligible: %+v", ranked)
	}
	if res := f.commit(raftstore.RenewLeader{Holder: "pg2", Epoch: st.Leader.Epoch, TTL: st.Config.TTL}); res.Err != nil {
		t.Fatalf("renewal: %v", res.Err)
	}
	st = f.State()
	st.Members["pg1"].Status.Role = "replica"
	for _, c := range RankCandidates(st, ElectionInput{Fresh: fresh, Exclude: "pg2"}) {
		if c.Why == "" {
			t.Fatalf("%s eligible after pg2 renewed with no standby recorded: %+v", c.Name, c)
		}
	}
}

func TestKeepThroughBlip(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	blip := 1500 * time.Millisecond
	for _, tc := range []struct {
		name           string
		want, recorded []string
		okAgo          time.Duration
		out            []string
	}{
		{"recorded still wanted", []string{"b"}, []string{"b"}, 0, []string{"b"}},
		{"recorded blipped briefly", nil, []string{"b"}, time.Second, []string{"b"}},
		{"recorded blipped briefly, another streams", []string{"c"}, []string{"b"}, time.Second, []string{"b"}},
		{"recorded gone longer than the bound", []string{"c"}, []string{"b"}, 2 * time.Second, []string{"c"}},
		{"nothing recorded", []string{"c"}, nil, 0, []string{"c"}},
	} {
		got := keepThroughBlip(tc.want, tc.recorded, map[string]time.Time{"b": now.Add(-tc.okAgo)}, now, blip)
		if !slices.Equal(got, tc.out) {
			t.Errorf("%s: keepThroughBlip = %v, want %v", tc.name, got, tc.out)
		}
	}
}

// The liveness case of a 5-minute sync-mode fault run: the recorded
// standby blips; the holder must not narrow it out (and so must keep it
// electable) for less than SyncBlip.
func TestHolderKeepsItsSyncStandbyThroughABlip(t *testing.T) {
	t.Parallel()
	st := syncTestState()
	st.Leader.Renewed = true
	gateAndPG2 := GateStandbyNames([]string{"pg2"}, false)
	streamingPG2 := pgmanager.Status{Running: true, SystemID: testSysID, Timeline: 2, CurrentLSN: 0x3000000,
		SyncStandbyNames: gateAndPG2,
		Replicas:         []pgmanager.Replica{{ApplicationName: "pg2", State: "streaming", SyncState: "sync", FlushLSN: 0x3000000}}}
	r := newRig(t, "pg1", st, streamingPG2)
	ctx := context.Background()
	fresh := func() {
		r.store.edit(func(s *raftstore.State) {
			for _, m := range s.Members {
				m.Status.ReportedAt = r.clock.Now()
			}
		})
	}
	fresh()
	r.sup.manageSync(ctx, r.store.State(), streamingPG2)
	blipped := streamingPG2
	blipped.Replicas = nil
	r.clock.Advance(1400 * time.Millisecond) // ttl 3s: SyncBlip is 1.5s
	fresh()
	r.sup.manageSync(ctx, r.store.State(), blipped)
	if got := r.store.State().Sync.Standbys; !slices.Equal(got, []string{"pg2"}) {
		t.Fatalf("record after a blip shorter than SyncBlip = %v, want [pg2]", got)
	}
	r.clock.Advance(200 * time.Millisecond)
	fresh()
	r.sup.manageSync(ctx, r.store.State(), blipped)
	if got := r.store.State().Sync.Standbys; len(got) != 0 {
		t.Fatalf("record after pg2 was gone longer than SyncBlip = %v, want none", got)
	}
}

// Review #1, #9: every lease end reaches the fence keeper (a process that
// does not freeze with the agent).
func TestFencerHandsEveryLeaseEndToTheFenceKeeper(t *testing.T) {
	t.Parallel()
	r := newRig(t, "pg1", testState("pg1", "pg1", "pg2"), runningPrimary)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.sup.runFencer(ctx) }()
	defer func() { cancel(); <-done }()
	armed := func() time.Time {
		r.pg.mu.Lock()
		defer r.pg.mu.Unlock()
		return r.pg.fenceAt
	}
	waitFenceAt := func(want time.Time, what string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !armed().Equal(want) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: fence keeper armed at %v, want %v", what, armed(), want)
			}
			time.Sleep(time.Millisecond) // polling another goroutine's progress
		}
	}
	r.renew()
	first := r.sup.lease.End()
	waitFenceAt(first, "first renewal")
	r.clock.Advance(time.Second)
	r.renew()
	if second := r.sup.lease.End(); !second.After(first) {
		t.Fatalf("second lease end %v not after the first %v", second, first)
	}
	waitFenceAt(r.sup.lease.End(), "second renewal")
	armedAt := r.sup.lease.End()
	r.sup.lease.reset()
	r.clock.Advance(time.Second)
	r.renew() // a new lease after one that was dropped
	waitFenceAt(r.sup.lease.End(), "renewal after a reset")
	if !r.sup.lease.End().After(armedAt) {
		t.Fatal("renewal after the reset did not move the lease end")
	}
}

// Review #11: a holder whose commit gate cannot connect stops PostgreSQL
// and releases the key after ttl, instead of letting every commit hang.
func TestHolderWhoseGateCannotConnectReleasesTheKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	primary := runningPrimary
	primary.SyncStandbyNames = gateOnly
	r := newRig(t, "pg1", testState("pg1", "pg1", "pg2"), primary)
	r.pg.set(func(p *fakePostgres) { p.gateDown = true })
	st := r.store.State()
	ttl := st.Config.TTL
	for elapsed := time.Duration(0); elapsed < ttl; elapsed += 500 * time.Millisecond {
		r.renew()
		r.sup.watchGate(ctx, r.store.State(), primary)
		if h := r.store.State().Leader.Holder; h != "pg1" {
			t.Fatalf("key released after %s of a disconnected gate, before ttl %s", elapsed, ttl)
		}
		r.clock.Advance(500 * time.Millisecond)
	}
	r.renew()
	r.sup.watchGate(ctx, r.store.State(), primary)
	if h := r.store.State().Leader.Holder; h != "" {
		t.Fatalf("holder after ttl with its gate disconnected = %q, want the key released", h)
	}
	if r.ev.count("pg Stop") == 0 {
		t.Fatalf("postgres not stopped before the release: %v", r.ev.all())
	}
	// A connected gate never releases.
	r2 := newRig(t, "pg1", testState("pg1", "pg1", "pg2"), primary)
	for i := 0; i < 10; i++ {
		r2.renew()
		r2.sup.watchGate(ctx, r2.store.State(), primary)
		r2.clock.Advance(500 * time.Millisecond)
	}
	if h := r2.store.State().Leader.Holder; h != "pg1" {
		t.Fatalf("holder with a connected gate = %q, want pg1", h)
	}
}

// Review #12: only the holder's Raft port is cut; its renewals (which
// travel over the API) land every RenewInterval, longer than the
// detection window. The fast path must not fire while its API answers,
// and must once the API stops answering too.
func TestFastPathAsksTheRenewalPathBeforeFiring(t *testing.T) {
	t.Parallel()
	st := syncTestState()
	st.Leader.Renewed = true
	if st.Config.RenewInterval() <= st.Config.Detection() {
		t.Fatalf("test needs RenewInterval %s > detection %s", st.Config.RenewInterval(), st.Config.Detection())
	}
	for _, tc := range []struct {
		name      string
		answers   bool
		wantMoved bool
	}{{"API answers", true, false}, {"API silent", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var probes int
			r := newCoordRig(t, st, func(c *Coordinator) {
				c.SetProbe(func(context.Context, string) error {
					probes++
					if tc.answers {
						return nil
					}
					return errors.New("connection refused")
				})
			})
			r.advance(0)
			r.store.setUnreachable("pg1", r.clock.Now())
			step := 100 * time.Millisecond
			for elapsed := time.Duration(0); elapsed < 2*st.Config.RenewInterval(); elapsed += step {
				if elapsed > 0 && elapsed%st.Config.RenewInterval() < step {
					if res := r.store.commit(raftstore.RenewLeader{Holder: "pg1", Epoch: 5, TTL: st.Config.TTL}); res.Err != nil {
						break // the key moved
					}
				}
				r.advance(step)
			}
			moved := r.holder().Holder != "pg1"
			if moved != tc.wantMoved {
				t.Fatalf("key moved = %v (holder %+v), want %v; %d probes", moved, r.holder(), tc.wantMoved, probes)
			}
			if probes == 0 {
				t.Fatal("the holder's API was never probed")
			}
		})
	}
}

// The holder acts on its own synchronous record only once its store shows
// it; a status report is never waited for (the loop also renews, and a
// follower learns a report's commit up to two CommitTimeouts late: waiting
// on reports made holders miss renewals in a chaos run).
func TestApplyWaitsForTheLocalStoreOnlyWhereItActs(t *testing.T) {
	t.Parallel()
	st := syncTestState()
	r := newRig(t, "pg1", st, runningPrimary)
	r.store.mu.Lock()
	frozen := r.store.st.Clone()
	r.store.frozen = &frozen // this member's FSM stops applying
	r.store.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := r.sup.apply(ctx, raftstore.ReportStatus{Name: "pg1", Status: raftstore.MemberStatus{Role: "primary", State: "running"}}); err != nil {
		t.Fatalf("report: %v", err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("a report waited %s for the local store", d)
	}
	prev := st.Sync
	err := r.sup.apply(ctx, raftstore.SetSync{Primary: "pg1", Epoch: st.Leader.Epoch, Prev: &prev})
	if err == nil {
		t.Fatal("narrowing returned before the local store showed it")
	}
}

// The simulator's seed 76: b, the replaced primary, is stopped and waits
// for a (elected, never renewed, then lost) to come up as primary. Within
// ttl it waits; after it, it starts read-only, so that it runs as a
// replica and can be elected again (Sync.Inherited).
func TestReplacedPrimaryStartsReadOnlyWhenTheNewHolderNeverComesUp(t *testing.T) {
	t.Parallel()
	st := state("pg2", "pg1", "pg2")
	st.Members["pg2"].Status.Role = "replica" // elected, not promoted yet
	p := Decide(obs("pg1", st, stoppedPG))
	if len(p.Actions) != 0 {
		t.Fatalf("plan within ttl = %s, want waiting for pg2", p)
	}
	p = Decide(obs("pg1", st, stoppedPG, func(o *Observation) { o.PrimaryOverdue = true }))
	if k := kinds(p); len(k) != 1 || k[0] != ActStartStandby || p.Actions[0].Primary != "" {
		t.Fatalf("plan once pg2 is overdue = %s, want a read-only start with no upstream", p)
	}
	running := stoppedPG
	running.Running, running.InRecovery = true, true
	if p := Decide(obs("pg1", st, running, func(o *Observation) { o.PrimaryOverdue = true })); len(p.Actions) != 0 {
		t.Fatalf("plan of a running standby while pg2 is overdue = %s, want waiting", p)
	}
}

// The simulator's F3: ttl raised from 3s to 9s. The lease given under 3s
// ends 2s after its renewal; the next renewal must come at the 3s
// interval, not the 9s one (4.7s), or a healthy primary is fenced.
func TestRaisedTTLKeepsTheRenewalIntervalOfTheLeaseHeld(t *testing.T) {
	t.Parallel()
	st := testState("pg1", "pg1", "pg2")
	st.Config.TTL, st.Config.LoopWait, st.Config.RetryTimeout = 3*time.Second, 300*time.Millisecond, time.Second
	r := newRig(t, "pg1", st, runningPrimary)
	r.renew() // under 3s: lease 2s
	raised := r.store.State()
	raised.Config.TTL = 9 * time.Second
	if got, want := r.sup.renewInterval(raised), st.Config.RenewInterval(); got != want {
		t.Fatalf("renewal interval after raising ttl = %s, want the held lease's %s", got, want)
	}
	r.clock.Advance(st.Config.RenewInterval())
	if !r.sup.renewDue(raised, r.clock.Now()) {
		t.Fatal("no renewal due at the 3s interval after ttl was raised to 9s")
	}
}

// The simulator's F4: the new holder promoted, reported itself primary
// and was lost for good; a stopped former primary must not wait on a
// rewind against it for ever once its reports are stale: it starts
// read-only to be a candidate.
func TestStoppedMemberStartsReadOnlyWhenThePrimaryWentSilent(t *testing.T) {
	t.Parallel()
	st := state("pg2", "pg1", "pg2") // pg2 reports itself a running primary
	p := Decide(obs("pg1", st, stoppedPG))
	if len(p.Actions) != 1 || p.Actions[0].Kind != ActFollow || !p.Actions[0].Rewind {
		t.Fatalf("plan with pg2 fresh = %s, want follow with rewind", p)
	}
	p = Decide(obs("pg1", st, stoppedPG, func(o *Observation) { o.PrimaryOverdue = true }))
	if k := kinds(p); len(k) != 1 || k[0] != ActStartStandby || p.Actions[0].Primary != "" {
		t.Fatalf("plan with pg2 silent = %s, want a read-only start", p)
	}
}

// The simulator's seed 9271: a renewal made under ttl 9s is applied; a
// renewal sent earlier under ttl 2.4s commits late, after it, and ttl is
// lowered to 3s. The lease the first renewal gave runs to its apply + 9s:
// the late one must not shorten the countdown.
func TestLateRenewalUnderAShorterTTLDoesNotShortenTheCountdown(t *testing.T) {
	t.Parallel()
	st := testState("pg1", "pg1", "pg2", "pg3")
	st.Config.TTL = 9 * time.Second
	r := newCoordRig(t, st)
	r.advance(0)
	renew := func(ttl time.Duration) {
		t.Helper()
		if res := r.store.commit(raftstore.RenewLeader{Holder: "pg1", Epoch: 5, TTL: ttl}); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	r.advance(time.Second)
	renew(9 * time.Second) // applied at 1s: lease runs to 10s at most
	r.advance(0)
	r.store.edit(func(s *raftstore.State) { s.Config.TTL = 3 * time.Second }) // lowered at 1s
	r.advance(900 * time.Millisecond)
	renew(2400 * time.Millisecond) // the late one, applied at 1.9s: 1.9s + 3s < 10s
	r.advance(0)
	for elapsed := 1900 * time.Millisecond; elapsed < 10*time.Second-100*time.Millisecond; elapsed += 100 * time.Millisecond {
		r.advance(100 * time.Millisecond)
		if h := r.holder(); h.Holder != "pg1" {
			t.Fatalf("elected %+v at %s, before the 9s lease applied at 1s ended", h, elapsed+100*time.Millisecond)
		}
	}
	r.advance(200 * time.Millisecond)
	if h := r.holder(); h.Holder == "pg1" {
		t.Fatal("no election once every lease given had ended")
	}
}

// Review #13: the LSN a new synchronous standby must cover is read only
// once the candidate's own walsender applies the new setting (it shows
// "sync"): a new backend seeing the setting is not enough, the gate's
// walsender may still release commits by the old, gate-only rule.
func TestSyncSinceIsReadOnlyOnceTheWalsendersApplyTheSetting(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, status := newSyncHolderRig(t)
	gateAndPG2 := GateStandbyNames([]string{"pg2"}, false)
	r.sup.manageSync(ctx, r.store.State(), status(1000, GateStandbyNames(nil, false), "async", 1000)) // names pg2
	// New backends see the setting; pg2's walsender has not applied it
	// yet ("async"): commits up to 1500 may still be released without it.
	r.sup.manageSync(ctx, r.store.State(), status(1000, gateAndPG2, "async", 1000))
	r.sup.manageSync(ctx, r.store.State(), status(1500, gateAndPG2, "sync", 1200)) // since read here: 1500
	r.sup.manageSync(ctx, r.store.State(), status(1500, gateAndPG2, "sync", 1200))
	if got := r.store.State().Sync.Standbys; len(got) != 0 {
		t.Fatalf("pg2 recorded with flush 1200 although the walsenders applied the setting only at 1500 (Sync.Standbys = %v)", got)
	}
	r.sup.manageSync(ctx, r.store.State(), status(1600, gateAndPG2, "sync", 1500))
	if got := r.store.State().Sync.Standbys; len(got) != 1 || got[0] != "pg2" {
		t.Fatalf("pg2 not recorded once its flush covers 1500 (Sync.Standbys = %v)", got)
	}
}
