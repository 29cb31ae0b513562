package raftstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// CatchUpSlack is how far (in log entries) a nonvoter's applied index may be
// behind the leader's commit index when it asks to become a voter.
const CatchUpSlack = 256

// Server is one entry of the Raft configuration.
type Server struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	Suffrage string `json:"suffrage"` // Voter, Nonvoter, Staging
}

// Status is what this node's Raft peer reports about itself.
type Status struct {
	ID           string   `json:"id"`
	State        string   `json:"state"` // Leader, Follower, Candidate, Shutdown
	Term         uint64   `json:"term"`
	LastIndex    uint64   `json:"last_index"`
	CommitIndex  uint64   `json:"commit_index"`
	AppliedIndex uint64   `json:"applied_index"`
	LeaderID     string   `json:"leader_id"`
	LeaderAddr   string   `json:"leader_addr"`
	LastContact  string   `json:"last_contact,omitempty"`
	Servers      []Server `json:"servers"`
}

// Status returns this node's Raft status and its latest configuration.
func (s *Store) Status() (Status, error) {
	r, err := s.r()
	if err != nil {
		return Status{ID: s.cfg.NodeID, State: raft.Shutdown.String()}, err
	}
	addr, id := r.LeaderWithID()
	st := Status{
		ID: s.cfg.NodeID, State: r.State().String(), Term: r.CurrentTerm(),
		LastIndex: r.LastIndex(), CommitIndex: r.CommitIndex(), AppliedIndex: s.AppliedIndex(),
		LeaderID: string(id), LeaderAddr: string(addr), Servers: []Server{},
	}
	if lc := r.LastContact(); !lc.IsZero() && r.State() != raft.Leader {
		st.LastContact = time.Since(lc).Round(time.Millisecond).String()
	}
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return st, fmt.Errorf("read raft configuration: %w", err)
	}
	for _, srv := range f.Configuration().Servers {
		st.Servers = append(st.Servers, Server{ID: string(srv.ID), Address: string(srv.Address), Suffrage: srv.Suffrage.String()})
	}
	return st, nil
}

// JoinRequest asks the leader to add (or promote) a node.
type JoinRequest struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	// Voter asks for promotion of an existing nonvoter whose FSM has
	// applied AppliedIndex.
	Voter        bool   `json:"voter"`
	AppliedIndex uint64 `json:"applied_index"`
}

// Join adds a node to the cluster. Leader only; idempotent. A new node is
// added as a nonvoter after the leader checked it can reach the node's Raft
// address (with TLS, that the node's certificate chains to the cluster CA).
// A nonvoter asking with Voter set is promoted once its applied index is
// within CatchUpSlack of the commit index. The returned index is the Raft
// index the joiner must apply before asking for promotion.
func (s *Store) Join(ctx context.Context, req JoinRequest) (uint64, error) {
	if err := checkName("member name", req.ID); err != nil {
		return 0, err
	}
	if err := CheckHostPort(req.RaftAddr, false); err != nil {
		return 0, fmt.Errorf("%w: raft address of %s: %v", ErrJoinRefused, req.ID, err)
	}
	r, err := s.r()
	if err != nil {
		return 0, err
	}
	if r.State() != raft.Leader {
		return 0, ErrNotLeader
	}
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return 0, fmt.Errorf("read raft configuration: %w", err)
	}
	// hashicorp/raft v1.7 does not report the configuration's index here, so
	// changes use prevIndex 0; raft itself still runs one change at a time.
	const prev = 0
	for _, srv := range f.Configuration().Servers {
		sameID, sameAddr := srv.ID == raft.ServerID(req.ID), srv.Address == raft.ServerAddress(req.RaftAddr)
		switch {
		case sameID && sameAddr && (srv.Suffrage == raft.Voter || !req.Voter):
			return r.CommitIndex(), nil // already there: catch up to the present
		case sameID && sameAddr:
			return s.promote(ctx, r, req, prev)
		case sameID || sameAddr:
			if err := s.removeServer(ctx, r, string(srv.ID), prev); err != nil {
				return 0, fmt.Errorf("remove stale entry %s (%s) before join of %s: %w", srv.ID, srv.Address, req.ID, err)
			}
			s.logger.Info("removed stale raft server before join", "member", srv.ID, "address", srv.Address)
			return s.Join(ctx, req)
		}
	}
	if err := s.probe(req.RaftAddr); err != nil {
		return 0, fmt.Errorf("%w: cannot reach raft address %s of %s: %v", ErrJoinRefused, req.RaftAddr, req.ID, err)
	}
	fut := r.AddNonvoter(raft.ServerID(req.ID), raft.ServerAddress(req.RaftAddr), prev, timeoutOf(ctx, s.cfg.ApplyTimeout))
	if err := waitFuture(ctx, fut); err != nil {
		return 0, fmt.Errorf("add nonvoter %s: %w", req.ID, mapRaftErr(err))
	}
	s.logger.Info("added nonvoter", "member", req.ID, "address", req.RaftAddr, "raft_index", fut.Index())
	return fut.Index(), nil
}

