package main

import (
	"strings"
	"testing"

	"raftgres/api"
)

func TestPlanBackup(t *testing.T) {
	t.Parallel()
	lag := func(n int64) *int64 { return &n }
	view := func(ms ...api.ClusterMember) api.ClusterView { return api.ClusterView{Members: ms} }
	leader := api.ClusterMember{Name: "pg1", Role: "leader", State: "running"}
	r2 := api.ClusterMember{Name: "pg2", Role: "replica", State: "running", Lag: lag(100)}
	r3 := api.ClusterMember{Name: "pg3", Role: "sync_standby", State: "running", Lag: lag(0)}
	stopped := api.ClusterMember{Name: "pg4", Role: "replica", State: "stopped"}
	for _, tc := range []struct {
		name, me, from string
		view           api.ClusterView
		want           backupFrom
		err            string
	}{
		{"primary host, replica: least lag", "pg1", "replica", view(leader, r2, r3), backupFrom{"pg1", "pg3"}, ""},
		{"replica host: itself", "pg2", "replica", view(leader, r2, r3), backupFrom{"pg1", "pg2"}, ""},
		{"stopped replica host: another", "pg4", "replica", view(leader, r2, stopped), backupFrom{"pg1", "pg2"}, ""},
		{"from primary", "pg2", "primary", view(leader, r2, r3), backupFrom{"pg1", ""}, ""},
		{"no replica", "pg1", "replica", view(leader, stopped), backupFrom{}, "--from primary"},
		{"no primary", "pg2", "replica", view(r2, r3), backupFrom{}, "no running primary"},
		{"stopped primary", "pg2", "primary", view(api.ClusterMember{Name: "pg1", Role: "leader", State: "stopped"}, r2), backupFrom{}, "no running primary"},
		{"bad from", "pg1", "standby", view(leader, r2), backupFrom{}, "--from must be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := planBackup(tc.view, tc.me, tc.from)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}
