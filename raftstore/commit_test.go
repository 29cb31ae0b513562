package raftstore

import (
	"context"
	"errors"
	"testing"
)

type applierFunc func(ctx context.Context, cmd Command) (ApplyResult, error)

func (f applierFunc) Apply(ctx context.Context, cmd Command) (ApplyResult, error) { return f(ctx, cmd) }

func TestCommit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		res       ApplyResult
		err       error
		wantIndex uint64
		wantErr   error
	}{
		{"committed", ApplyResult{Index: 7}, nil, 7, nil},
		{"refused by the fsm", ApplyResult{Index: 8, Err: ErrEpochMismatch}, nil, 8, ErrEpochMismatch},
		{"not committed", ApplyResult{}, ErrNotLeader, 0, ErrNotLeader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := applierFunc(func(context.Context, Command) (ApplyResult, error) { return tc.res, tc.err })
			idx, err := Commit(context.Background(), a, SetPause{})
			if idx != tc.wantIndex || !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Commit = %d, %v; want %d, %v", idx, err, tc.wantIndex, tc.wantErr)
			}
		})
	}
}

// The appliers the rest of raftgres passes to Commit.
var _ Applier = (*Store)(nil)
