package raftstore

import (
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestIsHeartbeat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		req  raft.AppendEntriesRequest
		want bool
	}{
		{"raft's heartbeat", raft.AppendEntriesRequest{Term: 3}, true},
		{"commit-index update", raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 41, PrevLogTerm: 3, LeaderCommitIndex: 41}, false},
		{"entries", raft.AppendEntriesRequest{Term: 3, Entries: []*raft.Log{{Index: 1}}}, false},
	} {
		if got := isHeartbeat(&tc.req); got != tc.want {
			t.Errorf("%s: isHeartbeat = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// Heartbeats to one peer are held back to HeartbeatSpacing; other peers
// are not held back by it; closing the transport releases a held one.
func TestHeartbeatSpacing(t *testing.T) {
	t.Parallel()
	const spacing = 50 * time.Millisecond
	tr := &heartbeatTransport{spacing: spacing, last: map[raft.ServerAddress]time.Time{}, closed: make(chan struct{})}
	first := time.Now() // the first heartbeat to a is recorded at or after this
	if err := tr.space("a", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := tr.space("b", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := tr.space("a", time.Now()); err != nil {
		t.Fatal(err)
	}
	if gap := time.Since(first); gap < spacing {
		t.Errorf("second heartbeat to a went out %s after the first, want at least %s", gap, spacing)
	}
	tr.spacing = time.Hour
	done := make(chan error, 1)
	go func() { done <- tr.space("a", time.Now()) }()
	tr.once.Do(func() { close(tr.closed) })
	select {
	case err := <-done:
		if !errors.Is(err, raft.ErrTransportShutdown) {
			t.Errorf("held heartbeat on close = %v, want ErrTransportShutdown", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("closing the transport did not release a held heartbeat")
	}
	if got := (Config{HeartbeatTimeout: 500 * time.Millisecond}).HeartbeatSpacing(); got != 150*time.Millisecond {
		t.Errorf("HeartbeatSpacing at 500ms = %s, want 150ms", got)
	}
}
