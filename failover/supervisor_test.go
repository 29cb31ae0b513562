package failover

// Supervisor tests, one per way the loop could go wrong, driven
// through the supervisor's own methods (cycle, execute, manageSync,
// handOver, …) against the fakes of fakes_test.go.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"raftgres/pgmanager"
	"raftgres/raftstore"
)

const (
	gateOnly    = `"raftgres_fence"`
	gateAny     = `FIRST 2 ("raftgres_fence", *)`
	gateAndPG2  = `FIRST 2 ("raftgres_fence", "pg2")`
	gateAndPG3  = `FIRST 2 ("raftgres_fence", "pg3")`
	leaseLength = 2 * time.Second // ttl 3s − margin 1s
)

// #1: a reload on a synchronous primary (edit-config, pause, resume bump
// the config version) passes synchronous_standby_names with the gate and
// the recorded standby; and when the server's read-back value differs
// (the reload dropped it), the next cycle writes it again.
func TestReloadOnSyncPrimaryKeepsSynchronousStandbyNames(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testState("pg1", "pg1", "pg2", "pg3")
	st.Config.SynchronousMode = true
	st.Sync = raftstore.SyncState{Primary: "pg1", Standbys: []string{"pg2"}}
	pgst := runningPrimary
	pgst.SyncStandbyNames = gateAndPG2
	pgst.Replicas = []pgmanager.Replica{
		{ApplicationName: "pg2", State: "streaming", SyncState: "sync", FlushLSN: pgst.CurrentLSN},
		{ApplicationName: "pg3", State: "streaming", SyncState: "async", FlushLSN: pgst.CurrentLSN},
	}
	r := newRig(t, "pg1", st, pgst)
	r.sup.confVersion = st.Config.Version
	r.pg.set(func(p *fakePostgres) { p.dropSSN = true }) // the server loses the setting on reload
	r.renew()

	r.store.edit(func(s *raftstore.State) { // raftgres edit-config --set work_mem=64MB
		s.Config.Version++
		s.Config.PostgreSQL.Parameters = map[string]string{"work_mem": "64MB"}
	})
	r.sup.cycle(ctx)
	reloads := r.pg.desiredOf("Reload")
	if len(reloads) != 1 {
		t.Fatalf("reloads after a config change = %d, want 1", len(reloads))
	}
	if got := reloads[0].SyncStandbyNames; got != gateAndPG2 {
		t.Errorf("Reload's Desired.SyncStandbyNames = %q, want %q", got, gateAndPG2)
	}

	r.sup.cycle(ctx) // reads back "" from the server
	sets := r.pg.desiredOf("SetSynchronousStandbyNames")
	if len(sets) != 1 || sets[0].SyncStandbyNames != gateAndPG2 {
		t.Fatalf("after the server lost the setting, SetSynchronousStandbyNames calls = %+v, want one with %q", sets, gateAndPG2)
	}
	if got, _ := r.pg.Status(ctx); got.SyncStandbyNames != gateAndPG2 {
		t.Errorf("server's synchronous_standby_names = %q, want %q", got.SyncStandbyNames, gateAndPG2)
	}
	if got := r.store.State().Sync.Standbys; len(got) != 1 || got[0] != "pg2" {
		t.Errorf("Sync.Standbys = %v, want [pg2]", got)
	}
}

// #2: a promotion that outlasts the lease while renewals fail is stopped
// by the fencer at the lease's end, while the supervisor is still blocked
// in pg_promote (and the promotion's own lease check stops it again).
func TestPromoteOutlastingTheLeaseIsFencedWhileBlocked(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRig(t, "pg1", testState("pg1", "pg1", "pg2"), runningReplica)
	r.pg.set(func(p *fakePostgres) { p.status.SyncStandbyNames = gateOnly })
	r.renew()
	until := r.sup.lease.End()
	r.prop.setScript(failRenewals)

	fctx, stopFencer := context.WithCancel(ctx)
	fencerDone := make(chan struct{})
	started := false
	defer func() {
		stopFencer()
		if started {
			<-fencerDone
		}
	}()
	fenced := make(chan struct{})
	r.pg.set(func(p *fakePostgres) {
		p.onPromote = func() {
			// pg_promote waits for replay past the lease's end. The fencer,
			// started with the clock already there, fires at once: what its
			// timer does at that instant, whatever the loop is doing.
			r.clock.Advance(leaseLength + 100*time.Millisecond)
			started = true
			go func() { r.sup.runFencer(fctx); close(fencerDone) }()
			if await(t, r.pg.fenceSig, "the fencer") {
				close(fenced)
			}
		}
	})
	err := r.sup.execute(ctx, r.store.State(), plan("leader key is mine", Action{Kind: ActPromote}))
	select {
	case <-fenced:
	default:
		t.Fatalf("promote returned (%v) without the fencer stopping postgres", err)
	}
	if err == nil {
		t.Errorf("execute(promote) = nil, want an error (the server was fenced)")
	}
	if r.pg.Running() {
		t.Errorf("postgres still running after its lease ended at %s", until)
	}
	if !r.sup.lease.End().IsZero() {
		t.Errorf("lease end = %s after fencing, want none", r.sup.lease.End())
	}
}

