package raftstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/raft"
)

// SnapshotFormatVersion is written into every FSM snapshot; Restore refuses
// any other version. Fields added to State since version 1 are optional
// (LeaderKey.RenewedAt; Event.Cause, Choice, PrevRenewedAt, FirstRenewalAt):
// a snapshot without them restores with them zero, and a binary that does
// not know them ignores them, so they need no new version.
const SnapshotFormatVersion = 1

// MaxSnapshotSize bounds an encoded FSM snapshot. Restore reads no more, so
// Persist refuses to write more: raft then keeps its log instead of a
// snapshot that no node could restore. History is bounded (MaxHistory) so
// that a real cluster stays far below it.
const MaxSnapshotSize = 64 << 20

// fsm is the hashicorp/raft FSM. It owns State behind a lock and calls
// changed (never blocking) after every applied entry.
type fsm struct {
	mu      sync.RWMutex
	state   State
	applied uint64
	changed func(index uint64)
	// maxSnapshot is MaxSnapshotSize; tests lower it.
	maxSnapshot int
	// halt is set at the first committed entry this binary cannot decode
	// (written by a newer release): the state stays as it was before it.
	halt *Halt
}

// Halt says why the FSM stopped applying entries: the first committed
// entry this binary could not decode, which a newer release wrote.
type Halt struct {
	Index uint64
	Type  CommandType
	Err   error
}

func (h Halt) Error() string {
	return fmt.Sprintf("committed entry %d (command type %d) cannot be applied by this release: %v (a newer raftgres wrote it: upgrade this member)",
		h.Index, h.Type, h.Err)
}

func newFSM(changed func(uint64)) *fsm {
	if changed == nil {
		changed = func(uint64) {}
	}
	return &fsm{state: NewState(), changed: changed, maxSnapshot: MaxSnapshotSize}
}

var _ raft.FSM = (*fsm)(nil)

// Apply decodes and applies a committed entry. It does not validate the
// command (the proposer did, under the rules of its release): only the
// compare-and-set checks of apply.go decide. A committed entry that cannot
// be decoded (a newer release wrote it) would make this binary diverge
// from its peers if it guessed: unless the type carries SkipUnknownFlag,
// the FSM halts there. Its state stays as it was before that entry, it
// applies nothing more and takes no snapshot (one would claim entries it
// never applied), and the store refuses to propose (Store.Halted): the
// member holds no lease, so it acknowledges nothing, until it runs a
// release that reads the entry and replays the log from its last snapshot.
func (f *fsm) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	res := f.applyBytes(l.Index, l.Data)
	f.changed(l.Index)
	return res
}

func (f *fsm) applyBytes(index uint64, data []byte) ApplyResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.halt != nil {
		return ApplyResult{Index: index, Err: f.halt}
	}
	cmd, err := decodeEntry(data)
	if err != nil {
		var t CommandType
		if len(data) > 0 {
			t = CommandType(data[0])
		}
		if errors.Is(err, ErrUnknownCommand) && t&SkipUnknownFlag != 0 {
			f.applied = index
			return ApplyResult{Index: index}
		}
		f.halt = &Halt{Index: index, Type: t, Err: err}
		return ApplyResult{Index: index, Err: f.halt}
	}
	err = applyCommand(&f.state, index, cmd)
	f.applied = index
	return ApplyResult{Index: index, Err: err}
}

var _ raft.ConfigurationStore = (*fsm)(nil)

// StoreConfiguration is called, in log order with Apply, for every committed
// Raft configuration entry. The FSM keeps no configuration; it counts the
// entry as applied, so AppliedIndex covers membership changes too (and
// raft's snapshot index, which follows what the FSM was given, matches it).
func (f *fsm) StoreConfiguration(index uint64, _ raft.Configuration) {
	f.mu.Lock()
	f.applied = max(f.applied, index)
	f.mu.Unlock()
	f.changed(index)
}

// halted returns why the FSM stopped applying entries, if it did.
func (f *fsm) halted() (Halt, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.halt == nil {
		return Halt{}, false
	}
	return *f.halt, true
}

// State returns a deep copy of the current state.
func (f *fsm) State() State {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Clone()
}

// stateAndIndex returns a deep copy of the state and the index of the last
// entry applied to it, read together.
func (f *fsm) stateAndIndex() (State, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Clone(), f.applied
}

// requestPending reports whether a failover or switchover request is
// pending, without copying the state.
func (f *fsm) requestPending() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.Failover != nil
}

// AppliedIndex is the index of the last entry this FSM applied.
func (f *fsm) AppliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.applied
}

// snapshotFile is the on-disk form of an FSM snapshot.
type snapshotFile struct {
	FormatVersion int    `json:"format_version"`
	Applied       uint64 `json:"applied_index"`
	State         State  `json:"state"`
}

// Snapshot captures a copy of the state; Persist runs concurrently with
// Apply. A halted FSM takes none: raft keeps the log instead.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.halt != nil {
		return nil, fmt.Errorf("no snapshot: %w", f.halt)
	}
	return &fsmSnapshot{
		file:  snapshotFile{FormatVersion: SnapshotFormatVersion, Applied: f.applied, State: f.state.Clone()},
		limit: f.maxSnapshot,
	}, nil
}

// Restore replaces the state with a snapshot's, built fresh and swapped
// under the lock.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st, applied, err := decodeSnapshot(rc, f.maxSnapshot)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.state, f.applied, f.halt = st, applied, nil
	f.mu.Unlock()
	f.changed(applied)
	return nil
}

// decodeSnapshot reads a snapshot of at most limit bytes (Persist writes no
// more).
func decodeSnapshot(r io.Reader, limit int) (State, uint64, error) {
	var file snapshotFile
	lr := &io.LimitedReader{R: r, N: int64(limit) + 1}
	dec := json.NewDecoder(lr)
	if err := dec.Decode(&file); err != nil {
		if lr.N == 0 {
			return State{}, 0, fmt.Errorf("restore snapshot: %w: over %d bytes", ErrSnapshotTooLarge, limit)
		}
		return State{}, 0, fmt.Errorf("restore snapshot: decode: %w", err)
	}
	if file.FormatVersion != SnapshotFormatVersion {
		return State{}, 0, fmt.Errorf("restore snapshot: format version %d, this binary reads %d",
			file.FormatVersion, SnapshotFormatVersion)
	}
	for name, m := range file.State.Members {
		if m == nil || m.Name != name {
			return State{}, 0, fmt.Errorf("restore snapshot: member entry %q is malformed", name)
		}
	}
	return file.State.Clone(), file.Applied, nil
}

type fsmSnapshot struct {
	file  snapshotFile
	limit int
}

// Persist writes the snapshot, or refuses (and cancels the sink) when it is
// over the size Restore reads: a snapshot is never written that cannot be
// restored, and raft keeps the log it would have compacted.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	b, err := json.Marshal(&s.file)
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot at index %d: encode: %w", s.file.Applied, err)
	}
	b = append(b, '\n')
	if len(b) > s.limit {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot at index %d: %w: %d bytes, restore reads at most %d",
			s.file.Applied, ErrSnapshotTooLarge, len(b), s.limit)
	}
	if _, err := sink.Write(b); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot at index %d: write: %w", s.file.Applied, err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("persist snapshot at index %d: close: %w", s.file.Applied, err)
	}
	return nil
}

func (s *fsmSnapshot) Release() {}
