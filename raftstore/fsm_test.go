package raftstore

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/raft"
)

var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

// applier feeds encoded commands to a bare FSM, with increasing indices,
// as committed log entries would arrive. No raft runs.
type applier struct {
	t     *testing.T
	f     *fsm
	index uint64
}

func newApplier(t *testing.T) *applier { return &applier{t: t, f: newFSM(nil)} }

func (a *applier) apply(cmd Command) ApplyResult {
	a.t.Helper()
	data, err := Encode(cmd)
	if err != nil {
		a.t.Fatalf("encode %T: %v", cmd, err)
	}
	a.index++
	res, ok := a.f.Apply(&raft.Log{Index: a.index, Type: raft.LogCommand, Data: data}).(ApplyResult)
	if !ok {
		a.t.Fatalf("fsm returned %T", res)
	}
	return res
}

func (a *applier) mustApply(cmd Command) ApplyResult {
	a.t.Helper()
	res := a.apply(cmd)
	if res.Err != nil {
		a.t.Fatalf("apply %T: %v", cmd, res.Err)
	}
	return res
}

func (a *applier) register(names ...string) {
	for _, n := range names {
		a.mustApply(RegisterMember{Name: n, APIAddr: "http://" + n + ":8008", Tags: DefaultTags(), At: t0})
	}
}

func TestFSMBootstrapAndConfig(t *testing.T) {
	t.Parallel()
	a := newApplier(t)
	cfg := DefaultClusterConfig()
	a.mustApply(Bootstrap{Config: cfg, Actor: "pg1", At: t0})
	if res := a.apply(Bootstrap{Config: cfg, Actor: "pg2", At: t0}); !errors.Is(res.Err, ErrAlreadyBootstrapped) {
		t.Fatalf("second bootstrap: %v", res.Err)
	}
	st := a.f.State()
	if st.Config.Version != 1 || !st.Bootstrap {
		t.Fatalf("after bootstrap: %+v", st.Config)
	}
	cfg.TTL = 20 * time.Second
	a.mustApply(SetConfig{Config: cfg, PrevVersion: 1, Actor: "cli", At: t0})
	before := a.f.State()
	res := a.apply(SetConfig{Config: DefaultClusterConfig(), PrevVersion: 1, Actor: "cli", At: t0})
	if !errors.Is(res.Err, ErrVersionMismatch) {
		t.Fatalf("stale SetConfig: %v", res.Err)
	}
	if diff := cmp.Diff(before, a.f.State()); diff != "" {
		t.Fatalf("a refused command changed the state:\n%s", diff)
	}
	if got := a.f.State().Config; got.Version != 2 || got.TTL != 20*time.Second {
		t.Fatalf("config %+v", got)
	}
	a.mustApply(SetPause{Pause: true, Actor: "cli", At: t0})
	a.mustApply(SetPause{Pause: true, Actor: "cli", At: t0}) // no-op, no event
	a.mustApply(SetPause{Pause: false, Actor: "cli", At: t0})
	kinds := []string{}
	for _, e := range a.f.State().History {
		kinds = append(kinds, e.Kind)
	}
	if diff := cmp.Diff([]string{EventBootstrap, EventConfig, EventPause, EventResume}, kinds); diff != "" {
		t.Fatalf("history kinds:\n%s", diff)
	}
}

func TestFSMInitializeOnce(t *testing.T) {
	t.Parallel()
	a := newApplier(t)
	a.mustApply(Initialize{SystemID: "7000", Actor: "pg1", At: t0})
	a.mustApply(Initialize{SystemID: "7000", Actor: "pg1", At: t0}) // idempotent
	if res := a.apply(Initialize{SystemID: "8000", Actor: "pg2", At: t0}); !errors.Is(res.Err, ErrAlreadyInitialized) {
		t.Fatalf("second system id: %v", res.Err)
	}
	if got := a.f.State().Initialize; got != "7000" {
		t.Fatalf("initialize = %q", got)
	}
}

func TestFSMMembers(t *testing.T) {
	t.Parallel()
	a := newApplier(t)
	if res := a.apply(ReportStatus{Name: "pg1", Status: MemberStatus{Role: "primary"}}); !errors.Is(res.Err, ErrUnknownMember) {
		t.Fatalf("report before register: %v", res.Err)
	}
	a.register("pg1", "pg2")
	a.mustApply(ReportStatus{Name: "pg2", Status: MemberStatus{Role: "replica", State: "running", ReceivedLSN: 42, ReportedAt: t0}})
	a.register("pg2") // re-register keeps the status
	if m := a.f.State().Members["pg2"]; m.Status.ReceivedLSN != 42 {
		t.Fatalf("status lost on re-register: %+v", m)
	}
	st := a.f.State()
	a.mustApply(SetSync{Primary: "pg1", Standbys: []string{"pg2"}, Epoch: st.Leader.Epoch})
	a.mustApply(RemoveMember{Name: "pg2", Actor: "cli", Reason: "left", At: t0})
	st = a.f.State()
	if _, ok := st.Members["pg2"]; ok || len(st.Sync.Standbys) != 0 {
		t.Fatalf("after remove: members %v sync %+v", st.MemberNames(), st.Sync)
	}
	if res := a.apply(RemoveMember{Name: "pg2", At: t0}); !errors.Is(res.Err, ErrUnknownMember) {
		t.Fatalf("second remove: %v", res.Err)
	}
}

