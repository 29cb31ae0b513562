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
const StateRecovering PGState = "recovering"

// EventRecover is the history event Recover writes.
const EventRecover = "raft_recover"

// ErrAgentRunning means the Raft store is open in another process.
var ErrAgentRunning = errors.New("the raft store is locked by a running agent")

// ErrQuorumReachable means the current configuration still has a majority
// of voters answering: the cluster recovers on its own.
var ErrQuorumReachable = errors.New("a quorum of the current raft configuration is reachable")

// ErrSyncLost means that, in synchronous mode, no member of the recorded
// synchronous set (those State.Electable accepts once the key is
// cleared) is among the survivors: nobody left is known to hold every
// acknowledged commit.
// Recovering anyway (AllowDataLoss) clears the record.
var ErrSyncLost = errors.New("no recorded synchronous member survives")

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
	// SynchronousMode and Sync are the cluster's mode and its recorded
	// synchronous set as the log has them. The recovery keeps Sync (see
	// RecoveryEdit): after it, as before, only a recorded member may be
	// elected first, since only those are known to hold every
	// acknowledged commit (Sync.NoRecord: anyone may be).
	SynchronousMode bool
	Sync            SyncState
	// SyncSurvivors are the survivors the kept record lets be elected
	// (State.Electable with the key cleared: Sync.Primary, Sync.Standbys,
	// and Sync.Inherited while the last holder never renewed). SyncLost
	// is set in synchronous mode when there is a record but no survivor
	// in it: every acknowledged commit may be lost. Recover then refuses
	// unless AllowDataLoss, with which it clears the record (anyone may
	// be elected) and says so in History.
	SyncSurvivors []string
	SyncLost      bool
	AllowDataLoss bool

	cfg   Config
	state State
}

// recoveredKey is the leader key and synchronous record a recovery
// leaves: the key cleared as a release clears it (epoch kept, the last
// renewal's time kept), and the record kept as the log had it, except
// that, as after a release, the members inherited by a holder that
// renewed are dropped (its renewal already ended their claim).
func recoveredKey(s State, index uint64) (LeaderKey, SyncState) {
	sync := s.Sync
	if s.Leader.Renewed {
		sync.Inherited = nil
	}
	return LeaderKey{Epoch: s.Leader.Epoch, Rev: index, RenewedAt: s.Leader.RenewedAt}, sync
}

// syncSurvivors returns the survivors that may be elected first under the
// synchronous record the recovery leaves (State.Electable), and whether,
// in synchronous mode, a record exists that none of them is in: then no
// survivor is known to hold every acknowledged commit.
func syncSurvivors(s State, survivors []string) (alive []string, lost bool) {
	after := s
	after.Leader, after.Sync = recoveredKey(s, s.Leader.Rev)
	if !after.Config.SynchronousMode || after.Sync.NoRecord() {
		return nil, false
	}
	if need := after.Sync.QuorumNeed(); need > 0 {
		// A quorum set: its survivors may be elected, the furthest of
		// them once they report, if n − q + 1 of it survive (or the last
		// primary, which holds everything it acknowledged).
		inSet := 0
		for _, name := range survivors {
			switch {
			case slices.Contains(after.Sync.Standbys, name):
				inSet++
				alive = append(alive, name)
			case name == after.Sync.Primary:
				alive = append(alive, name)
			}
		}
		return alive, inSet < need && !slices.Contains(survivors, after.Sync.Primary)
	}
	for _, name := range survivors {
		if ok, _ := after.Electable(name); ok {
			alive = append(alive, name)
		}
	}
	return alive, len(alive) == 0
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
	switch {
	case !p.SynchronousMode || p.Sync.NoRecord():
		fmt.Fprintf(&b, "leader key (held by %s, epoch %d) cleared: the first primary is chosen from the survivors' "+
			"PostgreSQL (most advanced first)\n", holder, p.Epoch)
	case !p.SyncLost:
		fmt.Fprintf(&b, "leader key (held by %s, epoch %d) cleared; the synchronous record (%s) is kept: only %s "+
			"(known to hold every acknowledged commit) may be the first primary, once its PostgreSQL reports as "+
			"a running replica (the election waits for it)\n", holder, p.Epoch, describeSync(p.Sync),
			strings.Join(p.SyncSurvivors, " or "))
	case p.AllowDataLoss:
		fmt.Fprintf(&b, "leader key (held by %s, epoch %d) cleared; DATA LOSS ALLOWED: none of the recorded synchronous "+
			"members (%s) survives, so the record is cleared and the most advanced survivor is elected: commits "+
			"acknowledged to clients may be missing from it\n", holder, p.Epoch, describeSync(p.Sync))
	default:
		fmt.Fprintf(&b, "leader key (held by %s, epoch %d) cleared; none of the recorded synchronous members (%s) "+
			"survives: every acknowledged commit may be lost with them\n", holder, p.Epoch, describeSync(p.Sync))
	}
	fmt.Fprintf(&b, "every entry of this member's raft log (up to index %d, term %d) counts as committed\n",
		p.LastIndex, p.LastTerm)
	return b.String()
}

