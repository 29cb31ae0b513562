package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"raftgres/api"
	"raftgres/failover"
	"raftgres/raftstore"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

func lag(n int64) *int64 { return &n }

func TestListGolden(t *testing.T) {
	view := api.ClusterView{
		Scope: "demo",
		Members: []api.ClusterMember{
			{Name: "pg1", Host: "10.0.0.1", Port: 5432, Role: "leader", State: "running", Timeline: 2, LSN: "0/5000060",
				Tags: raftstore.DefaultTags(), Raft: "leader"},
			{Name: "pg2", Host: "10.0.0.2", Port: 5432, Role: "sync_standby", State: "running", Timeline: 2, LSN: "0/5000060",
				Lag: lag(0), Tags: raftstore.DefaultTags(), Raft: "voter"},
			{Name: "pg3", Host: "10.0.0.3", Port: 5433, Role: "replica", State: "running", Timeline: 2, LSN: "0/4D00060",
				Lag: lag(3 * 1024 * 1024), PendingRestart: true, Tags: raftstore.Tags{NoFailover: true, FailoverPriority: 0}, Raft: "voter"},
			{Name: "pg4", Host: "pg4.internal", Role: "replica", State: "unreachable", Tags: raftstore.Tags{NoLoadBalance: true, FailoverPriority: 1},
				SlotDropped: true},
		},
		PermanentSlots: []api.PermanentSlot{{Name: "debezium", Type: raftstore.SlotLogical, LSN: "0/5000060",
			Copies: map[string]string{"pg2": "0/5000000"}, Missing: []string{"pg3"}}},
		Pause: true,
		ScheduledSwitchover: &api.ScheduledSwitchover{Kind: "switchover", From: "pg1", To: "pg2",
			At: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
		SynchronousMode: true,
		LeaderEpoch:     4,
		RaftLeader:      "pg1",
	}
	var buf bytes.Buffer
	archive := &archiveNote{Member: "pg1", ArchiveStats: failover.ArchiveStats{ArchivedCount: 42,
		LastArchivedWAL: "00000002000000000000002A", LastArchivedTime: time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC),
		FailedCount: 3, LastFailedWAL: "00000002000000000000002B", LastFailedTime: time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)}}
	if err := renderList(&buf, patroniView(view, map[string]bool{"pg2": true}), "7301234567890123456", archive); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "list.golden")
	if *update {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run TestListGolden -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), buf.String()); diff != "" {
		t.Errorf("renderList differs from %s (-want +got); rerun with -update if intended:\n%s", golden, diff)
	}
}

func TestHistoryGolden(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	evs := []raftstore.Event{
		{Index: 3, At: at(0), Kind: raftstore.EventBootstrap, Actor: "pg1", Reason: "cluster config seeded from bootstrap.dcs"},
		{Index: 7, At: at(100), Kind: raftstore.EventLeader, Actor: "pg1", Member: "pg1", Epoch: 1,
			Reason: "bootstrap: cluster not initialised", Cause: raftstore.CauseBootstrap, FirstRenewalAt: at(400)},
		{Index: 90, At: at(4000), Kind: raftstore.EventLeader, Actor: "pg3", Member: "pg2", Epoch: 2,
			Reason: "leader key of pg1 expired", Cause: raftstore.CauseFailover,
			Choice:        "highest LSN 0/3000060 of 2 eligible (next: pg3 at 0/3000000)",
			PrevRenewedAt: at(900), FirstRenewalAt: at(4150)},
		{Index: 95, At: at(9000), Kind: raftstore.EventLeader, Actor: "pg2", Member: "", Epoch: 3,
			Reason: "released by pg2: postgres cannot start", Cause: raftstore.CauseRelease, PrevRenewedAt: at(8800)},
		{Index: 96, At: at(9100), Kind: raftstore.EventLeader, Actor: "pg3", Member: "pg1", Epoch: 4,
			Reason: "no primary"}, // written before causes existed
	}
	var buf bytes.Buffer
	if err := renderHistory(&buf, evs); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "history.golden")
	if *update {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run TestHistoryGolden -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), buf.String()); diff != "" {
		t.Errorf("renderHistory differs from %s (-want +got); rerun with -update if intended:\n%s", golden, diff)
	}
}

func TestFormatTags(t *testing.T) {
	tests := []struct {
		name string
		tags raftstore.Tags
		want string
	}{
		{"defaults", raftstore.DefaultTags(), ""},
		{"zero value shows priority 0", raftstore.Tags{}, "failover_priority: 0"},
		{"all set", raftstore.Tags{NoFailover: true, NoLoadBalance: true, CloneFrom: true, NoSync: true, FailoverPriority: 5},
			"nofailover: true, noloadbalance: true, clonefrom: true, nosync: true, failover_priority: 5"},
		{"one bool", raftstore.Tags{NoSync: true, FailoverPriority: 1}, "nosync: true"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := formatTags(tc.tags); got != tc.want {
				t.Errorf("formatTags = %q, want %q", got, tc.want)
			}
		})
	}
}

