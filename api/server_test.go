package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"raftgres/internal/conf"
	"raftgres/internal/testutil"
	"raftgres/raftstore"
)

const testToken = "t0ken"

// freePort returns a free 127.0.0.1 address never handed out before in
// this process: ports are chosen before the stores bind them.
func freePort(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
}

// newRealNode starts a single-node raft store over real TCP, with its API
// served by httptest, and waits until it leads: for what only a real
// store does (Raft membership: join, leave).
func newRealNode(t *testing.T) (*raftstore.Store, string) {
	t.Helper()
	addr := freePort(t)
	cfg := raftstore.DefaultConfig()
	cfg.NodeID, cfg.Dir, cfg.Listen = "n1", filepath.Join(t.TempDir(), "raft"), addr
	cfg.BootstrapPeers = []raftstore.Peer{{ID: "n1", Address: addr}}
	cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 100*time.Millisecond, 100*time.Millisecond, 50*time.Millisecond
	logger := hclog.New(&hclog.LoggerOptions{Name: "n1", Level: hclog.Warn, Output: testWriter{t}})
	st, err := raftstore.New(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	srv, err := New(Config{Token: conf.Secret(testToken)}, "test", st, NewProposer(st, ClientOptions{Token: testToken, Timeout: 5 * time.Second}, logger), logger)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for !st.IsLeader() {
		select {
		case <-st.LeaderChanges():
		case <-deadline.C:
			t.Fatal("no raft leader within 10s")
		}
	}
	return st, hs.URL
}

// fakePeer is a fake store with its API served by httptest.
type fakePeer struct {
	store *fakeStore
	url   string
}

// newFakeCluster serves n fake stores, n1 leading and the others
// following it, every member registered with its API address in every
// store (followers learn nothing else: nothing replicates).
func newFakeCluster(t *testing.T, n int) []*fakePeer {
	t.Helper()
	peers := make([]*fakePeer, n)
	for i := range n {
		st := newFakeStore(t, fmt.Sprintf("n%d", i+1))
		srv, err := New(Config{Token: conf.Secret(testToken)}, "test", st, NewProposer(st, ClientOptions{Token: testToken, Timeout: 5 * time.Second}, nil), nil)
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(srv.Handler())
		t.Cleanup(hs.Close)
		peers[i] = &fakePeer{store: st, url: hs.URL}
	}
	for _, p := range peers {
		for _, m := range peers {
			p.store.commit(t, raftstore.RegisterMember{Name: m.store.ID(), APIAddr: m.url, Tags: raftstore.DefaultTags(), At: time.Now().UTC()})
		}
		p.store.follow("n1")
	}
	return peers
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestInternalEndpointsNeedToken(t *testing.T) {
	t.Parallel()
	_, base := newRealNode(t)
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
	t.Parallel()
	req, _ := http.NewRequest("POST", newFakeCluster(t, 1)[0].url+"/raft/apply", bytes.NewReader(make([]byte, maxBody+10)))
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
	t.Parallel()
	peers := newFakeCluster(t, 3)
	leader, follower := peers[0], peers[1]
	c := NewClient(follower.url, ClientOptions{Token: testToken})
	ctx := context.Background()
	cfg := leader.store.State().Config
	res, err := c.Apply(ctx, raftstore.SetConfig{Config: cfg, PrevVersion: cfg.Version, Actor: "test", At: time.Now().UTC()})
	if err != nil || res.Err != nil || res.Index == 0 {
		t.Fatalf("forwarded apply: res %+v err %v", res, err)
	}
	if v := leader.store.State().Config.Version; v != cfg.Version+1 {
		t.Fatalf("leader config version %d, want %d", v, cfg.Version+1)
	}
	// A stale compare-and-set comes back as the same sentinel across HTTP.
	res, err = c.Apply(ctx, raftstore.SetConfig{Config: cfg, PrevVersion: cfg.Version, Actor: "test", At: time.Now().UTC()})
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
	// A command marked as forwarded is never forwarded again: a
	// follower with a stale view of who leads refuses it.
	data, err := raftstore.Encode(raftstore.Barrier{Actor: "test"})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", follower.url+"/raft/apply", bytes.NewReader(data))
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set(forwardedHeader, "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("forwarded command on a follower: status %d, want 421 (not leader)", resp.StatusCode)
	}
	st, err := c.RaftStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.LeaderAPI != leader.url || st.LeaderID != leader.store.ID() {
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

// TestLeaveOfOnlySyncCopyRefused: in synchronous mode with no holder
// that renewed, leave of a member the synchronous record names is refused
// (raftstore.ErrSyncLeave, 409 through the client) and the member stays:
// it may hold the only copy of acknowledged commits.
func TestLeaveOfOnlySyncCopyRefused(t *testing.T) {
	t.Parallel()
	peers := newFakeCluster(t, 3)
	leader, asker, standby := peers[0], peers[1], peers[2]
	leader.store.edit(func(st *raftstore.State) {
		st.Config.SynchronousMode = true
		st.Leader = raftstore.LeaderKey{Epoch: st.Leader.Epoch + 1}
		st.Sync = raftstore.SyncState{Primary: leader.store.ID(), Standbys: []string{standby.store.ID()}, Rev: 1}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := NewClient(asker.url, ClientOptions{Token: testToken}).Leave(ctx, standby.store.ID())
	if !errors.Is(err, raftstore.ErrSyncLeave) {
		t.Fatalf("leave of the recorded synchronous standby: %v, want ErrSyncLeave", err)
	}
	if _, ok := leader.store.State().Members[standby.store.ID()]; !ok {
		t.Fatal("the refused leave removed the member")
	}
}

// TestLeaveOfHolderRefused: leave of the member that holds the leader key,
// asked of a follower, reaches the leader and comes back through the
// client as raftstore.ErrHolderLeave, readable, and the member stays.
func TestLeaveOfHolderRefused(t *testing.T) {
	t.Parallel()
	peers := newFakeCluster(t, 3)
	leader, asker, holder := peers[0], peers[1], peers[2]
	leader.store.commit(t, raftstore.SetLeader{Holder: holder.store.ID(), Reason: "test", At: time.Now().UTC()})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := NewClient(asker.url, ClientOptions{Token: testToken}).Leave(ctx, holder.store.ID())
	if !errors.Is(err, raftstore.ErrHolderLeave) {
		t.Fatalf("leave of the holder: %v, want ErrHolderLeave", err)
	}
	if want := holder.store.ID() + " holds the leader key"; !strings.Contains(err.Error(), want) {
		t.Errorf("message %q does not say %q", err, want)
	}
	if _, ok := leader.store.State().Members[holder.store.ID()]; !ok {
		t.Fatal("the refused leave removed the member")
	}
}
