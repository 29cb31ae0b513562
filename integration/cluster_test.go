package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"raftgres/api"
	"raftgres/raftstore"
)

// cluster is a set of nodes that bootstrapped together.
type cluster struct {
	t     testing.TB
	base  string
	nodes []*Node
}

// newCluster starts n Raft-only agents and waits until they are stable.
func newCluster(t testing.TB, n int, tls *certSet) *cluster {
	t.Helper()
	c := startCluster(t, n, func(_ *Node, all []*Node) NodeOptions { return NodeOptions{Peers: all, TLS: tls} })
	c.waitStable(c.nodes, len(c.nodes))
	return c
}

// startCluster creates n nodes pg1…pgN that bootstrap together, with the
// config options opts gives each, and starts them.
func startCluster(t testing.TB, n int, opts func(nd *Node, all []*Node) NodeOptions) *cluster {
	t.Helper()
	requireIntegration(t)
	c := &cluster{t: t, base: baseDir(t)}
	for i := range n {
		c.nodes = append(c.nodes, newNode(t, c.base, fmt.Sprintf("pg%d", i+1)))
	}
	for _, nd := range c.nodes {
		nd.WriteConfig(opts(nd, c.nodes))
		nd.Start()
	}
	return c
}

// status reads a node's Raft status.
func status(n *Node) (api.RaftStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return n.Client().RaftStatus(ctx)
}

// waitStable waits until every node in nodes agrees on one leader among
// them, sees `voters` voters, and every node is registered in the FSM.
func (c *cluster) waitStable(nodes []*Node, voters int) *Node {
	c.t.Helper()
	var leader *Node
	waitFor(c.t, 30*time.Second, fmt.Sprintf("%d nodes agreeing on a leader with %d voters", len(nodes), voters), func() (bool, error) {
		leaderID := ""
		for _, n := range nodes {
			st, err := status(n)
			if err != nil {
				return false, err
			}
			if st.LeaderID == "" || (leaderID != "" && st.LeaderID != leaderID) {
				return false, fmt.Errorf("%s sees leader %q", n.Name, st.LeaderID)
			}
			leaderID = st.LeaderID
			v := 0
			for _, s := range st.Servers {
				if s.Suffrage == "Voter" {
					v++
				}
			}
			if v != voters || len(st.Servers) != voters {
				return false, fmt.Errorf("%s sees servers %+v", n.Name, st.Servers)
			}
		}
		leader = c.byName(leaderID)
		if leader == nil {
			return false, fmt.Errorf("leader %q is not among the nodes", leaderID)
		}
		state, err := leader.Client().Cluster(context.Background())
		if err != nil {
			return false, err
		}
		for _, n := range nodes {
			if _, ok := state.Members[n.Name]; !ok {
				return false, fmt.Errorf("%s not registered yet", n.Name)
			}
		}
		return state.Bootstrap, nil
	})
	return leader
}

