package api

import (
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"

	"raftgres/failover"
	"raftgres/raftstore"
)

// ClusterMember is one member in GET /cluster (Patroni's shape).
type ClusterMember struct {
	Name           string            `json:"name"`
	Role           ClusterRole       `json:"role"`
	State          raftstore.PGState `json:"state"`
	APIURL         string            `json:"api_url"`
	Host           string            `json:"host,omitempty"`
	Port           int               `json:"port,omitempty"`
	Timeline       uint32            `json:"timeline,omitempty"`
	LSN            string            `json:"lsn,omitempty"`
	Lag            *int64            `json:"lag,omitempty"`
	PendingRestart bool              `json:"pending_restart,omitempty"`
	// Reported is the role in the member's last report: primary, replica,
	// standby_leader (a leader still in recovery reports replica).
	Reported raftstore.Role `json:"reported_role,omitempty"`
	Tags     raftstore.Tags `json:"tags"`
	// Raft is this member's place in the Raft configuration: leader,
	// voter, nonvoter, or "" when it is not in it.
	Raft string `json:"raft,omitempty"`
	// ReportedAt is the member's own time of its last status report.
	ReportedAt time.Time `json:"reported_at,omitzero"`
	// Agent is the release its agent last registered with, and the
	// protocol it speaks: what an upgrade is waiting for.
	Agent raftstore.AgentVersion `json:"agent,omitzero"`
	// SlotDropped says the primary no longer keeps this member's slot: it
	// has not reported for member_slots_ttl (back, it catches up from the
	// WAL archive or is cloned again).
	SlotDropped bool `json:"slot_dropped,omitempty"`
}

// PermanentSlot is a permanent slot of the cluster's config and where it
// stands: on the primary (LSN: a logical slot's confirmed position, a
// physical slot's restart_lsn) and on each replica, whose copy is what a
// consumer resumes from after a failover to it. Missing are the running
// replicas without a copy yet: a failover to one of them loses the slot.
type PermanentSlot struct {
	Name    string             `json:"name"`
	Type    raftstore.SlotType `json:"type"`
	LSN     string             `json:"lsn,omitempty"`
	Copies  map[string]string  `json:"copies,omitempty"`
	Missing []string           `json:"missing,omitempty"`
}

// ScheduledSwitchover is a pending switchover or failover request.
type ScheduledSwitchover struct {
	Kind raftstore.FailoverKind `json:"kind"`
	At   time.Time              `json:"at,omitzero"`
	From string                 `json:"from,omitempty"`
	To   string                 `json:"to,omitempty"`
}

// ClusterView is GET /cluster.
type ClusterView struct {
	Scope               string               `json:"scope"`
	Members             []ClusterMember      `json:"members"`
	Pause               bool                 `json:"pause,omitempty"`
	ScheduledSwitchover *ScheduledSwitchover `json:"scheduled_switchover,omitempty"`
	SynchronousMode     bool                 `json:"synchronous_mode,omitempty"`
	LeaderEpoch         uint64               `json:"leader_epoch"`
	RaftLeader          string               `json:"raft_leader,omitempty"`
	// AnsweredBy is the member whose view this is, RaftState its Raft
	// state (Leader, Follower, Candidate) and RaftLastContact how long ago
	// a follower last heard from the leader: a view from a member cut off
	// from the leader holds old roles.
	AnsweredBy      string `json:"answered_by,omitempty"`
	RaftState       string `json:"raft_state,omitempty"`
	RaftLastContact string `json:"raft_last_contact,omitempty"`
	// PermanentSlots are the slots: of the config, with their positions.
	PermanentSlots []PermanentSlot `json:"permanent_slots,omitempty"`
	// StandbyCluster is set when this cluster is a standby of another.
	StandbyCluster *StandbyClusterView `json:"standby_cluster,omitempty"`
}

// StandbyClusterView is where a standby cluster stands against its
// source, as its standby leader last reported: the source's last known
// end of WAL (SourceLSN, sent at SourceAt) and how far the standby leader
// has replayed. Empty positions are unknown (no standby leader, or
// replication from the archive only).
type StandbyClusterView struct {
	Source        string    `json:"source"`
	StandbyLeader string    `json:"standby_leader,omitempty"`
	SourceLSN     string    `json:"source_lsn,omitempty"`
	SourceAt      time.Time `json:"source_at,omitzero"`
	ReplayedLSN   string    `json:"replayed_lsn,omitempty"`
	// Behind is SourceLSN − ReplayedLSN in bytes, when both are known.
	Behind *int64 `json:"behind_bytes,omitempty"`
}

