package raftstore

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// Logger names used by this package.
const (
	LoggerName     = "raftstore"
	RaftLoggerName = "raft"
)

// Store is the replicated store: one embedded Raft peer and its FSM.
// New starts nothing; Open starts Raft and Close stops it.
type Store struct {
	cfg    Config
	logger hclog.Logger
	fsm    *fsm

	mu        sync.Mutex
	raft      *raft.Raft
	transport *raft.NetworkTransport
	beats     *raft.NetworkTransport // heartbeats only (heartbeatTransport)
	health    *peerHealth
	bolt      *raftboltdb.BoltStore
	logs      raft.LogStore
	tls       *tls.Config
	auditKey  ed25519.PrivateKey // signs exports; never logged
	stop      chan struct{}
	done      chan struct{}
	observer  *raft.Observer

	changes   *broadcast // FSM applied an entry
	leaders   *broadcast // Raft leadership or leader identity changed
	peers     *broadcast // a peer's heartbeats started failing or resumed
	removedCh chan struct{}
	// haltLogged: watchRaft said the FSM halted (its goroutine only).
	haltLogged bool
	removed    sync.Once

	droppedObservations atomic.Uint64

	// listener, when set, is an already bound Raft listener that Open uses
	// instead of binding cfg.Listen (tests bind 127.0.0.1:0). Open consumes it.
	listener net.Listener
}

// New validates cfg and returns a Store that is not yet open.
func New(cfg Config, logger hclog.Logger) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("raft config: %w", err)
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	s := &Store{
		cfg:       cfg,
		logger:    logger.Named(LoggerName),
		changes:   newBroadcast(),
		leaders:   newBroadcast(),
		peers:     newBroadcast(),
		health:    newPeerHealth(cfg.HeartbeatTimeout + cfg.HeartbeatRPCTimeout()),
		removedCh: make(chan struct{}),
	}
	s.fsm = newFSM(func(uint64) { s.changes.notify() })
	return s, nil
}

// Open creates the on-disk stores, starts the transport and Raft, and
// bootstraps a brand-new cluster from BootstrapPeers.
func (s *Store) Open() (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.raft != nil {
		return errors.New("raft store already open")
	}
	if err := os.MkdirAll(s.cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("create raft dir %s: %w", s.cfg.Dir, err)
	}
	if s.cfg.TLS.Enabled() {
		if s.tls, err = LoadTLS(s.cfg.TLS); err != nil {
			return err
		}
	}
	if s.cfg.AuditKeyFile != "" {
		if s.auditKey, err = LoadAuditKey(s.cfg.AuditKeyFile); err != nil {
			return err
		}
		s.logger.Info("audit exports will be signed", "key_id", KeyID(s.auditKey.Public().(ed25519.PublicKey)))
	}
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(s.cfg.Dir, "raft.db")})
	if err != nil {
		return fmt.Errorf("open raft log %s: %w", filepath.Join(s.cfg.Dir, "raft.db"), err)
	}
	defer func() {
		if err != nil {
			_ = bolt.Close()
		}
	}()
	logs, err := raft.NewLogCache(512, bolt)
	if err != nil {
		return fmt.Errorf("create raft log cache: %w", err)
	}
	rlog := s.logger.Named(RaftLoggerName)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(s.cfg.Dir, s.cfg.SnapshotRetain, rlog)
	if err != nil {
		return fmt.Errorf("open raft snapshots in %s: %w", s.cfg.Dir, err)
	}
	adv, err := net.ResolveTCPAddr("tcp", s.cfg.AdvertiseAddr())
	if err != nil {
		return fmt.Errorf("resolve raft advertise address %s: %w", s.cfg.AdvertiseAddr(), err)
	}
	stream, err := newStreamLayer(s.listener, s.cfg.Listen, adv, s.tls)
	s.listener = nil
	if err != nil {
		return err
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: stream, MaxPool: 3, Timeout: 5 * time.Second, Logger: rlog,
	})
	beats := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  &dialOnly{dial: stream.Dial, addr: stream.Addr(), closed: make(chan struct{})},
		MaxPool: 1, Timeout: s.cfg.HeartbeatRPCTimeout(), Logger: rlog.Named("heartbeat"),
	})
	defer func() {
		if err != nil {
			_ = beats.Close()
			_ = trans.Close()
		}
	}()
	notify := make(chan bool, 1)
	r, err := raft.NewRaft(s.raftConfig(rlog, notify), s.fsm, logs, bolt, snaps,
		newHeartbeatTransport(trans, beats, s.cfg.HeartbeatSpacing()))
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	if err := s.bootstrap(r, bolt, snaps); err != nil {
		_ = r.Shutdown().Error()
		return err
	}
	obsCh := make(chan raft.Observation, 64)
	s.observer = raft.NewObserver(obsCh, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation:
			return true
		}
		return false
	})
	r.RegisterObserver(s.observer)
	s.raft, s.transport, s.beats, s.bolt, s.logs = r, trans, beats, bolt, logs
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	go s.watchRaft(r, notify, obsCh, s.stop, s.done)
	s.logger.Info("raft started", "raft_id", s.cfg.NodeID, "listen", s.cfg.Listen,
		"advertise", s.cfg.AdvertiseAddr(), "tls", s.tls != nil)
	return nil
}