// #2: fenceIfEnded (what the fencer's timer runs) stops postgres once the
// lease end passed without a renewal, and never before it or after a
// renewal moved the end.
func TestFenceIfEndedStopsOnlyAnUnrenewedEndedLease(t *testing.T) {
	t.Parallel()
	r := newRig(t, "pg1", testState("pg1", "pg1", "pg2"), runningPrimary)
	r.renew()
	until := r.sup.lease.End()

	r.clock.Advance(leaseLength - time.Millisecond)
	if r.sup.fenceIfEnded(until) || r.ev.count("pg Fence") != 0 {
		t.Fatalf("fenced before the lease end")
	}
	r.renew() // a renewal moves the end: the old timer must not fence
	r.clock.Advance(2 * time.Millisecond)
	if r.sup.fenceIfEnded(until) || r.ev.count("pg Fence") != 0 {
		t.Fatalf("fenced on a lease end that a renewal replaced")
	}
	until = r.sup.lease.End()
	r.clock.Advance(leaseLength)
	if !r.sup.fenceIfEnded(until) {
		t.Fatalf("fenceIfEnded(%s) = false at %s, want true", until, r.clock.Now())
	}
	if r.ev.count("pg Fence") != 1 || r.pg.Running() {
		t.Errorf("postgres not fenced at the lease end (events %v)", r.ev.all())
	}
}

// #2: a holder's promotion that takes longer than the lease keeps the key
// when renewals succeed: execute renews beside the long action, so the
// lease end moves and nothing is fenced or stopped.
func TestLongPromoteWithRenewalsKeepsTheLease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRig(t, "pg1", testState("pg1", "pg1", "pg2"), runningReplica)
	r.pg.set(func(p *fakePostgres) { p.status.SyncStandbyNames = gateOnly })
	r.renew()
	first := r.sup.lease.End()
	for len(r.prop.renewals) > 0 {
		<-r.prop.renewals
	}
	r.pg.set(func(p *fakePostgres) {
		p.onPromote = func() {
			r.clock.Advance(leaseLength * 3 / 4)
			// Wait for a renewal sent after this point (renewWhile renews
			// every min(loop_wait, margin/2) = 10ms of real time). The
			// proposer signals a renewal before the supervisor records
			// it in its lease: poll the lease, woken by the signals.
			deadline := time.Now().Add(5 * time.Second)
			for !r.sup.lease.End().After(first) {
				if time.Now().After(deadline) {
					t.Errorf("timed out waiting for a renewal during the promotion")
					return
				}
				select {
				case <-r.prop.renewals:
				case <-time.After(time.Millisecond):
				}
			}
			r.clock.Advance(leaseLength / 2) // past the first lease's end
		}
	})
	if err := r.sup.execute(ctx, r.store.State(), plan("leader key is mine", Action{Kind: ActPromote})); err != nil {
		t.Fatalf("execute(promote) = %v", err)
	}
	if !r.clock.Now().After(first) {
		t.Fatalf("test bug: promotion did not outlast the first lease")
	}
	if r.sup.fenceIfEnded(first) {
		t.Errorf("the fencer would stop postgres at the first lease's end although a renewal moved it")
	}
	if !r.sup.lease.valid(r.store.State(), "pg1", r.clock.Now()) {
		t.Errorf("lease not valid after a promotion renewed beside it")
	}
	if n := r.ev.count("pg Stop") + r.ev.count("pg Fence"); n != 0 {
		t.Errorf("postgres stopped or fenced %d times, want 0 (events %v)", n, r.ev.all())
	}
	if got, _ := r.pg.Status(ctx); got.InRecovery || !got.Running {
		t.Errorf("after promotion status = %+v, want a running primary", got)
	}
}

// #3: a paused holder whose renewals fail is demoted at its lease's end:
// pause suspends failover, not the holder's own fencing.
func TestPausedHolderWithFailingRenewalsIsFenced(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testState("pg1", "pg1", "pg2")
	st.Config.Pause = true
	r := newRig(t, "pg1", st, runningPrimary)
	r.renew()
	r.prop.setScript(failRenewals)

	r.clock.Advance(leaseLength / 2)
	r.sup.cycle(ctx)
	if n := r.ev.count("pg Stop"); n != 0 {
		t.Fatalf("stopped inside the lease (events %v)", r.ev.all())
	}
	r.clock.Advance(leaseLength / 2)
	r.sup.cycle(ctx)
	if i := r.ev.index("pg Stop immediate"); i < 0 || r.pg.Running() {
		t.Errorf("paused holder without a lease not stopped (events %v)", r.ev.all())
	}
	if p := Decide(r.sup.observe(ctx, st, runningPrimary)); !p.Has(ActDemote) {
		t.Errorf("Decide(paused holder, lease ended) = %v, want demote", p)
	}
}

// #5: a new synchronous standby is recorded in Sync only once its flush
// LSN reaches the primary's LSN read once the setting naming it was in
// effect; "sync" in pg_stat_replication alone is not enough.
func TestNewSyncStandbyRecordedOnlyWhenItsFlushCoversEarlierCommits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, status := newSyncHolderRig(t)
	steps := []struct {
		name   string
		pg     pgmanager.Status
		record bool
	}{
		{"setting names the gate only: name pg2 first", status(1000, gateOnly, "async", 1000), false},
		{"setting in effect: the primary's LSN is read", status(1000, gateAndPG2, "sync", 1000), false},
		{"sync but flush below that LSN", status(1500, gateAndPG2, "sync", 999), false},
		{"flush reaches it", status(1600, gateAndPG2, "sync", 1000), true},
	}
	for _, s := range steps {
		r.sup.manageSync(ctx, r.store.State(), s.pg)
		got := r.store.State().Sync.Standbys
		if recorded := len(got) == 1 && got[0] == "pg2"; recorded != s.record {
			t.Fatalf("%s: Sync.Standbys = %v, want pg2 recorded %v", s.name, got, s.record)
		}
	}
	if sets := r.pg.desiredOf("SetSynchronousStandbyNames"); len(sets) != 1 || sets[0].SyncStandbyNames != gateAndPG2 {
		t.Errorf("SetSynchronousStandbyNames calls = %+v, want one with %q", sets, gateAndPG2)
	}
}

