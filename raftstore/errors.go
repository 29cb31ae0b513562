package raftstore

import (
	"errors"
	"fmt"
)

var (
	// ErrNotLeader means this node is not the Raft leader; forward to it.
	ErrNotLeader = errors.New("not the raft leader")
	// ErrLeadershipLost means leadership was lost while a command was in
	// flight: it may or may not commit under the next leader.
	ErrLeadershipLost = errors.New("raft leadership lost while applying")
	// ErrEpochMismatch is a failed compare-and-set on the leader key.
	ErrEpochMismatch = errors.New("leader key changed (epoch or revision mismatch)")
	// ErrNotElectable: a SetLeader named a candidate that the synchronous
	// record does not prove to hold every acknowledged commit.
	ErrNotElectable = errors.New("candidate not electable")
	// ErrSyncMismatch is a failed compare-and-set on the synchronous record.
	ErrSyncMismatch = errors.New("synchronous record changed")
	// ErrFailoverPending is a failed compare-and-set on the pending
	// switchover or failover request.
	ErrFailoverPending = errors.New("failover request changed")
	// ErrNotHolder means a renewal came from a member that does not hold the key.
	ErrNotHolder = errors.New("member does not hold the leader key")
	// ErrVersionMismatch is a failed compare-and-set on the cluster config version.
	ErrVersionMismatch = errors.New("cluster config version changed")
	// ErrAlreadyInitialized means Initialize was already set to another system id.
	ErrAlreadyInitialized = errors.New("cluster already initialized with another system identifier")
	// ErrAlreadyBootstrapped means the cluster config was seeded before.
	ErrAlreadyBootstrapped = errors.New("cluster config already bootstrapped")
	// ErrNeedsUpgrade refuses a command that a voter's agent could not
	// apply (CheckProtocol): upgrade every member first.
	ErrNeedsUpgrade = errors.New("not every voter runs a release that understands this command: upgrade them first")
	// ErrHalted refuses a proposal on a member whose FSM stopped at an
	// entry a newer release wrote (Store.Halted).
	ErrHalted = errors.New("this member's replicated state is halted at an entry from a newer release: upgrade it")
	// ErrHolderLeave refuses to remove the member that holds the leader key:
	// a switchover must move the key first.
	ErrHolderLeave = errors.New("member holds the leader key: switch over first")
	// ErrSyncLeave refuses to remove, in synchronous mode while no holder
	// has renewed the key, a member the synchronous record names as holding
	// every acknowledged commit (State.CheckLeave).
	ErrSyncLeave = errors.New("member may hold the only copy of acknowledged commits: wait until a primary renews the leader key")
	// ErrUnknownMember names a member the FSM does not know.
	ErrUnknownMember = errors.New("unknown member")
	// ErrInvalidCommand means a command failed validation or decoding.
	ErrInvalidCommand = errors.New("invalid command")
	// ErrUnknownCommand is an undecodable command type.
	ErrUnknownCommand = errors.New("unknown command type")
	// ErrClosed means the store is not open.
	ErrClosed = errors.New("raft store is closed")
	// ErrSnapshotTooLarge means an FSM snapshot is over MaxSnapshotSize: it
	// is neither written nor restored.
	ErrSnapshotTooLarge = errors.New("fsm snapshot too large")
	// ErrJoinRefused means the leader will not add a node (unreachable, TLS
	// handshake refused, conflicting identity).
	ErrJoinRefused = errors.New("join refused")

	// ErrExportMalformed means an audit export file is truncated, not
	// JSON, of an unknown format, or edited outside its body.
	ErrExportMalformed = errors.New("truncated or malformed export")
	// ErrExportModified means an export's body does not match its digest
	// or its signature: it was changed after export.
	ErrExportModified = errors.New("export body modified")
	// ErrExportWrongKey means an export was signed by another key than
	// the one it is checked against.
	ErrExportWrongKey = errors.New("export signed by another key")
	// ErrExportUnsigned means a signature was required but the export
	// carries none.
	ErrExportUnsigned = errors.New("export unsigned")
)

// ExportError is one of the ErrExport* sentinels with what was found.
type ExportError struct {
	Kind   error
	Detail string
}

func (e *ExportError) Error() string { return e.Kind.Error() + ": " + e.Detail }

func (e *ExportError) Unwrap() error { return e.Kind }

func exportErrorf(kind error, format string, args ...any) error {
	return &ExportError{Kind: kind, Detail: fmt.Sprintf(format, args...)}
}

// holderLeaveError is ErrHolderLeave naming the member and the key's epoch.
type holderLeaveError struct {
	member string
	epoch  uint64
}

func (e *holderLeaveError) Error() string {
	return fmt.Sprintf("%s holds the leader key (epoch %d): switch over first", e.member, e.epoch)
}

func (e *holderLeaveError) Is(target error) bool { return target == ErrHolderLeave }