func describeSync(s SyncState) string {
	p := s.Primary
	if p == "" {
		p = "none"
	}
	sb := "none"
	if len(s.Standbys) > 0 {
		sb = strings.Join(s.Standbys, ", ")
	}
	out := "primary " + p + ", standbys " + sb
	if len(s.Inherited) > 0 {
		out += ", inherited " + strings.Join(s.Inherited, ", ")
	}
	return out
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
// when a quorum of the current configuration answers on its Raft address
// (dial, with timeout each), and, in synchronous mode, when no member of
// the recorded synchronous set survives (ErrSyncLost) unless
// allowDataLoss. The plan comes back with the last two refusals, for the
// operator to read.
func PlanRecovery(cfg Config, survivors []string, dial time.Duration, allowDataLoss bool) (*RecoveryPlan, error) {
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
			LastIndex: lastIndex, LastTerm: lastTerm, SynchronousMode: st.Config.SynchronousMode,
			Sync: st.Sync, AllowDataLoss: allowDataLoss}
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
	plan.SyncSurvivors, plan.SyncLost = syncSurvivors(plan.state, survivors)
	if len(plan.Reachable) > len(plan.Voters)/2 {
		return plan, fmt.Errorf("%w (%d of %d voters answer: %s): start the agents instead of recovering",
			ErrQuorumReachable, len(plan.Reachable), len(plan.Voters), strings.Join(plan.Reachable, ", "))
	}
	if err := plan.checkSync(); err != nil {
		return plan, err
	}
	return plan, nil
}

// checkSync refuses a plan that would lose the recorded synchronous set,
// unless data loss is allowed.
func (p *RecoveryPlan) checkSync() error {
	if !p.SyncLost || p.AllowDataLoss {
		return nil
	}
	return fmt.Errorf("%w: synchronous mode recorded %s and the survivors are %s, so no survivor is known to "+
		"hold every commit acknowledged to clients; include a recorded member in --survivors if its host can "+
		"be brought back, or accept losing acknowledged commits with --allow-data-loss (the record is then "+
		"cleared and the most advanced survivor is elected)",
		ErrSyncLost, describeSync(p.Sync), strings.Join(p.survivorNames(), ", "))
}

func (p *RecoveryPlan) survivorNames() []string {
	names := make([]string, len(p.Survivors))
	for i, s := range p.Survivors {
		names[i] = s.ID
	}
	return names
}

// Recover carries the plan out: it rewrites this member's Raft state to a
// snapshot of the current state, edited (RecoveryEdit), with the survivors
// as the only voters, and compacts the log (hashicorp/raft RecoverCluster).
// Run it, with the same survivors, on every survivor before starting their
// agents.
func (p *RecoveryPlan) Recover(at time.Time, actor string) error {
	if err := p.checkSync(); err != nil {
		return err
	}
	servers := make([]raft.Server, len(p.Survivors))
	for i, s := range p.Survivors {
		servers[i] = raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(s.ID), Address: raft.ServerAddress(s.Address)}
	}
	names := p.survivorNames()
	return withOfflineStores(p.cfg, func(bolt *raftboltdb.BoltStore, snaps raft.SnapshotStore) error {
		f := &recoveryFSM{fsm: newFSM(nil), edit: func(s *State, index uint64) {
			recoveryEdit(s, index, names, at, actor, p.AllowDataLoss)
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
// so every later election still compare-and-sets past it), and the
// survivors' statuses become StateRecovering. Sync is kept as the log had
// it, even where it names a member that left (as after a release, only
// the members inherited by a holder that renewed are dropped): in
// synchronous mode only a recorded member holds every acknowledged commit,
// so only such a survivor may be elected first (State.Electable), and the
// election waits for it to report rather than pick a less advanced
// survivor that reported sooner. When no recorded member survives the
// cluster then elects nobody: RecoveryEditAllowingLoss is the operator's
// explicit way out.
func RecoveryEdit(s *State, index uint64, survivors []string, at time.Time, actor string) {
	recoveryEdit(s, index, survivors, at, actor, false)
}

// RecoveryEditAllowingLoss is RecoveryEdit for `raftgres recover
// --allow-data-loss`: when, in synchronous mode, none of the recorded
// synchronous members survives, it clears Sync (no record: any survivor
// may be elected, the most advanced first) and says in History that
// acknowledged commits may be lost. Otherwise it is RecoveryEdit.
func RecoveryEditAllowingLoss(s *State, index uint64, survivors []string, at time.Time, actor string) {
	recoveryEdit(s, index, survivors, at, actor, true)
}

func recoveryEdit(s *State, index uint64, survivors []string, at time.Time, actor string, allowDataLoss bool) {
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
	alive, lost := syncSurvivors(*s, survivors)
	s.Leader, s.Sync = recoveredKey(*s, index)
	s.Failover = nil
	reason := fmt.Sprintf("raft recovered to %s; removed %s; leader key of %q cleared",
		strings.Join(survivors, ", "), strings.Join(removed, ", "), holder)
	switch {
	case lost && allowDataLoss:
		reason += fmt.Sprintf("; DATA LOSS ALLOWED (--allow-data-loss): no recorded synchronous member survives (%s), "+
			"record cleared, any survivor may be elected: acknowledged commits may be lost", describeSync(s.Sync))
		s.Sync = SyncState{}
	case lost:
		reason += fmt.Sprintf("; no recorded synchronous member survives (%s): record kept, nobody may be elected",
			describeSync(s.Sync))
	case s.Config.SynchronousMode && len(alive) > 0:
		reason += fmt.Sprintf("; synchronous record kept (%s): %s may be elected first",
			describeSync(s.Sync), strings.Join(alive, " or "))
	}
	appendEvent(s, Event{Index: index, At: at, Kind: EventRecover, Actor: actor, Epoch: s.Leader.Epoch, Reason: reason})
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