func (s *Store) raftConfig(logger hclog.Logger, notify chan bool) *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(s.cfg.NodeID)
	rc.Logger = logger
	rc.HeartbeatTimeout = s.cfg.HeartbeatTimeout
	rc.ElectionTimeout = s.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = s.cfg.LeaderLeaseTimeout
	rc.CommitTimeout = s.cfg.CommitTimeout
	rc.SnapshotThreshold = s.cfg.SnapshotThreshold
	rc.SnapshotInterval = s.cfg.SnapshotInterval
	rc.TrailingLogs = s.cfg.TrailingLogs
	rc.NotifyCh = notify
	rc.ShutdownOnRemove = true
	return rc
}

func (s *Store) bootstrap(r *raft.Raft, bolt *raftboltdb.BoltStore, snaps raft.SnapshotStore) error {
	has, err := raft.HasExistingState(bolt, bolt, snaps)
	if err != nil {
		return fmt.Errorf("check existing raft state: %w", err)
	}
	if has {
		s.logger.Info("found existing raft state, not bootstrapping")
		return nil
	}
	if len(s.cfg.BootstrapPeers) == 0 {
		s.logger.Info("no raft state and no bootstrap peers: waiting to be added by a leader")
		return nil
	}
	servers := make([]raft.Server, 0, len(s.cfg.BootstrapPeers))
	for _, p := range s.cfg.BootstrapPeers {
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Address)})
	}
	if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return fmt.Errorf("bootstrap raft cluster: %w", err)
	}
	s.logger.Info("bootstrapped new raft cluster", "voters", len(servers))
	return nil
}

// watchRaft drains the leadership channel and observations without ever
// blocking Raft, turning them into broadcasts, and notices when this node
// is no longer in the configuration (removed).
func (s *Store) watchRaft(r *raft.Raft, notify <-chan bool, obs <-chan raft.Observation, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case leader := <-notify:
			s.logger.Info("raft leadership changed", "leader", leader)
			s.leaders.notify()
		case o := <-obs:
			s.health.observe(o, time.Now())
			switch d := o.Data.(type) {
			case raft.LeaderObservation:
				s.logger.Debug("raft leader observed", "leader_id", d.LeaderID, "leader_addr", d.LeaderAddr)
				s.leaders.notify()
			case raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation:
				s.peers.notify()
			}
		case <-tick.C:
			if s.observer != nil {
				s.droppedObservations.Store(s.observer.GetNumDropped())
			}
			s.checkRemoved(r)
			s.checkHalted(r)
		}
	}
}

// checkHalted says once, loudly, that the FSM halted, and moves Raft
// leadership away whenever this node holds it: a leader whose state is
// frozen could commit entries but never act on them, and its coordinator
// would decide on that frozen state.
func (s *Store) checkHalted(r *raft.Raft) {
	h, halted := s.fsm.halted()
	if !halted {
		return
	}
	if !s.haltLogged {
		s.haltLogged = true
		s.logger.Error("this member stopped applying the replicated state: it proposes nothing, holds no lease and leaves Raft leadership to others until it is upgraded",
			"index", h.Index, "command_type", h.Type, "error", h.Err)
	}
	if r.State() == raft.Leader {
		if err := r.LeadershipTransfer().Error(); err != nil {
			s.logger.Warn("halted: could not hand Raft leadership over", "error", err)
		}
	}
}

// Halted reports whether the FSM stopped at a committed entry this release
// cannot decode, and which.
func (s *Store) Halted() (Halt, bool) { return s.fsm.halted() }

