package failover

import (
	"testing"

	"raftgres/raftstore"
)

func TestElect(t *testing.T) {
	t.Parallel()
	base := func() raftstore.State {
		st := state("pg1", "pg1", "pg2", "pg3")
		st.Members["pg1"].Status.WrittenLSN = 1000
		st.Members["pg2"].Status.ReceivedLSN = 900
		st.Members["pg3"].Status.ReceivedLSN = 990
		return st
	}
	fresh := map[string]bool{"pg1": true, "pg2": true, "pg3": true}
	for _, tc := range []struct {
		name string
		mod  func(*raftstore.State, *ElectionInput)
		want string // "" = nobody
	}{
		{"highest lsn wins", nil, "pg3"},
		{"stale member skipped", func(s *raftstore.State, in *ElectionInput) { in.Fresh = map[string]bool{"pg2": true} }, "pg2"},
		{"nofailover skipped", func(s *raftstore.State, in *ElectionInput) { s.Members["pg3"].Tags.NoFailover = true }, "pg2"},
		{"priority breaks lsn tie", func(s *raftstore.State, in *ElectionInput) {
			s.Members["pg2"].Status.ReceivedLSN = 990
			s.Members["pg2"].Tags.FailoverPriority = 5
		}, "pg2"},
		{"name breaks full tie", func(s *raftstore.State, in *ElectionInput) { s.Members["pg2"].Status.ReceivedLSN = 990 }, "pg2"},
		{"too far behind", func(s *raftstore.State, in *ElectionInput) { s.Config.MaximumLagOnFailover = 50 }, "pg3"},
		{"all too far behind", func(s *raftstore.State, in *ElectionInput) { s.Config.MaximumLagOnFailover = 5 }, ""},
		{"lag ignored for a switchover", func(s *raftstore.State, in *ElectionInput) {
			s.Config.MaximumLagOnFailover = 5
			in.IgnoreLag = true
		}, "pg3"},
		{"sync mode only sync standbys", func(s *raftstore.State, in *ElectionInput) {
			s.Config.SynchronousMode = true
			s.Sync = raftstore.SyncState{Primary: "pg1", Standbys: []string{"pg2"}}
		}, "pg2"},
		{"requested candidate", func(s *raftstore.State, in *ElectionInput) { in.Candidate = "pg2" }, "pg2"},
		{"stopped replica skipped", func(s *raftstore.State, in *ElectionInput) { s.Members["pg3"].Status.State = "stopped" }, "pg2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st, in := base(), ElectionInput{Fresh: fresh, Reason: "test", Actor: "pg1"}
			if tc.mod != nil {
				tc.mod(&st, &in)
			}
			cmd, ok := Elect(st, in)
			got := ""
			if ok {
				got = cmd.Holder
				if cmd.PrevEpoch != st.Leader.Epoch || cmd.PrevRev != st.Leader.Rev {
					t.Fatalf("CAS fields %d/%d, want %d/%d", cmd.PrevEpoch, cmd.PrevRev, st.Leader.Epoch, st.Leader.Rev)
				}
			}
			if got != tc.want {
				t.Fatalf("elected %q, want %q (ranking %+v)", got, tc.want, RankCandidates(st, in))
			}
		})
	}
}

// A switchover under a steady write load must not refuse its candidate for
// lag reported before the clean shutdown: the hand-over waits for
// the candidate to receive everything instead.
func TestSwitchoverCandidateIgnoresReportedLag(t *testing.T) {
	t.Parallel()
	st := state("pg1", "pg1", "pg2")
	st.Config.MaximumLagOnFailover = 1 << 20
	st.Members["pg1"].Status.WrittenLSN = 10 << 20
	st.Members["pg2"].Status.ReceivedLSN = 8 << 20
	fresh := map[string]bool{"pg1": true, "pg2": true}
	for _, requested := range []string{"", "pg2"} {
		got, err := switchoverCandidate(st, "pg1", requested, fresh)
		if err != nil || got != "pg2" {
			t.Fatalf("requested %q: candidate %q, error %v; want pg2", requested, got, err)
		}
	}
	if _, ok := Elect(st, ElectionInput{Fresh: fresh, Exclude: "pg1"}); ok {
		t.Fatal("a failover elected a member 2 MiB behind with maximum_lag_on_failover 1 MiB")
	}
}

// A primary whose agent restarts reports first without its WAL position
// (PostgreSQL not yet started): the replica that lagged stays refused.
// The holder's report used to be the only measure, so an election between
// that report and the holder's renewal promoted a replica 4 MiB behind
// (CI, TestMaximumLagOnFailover).
func TestRestartedPrimaryKeepsTheLagMeasure(t *testing.T) {
	t.Parallel()
	st := state("pg1", "pg1", "pg2")
	st.Config.MaximumLagOnFailover = 1 << 20
	for _, r := range []raftstore.ReportStatus{
		{Name: "pg1", Status: raftstore.MemberStatus{Role: raftstore.RolePrimary, State: raftstore.StateRunning, WrittenLSN: 0x5435330}},
		{Name: "pg2", Status: raftstore.MemberStatus{Role: raftstore.RoleReplica, State: raftstore.StateRunning, ReceivedLSN: 0x5000000}},
		{Name: "pg1", Status: raftstore.MemberStatus{Role: raftstore.RoleReplica, State: raftstore.StateStopped, ReplayedLSN: 0x4000000}},
	} {
		if err := raftstore.Apply(&st, st.Index+1, r); err != nil {
			t.Fatal(err)
		}
	}
	fresh := map[string]bool{"pg1": true, "pg2": true}
	if cmd, ok := Elect(st, ElectionInput{Fresh: fresh, Exclude: "pg1"}); ok {
		t.Fatalf("elected %s 4 MiB behind the restarted primary's last WAL (ranking %+v)", cmd.Holder, RankCandidates(st, ElectionInput{Fresh: fresh, Exclude: "pg1"}))
	}
}
