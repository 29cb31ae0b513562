package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"raftgres/api"
	"raftgres/raftstore"
)

func TestDescribeStandby(t *testing.T) {
	now := time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC)
	behind := int64(8192)
	sc := &api.StandbyClusterView{Source: "a,b port 5432", StandbyLeader: "pg4", SourceLSN: "0/3000060",
		SourceAt: now.Add(-90 * time.Second), ReplayedLSN: "0/3000000", Behind: &behind}
	got := describeStandby("dr", sc, now)
	for _, want := range []string{"standby cluster of a,b port 5432", "pg4", "0/3000060, sent 2026-12-07T00:58:30Z (1m30s ago)",
		"0/3000000", "8192 bytes", "both clusters will"} {
		if !strings.Contains(got, want) {
			t.Errorf("confirmation lacks %q:\n%s", want, got)
		}
	}
	got = describeStandby("dr", &api.StandbyClusterView{Source: "archive"}, now)
	if !strings.Contains(got, "unknown") || !strings.Contains(got, "none") {
		t.Errorf("unknown positions:\n%s", got)
	}
	if n := standbyNote(sc); !strings.Contains(n, "8192 bytes behind") {
		t.Errorf("list note: %q", n)
	}
	if standbyNote(nil) != "" {
		t.Error("a note without a standby cluster")
	}
}

// TestDemotePatch: every key is in the patch, the unset ones null, so a
// re-point leaves nothing of the earlier setting behind.
func TestDemotePatch(t *testing.T) {
	b, err := json.Marshal(demotePatch(raftstore.StandbyCluster{Host: "x,y", Port: 5433}))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"create_replica_methods":null,"host":"x,y","port":5433,"primary_slot_name":null,"restore_command":null}`
	if string(b) != want {
		t.Fatalf("patch %s, want %s", b, want)
	}
}

// TestCheckStandbyCluster: check judges a standby cluster by its standby
// leader, and its lag behind the source.
func TestCheckStandbyCluster(t *testing.T) {
	lag := func(n int64) *int64 { return &n }
	sl := api.ClusterMember{Name: "pg1", Role: api.ClusterStandbyLeader, State: raftstore.StateRunning, Lag: lag(100)}
	r := api.ClusterMember{Name: "pg2", Role: api.ClusterReplica, State: raftstore.StateRunning, Lag: lag(0)}
	view := api.ClusterView{Scope: "dr", Members: []api.ClusterMember{sl, r}, StandbyCluster: &api.StandbyClusterView{Source: "a"}}
	if code, msg := evaluateCheck(view, -1, 1<<20); code != checkOK || !strings.Contains(msg, "standby leader pg1") {
		t.Errorf("healthy standby cluster: %d %s", code, msg)
	}
	if code, msg := evaluateCheck(view, -1, 10); code != checkWarning || !strings.Contains(msg, "behind the source") {
		t.Errorf("standby leader far behind the source: %d %s", code, msg)
	}
	view.Members = []api.ClusterMember{r}
	if code, msg := evaluateCheck(view, -1, 1<<20); code != checkCritical || !strings.Contains(msg, "no running standby leader") {
		t.Errorf("no standby leader: %d %s", code, msg)
	}
}
