package agent

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"raftgres/internal/testutil"
	"raftgres/raftstore"
)

// fakeState is a stateWatcher whose state the test sets.
type fakeState struct {
	mu      sync.Mutex
	st      raftstore.State
	changes chan struct{}
}

func newFakeState() *fakeState { return &fakeState{changes: make(chan struct{})} }

func (f *fakeState) State() raftstore.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

func (f *fakeState) Changes() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changes
}

func (f *fakeState) set(members map[string]*raftstore.Member) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st.Members = members
	close(f.changes)
	f.changes = make(chan struct{})
}

func TestMembersRecorder(t *testing.T) {
	dir := t.TempDir()
	path := MembersFile(dir)
	store := newFakeState()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- (&membersRecorder{store: store, path: path, logger: hclog.NewNullLogger()}).Run(ctx) }()

	read := func() (KnownMembers, error) {
		var k KnownMembers
		b, err := os.ReadFile(path)
		if err == nil {
			err = json.Unmarshal(b, &k)
		}
		return k, err
	}
	store.set(map[string]*raftstore.Member{"pg1": {Name: "pg1", APIAddr: "http://10.0.0.1:8008"}})
	testutil.WaitEvery(t, 5*time.Second, time.Millisecond, "the members file", func() (bool, error) {
		k, err := read()
		return err == nil && len(k.Members) == 1, err
	})
	store.set(map[string]*raftstore.Member{"pg1": {Name: "pg1", APIAddr: "http://10.0.0.1:8008"},
		"pg2": {Name: "pg2", APIAddr: "http://10.0.0.2:8008"}})
	testutil.WaitEvery(t, 5*time.Second, time.Millisecond, "the second member in the file", func() (bool, error) {
		k, err := read()
		return err == nil && len(k.Members) == 2 && k.Members[1] == KnownMember{Name: "pg2", APIURL: "http://10.0.0.2:8008"}, err
	})
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("members file: %v, mode %v; want 0644", err, fi.Mode().Perm())
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*tmp*")); len(m) > 0 {
		t.Fatalf("temporary files left: %v", m)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v, want nil once ctx ends", err)
	}
}
