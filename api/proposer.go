package api

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/hashicorp/go-hclog"

	"raftgres/raftstore"
)

// forwardedHeader marks a command already forwarded once, so a stale view of
// who leads can never bounce a command between followers.
const forwardedHeader = "X-Raftgres-Forwarded"

// LocalStore is what the Proposer needs from the local Raft peer.
type LocalStore interface {
	Apply(ctx context.Context, cmd raftstore.Command) (raftstore.ApplyResult, error)
	Leader() (id, addr string)
	State() raftstore.State
}

// Proposer applies commands on the local store when it is the Raft leader
// and otherwise forwards them to the leader's /raft/apply.
type Proposer struct {
	store  LocalStore
	client ClientOptions
	logger hclog.Logger

	mu      sync.Mutex
	clients map[string]*Client // by leader API address: connections are kept alive
	probes  map[string]*Client // by member API address, for Probe
}

// NewProposer returns a Proposer; opts authenticate it to peers.
func NewProposer(store LocalStore, opts ClientOptions, logger hclog.Logger) *Proposer {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &Proposer{store: store, client: opts, logger: logger.Named("proposer"), clients: map[string]*Client{}}
}

// leaderClient returns the kept client of the leader at addr. One per
// address, so forwarded commands reuse a connection (and its TLS session)
// instead of dialling for each one; clients of former leaders are dropped.
func (p *Proposer) leaderClient(addr string) *Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.clients[addr]; ok {
		return c
	}
	for a, c := range p.clients {
		c.closeIdle()
		delete(p.clients, a)
	}
	c := NewClient(addr, p.client)
	p.clients[addr] = c
	return c
}

// Probe reports whether member's API answers (Client.Reachable), through
// a kept client: the coordinator's check that a holder Raft cannot reach
// is really gone before synchronous mode's fast path fires.
func (p *Proposer) Probe(ctx context.Context, member string) error {
	m, ok := p.store.State().Members[member]
	if !ok || m.APIAddr == "" {
		return fmt.Errorf("probe %s: api address unknown", member)
	}
	p.mu.Lock()
	c, ok := p.probes[m.APIAddr]
	if !ok {
		if p.probes == nil {
			p.probes = map[string]*Client{}
		}
		c = NewClient(m.APIAddr, p.client)
		p.probes[m.APIAddr] = c
	}
	p.mu.Unlock()
	return c.Reachable(ctx)
}

// Apply commits cmd through the Raft leader, wherever it is. Deterministic
// refusals come back in ApplyResult.Err; the error return means the command
// was not committed (or its outcome is unknown).
func (p *Proposer) Apply(ctx context.Context, cmd raftstore.Command) (raftstore.ApplyResult, error) {
	res, err := p.store.Apply(ctx, cmd)
	if !errors.Is(err, raftstore.ErrNotLeader) {
		return res, err
	}
	leaderID, _ := p.store.Leader()
	if leaderID == "" {
		return raftstore.ApplyResult{}, fmt.Errorf("forward command type %d: %w", cmd.Type(), ErrNoLeader)
	}
	m, ok := p.store.State().Members[leaderID]
	if !ok || m.APIAddr == "" {
		return raftstore.ApplyResult{}, fmt.Errorf("forward command type %d: api address of leader %s unknown: %w",
			cmd.Type(), leaderID, ErrNoLeader)
	}
	p.logger.Trace("forwarding command to leader", "leader", leaderID, "type", cmd.Type())
	addr := m.APIAddr
	for hop := 0; ; hop++ {
		res, err = p.leaderClient(addr).apply(ctx, cmd, true)
		var le *leaderError
		if err == nil || !errors.As(err, &le) || le.leaderAPI == "" || NormalizeURL(le.leaderAPI) == NormalizeURL(addr) || hop >= maxRedirects {
			break
		}
		// Leadership moved on (a transfer, an election) after this member
		// read it: the old leader refused without proposing, and names the
		// new one. Forward once more rather than fail the caller.
		p.logger.Debug("forwarding to the new leader", "from", leaderID, "leader_api", le.leaderAPI, "type", cmd.Type())
		addr = le.leaderAPI
	}
	if err != nil {
		return raftstore.ApplyResult{}, fmt.Errorf("forward command type %d to leader %s: %w", cmd.Type(), leaderID, err)
	}
	return res, nil
}
