package raftstore

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"raftgres/internal/conf"
)

// ClusterConfig is the dynamic cluster configuration, seeded from
// bootstrap.dcs when the cluster is made and changed only by SetConfig.
type ClusterConfig struct {
	// Version increases by one on every accepted SetConfig.
	Version      uint64        `json:"version"`
	TTL          time.Duration `json:"ttl"`
	LoopWait     time.Duration `json:"loop_wait"`
	RetryTimeout time.Duration `json:"retry_timeout"`
	// DetectionWindow is how long, in synchronous mode, the holder may be
	// unreachable over Raft, or renew nothing beyond its usual interval,
	// before the recorded synchronous standby is promoted without waiting
	// for the lease to run out (the commit gate makes that safe).
	DetectionWindow       time.Duration `json:"detection_window"`
	MaximumLagOnFailover  int64         `json:"maximum_lag_on_failover"`
	SynchronousMode       bool          `json:"synchronous_mode"`
	SynchronousModeStrict bool          `json:"synchronous_mode_strict"`
	// SynchronousQuorum (synchronous_mode: quorum) makes commits wait for
	// any SynchronousNodeCount of the synchronous standbys instead of one
	// named standby; the commit gate counts them (docs/design.md, "Quorum
	// commit"). Needs SynchronousMode. Protocol 2.
	SynchronousQuorum bool `json:"synchronous_quorum,omitempty"`
	// SynchronousNodeCount is k, the standbys each commit waits for in
	// quorum mode (NodeCount: zero means 1). Protocol 2.
	SynchronousNodeCount int      `json:"synchronous_node_count,omitempty"`
	Pause                bool     `json:"pause"`
	PostgreSQL           PGConfig `json:"postgresql"`
	// MemberSlotsTTL is how long the primary keeps the replication slot
	// of a member that stopped reporting (SlotsTTL: zero is the default,
	// DefaultMemberSlotsTTL). Protocol 2: set only once every voter
	// speaks it.
	MemberSlotsTTL time.Duration `json:"member_slots_ttl,omitempty"`
	// Slots are the permanent replication slots, by name; IgnoreSlots
	// the slots raftgres leaves alone. Protocol 2.
	Slots       map[string]PermanentSlot `json:"slots,omitempty"`
	IgnoreSlots []SlotMatch              `json:"ignore_slots,omitempty"`
	// StandbyCluster, when set, makes this cluster a standby of another
	// (standbycluster.go). Protocol 2.
	StandbyCluster *StandbyCluster `json:"standby_cluster,omitempty"`
}

// QuorumCommit reports whether synchronous_mode is quorum.
func (c ClusterConfig) QuorumCommit() bool { return c.SynchronousMode && c.SynchronousQuorum }

// NodeCount is synchronous_node_count: k, at least 1.
func (c ClusterConfig) NodeCount() int { return max(1, c.SynchronousNodeCount) }

// DefaultMemberSlotsTTL is member_slots_ttl when it is not set, as in
// Patroni 4.
const DefaultMemberSlotsTTL = 30 * time.Minute

// SlotsTTL is MemberSlotsTTL, or its default when unset.
func (c ClusterConfig) SlotsTTL() time.Duration {
	if c.MemberSlotsTTL <= 0 {
		return DefaultMemberSlotsTTL
	}
	return c.MemberSlotsTTL
}

// PGConfig is the cluster-wide PostgreSQL part of ClusterConfig.
type PGConfig struct {
	UsePgRewind bool              `json:"use_pg_rewind"`
	UseSlots    bool              `json:"use_slots"`
	Parameters  map[string]string `json:"parameters,omitempty"`
	PgHba       []string          `json:"pg_hba,omitempty"`
}

