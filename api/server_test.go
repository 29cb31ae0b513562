package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"raftgres/internal/conf"
	"raftgres/raftstore"
)

const testToken = "t0ken"

type testNode struct {
	store  *raftstore.Store
	server *httptest.Server
}

var (
	portsMu   sync.Mutex
	portsUsed = map[string]bool{}
)

// freePort returns a free 127.0.0.1 address never handed out before in
// this process: ports are chosen before the stores bind them.
func freePort(t testing.TB) string {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		_ = ln.Close()
		if !portsUsed[addr] {
			portsUsed[addr] = true
			return addr
		}
	}
}

// newCluster starts n raft stores over real TCP, each with its API served
// by httptest, and registers every member so forwarding knows the leader's
// API address.
func newCluster(t *testing.T, n int) []*testNode {
	t.Helper()
	var peers []raftstore.Peer
	for i := range n {
		peers = append(peers, raftstore.Peer{ID: fmt.Sprintf("n%d", i+1), Address: freePort(t)})
	}
	nodes := make([]*testNode, n)
	for i := range n {
		cfg := raftstore.DefaultConfig()
		cfg.NodeID, cfg.Dir, cfg.Listen, cfg.BootstrapPeers = peers[i].ID, filepath.Join(t.TempDir(), "raft"), peers[i].Address, peers
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
		logger := hclog.New(&hclog.LoggerOptions{Name: peers[i].ID, Level: hclog.Warn, Output: testWriter{t}})
		st, err := raftstore.New(cfg, logger)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Open(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		opts := ClientOptions{Token: testToken, Timeout: 5 * time.Second}
		srv, err := New(Config{Token: conf.Secret(testToken)}, "test", st, NewProposer(st, opts, logger), logger)
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(srv.Handler())
		t.Cleanup(hs.Close)
		nodes[i] = &testNode{store: st, server: hs}
	}
	leader := waitLeader(t, nodes)
	for _, nd := range nodes {
		if _, err := raftstore.Commit(context.Background(), leader.store, raftstore.RegisterMember{Name: nd.store.ID(), APIAddr: nd.server.URL, At: time.Now().UTC()}); err != nil {
			t.Fatalf("register %s: %v", nd.store.ID(), err)
		}
	}
	for _, nd := range nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := nd.store.WaitApplied(ctx, leader.store.AppliedIndex()); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	return nodes
}

func waitLeader(t *testing.T, nodes []*testNode) *testNode {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, nd := range nodes {
			if nd.store.IsLeader() {
				return nd
			}
		}
		select {
		case <-nodes[0].store.LeaderChanges():
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatal("no raft leader within 10s")
	return nil
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestInternalEndpointsNeedToken(t *testing.T) {
	nodes := newCluster(t, 1)
	base := nodes[0].server.URL
	for _, tc := range []struct {
		method, path, token string
		body                string
		want                int
	}{
		{"GET", "/raft/status", "", "", http.StatusUnauthorized},
		{"GET", "/raft/status", "wrong", "", http.StatusUnauthorized},
		{"GET", "/raft/status", testToken, "", http.StatusOK},
		{"GET", "/raft/state", "", "", http.StatusUnauthorized},
		{"GET", "/snapshot", "", "", http.StatusUnauthorized},
		{"GET", "/snapshot", testToken, "", http.StatusOK},
		{"POST", "/raft/apply", "", "x", http.StatusUnauthorized},
		{"POST", "/raft/apply", testToken, "\x02{garbage", http.StatusBadRequest},
		{"POST", "/raft/apply", testToken, "\x63{}", http.StatusBadRequest},
		// Well-formed but invalid: a peer's command is validated before it is proposed.
		{"POST", "/raft/apply", testToken, "\x04{\"name\":\"a b\",\"api_addr\":\"x\",\"tags\":{\"failover_priority\":1},\"at\":\"2026-01-01T00:00:00Z\"}", http.StatusBadRequest},
		{"POST", "/raft/join", testToken, "{not json", http.StatusBadRequest},
		{"POST", "/raft/join", testToken, `{"id":"n9","raft_addr":"127.0.0.1:1"}`, http.StatusForbidden},
		{"POST", "/raft/leave", testToken, `{"id":"nobody"}`, http.StatusNotFound},
		{"POST", "/raft/leave", testToken, `{"id":""}`, http.StatusBadRequest},
		{"POST", "/raft/leave", testToken, `{"id":"x","extra":1}`, http.StatusBadRequest},
		{"GET", "/raft/apply", testToken, "", http.StatusMethodNotAllowed},
		{"GET", "/cluster", "", "", http.StatusOK},
		{"GET", "/no/such/thing", "", "", http.StatusNotFound},
	} {
		t.Run(tc.method+tc.path+"/"+tc.token, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, base+tc.path, strings.NewReader(tc.body))
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}

func TestOversizedBodyRefused(t *testing.T) {
	nodes := newCluster(t, 1)
	req, _ := http.NewRequest("POST", nodes[0].server.URL+"/raft/apply", bytes.NewReader(make([]byte, maxBody+10)))
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413", resp.StatusCode)
	}
}

func TestApplyForwardedFromFollower(t *testing.T) {
	nodes := newCluster(t, 3)
	var follower *testNode
	for _, nd := range nodes {
		if !nd.store.IsLeader() {
			follower = nd
			break
		}
	}
	c := NewClient(follower.server.URL, ClientOptions{Token: testToken})
	ctx := context.Background()
	cfg := raftstore.DefaultClusterConfig()
	res, err := c.Apply(ctx, raftstore.SetConfig{Config: cfg, PrevVersion: 0, Actor: "test", At: time.Now().UTC()})
	if err != nil || res.Err != nil || res.Index == 0 {
		t.Fatalf("forwarded apply: res %+v err %v", res, err)
	}
	// A stale compare-and-set comes back as the same sentinel across HTTP.
	res, err = c.Apply(ctx, raftstore.SetConfig{Config: cfg, PrevVersion: 0, Actor: "test", At: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res.Err, raftstore.ErrVersionMismatch) {
		t.Fatalf("stale SetConfig: got %v, want ErrVersionMismatch", res.Err)
	}
	// An invalid command is refused before it is proposed or forwarded.
	if _, err := c.Apply(ctx, raftstore.RegisterMember{Name: "a b", APIAddr: "http://x"}); !errors.Is(err, raftstore.ErrInvalidCommand) {
		t.Fatalf("invalid command through the client: %v, want ErrInvalidCommand", err)
	}
	p := NewProposer(follower.store, ClientOptions{Token: testToken}, nil)
	if _, err := p.Apply(ctx, raftstore.RegisterMember{Name: "a b", APIAddr: "http://x"}); !errors.Is(err, raftstore.ErrInvalidCommand) {
		t.Fatalf("invalid command through a follower's proposer: %v, want ErrInvalidCommand", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := follower.store.WaitApplied(wctx, res.Index); err != nil {
		t.Fatal(err)
	}
	if v := follower.store.State().Config.Version; v != 1 {
		t.Fatalf("follower config version %d, want 1", v)
	}
	st, err := c.RaftStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.LeaderAPI == "" || st.LeaderID == follower.store.ID() {
		t.Fatalf("raft status from follower: %+v", st)
	}
}

func TestErrorWireRoundTrip(t *testing.T) {
	for _, e := range errorCodes {
		t.Run(e.code, func(t *testing.T) {
			wrapped := fmt.Errorf("doing something: %w", e.err)
			code, msg := wireOf(wrapped)
			if code != e.code {
				t.Fatalf("code %q, want %q", code, e.code)
			}
			back := errorFromWire(code, msg)
			if !errors.Is(back, e.err) || back.Error() != msg {
				t.Fatalf("round trip gave %v", back)
			}
		})
	}
}

// TestLeaveOfHolderRefused (#9): leave of the member that holds the leader
// key comes back through the client as raftstore.ErrHolderLeave, readable,
// and the Raft configuration is untouched.
func TestLeaveOfHolderRefused(t *testing.T) {
	nodes := newCluster(t, 3)
	leader := waitLeader(t, nodes)
	var holder, asker *testNode
	for _, nd := range nodes {
		if nd == leader {
			continue
		}
		if holder == nil {
			holder = nd
		} else {
			asker = nd
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := raftstore.Commit(ctx, leader.store, raftstore.SetLeader{Holder: holder.store.ID(), Reason: "test", At: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	err := NewClient(asker.server.URL, ClientOptions{Token: testToken}).Leave(ctx, holder.store.ID())
	if !errors.Is(err, raftstore.ErrHolderLeave) {
		t.Fatalf("leave of the holder: %v, want ErrHolderLeave", err)
	}
	if want := holder.store.ID() + " holds the leader key"; !strings.Contains(err.Error(), want) {
		t.Errorf("message %q does not say %q", err, want)
	}
	st, err := leader.store.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Servers) != 3 {
		t.Fatalf("raft servers %+v: the refused leave changed the configuration", st.Servers)
	}
	if _, ok := leader.store.State().Members[holder.store.ID()]; !ok {
		t.Fatal("the refused leave removed the member")
	}
}