// newSyncHolderRig is pg1 holding the key in synchronous mode with a
// fresh lease and nothing recorded yet, and status, which builds pg1's
// status with pg2 streaming from it.
func newSyncHolderRig(t *testing.T) (*rig, func(cur uint64, ssn, syncState string, flush uint64) pgmanager.Status) {
	t.Helper()
	st := testState("pg1", "pg1", "pg2")
	st.Config.SynchronousMode = true
	st.Sync = raftstore.SyncState{Primary: "pg1"}
	r := newRig(t, "pg1", st, runningPrimary)
	r.renew()
	return r, func(cur uint64, ssn, syncState string, flush uint64) pgmanager.Status {
		s := runningPrimary
		s.CurrentLSN, s.SyncStandbyNames = cur, ssn
		s.Replicas = []pgmanager.Replica{{ApplicationName: "pg2", State: "streaming", SyncState: syncState, FlushLSN: flush}}
		return s
	}
}

// #5 with #1: when the server lost the setting after the primary's LSN
// was read (a reload or restart dropped it) and commits were acknowledged
// without the standby meanwhile, the LSN to cover must be read again once
// the rewritten setting is in effect.
func TestSyncStandbyLSNIsReadAgainAfterTheSettingWasLost(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testState("pg1", "pg1", "pg2")
	st.Config.SynchronousMode = true
	st.Sync = raftstore.SyncState{Primary: "pg1"}
	r := newRig(t, "pg1", st, runningPrimary)
	r.renew()
	status := func(cur uint64, ssn string, flush uint64) pgmanager.Status {
		s := runningPrimary
		s.CurrentLSN, s.SyncStandbyNames = cur, ssn
		s.Replicas = []pgmanager.Replica{{ApplicationName: "pg2", State: "streaming", SyncState: "sync", FlushLSN: flush}}
		return s
	}
	r.sup.manageSync(ctx, r.store.State(), status(1000, gateOnly, 900))   // names pg2
	r.sup.manageSync(ctx, r.store.State(), status(1000, gateAndPG2, 900)) // since = 1000
	r.sup.manageSync(ctx, r.store.State(), status(1500, "", 900))         // lost: 1000..1500 acknowledged without pg2
	r.sup.manageSync(ctx, r.store.State(), status(1600, gateAndPG2, 1200))
	if got := r.store.State().Sync.Standbys; len(got) != 0 {
		t.Fatalf("pg2 recorded with flush 1200 although commits up to 1500 were acknowledged without it (Sync.Standbys = %v)", got)
	}
}

// #6: in strict mode a holder's server never runs with the gate alone:
// right after a start or before a promotion its setting is
// FIRST 2 ("raftgres_fence", *) when no standby is recorded for it, and
// names the recorded standby when there is one.
func TestStrictModeHolderStartsAndPromotesWithAStandbyRequired(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		sync raftstore.SyncState
		pre  func(s *Supervisor)
		want string
	}{
		{name: "no standby recorded", want: gateAny},
		{name: "standby recorded for this primary", sync: raftstore.SyncState{Primary: "pg1", Standbys: []string{"pg2"}}, want: gateAndPG2},
		{name: "standbys recorded for the previous primary", sync: raftstore.SyncState{Primary: "pg3", Standbys: []string{"pg1"}}, want: gateAny},
		{name: "intent left from an earlier non-strict tenure", want: gateAny,
			pre: func(s *Supervisor) { s.term = &holderTerm{epoch: 4, sync: syncState{names: gateOnly}} }},
	}
	for _, tc := range tests {
		for _, start := range []string{"start_primary", "promote"} {
			t.Run(tc.name+"/"+start, func(t *testing.T) {
				t.Parallel()
				st := testState("pg1", "pg1", "pg2", "pg3")
				st.Config.SynchronousMode, st.Config.SynchronousModeStrict = true, true
				st.Sync = tc.sync
				pgst := stopped
				if start == "promote" {
					pgst = runningReplica
					pgst.SyncStandbyNames = gateOnly // rendered while it was a standby
				}
				r := newRig(t, "pg1", st, pgst)
				r.pg.set(func(p *fakePostgres) { p.standby = false })
				if tc.pre != nil {
					tc.pre(r.sup)
				}
				r.renew()
				r.sup.cycle(context.Background())
				got, _ := r.pg.Status(context.Background())
				if !got.Running || got.InRecovery {
					t.Fatalf("not a running primary after the cycle: %+v (events %v)", got, r.ev.all())
				}
				switch start {
				case "start_primary":
					ds := r.pg.desiredOf("Start")
					if len(ds) != 1 || ds[0].SyncStandbyNames != tc.want {
						t.Errorf("Start's Desired = %+v, want SyncStandbyNames %q", ds, tc.want)
					}
				case "promote":
					set, prom := r.ev.index("pg SetSynchronousStandbyNames "+tc.want), r.ev.index("pg Promote")
					if set < 0 || prom < 0 || set > prom {
						t.Errorf("want synchronous_standby_names = %s set before pg_promote (events %v)", tc.want, r.ev.all())
					}
				}
				if got.SyncStandbyNames == gateOnly {
					t.Errorf("strict holder runs with the gate alone")
				}
			})
		}
	}
}

