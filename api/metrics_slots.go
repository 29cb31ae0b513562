package api

import (
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"raftgres/failover"
)

// slotMetrics are the replication slot series: where each permanent slot
// stands on this member, and, on the primary, how many members' slots it
// dropped for their absence.
type slotMetrics struct {
	present, behind, dropped *prometheus.Desc
}

func newSlotMetrics(scope, name string) slotMetrics {
	labels := prometheus.Labels{"scope": scope, "name": name}
	vars := []string{"slot_name", "slot_type"}
	return slotMetrics{
		present: prometheus.NewDesc("raftgres_permanent_slot_present",
			"1 if this member has the permanent slot (on a replica: a loaded copy a consumer can resume from after a failover here), else 0.", vars, labels),
		behind: prometheus.NewDesc("raftgres_permanent_slot_behind_primary_bytes",
			"Bytes this replica's copy of the permanent slot is behind the primary's position (0 on the primary; absent without a copy).", vars, labels),
		dropped: prometheus.NewDesc("raftgres_member_slots_dropped",
			"On the primary: members whose replication slot was dropped because they did not report for member_slots_ttl.", nil, labels),
	}
}

func (s slotMetrics) describe(ch chan<- *prometheus.Desc) {
	ch <- s.present
	ch <- s.behind
	ch <- s.dropped
}

func (s slotMetrics) collect(ch chan<- prometheus.Metric, v nodeView) {
	holder := v.st.Leader.Holder
	if holder == v.name && v.st.Config.PostgreSQL.UseSlots {
		_, absent := failover.SlotMembers(v.st, v.name, v.now)
		ch <- prometheus.MustNewConstMetric(s.dropped, prometheus.GaugeValue, float64(len(absent)))
	}
	for _, name := range slices.Sorted(maps.Keys(v.st.Config.Slots)) {
		typ := string(v.st.Config.Slots[name].Type)
		mine, ok := reportedSlot(v.st, v.name, name)
		present := 0.0
		if ok && v.running() {
			present = 1
		}
		ch <- prometheus.MustNewConstMetric(s.present, prometheus.GaugeValue, present, name, typ)
		if !ok || !v.running() {
			continue
		}
		behind := 0.0
		if primary, pok := reportedSlot(v.st, holder, name); pok && holder != v.name && primary > mine {
			behind = float64(primary - mine)
		}
		ch <- prometheus.MustNewConstMetric(s.behind, prometheus.GaugeValue, behind, name, typ)
	}
}
