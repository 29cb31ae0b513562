package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"raftgres/agent"
	"raftgres/api"
	"raftgres/config"
)

// unreachable reports whether err means nothing answered at all (as
// opposed to an HTTP error answer).
func unreachable(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &oe) || errors.As(err, &ne) && ne.Timeout()
}

// readClient returns the client of a read-only command: this host's
// agent (or --api) when it answers, else the first other member that
// does, from the members this host's agent last recorded and raft.join.
// note says which member answered instead, for stderr; view is the
// cluster as the member that answered the probe saw it (nil when none
// did), for a caller that needs nothing fresher.
func readClient(c *cli.Context) (client *api.Client, view *api.ClusterView, note string, err error) {
	client, err = adminClient(c)
	if err != nil {
		return nil, nil, "", cli.Exit(err.Error(), 2)
	}
	ctx, cancel := context.WithTimeout(c.Context, 3*time.Second)
	v, err := client.ClusterView(ctx)
	cancel()
	if err == nil {
		return client, &v, "", nil
	}
	if !unreachable(err) || c.String("config") == "" {
		return client, nil, "", nil
	}
	cfg, cerr := config.Load(c.String("config"))
	if cerr != nil {
		return client, nil, "", nil
	}
	var candidates []agent.KnownMember
	var known agent.KnownMembers
	if b, rerr := os.ReadFile(agent.MembersFile(cfg.DataDir)); rerr == nil && json.Unmarshal(b, &known) == nil {
		for _, m := range known.Members {
			if m.Name != cfg.Name {
				candidates = append(candidates, m)
			}
		}
	}
	for _, j := range cfg.Join {
		candidates = append(candidates, agent.KnownMember{Name: "raft.join", APIURL: j})
	}
	for _, m := range candidates {
		other := client.With(m.APIURL)
		ctx, cancel := context.WithTimeout(c.Context, 3*time.Second)
		ov, oerr := other.ClusterView(ctx)
		cancel()
		if oerr == nil {
			return other, &ov, fmt.Sprintf("this host's agent (%s) does not answer; answered by %s (%s)", client.Base(), m.Name, other.Base()), nil
		}
	}
	return client, nil, "", nil
}

// staleNote says when the member that answered has no current contact
// with the Raft leader: its roles and states are its last known ones.
func staleNote(view api.ClusterView) string {
	who := cmp.Or(view.AnsweredBy, "the member that answered")
	switch {
	case view.RaftState == "" || view.RaftState == "Leader":
		return ""
	case view.RaftLeader == "":
		return fmt.Sprintf("STALE: %s has no Raft leader (no majority reachable): the roles and states below are its last known ones, not current", who)
	}
	if d, err := time.ParseDuration(view.RaftLastContact); err == nil && d > staleContact {
		return fmt.Sprintf("STALE: %s last heard from the Raft leader %s ago: the roles and states below may be out of date",
			who, d.Round(100*time.Millisecond))
	}
	return ""
}

// staleContact is how long without contact with the Raft leader makes a
// follower's view stale (a healthy follower hears a heartbeat every
// 150-500 ms).
const staleContact = 1500 * time.Millisecond