func TestFSMLeaderKey(t *testing.T) {
	t.Parallel()
	a := newApplier(t)
	a.register("pg1", "pg2")
	if res := a.apply(SetLeader{Holder: "ghost", Reason: "x", At: t0}); !errors.Is(res.Err, ErrUnknownMember) {
		t.Fatalf("non-member holder: %v", res.Err)
	}
	res := a.mustApply(SetLeader{Holder: "pg1", PrevEpoch: 0, PrevRev: 0, Reason: "bootstrap", Actor: "pg1", At: t0})
	k := a.f.State().Leader
	if k.Holder != "pg1" || k.Epoch != 1 || k.Rev != res.Index {
		t.Fatalf("after acquire: %+v (index %d)", k, res.Index)
	}
	// Renewal: only the holder at its epoch; rev moves to the entry's index.
	if res := a.apply(RenewLeader{Holder: "pg2", Epoch: 1, At: t0}); !errors.Is(res.Err, ErrNotHolder) {
		t.Fatalf("renewal by non-holder: %v", res.Err)
	}
	ren := a.mustApply(RenewLeader{Holder: "pg1", Epoch: 1, At: t0})
	if k := a.f.State().Leader; k.Rev != ren.Index || k.Epoch != 1 {
		t.Fatalf("after renewal: %+v", k)
	}
	// A takeover against the old revision fails: a renewal happened.
	if res := a.apply(SetLeader{Holder: "pg2", PrevEpoch: 1, PrevRev: res.Index, Reason: "failover", At: t0}); !errors.Is(res.Err, ErrEpochMismatch) {
		t.Fatalf("takeover with stale rev: %v", res.Err)
	}
	// A release bumps the epoch and clears the holder.
	a.mustApply(SetLeader{Holder: "", PrevEpoch: 1, PrevRev: ren.Index, Reason: "released", Actor: "pg1", At: t0})
	k = a.f.State().Leader
	if k.Holder != "" || k.Epoch != 2 {
		t.Fatalf("after release: %+v", k)
	}
	if res := a.apply(SetSync{Primary: "pg1", Epoch: 1}); !errors.Is(res.Err, ErrEpochMismatch) {
		t.Fatalf("sync set for an old epoch: %v", res.Err)
	}
	// Every leader change appears exactly once in history, with its reason.
	var reasons []string
	for _, e := range a.f.State().History {
		if e.Kind == EventLeader {
			reasons = append(reasons, e.Reason)
		}
	}
	if diff := cmp.Diff([]string{"bootstrap", "released"}, reasons); diff != "" {
		t.Fatalf("leader history:\n%s", diff)
	}
}

// TestFSMRenewTakeoverRace: a renewal by the holder and a takeover, both
// built from the same observed key, are applied in either order; exactly
// one succeeds.
func TestFSMRenewTakeoverRace(t *testing.T) {
	t.Parallel()
	for _, renewFirst := range []bool{true, false} {
		a := newApplier(t)
		a.register("pg1", "pg2")
		a.mustApply(SetLeader{Holder: "pg1", Reason: "init", At: t0})
		k := a.f.State().Leader
		renew := RenewLeader{Holder: "pg1", Epoch: k.Epoch, At: t0}
		take := SetLeader{Holder: "pg2", PrevEpoch: k.Epoch, PrevRev: k.Rev, Reason: "expired", At: t0}
		var first, second ApplyResult
		if renewFirst {
			first, second = a.apply(renew), a.apply(take)
		} else {
			first, second = a.apply(take), a.apply(renew)
		}
		if (first.Err == nil) == (second.Err == nil) {
			t.Fatalf("renewFirst=%v: both or neither succeeded: %v / %v", renewFirst, first.Err, second.Err)
		}
		if first.Err != nil {
			t.Fatalf("renewFirst=%v: the first applied must win: %v", renewFirst, first.Err)
		}
	}
}

// TestFSMConcurrentTakeovers: many proposers race to take the key with the
// same compare-and-set; the FSM serialises them and exactly one wins.
func TestFSMConcurrentTakeovers(t *testing.T) {
	t.Parallel()
	a := newApplier(t)
	names := []string{"pg1", "pg2", "pg3", "pg4", "pg5", "pg6", "pg7", "pg8"}
	a.register(names...)
	k := a.f.State().Leader
	var mu sync.Mutex // hands out log indices in order, as raft does
	var wg sync.WaitGroup
	wins := make(chan string, len(names))
	for _, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data, _ := Encode(SetLeader{Holder: n, PrevEpoch: k.Epoch, PrevRev: k.Rev, Reason: "race", At: t0})
			mu.Lock()
			a.index++
			res := a.f.Apply(&raft.Log{Index: a.index, Type: raft.LogCommand, Data: data}).(ApplyResult)
			mu.Unlock()
			if res.Err == nil {
				wins <- n
			} else if !errors.Is(res.Err, ErrEpochMismatch) {
				t.Errorf("%s: %v", n, res.Err)
			}
		}()
	}
	wg.Wait()
	close(wins)
	var winners []string
	for w := range wins {
		winners = append(winners, w)
	}
	if len(winners) != 1 || a.f.State().Leader.Holder != winners[0] || a.f.State().Leader.Epoch != k.Epoch+1 {
		t.Fatalf("winners %v, key %+v", winners, a.f.State().Leader)
	}
}

