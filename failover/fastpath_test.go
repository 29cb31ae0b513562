package failover

// Synchronous mode's fast failover: the pure rule HolderLost and
// the coordinator acting on it before the old lease ends.

import (
	"strings"
	"testing"
	"time"

	"raftgres/raftstore"
)

func syncTestState() raftstore.State {
	st := testState("pg1", "pg1", "pg2", "pg3")
	st.Config.SynchronousMode = true
	st.Sync = raftstore.SyncState{Primary: "pg1", Standbys: []string{"pg2"}}
	return st
}

func TestHolderLost(t *testing.T) {
	t.Parallel()
	base := syncTestState()
	w := base.Config.Detection()
	missed := base.Config.RenewInterval() + base.Config.LoopWait + w
	for _, tc := range []struct {
		name         string
		edit         func(*raftstore.State)
		sinceRenewal time.Duration
		unreachable  bool
		sinceContact time.Duration
		want         string // "" = not lost; else a substring of the reason
	}{
		{"renewing, reachable", nil, 100 * time.Millisecond, false, 0, ""},
		{"unreachable for the window", nil, w, true, w, "unreachable over Raft"},
		{"unreachable, but renewed within the window", nil, w - time.Millisecond, true, w, ""},
		{"unreachable for less than the window", nil, time.Second, true, w - time.Millisecond, ""},
		{"missed renewals", nil, missed, false, 0, "renewed nothing"},
		{"one renewal late", nil, missed - time.Millisecond, false, 0, ""},
		{"asynchronous mode waits for the lease", func(s *raftstore.State) { s.Config.SynchronousMode = false }, time.Minute, true, time.Minute, ""},
		{"paused", func(s *raftstore.State) { s.Config.Pause = true }, time.Minute, true, time.Minute, ""},
		{"no standby recorded", func(s *raftstore.State) { s.Sync.Standbys = nil }, time.Minute, true, time.Minute, ""},
		{"sync set of an earlier primary", func(s *raftstore.State) { s.Sync.Primary = "pg3" }, time.Minute, true, time.Minute, ""},
		{"no holder", func(s *raftstore.State) { s.Leader.Holder = "" }, time.Minute, true, time.Minute, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := base.Clone()
			if tc.edit != nil {
				tc.edit(&st)
			}
			lost, why := HolderLost(st, tc.sinceRenewal, tc.unreachable, tc.sinceContact)
			if lost != (tc.want != "") || !strings.Contains(why, tc.want) {
				t.Fatalf("HolderLost = %v %q, want lost=%v with %q", lost, why, tc.want != "", tc.want)
			}
		})
	}
}

// HolderLostAt is exactly where HolderLost turns true, so that the
// coordinator, sleeping until then, loses no time on the fast path.
func TestHolderLostAt(t *testing.T) {
	t.Parallel()
	st := syncTestState()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name        string
		unreachable bool
		contact     time.Duration // last Raft contact, after t0 (the last renewal)
	}{
		{"reachable", false, 0},
		{"unreachable, no contact since the renewal", true, 0},
		{"unreachable, contact after the renewal", true, 250 * time.Millisecond},
		{"unreachable, never contacted", true, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			contact := t0.Add(tc.contact)
			if tc.contact < 0 {
				contact = time.Time{}
			}
			at := HolderLostAt(st, t0, tc.unreachable, contact)
			lostAt := func(now time.Time) bool {
				lost, _ := HolderLost(st, now.Sub(t0), tc.unreachable, now.Sub(contact))
				return lost
			}
			if lostAt(at.Add(-time.Millisecond)) || !lostAt(at) {
				t.Fatalf("HolderLostAt = t0+%s, but HolderLost is %v a millisecond before and %v then",
					at.Sub(t0), lostAt(at.Add(-time.Millisecond)), lostAt(at))
			}
		})
	}
}

