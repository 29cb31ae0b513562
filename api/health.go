package api

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"raftgres/failover"
	"raftgres/raftstore"
)

// healthPaths are the load-balancer endpoints, with Patroni's semantics:
// 200 when this node is what the path asks for, else 503.
var healthPaths = []string{
	"/primary", "/master", "/leader", "/read-write",
	"/replica", "/read-only", "/sync", "/synchronous", "/async", "/asynchronous",
	"/quorum", "/read-only-quorum", "/standby-leader", "/standby_leader",
	"/health", "/liveness", "/readiness",
}

// healthy decides a health endpoint from one view; q holds ?lag= etc.
// It is pure so that every role and path is table-tested.
func healthy(path string, q url.Values, v nodeView) (bool, error) {
	maxLag := int64(-1)
	if s := q.Get("lag"); s != "" {
		n, err := ParseBytes(s)
		if err != nil {
			return false, fmt.Errorf("%w: lag=%q: %w", ErrBadRequest, s, err)
		}
		maxLag = n
	}
	replicaOK := func() bool {
		return v.isReplica() && !v.tags().NoLoadBalance && (maxLag < 0 || v.lag() <= maxLag)
	}
	switch path {
	case "/", "/primary", "/master", "/read-write":
		return v.holdsValidLease(), nil
	case "/leader":
		// As in Patroni: the leader-key holder, a standby leader too.
		return v.holdsValidLease() || v.isStandbyLeader(), nil
	case "/standby-leader", "/standby_leader":
		return v.isStandbyLeader(), nil
	case "/replica":
		return replicaOK(), nil
	case "/read-only":
		return v.holdsValidLease() || replicaOK(), nil
	case "/sync", "/synchronous":
		return replicaOK() && v.isSync(), nil
	case "/async", "/asynchronous":
		return replicaOK() && !v.isSync() && !v.isQuorum(), nil
	case "/quorum":
		return replicaOK() && v.isQuorum(), nil
	case "/read-only-quorum":
		return v.holdsValidLease() || replicaOK() && v.isQuorum(), nil
	case "/health":
		return v.running(), nil
	case "/liveness":
		return v.alive(), nil
	case "/readiness":
		return v.holdsValidLease() || v.isReplica(), nil
	}
	return false, fmt.Errorf("%w: %s", ErrNotFound, path)
}

// alive reports whether the supervisor loop is turning: its last cycle
// ended within ttl (primary) or 2·ttl (others). A member still without data
// (cloning) counts as alive.
func (v nodeView) alive() bool {
	if !v.hasPG || !v.local.HasData {
		return true
	}
	if v.local.ObservedAt.IsZero() {
		return false
	}
	limit := 2 * v.st.Config.TTL
	if v.st.Leader.Holder == v.name {
		limit = v.st.Config.TTL
	}
	return v.now.Sub(v.local.ObservedAt) <= max(limit, 2*time.Second)
}

// ParseBytes reads a byte count with an optional PostgreSQL-style unit
// (B, kB, MB, GB, TB; 1024-based), as Patroni's ?lag= accepts.
func ParseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("not a byte count")
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("not a byte count: %w", err)
	}
	mult := map[string]int64{"": 1, "B": 1, "kB": 1 << 10, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
	m, ok := mult[strings.TrimSpace(s[i:])]
	if !ok {
		return 0, fmt.Errorf("unknown unit %q (use B, kB, MB, GB or TB)", s[i:])
	}
	if n > (1<<62)/m {
		return 0, fmt.Errorf("too large")
	}
	return n * m, nil
}

func (s *Server) view() nodeView {
	v := nodeView{name: s.store.ID(), st: s.store.State(), now: failover.Now()}
	if s.member != nil {
		v.hasPG, v.local = true, s.member.Local()
	}
	return v
}

// handleHealth serves a health endpoint for GET (status JSON), HEAD and
// OPTIONS (status code only), as HAProxy's option httpchk expects.
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		w.Header().Set("Allow", "GET, HEAD, OPTIONS")
		writeJSON(w, http.StatusMethodNotAllowed, wireError{
			Error: fmt.Sprintf("method %s not allowed on %s (allowed: GET, HEAD, OPTIONS)", r.Method, r.URL.Path),
			Code:  "method_not_allowed"})
		return
	}
	v := s.view()
	ok, err := healthy(r.URL.Path, r.URL.Query(), v)
	if err != nil {
		writeError(w, err, "")
		return
	}
	code := http.StatusServiceUnavailable
	if ok {
		code = http.StatusOK
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		return
	}
	writeJSON(w, code, s.status(v))
}

// handlePatroni is GET /patroni: this member's status, always 200.
func (s *Server) handlePatroni(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.status(s.view()))
}

