package failover

import (
	"context"
	"time"

	"raftgres/pgmanager"
	"raftgres/raftstore"
)

// Postgres is what the supervisor needs from the local PostgreSQL
// (pgmanager.Manager in the agent, a fake in unit tests).
type Postgres interface {
	Status(ctx context.Context) (pgmanager.Status, error)
	Running() bool
	Exited() <-chan struct{}
	HasDataDir() bool
	IsStandbyConfigured() bool
	SystemID(ctx context.Context) (string, error)
	Init(ctx context.Context, d pgmanager.Desired) (string, error)
	Start(ctx context.Context, d pgmanager.Desired) error
	Stop(ctx context.Context, mode pgmanager.StopMode) error
	Restart(ctx context.Context, d pgmanager.Desired) error
	Reload(ctx context.Context, d pgmanager.Desired) (pgmanager.ConfigChange, error)
	Promote(ctx context.Context) error
	Follow(ctx context.Context, d pgmanager.Desired) error
	Rewind(ctx context.Context, d pgmanager.Desired) error
	Clone(ctx context.Context, d pgmanager.Desired) error
	Reclone(ctx context.Context, d pgmanager.Desired) error
	// EnsureSlots, on the primary, makes the slots of want and drops the
	// inactive physical slots neither wanted nor kept; it returns the
	// slots afterwards.
	EnsureSlots(ctx context.Context, want []pgmanager.Slot, keep func(pgmanager.SlotState) bool) ([]pgmanager.SlotState, error)
	// SyncStandbySlots, on a standby, keeps the permanent slots of want
	// near the primary's positions (copying logical ones from src).
	SyncStandbySlots(ctx context.Context, want []pgmanager.Slot, primaryLSN map[string]uint64, src pgmanager.Upstream, replayed uint64) (pgmanager.StandbySlots, error)
	ControlData(ctx context.Context) (map[string]string, error)
	// UpstreamSystemID asks d.Standby's server (a standby cluster's
	// source) for its system identifier over a replication connection.
	UpstreamSystemID(ctx context.Context, d pgmanager.Desired) (string, error)
	// Checkpoint runs CHECKPOINT: a restartpoint on a standby.
	Checkpoint(ctx context.Context) error
	// SetSynchronousStandbyNames writes d (with its SyncStandbyNames) to the
	// managed config, reloads, and waits until the server reports it.
	SetSynchronousStandbyNames(ctx context.Context, d pgmanager.Desired) error
	// RunGate runs the commit gate until ctx ends: it acknowledges the
	// primary's WAL only while time.Now() is before leaseEnd().
	RunGate(ctx context.Context, leaseEnd func() time.Time, leaseChanged func() <-chan struct{}) error
	// SetGateQuorum makes the commit gate confirm WAL only once q of
	// names (standbys' application names) have flushed it, besides the
	// lease (q = 0: the lease alone). Every reply sent after it returns
	// uses the new rule; one computed before confirms no more than the
	// WAL flushed then.
	SetGateQuorum(q int, names []string)
	// Fence kills the postmaster's process group at once (SIGKILL) without
	// waiting for anything the supervisor loop may hold; it reports whether
	// it signalled.
	Fence() bool
	// GateConnected reports whether the commit gate is streaming from the
	// local server.
	GateConnected() bool
	// FenceAt hands the lease end to the fence keeper, a process apart
	// from the agent that kills the postmaster's process group at that
	// instant (on the boot clock) unless a later call moved it; zero
	// disarms. It never blocks for long.
	FenceAt(until time.Time)
	// Callback runs postgresql.callbacks for event in the background.
	Callback(event, role string)
	// Hook runs the hook named (pgmanager.PrePromote, BeforeStop) and
	// waits for it, bounded by its own timeout and ctx; nil when none is
	// configured.
	Hook(ctx context.Context, hook string) error
}

// Store is the read side of the replicated store.
type Store interface {
	State() raftstore.State
	Changes() <-chan struct{}
}

// Proposer commits commands through the Raft leader, wherever it is.
type Proposer interface {
	Apply(ctx context.Context, cmd raftstore.Command) (raftstore.ApplyResult, error)
}

// LeaderStore is what the coordinator needs from the local Raft peer.
type LeaderStore interface {
	Store
	IsLeader() bool
	LeaderChanges() <-chan struct{}
	Barrier(ctx context.Context) error
	Apply(ctx context.Context, cmd raftstore.Command) (raftstore.ApplyResult, error)
	// TransferLeadershipTo hands Raft leadership to the member named to
	// ("" lets Raft choose the most up-to-date voter).
	TransferLeadershipTo(ctx context.Context, to string) error
	// PeerUnreachable reports, on the Raft leader, whether heartbeats to
	// the member are failing, and Raft's last contact with it (this
	// host's clock).
	PeerUnreachable(member string) (lastContact time.Time, ok bool)
	// PeerChanges is closed when some peer's heartbeats fail or resume.
	PeerChanges() <-chan struct{}
}
