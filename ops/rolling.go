package ops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"raftgres/api"
)

// postmasterTimeLayout is how /patroni writes postmaster_start_time.
const postmasterTimeLayout = "2006-01-02 15:04:05.999999-07:00"

// rollingStepTimeout bounds the wait for one member to run and stream
// again after its restart, and for a switchover to complete.
const rollingStepTimeout = 5 * time.Minute

// RollingTarget is one member a rolling restart must restart.
type RollingTarget struct {
	Name    string
	URL     string
	Primary bool
}

// RollingTargets lists, replicas first in name order and the primary
// last, the members whose PostgreSQL still needs the restart: with pending
// only those PostgreSQL says need one, otherwise those whose postmaster
// started before since (so a resumed run skips what it already did).
func RollingTargets(view api.ClusterView, started map[string]time.Time, since time.Time, pending bool) []RollingTarget {
	var out []RollingTarget
	for _, m := range view.Members {
		need := m.PendingRestart
		if !pending {
			t, ok := started[m.Name]
			need = !ok || t.Before(since)
		}
		if need {
			out = append(out, RollingTarget{Name: m.Name, URL: m.APIURL, Primary: m.Role == api.ClusterLeader})
		}
	}
	slices.SortFunc(out, func(a, b RollingTarget) int {
		if a.Primary != b.Primary {
			if a.Primary {
				return 1
			}
			return -1
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

// SwitchoverCandidate is the streaming replica among replicas closest to
// the primary; in synchronous mode only a synchronous standby (which holds
// every acknowledged commit, and which the cluster refuses to switch over
// to otherwise) counts. "" when there is none.
func SwitchoverCandidate(view api.ClusterView, replicas []string) string {
	best, bestLag := "", int64(-1)
	for _, m := range view.Members {
		if !slices.Contains(replicas, m.Name) || m.Lag == nil || (view.SynchronousMode && !api.Synchronous(m.Role)) {
			continue
		}
		if bestLag < 0 || *m.Lag < bestLag {
			best, bestLag = m.Name, *m.Lag
		}
	}
	return best
}

// RollingOptions shape RollingRestart.
type RollingOptions struct {
	// Since is when the run began: members whose PostgreSQL started
	// before it are restarted (a resumed run passes the first run's).
	Since time.Time
	// Pending restarts only members with a pending restart.
	Pending bool
	// Out receives the progress lines.
	Out io.Writer
	// Confirm is asked once, with what will be done, before anything is.
	Confirm func(question string) error
}

// ErrUnhealthy is RollingRestart's refusal to start on a cluster that
// cannot lose a member for a restart.
var ErrUnhealthy = errors.New("not now")

// RollingRestart restarts every member's PostgreSQL one at a time without
// taking writes away for more than a switchover: the replicas, each until
// it streams again, then a switchover to the closest replica, which
// restarts the old primary as a standby. An error names the member it
// stopped at; the run resumes with the same Since.
func RollingRestart(ctx context.Context, client *api.Client, o RollingOptions) error {
	out, since := o.Out, o.Since
	view, err := client.ClusterView(ctx)
	if err != nil {
		return err
	}
	h := CheckHealth(view, StreamingReplicas(ctx, client, view))
	if len(h.Blockers) > 0 {
		return fmt.Errorf("%w:\n  - %s", ErrUnhealthy, strings.Join(h.Blockers, "\n  - "))
	}
	targets := RollingTargets(view, PostmasterStarts(ctx, client, view), since, o.Pending)
	if len(targets) == 0 {
		fmt.Fprintln(out, "nothing to restart")
		return nil
	}
	var names []string
	for _, t := range targets {
		names = append(names, t.Name)
	}
	if err := o.Confirm(fmt.Sprintf("Restart %s one at a time (the primary %s by a switchover)?", strings.Join(names, ", "), h.Primary)); err != nil {
		return err
	}
	fmt.Fprintf(out, "rolling restart since %s (resume an interrupted run with --since %s)\n",
		since.UTC().Format(time.RFC3339), since.UTC().Format(time.RFC3339))
	for _, t := range targets {
		begin := time.Now()
		if t.Primary {
			// The replicas' restarts may have moved the synchronous
			// standby: choose from the cluster as it is now.
			now, err := client.ClusterView(ctx)
			if err != nil {
				return fmt.Errorf("%s: %w", t.Name, err)
			}
			cand := SwitchoverCandidate(now, CheckHealth(now, StreamingReplicas(ctx, client, now)).Replicas)
			if cand == "" {
				return fmt.Errorf("%s: no streaming replica to switch over to (in synchronous mode: no synchronous standby)", t.Name)
			}
			fmt.Fprintf(out, "%s: switchover to %s\n", t.Name, cand)
			if _, err := client.Post(ctx, "POST", "/switchover", api.SwitchoverRequest{Leader: t.Name, Candidate: cand}); err != nil {
				return fmt.Errorf("%s: switchover to %s: %w", t.Name, cand, err)
			}
		} else {
			fmt.Fprintf(out, "%s: restart\n", t.Name)
			if _, err := client.With(t.URL).Post(ctx, "POST", "/restart", api.RestartRequest{}); err != nil {
				return fmt.Errorf("%s: %w", t.Name, err)
			}
		}
		if err := WaitRestarted(ctx, client, t.Name, since); err != nil {
			return fmt.Errorf("%s: %w", t.Name, err)
		}
		fmt.Fprintf(out, "%s: running and streaming again after %s\n", t.Name, time.Since(begin).Round(100*time.Millisecond))
		if view, err = client.ClusterView(ctx); err != nil {
			return fmt.Errorf("%s: %w", t.Name, err)
		}
		h = CheckHealth(view, StreamingReplicas(ctx, client, view))
	}
	fmt.Fprintln(out, "rolling restart done")
	return nil
}

// PostmasterStarts reads each member's postmaster start time from its
// own API (members that do not answer are left out: they count as not
// restarted).
func PostmasterStarts(ctx context.Context, client *api.Client, view api.ClusterView) map[string]time.Time {
	out := map[string]time.Time{}
	for _, m := range view.Members {
		st, err := client.With(m.APIURL).MemberStatus(ctx)
		if err != nil || st.PostmasterStartTime == "" {
			continue
		}
		if t, err := time.Parse(postmasterTimeLayout, st.PostmasterStartTime); err == nil {
			out[m.Name] = t
		}
	}
	return out
}

// WaitRestarted waits until member's postmaster started after since and
// the cluster is whole again: a running primary and every other member
// streaming from it.
func WaitRestarted(ctx context.Context, client *api.Client, member string, since time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, rollingStepTimeout)
	defer cancel()
	last := errors.New("not yet checked")
	for {
		view, err := client.ClusterView(ctx)
		if err == nil {
			h := CheckHealth(view, StreamingReplicas(ctx, client, view))
			started := PostmasterStarts(ctx, client, view)
			switch t, ok := started[member]; {
			case !ok || !t.After(since):
				last = errors.New("its PostgreSQL has not restarted yet")
			case len(h.Blockers) > 0:
				last = errors.New(strings.Join(h.Blockers, "; "))
			default:
				return nil
			}
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not whole again within %s: %v", rollingStepTimeout, last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}
