package raftstore

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestValidateSlots(t *testing.T) {
	logical := func(c *ClusterConfig) { c.PostgreSQL.Parameters = map[string]string{"wal_level": "logical"} }
	for _, tc := range []struct {
		name    string
		slots   map[string]PermanentSlot
		ignore  []SlotMatch
		params  func(*ClusterConfig)
		wantErr string
	}{
		{name: "physical", slots: map[string]PermanentSlot{"barman": {Type: SlotPhysical}}},
		{name: "logical", slots: map[string]PermanentSlot{"cdc": {Type: SlotLogical, Database: "app", Plugin: "pgoutput"}}, params: logical},
		{name: "logical without wal_level", slots: map[string]PermanentSlot{"cdc": {Type: SlotLogical, Database: "app", Plugin: "pgoutput"}},
			wantErr: "slots.cdc: a logical slot needs postgresql.parameters.wal_level: logical"},
		{name: "logical without plugin", slots: map[string]PermanentSlot{"cdc": {Type: SlotLogical, Database: "app"}}, params: logical,
			wantErr: "slots.cdc: a logical slot needs its database and plugin"},
		{name: "physical with database", slots: map[string]PermanentSlot{"b": {Type: SlotPhysical, Database: "app"}},
			wantErr: "slots.b: a physical slot has no database or plugin"},
		{name: "no type", slots: map[string]PermanentSlot{"b": {}}, wantErr: `slots.b.type: must be physical or logical, got ""`},
		{name: "bad name", slots: map[string]PermanentSlot{"Bad-Name": {Type: SlotPhysical}}, wantErr: "slots.Bad-Name: a slot name is"},
		{name: "long name", slots: map[string]PermanentSlot{strings.Repeat("a", 64): {Type: SlotPhysical}}, wantErr: "a slot name is"},
		{name: "ignore", ignore: []SlotMatch{{Name: "x"}, {Type: SlotLogical, Plugin: "wal2json"}}},
		{name: "ignore everything", ignore: []SlotMatch{{}}, wantErr: "ignore_slots[0]: matches every slot"},
		{name: "ignore bad type", ignore: []SlotMatch{{Type: "both"}}, wantErr: `ignore_slots[0].type: must be physical or logical, got "both"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultClusterConfig()
			c.Slots, c.IgnoreSlots = tc.slots, tc.ignore
			if tc.params != nil {
				tc.params(&c)
			}
			err := c.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Validate: %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestSlotMatch(t *testing.T) {
	c := ClusterConfig{IgnoreSlots: []SlotMatch{{Name: "barman"}, {Type: SlotLogical, Database: "bi"}}}
	for _, tc := range []struct {
		name, db, plugin string
		typ              SlotType
		want             bool
	}{
		{"barman", "", "", SlotPhysical, true},
		{"barman2", "", "", SlotPhysical, false},
		{"x", "bi", "pgoutput", SlotLogical, true},
		{"x", "app", "pgoutput", SlotLogical, false},
		{"x", "bi", "", SlotPhysical, false},
	} {
		if got := c.Ignored(tc.name, tc.typ, tc.db, tc.plugin); got != tc.want {
			t.Errorf("Ignored(%s, %s, %s) = %v, want %v", tc.name, tc.typ, tc.db, got, tc.want)
		}
	}
}

// TestSlotsDocumentRoundTrip: slots: and ignore_slots in /config's JSON
// and bootstrap.dcs's terms come back as they went in, and a config
// without them shows neither (a document read back and written again must
// not need protocol 2).
func TestSlotsDocumentRoundTrip(t *testing.T) {
	c := DefaultClusterConfig()
	c.PostgreSQL.Parameters = map[string]string{"wal_level": "logical"}
	c.Slots = map[string]PermanentSlot{"cdc": {Type: SlotLogical, Database: "app", Plugin: "test_decoding"}, "barman": {Type: SlotPhysical}}
	c.IgnoreSlots = []SlotMatch{{Name: "manual"}}
	b, err := json.Marshal(DocOf(c))
	if err != nil {
		t.Fatal(err)
	}
	var d ConfigDoc
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	got := d.Config()
	if diff := cmp.Diff(c.Slots, got.Slots); diff != "" {
		t.Errorf("slots (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(c.IgnoreSlots, got.IgnoreSlots); diff != "" {
		t.Errorf("ignore_slots (-want +got):\n%s", diff)
	}
	b, _ = json.Marshal(DocOf(DefaultClusterConfig()))
	if strings.Contains(string(b), `"slots":`) || strings.Contains(string(b), `"ignore_slots":`) {
		t.Errorf("a config without permanent slots shows slots: %s", b)
	}
}

func TestCheckProtocolGatesSlots(t *testing.T) {
	st := NewState()
	st.Members["a"] = &Member{Name: "a", Agent: AgentVersion{Protocol: 2}}
	st.Members["b"] = &Member{Name: "b", Agent: AgentVersion{Version: "v0.1.0", Protocol: 1}}
	withSlots := SetConfig{Config: DefaultClusterConfig()}
	withSlots.Config.Slots = map[string]PermanentSlot{"barman": {Type: SlotPhysical}}
	withIgnore := SetConfig{Config: DefaultClusterConfig()}
	withIgnore.Config.IgnoreSlots = []SlotMatch{{Name: "x"}}
	report := ReportStatus{Name: "a", Slots: []SlotPosition{{Name: "barman", Type: SlotPhysical, LSN: 1}}}
	for name, cmd := range map[string]Command{"slots": withSlots, "ignore_slots": withIgnore, "report with slots": report} {
		if err := CheckProtocol(st, []string{"a", "b"}, cmd); !errors.Is(err, ErrNeedsUpgrade) {
			t.Errorf("%s with a voter at protocol 1: %v, want ErrNeedsUpgrade", name, err)
		}
		if err := CheckProtocol(st, []string{"a"}, cmd); err != nil {
			t.Errorf("%s with every voter at protocol 2: %v", name, err)
		}
	}
	if err := CheckProtocol(st, []string{"a", "b"}, ReportStatus{Name: "b"}); err != nil {
		t.Errorf("a report without slots: %v", err)
	}
}

func TestReportStatusRecordsSlots(t *testing.T) {
	st := NewState()
	st.Members["a"] = &Member{Name: "a"}
	pos := []SlotPosition{{Name: "cdc", Type: SlotLogical, LSN: 42}}
	if err := Apply(&st, 1, ReportStatus{Name: "a", Slots: pos}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(pos, st.Members["a"].Slots); diff != "" {
		t.Errorf("slots (-want +got):\n%s", diff)
	}
	pos[0].LSN = 7 // the state holds its own copy
	if st.Clone().Members["a"].Slots[0].LSN != 42 {
		t.Error("the state shares the report's slice")
	}
	if err := Apply(&st, 2, ReportStatus{Name: "a"}); err != nil || st.Members["a"].Slots != nil {
		t.Errorf("a report without slots keeps %v (%v)", st.Members["a"].Slots, err)
	}
}