// #8: a hand-over whose SetLeader committed but whose reply was lost (the
// holder cut off from the Raft leader, its local FSM still naming it)
// forgets the lease before the first attempt, so the next cycle starts
// nothing as primary without a fresh renewal.
// A holder elected away while frozen (the key moved on in its view by the
// time its hand-over waits for the candidate to stream) gives the
// hand-over up at once, leaves the request to the coordinator and does
// not stop PostgreSQL for it: the next cycle demotes. Waiting out the ttl
// instead kept a primary, its lease forgotten, acknowledging cancelled
// commits (the simulator's finding F6).
func TestHandOverStopsWaitingWhenTheKeyMoves(t *testing.T) {
	t.Parallel()
	st := testState("pg1", "pg1", "pg2")
	st.Failover = &raftstore.FailoverRequest{Kind: "switchover", From: "pg1", To: "pg2"}
	r := newRig(t, "pg1", st, runningPrimary) // pg2 not streaming
	r.renew()
	before := r.store.State()
	r.store.edit(func(s *raftstore.State) {
		s.Leader.Holder, s.Leader.Epoch = "pg2", s.Leader.Epoch+1
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := r.sup.handOver(ctx, before, "pg2")
	if !errors.Is(err, errKeyMoved) {
		t.Fatalf("handOver = %v, want errKeyMoved", err)
	}
	if n := r.ev.count("pg Stop"); n != 0 {
		t.Errorf("postgres stopped %d times by a hand-over the key moved away from", n)
	}
	if n := r.prop.count(func(c raftstore.Command) bool { _, ok := c.(raftstore.SetFailover); return ok }); n != 0 {
		t.Errorf("%d SetFailover proposed: the request is the coordinator's to drop", n)
	}
}

// A fast stop that escalated to immediate (pgmanager's step timeout)
// wrote no shutdown checkpoint: pg_control says "in production" and its
// latest checkpoint is an older one, which a candidate may have passed
// while it lacks later acknowledged commits. The hand-over must not go on
// from it: the request is cleared with the reason and PostgreSQL starts
// again as primary, as when the candidate does not catch up.
func TestHandOverRequiresACleanShutdown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testState("pg1", "pg1", "pg2")
	st.Members["pg2"].Status.ReceivedLSN = 0x4000000 // past the (older) latest checkpoint
	st.Failover = &raftstore.FailoverRequest{Kind: "switchover", From: "pg1", To: "pg2"}
	pgst := runningPrimary
	pgst.Replicas = []pgmanager.Replica{{ApplicationName: "pg2", State: "streaming", FlushLSN: pgst.CurrentLSN}}
	r := newRig(t, "pg1", st, pgst)
	r.pg.set(func(p *fakePostgres) { p.uncleanStop = true })
	r.renew()
	err := r.sup.handOver(ctx, r.store.State(), "pg2")
	if err != nil {
		t.Fatalf("handOver = %v, want the primary started again", err)
	}
	if n := r.ev.count("pg Stop fast"); n != 1 {
		t.Fatalf("test bug: %d fast stops (events %v)", n, r.ev.all())
	}
	if n := r.prop.count(isSetLeader); n != 0 {
		t.Errorf("%d SetLeader proposed after an unclean stop, want no hand-over", n)
	}
	if got := r.store.State().Leader.Holder; got != "pg1" {
		t.Errorf("key holder = %q, want pg1", got)
	}
	if f := r.store.State().Failover; f != nil {
		t.Errorf("switchover request %+v still set, want it cleared", f)
	}
	if !r.pg.Running() || r.ev.count("pg Start") != 1 {
		t.Errorf("primary not started again (events %v)", r.ev.all())
	}
}

func TestLostHandOverReplyLeavesNoLeaseToStartOn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testState("pg1", "pg1", "pg2")
	st.Members["pg2"].Status.ReceivedLSN = 0x4000000 // past the shutdown checkpoint
	st.Failover = &raftstore.FailoverRequest{Kind: "switchover", From: "pg1", To: "pg2"}
	pgst := runningPrimary
	pgst.Replicas = []pgmanager.Replica{{ApplicationName: "pg2", State: "streaming", FlushLSN: pgst.CurrentLSN}}
	r := newRig(t, "pg1", st, pgst)
	r.renew()
	var leaseAtAttempt time.Time
	r.prop.setScript(func(cmd raftstore.Command) outcome {
		switch c := cmd.(type) {
		case raftstore.SetLeader:
			if c.Holder == "pg2" && leaseAtAttempt.IsZero() {
				leaseAtAttempt = r.sup.lease.End()
				if leaseAtAttempt.IsZero() {
					leaseAtAttempt = time.Unix(1, 0) // forgotten: remember that it was
				}
				// Committed, then the reply is lost and this member is cut
				// off: retries fail until too little lease is left.
				r.store.freeze()
				return outcome{err: raftstore.ErrLeadershipLost, commit: true, delay: leaseLength}
			}
			return outcome{err: errUnreachable}
		case raftstore.SetFailover:
			return outcome{err: errUnreachable}
		case raftstore.RenewLeader:
			if !leaseAtAttempt.IsZero() {
				return outcome{err: errUnreachable}
			}
		}
		return outcome{}
	})
	err := r.sup.execute(ctx, r.store.State(), plan("switchover requested", Action{Kind: ActHandOver, Primary: "pg2"}))
	if err == nil {
		t.Fatalf("hand-over with a lost reply returned nil")
	}
	if got := r.store.cluster().Leader; got.Holder != "pg2" {
		t.Fatalf("test bug: the hand-over did not commit (key %+v)", got)
	}
	if !leaseAtAttempt.Equal(time.Unix(1, 0)) {
		t.Errorf("lease still ran (until %s) when the first hand-over attempt was sent; want it forgotten before", leaseAtAttempt)
	}
	if h := r.store.cluster().History; len(h) == 0 || h[len(h)-1].Cause != raftstore.CauseSwitchover {
		t.Errorf("hand-over recorded as %+v, want cause %s", h, raftstore.CauseSwitchover)
	}
	if r.store.State().Leader.Holder != "pg1" {
		t.Fatalf("test bug: the local FSM should still name pg1")
	}
	starts := r.ev.count("pg Start")
	r.sup.cycle(ctx)
	if n := r.ev.count("pg Start"); n != starts {
		t.Errorf("next cycle started postgres without a fresh renewal (events %v)", r.ev.all())
	}
	if r.pg.Running() {
		t.Errorf("postgres running after a hand-over whose outcome is unknown")
	}
}

