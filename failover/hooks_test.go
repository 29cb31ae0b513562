package failover

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"raftgres/pgmanager"
	"raftgres/raftstore"
)

// A pre_promote that fails, or runs past its time, aborts the promotion:
// the key is released with PostgreSQL still a read-only standby, and the
// release says why. A hook that hangs is cut short at the lease's end at
// the latest, never later.
func TestFailingPrePromoteReleasesTheKeyWithoutPromoting(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		set  func(p *fakePostgres)
	}{
		{"non-zero exit", func(p *fakePostgres) {
			p.hookErr = map[string]error{pgmanager.PrePromote: errors.New("run pre_promote /bin/false: exit status 1")}
		}},
		{"timeout", func(p *fakePostgres) { p.hookWait = map[string]bool{pgmanager.PrePromote: true} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, "pg1", testState("pg1", "pg1", "pg2", "pg3"), runningReplica)
			r.pg.set(func(p *fakePostgres) {
				p.status.SyncStandbyNames = gateOnly
				tc.set(p)
			})
			r.renew()
			if err := r.sup.execute(context.Background(), r.store.State(), plan("leader key is mine", Action{Kind: ActPromote})); err != nil {
				t.Fatalf("execute = %v, want the refusal handled", err)
			}
			if r.ev.index("pg Hook pre_promote") < 0 || r.ev.count("pg Promote") != 0 || r.ev.count("pg Stop") != 0 {
				t.Errorf("want the hook run, then neither a promotion nor a stop (events %v)", r.ev.all())
			}
			st, _ := r.pg.Status(context.Background())
			if !st.Running || !st.InRecovery {
				t.Errorf("postgres %+v, want a running standby", st)
			}
			cl := r.store.cluster()
			if cl.Leader.Holder != "" {
				t.Fatalf("key %+v, want released", cl.Leader)
			}
			if got := PromotionRefusedBy(cl); got != "pg1" {
				t.Errorf("PromotionRefusedBy = %q, want pg1 (last event %+v)", got, cl.History[len(cl.History)-1])
			}
			r.pg.set(func(p *fakePostgres) {
				if p.hookBudget > leaseLength {
					t.Errorf("pre_promote given %s, more than the lease (%s)", p.hookBudget, leaseLength)
				}
			})
		})
	}
}

// A pre_promote that succeeds runs before the promotion.
func TestSucceedingPrePromoteRunsBeforeThePromotion(t *testing.T) {
	t.Parallel()
	r := newRig(t, "pg1", testState("pg1", "pg1", "pg2"), runningReplica)
	r.pg.set(func(p *fakePostgres) { p.status.SyncStandbyNames = gateOnly })
	r.renew()
	if err := r.sup.execute(context.Background(), r.store.State(), plan("leader key is mine", Action{Kind: ActPromote})); err != nil {
		t.Fatalf("execute = %v", err)
	}
	hook, prom := r.ev.index("pg Hook pre_promote"), r.ev.index("pg Promote")
	if hook < 0 || prom < hook {
		t.Errorf("want pre_promote, then the promotion (events %v)", r.ev.all())
	}
	if got := r.store.cluster().Leader.Holder; got != "pg1" {
		t.Errorf("holder = %q, want pg1", got)
	}
}

// After a release for a failed pre_promote, the next election passes
// the member over, even when it is the most advanced; when nobody else
// can be promoted it may try again.
func TestElectionPassesOverTheMemberWhosePrePromoteFailed(t *testing.T) {
	t.Parallel()
	released := func() raftstore.State {
		st := testState("pg1", "pg1", "pg2", "pg3")
		st.Members["pg1"].Status.Role = raftstore.RoleReplica
		st.Members["pg1"].Status.ReceivedLSN = 0x5000000
		st.Members["pg2"].Status.ReceivedLSN = 0x4f00000 // within maximum_lag_on_failover of pg1
		st.Members["pg3"].Status.ReceivedLSN = 0x3000000
		if err := raftstore.Apply(&st, 51, raftstore.SetLeader{Holder: "", PrevEpoch: 5, PrevRev: 50,
			Reason: "released by pg1: " + PrePromoteFailed + ": exit status 1", Cause: raftstore.CauseRelease, Actor: "pg1",
			Rules: raftstore.RulesSyncKey}); err != nil {
			t.Fatal(err)
		}
		return st
	}
	for _, tc := range []struct {
		name   string
		edit   func(st *raftstore.State)
		winner string
	}{
		{"another member can be promoted", func(*raftstore.State) {}, "pg2"},
		{"nobody else can be promoted", func(st *raftstore.State) {
			st.Members["pg2"].Tags.NoFailover = true
			st.Members["pg3"].Status.State = raftstore.StateStopped
		}, "pg1"},
		{"an ordinary release", func(st *raftstore.State) {
			st.History[len(st.History)-1].Reason = "released by pg1: agent shut down"
		}, "pg1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := released()
			tc.edit(&st)
			clock := newFakeClock()
			store := newFakeStore(st, &events{})
			c := NewCoordinator("pg3", st.Config, store, hclog.NewNullLogger())
			c.clock = clock
			seen := reportClock{}
			seen.observe(store.State(), clock.Now())
			c.elect(context.Background(), store.State(), seen, clock.Now(), "")
			if got := store.cluster().Leader.Holder; got != tc.winner {
				t.Errorf("elected %q, want %s", got, tc.winner)
			}
		})
	}
}

