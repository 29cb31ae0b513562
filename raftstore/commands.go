package raftstore

import (
	"fmt"
	"strings"
	"time"
)

// CommandType is the first byte of every log entry. Zero is invalid; values
// are appended and never reused. A type with SkipUnknownFlag set may be
// ignored by an older binary that does not know it.
type CommandType uint8

// SkipUnknownFlag marks a command type an older binary may skip.
const SkipUnknownFlag CommandType = 0x80

// Command types. Append only.
const (
	CmdBootstrap      CommandType = 1
	CmdSetConfig      CommandType = 2
	CmdInitialize     CommandType = 3
	CmdRegisterMember CommandType = 4
	CmdReportStatus   CommandType = 5
	CmdRemoveMember   CommandType = 6
	CmdSetLeader      CommandType = 7
	CmdRenewLeader    CommandType = 8
	CmdSetSync        CommandType = 9
	CmdSetFailover    CommandType = 10
	CmdSetPause       CommandType = 11
	// CmdBarrier changes nothing: committed and applied locally, it shows
	// that this member's store has applied everything committed before
	// it (a linearizable read). Older binaries skip it.
	CmdBarrier CommandType = 12 | SkipUnknownFlag
)

// Command is a typed, versioned FSM command.
type Command interface {
	Type() CommandType
	// Validate checks the command on its own: before it is proposed
	// (Encode) and when it arrives from a peer (Decode). The FSM never runs
	// it on a committed entry (see decodeEntry).
	Validate() error
}

// Bootstrap seeds the cluster configuration once, when the cluster is made.
type Bootstrap struct {
	Config ClusterConfig `json:"config"`
	Actor  string        `json:"actor"`
	At     time.Time     `json:"at"`
}

// SetConfig replaces the cluster configuration if its version is still
// PrevVersion; the new version is PrevVersion+1.
type SetConfig struct {
	Config      ClusterConfig `json:"config"`
	PrevVersion uint64        `json:"prev_version"`
	Actor       string        `json:"actor"`
	At          time.Time     `json:"at"`
}

// SetPause turns maintenance mode on or off (a config change with its own
// history event).
type SetPause struct {
	Pause bool      `json:"pause"`
	Actor string    `json:"actor"`
	At    time.Time `json:"at"`
}

// Initialize records the PostgreSQL system identifier, once.
type Initialize struct {
	SystemID string    `json:"system_id"`
	Actor    string    `json:"actor"`
	At       time.Time `json:"at"`
}

// RegisterMember adds a member or updates its addresses and tags.
type RegisterMember struct {
	Name     string    `json:"name"`
	APIAddr  string    `json:"api_addr"`
	PGAddr   string    `json:"pg_addr,omitempty"`
	RaftAddr string    `json:"raft_addr,omitempty"`
	Tags     Tags      `json:"tags"`
	At       time.Time `json:"at"`
	// Agent is the registering binary's release and the protocol it
	// speaks (Protocol); an agent registers again at every start.
	Agent AgentVersion `json:"agent,omitzero"`
}

// ReportStatus records a member's observed PostgreSQL status.
type ReportStatus struct {
	Name   string       `json:"name"`
	Status MemberStatus `json:"status"`
	// Slots are where the permanent slots stand on the member (protocol
	// 2): the primary's positions are what every replica keeps its copies
	// near.
	Slots []SlotPosition `json:"slots,omitempty"`
	// LeaseOver says Status was read after the lease of this key state
	// ended on the member's clock, or after it was released (Member.LeaseOver;
	// protocol 2).
	LeaseOver *KeyRef `json:"lease_over,omitempty"`
}