// #10: a holder whose PostgreSQL never comes up releases the leader key
// after MaxCrashes failed starts (stopped first), instead of renewing it
// forever with no primary.
func TestHolderWhoseStartKeepsFailingReleasesTheKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRig(t, "pg1", testState("pg1", "pg1", "pg2"), stopped)
	r.pg.set(func(p *fakePostgres) {
		p.standby = false
		p.startErr = errors.New("postgres exited during start-up: FATAL: could not write lock file: No space left on device")
	})
	maxCrashes := r.sup.cfg.MaxCrashes
	for i := 0; i < maxCrashes+2 && r.store.State().Leader.Holder == "pg1"; i++ {
		r.sup.cycle(ctx)
		r.clock.Advance(100 * time.Millisecond)
	}
	if got := r.store.State().Leader; got.Holder != "" {
		t.Fatalf("after %d failing starts the key is %+v, want released", r.ev.count("pg Start"), got)
	}
	if n := r.ev.count("pg Start"); n != maxCrashes {
		t.Errorf("starts before releasing = %d, want MaxCrashes = %d", n, maxCrashes)
	}
	stop, rel := r.ev.index("pg Stop"), r.ev.index(`commit SetLeader ""`)
	if rel >= 0 && !strings.HasSuffix(r.ev.all()[rel], "cause="+raftstore.CauseRelease) {
		t.Errorf("release sent as %q, want cause %s", r.ev.all()[rel], raftstore.CauseRelease)
	}
	if stop < 0 || rel < stop {
		t.Errorf("want postgres stopped before the key is released (events %v)", r.ev.all())
	}
}

// #11: a standby whose start fails right after a successful pg_rewind
// (the WAL it needs is gone) is recloned instead of looping rewind →
// start forever: at once when pgmanager says it cannot stream
// (ErrCannotStream: a second rewind would start from the same
// checkpoint), after two such failures otherwise.
func TestStandbyFailingToStartAfterRewindIsRecloned(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		startErr error
		rewinds  int
	}{
		{"start timed out", errors.New("postgres not accepting connections after 1m0s"), 2},
		{"cannot stream", fmt.Errorf("start postgres for pg2: %w for 10s: FATAL:  could not receive data from WAL stream: "+
			"ERROR:  requested WAL segment 000000020000000000000006 has already been removed", pgmanager.ErrCannotStream), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			r := newRig(t, "pg2", testState("pg1", "pg1", "pg2"), stopped)
			r.pg.set(func(p *fakePostgres) {
				p.standby = false // a former primary
				p.startErr = tc.startErr
			})
			for i := 0; i < 5 && r.ev.count("pg Reclone") == 0; i++ {
				r.sup.cycle(ctx)
			}
			if n := r.ev.count("pg Reclone"); n != 1 {
				t.Fatalf("reclones = %d, want 1 (events %v)", n, r.ev.all())
			}
			if n := r.ev.count("pg Rewind"); n != tc.rewinds {
				t.Errorf("rewinds before recloning = %d, want %d", n, tc.rewinds)
			}
		})
	}
}

// A steady holder woken only by its renewal timer renews without looking
// at PostgreSQL again until ttl/2 after its last look; anything else that
// wakes it (or a renewal that failed) gets a full round.
func TestSteadyHolderRenewsWithoutLookingAtPostgres(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRig(t, "pg1", testState("pg1", "pg1", "pg2"), runningPrimary)
	statusCalls := func() int {
		n := 0
		r.pg.set(func(p *fakePostgres) { n = p.statusCalls })
		return n
	}
	wait := r.sup.cycle(ctx) // a full round: renews, looks, is steady
	if !r.sup.pacer.wasSteady {
		t.Fatalf("a healthy primary holding the key is not steady")
	}
	st := r.store.State()
	if want := st.Config.RenewInterval(); wait > want {
		t.Fatalf("steady holder waits %s, want at most the renewal interval %s", wait, want)
	}
	looks, renewals, until := statusCalls(), r.ev.count("commit RenewLeader"), r.sup.Local().LeaseUntil
	r.clock.Advance(wait)
	r.sup.pacer.timerWake = true
	r.sup.cycle(ctx)
	if got := r.ev.count("commit RenewLeader"); got != renewals+1 {
		t.Fatalf("renewals = %d, want %d", got, renewals+1)
	}
	if got := statusCalls(); got != looks {
		t.Errorf("postgres looked at %d times on a renewal-only wake-up, want 0", got-looks)
	}
	if l := r.sup.Local(); !l.LeaseUntil.After(until) {
		t.Errorf("the renewal-only round did not publish the new lease: %s, was %s", l.LeaseUntil, until)
	}
	// Woken by anything but the timer: a full round.
	r.sup.pacer.timerWake = false
	r.sup.cycle(ctx)
	if got := statusCalls(); got != looks+1 {
		t.Errorf("postgres looked at %d times on a full round, want 1", got-looks)
	}
	// Timer only, but ttl/2 since the last look: a full round.
	r.clock.Advance(st.Config.ReportInterval() / 2)
	r.sup.pacer.timerWake = true
	r.sup.cycle(ctx)
	if got := statusCalls(); got != looks+2 {
		t.Errorf("postgres not looked at ttl/2 after the last look")
	}
}