// before_stop runs before planned stops (agent shutdown, a switchover's
// clean stop, a restart on request), and a failing one does not block
// the stop; never before fencing or an immediate stop.
func TestBeforeStopRunsBeforePlannedStopsOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		pgst    pgmanager.Status
		act     func(r *rig)
		stop    string // the stop event expected
		planned bool
	}{
		{"agent shutdown of the primary", runningPrimary, func(r *rig) { r.sup.shutdown() }, "pg Stop fast", true},
		{"agent shutdown of a replica", runningReplica, func(r *rig) {
			r.store.edit(func(st *raftstore.State) { st.Leader.Holder = "pg2" })
			r.sup.shutdown()
		}, "pg Stop fast", true},
		{"restart on request", runningPrimary, func(r *rig) {
			_ = r.sup.serve(ctx, Request{Kind: RequestRestart})
		}, "pg Restart", true},
		{"drill (immediate stop)", runningPrimary, func(r *rig) {
			_ = r.sup.execute(ctx, r.store.State(), plan("hard failover requested (drill)", Action{Kind: ActRelease, Mode: "immediate"}))
		}, "pg Stop immediate", false},
		{"demotion", runningPrimary, func(r *rig) {
			_ = r.sup.execute(ctx, r.store.State(), plan("key moved", Action{Kind: ActDemote}))
		}, "pg Stop immediate", false},
		{"fence", runningPrimary, func(r *rig) { r.pg.Fence() }, "pg Fence", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, "pg1", testState("pg1", "pg1", "pg2"), tc.pgst)
			r.pg.set(func(p *fakePostgres) {
				p.hookErr = map[string]error{pgmanager.BeforeStop: errors.New("run before_stop /bin/false: exit status 1")}
			})
			r.renew()
			tc.act(r)
			hook, stop := r.ev.index("pg Hook before_stop"), r.ev.index(tc.stop)
			if stop < 0 {
				t.Fatalf("no %q (events %v)", tc.stop, r.ev.all())
			}
			if tc.planned && (hook < 0 || hook > stop) {
				t.Errorf("want before_stop before %q, and the stop despite its failure (events %v)", tc.stop, r.ev.all())
			}
			if !tc.planned && hook >= 0 {
				t.Errorf("before_stop ran before %q (events %v)", tc.stop, r.ev.all())
			}
			if strings.Contains(strings.Join(r.ev.all(), "\n"), "pg Hook pre_promote") {
				t.Errorf("pre_promote ran (events %v)", r.ev.all())
			}
		})
	}
}

// A switchover's clean stop is planned: before_stop runs first.
func TestBeforeStopRunsBeforeASwitchoversCleanStop(t *testing.T) {
	t.Parallel()
	st := testState("pg1", "pg1", "pg2")
	st.Failover = &raftstore.FailoverRequest{Kind: "switchover", From: "pg1", To: "pg2"}
	pgst := runningPrimary
	pgst.Replicas = []pgmanager.Replica{{ApplicationName: "pg2", State: "streaming", FlushLSN: pgst.CurrentLSN}}
	r := newRig(t, "pg1", st, pgst)
	// An unclean stop ends the hand-over there (the primary starts
	// again): only the stop matters here.
	r.pg.set(func(p *fakePostgres) { p.uncleanStop = true })
	r.renew()
	_ = r.sup.handOver(context.Background(), r.store.State(), "pg2")
	hook, stop := r.ev.index("pg Hook before_stop"), r.ev.index("pg Stop fast")
	if stop < 0 || hook < 0 || hook > stop {
		t.Errorf("want before_stop, then the clean stop (events %v)", r.ev.all())
	}
}