func TestFSMDeterministic(t *testing.T) {
	t.Parallel()
	log := []Command{
		Bootstrap{Config: DefaultClusterConfig(), Actor: "pg1", At: t0},
		RegisterMember{Name: "pg1", APIAddr: "http://a", At: t0},
		RegisterMember{Name: "pg2", APIAddr: "http://b", At: t0},
		Initialize{SystemID: "1", Actor: "pg1", At: t0},
		SetLeader{Holder: "pg1", Reason: "init", At: t0},
		RenewLeader{Holder: "pg1", Epoch: 1, At: t0},
		SetLeader{Holder: "pg2", PrevEpoch: 1, PrevRev: 5, Reason: "stale", At: t0}, // refused
		ReportStatus{Name: "pg2", Status: MemberStatus{Role: "replica", ReportedAt: t0}},
		SetFailover{Request: &FailoverRequest{Kind: "switchover", From: "pg1", To: "pg2", RequestedAt: t0}, At: t0},
	}
	x, y := newApplier(t), newApplier(t)
	for _, c := range log {
		rx, ry := x.apply(c), y.apply(c)
		if (rx.Err == nil) != (ry.Err == nil) {
			t.Fatalf("%T: results differ: %v / %v", c, rx.Err, ry.Err)
		}
	}
	if diff := cmp.Diff(x.f.State(), y.f.State()); diff != "" {
		t.Fatalf("same log, different states:\n%s", diff)
	}
}

// TestFSMHaltsAtAnEntryFromANewerRelease: an entry this release cannot
// decode (an unknown command type, or a known one with a field it does
// not know) neither panics nor is guessed at: the FSM halts there, keeps
// the state from before it, applies nothing after it, takes no snapshot,
// and a restored snapshot (a leader's, or the operator's after an
// upgrade) lifts the halt.
func TestFSMHaltsAtAnEntryFromANewerRelease(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	register := func(name string) []byte {
		b, err := Encode(RegisterMember{Name: name, APIAddr: "http://" + name, Tags: DefaultTags(), At: t0})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	newField := append(register("pg9")[:len(register("pg9"))-1], []byte(`,"field_from_the_future":1}`)...)
	for name, entry := range map[string][]byte{
		"unknown type":  {0x7f, '{', '}'},
		"unknown field": newField,
	} {
		t.Run(name, func(t *testing.T) {
			f := newFSM(nil)
			// An unknown type with the skip flag is skipped.
			res := f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: []byte{byte(SkipUnknownFlag | 0x7f), '{', '}'}}).(ApplyResult)
			if res.Err != nil || f.AppliedIndex() != 1 {
				t.Fatalf("skippable entry: %+v applied %d", res, f.AppliedIndex())
			}
			f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: register("pg1")})
			before := f.State()
			res = f.Apply(&raft.Log{Index: 3, Type: raft.LogCommand, Data: entry}).(ApplyResult)
			var h *Halt
			if !errors.As(res.Err, &h) || h.Index != 3 {
				t.Fatalf("entry from a newer release: %+v, want a Halt at 3", res)
			}
			res = f.Apply(&raft.Log{Index: 4, Type: raft.LogCommand, Data: register("pg2")}).(ApplyResult)
			if res.Err == nil || f.AppliedIndex() != 2 {
				t.Fatalf("entry after the halt: %+v, applied %d: want nothing applied past 2", res, f.AppliedIndex())
			}
			if diff := cmp.Diff(before, f.State()); diff != "" {
				t.Fatalf("the halted state changed:\n%s", diff)
			}
			if _, halted := f.halted(); !halted {
				t.Fatal("halted() = false")
			}
			if _, err := f.Snapshot(); err == nil {
				t.Fatal("a halted FSM took a snapshot")
			}
			// A snapshot from a peer replaces the state and lifts the halt.
			other := newFSM(nil)
			other.Apply(&raft.Log{Index: 5, Type: raft.LogCommand, Data: register("pg3")})
			snap, err := other.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			sink := &bufSink{}
			if err := snap.Persist(sink); err != nil {
				t.Fatal(err)
			}
			if err := f.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
				t.Fatal(err)
			}
			if _, halted := f.halted(); halted || f.AppliedIndex() != 5 {
				t.Fatalf("after a restore: halted %v, applied %d", halted, f.AppliedIndex())
			}
		})
	}
}

func TestStateCloneIndependent(t *testing.T) {
	t.Parallel()
	a := newApplier(t)
	a.register("pg1")
	a.mustApply(SetSync{Primary: "pg1", Standbys: []string{"pg1"}})
	c := a.f.State()
	c.Members["pg1"].APIAddr = "changed"
	c.Sync.Standbys[0] = "changed"
	n := len(c.History)
	c.History = append(c.History, Event{Kind: "appended by a reader"})
	st := a.f.State()
	if st.Members["pg1"].APIAddr == "changed" || st.Sync.Standbys[0] == "changed" || len(st.History) != n {
		t.Fatal("mutating a copy changed the FSM")
	}
	// History is shared read-only: the FSM never writes into an array a
	// copy holds, neither when appending nor when stamping a renewal.
	before := slices.Clone(st.History)
	a.mustApply(SetLeader{Holder: "pg1", At: time.Unix(10, 0)})
	a.mustApply(RenewLeader{Holder: "pg1", Epoch: 1, At: time.Unix(11, 0)})
	if !slices.Equal(st.History, before) {
		t.Fatalf("applying commands changed a copy's History:\n%+v\nwas\n%+v", st.History, before)
	}
	if last := a.f.State().History; last[len(last)-1].FirstRenewalAt.IsZero() {
		t.Fatalf("first renewal not stamped: %+v", last[len(last)-1])
	}
}

