package raftstore

import "context"

// Applier proposes a command and waits for its outcome: *Store for the
// local Raft peer, api.Proposer and api.Client for any member. The
// ApplyResult carries a deterministic refusal; the error says the command
// was not committed, or that its outcome is unknown.
type Applier interface {
	Apply(ctx context.Context, cmd Command) (ApplyResult, error)
}

// Commit applies cmd through a and folds the two kinds of failure into one
// error (Nomad's raftApply): a failure to commit, or the refusal the FSM
// returned (e.g. ErrEpochMismatch). It returns the command's Raft index,
// which is set for a refused command too, since a refusal is committed.
// Errors come back as they are: the caller names what it was doing.
func Commit(ctx context.Context, a Applier, cmd Command) (uint64, error) {
	res, err := a.Apply(ctx, cmd)
	if err != nil {
		return 0, err
	}
	return res.Index, res.Err
}
