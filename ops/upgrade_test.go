package ops

import (
	"bytes"
	"strings"
	"testing"

	"raftgres/api"
	"raftgres/raftstore"
)

func TestPlanUpgrade(t *testing.T) {
	old := raftstore.AgentVersion{Version: "v0.1.0", Protocol: 1}
	target := raftstore.AgentVersion{Version: "v0.2.0", Protocol: 2}
	newer := raftstore.AgentVersion{Version: "v0.3.0", Protocol: 3}
	m := func(name string, role api.ClusterRole, state raftstore.PGState, a raftstore.AgentVersion) api.ClusterMember {
		return api.ClusterMember{Name: name, Role: role, State: state, Agent: a}
	}
	all := map[string]bool{"pg2": true, "pg3": true}
	for _, tc := range []struct {
		name      string
		view      api.ClusterView
		streaming map[string]bool
		next      string // substring of Next; "" with done or blockers
		done      bool
		blockers  []string
	}{
		{name: "replicas first, in name order",
			view: api.ClusterView{Members: []api.ClusterMember{m("pg1", api.ClusterLeader, "running", old),
				m("pg2", api.ClusterReplica, "running", old), m("pg3", api.ClusterSyncStandby, "running", old)}},
			streaming: all, next: "upgrade pg2"},
		{name: "then the other replica",
			view: api.ClusterView{Members: []api.ClusterMember{m("pg1", api.ClusterLeader, "running", old),
				m("pg2", api.ClusterReplica, "running", target), m("pg3", api.ClusterReplica, "running", old)}},
			streaming: all, next: "upgrade pg3"},
		{name: "the primary last, after a switchover to an upgraded replica",
			view: api.ClusterView{Members: []api.ClusterMember{m("pg1", api.ClusterLeader, "running", old),
				m("pg2", api.ClusterReplica, "running", target), m("pg3", api.ClusterReplica, "running", target)}},
			streaming: all, next: "switchover --candidate pg2), then upgrade pg1"},
		{name: "done",
			view: api.ClusterView{Members: []api.ClusterMember{m("pg1", api.ClusterLeader, "running", target),
				m("pg2", api.ClusterReplica, "running", target), m("pg3", api.ClusterReplica, "running", target)}},
			streaming: all, done: true},
		{name: "a replica down",
			view: api.ClusterView{Members: []api.ClusterMember{m("pg1", api.ClusterLeader, "running", old),
				m("pg2", api.ClusterReplica, api.StateUnreachable, target), m("pg3", api.ClusterReplica, "running", old)}},
			streaming: map[string]bool{"pg3": true}, blockers: []string{"pg2's agent does not report"}},
		{name: "a replica not streaming, paused, switchover pending",
			view: api.ClusterView{Pause: true, ScheduledSwitchover: &api.ScheduledSwitchover{Kind: raftstore.KindSwitchover},
				Members: []api.ClusterMember{m("pg1", api.ClusterLeader, "running", old),
					m("pg2", api.ClusterReplica, "running", old), m("pg3", api.ClusterReplica, "running", old)}},
			streaming: map[string]bool{"pg2": true},
			blockers:  []string{"pg3 is not streaming", "paused", "a switchover is pending"}},
		{name: "no primary",
			view: api.ClusterView{Members: []api.ClusterMember{m("pg1", api.ClusterReplica, "stopped", old),
				m("pg2", api.ClusterReplica, "running", old)}},
			streaming: all, blockers: []string{"pg1's PostgreSQL is stopped", "no running primary"}},
		{name: "a member already newer than this binary",
			view: api.ClusterView{Members: []api.ClusterMember{m("pg1", api.ClusterLeader, "running", newer),
				m("pg2", api.ClusterReplica, "running", old)}},
			streaming: all, blockers: []string{"pg1 runs v0.3.0 (protocol 3), newer than this binary's v0.2.0"}},
		{name: "members that registered before agents reported their release",
			view: api.ClusterView{Members: []api.ClusterMember{m("pg1", api.ClusterLeader, "running", raftstore.AgentVersion{}),
				m("pg2", api.ClusterReplica, "running", raftstore.AgentVersion{})}},
			streaming: all, next: "upgrade pg2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := PlanUpgrade(tc.view, tc.streaming, target)
			if p.Done != tc.done {
				t.Errorf("done = %v, want %v (%+v)", p.Done, tc.done, p)
			}
			if tc.next != "" && !strings.Contains(p.Next, tc.next) {
				t.Errorf("next = %q, want it to say %q", p.Next, tc.next)
			}
			if (tc.next == "") != (p.Next == "") || (p.Next == "") != (p.Step == nil) {
				t.Errorf("next = %q, step %+v, want both only when %q", p.Next, p.Step, tc.next)
			}
			if p.Step != nil && !strings.Contains(p.Next, p.Step.Member) {
				t.Errorf("step %+v does not match next %q", p.Step, p.Next)
			}
			if len(p.Blockers) != len(tc.blockers) {
				t.Fatalf("blockers = %q, want %d: %q", p.Blockers, len(tc.blockers), tc.blockers)
			}
			for i, b := range tc.blockers {
				if !strings.Contains(p.Blockers[i], b) {
					t.Errorf("blocker %d = %q, want it to say %q", i, p.Blockers[i], b)
				}
			}
			var out bytes.Buffer
			p.Render(&out)
			if !strings.Contains(out.String(), "target: v0.2.0 (protocol 2)") {
				t.Errorf("rendered:\n%s", out.String())
			}
		})
	}
}
