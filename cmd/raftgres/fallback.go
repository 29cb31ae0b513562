package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/urfave/cli/v2"

	"raftgres/api"
	"raftgres/config"
	"raftgres/internal/fsutil"
	"raftgres/raftstore"
)

// knownMembers is the members' API addresses as this host's agent last
// saw them: read-only commands fall back to them when the agent does not
// answer (patronictl reads the DCS from any host; this is the raftgres
// equivalent).
type knownMembers struct {
	Members   []knownMember `json:"members"`
	WrittenAt time.Time     `json:"written_at"`
}

type knownMember struct {
	Name   string `json:"name"`
	APIURL string `json:"api_url"`
}

// membersFile is where the agent keeps knownMembers, in its data_dir.
func membersFile(dataDir string) string { return filepath.Join(dataDir, "members.json") }

// membersOf lists st's members and their API addresses, by name.
func membersOf(st raftstore.State) []knownMember {
	var out []knownMember
	for _, name := range st.MemberNames() {
		out = append(out, knownMember{Name: name, APIURL: st.Members[name].APIAddr})
	}
	return out
}

// recordMembers keeps membersFile current: written (0644, atomically; it
// holds no secret) whenever the members or their API addresses change.
func recordMembers(ctx context.Context, store *raftstore.Store, path string, logger hclog.Logger) {
	var last []knownMember
	for {
		changes := store.Changes()
		if now := membersOf(store.State()); len(now) > 0 && !slices.Equal(now, last) {
			data, _ := json.MarshalIndent(knownMembers{Members: now, WrittenAt: time.Now().UTC()}, "", "  ")
			if err := fsutil.WriteFile(path, append(data, '\n'), 0o644); err != nil {
				logger.Warn("record the members for the CLI", "path", path, "error", err)
			} else {
				last = now
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changes:
		}
	}
}

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
	var candidates []knownMember
	var known knownMembers
	if b, rerr := os.ReadFile(membersFile(cfg.DataDir)); rerr == nil && json.Unmarshal(b, &known) == nil {
		for _, m := range known.Members {
			if m.Name != cfg.Name {
				candidates = append(candidates, m)
			}
		}
	}
	for _, j := range cfg.Join {
		candidates = append(candidates, knownMember{Name: "raft.join", APIURL: j})
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
