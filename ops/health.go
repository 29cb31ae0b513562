// Package ops holds the operator procedures the CLI runs against a live
// cluster through its REST API: whether the cluster is healthy enough to
// lose a member for a restart, the next step of a rolling upgrade, the
// rolling restart, and the failover drill. It decides in pure functions
// and acts through api.Client (the drill's probe also writes to the
// members' PostgreSQL).
package ops

import (
	"context"
	"fmt"
	"slices"
	"time"

	"raftgres/api"
	"raftgres/failover"
	"raftgres/raftstore"
)

// StreamingReplicas asks the primary which members stream from it
// (pg_stat_replication's application names in state streaming); nil when
// it does not answer.
func StreamingReplicas(ctx context.Context, client *api.Client, view api.ClusterView) map[string]bool {
	primary, ok := RunningPrimary(view)
	if !ok {
		// A standby cluster: its replicas stream from the standby leader.
		primary, ok = runningRole(view, api.ClusterStandbyLeader)
	}
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := client.With(primary.APIURL).MemberStatus(ctx)
	if err != nil {
		return nil
	}
	out := map[string]bool{}
	for _, r := range st.Replication {
		if r.State == failover.Streaming {
			out[r.ApplicationName] = true
		}
	}
	return out
}

// RunningPrimary is the view's leader when it runs.
func RunningPrimary(view api.ClusterView) (api.ClusterMember, bool) {
	return runningRole(view, api.ClusterLeader)
}

// runningRole is the view's running member in role.
func runningRole(view api.ClusterView, role api.ClusterRole) (api.ClusterMember, bool) {
	for _, m := range view.Members {
		if m.Role == role && m.State == raftstore.StateRunning {
			return m, true
		}
	}
	return api.ClusterMember{}, false
}

// ClusterHealth is whether the cluster can lose one member for a restart:
// its running primary, its replicas streaming from it (sorted), and every
// reason it cannot (Blockers).
type ClusterHealth struct {
	Primary  string
	Replicas []string
	Blockers []string
}

// CheckHealth reads it from the view and which replicas stream from the
// primary.
func CheckHealth(view api.ClusterView, streaming map[string]bool) ClusterHealth {
	var h ClusterHealth
	for _, m := range view.Members {
		switch {
		case m.State == api.StateUnreachable:
			h.Blockers = append(h.Blockers, m.Name+"'s agent does not report: bring it back first (a member down and one restarting could cost the quorum)")
		case m.State != raftstore.StateRunning:
			h.Blockers = append(h.Blockers, fmt.Sprintf("%s's PostgreSQL is %s, not running", m.Name, m.State))
		case m.Role == api.ClusterLeader || m.Role == api.ClusterStandbyLeader:
			// A standby cluster's standby leader leads as a primary does
			// (a switchover moves it too).
			h.Primary = m.Name
		case !streaming[m.Name]:
			h.Blockers = append(h.Blockers, m.Name+" is not streaming from the primary")
		default:
			h.Replicas = append(h.Replicas, m.Name)
		}
	}
	if h.Primary == "" {
		h.Blockers = append(h.Blockers, "no running primary")
	}
	if view.Pause {
		h.Blockers = append(h.Blockers, "the cluster is paused (maintenance mode): resume it, a switchover is needed")
	}
	if s := view.ScheduledSwitchover; s != nil {
		h.Blockers = append(h.Blockers, fmt.Sprintf("a %s is pending: let it finish or cancel it", s.Kind))
	}
	slices.Sort(h.Replicas)
	return h
}
