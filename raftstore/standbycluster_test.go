package raftstore

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestStandbyClusterValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		sc   StandbyCluster
		err  string // "" valid
	}{
		{"one host", StandbyCluster{Host: "10.0.0.1", Port: 5432}, ""},
		{"hosts and a slot", StandbyCluster{Host: "a.example,b.example", PrimarySlotName: "dr_site"}, ""},
		{"archive only", StandbyCluster{RestoreCommand: "cp /a/%f %p"}, ""},
		{"nothing to replicate from", StandbyCluster{PrimarySlotName: "dr"}, "standby_cluster.host"},
		{"empty host in a list", StandbyCluster{Host: "a,,b"}, "standby_cluster.host"},
		{"conninfo injection", StandbyCluster{Host: "a sslmode=disable"}, "standby_cluster.host"},
		{"bad port", StandbyCluster{Host: "a", Port: 70000}, "standby_cluster.port"},
		{"bad slot", StandbyCluster{Host: "a", PrimarySlotName: "DR-site"}, "standby_cluster.primary_slot_name"},
		{"unknown method", StandbyCluster{Host: "a", CreateReplicaMethods: []string{"rsync"}}, "standby_cluster.create_replica_methods[0]"},
		{"basebackup without a host", StandbyCluster{RestoreCommand: "x", CreateReplicaMethods: []string{"basebackup"}},
			"standby_cluster.create_replica_methods[0]"},
	} {
		err := tc.sc.Validate()
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: %v, want an error on %s", tc.name, err, tc.err)
		}
	}
	if got := (StandbyCluster{Host: "a"}).Methods(); len(got) != 1 || got[0] != "basebackup" {
		t.Errorf("default methods with a host: %v", got)
	}
	if got := (StandbyCluster{RestoreCommand: "x"}).Methods(); len(got) != 1 || got[0] != "pgbackrest" {
		t.Errorf("default methods without a host: %v", got)
	}
	if !(StandbyCluster{Host: "a"}).Equal(StandbyCluster{Host: "a", Port: 5432, CreateReplicaMethods: []string{"basebackup"}}) {
		t.Error("defaults spelt out differ from defaults left out")
	}
}

// TestStandbyClusterDocument: standby_cluster reads from bootstrap.dcs
// (YAML) and /config (JSON), shows in DocOf, and a cluster config
// checks it.
func TestStandbyClusterDocument(t *testing.T) {
	t.Parallel()
	var d ConfigDoc
	y := "ttl: 10\nstandby_cluster:\n  host: 10.0.0.1,10.0.0.2\n  port: 5433\n  primary_slot_name: dr\n  restore_command: cp %f %p\n"
	if err := yaml.Unmarshal([]byte(y), &d); err != nil {
		t.Fatal(err)
	}
	c := d.Config()
	want := StandbyCluster{Host: "10.0.0.1,10.0.0.2", Port: 5433, PrimarySlotName: "dr", RestoreCommand: "cp %f %p"}
	if c.StandbyCluster == nil || !c.StandbyCluster.Equal(want) || !c.IsStandbyCluster() {
		t.Fatalf("from YAML: %+v", c.StandbyCluster)
	}
	b, err := json.Marshal(DocOf(c))
	if err != nil {
		t.Fatal(err)
	}
	var back ConfigDoc
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if sc := back.Config().StandbyCluster; sc == nil || !sc.Equal(want) {
		t.Fatalf("JSON round trip: %s", b)
	}
	c.StandbyCluster.Port = -1
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "standby_cluster.port") {
		t.Fatalf("an invalid standby_cluster passes the cluster config's check: %v", err)
	}
	cl := DocOf(DefaultClusterConfig()).Config().Clone()
	if cl.StandbyCluster != nil {
		t.Fatal("a default config is a standby cluster")
	}
}

// TestPromoteClusterResetsTheSyncRecord: removing standby_cluster voids
// the synchronous record (a standby cluster acknowledged nothing, and a
// record from before a demote-cluster names a rewound past); while it is
// set, sync rules elect nobody out.
func TestPromoteClusterResetsTheSyncRecord(t *testing.T) {
	t.Parallel()
	s := NewState()
	s.Config = DefaultClusterConfig()
	s.Config.SynchronousMode = true
	s.Config.StandbyCluster = &StandbyCluster{Host: "a"}
	s.Sync = SyncState{Primary: "pg1", Standbys: []string{"pg2"}, Rev: 5}
	s.Leader = LeaderKey{Holder: "", Epoch: 4, Rev: 6}
	if ok, why := s.Electable("pg3"); !ok {
		t.Fatalf("standby cluster: pg3 not electable: %s", why)
	}
	next := s.Config.Clone()
	next.StandbyCluster = nil
	if err := applySetConfig(&s, 9, SetConfig{Config: next, PrevVersion: s.Config.Version, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if !s.Sync.NoRecord() || s.Sync.Rev != 9 {
		t.Fatalf("sync record after promote-cluster: %+v", s.Sync)
	}
	// Setting standby_cluster keeps the record (it is void while set).
	s.Sync = SyncState{Primary: "pg1", Standbys: []string{"pg2"}, Rev: 10}
	again := s.Config.Clone()
	again.StandbyCluster = &StandbyCluster{Host: "b"}
	if err := applySetConfig(&s, 11, SetConfig{Config: again, PrevVersion: s.Config.Version, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if s.Sync.Primary != "pg1" {
		t.Fatalf("demote-cluster changed the sync record: %+v", s.Sync)
	}
}

func TestCheckProtocolGatesStandbyCluster(t *testing.T) {
	t.Parallel()
	st := NewState()
	st.Members["a"] = &Member{Name: "a", Agent: AgentVersion{Protocol: 2}}
	st.Members["b"] = &Member{Name: "b", Agent: AgentVersion{Version: "v0.1.0", Protocol: 1}}
	c := DefaultClusterConfig()
	c.StandbyCluster = &StandbyCluster{Host: "x"}
	if err := CheckProtocol(st, []string{"a", "b"}, SetConfig{Config: c}); !errors.Is(err, ErrNeedsUpgrade) {
		t.Fatalf("standby_cluster with a voter at 1: %v", err)
	}
	rep := ReportStatus{Name: "a", Status: MemberStatus{SourceLSN: 42}}
	if err := CheckProtocol(st, []string{"a", "b"}, rep); !errors.Is(err, ErrNeedsUpgrade) {
		t.Fatalf("a source position with a voter at 1: %v", err)
	}
	if err := CheckProtocol(st, []string{"a"}, rep); err != nil {
		t.Fatalf("every voter at 2: %v", err)
	}
}
