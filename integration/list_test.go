package integration

import (
	"strings"
	"testing"
	"time"
)

// TestListLikePatronictl runs the habits of a Patroni user's scripts on a
// real cluster: options before the verb; patronictl's role and
// state words, so `grep -c Replica` counts streaming replicas; a member
// whose agent stopped shown with no role; `list -c FILE` on a host whose
// agent is down answered by another member; and a view from a member
// without a Raft leader marked stale instead of presenting old roles.
func TestListLikePatronictl(t *testing.T) {
	c := startCluster(t, 3, func(_ *Node, all []*Node) NodeOptions {
		return NodeOptions{Peers: all, Postgres: true, DCS: fastDCS}
	})
	primary := c.waitPrimary(120*time.Second, c.nodes...)
	c.waitStreaming(primary)
	var replicas []*Node
	for _, n := range c.nodes {
		if n != primary {
			replicas = append(replicas, n)
		}
	}
	rows := func(out, role, state string) int {
		k := 0
		for _, l := range strings.Split(out, "\n") {
			f := strings.Split(l, "|")
			if len(f) > 5 && strings.TrimSpace(f[3]) == role && strings.TrimSpace(f[4]) == state {
				k++
			}
		}
		return k
	}
	list := func(cfg string) (string, string) {
		t.Helper()
		out, stderr, code := runCLI(t, "-c", cfg, "list")
		if code != 0 {
			t.Fatalf("raftgres -c %s list: exit %d\n%s%s", cfg, code, out, stderr)
		}
		return out, stderr
	}
	waitFor(t, 30*time.Second, "Leader running and two Replicas streaming", func() (bool, error) {
		out, _ := list(primary.Config)
		return rows(out, "Leader", "running") == 1 && rows(out, "Replica", "streaming") == 2, nil
	})

	// A stopped agent: no role, so scripts counting Replica rows notice.
	replicas[1].Stop()
	waitFor(t, 30*time.Second, replicas[1].Name+" without a role", func() (bool, error) {
		out, _ := list(primary.Config)
		return rows(out, "", "unreachable") == 1 && rows(out, "Replica", "streaming") == 1, nil
	})
	if out, _ := list(primary.Config); strings.Count(out, "Replica") != 1 {
		t.Fatalf("grep -c Replica would count %d:\n%s", strings.Count(out, "Replica"), out)
	}

	// list on the host whose agent is down: another member answers.
	out, stderr := list(replicas[1].Config)
	if !strings.Contains(stderr, "does not answer; answered by ") || rows(out, "Leader", "running") != 1 {
		t.Fatalf("list on a host without its agent:\n%s%s", out, stderr)
	}

	// No majority: the last member's view is stale and says so.
	replicas[0].Stop()
	waitFor(t, 30*time.Second, "a stale view from "+primary.Name, func() (bool, error) {
		out, _ := list(primary.Config)
		return strings.Contains(out, "STALE: "+primary.Name+" has no Raft leader"), nil
	})
}
