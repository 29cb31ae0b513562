package ops

import (
	"slices"
	"testing"
	"time"

	"raftgres/api"
)

func TestRollingTargets(t *testing.T) {
	since := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	lag := func(n int64) *int64 { return &n }
	view := api.ClusterView{Members: []api.ClusterMember{
		{Name: "pg1", Role: api.ClusterLeader, APIURL: "http://pg1"},
		{Name: "pg3", Role: api.ClusterReplica, PendingRestart: true, Lag: lag(10)},
		{Name: "pg2", Role: api.ClusterSyncStandby, Lag: lag(0)},
	}}
	before, after := since.Add(-time.Hour), since.Add(time.Minute)
	for _, tc := range []struct {
		name    string
		started map[string]time.Time
		pending bool
		want    []string
	}{
		{"all, replicas first, the primary last", map[string]time.Time{"pg1": before, "pg2": before, "pg3": before}, false, []string{"pg2", "pg3", "pg1"}},
		{"resumed: what restarted since is done", map[string]time.Time{"pg1": before, "pg2": after, "pg3": before}, false, []string{"pg3", "pg1"}},
		{"a member whose start time is unknown is restarted", map[string]time.Time{"pg1": after, "pg2": after}, false, []string{"pg3"}},
		{"done", map[string]time.Time{"pg1": after, "pg2": after, "pg3": after}, false, nil},
		{"pending only", map[string]time.Time{"pg1": before, "pg2": before, "pg3": before}, true, []string{"pg3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, r := range RollingTargets(view, tc.started, since, tc.pending) {
				got = append(got, r.Name)
				if r.Primary != (r.Name == "pg1") {
					t.Errorf("%s primary = %v", r.Name, r.Primary)
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("targets %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("targets %v, want %v", got, tc.want)
				}
			}
		})
	}
	if c := SwitchoverCandidate(view, []string{"pg2", "pg3"}); c != "pg2" {
		t.Errorf("candidate %q, want the closest replica pg2", c)
	}
	if c := SwitchoverCandidate(view, []string{"pg3"}); c != "pg3" {
		t.Errorf("candidate %q among streaming pg3 only", c)
	}
	if c := SwitchoverCandidate(view, nil); c != "" {
		t.Errorf("candidate %q with no streaming replica", c)
	}
	// In synchronous mode only a synchronous standby, however close the
	// others are.
	sync := view
	sync.SynchronousMode = true
	sync.Members = slices.Clone(view.Members)
	for i := range sync.Members {
		switch sync.Members[i].Name {
		case "pg3":
			sync.Members[i].Role = api.ClusterSyncStandby
		case "pg2":
			sync.Members[i].Role = api.ClusterReplica
		}
	}
	if c := SwitchoverCandidate(sync, []string{"pg2", "pg3"}); c != "pg3" {
		t.Errorf("synchronous mode: candidate %q, want the synchronous standby pg3", c)
	}
	if c := SwitchoverCandidate(sync, []string{"pg2"}); c != "" {
		t.Errorf("synchronous mode: candidate %q among replicas that are not synchronous standbys", c)
	}
}
