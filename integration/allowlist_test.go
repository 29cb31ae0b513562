package integration

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"raftgres/api"
)

// clientFrom is an HTTP client whose connections leave from source (an
// address of lo, e.g. 127.0.0.2).
func clientFrom(t testing.TB, source string) *http.Client {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}, Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// getWith sends GET url through c with the cluster token and returns the
// status and the JSON error code, if any.
func getWith(c *http.Client, url string) (int, string, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("X-Forwarded-For", "127.0.0.2") // never trusted
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var we struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(b, &we)
	return resp.StatusCode, we.Code, nil
}

// allowlistPaths covers every kind of endpoint: health, status, metrics,
// internal.
var allowlistPaths = []string{"/primary", "/replica", "/health", "/patroni", "/cluster", "/metrics", "/raft/status", "/snapshot"}

// expectRefused checks that every path on n answers 403 not_allowed to c.
func expectRefused(t *testing.T, c *http.Client, from string, n *Node) {
	t.Helper()
	for _, p := range allowlistPaths {
		code, wire, err := getWith(c, n.APIURL()+p)
		if err != nil || code != http.StatusForbidden || wire != "not_allowed" {
			t.Errorf("GET %s on %s from %s: %d %q (%v), want 403 not_allowed", p, n.Name, from, code, wire, err)
		}
	}
}

// expectServed checks that no path on n refuses c.
func expectServed(t *testing.T, c *http.Client, from string, n *Node) {
	t.Helper()
	for _, p := range allowlistPaths {
		code, wire, err := getWith(c, n.APIURL()+p)
		if err != nil || code == http.StatusForbidden {
			t.Errorf("GET %s on %s from %s: %d %q (%v), want it served", p, n.Name, from, code, wire, err)
		}
	}
}

// refusedLogged reports whether an agent's log has a request from client
// refused by the allowlist.
func refusedLogged(log, client string) bool {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "request refused by restapi.allowlist") && strings.Contains(l, "client="+client+":") {
			return true
		}
	}
	return false
}

// TestAPIAllowlist runs real agents with restapi.allowlist: a member that
// allows only 127.0.0.2 refuses 127.0.0.1 on every endpoint; a cluster
// with allowlist_include_members keeps working through its own API
// traffic (registration, forwarding to the Raft leader, a join, clones,
// health) while a host that is neither listed nor a member is refused.
func TestAPIAllowlist(t *testing.T) {
	from1, from2, from3 := clientFrom(t, "127.0.0.1"), clientFrom(t, "127.0.0.2"), clientFrom(t, "127.0.0.3")

	// One Raft-only member with allowlist [127.0.0.2], members not included.
	lone := startCluster(t, 1, func(_ *Node, all []*Node) NodeOptions {
		return NodeOptions{Peers: all, RestAPIKeys: []string{"allowlist: [127.0.0.2]"}}
	})
	n := lone.nodes[0]
	waitFor(t, 30*time.Second, n.Name+" registered, seen from 127.0.0.2", func() (bool, error) {
		code, _, err := getWith(from2, n.APIURL()+"/cluster")
		return code == http.StatusOK && err == nil && strings.Contains(n.Log(), "member registered"), err
	})
	expectServed(t, from2, "127.0.0.2", n)
	expectRefused(t, from1, "127.0.0.1", n)
	if _, err := n.Client().Cluster(ctxT(t, 5*time.Second)); !errors.Is(err, api.ErrNotAllowed) {
		t.Errorf("api client from 127.0.0.1: %v, want ErrNotAllowed", err)
	}
	if !refusedLogged(n.Log(), "127.0.0.1") {
		t.Errorf("no debug line for a refused request from 127.0.0.1 in the agent's log")
	}
	n.Stop()
	if t.Failed() {
		t.FailNow()
	}

	// Three PostgreSQL members on 127.0.0.1, allowlist [127.0.0.2] and
	// allowlist_include_members: their own traffic from 127.0.0.1 passes
	// only because 127.0.0.1 is a member's host.
	keys := []string{"allowlist: [127.0.0.2]", "allowlist_include_members: true"}
	c := startCluster(t, 3, func(_ *Node, all []*Node) NodeOptions {
		return NodeOptions{Peers: all, Postgres: true, DCS: fastDCS, RestAPIKeys: keys}
	})
	primary := c.waitPrimary(90*time.Second, c.nodes...)
	c.waitStreaming(primary)
	for _, nd := range c.nodes {
		want := map[bool]int{true: 200, false: 503}[nd == primary]
		if code, _, err := getWith(from1, nd.APIURL()+"/primary"); err != nil || code != want {
			t.Errorf("GET /primary on %s from a member's host: %d (%v), want %d", nd.Name, code, err, want)
		}
		expectServed(t, from1, "127.0.0.1 (a member's host)", nd)
		expectServed(t, from2, "127.0.0.2 (listed)", nd)
		expectRefused(t, from3, "127.0.0.3", nd)
	}

	// A command sent to a follower is forwarded to the Raft leader.
	leader := c.raftLeader()
	follower := c.follower(leader, c.nodes)
	_, v := setConfig(t, follower)
	waitConfigVersion(t, c.nodes, v)

	// A fourth (Raft-only) member joins through a follower's API.
	n4 := newNode(t, c.base, "pg4")
	n4.WriteConfig(NodeOptions{Join: []*Node{follower}, RestAPIKeys: keys})
	n4.Start()
	c.nodes = append(c.nodes, n4)
	c.waitStable(c.nodes, 4)
	// Until it has joined, pg4 knows no member and allows only the list
	// (it refused the test's polls): from here on it knows them all.
	joined := len(n4.Log())
	_, v = setConfig(t, n4)
	waitConfigVersion(t, c.nodes, v)
	expectServed(t, from1, "127.0.0.1 (a member's host)", n4)
	expectRefused(t, from3, "127.0.0.3", n4)
	for _, nd := range c.nodes {
		log := nd.Log()
		if nd == n4 {
			log = log[joined:]
		}
		if refusedLogged(log, "127.0.0.1") {
			t.Errorf("%s refused a request from a member's host 127.0.0.1", nd.Name)
		}
	}

	// A switchover still goes through (the CLI and the members' API calls).
	target := c.follower(primary, c.nodes[:3])
	if out, stderr, code := runCLI(t, "switchover", "-c", target.Config, "--candidate", target.Name, "--force"); code != 0 {
		t.Fatalf("switchover: exit %d: %s %s", code, out, stderr)
	}
	if got := c.waitPrimary(60*time.Second, c.nodes[:3]...); got != target {
		t.Fatalf("primary %s after the switchover, want %s", got.Name, target.Name)
	}
}
