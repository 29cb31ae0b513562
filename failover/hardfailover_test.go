package failover

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"raftgres/pgmanager"
	"raftgres/raftstore"
)

// TestHardFailoverHolderStopsImmediateAndReleases: the holder named in a
// hard failover request stops PostgreSQL immediate (no shutdown
// checkpoint, no hand-over, even with a candidate named) and releases the
// key; the request stays for the election.
func TestHardFailoverHolderStopsImmediateAndReleases(t *testing.T) {
	t.Parallel()
	for _, to := range []string{"", "pg2"} {
		t.Run("to="+to, func(t *testing.T) {
			t.Parallel()
			st := testState("pg1", "pg1", "pg2", "pg3")
			st.Failover = &raftstore.FailoverRequest{Kind: raftstore.KindFailover, From: "pg1", To: to, Hard: true}
			pgst := runningPrimary
			pgst.Replicas = []pgmanager.Replica{{ApplicationName: "pg2", State: "streaming", FlushLSN: pgst.CurrentLSN}}
			r := newRig(t, "pg1", st, pgst)
			r.renew()
			r.sup.cycle(context.Background())
			if n := r.ev.count("pg Stop " + pgmanager.StopImmediate.String()); n != 1 {
				t.Errorf("%d immediate stops, want 1", n)
			}
			if n := r.ev.count("pg Stop " + pgmanager.StopFast.String()); n != 0 {
				t.Errorf("%d fast stops, want none (no shutdown checkpoint in a drill of a crash)", n)
			}
			got := r.store.cluster()
			if got.Leader.Holder != "" {
				t.Fatalf("key %+v, want released", got.Leader)
			}
			if h := got.History; len(h) == 0 || h[len(h)-1].Cause != raftstore.CauseRelease ||
				!strings.Contains(h[len(h)-1].Reason, "hard failover requested (drill)") {
				t.Errorf("last event %+v, want the release saying why", h[len(h)-1])
			}
			if got.Failover == nil || !got.Failover.Hard {
				t.Errorf("request %+v, want it still pending for the election", got.Failover)
			}
			stop, rel := r.ev.index("pg Stop"), r.ev.index(`commit SetLeader ""`)
			if stop < 0 || rel < stop {
				t.Errorf("want postgres stopped before the key is released (events %v)", r.ev.all())
			}
		})
	}
}

// TestHardFailoverOnlyMovesItsOwnHolder: a replica named nowhere, or a
// holder not named in From, does nothing about a hard request.
func TestHardFailoverOnlyMovesItsOwnHolder(t *testing.T) {
	t.Parallel()
	st := testState("pg1", "pg1", "pg2")
	st.Failover = &raftstore.FailoverRequest{Kind: raftstore.KindFailover, From: "pg2", Hard: true}
	p := Decide(Observation{Member: "pg1", Tags: raftstore.DefaultTags(), State: st, PG: runningPrimary, HasData: true,
		DataSystemID: testSysID, LeaseValid: true})
	for _, a := range p.Actions {
		if a.Kind == ActRelease || a.Kind == ActHandOver {
			t.Fatalf("holder pg1 acts on a hard request from pg2: %s", p.Steps())
		}
	}
}

// TestCoordinatorHardFailoverDoesNotReelectTheOldHolder: once the old
// holder released the key, the election excludes it, even when it is the
// most advanced candidate (it starts read-only to be one); a named
// candidate is elected if eligible, else the ordinary election decides.
// When nobody but the old holder can be promoted, the request is dropped
// so that the next round may elect it rather than leave no primary.
func TestCoordinatorHardFailoverDoesNotReelectTheOldHolder(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		to        string
		edit      func(st *raftstore.State)
		want      string // "" = nobody elected
		wantDrop  bool
		wantCause string
	}{
		{name: "ordinary", want: "pg3", wantCause: raftstore.CauseFailover},
		{name: "named candidate", to: "pg2", want: "pg2", wantCause: raftstore.CauseManualFailover},
		{name: "named candidate not eligible", to: "pg2", edit: func(st *raftstore.State) {
			st.Members["pg2"].Tags.NoFailover = true
		}, want: "pg3", wantCause: raftstore.CauseFailover},
		{name: "nobody else eligible", edit: func(st *raftstore.State) {
			st.Members["pg2"].Tags.NoFailover = true
			st.Members["pg3"].Tags.NoFailover = true
		}, wantDrop: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := testState("", "pg1", "pg2", "pg3")
			st.Members["pg1"].Status.Role = raftstore.RoleReplica
			st.Members["pg1"].Status.ReceivedLSN = 0x5000000 // the most advanced
			st.Members["pg2"].Status.ReceivedLSN = 0x3000000
			st.Members["pg3"].Status.ReceivedLSN = 0x4000000
			st.Failover = &raftstore.FailoverRequest{Kind: raftstore.KindFailover, From: "pg1", To: tc.to, Hard: true}
			if tc.edit != nil {
				tc.edit(&st)
			}
			clock := newFakeClock()
			logs := &bytes.Buffer{}
			store := newFakeStore(st, &events{})
			c := NewCoordinator("pg3", st.Config, store, hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug}))
			c.clock = clock
			seen := reportClock{}
			seen.observe(store.State(), clock.Now())
			c.elect(context.Background(), store.State(), seen, clock.Now(), "")
			got := store.cluster()
			if got.Leader.Holder != tc.want {
				t.Fatalf("elected %q, want %q\n%s", got.Leader.Holder, tc.want, logs)
			}
			if tc.want != "" {
				if h := got.History; h[len(h)-1].Cause != tc.wantCause {
					t.Errorf("cause %s, want %s", h[len(h)-1].Cause, tc.wantCause)
				}
				// Done: the request is cleared once another holds the key.
				c.clearFulfilled(context.Background(), got)
				if f := store.cluster().Failover; f != nil {
					t.Errorf("request %+v still pending after %s was elected", f, tc.want)
				}
			}
			if dropped := got.Failover == nil; dropped != tc.wantDrop {
				t.Errorf("request dropped = %v, want %v", dropped, tc.wantDrop)
			}
		})
	}
}