type bufSink struct {
	bytes.Buffer
	cancelled bool
}

func (s *bufSink) ID() string    { return "test" }
func (s *bufSink) Cancel() error { s.cancelled = true; return nil }
func (s *bufSink) Close() error  { return nil }

func TestSnapshotRoundTrip(t *testing.T) {
	t.Parallel()
	a := newApplier(t)
	a.mustApply(Bootstrap{Config: DefaultClusterConfig(), Actor: "pg1", At: t0})
	a.register("pg1", "pg2")
	a.mustApply(SetLeader{Holder: "pg1", Reason: "init", At: t0})
	a.mustApply(ReportStatus{Name: "pg1", Status: MemberStatus{Role: "primary", WrittenLSN: 99, ReportedAt: t0}})
	a.mustApply(RenewLeader{Holder: "pg1", Epoch: 1, At: t0.Add(time.Second)})
	k := a.f.State().Leader
	a.mustApply(SetLeader{Holder: "pg2", PrevEpoch: k.Epoch, PrevRev: k.Rev, Reason: "switchover", Cause: CauseSwitchover,
		Choice: "requested candidate", At: t0.Add(2 * time.Second)})
	a.mustApply(RenewLeader{Holder: "pg2", Epoch: 2, At: t0.Add(3 * time.Second)})
	snap, err := a.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink bufSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := newFSM(nil)
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a.f.State(), g.State()); diff != "" {
		t.Fatalf("restored state differs:\n%s", diff)
	}
	if g.AppliedIndex() != a.f.AppliedIndex() {
		t.Fatalf("applied index %d, want %d", g.AppliedIndex(), a.f.AppliedIndex())
	}
	bad := bytes.Replace(sink.Bytes(), []byte(`"format_version":1`), []byte(`"format_version":9`), 1)
	if err := newFSM(nil).Restore(io.NopCloser(bytes.NewReader(bad))); err == nil || !strings.Contains(err.Error(), "format version 9") {
		t.Fatalf("restore of format 9: %v", err)
	}
	if err := newFSM(nil).Restore(io.NopCloser(strings.NewReader("garbage"))); err == nil {
		t.Fatal("restore of garbage succeeded")
	}
}