// DefaultClusterConfig is what bootstrap.dcs starts from. The timings are
// for a LAN: a lost primary is replaced about ttl (3s) after its last
// renewal (in synchronous mode about detection_window, 400ms, after its
// host was lost), renewals go out every RenewInterval (700ms), and the
// holder fences itself ttl/3 before anyone else may be promoted in
// asynchronous mode. Patroni's 30/10/10 suit a WAN or a slow store; raise
// ttl when Raft round trips or PostgreSQL stop times are long (see README,
// "Timing").
func DefaultClusterConfig() ClusterConfig {
	return ClusterConfig{
		TTL:                  3 * time.Second,
		LoopWait:             300 * time.Millisecond,
		RetryTimeout:         time.Second,
		DetectionWindow:      400 * time.Millisecond,
		MaximumLagOnFailover: 1 << 20,
		PostgreSQL:           PGConfig{UsePgRewind: true, UseSlots: true},
	}
}

// FenceBudget bounds how long after its lease ends a primary may still
// accept writes (the supervisor bounds every call it makes while holding a
// lease so that it is free to stop PostgreSQL within it).
const FenceBudget = 500 * time.Millisecond

// ClockRate is the assumed worst relative rate error between two hosts'
// monotonic clocks (NTP-disciplined clocks are within 5e-4).
const ClockRate = 1e-3

// MinMargin is the safety margin ttl needs: FenceBudget + 2·ClockRate·ttl.
// The holder uses ttl/3 (failover.Margin), so ttl/3 ≥ MinMargin(ttl).
func MinMargin(ttl time.Duration) time.Duration {
	return FenceBudget + time.Duration(2*ClockRate*float64(ttl))
}