// The coordinator promotes the recorded synchronous standby once the
// holder has been unreachable for the detection window, long before the
// lease (ttl) ends, and never a member outside Sync; in asynchronous mode
// the same outage waits for the full ttl.
func TestCoordinatorFastFailoverInSyncMode(t *testing.T) {
	t.Parallel()
	t.Run("sync: unreachable holder replaced after the detection window", func(t *testing.T) {
		t.Parallel()
		st := syncTestState()
		st.Members["pg3"].Status.ReceivedLSN = 1 << 30 // ahead, but not a sync standby
		r := newCoordRig(t, st)
		w := st.Config.Detection()
		r.advance(0)
		r.store.setUnreachable("pg1", r.clock.Now())
		r.advance(w - time.Millisecond)
		if got := r.holder(); got.Holder != "pg1" {
			t.Fatalf("elected %+v before the detection window passed", got)
		}
		r.advance(time.Millisecond)
		if got := r.holder(); got.Holder != "pg2" || got.Epoch != 6 {
			t.Fatalf("key after the detection window = %+v, want pg2 at epoch 6", got)
		}
		if !strings.Contains(r.logs.String(), "fast_path=true") {
			t.Errorf("election not logged as the fast path:\n%s", r.logs.String())
		}
	})
	t.Run("sync: a holder that keeps renewing is not replaced", func(t *testing.T) {
		t.Parallel()
		st := syncTestState()
		r := newCoordRig(t, st)
		r.advance(0)
		r.store.setUnreachable("pg1", r.clock.Now()) // its Raft port is cut, its renewals still land
		for i := 0; i < 10; i++ {
			r.clock.Advance(st.Config.Detection() / 2)
			if res := r.store.commit(raftstore.RenewLeader{Holder: "pg1", Epoch: 5}); res.Err != nil {
				t.Fatal(res.Err)
			}
			r.report()
			r.step()
		}
		if got := r.holder(); got.Holder != "pg1" {
			t.Fatalf("replaced a renewing holder: %+v", got)
		}
	})
	t.Run("sync: missed renewals without reachability news", func(t *testing.T) {
		t.Parallel()
		st := syncTestState()
		r := newCoordRig(t, st)
		r.advance(0)
		missed := st.Config.RenewInterval() + st.Config.LoopWait + st.Config.Detection()
		r.advance(missed - time.Millisecond)
		if got := r.holder(); got.Holder != "pg1" {
			t.Fatalf("elected %+v before renewals were missed", got)
		}
		r.advance(time.Millisecond)
		if got := r.holder(); got.Holder != "pg2" {
			t.Fatalf("key after missed renewals = %+v, want pg2", got)
		}
		if missed >= st.Config.TTL {
			t.Fatalf("missed-renewal window %s is not shorter than ttl %s", missed, st.Config.TTL)
		}
	})
	t.Run("async: the lease is awaited", func(t *testing.T) {
		t.Parallel()
		st := syncTestState()
		st.Config.SynchronousMode, st.Sync = false, raftstore.SyncState{}
		r := newCoordRig(t, st)
		r.advance(0)
		r.store.setUnreachable("pg1", r.clock.Now())
		r.advance(st.Config.TTL - time.Millisecond)
		if got := r.holder(); got.Holder != "pg1" {
			t.Fatalf("async: elected %+v before ttl", got)
		}
		r.advance(time.Millisecond)
		if got := r.holder(); got.Holder == "pg1" {
			t.Fatalf("async: not elected after ttl")
		}
	})
}

func TestRaftLeaderPlacement(t *testing.T) {
	t.Parallel()
	all := map[string]bool{"pg1": true, "pg2": true, "pg3": true}
	for _, tc := range []struct {
		name    string
		edit    func(*raftstore.State)
		member  string
		fresh   map[string]bool
		wantWhy string
		wantTo  string
	}{
		{"primary's host hands on to the async replica", nil, "pg1", all, "runs the primary", "pg3"},
		{"sync standby's host hands on to the async replica", nil, "pg2", all, "runs the synchronous standby", "pg3"},
		{"async replica keeps it", nil, "pg3", all, "", ""},
		{"primary's host with no idle member lets raft choose", nil, "pg1", map[string]bool{"pg1": true, "pg2": true}, "runs the primary", ""},
		{"sync standby with nowhere better stays", nil, "pg2", map[string]bool{"pg2": true}, "", ""},
		{"async mode: any replica may lead", func(s *raftstore.State) { s.Config.SynchronousMode = false }, "pg2", all, "", ""},
		{"async mode: primary's host hands on", func(s *raftstore.State) { s.Config.SynchronousMode = false }, "pg1", all, "runs the primary", "pg2"},
		{"no primary: nothing to protect", func(s *raftstore.State) { s.Leader.Holder = "" }, "pg1", all, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := syncTestState()
			if tc.edit != nil {
				tc.edit(&st)
			}
			why, to := RaftLeaderPlacement(st, tc.member, tc.fresh)
			if !strings.Contains(why, tc.wantWhy) || (tc.wantWhy == "") != (why == "") || to != tc.wantTo {
				t.Fatalf("RaftLeaderPlacement = %q, %q; want %q, %q", why, to, tc.wantWhy, tc.wantTo)
			}
		})
	}
}
