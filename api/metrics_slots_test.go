package api

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"raftgres/failover"
	"raftgres/raftstore"
)

// slotSeries collects the slot series for v as "name{labels} value".
func slotSeries(t *testing.T, v nodeView) []string {
	t.Helper()
	ch := make(chan prometheus.Metric, 64)
	newSlotMetrics("demo", v.name).collect(ch, v)
	close(ch)
	var out []string
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatal(err)
		}
		var labels []string
		for _, l := range pb.GetLabel() {
			if l.GetName() != "scope" && l.GetName() != "name" {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
		}
		d := m.Desc().String()
		name := d[strings.Index(d, `fqName: "`)+9:]
		name = name[:strings.Index(name, `"`)]
		out = append(out, fmt.Sprintf("%s{%s} %g", name, strings.Join(labels, ","), pb.GetGauge().GetValue()))
	}
	sort.Strings(out)
	return out
}

// TestMetricsSlots: a permanent slot is present on the primary and on a
// replica with a loaded copy, which is shown behind the primary's
// position; a replica without a copy says 0; the primary counts the
// members whose slot it dropped for their absence.
func TestMetricsSlots(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	st := raftstore.NewState()
	st.Leader.Holder = "pg1"
	st.Config.PostgreSQL.UseSlots = true
	st.Config.Slots = map[string]raftstore.PermanentSlot{"cdc": {Type: raftstore.SlotLogical, Database: "app", Plugin: "pgoutput"}}
	for _, m := range []string{"pg1", "pg2", "pg3"} {
		st.Members[m] = &raftstore.Member{Name: m, Status: raftstore.MemberStatus{ReportedAt: now}}
	}
	st.Members["pg3"].Status.ReportedAt = now.Add(-time.Hour) // absent past member_slots_ttl
	st.Members["pg1"].Slots = []raftstore.SlotPosition{{Name: "cdc", Type: raftstore.SlotLogical, LSN: 5000}}
	st.Members["pg2"].Slots = []raftstore.SlotPosition{{Name: "cdc", Type: raftstore.SlotLogical, LSN: 4000}}
	running := failover.Local{}
	running.PG.Running = true
	view := func(name string) nodeView {
		return nodeView{name: name, st: st, local: running, hasPG: true, now: now}
	}
	for _, tc := range []struct {
		member string
		want   []string
	}{
		{"pg1", []string{"raftgres_member_slots_dropped{} 1", "raftgres_permanent_slot_behind_primary_bytes{slot_name=cdc,slot_type=logical} 0",
			"raftgres_permanent_slot_present{slot_name=cdc,slot_type=logical} 1"}},
		{"pg2", []string{"raftgres_permanent_slot_behind_primary_bytes{slot_name=cdc,slot_type=logical} 1000",
			"raftgres_permanent_slot_present{slot_name=cdc,slot_type=logical} 1"}},
		{"pg3", []string{"raftgres_permanent_slot_present{slot_name=cdc,slot_type=logical} 0"}},
	} {
		if diff := cmp.Diff(tc.want, slotSeries(t, view(tc.member))); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.member, diff)
		}
	}
}
