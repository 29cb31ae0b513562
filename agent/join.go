package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"raftgres/api"
	"raftgres/raftstore"
)

// join makes this node a voter of the cluster reached through raft.join:
// added as a nonvoter, it waits until its FSM has applied the index of its
// own addition, then asks to be promoted. Each step is idempotent, so a
// restarted agent simply resumes.
func (a *member) join(ctx context.Context) error {
	if a.isVoter() {
		a.logger.Debug("already a voter, not joining")
		return nil
	}
	req := raftstore.JoinRequest{ID: a.cfg.Name, RaftAddr: a.cfg.Raft.AdvertiseAddr()}
	var resp api.JoinResponse
	err := retry(ctx, a.logger, "join cluster as nonvoter", func() error {
		var err error
		resp, err = a.joinAny(ctx, req)
		return err
	})
	if err != nil || ctx.Err() != nil {
		return err
	}
	a.logger.Info("added to the cluster as nonvoter, catching up", "raft_index", resp.Index, "leader", resp.LeaderID)
	if err := a.store.WaitApplied(ctx, resp.Index); err != nil {
		return nil // ctx ended
	}
	return retry(ctx, a.logger, "promote to voter", func() error {
		req.Voter, req.AppliedIndex = true, a.store.AppliedIndex()
		r, err := a.joinAny(ctx, req)
		if err == nil {
			a.logger.Info("promoted to voter", "raft_index", r.Index)
		}
		return err
	})
}

func (a *member) isVoter() bool {
	st, err := a.store.Status()
	if err != nil {
		return false
	}
	for _, s := range st.Servers {
		if s.ID == a.cfg.Name && s.Suffrage == "Voter" {
			return true
		}
	}
	return false
}

// joinAny tries each raft.join address in turn; the client follows a
// follower's "not leader" answer to the leader.
func (a *member) joinAny(ctx context.Context, req raftstore.JoinRequest) (api.JoinResponse, error) {
	var errs []error
	for _, target := range a.cfg.Join {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		resp, err := api.NewClient(target, a.peer).Join(cctx, req)
		cancel()
		if err == nil {
			return resp, nil
		}
		if !transient(err) {
			return resp, fmt.Errorf("join through %s refused: %w", target, err)
		}
		errs = append(errs, fmt.Errorf("join through %s: %w", target, err))
	}
	return api.JoinResponse{}, errors.Join(errs...)
}
