package raftstore

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// StateRecovering is the status Recover gives every survivor: not a running
// replica, so nobody is elected on a report from before the disaster, and
// the coordinator waits for the survivors' first reports (up to
// StaleAfter) so that the most advanced one is promoted.
const StateRecovering = "recovering"

// EventRecover is the history event Recover writes.
const EventRecover = "raft_recover"

// ErrAgentRunning means the Raft store is open in another process.
var ErrAgentRunning = errors.New("the raft store is locked by a running agent")

// ErrQuorumReachable means the current configuration still has a majority
// of voters answering: the cluster recovers on its own.
var ErrQuorumReachable = errors.New("a quorum of the current raft configuration is reachable")

// RecoveryPlan is what Recover will do, computed without changing anything.
type RecoveryPlan struct {
	// Voters are the servers of the current Raft configuration, Reachable
	// those that answered a TCP dial (this member counts as reachable).
	Voters    []Peer
	Reachable []string
	// Survivors make the new configuration; Removed are dropped from it
	// and from the member list.
	Survivors []Peer
	Removed   []string
	// Holder is the leader key's holder, cleared by the recovery.
	Holder string
	Epoch  uint64
	// LastIndex is the last Raft index of this member's log: everything up
	// to it counts as committed after the recovery.
	LastIndex, LastTerm uint64

	cfg   Config
	state State
}

// String describes the plan for the operator.
func (p *RecoveryPlan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "raft configuration now: %s\n", peerList(p.Voters))
	fmt.Fprintf(&b, "answering (TCP): %s\n", strings.Join(p.Reachable, ", "))
	fmt.Fprintf(&b, "new raft configuration: %s\n", peerList(p.Survivors))
	if len(p.Removed) > 0 {
		fmt.Fprintf(&b, "removed from the configuration and the member list: %s\n", strings.Join(p.Removed, ", "))
	}
	holder := "nobody"
	if p.Holder != "" {
		holder = p.Holder
	}
	fmt.Fprintf(&b, "leader key (held by %s, epoch %d) cleared: the first primary is chosen from the survivors' "+
		"PostgreSQL (most advanced first)\n", holder, p.Epoch)
	fmt.Fprintf(&b, "every entry of this member's raft log (up to index %d, term %d) counts as committed\n",
		p.LastIndex, p.LastTerm)
	return b.String()
}

func peerList(ps []Peer) string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.ID + "=" + p.Address
	}
	return strings.Join(out, ", ")
}