// A renewal from a switchover's wait (and from an operator restart) feeds
// an armed watchdog.
func TestRenewalsDuringLongWaitsFeedTheWatchdog(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		wait func(r *rig) error
	}{
		{"switchover waitCaughtUp", func(r *rig) error {
			return r.sup.waitCaughtUp(context.Background(), "pg2", 0x3000000, 10*time.Second)
		}},
		{"operator restart", func(r *rig) error {
			return r.sup.serve(context.Background(), Request{Kind: RequestRestart})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, "pg1", testState("pg1", "pg1", "pg2"), runningPrimary)
			wd := &fakeWatchdog{armed: true}
			r.sup.wd = wd
			// pg2 catches up, and the restart ends, only after a renewal.
			r.prop.setScript(func(cmd raftstore.Command) outcome {
				if _, ok := cmd.(raftstore.RenewLeader); ok {
					r.store.edit(func(s *raftstore.State) { s.Members["pg2"].Status.ReceivedLSN = 0x4000000 })
				}
				return outcome{}
			})
			r.pg.set(func(p *fakePostgres) {
				p.onRestart = func() { await(t, r.prop.renewals, "a renewal during the restart") }
			})
			if err := tc.wait(r); err != nil {
				t.Fatalf("wait = %v", err)
			}
			if wd.fed() == 0 {
				t.Errorf("no keepalive sent to the armed watchdog after a renewal (log:\n%s)", r.logs.String())
			}
		})
	}
}

// #17: after an agent restart (nothing in memory), a streaming replica
// whose primary_conninfo points at the holder is left alone: no stop, no
// pg_rewind, no repointing.
func TestRestartedAgentLeavesAStreamingReplicaOfTheHolderAlone(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		upstream string
		follow   bool
	}{
		{"upstream is the holder", "10.0.0.1:5432", false},
		{"upstream is the holder by loopback name", "", false},
		{"upstream is another member: repoint only", "10.0.0.3:5432", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := testState("pg1", "pg1", "pg2", "pg3")
			pgst := runningReplica
			pgst.UpstreamAddr = tc.upstream
			if tc.upstream == "" {
				st.Members["pg1"].PGAddr = "127.0.0.1:5432"
				pgst.UpstreamAddr = "localhost:5432"
			}
			r := newRig(t, "pg2", st, pgst)
			r.sup.cycle(context.Background())
			for _, call := range []string{"pg Stop", "pg Rewind", "pg Start", "pg Reclone", "pg Restart"} {
				if r.ev.count(call) != 0 {
					t.Errorf("%s called on a healthy streaming replica (events %v)", call, r.ev.all())
				}
			}
			if got := r.ev.count("pg Follow") > 0; got != tc.follow {
				t.Errorf("Follow called %v, want %v (events %v)", got, tc.follow, r.ev.all())
			}
		})
	}
}

// #18: switchover candidates are fresh by this host's report clock: a
// member whose own ReportedAt is far off but keeps changing is fresh, and
// one whose ReportedAt reads "now" but has not changed for ttl is not.
func TestSwitchoverCandidateFreshnessUsesThisHostsReportClock(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		reportedAt func(now time.Time, i int) time.Time
		handOver   bool
	}{
		{"clock an hour ahead, reports changing", func(now time.Time, i int) time.Time {
			return now.Add(time.Hour + time.Duration(i)*time.Second)
		}, true},
		{"clock a day behind, reports changing", func(now time.Time, i int) time.Time {
			return now.Add(-24*time.Hour + time.Duration(i)*time.Second)
		}, true},
		{"same clock, report stuck", func(now time.Time, _ int) time.Time { return now }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			st := testState("pg1", "pg1", "pg2")
			st.Failover = &raftstore.FailoverRequest{Kind: "switchover", From: "pg1"}
			pgst := runningPrimary
			pgst.Replicas = []pgmanager.Replica{{ApplicationName: "pg2", State: "streaming"}}
			r := newRig(t, "pg1", st, pgst)
			start := r.clock.Now()
			n := int(st.Config.StaleAfter() / time.Second)
			for i := 0; i <= n; i++ { // pg2 reports every second for StaleAfter
				r.store.edit(func(s *raftstore.State) { s.Members["pg2"].Status.ReportedAt = tc.reportedAt(start, i) })
				r.sup.freshMembers(r.store.State())
				if i < n {
					r.clock.Advance(time.Second)
				}
			}
			r.renew()
			r.pg.set(func(p *fakePostgres) { p.ctrlCheck = "garbage" }) // stop the hand-over right after the clean stop
			err := r.sup.handOver(ctx, r.store.State(), "")
			if stoppedCleanly := r.ev.count("pg Stop fast") == 1; stoppedCleanly != tc.handOver {
				t.Errorf("hand-over proceeded = %v, want %v (err %v)", stoppedCleanly, tc.handOver, err)
			}
			if !tc.handOver && !errors.Is(err, ErrNoCandidate) {
				t.Errorf("handOver = %v, want ErrNoCandidate", err)
			}
		})
	}
}

