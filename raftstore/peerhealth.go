package raftstore

import (
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// heartbeatTransport sends Raft's heartbeats (AppendEntries without
// entries) through a second transport with a short I/O deadline, and
// everything else through the main one. A peer whose host vanished
// without a TCP reset (a cut link, a frozen host) then fails its
// heartbeats within HeartbeatRPCTimeout instead of the main transport's
// 5 s, which is what lets the coordinator see a lost primary's host in
// time for a sub-second failover in synchronous mode. Heartbeats are
// answered by the follower without touching its disk, so a short deadline
// does not fail them under load.
//
// It also spaces each peer's heartbeats at least spacing apart
// (Config.HeartbeatSpacing) by holding a heartbeat back until then:
// Raft's heartbeat loop sends the next one only after this returns.
type heartbeatTransport struct {
	*raft.NetworkTransport
	beats   *raft.NetworkTransport
	spacing time.Duration

	mu     sync.Mutex
	last   map[raft.ServerAddress]time.Time // when the last heartbeat to a peer went out
	closed chan struct{}
	once   sync.Once
}

func newHeartbeatTransport(main, beats *raft.NetworkTransport, spacing time.Duration) *heartbeatTransport {
	return &heartbeatTransport{NetworkTransport: main, beats: beats, spacing: spacing,
		last: map[raft.ServerAddress]time.Time{}, closed: make(chan struct{})}
}

// isHeartbeat tells Raft's heartbeats from the replication loop's empty
// AppendEntries (which carry the previous entry and the commit index).
func isHeartbeat(args *raft.AppendEntriesRequest) bool {
	return len(args.Entries) == 0 && args.PrevLogEntry == 0 && args.LeaderCommitIndex == 0
}

// AppendEntries routes empty requests (heartbeats and commit-index
// updates) to the short-deadline transport, heartbeats no closer than
// spacing to the previous one to the same peer.
func (t *heartbeatTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress,
	args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if len(args.Entries) > 0 {
		return t.NetworkTransport.AppendEntries(id, target, args, resp)
	}
	if isHeartbeat(args) {
		if err := t.space(target, time.Now()); err != nil {
			return err
		}
	}
	return t.beats.AppendEntries(id, target, args, resp)
}

// space waits until spacing has passed since the last heartbeat to
// target, and records this one.
func (t *heartbeatTransport) space(target raft.ServerAddress, now time.Time) error {
	t.mu.Lock()
	wait := t.spacing - now.Sub(t.last[target])
	t.mu.Unlock()
	if wait > 0 {
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-t.closed:
			timer.Stop()
			return raft.ErrTransportShutdown
		}
	}
	t.mu.Lock()
	t.last[target] = time.Now()
	t.mu.Unlock()
	return nil
}

// Close closes both transports.
func (t *heartbeatTransport) Close() error {
	t.once.Do(func() { close(t.closed) })
	_ = t.beats.Close()
	return t.NetworkTransport.Close()
}

// dialOnly is a StreamLayer that only dials: the heartbeat transport's
// requests arrive on the main listener like any other.
type dialOnly struct {
	dial   func(raft.ServerAddress, time.Duration) (net.Conn, error)
	addr   net.Addr
	closed chan struct{}
	once   sync.Once
}

func (d *dialOnly) Accept() (net.Conn, error) {
	<-d.closed
	return nil, net.ErrClosed
}

func (d *dialOnly) Close() error {
	d.once.Do(func() { close(d.closed) })
	return nil
}

func (d *dialOnly) Addr() net.Addr { return d.addr }

func (d *dialOnly) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return d.dial(addr, timeout)
}

// peerHealth follows the leader's heartbeats to each peer, from Raft's
// failed- and resumed-heartbeat observations. Only a Raft leader sends
// heartbeats, so only the leader's view means anything.
type peerHealth struct {
	mu sync.Mutex
	// failing maps a peer to the last contact Raft reported with it and
	// when its latest failed heartbeat was observed.
	failing map[raft.ServerID]failingPeer
	// stale is how long a failure stays current without a new one: Raft
	// retries a failing peer at least every HeartbeatTimeout/2 (plus the
	// RPC's own deadline), so a lost "resumed" observation cannot leave a
	// peer marked unreachable for longer.
	stale time.Duration
}

type failingPeer struct {
	lastContact time.Time
	observedAt  time.Time
}

func newPeerHealth(stale time.Duration) *peerHealth {
	return &peerHealth{failing: map[raft.ServerID]failingPeer{}, stale: stale}
}

func (h *peerHealth) observe(o raft.Observation, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch d := o.Data.(type) {
	case raft.FailedHeartbeatObservation:
		h.failing[d.PeerID] = failingPeer{lastContact: d.LastContact, observedAt: now}
	case raft.ResumedHeartbeatObservation:
		delete(h.failing, d.PeerID)
	case raft.LeaderObservation:
		// A new term's leader starts its own heartbeats: earlier
		// failures were someone else's (or an earlier term's) view.
		clear(h.failing)
	}
}

// unreachable reports whether the heartbeats to id are failing at now,
// and the last time Raft had contact with it.
func (h *peerHealth) unreachable(id string, now time.Time) (lastContact time.Time, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f, found := h.failing[raft.ServerID(id)]
	if !found || now.Sub(f.observedAt) > h.stale {
		return time.Time{}, false
	}
	return f.lastContact, true
}

// PeerUnreachable reports, on the Raft leader, whether its heartbeats to
// the member named id are failing (connection refused or reset, or no
// answer within the heartbeat RPC deadline), and Raft's last contact with
// it. Elsewhere it reports false: followers send no heartbeats.
func (s *Store) PeerUnreachable(id string) (lastContact time.Time, ok bool) {
	if !s.IsLeader() || s.health == nil {
		return time.Time{}, false
	}
	return s.health.unreachable(id, time.Now())
}