// staleAfter is how old a member's last report may be (on the reader's
// wall clock) before the member is shown as unreachable: what the
// coordinator counts as stale, with room for clock skew between hosts.
func staleAfter(c raftstore.ClusterConfig) time.Duration {
	return max(c.StaleAfter(), 5*time.Second)
}

// ClusterRole is a member's role in /cluster, in Patroni's words.
type ClusterRole string

// The roles /cluster shows.
const (
	ClusterLeader ClusterRole = "leader"
	// ClusterStandbyLeader is a standby cluster's leader-key holder.
	ClusterStandbyLeader ClusterRole = "standby_leader"
	ClusterReplica       ClusterRole = "replica"
	ClusterSyncStandby   ClusterRole = "sync_standby"
	// ClusterQuorumStandby is a member of the quorum set in
	// synchronous_mode: quorum (Patroni 4's name).
	ClusterQuorumStandby ClusterRole = "quorum_standby"
	ClusterUninitialized ClusterRole = "uninitialized"
)

// Synchronous reports whether a member of role r may hold commits the
// primary acknowledged (sync_standby, quorum_standby): a switchover or a
// drill goes to one in synchronous mode.
func Synchronous(r ClusterRole) bool { return r == ClusterSyncStandby || r == ClusterQuorumStandby }

// States /cluster shows beside those members report: no report yet, or
// the last one too old.
const (
	StateUnknown     raftstore.PGState = "unknown"
	StateUnreachable raftstore.PGState = "unreachable"
	// StateUninitialized is /patroni's state of a member with no data
	// directory yet.
	StateUninitialized raftstore.PGState = "uninitialized"
)

// BuildClusterView is /cluster's body from the FSM and the Raft
// configuration, as seen at now (wall clock).
func BuildClusterView(scope string, st raftstore.State, rs raftstore.Status, now time.Time) ClusterView {
	out := ClusterView{Scope: scope, Members: []ClusterMember{}, Pause: st.Config.Pause,
		SynchronousMode: st.Config.SynchronousMode, LeaderEpoch: st.Leader.Epoch, RaftLeader: rs.LeaderID,
		AnsweredBy: rs.ID, RaftState: rs.State, RaftLastContact: rs.LastContact}
	if f := st.Failover; f != nil {
		out.ScheduledSwitchover = &ScheduledSwitchover{Kind: f.Kind, At: f.ScheduledAt, From: f.From, To: f.To}
	}
	raftRole := map[string]string{}
	for _, srv := range rs.Servers {
		role := "nonvoter"
		if srv.Suffrage == "Voter" {
			role = "voter"
		}
		if srv.ID == rs.LeaderID {
			role = "leader"
		}
		raftRole[srv.ID] = role
	}
	plsn := primaryLSN(st)
	for _, name := range st.MemberNames() {
		m := st.Members[name]
		ms := m.Status
		cm := ClusterMember{Name: name, Role: ClusterReplica, State: ms.State, APIURL: m.APIAddr + "/patroni",
			Timeline: ms.Timeline, PendingRestart: ms.PendingRestart, Tags: m.Tags, Raft: raftRole[name],
			ReportedAt: ms.ReportedAt, Agent: m.Agent, Reported: ms.Role}
		cm.Host, cm.Port = splitHostPort(m.PGAddr)
		switch {
		case st.Leader.Holder == name && st.Config.IsStandbyCluster():
			cm.Role = ClusterStandbyLeader
		case st.Leader.Holder == name:
			cm.Role = ClusterLeader
		case st.Config.QuorumCommit() && slices.Contains(st.Sync.Standbys, name):
			cm.Role = ClusterQuorumStandby
		case st.Config.SynchronousMode && slices.Contains(st.Sync.Standbys, name):
			cm.Role = ClusterSyncStandby
		case ms.Role == raftstore.RoleUninitialized:
			cm.Role = ClusterUninitialized
		}
		if cm.State == "" {
			cm.State = StateUnknown
		}
		if ms.ReportedAt.IsZero() || now.Sub(ms.ReportedAt) > staleAfter(st.Config) {
			cm.State = StateUnreachable
		}
		if cm.State == raftstore.StateRunning {
			lsn := max(ms.WrittenLSN, ms.ReceivedLSN, ms.ReplayedLSN)
			cm.LSN = formatLSN(lsn)
			switch {
			case cm.Role == ClusterStandbyLeader && ms.SourceLSN != 0:
				lag := int64(0)
				if ms.SourceLSN > ms.ReplayedLSN {
					lag = int64(ms.SourceLSN - ms.ReplayedLSN)
				}
				cm.Lag = &lag
			case cm.Role == ClusterStandbyLeader:
			case cm.Role != ClusterLeader:
				lag := int64(0)
				if plsn > lsn {
					lag = int64(plsn - lsn)
				}
				cm.Lag = &lag
			}
		}
		out.Members = append(out.Members, cm)
	}
	if st.Config.PostgreSQL.UseSlots && st.Leader.Holder != "" {
		_, absent := failover.SlotMembers(st, st.Leader.Holder, now)
		for i := range out.Members {
			out.Members[i].SlotDropped = slices.Contains(absent, out.Members[i].Name)
		}
	}
	out.PermanentSlots = permanentSlots(st, out.Members)
	out.StandbyCluster = standbyClusterView(st)
	return out
}

