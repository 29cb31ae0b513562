package pgmanager

import (
	"context"
	"errors"
	"time"
)

const GateName = "raftgres_fence"

var ErrRewindSourceUnavailable = errors.New("stub")

func (m *Manager) RunGate(ctx context.Context, leaseEnd func() time.Time) error { <-ctx.Done(); return nil }
func (m *Manager) Fence() bool                                                   { return false }