// PlanRecovery reads this member's Raft state (the agent must be stopped:
// the store's lock is taken and released) and says what Recover would do
// with survivors (member names; empty: this member alone). It refuses when
// the agent runs, when a survivor is not in the current configuration,
// and when a quorum of the current configuration answers on its Raft
// address (dial, with timeout each).
func PlanRecovery(cfg Config, survivors []string, dial time.Duration) (*RecoveryPlan, error) {
	if len(survivors) == 0 {
		survivors = []string{cfg.NodeID}
	}
	if !slices.Contains(survivors, cfg.NodeID) {
		return nil, fmt.Errorf("--survivors must include this member (%s)", cfg.NodeID)
	}
	var plan *RecoveryPlan
	err := withOfflineStores(cfg, func(bolt *raftboltdb.BoltStore, snaps raft.SnapshotStore) error {
		has, err := raft.HasExistingState(bolt, bolt, snaps)
		if err != nil {
			return fmt.Errorf("read raft state: %w", err)
		}
		if !has {
			return fmt.Errorf("no raft state in %s: nothing to recover", cfg.Dir)
		}
		f := newFSM(nil)
		conf, err := raft.GetConfiguration(offlineRaftConfig(cfg), f, bolt, bolt, snaps, inmemTransport())
		if err != nil {
			return fmt.Errorf("read raft configuration: %w", err)
		}
		lastIndex, lastTerm, err := lastLog(bolt, snaps)
		if err != nil {
			return err
		}
		// GetConfiguration restored the newest snapshot; the entries after
		// it are replayed as RecoverCluster will.
		first, err := bolt.FirstIndex()
		if err != nil {
			return fmt.Errorf("read raft log: %w", err)
		}
		for idx := max(first, f.AppliedIndex()+1); first > 0 && idx <= lastIndex; idx++ {
			var l raft.Log
			if err := bolt.GetLog(idx, &l); err != nil {
				return fmt.Errorf("read raft log entry %d: %w", idx, err)
			}
			if l.Type == raft.LogCommand {
				f.Apply(&l)
			}
		}
		st := f.State()
		plan = &RecoveryPlan{cfg: cfg, state: st, Holder: st.Leader.Holder, Epoch: st.Leader.Epoch,
			LastIndex: lastIndex, LastTerm: lastTerm}
		for _, s := range conf.Servers {
			if s.Suffrage == raft.Voter {
				plan.Voters = append(plan.Voters, Peer{ID: string(s.ID), Address: string(s.Address)})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	addr := map[string]string{}
	for _, v := range plan.Voters {
		addr[v.ID] = v.Address
	}
	for _, name := range survivors {
		a, ok := addr[name]
		if !ok {
			return nil, fmt.Errorf("survivor %s is not a voter of the current raft configuration (%s)", name, peerList(plan.Voters))
		}
		plan.Survivors = append(plan.Survivors, Peer{ID: name, Address: a})
	}
	for _, v := range plan.Voters {
		if !slices.Contains(survivors, v.ID) {
			plan.Removed = append(plan.Removed, v.ID)
		}
	}
	for name := range plan.state.Members {
		if !slices.Contains(survivors, name) && !slices.Contains(plan.Removed, name) {
			plan.Removed = append(plan.Removed, name)
		}
	}
	slices.Sort(plan.Removed)
	for _, v := range plan.Voters {
		if v.ID == cfg.NodeID || answers(v.Address, dial) {
			plan.Reachable = append(plan.Reachable, v.ID)
		}
	}
	if len(plan.Reachable) > len(plan.Voters)/2 {
		return plan, fmt.Errorf("%w (%d of %d voters answer: %s): start the agents instead of recovering",
			ErrQuorumReachable, len(plan.Reachable), len(plan.Voters), strings.Join(plan.Reachable, ", "))
	}
	return plan, nil
}

// Recover carries the plan out: it rewrites this member's Raft state to a
// snapshot of the current state, edited (RecoveryEdit), with the survivors
// as the only voters, and compacts the log (hashicorp/raft RecoverCluster).
// Run it, with the same survivors, on every survivor before starting their
// agents.
func (p *RecoveryPlan) Recover(at time.Time, actor string) error {
	servers := make([]raft.Server, len(p.Survivors))
	for i, s := range p.Survivors {
		servers[i] = raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(s.ID), Address: raft.ServerAddress(s.Address)}
	}
	names := make([]string, len(p.Survivors))
	for i, s := range p.Survivors {
		names[i] = s.ID
	}
	return withOfflineStores(p.cfg, func(bolt *raftboltdb.BoltStore, snaps raft.SnapshotStore) error {
		f := &recoveryFSM{fsm: newFSM(nil), edit: func(s *State, index uint64) {
			RecoveryEdit(s, index, names, at, actor)
		}}
		if err := raft.RecoverCluster(offlineRaftConfig(p.cfg), f, bolt, bolt, snaps, inmemTransport(),
			raft.Configuration{Servers: servers}); err != nil {
			return fmt.Errorf("recover raft cluster: %w", err)
		}
		return nil
	})
}

// RecoveryEdit is what a recovery does to the replicated state: members
// that are not survivors leave, the leader key is cleared (its epoch kept,
// so every later election still compare-and-sets past it), the survivors'
// statuses become StateRecovering, and in synchronous mode every survivor
// may be elected (the lost standby held the guarantee; the most advanced
// survivor is the best left).
func RecoveryEdit(s *State, index uint64, survivors []string, at time.Time, actor string) {
	var removed []string
	for name := range s.Members {
		if !slices.Contains(survivors, name) {
			removed = append(removed, name)
			delete(s.Members, name)
		}
	}
	slices.Sort(removed)
	for _, name := range survivors {
		if m, ok := s.Members[name]; ok {
			m.Status = MemberStatus{State: StateRecovering, Role: m.Status.Role, SystemID: m.Status.SystemID,
				Timeline: m.Status.Timeline, ReportedAt: at}
		}
	}
	holder := s.Leader.Holder
	s.Leader = LeaderKey{Epoch: s.Leader.Epoch, Rev: index, RenewedAt: s.Leader.RenewedAt}
	s.Sync = SyncState{}
	if s.Config.SynchronousMode {
		s.Sync.Standbys = slices.Sorted(slices.Values(survivors))
	}
	s.Failover = nil
	appendEvent(s, Event{Index: index, At: at, Kind: EventRecover, Actor: actor, Epoch: s.Leader.Epoch,
		Reason: fmt.Sprintf("raft recovered to %s; removed %s; leader key of %q cleared",
			strings.Join(survivors, ", "), strings.Join(removed, ", "), holder)})
}

// recoveryFSM applies the recovery's edit to the state right before
// RecoverCluster snapshots it, so the snapshot it writes holds the edit.
type recoveryFSM struct {
	*fsm
	edit func(*State, uint64)
}

func (r *recoveryFSM) Snapshot() (raft.FSMSnapshot, error) {
	r.mu.Lock()
	st := r.state.Clone()
	r.edit(&st, r.applied)
	st.Index = r.applied
	r.state = st
	r.mu.Unlock()
	return r.fsm.Snapshot()
}

// withOfflineStores opens the log/stable store and the snapshot store for
// an offline operation, failing at once when an agent holds them.
func withOfflineStores(cfg Config, f func(*raftboltdb.BoltStore, raft.SnapshotStore) error) error {
	path := filepath.Join(cfg.Dir, "raft.db")
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("raft log %s: %w", path, err)
	}
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bbolt.Options{Timeout: time.Second}})
	if err != nil {
		if errors.Is(err, bbolt.ErrTimeout) {
			return fmt.Errorf("%w (%s): stop the agent on this host first", ErrAgentRunning, path)
		}
		return fmt.Errorf("open raft log %s: %w", path, err)
	}
	defer bolt.Close()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, max(cfg.SnapshotRetain, 1), hclog.NewNullLogger())
	if err != nil {
		return fmt.Errorf("open raft snapshots in %s: %w", cfg.Dir, err)
	}
	return f(bolt, snaps)
}

func offlineRaftConfig(cfg Config) *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hclog.NewNullLogger()
	return rc
}

// lastLog is the index and term of the newest entry, in the log or, when
// the log is empty, in the newest snapshot.
func lastLog(logs raft.LogStore, snaps raft.SnapshotStore) (uint64, uint64, error) {
	idx, err := logs.LastIndex()
	if err != nil {
		return 0, 0, fmt.Errorf("read raft log: %w", err)
	}
	if idx > 0 {
		var l raft.Log
		if err := logs.GetLog(idx, &l); err != nil {
			return 0, 0, fmt.Errorf("read raft log entry %d: %w", idx, err)
		}
		return l.Index, l.Term, nil
	}
	metas, err := snaps.List()
	if err != nil || len(metas) == 0 {
		return 0, 0, fmt.Errorf("read raft snapshots: %v", err)
	}
	return metas[0].Index, metas[0].Term, nil
}

func inmemTransport() raft.Transport {
	_, t := raft.NewInmemTransport("")
	return t
}

func answers(addr string, timeout time.Duration) bool {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}