func member(name string, role api.ClusterRole, state raftstore.PGState, lagBytes *int64) api.ClusterMember {
	return api.ClusterMember{Name: name, Role: role, State: state, Lag: lagBytes, Tags: raftstore.DefaultTags()}
}

func TestEvaluateCheck(t *testing.T) {
	const mb = 1 << 20
	leader := member("pg1", "leader", "running", nil)
	tests := []struct {
		name         string
		members      []api.ClusterMember
		wantReplicas int
		maxLag       int64
		wantCode     int
		wantPrefix   string
		wantContains string
	}{
		{"healthy", []api.ClusterMember{leader, member("pg2", "sync_standby", "running", lag(0)), member("pg3", "replica", "running", lag(100))},
			-1, 16 * mb, checkOK, "OK: ", "primary pg1, 2/2 replicas running, max lag 100 bytes"},
		{"one replica stopped", []api.ClusterMember{leader, member("pg2", "replica", "running", lag(0)), member("pg3", "replica", "stopped", nil)},
			-1, 16 * mb, checkWarning, "WARNING: ", "1/2 replicas running, max lag 0 bytes (pg3 is stopped)"},
		{"one replica unreachable", []api.ClusterMember{leader, member("pg2", "replica", "running", lag(0)), member("pg3", "replica", "unreachable", nil)},
			-1, 16 * mb, checkWarning, "WARNING: ", "(pg3 is unreachable)"},
		{"lag over threshold", []api.ClusterMember{leader, member("pg2", "replica", "running", lag(0)), member("pg3", "replica", "running", lag(17*mb))},
			-1, 16 * mb, checkWarning, "WARNING: ", "2/2 replicas running, max lag 17825792 bytes (pg3 lags 17825792 bytes (over 16777216))"},
		{"lag exactly at threshold", []api.ClusterMember{leader, member("pg2", "replica", "running", lag(16*mb))},
			-1, 16 * mb, checkOK, "OK: ", "max lag 16777216 bytes"},
		{"negative max lag disables the lag check", []api.ClusterMember{leader, member("pg2", "replica", "running", lag(1<<40))},
			-1, -1, checkOK, "OK: ", "max lag 1099511627776 bytes"},
		{"no leader member", []api.ClusterMember{member("pg2", "replica", "running", lag(0)), member("pg3", "replica", "running", lag(0))},
			-1, 16 * mb, checkCritical, "CRITICAL: ", "no running primary in demo"},
		{"leader present but unreachable", []api.ClusterMember{member("pg1", "leader", "unreachable", nil), member("pg2", "replica", "running", lag(0))},
			-1, 16 * mb, checkCritical, "CRITICAL: ", "no running primary in demo (primary pg1 is unreachable)"},
		{"no members at all", nil, -1, 16 * mb, checkCritical, "CRITICAL: ", "no running primary in demo"},
		{"--replicas 1 with one replica running", []api.ClusterMember{leader, member("pg2", "replica", "running", lag(0))},
			1, 16 * mb, checkOK, "OK: ", "1/1 replicas running"},
		{"--replicas 1 but another member stopped still warns", []api.ClusterMember{leader, member("pg2", "replica", "running", lag(0)), member("pg3", "replica", "stopped", nil)},
			1, 16 * mb, checkWarning, "WARNING: ", "1/1 replicas running, max lag 0 bytes (pg3 is stopped)"},
		{"--replicas 3 with two running", []api.ClusterMember{leader, member("pg2", "replica", "running", lag(0)), member("pg3", "replica", "running", lag(0))},
			3, 16 * mb, checkWarning, "WARNING: ", "2/3 replicas running"},
		{"--replicas 0 on a single node", []api.ClusterMember{leader}, 0, 16 * mb, checkOK, "OK: ", "0/0 replicas running"},
		{"single node default", []api.ClusterMember{leader}, -1, 16 * mb, checkOK, "OK: ", "0/0 replicas running"},
		{"running replica with unknown lag", []api.ClusterMember{leader, member("pg2", "replica", "running", nil)},
			-1, 16 * mb, checkOK, "OK: ", "1/1 replicas running, max lag 0 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, msg := evaluateCheck(api.ClusterView{Scope: "demo", Members: tc.members}, tc.wantReplicas, tc.maxLag)
			if code != tc.wantCode {
				t.Errorf("code %d, want %d (%s)", code, tc.wantCode, msg)
			}
			if !strings.HasPrefix(msg, tc.wantPrefix) {
				t.Errorf("message %q does not start with %q", msg, tc.wantPrefix)
			}
			if !strings.Contains(msg, tc.wantContains) {
				t.Errorf("message %q lacks %q", msg, tc.wantContains)
			}
		})
	}
}