// Validate checks the values one by one and their relation: as in Patroni
// loop_wait + 2·retry_timeout ≤ ttl; the holder's margin (ttl/3) covers
// fencing and clock drift (MinMargin); and a renewal sent every loop_wait
// and allowed retry_timeout lands before the lease (ttl − ttl/3) runs out.
// Paths are relative to bootstrap.dcs.
func (c ClusterConfig) Validate() error {
	var errs []error
	if c.TTL < time.Second {
		errs = append(errs, conf.Errorf("ttl", "must be at least 1s, got %s", c.TTL))
	}
	if c.LoopWait < 10*time.Millisecond {
		errs = append(errs, conf.Errorf("loop_wait", "must be at least 10ms, got %s", c.LoopWait))
	}
	if c.RetryTimeout < 10*time.Millisecond {
		errs = append(errs, conf.Errorf("retry_timeout", "must be at least 10ms, got %s", c.RetryTimeout))
	}
	if len(errs) == 0 && c.LoopWait+2*c.RetryTimeout > c.TTL {
		errs = append(errs, conf.Errorf("ttl", "must be at least loop_wait + 2*retry_timeout (%s), got %s",
			c.LoopWait+2*c.RetryTimeout, c.TTL))
	}
	if len(errs) == 0 && c.TTL/3 < MinMargin(c.TTL) {
		errs = append(errs, conf.Errorf("ttl", "%s leaves a safety margin (ttl/3) of %s, under the %s needed to fence "+
			"PostgreSQL (%s) and absorb clock drift: use ttl ≥ 1.6s", c.TTL, c.TTL/3, MinMargin(c.TTL), FenceBudget))
	}
	if len(errs) == 0 && c.LoopWait+c.RetryTimeout > c.TTL-c.TTL/3 {
		errs = append(errs, conf.Errorf("loop_wait", "loop_wait + retry_timeout (%s) must not exceed the lease (ttl − ttl/3 = %s), "+
			"or a primary would fence itself between two healthy renewals", c.LoopWait+c.RetryTimeout, c.TTL-c.TTL/3))
	}
	if c.DetectionWindow != 0 && (c.DetectionWindow < 50*time.Millisecond || c.DetectionWindow > c.TTL) {
		errs = append(errs, conf.Errorf("detection_window", "must be between 50ms and ttl (%s), got %s", c.TTL, c.DetectionWindow))
	}
	if c.MaximumLagOnFailover < 0 {
		errs = append(errs, conf.Errorf("maximum_lag_on_failover", "must not be negative"))
	}
	if c.MemberSlotsTTL < 0 {
		errs = append(errs, conf.Errorf("member_slots_ttl", "must not be negative"))
	}
	if c.SynchronousModeStrict && !c.SynchronousMode {
		errs = append(errs, conf.Errorf("synchronous_mode_strict", "needs synchronous_mode: true"))
	}
	if c.SynchronousQuorum && !c.SynchronousMode {
		errs = append(errs, conf.Errorf("synchronous_mode", "quorum commit needs synchronous mode"))
	}
	switch {
	case c.SynchronousNodeCount < 0 || c.SynchronousNodeCount > MaxSynchronousNodeCount:
		errs = append(errs, conf.Errorf("synchronous_node_count", "must be between 1 and %d, got %d",
			MaxSynchronousNodeCount, c.SynchronousNodeCount))
	case c.SynchronousNodeCount > 1 && !c.SynchronousQuorum:
		errs = append(errs, conf.Errorf("synchronous_node_count", "more than 1 needs synchronous_mode: quorum "+
			"(otherwise one standby is synchronous)"))
	}
	if err := c.validateSlots(); err != nil {
		errs = append(errs, err)
	}
	if sc := c.StandbyCluster; sc != nil {
		if err := sc.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// MaxSynchronousNodeCount bounds synchronous_node_count: a cluster has at
// most 9 voters, so at most 8 standbys (and non-voters rarely more).
const MaxSynchronousNodeCount = 16

// Detection is DetectionWindow, or its default for a state written before
// the setting existed (zero).
func (c ClusterConfig) Detection() time.Duration {
	if c.DetectionWindow == 0 {
		return DefaultClusterConfig().DetectionWindow
	}
	return c.DetectionWindow
}

// RenewInterval is how often the holder renews its lease: as seldom as
// allows a renewal, sent a loop_wait late and given retry_timeout, to land
// before the lease (ttl − ttl/3) ends; never more often than loop_wait.
// Each renewal is a Raft commit (a disk flush on every host), so this is
// most of an idle cluster's cost.
func (c ClusterConfig) RenewInterval() time.Duration {
	return max(c.LoopWait, c.TTL-c.TTL/3-c.RetryTimeout-c.LoopWait)
}

// ReportInterval is how often a member reports a status that did not
// change (a changed one is reported at once): every 1.5·ttl. Each report
// is a Raft commit (a disk flush on every host); at ttl/2 they were most
// of an idle cluster's commits, at ttl a third of them.
func (c ClusterConfig) ReportInterval() time.Duration {
	return max(c.LoopWait, c.TTL*3/2)
}

// StaleAfter is how long a member's report may stay unchanged, on the
// reader's clock, before the member no longer counts as fresh: it is
// then not elected, not chosen as a synchronous standby, not handed Raft
// leadership. 2·ttl: a report interval plus ttl/2, so that one report
// late by a Raft election (about 1s) does not count a live member out.
// The coordinator also counts out at once a member whose Raft heartbeats
// fail.
func (c ClusterConfig) StaleAfter() time.Duration {
	return max(c.ReportInterval()+c.TTL/2, 2*c.TTL)
}

// Clone returns a deep copy.
func (c ClusterConfig) Clone() ClusterConfig {
	c.PostgreSQL.Parameters = maps.Clone(c.PostgreSQL.Parameters)
	c.PostgreSQL.PgHba = slices.Clone(c.PostgreSQL.PgHba)
	c.Slots = maps.Clone(c.Slots)
	c.IgnoreSlots = slices.Clone(c.IgnoreSlots)
	if sc := c.StandbyCluster; sc != nil {
		cp := *sc
		cp.CreateReplicaMethods = slices.Clone(sc.CreateReplicaMethods)
		c.StandbyCluster = &cp
	}
	return c
}

// Tags are a member's static properties, from the tags: section.
type Tags struct {
	NoFailover       bool `json:"nofailover,omitempty"`
	NoLoadBalance    bool `json:"noloadbalance,omitempty"`
	CloneFrom        bool `json:"clonefrom,omitempty"`
	NoSync           bool `json:"nosync,omitempty"`
	FailoverPriority int  `json:"failover_priority"`
}

// DefaultTags is what an empty tags: section means.
func DefaultTags() Tags { return Tags{FailoverPriority: 1} }

// Validate checks the tags.
func (t Tags) Validate() error {
	if t.FailoverPriority < 0 {
		return conf.Errorf("failover_priority", "must not be negative, got %d", t.FailoverPriority)
	}
	return nil
}

// Member is one host of the cluster as the FSM knows it.
type Member struct {
	Name     string `json:"name"`
	APIAddr  string `json:"api_addr"`
	PGAddr   string `json:"pg_addr,omitempty"`
	RaftAddr string `json:"raft_addr,omitempty"`
	Tags     Tags   `json:"tags"`
	// Status is the last status the member reported (zero until it does).
	Status MemberStatus `json:"status"`
	// Registered is the proposer's time of the last RegisterMember.
	Registered time.Time `json:"registered"`
	// Agent is the release the member's agent last registered with.
	Agent AgentVersion `json:"agent,omitzero"`
	// Slots are the positions of the permanent slots on the member, as
	// of its last status report (protocol 2).
	Slots []SlotPosition `json:"slots,omitempty"`
	// LeaseOver, when set, says the positions in Status were read after
	// the lease of the key at that epoch and revision had ended on the
	// member's clock (or after that key was released): in quorum mode
	// an election counts such reports (State.QuorumReady). From the
	// member's last status report (protocol 2).
	LeaseOver *KeyRef `json:"lease_over,omitempty"`
	// LeaseOverLSN is the position (PositionLSN) the report that set
	// LeaseOver carried. Both stay through later reports without one, until
	// the key changes: a standby restarted after it reported shows no
	// received position for a while, yet holds the WAL it had.
	LeaseOverLSN uint64 `json:"lease_over_lsn,omitempty"`
}

// KeyRef names one state of the leader key: an epoch and a revision
// (LeaderKey.Epoch, LeaderKey.Rev).
type KeyRef struct {
	Epoch uint64 `json:"epoch"`
	Rev   uint64 `json:"rev"`
}

// Ref is the key's current epoch and revision.
func (k LeaderKey) Ref() KeyRef { return KeyRef{Epoch: k.Epoch, Rev: k.Rev} }

// LastPrimaryLSN is the end of the last primary's WAL as far as the store
// knows: the furthest position its holder reported at this epoch
// (LeaderKey.LSN, kept across a release), or the holder's last report
// when that is further (state restored from a log older than the field).
// In a standby cluster, how far the standby leader had received.
func (s State) LastPrimaryLSN() uint64 {
	lsn := s.Leader.LSN
	if h, ok := s.Members[s.Leader.Holder]; ok {
		lsn = max(lsn, s.leaderPosition(h.Status))
	}
	return lsn
}

// leaderPosition is what a report of the key's holder says of the end of
// the cluster's WAL: PositionLSN, but in a standby cluster only the
// standby leader's (a demoted primary's own WAL past the source's fork is
// rewound away, and must not count against its replicas).
func (s State) leaderPosition(st MemberStatus) uint64 {
	if s.Config.IsStandbyCluster() && st.Role != RoleStandbyLeader {
		return 0
	}
	return PositionLSN(st)
}

// AgentVersion is a member agent's release and the protocol (the commands
// and fields of the replicated state) it understands.
type AgentVersion struct {
	Version  string `json:"version,omitempty"`
	Protocol int    `json:"protocol,omitempty"`
}

// Role is what a member's PostgreSQL is, as its supervisor reports it.
type Role string

// Roles a member reports.
const (
	RolePrimary Role = "primary"
	RoleReplica Role = "replica"
	// RoleStandbyLeader is the leader-key holder of a standby cluster: a
	// replica of the source cluster that the other members follow.
	RoleStandbyLeader Role = "standby_leader"
	RoleUninitialized Role = "uninitialized" // no data directory yet
)

// PGState is whether a member's PostgreSQL runs, or what is being done to
// it, as its supervisor reports it.
type PGState string

// States a member reports (StateRecovering is written by Recover).
const (
	StateRunning   PGState = "running"
	StateStopped   PGState = "stopped"
	StateRewinding PGState = "rewinding"
	StateCloning   PGState = "cloning"
)

// MemberStatus is what a member's supervisor last observed of its PostgreSQL.
type MemberStatus struct {
	Role           Role      `json:"role,omitempty"`
	State          PGState   `json:"state,omitempty"`
	Timeline       uint32    `json:"timeline,omitempty"`
	WrittenLSN     uint64    `json:"written_lsn,omitempty"`
	ReceivedLSN    uint64    `json:"received_lsn,omitempty"`
	ReplayedLSN    uint64    `json:"replayed_lsn,omitempty"`
	PendingRestart bool      `json:"pending_restart,omitempty"`
	Version        string    `json:"version,omitempty"`
	SystemID       string    `json:"system_id,omitempty"`
	ReportedAt     time.Time `json:"reported_at"`
	// SourceLSN is, on a standby leader streaming from its source cluster,
	// the source's end of WAL as last heard from it (its walreceiver's
	// latest_end_lsn), and SourceAt when the source sent it. Protocol 2.
	SourceLSN uint64    `json:"source_lsn,omitempty"`
	SourceAt  time.Time `json:"source_at,omitzero"`
}

// LeaderKey names the PostgreSQL primary. Epoch increases on every change of
// holder (including a release); Rev is the Raft index of the last acquire or
// renewal. Holder == "" means no primary.
type LeaderKey struct {
	Holder string    `json:"holder,omitempty"`
	Epoch  uint64    `json:"epoch"`
	Rev    uint64    `json:"rev"`
	Since  time.Time `json:"since,omitzero"`
	// RenewedAt is the proposer's time (At) of the last acquire or renewal.
	// A release keeps the released holder's: it is when the last primary
	// last renewed. Zero in state restored from a snapshot older than it.
	RenewedAt time.Time `json:"renewed_at,omitzero"`
	// Renewed is set by the holder's first renewal at this epoch. A holder
	// acknowledges commits only under a lease, and its lease starts with a
	// renewal: a holder that never renewed never acknowledged anything, so
	// the members that held every acknowledged commit before it took the
	// key (Sync.Inherited) still do.
	Renewed bool `json:"renewed,omitempty"`
	// TTL is the ttl the holder's last renewal was made under (its lease
	// ends ttl − margin after that renewal was sent). A ttl lowered later
	// does not shorten a lease already given: the coordinator waits for
	// LeaseTTL, the longer of the two. Zero until the first renewal, and in
	// logs written before it existed.
	TTL time.Duration `json:"ttl,omitempty"`
	// MaxTTL is the longest ttl any renewal at this epoch was made under:
	// a coordinator that takes office counts the lease down from then
	// with it (State.LeaseTTL).
	MaxTTL time.Duration `json:"max_ttl,omitempty"`
	// LSN is the furthest WAL position the holder reported at this epoch
	// (PositionLSN), kept when the key is released: the
	// end of the last primary's WAL, which maximum_lag_on_failover is
	// measured against (State.LastPrimaryLSN), as Patroni's
	// /optime/leader. A holder's report never lowers it, so a restarted
	// agent's first report (PostgreSQL not yet running) does not erase
	// what a lagging replica is missing. Zero in logs written before it
	// existed.
	LSN uint64 `json:"lsn,omitempty"`
}

// SyncState is, in synchronous mode, the record of who holds every
// commit acknowledged so far: the primary it was recorded for, the
// standbys PostgreSQL confirms as synchronous for it, and, until that
// primary's first renewal, the members that held every acknowledged commit
// when it took the key. Only these may be promoted (State.Electable). It
// and the leader key change together: an election resets it to the new
// holder with no standbys, and every change compare-and-sets on it.
type SyncState struct {
	Primary  string   `json:"primary,omitempty"`
	Standbys []string `json:"standbys,omitempty"`
	// Inherited: the members electable when Primary took the key (the
	// replaced holder among them). They stay electable while the key's
	// holder has not renewed (LeaderKey.Renewed), and the first renewal
	// clears them.
	Inherited []string `json:"inherited,omitempty"`
	// Quorum, in quorum mode, is q: every commit acknowledged since the
	// record was written is on at least q of Standbys, and only on q of
	// them (0 < q < len(Standbys): the rules of State.QuorumReady apply).
	// Zero means every standby holds every commit, as outside quorum mode.
	Quorum int `json:"quorum,omitempty"`
	// Rev is the Raft index of the record's last change. SetSync's
	// compare-and-set includes it, so a SetSync whose reply was lost can
	// never commit after a later one made from the same view, even one
	// that changed nothing (the holder confirms the record that way
	// before it acts on an uncertain outcome).
	Rev uint64 `json:"rev,omitempty"`
}

// Equal reports whether s and o are the same record (members and Rev).
func (s SyncState) Equal(o SyncState) bool {
	return s.Primary == o.Primary && slices.Equal(s.Standbys, o.Standbys) && slices.Equal(s.Inherited, o.Inherited) &&
		s.Quorum == o.Quorum && s.Rev == o.Rev
}

// NoRecord reports whether nothing is recorded: no primary ever recorded
// a synchronous state in this stretch of synchronous mode (a new cluster,
// synchronous mode just turned on, or a recovery that gave up the record).
// Any member may then be elected.
func (s SyncState) NoRecord() bool {
	return s.Primary == "" && len(s.Standbys) == 0 && len(s.Inherited) == 0
}

// FailoverKind says whether a request is a switchover (the holder hands
// the key over) or a manual failover (the coordinator elects the named
// candidate).
type FailoverKind string

// The kinds of FailoverRequest.
const (
	KindSwitchover FailoverKind = "switchover"
	KindFailover   FailoverKind = "failover"
)

// FailoverRequest is a pending manual failover or switchover.
type FailoverRequest struct {
	Kind        FailoverKind `json:"kind"`
	From        string       `json:"from,omitempty"`
	To          string       `json:"to,omitempty"`
	ScheduledAt time.Time    `json:"scheduled_at,omitzero"`
	RequestedBy string       `json:"requested_by,omitempty"`
	RequestedAt time.Time    `json:"requested_at"`
	// Hard makes a failover a drill of a crash: the holder named in From
	// stops PostgreSQL immediate (no shutdown checkpoint, no hand-over)
	// and releases the key; the ordinary election then decides, without
	// From, by the replicas' own positions. Only with Kind failover, From
	// the current holder and no ScheduledAt.
	Hard bool `json:"hard,omitempty"`
}

// Event kinds recorded in History.
const (
	EventBootstrap    = "bootstrap"
	EventInitialize   = "initialize"
	EventLeader       = "leader"
	EventMemberJoin   = "member_join"
	EventMemberLeave  = "member_leave"
	EventConfig       = "config"
	EventPause        = "pause"
	EventResume       = "resume"
	EventFailoverReq  = "failover_request"
	EventFailoverDone = "failover_cleared"
)

// MaxHistory is how many events History keeps: the newest MaxHistory, older
// ones are dropped as new ones are appended (so the state, and a snapshot of
// it, stays small). For a longer record, keep `raftgres snapshot export`
// files, which carry History.
const MaxHistory = 1000

// Event is one entry of History.
type Event struct {
	Index  uint64    `json:"raft_index"`
	At     time.Time `json:"at"`
	Kind   string    `json:"kind"`
	Actor  string    `json:"actor,omitempty"`
	Member string    `json:"member,omitempty"`
	Epoch  uint64    `json:"epoch,omitempty"`
	Reason string    `json:"reason,omitempty"`
	// The fields below are set on leader events (EventLeader) only. Events
	// from before they existed have them empty.

	// Cause is the kind of leader change (a Cause* constant).
	Cause string `json:"cause,omitempty"`
	// Choice says why the election chose Member.
	Choice string `json:"choice,omitempty"`
	// PrevRenewedAt is the previous key's RenewedAt: when the last primary
	// last renewed (zero when there was none: bootstrap).
	PrevRenewedAt time.Time `json:"prev_renewed_at,omitzero"`
	// FirstRenewalAt is the At of the new holder's first committed renewal
	// at Epoch (zero until it happens, and for a release).
	FirstRenewalAt time.Time `json:"first_renewal_at,omitzero"`
}

// Duration is how long the leader change took, from the previous primary's
// last renewal to the new holder's first acknowledged renewal (proposers'
// clocks, so it carries their offset; never negative). ok is false when the
// event is not a leader change with both ends known.
func (e Event) Duration() (d time.Duration, ok bool) {
	if e.Kind != EventLeader || e.Member == "" || e.PrevRenewedAt.IsZero() || e.FirstRenewalAt.IsZero() {
		return 0, false
	}
	return max(e.FirstRenewalAt.Sub(e.PrevRenewedAt), 0), true
}

// State is everything the FSM holds. It is a plain value rebuilt only by
// applying committed commands; Store.State returns a deep copy.
type State struct {
	// Index is the Raft index of the last applied entry that changed State.
	Index      uint64             `json:"index"`
	Config     ClusterConfig      `json:"config"`
	Bootstrap  bool               `json:"bootstrapped"`
	Initialize string             `json:"initialize,omitempty"`
	Members    map[string]*Member `json:"members"`
	Leader     LeaderKey          `json:"leader"`
	Sync       SyncState          `json:"sync"`
	Failover   *FailoverRequest   `json:"failover,omitempty"`
	// History holds the newest MaxHistory events, oldest first.
	History []Event `json:"history"`
}

// NewState returns an empty State.
func NewState() State {
	return State{Members: map[string]*Member{}, History: []Event{}}
}

// Clone returns a deep copy of s.
func (s State) Clone() State {
	out := s
	out.Config = s.Config.Clone()
	out.Members = make(map[string]*Member, len(s.Members))
	for k, m := range s.Members {
		c := *m
		c.Slots = slices.Clone(m.Slots)
		if m.LeaseOver != nil {
			r := *m.LeaseOver
			c.LeaseOver = &r
		}
		out.Members[k] = &c
	}
	out.Sync.Standbys = slices.Clone(s.Sync.Standbys)
	out.Sync.Inherited = slices.Clone(s.Sync.Inherited)
	if s.Failover != nil {
		f := *s.Failover
		out.Failover = &f
	}
	// History (up to MaxHistory events) is shared, not copied: the FSM
	// never writes into an array it has handed out (appendEvent), and the
	// clipped capacity keeps a caller's append from writing into it. Treat
	// it as read-only.
	out.History = slices.Clip(s.History)
	if out.History == nil {
		out.History = []Event{}
	}
	return out
}

// MemberNames returns the member names in sorted order.
func (s State) MemberNames() []string {
	return slices.Sorted(maps.Keys(s.Members))
}

// String is a one-line summary for logs.
func (s State) String() string {
	return fmt.Sprintf("index=%d members=%d leader=%q epoch=%d config_version=%d",
		s.Index, len(s.Members), s.Leader.Holder, s.Leader.Epoch, s.Config.Version)
}
