package api

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"raftgres/failover"
)

// metric is one gauge of /metrics: Patroni's names, so existing dashboards
// and alerts work, plus raftgres_* for the Raft layer.
type metric struct {
	desc  *prometheus.Desc
	value func(v nodeView, m *metricInput) float64
}

// metricInput is what a scrape reads besides the view.
type metricInput struct {
	raftState   string
	term        uint64
	commit      uint64
	applied     uint64
	lastIndex   uint64
	voters      int
	versionNum  float64
	leaderFresh bool
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func newMetrics(scope, name string) []metric {
	labels := prometheus.Labels{"scope": scope, "name": name}
	g := func(n, help string, f func(nodeView, *metricInput) float64) metric {
		return metric{desc: prometheus.NewDesc(n, help, nil, labels), value: f}
	}
	pgRunning := func(v nodeView) bool { return v.running() }
	return []metric{
		g("patroni_version", "Version of the agent (raftgres) as Patroni encodes its own: major*10000+minor*100+patch "+
			"(0.3.1 is 301), 0 when the build's version names no X.Y.Z (raftgres_build_info has the string).",
			func(_ nodeView, m *metricInput) float64 { return m.versionNum }),
		g("patroni_postgres_running", "1 if PostgreSQL is running, else 0.",
			func(v nodeView, _ *metricInput) float64 { return b2f(pgRunning(v)) }),
		g("patroni_postmaster_start_time", "Epoch seconds since PostgreSQL started.",
			func(v nodeView, _ *metricInput) float64 {
				if !pgRunning(v) || v.local.PG.PostmasterStart.IsZero() {
					return 0
				}
				return float64(v.local.PG.PostmasterStart.UnixNano()) / 1e9
			}),
		g("patroni_primary", "1 if this node is the primary holding a valid lease, else 0.",
			func(v nodeView, _ *metricInput) float64 { return b2f(v.holdsValidLease()) }),
		g("patroni_master", "Same as patroni_primary (older name).",
			func(v nodeView, _ *metricInput) float64 { return b2f(v.holdsValidLease()) }),
		g("patroni_xlog_location", "Current WAL location (flush LSN) on the primary, else 0.",
			func(v nodeView, _ *metricInput) float64 {
				if pgRunning(v) && !v.local.PG.InRecovery {
					return float64(v.local.PG.CurrentLSN)
				}
				return 0
			}),
		g("patroni_standby_leader", "1 if this node is a standby cluster's standby leader, else 0.",
			func(v nodeView, _ *metricInput) float64 { return b2f(v.isStandbyLeader()) }),
		g("patroni_replica", "1 if this node is a running replica, else 0.",
			func(v nodeView, _ *metricInput) float64 { return b2f(v.isReplica()) }),
		g("patroni_sync_standby", "1 if this node is a synchronous standby, else 0.",
			func(v nodeView, _ *metricInput) float64 { return b2f(v.isReplica() && v.isSync()) }),
		g("patroni_quorum_standby", "1 if this node is a quorum standby (synchronous_mode: quorum), else 0.",
			func(v nodeView, _ *metricInput) float64 { return b2f(v.isReplica() && v.isQuorum()) }),
		g("patroni_xlog_received_location", "WAL location received by this replica, else 0.",
			func(v nodeView, _ *metricInput) float64 {
				if v.isReplica() {
					return float64(v.local.PG.ReceivedLSN)
				}
				return 0
			}),
		g("patroni_xlog_replayed_location", "WAL location replayed by this replica, else 0.",
			func(v nodeView, _ *metricInput) float64 {
				if v.isReplica() {
					return float64(v.local.PG.ReplayedLSN)
				}
				return 0
			}),
		g("patroni_xlog_replayed_timestamp", "Epoch seconds of the last replayed transaction, else 0.",
			func(v nodeView, _ *metricInput) float64 {
				if v.isReplica() && !v.local.PG.LastReplayAt.IsZero() {
					return float64(v.local.PG.LastReplayAt.UnixNano()) / 1e9
				}
				return 0
			}),
		g("patroni_xlog_paused", "1 if WAL replay is paused, else 0.",
			func(v nodeView, _ *metricInput) float64 { return b2f(v.isReplica() && v.local.PG.ReplayPaused) }),
		g("patroni_postgres_streaming", "1 if this replica streams from the primary, else 0.",
			func(v nodeView, _ *metricInput) float64 {
				return b2f(v.isReplica() && v.local.PG.WalReceiver == failover.Streaming)
			}),
		g("patroni_postgres_in_archive_recovery", "1 if this replica replays WAL without streaming, else 0.",
			func(v nodeView, _ *metricInput) float64 {
				return b2f(v.isReplica() && v.local.PG.WalReceiver != failover.Streaming)
			}),
		g("patroni_postgres_server_version", "PostgreSQL version as server_version_num.",
			func(v nodeView, _ *metricInput) float64 {
				if !pgRunning(v) {
					return 0
				}
				return float64(serverVersionNum(v.local.PG.Version))
			}),
		g("patroni_cluster_unlocked", "1 if no member holds the leader key, else 0.",
			func(v nodeView, _ *metricInput) float64 { return b2f(v.st.Leader.Holder == "") }),
		g("patroni_failsafe_mode_is_active", "1 if failsafe mode is active (never: Raft needs no failsafe mode).",
			func(nodeView, *metricInput) float64 { return 0 }),
		g("patroni_postgres_timeline", "PostgreSQL timeline of this node, 0 when it does not run.",
			func(v nodeView, _ *metricInput) float64 {
				if !pgRunning(v) {
					return 0
				}
				return float64(v.local.PG.Timeline)
			}),
		g("patroni_dcs_last_seen", "Epoch seconds when a Raft leader was last known (the DCS Patroni talks to).",
			func(_ nodeView, m *metricInput) float64 {
				if m.leaderFresh {
					return float64(time.Now().Unix())
				}
				return 0
			}),
		g("patroni_pending_restart", "1 if PostgreSQL needs a restart for a changed parameter, else 0.",
			func(v nodeView, _ *metricInput) float64 { return b2f(pgRunning(v) && v.local.PG.PendingRestart) }),
		g("patroni_is_paused", "1 if the cluster is in maintenance mode (pause), else 0.",
			func(v nodeView, _ *metricInput) float64 { return b2f(v.st.Config.Pause) }),
		g("raftgres_raft_is_leader", "1 if this node is the Raft leader, else 0.",
			func(_ nodeView, m *metricInput) float64 { return b2f(m.raftState == "Leader") }),
		g("raftgres_raft_term", "Current Raft term.",
			func(_ nodeView, m *metricInput) float64 { return float64(m.term) }),
		g("raftgres_raft_commit_index", "Raft commit index.",
			func(_ nodeView, m *metricInput) float64 { return float64(m.commit) }),
		g("raftgres_raft_applied_index", "Raft index applied to the state machine.",
			func(_ nodeView, m *metricInput) float64 { return float64(m.applied) }),
		g("raftgres_raft_last_log_index", "Last Raft log index.",
			func(_ nodeView, m *metricInput) float64 { return float64(m.lastIndex) }),
		g("raftgres_raft_voters", "Voters in the Raft configuration.",
			func(_ nodeView, m *metricInput) float64 { return float64(m.voters) }),
		g("raftgres_leader_epoch", "Epoch of the leader key (increases on every change of primary).",
			func(v nodeView, _ *metricInput) float64 { return float64(v.st.Leader.Epoch) }),
		g("raftgres_lease_remaining_seconds", "Seconds left on this primary's lease, 0 when it holds none.",
			func(v nodeView, _ *metricInput) float64 {
				if !v.holdsValidLease() {
					return 0
				}
				return v.local.LeaseUntil.Sub(v.now).Seconds()
			}),
		g("raftgres_vip_held", "1 if this member holds the VIP (vip:) on its interface, else 0 (always 0 without vip:).",
			func(v nodeView, _ *metricInput) float64 { return b2f(v.local.VIP.Held) }),
		g("raftgres_replication_lag_bytes", "Bytes this replica is behind the primary's last report, 0 elsewhere.",
			func(v nodeView, _ *metricInput) float64 {
				if !v.isReplica() {
					return 0
				}
				return float64(v.lag())
			}),
		g("raftgres_standby_source_lag_bytes", "On a standby leader, bytes its replay is behind the source cluster's last "+
			"known end of WAL, else 0.",
			func(v nodeView, _ *metricInput) float64 {
				if !v.isStandbyLeader() {
					return 0
				}
				return float64(v.sourceLag())
			}),
		g("raftgres_standby_source_lsn", "On a standby leader, the source cluster's last known end of WAL "+
			"(pg_stat_wal_receiver.latest_end_lsn), else 0.",
			func(v nodeView, _ *metricInput) float64 {
				if !v.isStandbyLeader() {
					return 0
				}
				return float64(v.local.PG.SourceLSN)
			}),
		g("raftgres_members", "Members in the replicated state.",
			func(v nodeView, _ *metricInput) float64 { return float64(len(v.st.Members)) }),
	}
}

// collector reads one view per scrape.
type collector struct {
	s       *Server
	metrics []metric
	history historyMetrics
	archive archiveMetrics
	alias   aliasMetrics
	slots   slotMetrics
}

// ArchiveSource reads the local PostgreSQL's pg_stat_archiver when asked
// (pgmanager.Manager in the agent): a scrape or GET /archive reads it
// straight from PostgreSQL, never through the supervisor's loop.
type ArchiveSource interface {
	ArchiveStats(ctx context.Context) (failover.ArchiveStats, error)
}

// WithArchiveSource serves GET /archive and the raftgres_postgresql_archive*
// series from src; without it (no postgresql: section) /archive answers
// 404 and the series are absent.
func WithArchiveSource(src ArchiveSource) Option { return func(s *Server) { s.archive = src } }

// archiveTimeout bounds the pg_stat_archiver query of a request.
const archiveTimeout = time.Second

// handleArchive answers GET /archive: this member's pg_stat_archiver
// (read now), 404 without a PostgreSQL that reports it, 503 while it is
// stopped or does not answer.
func (s *Server) handleArchive(w http.ResponseWriter, r *http.Request) {
	src := s.archive
	if src == nil {
		writeError(w, fmt.Errorf("%w: no WAL archiving statistics on this member", ErrNotFound), "")
		return
	}
	if !s.view().running() {
		writeError(w, fmt.Errorf("%w: postgres is not running", ErrUnavailable), "")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), archiveTimeout)
	defer cancel()
	st, err := src.ArchiveStats(ctx)
	if err != nil {
		writeError(w, fmt.Errorf("%w: read pg_stat_archiver: %v", ErrUnavailable, err), "")
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// archiveMetrics are pg_stat_archiver's figures, served while the local
// PostgreSQL runs (a standby archives nothing: its counters stay 0).
type archiveMetrics struct {
	archived, failed, lastArchived, lastFailed *prometheus.Desc
}

func newArchiveMetrics(scope, name string) archiveMetrics {
	labels := prometheus.Labels{"scope": scope, "name": name}
	d := func(n, help string) *prometheus.Desc { return prometheus.NewDesc(n, help, nil, labels) }
	return archiveMetrics{
		archived:     d("raftgres_postgresql_archived_wal_total", "WAL files archived (pg_stat_archiver.archived_count)."),
		failed:       d("raftgres_postgresql_archive_failures_total", "Failed attempts to archive a WAL file (pg_stat_archiver.failed_count)."),
		lastArchived: d("raftgres_postgresql_last_archived_timestamp_seconds", "When the last WAL file was archived (0: never)."),
		lastFailed:   d("raftgres_postgresql_last_archive_failure_timestamp_seconds", "When archiving last failed (0: never)."),
	}
}

func (a archiveMetrics) describe(ch chan<- *prometheus.Desc) {
	ch <- a.archived
	ch <- a.failed
	ch <- a.lastArchived
	ch <- a.lastFailed
}

func (a archiveMetrics) collect(ch chan<- prometheus.Metric, src ArchiveSource, v nodeView) {
	if src == nil || !v.running() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), archiveTimeout)
	st, err := src.ArchiveStats(ctx)
	cancel()
	if err != nil {
		return
	}
	ts := func(t time.Time) float64 {
		if t.IsZero() {
			return 0
		}
		return float64(t.UnixNano()) / 1e9
	}
	ch <- prometheus.MustNewConstMetric(a.archived, prometheus.CounterValue, float64(st.ArchivedCount))
	ch <- prometheus.MustNewConstMetric(a.failed, prometheus.CounterValue, float64(st.FailedCount))
	ch <- prometheus.MustNewConstMetric(a.lastArchived, prometheus.GaugeValue, ts(st.LastArchivedTime))
	ch <- prometheus.MustNewConstMetric(a.lastFailed, prometheus.GaugeValue, ts(st.LastFailedTime))
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.metrics {
		ch <- m.desc
	}
	c.history.describe(ch)
	c.archive.describe(ch)
	c.alias.describe(ch)
	c.slots.describe(ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	v := c.s.view()
	in := &metricInput{versionNum: versionNum(c.s.version)}
	if rs, err := c.s.store.Status(); err == nil || rs.State != "" {
		in.raftState, in.term, in.commit, in.applied, in.lastIndex = rs.State, rs.Term, rs.CommitIndex, rs.AppliedIndex, rs.LastIndex
		in.leaderFresh = rs.LeaderID != ""
		for _, srv := range rs.Servers {
			if srv.Suffrage == "Voter" {
				in.voters++
			}
		}
	}
	for _, m := range c.metrics {
		ch <- prometheus.MustNewConstMetric(m.desc, prometheus.GaugeValue, m.value(v, in))
	}
	c.history.collect(ch, v.st.History)
	c.alias.collect(ch, v, c.s.version)
	c.archive.collect(ch, c.s.archive, v)
	c.slots.collect(ch, v)
}

// newCollector builds every series /metrics serves from the cluster
// (s may be nil to list their descriptions only).
func newCollector(s *Server, scope, name string) *collector {
	return &collector{s: s, metrics: newMetrics(scope, name), history: newHistoryMetrics(scope, name),
		archive: newArchiveMetrics(scope, name), alias: newAliasMetrics(scope, name), slots: newSlotMetrics(scope, name)}
}

func (s *Server) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(s, s.scope, s.store.ID()))
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return s.serveMetrics(reg)
}