func TestBuildPatch(t *testing.T) {
	tests := []struct {
		name    string
		sets    []string
		pgs     []string
		want    map[string]any
		wantErr string
	}{
		{name: "ttl number", sets: []string{"ttl=5"}, want: map[string]any{"ttl": 5}},
		{name: "duration string", sets: []string{"loop_wait=300ms"}, want: map[string]any{"loop_wait": "300ms"}},
		{name: "bool", sets: []string{"synchronous_mode=true"}, want: map[string]any{"synchronous_mode": true}},
		{name: "dotted parameter name", sets: []string{"postgresql.parameters.auto_explain.log_min_duration=1s"},
			want: map[string]any{"postgresql": map[string]any{"parameters": map[string]any{"auto_explain.log_min_duration": "1s"}}}},
		{name: "pg string", pgs: []string{"work_mem=64MB"},
			want: map[string]any{"postgresql": map[string]any{"parameters": map[string]any{"work_mem": "64MB"}}}},
		{name: "pg number stays a string", pgs: []string{"max_connections=200"},
			want: map[string]any{"postgresql": map[string]any{"parameters": map[string]any{"max_connections": "200"}}}},
		{name: "pg value with quotes and backslashes", pgs: []string{`application_name=a "b" \c`},
			want: map[string]any{"postgresql": map[string]any{"parameters": map[string]any{"application_name": `a "b" \c`}}}},
		{name: "pg value with equals sign", pgs: []string{"search_path=a=b"},
			want: map[string]any{"postgresql": map[string]any{"parameters": map[string]any{"search_path": "a=b"}}}},
		{name: "pg null removes", pgs: []string{"work_mem=null"},
			want: map[string]any{"postgresql": map[string]any{"parameters": map[string]any{"work_mem": nil}}}},
		{name: "set null", sets: []string{"x=null"}, want: map[string]any{"x": nil}},
		{name: "set empty value is null", sets: []string{"ttl="}, want: map[string]any{"ttl": nil}},
		{name: "set and pg merge", sets: []string{"postgresql.use_slots=false", "ttl=6"}, pgs: []string{"work_mem=1MB"},
			want: map[string]any{"ttl": 6, "postgresql": map[string]any{"use_slots": false, "parameters": map[string]any{"work_mem": "1MB"}}}},
		{name: "later set wins", sets: []string{"ttl=5", "ttl=7"}, want: map[string]any{"ttl": 7}},
		{name: "no pairs", wantErr: "nothing to change"},
		{name: "empty pair", sets: []string{""}, wantErr: "want KEY=VALUE"},
		{name: "no key", sets: []string{"=5"}, wantErr: "want KEY=VALUE"},
		{name: "empty key part", sets: []string{"a..b=1"}, wantErr: "empty key part"},
		{name: "trailing dot", sets: []string{"ttl.=1"}, wantErr: "empty key part"},
		{name: "empty parameter name", sets: []string{"postgresql.parameters.=1"}, wantErr: "empty key part"},
		{name: "bad yaml value", sets: []string{"ttl=[1"}, wantErr: "value"},
		{name: "pg without value", pgs: []string{"work_mem"}, wantErr: "want NAME=VALUE"},
		{name: "pg without name", pgs: []string{"=1"}, wantErr: "want NAME=VALUE"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := buildPatch(tc.sets, tc.pgs)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q (patch %v)", err, tc.wantErr, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("patch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStaleNote(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		view api.ClusterView
		want string
	}{
		{"leader", api.ClusterView{AnsweredBy: "pg1", RaftState: "Leader", RaftLeader: "pg1"}, ""},
		{"fresh follower", api.ClusterView{AnsweredBy: "pg2", RaftState: "Follower", RaftLeader: "pg1", RaftLastContact: "120ms"}, ""},
		{"old server", api.ClusterView{}, ""},
		{"cut off follower", api.ClusterView{AnsweredBy: "pg2", RaftState: "Follower", RaftLeader: "pg1", RaftLastContact: "12.345s"},
			"STALE: pg2 last heard from the Raft leader 12.3s ago"},
		{"candidate without leader", api.ClusterView{AnsweredBy: "pg3", RaftState: "Candidate"},
			"STALE: pg3 has no Raft leader (no majority reachable)"},
	} {
		got := staleNote(tc.view)
		if tc.want == "" && got != "" || !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: %q, want prefix %q", tc.name, got, tc.want)
		}
	}
}
