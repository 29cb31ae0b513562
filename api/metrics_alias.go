package api

import (
	"regexp"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"raftgres/raftstore"
)

// Alias series: names that runbooks and alert rules written for other
// Patroni exporters use, served beside Patroni's own (patroni_*) and
// raftgres's (raftgres_*) names. Each is computed from the same view as
// the series it mirrors; the README's metrics section lists the pairs.

// postgresqlRoles and postgresqlStates are every value nodeView.role and
// nodeView.state can take: patroni_postgresql_role and
// patroni_postgresql_state have one series per value, 1 for the current
// one and 0 for the rest, so a change of role never makes a series vanish.
var (
	postgresqlRoles  = []raftstore.Role{raftstore.RolePrimary, raftstore.RoleReplica, raftstore.RoleUninitialized}
	postgresqlStates = []raftstore.PGState{raftstore.StateRunning, raftstore.StateStopped, StateUninitialized}
)

// aliasMetrics are the alias series read from the local view (the one
// read from History, patroni_postgresql_last_failover_timestamp_seconds,
// is in historyMetrics).
type aliasMetrics struct {
	role, state, replicationLag, receiveLSN, buildInfo *prometheus.Desc
}

func newAliasMetrics(scope, name string) aliasMetrics {
	labels := prometheus.Labels{"scope": scope, "name": name}
	d := func(n, help string, variable ...string) *prometheus.Desc {
		return prometheus.NewDesc(n, help, variable, labels)
	}
	return aliasMetrics{
		role: d("patroni_postgresql_role",
			"Alias: this member's PostgreSQL role as /patroni reports it, one series per role, 1 for the current one.", "role"),
		state: d("patroni_postgresql_state",
			"Alias: this member's PostgreSQL state as /patroni reports it, one series per state, 1 for the current one.", "state"),
		replicationLag: d("patroni_postgresql_replication_lag_bytes",
			"Alias, served by the primary: bytes each connected replica (pg_stat_replication, by application_name) is "+
				"behind the primary's flushed WAL, from the larger of its flushed and replayed positions.", "application_name"),
		receiveLSN: d("patroni_postgresql_last_wal_receive_lsn_offset",
			"Alias of patroni_xlog_received_location, served by a running replica only: the WAL position it received, in bytes."),
		buildInfo: d("raftgres_build_info",
			"Always 1: the agent's version string as built (patroni_version is 0 when it names no vX.Y.Z).", "version"),
	}
}

func (a aliasMetrics) describe(ch chan<- *prometheus.Desc) {
	ch <- a.role
	ch <- a.state
	ch <- a.replicationLag
	ch <- a.receiveLSN
	ch <- a.buildInfo
}

func (a aliasMetrics) collect(ch chan<- prometheus.Metric, v nodeView, version string) {
	gauge := func(d *prometheus.Desc, value float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, value, labels...)
	}
	role, state := v.role(), v.state()
	for _, r := range postgresqlRoles {
		gauge(a.role, b2f(r == role), string(r))
	}
	for _, s := range postgresqlStates {
		gauge(a.state, b2f(s == state), string(s))
	}
	if pg := v.local.PG; v.running() && !pg.InRecovery {
		// pg_stat_replication may hold several rows under one
		// application_name: pg_basebackup's backup and WAL connections, or
		// a standby's new walsender beside the old one that has not
		// exited yet. A series per row would be a duplicate, and a
		// duplicate fails the whole scrape (patroni_primary included):
		// each name gets one series, from its furthest position.
		at := map[string]uint64{}
		var names []string
		for _, r := range pg.Replicas {
			if _, seen := at[r.ApplicationName]; !seen {
				names = append(names, r.ApplicationName)
			}
			at[r.ApplicationName] = max(at[r.ApplicationName], r.FlushLSN, r.ReplayLSN)
		}
		for _, name := range names {
			lag := uint64(0)
			if at[name] < pg.CurrentLSN {
				lag = pg.CurrentLSN - at[name]
			}
			gauge(a.replicationLag, float64(lag), name)
		}
	}
	if v.isReplica() {
		gauge(a.receiveLSN, float64(v.local.PG.ReceivedLSN))
	}
	gauge(a.buildInfo, 1, version)
}

// versionRE finds the first X.Y.Z (with or without a leading v) in a
// version string such as git describe's v0.3.1-12-gabc1234-dirty.
var versionRE = regexp.MustCompile(`\bv?([0-9]+)\.([0-9]+)\.([0-9]+)\b`)

// versionNum encodes a version as Patroni encodes its own in
// patroni_version: 3.0.2 is 30002 (major*10000 + minor*100 + patch), from
// the first X.Y.Z in v. A string with none ("dev", a bare commit hash)
// and one whose minor or patch is over 99 (it would read as another
// version) give 0.
func versionNum(v string) float64 {
	m := versionRE.FindStringSubmatch(v)
	if m == nil {
		return 0
	}
	var n [3]int
	for i := range n {
		x, err := strconv.Atoi(m[i+1])
		if err != nil {
			return 0
		}
		n[i] = x
	}
	if n[1] > 99 || n[2] > 99 {
		return 0
	}
	return float64(n[0]*10000 + n[1]*100 + n[2])
}