// standbyClusterView is ClusterView.StandbyCluster (nil outside a
// standby cluster).
func standbyClusterView(st raftstore.State) *StandbyClusterView {
	sc := st.Config.StandbyCluster
	if sc == nil {
		return nil
	}
	v := &StandbyClusterView{Source: sc.Source()}
	m, ok := st.Members[st.Leader.Holder]
	if !ok {
		return v
	}
	v.StandbyLeader = m.Name
	ms := m.Status
	if ms.ReplayedLSN != 0 {
		v.ReplayedLSN = formatLSN(ms.ReplayedLSN)
	}
	if ms.Role == raftstore.RoleStandbyLeader {
		if ms.SourceLSN != 0 {
			v.SourceLSN, v.SourceAt = formatLSN(ms.SourceLSN), ms.SourceAt
		}
		if ms.SourceLSN != 0 && ms.ReplayedLSN != 0 {
			b := int64(0)
			if ms.SourceLSN > ms.ReplayedLSN {
				b = int64(ms.SourceLSN - ms.ReplayedLSN)
			}
			v.Behind = &b
		}
	}
	return v
}

// permanentSlots are the permanent slots as the members last reported them.
func permanentSlots(st raftstore.State, members []ClusterMember) []PermanentSlot {
	var out []PermanentSlot
	for _, name := range slices.Sorted(maps.Keys(st.Config.Slots)) {
		ps := PermanentSlot{Name: name, Type: st.Config.Slots[name].Type}
		for _, cm := range members {
			pos, ok := reportedSlot(st, cm.Name, name)
			switch {
			case cm.Role == ClusterLeader && ok:
				ps.LSN = formatLSN(pos)
			case cm.Role == ClusterLeader:
			case ok:
				if ps.Copies == nil {
					ps.Copies = map[string]string{}
				}
				ps.Copies[cm.Name] = formatLSN(pos)
			case cm.State == raftstore.StateRunning:
				ps.Missing = append(ps.Missing, cm.Name)
			}
		}
		out = append(out, ps)
	}
	return out
}

// reportedSlot is the position member last reported for its slot name.
func reportedSlot(st raftstore.State, member, name string) (uint64, bool) {
	if m, ok := st.Members[member]; ok {
		return m.SlotLSN(name)
	}
	return 0, false
}

func (s *Server) handleCluster(w http.ResponseWriter, r *http.Request) {
	rs, _ := s.store.Status()
	writeJSON(w, http.StatusOK, BuildClusterView(s.scope, s.store.State(), rs, time.Now()))
}

// historyLimitHeader tells /history readers how many events the cluster
// keeps (raftstore.MaxHistory): older ones have been dropped.
const historyLimitHeader = "X-Raftgres-History-Limit"

// handleHistory answers the newest raftstore.MaxHistory events, oldest first.
func (s *Server) handleHistory(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(historyLimitHeader, strconv.Itoa(raftstore.MaxHistory))
	writeJSON(w, http.StatusOK, s.store.State().History)
}