func FuzzRestoreSnapshot(f *testing.F) {
	f.Add([]byte(`{"format_version":1,"applied_index":3,"state":{"members":{"a":{"name":"a"}}}}`))
	f.Add([]byte(`{"format_version":1,"state":{"members":{"a":null}}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		g := newFSM(nil)
		if err := g.Restore(io.NopCloser(bytes.NewReader(data))); err == nil {
			_ = g.State().Clone()
		}
	})
}

// TestFSMAppliesCommittedEntriesWithoutValidation: validation rules are
// code and change between releases; a committed entry is data. An entry that
// today's Validate refuses (it was valid under the release that proposed it)
// still applies on replay, with only the compare-and-set checks deciding.
func TestFSMAppliesCommittedEntriesWithoutValidation(t *testing.T) {
	t.Parallel()
	// ttl 1s leaves a margin (ttl/3) under MinMargin: refused today.
	tight := DefaultClusterConfig()
	tight.TTL, tight.LoopWait, tight.RetryTimeout = time.Second, 100*time.Millisecond, 100*time.Millisecond
	for _, tc := range []struct {
		name  string
		setup []Command
		cmd   Command
		check func(t *testing.T, st State)
	}{
		{
			name:  "set_config under a tightened margin rule",
			setup: []Command{Bootstrap{Config: DefaultClusterConfig(), Actor: "pg1", At: t0}},
			cmd:   SetConfig{Config: tight, PrevVersion: 1, Actor: "cli", At: t0},
			check: func(t *testing.T, st State) {
				if st.Config.TTL != time.Second || st.Config.Version != 2 {
					t.Fatalf("config %+v, want ttl 1s at version 2", st.Config)
				}
			},
		},
		{
			name: "bootstrap under a tightened margin rule",
			cmd:  Bootstrap{Config: tight, Actor: "pg1", At: t0},
			check: func(t *testing.T, st State) {
				if !st.Bootstrap || st.Config.TTL != time.Second {
					t.Fatalf("config %+v", st.Config)
				}
			},
		},
		{
			name: "member name outside today's character set",
			cmd:  RegisterMember{Name: "pg 1", APIAddr: "http://a", At: t0},
			check: func(t *testing.T, st State) {
				if _, ok := st.Members["pg 1"]; !ok {
					t.Fatalf("members %v", st.MemberNames())
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if err := tc.cmd.Validate(); !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("the case needs a command today's Validate refuses; Validate: %v", err)
			}
			a := newApplier(t)
			for _, c := range tc.setup {
				a.mustApply(c)
			}
			data, err := encode(tc.cmd) // as an older release wrote it
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Decode(data); !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("Decode (network input) must still refuse it: %v", err)
			}
			a.index++
			res := a.f.Apply(&raft.Log{Index: a.index, Type: raft.LogCommand, Data: data}).(ApplyResult)
			if res.Err != nil {
				t.Fatalf("committed entry refused on replay: %v", res.Err)
			}
			tc.check(t, a.f.State())
		})
	}
}

// FuzzApplyCommitted: whatever decodes as a committed entry applies without
// panicking, validated or not.
func FuzzApplyCommitted(f *testing.F) {
	for _, c := range sampleCommands() {
		b, err := Encode(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(append([]byte{byte(CmdSetFailover)}, `{"request":{"kind":"coup"}}`...))
	f.Add(append([]byte{byte(CmdRegisterMember)}, `{"name":""}`...))
	f.Fuzz(func(t *testing.T, data []byte) {
		cmd, err := decodeEntry(data)
		if err != nil {
			return
		}
		st := NewState()
		_ = applyCommand(&st, 1, cmd)
		_ = st.Clone()
	})
}

// TestHistoryBounded: History keeps the newest MaxHistory events, the
// same on every node, and a longer History restored from an older
// snapshot is cut down at the next event.
func TestHistoryBounded(t *testing.T) {
	t.Parallel()
	a := newApplier(t)
	a.mustApply(Bootstrap{Config: DefaultClusterConfig(), Actor: "pg1", At: t0})
	for i := range MaxHistory + 10 {
		a.mustApply(SetPause{Pause: i%2 == 0, Actor: "cli", At: t0})
	}
	h := a.f.State().History
	if len(h) != MaxHistory {
		t.Fatalf("history has %d events, want %d", len(h), MaxHistory)
	}
	if h[len(h)-1].Index != a.index || h[0].Index != a.index-MaxHistory+1 {
		t.Fatalf("kept events %d..%d, want the newest %d..%d", h[0].Index, h[len(h)-1].Index, a.index-MaxHistory+1, a.index)
	}

	long := NewState()
	for i := range MaxHistory + 50 {
		long.History = append(long.History, Event{Index: uint64(i + 1), Kind: EventConfig})
	}
	if err := applyCommand(&long, MaxHistory+51, SetPause{Pause: true, At: t0}); err != nil {
		t.Fatal(err)
	}
	if n, last := len(long.History), long.History[len(long.History)-1]; n != MaxHistory || last.Kind != EventPause {
		t.Fatalf("after one event on a long history: %d events, last %+v", n, last)
	}
}

// TestSnapshotSizeLimit: Persist refuses a snapshot over the size
// Restore reads, so none is ever written that cannot be restored.
func TestSnapshotSizeLimit(t *testing.T) {
	t.Parallel()
	a := newApplier(t)
	a.mustApply(Bootstrap{Config: DefaultClusterConfig(), Actor: "pg1", At: t0})
	a.register("pg1", "pg2", "pg3")
	persist := func(limit int) (*bufSink, error) {
		a.f.maxSnapshot = limit
		snap, err := a.f.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		var sink bufSink
		return &sink, snap.Persist(&sink)
	}
	full, err := persist(MaxSnapshotSize)
	if err != nil {
		t.Fatal(err)
	}
	size := full.Len()

	for _, tc := range []struct {
		name  string
		limit int
		want  error
	}{
		{"exactly the limit", size, nil},
		{"one byte over", size - 1, ErrSnapshotTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink, err := persist(tc.limit)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Persist with limit %d (snapshot %d bytes): %v, want %v", tc.limit, size, err, tc.want)
			}
			if tc.want != nil {
				if !sink.cancelled || sink.Len() != 0 {
					t.Fatalf("refused snapshot: cancelled %v, %d bytes written", sink.cancelled, sink.Len())
				}
				return
			}
			g := newFSM(nil)
			g.maxSnapshot = tc.limit
			if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
				t.Fatalf("a snapshot Persist wrote does not restore: %v", err)
			}
		})
	}

	g := newFSM(nil)
	g.maxSnapshot = size / 2
	if err := g.Restore(io.NopCloser(bytes.NewReader(full.Bytes()))); !errors.Is(err, ErrSnapshotTooLarge) {
		t.Fatalf("restore over the limit: %v, want ErrSnapshotTooLarge", err)
	}
}

// TestFSMRemoveHolderRefused: removing the member that holds the leader
// key is refused in apply, so the key never names a non-member.
func TestFSMRemoveHolderRefused(t *testing.T) {
	t.Parallel()
	a := newApplier(t)
	a.register("pg1", "pg2", "pg3")
	a.mustApply(SetLeader{Holder: "pg1", Reason: "init", At: t0})
	before := a.f.State()
	res := a.apply(RemoveMember{Name: "pg1", Actor: "cli", At: t0})
	if !errors.Is(res.Err, ErrHolderLeave) {
		t.Fatalf("remove holder: %v, want ErrHolderLeave", res.Err)
	}
	if want := "pg1 holds the leader key (epoch 1): switch over first"; res.Err.Error() != want {
		t.Errorf("message %q, want %q", res.Err, want)
	}
	if diff := cmp.Diff(before, a.f.State()); diff != "" {
		t.Fatalf("a refused removal changed the state:\n%s", diff)
	}
	a.mustApply(RemoveMember{Name: "pg2", Actor: "cli", At: t0}) // not the holder
	k := a.f.State().Leader
	a.mustApply(SetLeader{Holder: "pg3", PrevEpoch: k.Epoch, PrevRev: k.Rev, Reason: "switchover", At: t0})
	a.mustApply(RemoveMember{Name: "pg1", Actor: "cli", At: t0}) // no longer the holder
	if got := a.f.State().MemberNames(); !slices.Equal(got, []string{"pg3"}) {
		t.Fatalf("members %v, want [pg3]", got)
	}
}

// TestFSMCountsConfigurationEntries: Raft configuration entries never reach
// Apply; StoreConfiguration counts them so the applied index covers them.
func TestFSMCountsConfigurationEntries(t *testing.T) {
	t.Parallel()
	var notified []uint64
	f := newFSM(func(i uint64) { notified = append(notified, i) })
	f.StoreConfiguration(3, raft.Configuration{})
	if f.AppliedIndex() != 3 || !slices.Equal(notified, []uint64{3}) {
		t.Fatalf("applied %d, notified %v", f.AppliedIndex(), notified)
	}
}

// leaderEvents returns the leader events of History, oldest first.
func leaderEvents(st State) []Event {
	var out []Event
	for _, e := range st.History {
		if e.Kind == EventLeader {
			out = append(out, e)
		}
	}
	return out
}

// TestFSMLeaderChangeTiming: the key's RenewedAt follows the
// proposers' At; every leader event records the cause, the previous key's
// RenewedAt and the new holder's first renewal, from which Duration is
// computed.
func TestFSMLeaderChangeTiming(t *testing.T) {
	t.Parallel()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	// Commands name the key they expect by epoch; key() fills PrevRev
	// from the state at apply time (a real proposer reads it too).
	type step struct {
		cmd     Command
		wantErr error
	}
	for _, tc := range []struct {
		name      string
		steps     []step
		wantKey   time.Time // Leader.RenewedAt at the end
		want      []Event   // leader events: Member, Epoch, Cause, Choice, PrevRenewedAt, FirstRenewalAt
		durations []time.Duration
	}{
		{
			name: "bootstrap then renewals",
			steps: []step{
				{cmd: SetLeader{Holder: "pg1", Cause: CauseBootstrap, At: at(0)}},
				{cmd: RenewLeader{Holder: "pg1", Epoch: 1, At: at(100)}},
				{cmd: RenewLeader{Holder: "pg1", Epoch: 1, At: at(400)}},
			},
			wantKey:   at(400),
			want:      []Event{{Member: "pg1", Epoch: 1, Cause: CauseBootstrap, FirstRenewalAt: at(100)}},
			durations: nil, // no previous primary
		},
		{
			name: "failover measured from the old primary's last renewal",
			steps: []step{
				{cmd: SetLeader{Holder: "pg1", At: at(0)}},
				{cmd: RenewLeader{Holder: "pg1", Epoch: 1, At: at(300)}},
				{cmd: SetLeader{Holder: "pg2", PrevEpoch: 1, Cause: CauseFailover, Choice: "only eligible member", At: at(3300)}},
				{cmd: RenewLeader{Holder: "pg2", Epoch: 2, At: at(3500)}},
				{cmd: RenewLeader{Holder: "pg2", Epoch: 2, At: at(3800)}},
			},
			wantKey: at(3800),
			want: []Event{
				{Member: "pg1", Epoch: 1, Cause: CauseElection, FirstRenewalAt: at(300)},
				{Member: "pg2", Epoch: 2, Cause: CauseFailover, Choice: "only eligible member",
					PrevRenewedAt: at(300), FirstRenewalAt: at(3500)},
			},
			durations: []time.Duration{3200 * time.Millisecond},
		},
		{
			name: "old primary never renewed: measured from its acquire",
			steps: []step{
				{cmd: SetLeader{Holder: "pg1", At: at(0)}},
				{cmd: SetLeader{Holder: "pg2", PrevEpoch: 1, Cause: CauseManualFailover, At: at(3000)}},
				{cmd: RenewLeader{Holder: "pg2", Epoch: 2, At: at(3200)}},
			},
			wantKey: at(3200),
			want: []Event{
				{Member: "pg1", Epoch: 1, Cause: CauseElection},
				{Member: "pg2", Epoch: 2, Cause: CauseManualFailover, PrevRenewedAt: at(0), FirstRenewalAt: at(3200)},
			},
			durations: []time.Duration{3200 * time.Millisecond},
		},
		{
			name: "release keeps the last renewal for the next election",
			steps: []step{
				{cmd: SetLeader{Holder: "pg1", At: at(0)}},
				{cmd: RenewLeader{Holder: "pg1", Epoch: 1, At: at(300)}},
				{cmd: SetLeader{Holder: "", PrevEpoch: 1, At: at(900)}},
				{cmd: SetLeader{Holder: "pg2", PrevEpoch: 2, Cause: CauseFailover, At: at(1000)}},
				{cmd: RenewLeader{Holder: "pg2", Epoch: 3, At: at(1100)}},
			},
			wantKey: at(1100),
			want: []Event{
				{Member: "pg1", Epoch: 1, Cause: CauseElection, FirstRenewalAt: at(300)},
				{Member: "", Epoch: 2, Cause: CauseRelease, PrevRenewedAt: at(300)},
				{Member: "pg2", Epoch: 3, Cause: CauseFailover, PrevRenewedAt: at(300), FirstRenewalAt: at(1100)},
			},
			durations: []time.Duration{800 * time.Millisecond},
		},
		{
			name: "default causes: election after a release, failover with a holder",
			steps: []step{
				{cmd: SetLeader{Holder: "pg1", At: at(0)}},
				{cmd: SetLeader{Holder: "", PrevEpoch: 1, At: at(10)}},
				{cmd: SetLeader{Holder: "pg2", PrevEpoch: 2, At: at(20)}},
				{cmd: SetLeader{Holder: "pg1", PrevEpoch: 3, At: at(30)}},
			},
			wantKey: at(30),
			want: []Event{
				{Member: "pg1", Epoch: 1, Cause: CauseElection},
				{Member: "", Epoch: 2, Cause: CauseRelease, PrevRenewedAt: at(0)},
				{Member: "pg2", Epoch: 3, Cause: CauseElection, PrevRenewedAt: at(0)},
				{Member: "pg1", Epoch: 4, Cause: CauseFailover, PrevRenewedAt: at(20)},
			},
		},
		{
			name: "refused renewal and refused takeover change nothing",
			steps: []step{
				{cmd: SetLeader{Holder: "pg1", Cause: CauseBootstrap, At: at(0)}},
				{cmd: RenewLeader{Holder: "pg2", Epoch: 1, At: at(50)}, wantErr: ErrNotHolder},
				{cmd: SetLeader{Holder: "pg2", PrevEpoch: 7, Cause: CauseSwitchover, At: at(60)}, wantErr: ErrEpochMismatch},
				{cmd: SetLeader{Holder: "pg2", PrevEpoch: 1, Cause: CauseSwitchover, At: at(70)}},
				{cmd: RenewLeader{Holder: "pg1", Epoch: 1, At: at(80)}, wantErr: ErrNotHolder},
				{cmd: RenewLeader{Holder: "pg2", Epoch: 2, At: at(90)}},
			},
			wantKey: at(90),
			want: []Event{
				{Member: "pg1", Epoch: 1, Cause: CauseBootstrap},
				{Member: "pg2", Epoch: 2, Cause: CauseSwitchover, PrevRenewedAt: at(0), FirstRenewalAt: at(90)},
			},
			durations: []time.Duration{90 * time.Millisecond},
		},
		{
			name: "clock offset between proposers never gives a negative duration",
			steps: []step{
				{cmd: SetLeader{Holder: "pg1", At: at(0)}},
				{cmd: RenewLeader{Holder: "pg1", Epoch: 1, At: at(500)}},
				{cmd: SetLeader{Holder: "pg2", PrevEpoch: 1, Cause: CauseSwitchover, At: at(400)}},
				{cmd: RenewLeader{Holder: "pg2", Epoch: 2, At: at(450)}},
			},
			wantKey: at(450),
			want: []Event{
				{Member: "pg1", Epoch: 1, Cause: CauseElection, FirstRenewalAt: at(500)},
				{Member: "pg2", Epoch: 2, Cause: CauseSwitchover, PrevRenewedAt: at(500), FirstRenewalAt: at(450)},
			},
			durations: []time.Duration{0},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := newApplier(t)
			a.register("pg1", "pg2")
			for i, s := range tc.steps {
				if sl, ok := s.cmd.(SetLeader); ok && sl.PrevEpoch == a.f.State().Leader.Epoch {
					sl.PrevRev = a.f.State().Leader.Rev
					s.cmd = sl
				}
				before := a.f.State()
				res := a.apply(s.cmd)
				if !errors.Is(res.Err, s.wantErr) {
					t.Fatalf("step %d %T: %v, want %v", i, s.cmd, res.Err, s.wantErr)
				}
				if s.wantErr != nil {
					if diff := cmp.Diff(before, a.f.State()); diff != "" {
						t.Fatalf("step %d: a refused command changed the state:\n%s", i, diff)
					}
				}
			}
			st := a.f.State()
			if !st.Leader.RenewedAt.Equal(tc.wantKey) {
				t.Errorf("key RenewedAt %v, want %v", st.Leader.RenewedAt, tc.wantKey)
			}
			var got []Event
			var durations []time.Duration
			for _, e := range leaderEvents(st) {
				got = append(got, Event{Member: e.Member, Epoch: e.Epoch, Cause: e.Cause, Choice: e.Choice,
					PrevRenewedAt: e.PrevRenewedAt, FirstRenewalAt: e.FirstRenewalAt})
				if d, ok := e.Duration(); ok {
					durations = append(durations, d)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("leader events (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.durations, durations); diff != "" {
				t.Errorf("durations (-want +got):\n%s", diff)
			}
		})
	}
}

// TestFSMFirstRenewalOutsideHistory: when the current epoch's leader event
// has left History (MaxHistory), a renewal stamps no older event.
func TestFSMFirstRenewalOutsideHistory(t *testing.T) {
	t.Parallel()
	st := NewState()
	st.Members["pg1"] = &Member{Name: "pg1"}
	st.Leader = LeaderKey{Holder: "pg1", Epoch: 5, Rev: 9}
	st.History = []Event{{Index: 1, Kind: EventLeader, Member: "pg2", Epoch: 4}, {Index: 2, Kind: EventConfig}}
	if err := applyCommand(&st, 10, RenewLeader{Holder: "pg1", Epoch: 5, At: t0}); err != nil {
		t.Fatal(err)
	}
	if !st.History[0].FirstRenewalAt.IsZero() || !st.Leader.RenewedAt.Equal(t0) {
		t.Fatalf("history %+v, key %+v", st.History, st.Leader)
	}
}

func TestSetLeaderValidateCause(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cmd  SetLeader
		ok   bool
	}{
		{"empty cause", SetLeader{Holder: "pg1"}, true},
		{"failover", SetLeader{Holder: "pg1", Cause: CauseFailover}, true},
		{"release", SetLeader{Cause: CauseRelease}, true},
		{"unknown cause", SetLeader{Holder: "pg1", Cause: "coup"}, false},
		{"release naming a holder", SetLeader{Holder: "pg1", Cause: CauseRelease}, false},
		{"switchover to nobody", SetLeader{Cause: CauseSwitchover}, false},
		{"choice too long", SetLeader{Holder: "pg1", Choice: strings.Repeat("x", maxChoiceLen+1)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.cmd.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate: %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("error %v does not wrap ErrInvalidCommand", err)
			}
		})
	}
}

// TestSnapshotWithoutTimingFields: a snapshot written before the leader
// timing fields existed restores with them zero, and the next changes fill
// them.
func TestSnapshotWithoutTimingFields(t *testing.T) {
	t.Parallel()
	old := `{"format_version":1,"applied_index":7,"state":{"index":7,"config":{"version":1},` +
		`"members":{"pg1":{"name":"pg1","api_addr":"http://a","tags":{"failover_priority":1},"status":{"reported_at":"0001-01-01T00:00:00Z"},"registered":"0001-01-01T00:00:00Z"},` +
		`"pg2":{"name":"pg2","api_addr":"http://b","tags":{"failover_priority":1},"status":{"reported_at":"0001-01-01T00:00:00Z"},"registered":"0001-01-01T00:00:00Z"}},` +
		`"leader":{"holder":"pg1","epoch":1,"rev":6,"since":"2026-11-24T12:00:00Z"},"sync":{},` +
		`"history":[{"raft_index":6,"at":"2026-11-24T12:00:00Z","kind":"leader","member":"pg1","epoch":1,"reason":"init"}]}}`
	f := newFSM(nil)
	if err := f.Restore(io.NopCloser(strings.NewReader(old))); err != nil {
		t.Fatal(err)
	}
	st := f.State()
	if !st.Leader.RenewedAt.IsZero() || st.History[0].Cause != "" || !st.History[0].FirstRenewalAt.IsZero() {
		t.Fatalf("restored key %+v, event %+v", st.Leader, st.History[0])
	}
	a := &applier{t: t, f: f, index: 7}
	a.mustApply(RenewLeader{Holder: "pg1", Epoch: 1, At: t0.Add(time.Second)})
	a.mustApply(SetLeader{Holder: "pg2", PrevEpoch: 1, PrevRev: 8, Cause: CauseFailover, At: t0.Add(4 * time.Second)})
	a.mustApply(RenewLeader{Holder: "pg2", Epoch: 2, At: t0.Add(5 * time.Second)})
	ev := leaderEvents(a.f.State())
	if len(ev) != 2 || !ev[0].FirstRenewalAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("leader events %+v", ev)
	}
	if d, ok := ev[1].Duration(); !ok || d != 4*time.Second {
		t.Fatalf("duration %v %v, want 4s", d, ok)
	}
}

// The end of the last primary's WAL survives what a report or a release
// would otherwise erase: a restarted holder's first report (PostgreSQL
// not yet running) and the release of the key. A new holder, and a
// demote-cluster, start it again.
func TestFSMLastPrimaryLSN(t *testing.T) {
	t.Parallel()
	a := newApplier(t)
	a.mustApply(Bootstrap{Config: DefaultClusterConfig(), Actor: "pg1", At: t0})
	a.register("pg1", "pg2")
	a.mustApply(SetLeader{Holder: "pg1", Reason: "init", At: t0})
	step := func(what string, cmd Command, want uint64) {
		t.Helper()
		if cmd != nil {
			a.mustApply(cmd)
		}
		if got := a.f.State().LastPrimaryLSN(); got != want {
			t.Fatalf("after %s: LastPrimaryLSN = %d, want %d (key %+v)", what, got, want, a.f.State().Leader)
		}
	}
	running := func(lsn uint64) MemberStatus {
		return MemberStatus{Role: RolePrimary, State: StateRunning, WrittenLSN: lsn, ReportedAt: t0}
	}
	step("the holder's report", ReportStatus{Name: "pg1", Status: running(1000)}, 1000)
	step("a replica's report further", ReportStatus{Name: "pg2", Status: MemberStatus{Role: RoleReplica, State: StateRunning, ReceivedLSN: 5000}}, 1000)
	step("the holder restarted", ReportStatus{Name: "pg1", Status: MemberStatus{Role: RoleReplica, State: StateStopped, ReplayedLSN: 400}}, 1000)
	step("the holder running again", ReportStatus{Name: "pg1", Status: running(1200)}, 1200)
	k := a.f.State().Leader
	step("a release", SetLeader{Holder: "", PrevEpoch: k.Epoch, PrevRev: k.Rev, Cause: CauseRelease, At: t0}, 1200)
	k = a.f.State().Leader
	step("a new holder", SetLeader{Holder: "pg2", PrevEpoch: k.Epoch, PrevRev: k.Rev, At: t0}, 5000)
	step("its report", ReportStatus{Name: "pg2", Status: running(6000)}, 6000)
	cfg := a.f.State().Config
	cfg.StandbyCluster = &StandbyCluster{Host: "source.example", Port: 5432}
	step("demote-cluster", SetConfig{Config: cfg, PrevVersion: cfg.Version, Actor: "cli", At: t0}, 0)
	if got := a.f.State().Leader.LSN; got != 0 {
		t.Fatalf("demote-cluster kept the primary's LSN %d", got)
	}
	// Until it is stopped and rewound, the demoted primary still reports
	// its own WAL: that past the source's fork does not count.
	step("the demoted primary's report", ReportStatus{Name: "pg2", Status: running(9000)}, 0)
	step("the standby leader's report", ReportStatus{Name: "pg2", Status: MemberStatus{Role: RoleStandbyLeader, State: StateRunning, ReceivedLSN: 3000}}, 3000)
}