func (s *Store) checkRemoved(r *raft.Raft) {
	f := r.GetConfiguration()
	if f.Error() != nil {
		if r.State() == raft.Shutdown {
			s.markRemoved()
		}
		return
	}
	servers := f.Configuration().Servers
	if len(servers) == 0 {
		return
	}
	for _, srv := range servers {
		if srv.ID == raft.ServerID(s.cfg.NodeID) {
			return
		}
	}
	s.markRemoved()
}

func (s *Store) markRemoved() {
	s.removed.Do(func() {
		s.logger.Warn("this member is no longer in the raft configuration")
		close(s.removedCh)
	})
}

// Removed is closed once this node has been removed from the cluster.
func (s *Store) Removed() <-chan struct{} { return s.removedCh }

// Close stops Raft and closes the transport and the log store.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.raft == nil {
		return nil
	}
	close(s.stop)
	<-s.done
	var errs []error
	if err := s.raft.Shutdown().Error(); err != nil {
		errs = append(errs, fmt.Errorf("shut down raft: %w", err))
	}
	_ = s.beats.Close()
	if err := s.transport.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close raft transport: %w", err))
	}
	if err := s.bolt.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close raft log: %w", err))
	}
	s.raft = nil
	s.logger.Info("raft stopped")
	return errors.Join(errs...)
}

func (s *Store) r() (*raft.Raft, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.raft == nil {
		return nil, ErrClosed
	}
	return s.raft, nil
}

// signingKey is the audit key exports are signed with, or nil.
func (s *Store) signingKey() ed25519.PrivateKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.auditKey
}

func (s *Store) logStore() raft.LogStore {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs
}

// ID is this node's Raft server ID (its member name).
func (s *Store) ID() string { return s.cfg.NodeID }

// State returns a copy of the FSM state (History shared, read-only: see
// State.Clone).
func (s *Store) State() State { return s.fsm.State() }

// AppliedIndex is the last Raft index whose effect State already shows:
// commands and configuration entries the FSM has applied, and the no-op and
// barrier entries after them, which never reach the FSM. (Raft's own
// applied index moves when an entry is queued for the FSM, before State
// shows it, so it is not used alone.)
func (s *Store) AppliedIndex() uint64 {
	return s.extendApplied(s.fsm.AppliedIndex())
}

// extendApplied moves idx, an index the FSM applied, over the no-op and
// barrier entries Raft applied after it: State at idx is State at the result.
func (s *Store) extendApplied(idx uint64) uint64 {
	r, err := s.r()
	if err != nil {
		return idx
	}
	logs := s.logStore()
	for last := r.AppliedIndex(); idx < last && logs != nil; idx++ {
		var l raft.Log
		if err := logs.GetLog(idx+1, &l); err != nil || l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			break // not applied yet (or unknown: stay on the safe side)
		}
	}
	return idx
}

// Changes returns a channel closed at the next FSM change after the call.
func (s *Store) Changes() <-chan struct{} { return s.changes.wait() }

// LeaderChanges returns a channel closed at the next change of Raft
// leadership (this node's, or the identity of the leader it follows).
func (s *Store) LeaderChanges() <-chan struct{} { return s.leaders.wait() }

// PeerChanges returns a channel closed when a peer's heartbeats start
// failing or resume (see PeerUnreachable).
func (s *Store) PeerChanges() <-chan struct{} { return s.peers.wait() }

// DroppedObservations counts Raft observations dropped because the
// consumer was slow (Raft is never blocked).
func (s *Store) DroppedObservations() uint64 { return s.droppedObservations.Load() }

// IsLeader reports whether this node is the Raft leader right now. It never
// authorises a PostgreSQL action on its own.
func (s *Store) IsLeader() bool {
	r, err := s.r()
	return err == nil && r.State() == raft.Leader
}

// Leader returns the ID and Raft address of the leader this node knows of.
func (s *Store) Leader() (id, addr string) {
	r, err := s.r()
	if err != nil {
		return "", ""
	}
	a, i := r.LeaderWithID()
	return string(i), string(a)
}

// Apply proposes cmd and waits until it is applied. The wait is bounded by
// ctx (or ApplyTimeout if ctx has no deadline). The returned ApplyResult
// carries deterministic refusals (e.g. ErrEpochMismatch) in Err; the error
// return is for failures to commit (ErrNotLeader, ErrLeadershipLost, ctx).
func (s *Store) Apply(ctx context.Context, cmd Command) (ApplyResult, error) {
	data, err := Encode(cmd)
	if err != nil {
		return ApplyResult{}, err
	}
	if commandProtocol(cmd) > 1 {
		voters, err := s.voters()
		if err != nil {
			return ApplyResult{}, err
		}
		if err := CheckProtocol(s.State(), voters, cmd); err != nil {
			return ApplyResult{}, err
		}
	}
	return s.applyBytes(ctx, data)
}

