package api

import (
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"raftgres/raftstore"
)

// FailoverDurationBuckets are the upper bounds (seconds) of
// raftgres_failover_duration_seconds: sub-second fast failovers in
// synchronous mode, 3.5 s for the default ttl (3 s) plus half a second, and
// the long tail of a ttl raised for a WAN.
var FailoverDurationBuckets = []float64{0.25, 0.5, 1, 2, 3, 3.5, 5, 10, 30, 60}

// histogramCauses always have a raftgres_failover_duration_seconds series
// (empty until one happens), so alert rules see them from the start.
var histogramCauses = []string{raftstore.CauseFailover, raftstore.CauseManualFailover, raftstore.CauseSwitchover}

// failoverDurationMetric is the histogram's name; its series add _bucket,
// _sum and _count.
const failoverDurationMetric = "raftgres_failover_duration_seconds"

// historyMetrics are built at scrape time from History, the same on every
// member (up to how far its FSM has applied): aggregate them across members
// with max, not sum.
type historyMetrics struct {
	lastFailover, lastSwitchover, duration, electionInfo *prometheus.Desc
	// lastChange is the alias patroni_postgresql_last_failover_timestamp_seconds.
	lastChange *prometheus.Desc
}

func newHistoryMetrics(scope, name string) historyMetrics {
	labels := prometheus.Labels{"scope": scope, "name": name}
	return historyMetrics{
		lastFailover: prometheus.NewDesc("raftgres_last_failover_timestamp_seconds",
			"Epoch seconds of the newest failover (automatic or manual) in History, 0 when there is none.", nil, labels),
		lastSwitchover: prometheus.NewDesc("raftgres_last_switchover_timestamp_seconds",
			"Epoch seconds of the newest switchover in History, 0 when there is none.", nil, labels),
		duration: prometheus.NewDesc(failoverDurationMetric,
			"Leader changes in History by cause, timed from the previous primary's last renewal to the new primary's "+
				"first acknowledged renewal (proposers' clocks). Covers the newest History events only: a count drops "+
				"when an old change leaves History.", []string{"cause"}, labels),
		lastChange: prometheus.NewDesc("patroni_postgresql_last_failover_timestamp_seconds",
			"Alias: epoch seconds of the newest failover (automatic or manual) or switchover in History, 0 when there "+
				"is none: the larger of raftgres_last_failover_timestamp_seconds and raftgres_last_switchover_timestamp_seconds.",
			nil, labels),
		electionInfo: prometheus.NewDesc("raftgres_last_election_info",
			"Always 1: the member the newest leader change in History chose, its cause and why it was chosen.",
			[]string{"member", "cause", "choice"}, labels),
	}
}

func (h historyMetrics) describe(ch chan<- *prometheus.Desc) {
	ch <- h.lastFailover
	ch <- h.lastSwitchover
	ch <- h.duration
	ch <- h.electionInfo
	ch <- h.lastChange
}

// durationHistogram counts one cause's leader-change durations into buckets.
type durationHistogram struct {
	count   uint64
	sum     float64
	buckets map[float64]uint64 // cumulative, as Prometheus wants them
}

func (d *durationHistogram) observe(seconds float64) {
	d.count++
	d.sum += seconds
	for _, b := range FailoverDurationBuckets {
		if seconds <= b {
			d.buckets[b]++
		}
	}
}

func newDurationHistogram() *durationHistogram {
	d := &durationHistogram{buckets: make(map[float64]uint64, len(FailoverDurationBuckets))}
	for _, b := range FailoverDurationBuckets {
		d.buckets[b] = 0
	}
	return d
}

func isFailover(cause string) bool {
	return cause == raftstore.CauseFailover || cause == raftstore.CauseManualFailover
}

func (h historyMetrics) collect(ch chan<- prometheus.Metric, history []raftstore.Event) {
	var lastFailover, lastSwitchover float64
	var last *raftstore.Event
	hists := map[string]*durationHistogram{}
	for _, c := range histogramCauses {
		hists[c] = newDurationHistogram()
	}
	for i := range history {
		e := &history[i]
		if e.Kind != raftstore.EventLeader {
			continue
		}
		at := float64(e.At.UnixNano()) / 1e9
		switch {
		case isFailover(e.Cause):
			lastFailover = at
		case e.Cause == raftstore.CauseSwitchover:
			lastSwitchover = at
		}
		if e.Member != "" {
			last = e
		}
		if d, ok := e.Duration(); ok {
			if hists[e.Cause] == nil {
				hists[e.Cause] = newDurationHistogram()
			}
			hists[e.Cause].observe(d.Seconds())
		}
	}
	ch <- prometheus.MustNewConstMetric(h.lastFailover, prometheus.GaugeValue, lastFailover)
	ch <- prometheus.MustNewConstMetric(h.lastSwitchover, prometheus.GaugeValue, lastSwitchover)
	ch <- prometheus.MustNewConstMetric(h.lastChange, prometheus.GaugeValue, max(lastFailover, lastSwitchover))
	for _, cause := range slices.Sorted(maps.Keys(hists)) {
		d := hists[cause]
		ch <- prometheus.MustNewConstHistogram(h.duration, d.count, d.sum, d.buckets, cause)
	}
	if last != nil {
		ch <- prometheus.MustNewConstMetric(h.electionInfo, prometheus.GaugeValue, 1, last.Member, last.Cause, last.Choice)
	}
}