func (s *Store) promote(ctx context.Context, r *raft.Raft, req JoinRequest, prev uint64) (uint64, error) {
	commit := r.CommitIndex()
	if req.AppliedIndex+CatchUpSlack < commit {
		return 0, fmt.Errorf("%w: %s has applied %d, leader has committed %d: catch up first",
			ErrJoinRefused, req.ID, req.AppliedIndex, commit)
	}
	fut := r.AddVoter(raft.ServerID(req.ID), raft.ServerAddress(req.RaftAddr), prev, timeoutOf(ctx, s.cfg.ApplyTimeout))
	if err := waitFuture(ctx, fut); err != nil {
		return 0, fmt.Errorf("promote %s to voter: %w", req.ID, mapRaftErr(err))
	}
	s.logger.Info("promoted nonvoter to voter", "member", req.ID, "raft_index", fut.Index())
	return fut.Index(), nil
}

// probe dials a prospective peer the way the transport will.
func (s *Store) probe(addr string) error {
	c, err := dialPeer(addr, 3*time.Second, s.tls)
	if err != nil {
		return err
	}
	return c.Close()
}

// Leave removes a member from the FSM, then from the Raft configuration.
// Leader only. The member holding the leader key is refused (ErrHolderLeave)
// before anything changes: switch over first; so is, in synchronous mode,
// a member whose claim to every acknowledged commit the election may need
// (ErrSyncLeave, State.CheckLeave). A leader asked to remove
// itself first hands leadership to another voter and answers ErrNotLeader,
// so the caller retries at the new leader.
func (s *Store) Leave(ctx context.Context, id, actor string) error {
	r, err := s.r()
	if err != nil {
		return err
	}
	if r.State() != raft.Leader {
		return ErrNotLeader
	}
	// Early and readable, after a barrier so that State shows every
	// committed key change; RemoveMember's apply refuses the holder too,
	// deterministically, before the Raft configuration is touched below.
	if err := s.Barrier(ctx); err != nil {
		return fmt.Errorf("barrier before leave of %s: %w", id, err)
	}
	if err := s.State().CheckLeave(id); err != nil {
		return err
	}
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return fmt.Errorf("read raft configuration: %w", err)
	}
	found, voters := false, 0
	for _, srv := range f.Configuration().Servers {
		found = found || srv.ID == raft.ServerID(id)
		if srv.Suffrage == raft.Voter {
			voters++
		}
	}
	if !found {
		if _, ok := s.State().Members[id]; !ok {
			return fmt.Errorf("%w %s: not in the raft configuration", ErrUnknownMember, id)
		}
	}
	if found && id == s.cfg.NodeID {
		if voters < 2 {
			return errors.New("cannot remove the last voter of the cluster")
		}
		s.logger.Info("transferring raft leadership before leaving", "member", id)
		if err := waitFuture(ctx, r.LeadershipTransfer()); err != nil {
			return fmt.Errorf("transfer leadership before %s leaves: %w", id, err)
		}
		return ErrNotLeader
	}
	if _, ok := s.State().Members[id]; ok {
		_, err := Commit(ctx, s, RemoveMember{Name: id, Actor: actor, Reason: "left the cluster", At: time.Now().UTC()})
		if errors.Is(err, ErrHolderLeave) {
			return err // already says what to do; the member stays
		}
		if err != nil && !errors.Is(err, ErrUnknownMember) {
			return fmt.Errorf("remove member %s from state: %w", id, err)
		}
	}
	if found {
		if err := s.removeServer(ctx, r, id, 0); err != nil {
			return err
		}
	}
	s.logger.Info("member left the cluster", "member", id, "actor", actor)
	return nil
}

func (s *Store) removeServer(ctx context.Context, r *raft.Raft, id string, prev uint64) error {
	fut := r.RemoveServer(raft.ServerID(id), prev, timeoutOf(ctx, s.cfg.ApplyTimeout))
	if err := waitFuture(ctx, fut); err != nil {
		return fmt.Errorf("remove raft server %s: %w", id, mapRaftErr(err))
	}
	return nil
}

func timeoutOf(ctx context.Context, def time.Duration) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return time.Until(dl)
	}
	return def
}

// TransferLeadership hands Raft leadership to another voter (leader only).
// It moves no PostgreSQL role: the leader key is untouched.
func (s *Store) TransferLeadership(ctx context.Context) error {
	r, err := s.r()
	if err != nil {
		return err
	}
	if r.State() != raft.Leader {
		return ErrNotLeader
	}
	if err := waitFuture(ctx, r.LeadershipTransfer()); err != nil {
		return fmt.Errorf("transfer raft leadership: %w", mapRaftErr(err))
	}
	s.logger.Info("raft leadership transferred")
	return nil
}

// TransferLeadershipTo hands Raft leadership to the voter whose server ID
// is to; "" is TransferLeadership.
func (s *Store) TransferLeadershipTo(ctx context.Context, to string) error {
	if to == "" {
		return s.TransferLeadership(ctx)
	}
	r, err := s.r()
	if err != nil {
		return err
	}
	if r.State() != raft.Leader {
		return ErrNotLeader
	}
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return fmt.Errorf("transfer raft leadership to %s: %w", to, mapRaftErr(err))
	}
	for _, srv := range f.Configuration().Servers {
		if string(srv.ID) == to && srv.Suffrage == raft.Voter {
			if err := waitFuture(ctx, r.LeadershipTransferToServer(srv.ID, srv.Address)); err != nil {
				return fmt.Errorf("transfer raft leadership to %s: %w", to, mapRaftErr(err))
			}
			s.logger.Info("raft leadership transferred", "to", to)
			return nil
		}
	}
	return fmt.Errorf("transfer raft leadership to %s: not a voter", to)
}