// voters lists the voters of the current Raft configuration.
func (s *Store) voters() ([]string, error) {
	r, err := s.r()
	if err != nil {
		return nil, err
	}
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("read the raft configuration: %w", err)
	}
	var out []string
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage == raft.Voter {
			out = append(out, string(srv.ID))
		}
	}
	return out, nil
}

func (s *Store) applyBytes(ctx context.Context, data []byte) (ApplyResult, error) {
	r, err := s.r()
	if err != nil {
		return ApplyResult{}, err
	}
	if h, halted := s.fsm.halted(); halted {
		return ApplyResult{}, fmt.Errorf("%w: %v", ErrHalted, h)
	}
	var f raft.ApplyFuture
	for {
		if r.State() != raft.Leader {
			return ApplyResult{}, ErrNotLeader
		}
		f = r.Apply(data, timeoutOf(ctx, s.cfg.ApplyTimeout))
		err := waitFuture(ctx, f)
		if err == nil {
			break
		}
		if !errors.Is(err, raft.ErrLeadershipTransferInProgress) || ctx.Err() != nil {
			return ApplyResult{}, mapRaftErr(err)
		}
		// Refused before it was logged (nothing applied): the transfer
		// ends within a round trip or two, then this node either leads
		// again or answers ErrNotLeader and the caller forwards. An
		// operator's command must not fail because Raft leadership was
		// being moved (the coordinator moves it off busy hosts).
		select {
		case <-ctx.Done():
			return ApplyResult{}, mapRaftErr(err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	res, ok := f.Response().(ApplyResult)
	if !ok {
		return ApplyResult{}, fmt.Errorf("apply: unexpected fsm response %T", f.Response())
	}
	if res.Err == nil && len(data) > 0 && (urgent(CommandType(data[0])) || s.fsm.requestPending()) {
		// Followers learn the commit index only from the next
		// AppendEntries, up to 2·CommitTimeout later when nothing else is
		// proposed. A barrier entry goes out at once and carries it: a
		// new holder learns of its key in one round trip.
		r.Barrier(s.cfg.ApplyTimeout)
	}
	return res, nil
}

// urgent reports whether followers must see a command's effect at once:
// changes of the leader key, requests and configuration, which wake
// supervisors, and a Barrier entry (whose proposer waits to apply it). Renewals and status reports are not, except while a
// switchover is pending (Apply checks): the primary then waits on its
// candidate's reports.
func urgent(t CommandType) bool {
	switch t {
	case CmdSetLeader, CmdSetFailover, CmdSetConfig, CmdSetPause, CmdInitialize, CmdSetSync, CmdBarrier:
		return true
	}
	return false
}

// Barrier waits until every entry committed before the call is applied to
// the local FSM. Leader only.
func (s *Store) Barrier(ctx context.Context) error {
	r, err := s.r()
	if err != nil {
		return err
	}
	return mapRaftErr(waitFuture(ctx, r.Barrier(timeoutOf(ctx, s.cfg.ApplyTimeout))))
}

// WaitApplied blocks until this node has applied index, or ctx ends. It
// wakes on FSM changes and polls for configuration entries, which do not
// reach the FSM.
func (s *Store) WaitApplied(ctx context.Context, index uint64) error {
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		ch := s.Changes()
		if s.AppliedIndex() >= index {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for raft index %d (applied %d): %w", index, s.AppliedIndex(), ctx.Err())
		case <-ch:
		case <-tick.C:
		}
	}
}

func waitFuture(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("raft operation outcome unknown: %w", ctx.Err())
	}
}

func mapRaftErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader):
		return ErrNotLeader
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: %v", ErrLeadershipLost, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	}
	return err
}

// broadcast wakes every waiter at once by closing a channel.
type broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

func newBroadcast() *broadcast { return &broadcast{ch: make(chan struct{})} }

func (b *broadcast) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ch
}

func (b *broadcast) notify() {
	b.mu.Lock()
	close(b.ch)
	b.ch = make(chan struct{})
	b.mu.Unlock()
}