// RemoveMember forgets a member (before it leaves the Raft configuration).
// It is refused (ErrHolderLeave) for the member that holds the leader key.
type RemoveMember struct {
	Name   string    `json:"name"`
	Actor  string    `json:"actor"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// SetLeader changes the leader key holder ("" releases it) if the key's
// epoch and revision are still PrevEpoch and PrevRev. The new epoch is
// PrevEpoch+1 and the new revision the entry's Raft index.
type SetLeader struct {
	Holder    string `json:"holder"`
	PrevEpoch uint64 `json:"prev_epoch"`
	PrevRev   uint64 `json:"prev_rev"`
	Reason    string `json:"reason"`
	// Cause is one of the Cause* constants; empty lets Apply derive it
	// (DefaultCause).
	Cause string `json:"cause,omitempty"`
	// Choice says why the election chose Holder (failover.Elect fills it).
	Choice string `json:"choice,omitempty"`
	// Rules, when RulesSyncKey, makes the apply check Holder against the
	// synchronous record (State.Electable) and reset the record for it.
	// Every proposer of this version sets it.
	Rules int       `json:"rules,omitempty"`
	Actor string    `json:"actor"`
	At    time.Time `json:"at"`
}

// Causes of a leader change (SetLeader.Cause, Event.Cause). A metric label
// and a History field: append, never rename.
const (
	// CauseBootstrap: the member that initialised the cluster takes the key.
	CauseBootstrap = "bootstrap"
	// CauseElection: the coordinator gives a key nobody held to a member.
	CauseElection = "election"
	// CauseFailover: the coordinator replaces a holder whose lease ran out.
	CauseFailover = "failover"
	// CauseManualFailover: the coordinator promotes the candidate an
	// operator named (POST /failover, raftgres failover).
	CauseManualFailover = "manual_failover"
	// CauseSwitchover: the holder hands the key to a caught-up replica.
	CauseSwitchover = "switchover"
	// CauseRelease: the holder gives the key up (Holder "").
	CauseRelease = "release"
)

// maxChoiceLen bounds SetLeader.Choice (it becomes a metric label value).
const maxChoiceLen = 256

// DefaultCause is the cause Apply records for a SetLeader without one
// (from code that did not set it, or a log written before Cause existed):
// a release when the new holder is "", an election when nobody held the
// key, else a failover.
func DefaultCause(prevHolder, holder string) string {
	switch {
	case holder == "":
		return CauseRelease
	case prevHolder == "":
		return CauseElection
	}
	return CauseFailover
}

// RenewLeader renews the key if Holder still holds it at Epoch; the
// revision becomes the entry's Raft index.
type RenewLeader struct {
	Holder string    `json:"holder"`
	Epoch  uint64    `json:"epoch"`
	At     time.Time `json:"at"`
	// TTL is the ttl the holder counts its lease with (LeaderKey.TTL).
	TTL time.Duration `json:"ttl,omitempty"`
}

// SetSync records the synchronous standbys if the leader key epoch is still
// Epoch (so a stale primary cannot rewrite it) and, when Prev is set, the
// record is still *Prev (so a reply lost and retried, or a stale local
// view, can never restore an older record).
type SetSync struct {
	Primary  string   `json:"primary"`
	Standbys []string `json:"standbys"`
	// Quorum is SyncState.Quorum: in quorum mode, how many of Standbys
	// each acknowledged commit is on (protocol 2).
	Quorum int        `json:"quorum,omitempty"`
	Epoch  uint64     `json:"epoch"`
	Prev   *SyncState `json:"prev,omitempty"`
}

// SetFailover records a pending failover/switchover, or clears it when
// Request is nil.
type SetFailover struct {
	Request *FailoverRequest `json:"request"`
	// CAS makes it a compare-and-set: a new Request only when none is
	// pending; a clear (Request nil) only while the pending one is Prev.
	CAS    bool             `json:"cas,omitempty"`
	Prev   *FailoverRequest `json:"prev,omitempty"`
	Actor  string           `json:"actor"`
	Reason string           `json:"reason,omitempty"`
	At     time.Time        `json:"at"`
}

func (Bootstrap) Type() CommandType      { return CmdBootstrap }
func (SetConfig) Type() CommandType      { return CmdSetConfig }
func (SetPause) Type() CommandType       { return CmdSetPause }
func (Initialize) Type() CommandType     { return CmdInitialize }
func (RegisterMember) Type() CommandType { return CmdRegisterMember }
func (ReportStatus) Type() CommandType   { return CmdReportStatus }
func (RemoveMember) Type() CommandType   { return CmdRemoveMember }
func (SetLeader) Type() CommandType      { return CmdSetLeader }
func (RenewLeader) Type() CommandType    { return CmdRenewLeader }
func (SetSync) Type() CommandType        { return CmdSetSync }
func (SetFailover) Type() CommandType    { return CmdSetFailover }

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidCommand, fmt.Sprintf(format, args...))
}

const maxNameLen = 128

// GateName is the application_name of the commit gate's replication
// connection (pgmanager.GateName). PostgreSQL matches
// synchronous_standby_names case-insensitively, so a member named like it
// in any letter case would count as the gate: no member may be.
const GateName = "raftgres_fence"

// CheckMemberName checks a member name: what the FSM accepts, and what
// check-config, the agent and join refuse before that.
func CheckMemberName(name string) error { return checkName("member name", name) }

func checkName(what, name string) error {
	if name == "" {
		return invalid("%s is empty", what)
	}
	if len(name) > maxNameLen {
		return invalid("%s is longer than %d bytes", what, maxNameLen)
	}
	if strings.EqualFold(name, GateName) {
		return invalid("%s %q is the commit gate's replication name (in any letter case): choose another", what, name)
	}
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		default:
			return invalid("%s %q has a character outside [A-Za-z0-9._-]", what, name)
		}
	}
	return nil
}

func (c Bootstrap) Validate() error {
	if err := c.Config.Validate(); err != nil {
		return invalid("bootstrap config: %v", err)
	}
	return nil
}

func (c SetConfig) Validate() error {
	if err := c.Config.Validate(); err != nil {
		return invalid("config: %v", err)
	}
	return nil
}

func (c SetPause) Validate() error { return nil }

func (c Initialize) Validate() error {
	if c.SystemID == "" {
		return invalid("system_id is empty")
	}
	for _, r := range c.SystemID {
		if r < '0' || r > '9' {
			return invalid("system_id %q is not a decimal number", c.SystemID)
		}
	}
	return nil
}

func (c RegisterMember) Validate() error {
	if err := checkName("member name", c.Name); err != nil {
		return err
	}
	if c.APIAddr == "" {
		return invalid("api_addr of %s is empty", c.Name)
	}
	return nil
}

func (c ReportStatus) Validate() error { return checkName("member name", c.Name) }

func (c RemoveMember) Validate() error { return checkName("member name", c.Name) }

func (c SetLeader) Validate() error {
	if c.Holder != "" {
		if err := checkName("holder", c.Holder); err != nil {
			return err
		}
	}
	switch c.Cause {
	case "", CauseBootstrap, CauseElection, CauseFailover, CauseManualFailover, CauseSwitchover, CauseRelease:
	default:
		return invalid("leader change cause %q is unknown", c.Cause)
	}
	if (c.Holder == "") != (c.Cause == CauseRelease) && c.Cause != "" {
		return invalid("leader change cause %q with holder %q: only a release (holder \"\") has cause %s",
			c.Cause, c.Holder, CauseRelease)
	}
	if len(c.Choice) > maxChoiceLen {
		return invalid("choice is longer than %d bytes", maxChoiceLen)
	}
	if c.Rules < 0 || c.Rules > RulesSyncKey {
		return invalid("leader change rules %d unknown", c.Rules)
	}
	return nil
}

func (c RenewLeader) Validate() error {
	if err := checkName("holder", c.Holder); err != nil {
		return err
	}
	if c.Epoch == 0 {
		return invalid("renewal of %s names epoch 0", c.Holder)
	}
	if c.TTL < 0 {
		return invalid("renewal of %s names a negative ttl", c.Holder)
	}
	return nil
}

func (c SetSync) Validate() error {
	if c.Primary != "" {
		if err := checkName("sync primary", c.Primary); err != nil {
			return err
		}
	}
	for _, s := range c.Standbys {
		if err := checkName("sync standby", s); err != nil {
			return err
		}
	}
	if c.Quorum < 0 || c.Quorum > len(c.Standbys) {
		return invalid("sync quorum %d is not between 0 and the %d standbys", c.Quorum, len(c.Standbys))
	}
	if c.Prev != nil {
		for _, s := range append(append([]string{c.Prev.Primary}, c.Prev.Standbys...), c.Prev.Inherited...) {
			if s == "" {
				continue
			}
			if err := checkName("previous sync member", s); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c SetFailover) Validate() error {
	r := c.Request
	if r == nil {
		if c.Prev != nil && !c.CAS {
			return invalid("prev without cas")
		}
		return nil
	}
	if c.Prev != nil {
		return invalid("a new request compares against no pending request: prev must be empty")
	}
	if r.Kind != KindSwitchover && r.Kind != KindFailover {
		return invalid("failover kind %q is not switchover or failover", r.Kind)
	}
	if r.From == "" && r.To == "" {
		return invalid("%s names neither from nor to", r.Kind)
	}
	if r.Hard && (r.Kind != KindFailover || r.From == "" || !r.ScheduledAt.IsZero()) {
		return invalid("a hard failover is a failover naming its primary in from, not scheduled")
	}
	for _, n := range []string{r.From, r.To} {
		if n != "" {
			if err := checkName("member", n); err != nil {
				return err
			}
		}
	}
	return nil
}

// Barrier changes nothing (CmdBarrier).
type Barrier struct {
	Actor string `json:"actor,omitempty"`
}

func (Barrier) Type() CommandType { return CmdBarrier }

// Validate checks the actor's name, if any.
func (c Barrier) Validate() error {
	if c.Actor != "" && len(c.Actor) > maxNameLen {
		return invalid("barrier actor is longer than %d bytes", maxNameLen)
	}
	return nil
}

// String names the command type.
func (t CommandType) String() string {
	names := map[CommandType]string{
		CmdBootstrap: "bootstrap", CmdSetConfig: "set_config", CmdInitialize: "initialize",
		CmdRegisterMember: "register_member", CmdReportStatus: "report_status", CmdRemoveMember: "remove_member",
		CmdSetLeader: "set_leader", CmdRenewLeader: "renew_leader", CmdSetSync: "set_sync",
		CmdSetFailover: "set_failover", CmdSetPause: "set_pause", CmdBarrier: "barrier",
	}
	if n, ok := names[t]; ok {
		return n
	}
	return fmt.Sprintf("type_%d", uint8(t))
}
