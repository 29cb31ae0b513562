package integration

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestJoinByCopyingConfig adds a host the way a Patroni runbook does:
// copy a member's config, change its name and addresses, start it. Every host uses the same ports (each in its own network
// namespace), as real hosts do; the new member is not in
// raft.bootstrap_peers, so it joins through those peers' APIs as a
// nonvoter, becomes a voter, clones and streams.
func TestJoinByCopyingConfig(t *testing.T) {
	requireIntegration(t)
	lab := newNetLab(t, 4)
	base := baseDir(t)
	raftPort, apiPort, pgPort := freePort(t), freePort(t), freePort(t)
	c := &cluster{t: t, base: base}
	for i := range 4 {
		n := newNode(t, base, fmt.Sprintf("pg%d", i+1))
		n.RaftPort, n.APIPort, n.PGPort = raftPort, apiPort, pgPort
		n.NetNS, n.Host, n.ProbeHost = lab.nodes[i], lab.clusterIP(i+1), lab.probeIP(i+1)
		c.nodes = append(c.nodes, n)
	}
	first := c.nodes[:3]
	for _, n := range first {
		n.WriteConfig(NodeOptions{Peers: first, Postgres: true, DCS: fastDCS})
		n.Start()
	}
	primary := c.waitPrimary(120*time.Second, first...)

	// The new host's config: pg1's, with the name, the addresses and the
	// directories changed; bootstrap_peers untouched.
	src, err := os.ReadFile(c.nodes[0].Config)
	if err != nil {
		t.Fatal(err)
	}
	n4 := c.nodes[3]
	var out []string
	for _, l := range strings.Split(string(src), "\n") {
		switch {
		case strings.HasPrefix(l, "name: "):
			l = "name: pg4"
		case strings.Contains(l, "listen:") || strings.Contains(l, "connect_address:"):
			l = strings.ReplaceAll(l, c.nodes[0].Host+":", n4.Host+":")
		case strings.Contains(l, "data_dir:"):
			l = strings.ReplaceAll(l, c.nodes[0].Dir, n4.Dir)
		}
		out = append(out, l)
	}
	if err := os.WriteFile(n4.Config, []byte(strings.Join(out, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	chown(t, n4.Config)
	if stdout, stderr, code := runCLI(t, "check-config", "-c", n4.Config); code != 0 || !strings.Contains(stderr, "this member (pg4) is not listed: it joins") {
		t.Fatalf("check-config of the copied config: exit %d\n%s%s", code, stdout, stderr)
	}
	n4.Start()
	waitFor(t, 120*time.Second, "pg4 a voter", func() (bool, error) {
		st, err := status(primary)
		if err != nil {
			return false, err
		}
		for _, s := range st.Servers {
			if s.ID == "pg4" {
				return s.Suffrage == "Voter", fmt.Errorf("pg4 is a %s", s.Suffrage)
			}
		}
		return false, fmt.Errorf("pg4 not in the Raft configuration")
	})
	c.waitPrimary(120*time.Second, c.nodes...)
	c.waitStreaming(primary)
}
