package api

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	"raftgres/failover"
	"raftgres/raftstore"
)

// Member is the local PostgreSQL member as the API sees it: the
// supervisor's published view and the operator requests it carries out.
// A Raft-only agent has none.
type Member interface {
	Local() failover.Local
	Do(ctx context.Context, r failover.Request) error
}

// nodeView is everything a health decision reads, taken at one instant.
type nodeView struct {
	name  string
	st    raftstore.State
	local failover.Local
	hasPG bool
	now   time.Time // failover.Now: the clock of the lease and Local's times
}

// holdsValidLease reports whether this node is the primary and may accept
// writes now: PostgreSQL runs out of recovery, the FSM names it holder and
// its lease (from its last acknowledged renewal) has not run out.
func (v nodeView) holdsValidLease() bool {
	l := v.local
	return v.hasPG && l.PG.Running && !l.PG.InRecovery && v.st.Leader.Holder == v.name &&
		l.Epoch == v.st.Leader.Epoch && l.LeaseValid(v.now)
}

// isStandbyLeader reports whether this node is a standby cluster's
// standby leader: it holds the leader key with a valid lease and runs a
// standby of the source cluster.
func (v nodeView) isStandbyLeader() bool {
	l := v.local
	return v.hasPG && v.st.Config.IsStandbyCluster() && l.PG.Running && l.PG.InRecovery && v.st.Leader.Holder == v.name &&
		l.Epoch == v.st.Leader.Epoch && l.LeaseValid(v.now)
}

// sourceLag is how far (bytes) the standby leader's replay is behind the
// source's last known end of WAL (0 when unknown).
func (v nodeView) sourceLag() int64 {
	pg := v.local.PG
	if pg.SourceLSN <= pg.ReplayedLSN {
		return 0
	}
	return int64(pg.SourceLSN - pg.ReplayedLSN)
}

// isReplica reports whether a standby runs here.
func (v nodeView) isReplica() bool {
	return v.hasPG && v.local.PG.Running && v.local.PG.InRecovery
}

func (v nodeView) running() bool { return v.hasPG && v.local.PG.Running }

func (v nodeView) tags() raftstore.Tags {
	if m, ok := v.st.Members[v.name]; ok {
		return m.Tags
	}
	return raftstore.DefaultTags()
}

func (v nodeView) isSync() bool {
	return v.st.Config.SynchronousMode && !v.st.Config.QuorumCommit() && slices.Contains(v.st.Sync.Standbys, v.name)
}

// isQuorum: in quorum mode, this member is in the recorded quorum set.
func (v nodeView) isQuorum() bool {
	return v.st.Config.QuorumCommit() && slices.Contains(v.st.Sync.Standbys, v.name)
}

// primaryLSN is the end of the last primary's WAL as the store knows it
// (raftstore.State.LastPrimaryLSN, what maximum_lag_on_failover is
// measured against); in a standby cluster, how far the standby leader had
// received.
func primaryLSN(st raftstore.State) uint64 { return st.LastPrimaryLSN() }

// lag is how far (bytes) this replica is behind the primary's last report.
func (v nodeView) lag() int64 {
	p := primaryLSN(v.st)
	mine := max(v.local.PG.ReceivedLSN, v.local.PG.ReplayedLSN)
	if p <= mine {
		return 0
	}
	return int64(p - mine)
}

// role is the Patroni role of this node: primary, replica or uninitialized.
func (v nodeView) role() raftstore.Role {
	switch {
	case !v.hasPG:
		return raftstore.RoleUninitialized
	case v.local.PG.Running && !v.local.PG.InRecovery:
		return raftstore.RolePrimary
	case v.local.PG.Running && v.st.Config.IsStandbyCluster() && v.st.Leader.Holder == v.name:
		return raftstore.RoleStandbyLeader
	case v.local.PG.Running:
		return raftstore.RoleReplica
	case !v.local.HasData:
		return raftstore.RoleUninitialized
	case v.st.Leader.Holder == v.name:
		return raftstore.RolePrimary
	}
	return raftstore.RoleReplica
}

// state is the Patroni state of this node's PostgreSQL: running, stopped
// or, with no data directory yet, uninitialized.
func (v nodeView) state() raftstore.PGState {
	switch {
	case !v.hasPG:
		return raftstore.StateStopped
	case v.local.PG.Running:
		return raftstore.StateRunning
	case !v.local.HasData:
		return StateUninitialized
	}
	return raftstore.StateStopped
}

// serverVersionNum turns "15.4 (Debian 15.4-1)" into 150004, as Patroni
// reports server_version.
func serverVersionNum(v string) int {
	major, minor := 0, 0
	i := 0
	for ; i < len(v) && v[i] >= '0' && v[i] <= '9'; i++ {
		major = major*10 + int(v[i]-'0')
	}
	if i < len(v) && v[i] == '.' {
		for i++; i < len(v) && v[i] >= '0' && v[i] <= '9'; i++ {
			minor = minor*10 + int(v[i]-'0')
		}
	}
	return major*10000 + minor
}

func splitHostPort(addr string) (string, int) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, 0
	}
	p, _ := strconv.Atoi(port)
	return host, p
}

// formatLSN prints an LSN as PostgreSQL does (0/3000060).
func formatLSN(l uint64) string { return fmt.Sprintf("%X/%X", l>>32, l&0xffffffff) }