// MemberStatus is the status JSON of /, /patroni and the health
// endpoints, in Patroni's shape plus a raftgres section.
type MemberStatus struct {
	State                    raftstore.PGState `json:"state"`
	PostmasterStartTime      string            `json:"postmaster_start_time,omitempty"`
	Role                     raftstore.Role    `json:"role"`
	ServerVersion            int               `json:"server_version,omitempty"`
	Xlog                     *XlogStatus       `json:"xlog,omitempty"`
	Timeline                 uint32            `json:"timeline,omitempty"`
	Replication              []Replication     `json:"replication,omitempty"`
	SyncStandby              bool              `json:"sync_standby,omitempty"`
	ClusterUnlocked          bool              `json:"cluster_unlocked,omitempty"`
	Pause                    bool              `json:"pause,omitempty"`
	PendingRestart           bool              `json:"pending_restart,omitempty"`
	DCSLastSeen              int64             `json:"dcs_last_seen,omitempty"`
	DatabaseSystemIdentifier string            `json:"database_system_identifier,omitempty"`
	Tags                     *raftstore.Tags   `json:"tags,omitempty"`
	Patroni                  PatroniInfo       `json:"patroni"`
	Raftgres                 RaftgresInfo      `json:"raftgres"`
}

// XlogStatus is the WAL position part of MemberStatus.
type XlogStatus struct {
	Location          *uint64 `json:"location,omitempty"`
	ReceivedLocation  *uint64 `json:"received_location,omitempty"`
	ReplayedLocation  *uint64 `json:"replayed_location,omitempty"`
	ReplayedTimestamp *string `json:"replayed_timestamp"`
	Paused            *bool   `json:"paused,omitempty"`
}

// Replication is one pg_stat_replication row.
type Replication struct {
	ApplicationName string `json:"application_name"`
	State           string `json:"state"`
	SyncState       string `json:"sync_state"`
}

// PatroniInfo names the software, member and scope.
type PatroniInfo struct {
	Version string `json:"version"`
	Scope   string `json:"scope"`
	Name    string `json:"name"`
}

// RaftgresInfo is what raftgres adds: the lease and Raft view.
type RaftgresInfo struct {
	LeaseValid     bool    `json:"lease_valid"`
	LeaseRemaining float64 `json:"lease_remaining_seconds,omitempty"`
	LeaderEpoch    uint64  `json:"leader_epoch"`
	RaftState      string  `json:"raft_state"`
	RaftLeader     string  `json:"raft_leader,omitempty"`
	RaftTerm       uint64  `json:"raft_term"`
}

func (s *Server) status(v nodeView) MemberStatus {
	l := v.local
	out := MemberStatus{
		State: v.state(), Role: v.role(), Pause: v.st.Config.Pause,
		ClusterUnlocked:          v.st.Leader.Holder == "",
		DatabaseSystemIdentifier: v.st.Initialize,
		Patroni:                  PatroniInfo{Version: s.version, Scope: s.scope, Name: v.name},
		Raftgres:                 RaftgresInfo{LeaseValid: v.holdsValidLease(), LeaderEpoch: v.st.Leader.Epoch},
	}
	if m, ok := v.st.Members[v.name]; ok {
		t := m.Tags
		out.Tags = &t
	}
	if rs, err := s.store.Status(); err == nil || rs.State != "" {
		out.Raftgres.RaftState, out.Raftgres.RaftLeader, out.Raftgres.RaftTerm = rs.State, rs.LeaderID, rs.Term
		if rs.LeaderID != "" {
			out.DCSLastSeen = time.Now().Unix()
		}
	}
	if out.Raftgres.LeaseValid {
		out.Raftgres.LeaseRemaining = l.LeaseUntil.Sub(v.now).Seconds()
	}
	if !v.running() {
		return out
	}
	pg := l.PG
	out.Timeline, out.PendingRestart = pg.Timeline, pg.PendingRestart
	out.ServerVersion = serverVersionNum(pg.Version)
	if !pg.PostmasterStart.IsZero() {
		out.PostmasterStartTime = pg.PostmasterStart.Format("2006-01-02 15:04:05.999999-07:00")
	}
	if pg.SystemID != "" {
		out.DatabaseSystemIdentifier = pg.SystemID
	}
	if !pg.InRecovery {
		loc := pg.CurrentLSN
		out.Xlog = &XlogStatus{Location: &loc}
		for _, r := range pg.Replicas {
			out.Replication = append(out.Replication, Replication{ApplicationName: r.ApplicationName, State: r.State, SyncState: r.SyncState})
		}
		return out
	}
	for _, r := range pg.Replicas {
		// A cascade: a standby leader's own standbys.
		out.Replication = append(out.Replication, Replication{ApplicationName: r.ApplicationName, State: r.State, SyncState: r.SyncState})
	}
	recv, replay, paused := pg.ReceivedLSN, pg.ReplayedLSN, pg.ReplayPaused
	out.Xlog = &XlogStatus{ReceivedLocation: &recv, ReplayedLocation: &replay, Paused: &paused}
	if !pg.LastReplayAt.IsZero() {
		ts := pg.LastReplayAt.Format("2006-01-02 15:04:05.999999-07:00")
		out.Xlog.ReplayedTimestamp = &ts
	}
	out.SyncStandby = v.isSync()
	return out
}
