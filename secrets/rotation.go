package secrets

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"

	"raftgres/api"
	"raftgres/internal/conf"
	"raftgres/pgmanager"
)

// Cluster is what Rotate needs from the cluster.
type Cluster interface {
	ClusterView(ctx context.Context) (api.ClusterView, error)
	// RotateSecret runs one step on the member whose API is at url.
	RotateSecret(ctx context.Context, url string, req api.RotateRequest) (api.RotateStatus, error)
}

// ClientCluster is the Cluster behind an API client.
type ClientCluster struct{ Client *api.Client }

func (a ClientCluster) ClusterView(ctx context.Context) (api.ClusterView, error) {
	return a.Client.ClusterView(ctx)
}

func (a ClientCluster) RotateSecret(ctx context.Context, url string, req api.RotateRequest) (api.RotateStatus, error) {
	return a.Client.With(url).RotateSecret(ctx, req)
}

// rotMember is one member during a rotation.
type rotMember struct {
	name    string
	url     string
	primary bool
	state   string // last state it reported; "" unknown
	note    string // its last answer's note
	err     error  // its last step's failure
}

// Rotate is the coordinator of raftgres rotate-password: it carries out the rotation of role to secret on every member
// of the cluster (check, stage, apply on the primary, activate on the
// others), printing the outcome to out and warnings to warn.
func Rotate(ctx context.Context, out, warn io.Writer, a Cluster, role pgmanager.Role, secret conf.Secret) error {
	view, err := a.ClusterView(ctx)
	if err != nil {
		return err
	}
	var members []*rotMember
	var primary *rotMember
	for _, m := range view.Members {
		if m.Host == "" {
			continue // a Raft-only member: no PostgreSQL, no password
		}
		rm := &rotMember{name: m.Name, url: m.APIURL, primary: m.Role == api.ClusterLeader}
		members = append(members, rm)
		if rm.primary {
			primary = rm
		}
		if insecureURL(m.APIURL) {
			fmt.Fprintf(warn, "warning: %s's API is plain http (%s): the new password crosses the network unencrypted; "+
				"configure restapi.tls\n", m.Name, strings.TrimSuffix(m.APIURL, "/patroni"))
		}
	}
	if len(members) == 0 {
		return fmt.Errorf("%s has no PostgreSQL member", view.Scope)
	}
	if primary == nil {
		return errors.New("the cluster has no primary (no leader key): nothing was changed; try again once it has one")
	}
	step := func(phase string, which []*rotMember) []*rotMember {
		var failed []*rotMember
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, m := range which {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := a.RotateSecret(ctx, m.url, api.RotateRequest{Role: string(role), Phase: phase, Password: secret})
				mu.Lock()
				defer mu.Unlock()
				m.err = err
				if err != nil {
					failed = append(failed, m)
					if phase != api.RotateCheck {
						m.state = "" // the step may or may not have happened
					}
					return
				}
				m.state, m.note = st.State, st.Note
			}()
		}
		wg.Wait()
		slices.SortFunc(failed, func(x, y *rotMember) int { return strings.Compare(x.name, y.name) })
		return failed
	}
	others := slices.DeleteFunc(slices.Clone(members), func(m *rotMember) bool { return m.primary })

	if failed := step(api.RotateCheck, members); len(failed) > 0 {
		var lines []string
		for _, m := range failed {
			lines = append(lines, fmt.Sprintf("  %s: %v", m.name, m.err))
		}
		return fmt.Errorf("every member must take part, and these cannot (nothing was changed):\n%s", strings.Join(lines, "\n"))
	}
	if failed := step(api.RotateStage, members); len(failed) > 0 {
		printRotation(out, role, members)
		return fmt.Errorf("staging the new password failed on %s. PostgreSQL is unchanged and every member still uses "+
			"the old password; run the same command again to finish", names(failed))
	}
	if failed := step(api.RotateApply, []*rotMember{primary}); len(failed) > 0 {
		printRotation(out, role, members)
		return fmt.Errorf("changing the role on the primary %s failed: %v. Run the same command again with the same new "+
			"password to finish (if the primary did change the role, members still on the old password cannot "+
			"reconnect until then; they also switch by themselves once their PostgreSQL replays the change)",
			primary.name, primary.err)
	}
	failed := step(api.RotateActivate, others)
	printRotation(out, role, members)
	if len(failed) > 0 {
		return fmt.Errorf("the primary %s uses the new password, but %s could not be told to (a replica still on the "+
			"old password keeps streaming but fails at its next reconnect; an agent switches by itself once its "+
			"PostgreSQL replays the change). Run the same command again with the same new password to finish",
			primary.name, names(failed))
	}
	fmt.Fprintf(out, "The %s password is rotated on all %d members. The config files still hold the old one: put the new "+
		"password in postgresql.authentication.%s.password of every member's config file (data_dir/%s overrides it "+
		"until then, also across restarts, and is cleaned up when the agent starts with the new value).\n",
		role, len(members), role, FileName)
	return nil
}

// printRotation prints each member's state.
func printRotation(w io.Writer, role pgmanager.Role, members []*rotMember) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Member\tRole\t%s password\tNote\n", role)
	for _, m := range members {
		r := "replica"
		if m.primary {
			r = "primary"
		}
		st := m.state
		switch st {
		case "":
			st = "unknown"
		case api.RotateStateOld:
			st = "old password"
		case api.RotateStateStaged:
			st = "staged, old in use"
		case api.RotateStateActive:
			st = "new in use"
		}
		e := m.note
		if m.err != nil {
			e = m.err.Error()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.name, r, st, e)
	}
	_ = tw.Flush()
}

func names(ms []*rotMember) string {
	var out []string
	for _, m := range ms {
		out = append(out, m.name)
	}
	return strings.Join(out, ", ")
}

// insecureURL reports an http:// API URL whose host is not a loopback
// address.
func insecureURL(raw string) bool {
	u, err := url.Parse(api.NormalizeURL(raw))
	if err != nil || u.Scheme != "http" {
		return false
	}
	h := u.Hostname()
	if h == "localhost" {
		return false
	}
	ip := net.ParseIP(h)
	return ip == nil || !ip.IsLoopback()
}