// #19: a stop that fails never releases the key, on every path that gives
// it up (agent shutdown, the release plan, a required watchdog that
// cannot be armed).
func TestFailedStopNeverReleasesTheKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		run  func(r *rig)
	}{
		{"agent shutdown", func(r *rig) { r.sup.shutdown() }},
		{"release after crashes", func(r *rig) {
			r.sup.termAt(r.store.State().Leader.Epoch).crashes = r.sup.cfg.MaxCrashes
			r.pg.set(func(p *fakePostgres) { p.status.InRecovery = true })
			r.sup.cycle(context.Background())
		}},
		{"watchdog required but unusable", func(r *rig) {
			r.sup.cfg.Watchdog = WatchdogConfig{Mode: WatchdogRequired, Device: "/nonexistent/watchdog"}
			r.sup.wd = &fakeWatchdog{unusable: fmt.Errorf("%w: /nonexistent/watchdog is not writable", ErrWatchdog)}
			r.sup.cycle(context.Background())
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, "pg1", testState("pg1", "pg1", "pg2"), runningPrimary)
			r.pg.set(func(p *fakePostgres) {
				p.stopErr = errors.New("stop postgres: context deadline exceeded after SIGQUIT")
			})
			r.renew()
			tc.run(r)
			if r.ev.count("pg Stop") == 0 {
				t.Fatalf("test bug: no stop attempted (events %v)", r.ev.all())
			}
			if n := r.prop.count(isSetLeader); n != 0 {
				t.Errorf("%d SetLeader proposed after a failed stop, want none", n)
			}
			if got := r.store.State().Leader.Holder; got != "pg1" {
				t.Errorf("key holder = %q after a failed stop, want pg1", got)
			}
		})
	}
}

// Part 3 (3): a status query that failed says nothing about the role: a
// replica whose status errs is neither demoted nor stopped.
func TestStatusErrorIsNeverReadAsARole(t *testing.T) {
	t.Parallel()
	r := newRig(t, "pg2", testState("pg1", "pg1", "pg2"), runningReplica)
	r.pg.set(func(p *fakePostgres) {
		p.status.UpstreamAddr = "10.0.0.1:5432"
		// What pgmanager.Status returns when the connection fails:
		// Running, not InRecovery (zero), an Error.
		p.status = pgmanager.Status{UpstreamAddr: p.status.UpstreamAddr}
		p.statusErr = errors.New("connect to postgres of pg2: timeout")
	})
	for i := 0; i < 3; i++ {
		r.sup.cycle(context.Background())
		r.clock.Advance(time.Second)
	}
	for _, call := range []string{"pg Stop", "pg Fence", "pg Rewind", "pg Start", "pg Follow", "pg Promote"} {
		if r.ev.count(call) != 0 {
			t.Errorf("%s on a replica whose status query failed (events %v)", call, r.ev.all())
		}
	}
}

// Part 3 (3), applyConfig: a config change seen while the status query
// fails must not reload a replica with a primary's settings (no standby
// signal, no primary_conninfo): Reload rewrites standby.signal from
// Desired.
func TestStatusErrorDoesNotReloadAReplicaAsPrimary(t *testing.T) {
	t.Parallel()
	r := newRig(t, "pg2", testState("pg1", "pg1", "pg2"), runningReplica)
	r.pg.set(func(p *fakePostgres) {
		p.status = pgmanager.Status{}
		p.statusErr = errors.New("connect to postgres of pg2: timeout")
	})
	r.store.edit(func(s *raftstore.State) { s.Config.Version++ })
	r.sup.cycle(context.Background())
	for _, d := range r.pg.desiredOf("Reload") {
		if !d.IsStandby() {
			t.Errorf("replica reloaded with a primary's settings: %+v", d)
		}
	}
}

// Part 3 (5): a follow with pg_rewind reports the member "rewinding"
// before it stops postgres, so no election picks a member that is busy
// rewinding (RankCandidates excludes it).
func TestRewindingMemberIsReportedBusyBeforeStopping(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRig(t, "pg2", testState("pg1", "pg1", "pg2", "pg3"), runningReplica)
	r.pg.set(func(p *fakePostgres) {
		p.onPromote = nil
		p.rewindErr = errors.New("rewind pg2 from pg1: could not connect to server") // stays busy
	})
	st := r.store.State()
	r.sup.sysid = testSysID
	_ = r.sup.execute(ctx, st, plan("not streaming from pg1", Action{Kind: ActFollow, Primary: "pg1", Rewind: true}))
	busy, stop := r.ev.index("commit ReportStatus pg2 replica rewinding"), r.ev.index("pg Stop")
	if busy < 0 || stop < 0 || busy > stop {
		t.Fatalf("want \"rewinding\" reported before the stop (events %v)", r.ev.all())
	}
	fresh := map[string]bool{"pg1": true, "pg2": true, "pg3": true}
	for _, c := range RankCandidates(r.store.State(), ElectionInput{Fresh: fresh, Exclude: "pg1"}) {
		if c.Name == "pg2" && c.Why == "" {
			t.Errorf("RankCandidates: pg2 eligible while rewinding")
		}
		if c.Name == "pg3" && c.Why != "" {
			t.Errorf("RankCandidates: pg3 not eligible: %s", c.Why)
		}
	}
}

// #10 for promotions: a holder whose standby runs but whose promotion
// keeps failing after a minute (pg_promote times out) releases the key
// after MaxCrashes failures, like a holder whose start keeps failing.
func TestHolderWhosePromoteKeepsFailingReleasesTheKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRig(t, "pg1", testState("pg1", "pg1", "pg2"), runningReplica)
	r.pg.set(func(p *fakePostgres) {
		p.status.SyncStandbyNames = gateOnly
		// pg_promote(wait => true, 60) gives up after a minute (replay
		// stuck on a conflict); renewals beside it keep the key.
		p.onPromote = func() { r.clock.Advance(60 * time.Second) }
		p.promoteErr = errors.New("promote pg1: server did not promote within 60 seconds")
	})
	for i := 0; i < 10 && r.store.State().Leader.Holder == "pg1"; i++ {
		r.sup.cycle(ctx)
		r.clock.Advance(time.Second)
	}
	if got := r.store.State().Leader; got.Holder != "" {
		t.Fatalf("after %d failed promotions the key is %+v, want released", r.ev.count("pg Promote"), got)
	}
}

