package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"raftgres/api"
)

// postmasterTimeLayout is how /patroni writes postmaster_start_time.
const postmasterTimeLayout = "2006-01-02 15:04:05.999999-07:00"

// rollingStepTimeout bounds the wait for one member to run and stream
// again after its restart, and for a switchover to complete.
const rollingStepTimeout = 5 * time.Minute

// rollingTarget is one member a rolling restart must restart.
type rollingTarget struct {
	name    string
	url     string
	primary bool
}

// rollingTargets lists, replicas first in name order and the primary
// last, the members whose PostgreSQL still needs the restart: with pending
// only those PostgreSQL says need one, otherwise those whose postmaster
// started before since (so a resumed run skips what it already did).
func rollingTargets(view api.ClusterView, started map[string]time.Time, since time.Time, pending bool) []rollingTarget {
	var out []rollingTarget
	for _, m := range view.Members {
		need := m.PendingRestart
		if !pending {
			t, ok := started[m.Name]
			need = !ok || t.Before(since)
		}
		if need {
			out = append(out, rollingTarget{name: m.Name, url: m.APIURL, primary: m.Role == api.ClusterLeader})
		}
	}
	slices.SortFunc(out, func(a, b rollingTarget) int {
		if a.primary != b.primary {
			if a.primary {
				return 1
			}
			return -1
		}
		return strings.Compare(a.name, b.name)
	})
	return out
}

// switchoverCandidate is the streaming replica closest to the primary.
func switchoverCandidate(view api.ClusterView, replicas []string) string {
	best, bestLag := "", int64(-1)
	for _, m := range view.Members {
		if !slices.Contains(replicas, m.Name) || m.Lag == nil {
			continue
		}
		if bestLag < 0 || *m.Lag < bestLag {
			best, bestLag = m.Name, *m.Lag
		}
	}
	return best
}

// rollingRestart restarts every member's PostgreSQL one at a time without
// taking writes away for more than a switchover: the replicas, each until
// it streams again, then a switchover to the closest replica, which
// restarts the old primary as a standby.
func rollingRestart(c *cli.Context, client *api.Client) error {
	out := c.App.Writer
	ctx := c.Context
	since := time.Now()
	if s := c.String("since"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return cli.Exit("restart --rolling: --since must be an RFC 3339 time, as the interrupted run printed", 2)
		}
		since = t
	}
	view, err := client.ClusterView(ctx)
	if err != nil {
		return cli.Exit("restart --rolling: "+err.Error(), 1)
	}
	h := checkHealth(view, streamingReplicas(ctx, client, view))
	if len(h.blockers) > 0 {
		return cli.Exit("restart --rolling: not now:\n  - "+strings.Join(h.blockers, "\n  - "), 1)
	}
	started := postmasterStarts(ctx, client, view)
	targets := rollingTargets(view, started, since, c.Bool("pending"))
	if len(targets) == 0 {
		fmt.Fprintln(out, "nothing to restart")
		return nil
	}
	var names []string
	for _, t := range targets {
		names = append(names, t.name)
	}
	if err := confirm(c, fmt.Sprintf("Restart %s one at a time (the primary %s by a switchover)?", strings.Join(names, ", "), h.primary)); err != nil {
		return err
	}
	fmt.Fprintf(out, "rolling restart since %s (resume an interrupted run with --since %s)\n",
		since.UTC().Format(time.RFC3339), since.UTC().Format(time.RFC3339))
	for _, t := range targets {
		begin := time.Now()
		if t.primary {
			cand := switchoverCandidate(view, h.replicas)
			if cand == "" {
				return cli.Exit("restart --rolling: no streaming replica to switch over to", 1)
			}
			fmt.Fprintf(out, "%s: switchover to %s\n", t.name, cand)
			if _, err := client.Post(ctx, "POST", "/switchover", api.SwitchoverRequest{Leader: t.name, Candidate: cand}); err != nil {
				return rollingFailed(t.name, since, fmt.Errorf("switchover to %s: %w", cand, err))
			}
		} else {
			fmt.Fprintf(out, "%s: restart\n", t.name)
			if _, err := client.With(t.url).Post(ctx, "POST", "/restart", api.RestartRequest{}); err != nil {
				return rollingFailed(t.name, since, err)
			}
		}
		if err := waitRestarted(ctx, client, t.name, since); err != nil {
			return rollingFailed(t.name, since, err)
		}
		fmt.Fprintf(out, "%s: running and streaming again after %s\n", t.name, time.Since(begin).Round(100*time.Millisecond))
		if view, err = client.ClusterView(ctx); err != nil {
			return rollingFailed(t.name, since, err)
		}
		h = checkHealth(view, streamingReplicas(ctx, client, view))
	}
	fmt.Fprintln(out, "rolling restart done")
	return nil
}

func rollingFailed(member string, since time.Time, err error) error {
	return cli.Exit(fmt.Sprintf("restart --rolling: %s: %v\nfix it, then resume with: raftgres restart --rolling --since %s",
		member, err, since.UTC().Format(time.RFC3339)), 1)
}

// postmasterStarts reads each member's postmaster start time from its
// own API (members that do not answer are left out: they count as not
// restarted).
func postmasterStarts(ctx context.Context, client *api.Client, view api.ClusterView) map[string]time.Time {
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

// waitRestarted waits until member's postmaster started after since and
// the cluster is whole again: a running primary and every other member
// streaming from it.
func waitRestarted(ctx context.Context, client *api.Client, member string, since time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, rollingStepTimeout)
	defer cancel()
	last := errors.New("not yet checked")
	for {
		view, err := client.ClusterView(ctx)
		if err == nil {
			h := checkHealth(view, streamingReplicas(ctx, client, view))
			started := postmasterStarts(ctx, client, view)
			switch t, ok := started[member]; {
			case !ok || !t.After(since):
				last = errors.New("its PostgreSQL has not restarted yet")
			case len(h.blockers) > 0:
				last = errors.New(strings.Join(h.blockers, "; "))
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
