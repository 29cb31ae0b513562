package raftstore

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"
)

// TestConfigDocYAMLAndJSON: the config file's bootstrap.dcs and a /config
// body that say the same thing make the same ClusterConfig, and DocOf
// turns a ClusterConfig back into a document that makes it again.
func TestConfigDocYAMLAndJSON(t *testing.T) {
	var fromYAML, fromJSON ConfigDoc
	if err := yaml.Unmarshal([]byte("ttl: 20\nloop_wait: 500ms\nsynchronous_mode: true\n"+
		"postgresql: {use_slots: false, parameters: {wal_keep_size: 1GB, max_connections: 200, hot_standby: on}}\n"), &fromYAML); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(`{"ttl": 20, "loop_wait": "500ms", "synchronous_mode": true,
		"postgresql": {"use_slots": false, "parameters": {"wal_keep_size": "1GB", "max_connections": 200, "hot_standby": true}}}`), &fromJSON); err != nil {
		t.Fatal(err)
	}
	c := fromYAML.Config()
	if diff := cmp.Diff(c, fromJSON.Config()); diff != "" {
		t.Fatalf("YAML and JSON differ (-yaml +json):\n%s", diff)
	}
	want := DefaultClusterConfig()
	want.TTL, want.LoopWait, want.SynchronousMode, want.PostgreSQL.UseSlots = 20*time.Second, 500*time.Millisecond, true, false
	want.PostgreSQL.Parameters = map[string]string{"wal_keep_size": "1GB", "max_connections": "200", "hot_standby": "on"}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	c.Version = 7
	back := DocOf(c).Config()
	back.Version = 7 // read only: a document does not set it
	if diff := cmp.Diff(c, back); diff != "" {
		t.Fatalf("DocOf does not round-trip (-want +got):\n%s", diff)
	}
}