// The commit gate is put into the server's setting before it becomes
// writable; a status query that fails right before the promotion must not
// skip that check.
func TestPromoteDoesNotSkipTheGateCheckOnAStatusError(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRig(t, "pg1", testState("pg1", "pg1", "pg2"), runningReplica)
	r.pg.set(func(p *fakePostgres) {
		p.status.SyncStandbyNames = "" // started by an older agent
		p.statusErr = errors.New("status of pg1: canceling statement due to statement timeout")
	})
	r.renew()
	_ = r.sup.execute(ctx, r.store.State(), plan("leader key is mine", Action{Kind: ActPromote}))
	if prom, set := r.ev.index("pg Promote"), r.ev.index("pg SetSynchronousStandbyNames"); prom >= 0 && (set < 0 || set > prom) {
		t.Errorf("promoted without the gate in synchronous_standby_names (events %v)", r.ev.all())
	}
}

// The holder's lease counts from the send time of its last acknowledged
// renewal: a slow acknowledgement shortens it, and a renewal whose reply
// was lost (committed or not) does not extend it.
func TestLeaseCountsFromTheSendTimeOfAcknowledgedRenewals(t *testing.T) {
	t.Parallel()
	r := newRig(t, "pg1", testState("pg1", "pg1", "pg2"), runningPrimary)
	sent := r.clock.Now()
	r.prop.setScript(func(raftstore.Command) outcome { return outcome{delay: 700 * time.Millisecond} })
	r.renew()
	if got, want := r.sup.lease.End(), sent.Add(leaseLength); !got.Equal(want) {
		t.Errorf("lease end after a slow ack = %s, want send time + ttl − margin = %s", got, want)
	}
	end := r.sup.lease.End()
	r.prop.setScript(func(raftstore.Command) outcome { return outcome{err: raftstore.ErrLeadershipLost, commit: true} })
	r.clock.Advance(time.Second)
	r.sup.renew(context.Background(), r.store.State())
	if got := r.sup.lease.End(); !got.Equal(end) {
		t.Errorf("lease end after a renewal with a lost reply = %s, want unchanged %s", got, end)
	}
	r.clock.Advance(end.Sub(r.clock.Now()))
	if r.sup.lease.valid(r.store.State(), "pg1", r.clock.Now()) {
		t.Errorf("lease valid at its end")
	}
}

// #2(c): a promotion that returns after the lease ended (renewals failed
// meanwhile) stops the new primary at once, even when no fencer fired.
func TestPromoteReturningAfterTheLeaseEndStopsPostgres(t *testing.T) {
	t.Parallel()
	r := newRig(t, "pg1", testState("pg1", "pg1", "pg2"), runningReplica)
	r.pg.set(func(p *fakePostgres) {
		p.status.SyncStandbyNames = gateOnly
		p.onPromote = func() { r.clock.Advance(leaseLength + time.Millisecond) }
	})
	r.renew()
	r.prop.setScript(failRenewals)
	_ = r.sup.execute(context.Background(), r.store.State(), plan("leader key is mine", Action{Kind: ActPromote}))
	prom, stop := r.ev.index("pg Promote"), r.ev.index("pg Stop immediate")
	if prom < 0 || stop < prom || r.pg.Running() {
		t.Errorf("want postgres stopped (immediate) right after a promotion that outlasted the lease (events %v)", r.ev.all())
	}
}

// #2: a lease that ended without renewal is fenced even when the loop
// saw the key move before the fencer's timer ran (a frozen or starved
// agent resumes with both due): the key moving is not a renewal.
func TestKeySeenMovedAfterTheLeaseEndDoesNotCancelTheFence(t *testing.T) {
	t.Parallel()
	r := newRig(t, "pg1", testState("pg1", "pg1", "pg2"), runningPrimary)
	r.renew()
	until := r.sup.lease.End()
	r.clock.Advance(leaseLength + time.Second) // renewals failed meanwhile; pg2 elected
	r.store.edit(func(s *raftstore.State) { s.Leader = raftstore.LeaderKey{Holder: "pg2", Epoch: 6, Rev: 200} })
	r.sup.renew(context.Background(), r.store.State()) // the loop sees the key moved
	r.sup.fenceIfEnded(until)                          // the fencer's timer runs late
	if r.pg.Running() || r.ev.count("pg Fence") == 0 {
		t.Errorf("postgres still running after its lease ended at %s (now %s) and the key moved", until, r.clock.Now())
	}
}

// Issue 9 (make bench, cut link): a standby that starts after a successful
// pg_rewind but never streams (the WAL it needs is gone from the new
// primary) is recloned after two such rounds, instead of rewinding and
// restarting forever.
func TestStandbyNeverStreamingAfterRewindsIsRecloned(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testState("pg1", "pg1", "pg2")
	r := newRig(t, "pg2", st, stopped)
	r.pg.set(func(p *fakePostgres) {
		p.standby = false // a former primary
		p.status.UpstreamAddr = st.Members["pg1"].PGAddr
	})
	for i := 0; i < 40 && r.ev.count("pg Reclone") == 0; i++ {
		r.sup.cycle(ctx)
		r.clock.Advance(st.Config.TTL) // never streaming: flagged after two ttls
	}
	if n := r.ev.count("pg Reclone"); n != 1 {
		t.Fatalf("reclones = %d, want 1 (events %v)\n%s", n, r.ev.all(), r.logs.String())
	}
	if n := r.ev.count("pg Rewind"); n != 2 {
		t.Errorf("rewinds before recloning = %d, want 2 (events %v)", n, r.ev.all())
	}
	if !strings.Contains(r.logs.String(), "does not stream after pg_rewind") {
		t.Errorf("reclone not explained in the log:\n%s", r.logs.String())
	}
}
