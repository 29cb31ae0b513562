package agent

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"

	"raftgres/internal/fsutil"
	"raftgres/raftstore"
)

// KnownMembers is the members' API addresses as this host's agent last
// saw them: read-only commands fall back to them when the agent does not
// answer (patronictl reads the DCS from any host; this is the raftgres
// equivalent).
type KnownMembers struct {
	Members   []KnownMember `json:"members"`
	WrittenAt time.Time     `json:"written_at"`
}

// KnownMember is one member in KnownMembers.
type KnownMember struct {
	Name   string `json:"name"`
	APIURL string `json:"api_url"`
}

// MembersFile is where the agent keeps KnownMembers, in its data_dir.
func MembersFile(dataDir string) string { return filepath.Join(dataDir, "members.json") }

// membersOf lists st's members and their API addresses, by name.
func membersOf(st raftstore.State) []KnownMember {
	var out []KnownMember
	for _, name := range st.MemberNames() {
		out = append(out, KnownMember{Name: name, APIURL: st.Members[name].APIAddr})
	}
	return out
}

// stateWatcher is the part of the Raft store the side loops read: the
// FSM's state, and a channel closed at its next change.
type stateWatcher interface {
	State() raftstore.State
	Changes() <-chan struct{}
}

// membersRecorder keeps MembersFile current: written (0644, atomically; it
// holds no secret) whenever the members or their API addresses change.
type membersRecorder struct {
	store  stateWatcher
	path   string
	logger hclog.Logger
}

// Run returns when ctx ends. A failed write is logged and tried again at
// the next change.
func (r *membersRecorder) Run(ctx context.Context) error {
	store, path, logger := r.store, r.path, r.logger
	var last []KnownMember
	for {
		changes := store.Changes()
		if now := membersOf(store.State()); len(now) > 0 && !slices.Equal(now, last) {
			data, _ := json.MarshalIndent(KnownMembers{Members: now, WrittenAt: time.Now().UTC()}, "", "  ")
			if err := fsutil.WriteFile(path, append(data, '\n'), 0o644); err != nil {
				logger.Warn("record the members for the CLI", "path", path, "error", err)
			} else {
				last = now
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changes:
		}
	}
}