func (c *cluster) byName(name string) *Node {
	for _, n := range c.nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

func (c *cluster) follower(leader *Node, among []*Node) *Node {
	for _, n := range among {
		if n != leader {
			return n
		}
	}
	c.t.Fatal("no follower")
	return nil
}

// setConfig bumps the cluster config through node n and returns the
// committed index and new version.
func setConfig(t testing.TB, n *Node) (uint64, uint64) {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	st, err := n.Client().Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.Config
	cfg.MaximumLagOnFailover++
	res, err := n.Client().Apply(ctx, raftstore.SetConfig{Config: cfg, PrevVersion: cfg.Version, Actor: "itest", At: time.Now().UTC()})
	if err != nil || res.Err != nil || res.Index == 0 {
		t.Fatalf("SetConfig through %s: result %+v, error %v", n.Name, res, err)
	}
	return res.Index, cfg.Version + 1
}

func waitConfigVersion(t testing.TB, nodes []*Node, version uint64) {
	t.Helper()
	for _, n := range nodes {
		waitFor(t, 20*time.Second, fmt.Sprintf("%s at config version %d", n.Name, version), func() (bool, error) {
			st, err := n.Client().Cluster(context.Background())
			return err == nil && st.Config.Version == version, err
		})
	}
}

func TestRaftClusterLifecycle(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.waitStable(c.nodes, 3)
	follower := c.follower(leader, c.nodes)

	// A command sent to a follower is forwarded to the leader and commits.
	_, v := setConfig(t, follower)
	waitConfigVersion(t, c.nodes, v)
	ctx := ctxT(t, 5*time.Second)
	st, _ := follower.Client().Cluster(ctx)
	res, err := follower.Client().Apply(ctx, raftstore.SetConfig{Config: st.Config, PrevVersion: v - 1, Actor: "itest", At: time.Now().UTC()})
	if err != nil || !errors.Is(res.Err, raftstore.ErrVersionMismatch) {
		t.Fatalf("stale compare-and-set: result %+v error %v, want ErrVersionMismatch", res, err)
	}

	// kill -9 of the Raft leader: the others elect a new leader that commits.
	leader.Kill9()
	rest := slices.DeleteFunc(slices.Clone(c.nodes), func(n *Node) bool { return n == leader })
	newLeader := c.waitLeaderAmong(rest)
	_, v = setConfig(t, newLeader)
	// The killed node restarts with its state and catches up.
	leader.Start()
	waitConfigVersion(t, c.nodes, v)
	c.waitStable(c.nodes, 3)

	// All three restarted: state kept, a leader again.
	for _, n := range c.nodes {
		n.Stop()
	}
	for _, n := range c.nodes {
		n.Start()
	}
	leader = c.waitStable(c.nodes, 3)
	waitConfigVersion(t, c.nodes, v)

	// A 4th and a 5th node join through a follower and become voters.
	follower = c.follower(leader, c.nodes)
	for _, name := range []string{"pg4", "pg5"} {
		n := newNode(t, c.base, name)
		n.WriteConfig(NodeOptions{Join: []*Node{follower}})
		n.Start()
		c.nodes = append(c.nodes, n)
	}
	leader = c.waitStable(c.nodes, 5)
	_, v = setConfig(t, c.byName("pg5"))
	waitConfigVersion(t, c.nodes, v)

	// The leader leaves: it hands leadership over first; then pg5 leaves
	// through a follower. Both agents stop by themselves.
	follower = c.follower(leader, c.nodes)
	for _, gone := range []*Node{leader, c.byName("pg5")} {
		if _, stderr, code := runCLI(t, "leave", gone.Name, "--api", follower.APIURL(), "--token", testToken); code != 0 {
			t.Fatalf("leave %s: exit %d: %s", gone.Name, code, stderr)
		}
		waitFor(t, 20*time.Second, gone.Name+"'s agent to stop after leaving", func() (bool, error) {
			err, exited := gone.Exited()
			if exited && err != nil {
				return false, fmt.Errorf("%s exited with %v", gone.Name, err)
			}
			return exited, nil
		})
		c.nodes = slices.DeleteFunc(c.nodes, func(n *Node) bool { return n == gone })
	}
	newLeader = c.waitStable(c.nodes, 3)
	if newLeader == leader {
		t.Fatalf("the departed leader %s is still leader", leader.Name)
	}
	state, err := newLeader.Client().Cluster(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if len(state.Members) != 3 {
		t.Fatalf("members after two leaves: %v", state.MemberNames())
	}
	_, v = setConfig(t, c.nodes[0])
	waitConfigVersion(t, c.nodes, v)
}

// waitLeaderAmong waits until the nodes agree on a leader among them.
func (c *cluster) waitLeaderAmong(nodes []*Node) *Node {
	c.t.Helper()
	var leader *Node
	waitFor(c.t, 20*time.Second, "a new leader", func() (bool, error) {
		for _, n := range nodes {
			st, err := status(n)
			if err != nil {
				return false, err
			}
			if st.State == "Leader" {
				leader = n
				return true, nil
			}
		}
		return false, nil
	})
	return leader
}
