package api

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"raftgres/raftstore"
)

// fakeStore is a single Raft peer without Raft: a command is committed
// at the next index and applied at once with raftstore.Apply, the FSM's
// own rules, so a refusal here is the one a real store would give. A
// follower (leaderID set to another member) refuses every command with
// raftstore.ErrNotLeader, as a real one does.
type fakeStore struct {
	id string

	mu       sync.Mutex
	st       raftstore.State
	index    uint64
	leaderID string // "" or id: this peer leads
	changed  chan struct{}
}

var _ Store = (*fakeStore)(nil)

// newFakeStore is a leading peer named id whose state has the default
// cluster configuration, as the agent's bootstrap seeds it.
func newFakeStore(tb testing.TB, id string) *fakeStore {
	tb.Helper()
	f := &fakeStore{id: id, st: raftstore.NewState(), changed: make(chan struct{})}
	ctx := context.Background()
	if _, err := raftstore.Commit(ctx, f, raftstore.SetConfig{Config: raftstore.DefaultClusterConfig(), Actor: "test", At: time.Now().UTC()}); err != nil {
		tb.Fatalf("seed config: %v", err)
	}
	return f
}

// commit applies cmd and fails the test on any error or refusal.
func (f *fakeStore) commit(tb testing.TB, cmd raftstore.Command) uint64 {
	tb.Helper()
	idx, err := raftstore.Commit(context.Background(), f, cmd)
	if err != nil {
		tb.Fatalf("commit %T: %v", cmd, err)
	}
	return idx
}

// follow makes this peer a follower of leader.
func (f *fakeStore) follow(leader string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leaderID = leader
}

// leads reports whether this peer leads; f.mu must be held.
func (f *fakeStore) leads() bool { return f.leaderID == "" || f.leaderID == f.id }

func (f *fakeStore) ID() string { return f.id }

func (f *fakeStore) State() raftstore.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st.Clone()
}

func (f *fakeStore) Changes() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *fakeStore) Leader() (id, addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.leads() {
		return f.id, f.id + ":raft"
	}
	return f.leaderID, f.leaderID + ":raft"
}

func (f *fakeStore) Status() (raftstore.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rs := raftstore.Status{ID: f.id, State: "Leader", Term: 1, LastIndex: f.index, CommitIndex: f.index, AppliedIndex: f.index,
		LeaderID: f.id, LeaderAddr: f.id + ":raft", Servers: []raftstore.Server{{ID: f.id, Address: f.id + ":raft", Suffrage: "Voter"}}}
	if !f.leads() {
		rs.State, rs.LeaderID, rs.LeaderAddr = "Follower", f.leaderID, f.leaderID+":raft"
	}
	return rs, nil
}

// Apply validates cmd as a real store does (raftstore.Encode) and applies
// it at the next index.
func (f *fakeStore) Apply(_ context.Context, cmd raftstore.Command) (raftstore.ApplyResult, error) {
	if _, err := raftstore.Encode(cmd); err != nil {
		return raftstore.ApplyResult{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.leads() {
		return raftstore.ApplyResult{}, raftstore.ErrNotLeader
	}
	f.index++
	next := f.st.Clone()
	err := raftstore.Apply(&next, f.index, cmd)
	if err == nil {
		f.st = next
	}
	close(f.changed)
	f.changed = make(chan struct{})
	return raftstore.ApplyResult{Index: f.index, Err: err}, nil
}

// Join is refused: membership changes need Raft (the real-store tests
// cover them).
func (f *fakeStore) Join(context.Context, raftstore.JoinRequest) (uint64, error) {
	return 0, fmt.Errorf("%w: the fake store has no raft configuration", raftstore.ErrJoinRefused)
}

// Leave removes the member from the state with the store's rules
// (State.CheckLeave, then the FSM's); there is no Raft configuration to
// change.
func (f *fakeStore) Leave(ctx context.Context, id, actor string) error {
	f.mu.Lock()
	leads := f.leads()
	f.mu.Unlock()
	if !leads {
		return raftstore.ErrNotLeader
	}
	if err := f.State().CheckLeave(id); err != nil {
		return err
	}
	_, err := raftstore.Commit(ctx, f, raftstore.RemoveMember{Name: id, Actor: actor, Reason: "left the cluster", At: time.Now().UTC()})
	return err
}

func (f *fakeStore) Export(scope string, _ time.Time) ([]byte, error) {
	return json.Marshal(map[string]any{"scope": scope, "state": f.State()})
}

func (f *fakeStore) TransferLeadership(context.Context) error {
	return fmt.Errorf("%w: a single fake peer cannot hand over", raftstore.ErrNotLeader)
}

// edit changes the state directly, for a test's starting point that no
// command builds in one step (a member's reported status); it wakes
// waiters as a command does.
func (f *fakeStore) edit(change func(st *raftstore.State)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	next := f.st.Clone()
	change(&next)
	f.st = next
	close(f.changed)
	f.changed = make(chan struct{})
}

// await waits, on Changes, until cond holds for the state, or fails the
// test after 10 s.
func (f *fakeStore) await(tb testing.TB, what string, cond func(raftstore.State) bool) raftstore.State {
	tb.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		changes := f.Changes()
		if st := f.State(); cond(st) {
			return st
		}
		select {
		case <-changes:
		case <-deadline.C:
			tb.Fatalf("not within 10s: %s", what)
		}
	}
}
