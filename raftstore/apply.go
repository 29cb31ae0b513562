package raftstore

import (
	"fmt"
	"slices"
	"time"
)

// ApplyResult is what applying one committed command produced. A refused
// compare-and-set is a normal, deterministic result carried in Err.
type ApplyResult struct {
	Index uint64
	Err   error
}

// Apply applies cmd, committed at index, to s with the FSM's own rules:
// what every member's store does with a committed entry. Fakes and the
// simulator use it so that they can never drift from the real rules.
// s must own its maps and slices (State.Clone).
func Apply(s *State, index uint64, cmd Command) error { return applyCommand(s, index, cmd) }

// applyCommand applies cmd, committed at index, to s. It is deterministic:
// it reads no clock, randomness, network or disk; times come from the
// proposer inside the command. On error s is unchanged.
func applyCommand(s *State, index uint64, cmd Command) error {
	var err error
	switch c := cmd.(type) {
	case Bootstrap:
		err = applyBootstrap(s, index, c)
	case SetConfig:
		err = applySetConfig(s, index, c)
	case SetPause:
		applySetPause(s, index, c)
	case Initialize:
		err = applyInitialize(s, index, c)
	case RegisterMember:
		applyRegisterMember(s, index, c)
	case ReportStatus:
		err = applyReportStatus(s, c)
	case RemoveMember:
		err = applyRemoveMember(s, index, c)
	case SetLeader:
		err = applySetLeader(s, index, c)
	case RenewLeader:
		err = applyRenewLeader(s, index, c)
	case SetSync:
		err = applySetSync(s, index, c)
	case SetFailover:
		err = applySetFailover(s, index, c)
	case Barrier:
	default:
		return fmt.Errorf("%w %T", ErrUnknownCommand, cmd)
	}
	if err == nil {
		s.Index = index
	}
	return err
}

// appendEvent records ev in History and drops the oldest events beyond
// MaxHistory. Trimming depends only on the log, so every node keeps the same
// events.
//
// History's array is shared with every State copy handed out (Clone shares
// it), so it is never written in place: appending to a clipped slice
// always makes a new array, and stampFirstRenewal copies before writing.
func appendEvent(s *State, ev Event) {
	s.History = append(slices.Clip(s.History), ev)
	if over := len(s.History) - MaxHistory; over > 0 {
		s.History = slices.Delete(s.History, 0, over)
	}
}

func applyBootstrap(s *State, index uint64, c Bootstrap) error {
	if s.Bootstrap {
		return ErrAlreadyBootstrapped
	}
	s.Bootstrap = true
	s.Config = c.Config.Clone()
	s.Config.Version = 1
	appendEvent(s, Event{Index: index, At: c.At, Kind: EventBootstrap, Actor: c.Actor,
		Reason: "cluster config seeded from bootstrap.dcs"})
	return nil
}

func applySetConfig(s *State, index uint64, c SetConfig) error {
	if s.Config.Version != c.PrevVersion {
		return fmt.Errorf("%w: expected version %d, have %d", ErrVersionMismatch, c.PrevVersion, s.Config.Version)
	}
	if s.Config.StandbyCluster != nil && c.Config.StandbyCluster == nil {
		// promote-cluster: the standby leader has never acknowledged a
		// commit, nor has anyone in this cluster; a record kept from
		// before a demote-cluster names a past that pg_rewind erased.
		s.Sync = SyncState{Rev: index}
	}
	if s.Config.StandbyCluster == nil && c.Config.StandbyCluster != nil {
		// demote-cluster: the primary's WAL past the source's fork is
		// rewound away; the source's position is the measure from now on.
		s.Leader.LSN = 0
	}
	s.Config = c.Config.Clone()
	s.Config.Version = c.PrevVersion + 1
	s.Bootstrap = true
	appendEvent(s, Event{Index: index, At: c.At, Kind: EventConfig, Actor: c.Actor,
		Reason: fmt.Sprintf("config version %d", s.Config.Version)})
	return nil
}

func applySetPause(s *State, index uint64, c SetPause) {
	if s.Config.Pause == c.Pause {
		return
	}
	s.Config.Pause = c.Pause
	s.Config.Version++
	kind := EventResume
	if c.Pause {
		kind = EventPause
	}
	appendEvent(s, Event{Index: index, At: c.At, Kind: kind, Actor: c.Actor})
}

func applyInitialize(s *State, index uint64, c Initialize) error {
	switch s.Initialize {
	case c.SystemID:
		return nil
	case "":
		s.Initialize = c.SystemID
		appendEvent(s, Event{Index: index, At: c.At, Kind: EventInitialize, Actor: c.Actor,
			Member: c.Actor, Reason: "system identifier " + c.SystemID})
		return nil
	default:
		return fmt.Errorf("%w: have %s, proposed %s", ErrAlreadyInitialized, s.Initialize, c.SystemID)
	}
}

func applyRegisterMember(s *State, index uint64, c RegisterMember) {
	m, ok := s.Members[c.Name]
	if !ok {
		m = &Member{Name: c.Name}
		s.Members[c.Name] = m
		appendEvent(s, Event{Index: index, At: c.At, Kind: EventMemberJoin, Member: c.Name})
	}
	m.APIAddr, m.PGAddr, m.RaftAddr, m.Tags, m.Registered, m.Agent = c.APIAddr, c.PGAddr, c.RaftAddr, c.Tags, c.At, c.Agent
}

func applyReportStatus(s *State, c ReportStatus) error {
	m, ok := s.Members[c.Name]
	if !ok {
		return fmt.Errorf("%w %s: register before reporting status", ErrUnknownMember, c.Name)
	}
	m.Status = c.Status
	m.Slots = slices.Clone(c.Slots)
	if c.Name == s.Leader.Holder {
		s.Leader.LSN = max(s.Leader.LSN, s.leaderPosition(c.Status))
	}
	switch {
	case c.LeaseOver != nil:
		r := *c.LeaseOver
		m.LeaseOver, m.LeaseOverLSN = &r, PositionLSN(c.Status)
	case m.LeaseOver != nil && *m.LeaseOver != s.Leader.Ref():
		m.LeaseOver, m.LeaseOverLSN = nil, 0
	}
	return nil
}

func applyRemoveMember(s *State, index uint64, c RemoveMember) error {
	if _, ok := s.Members[c.Name]; !ok {
		return fmt.Errorf("%w %s", ErrUnknownMember, c.Name)
	}
	if s.Leader.Holder == c.Name {
		// The key would name a non-member, and the next election would
		// lose the last primary's LSN (and with it the lag check). A log
		// written before this rule that removed the holder replays the
		// entry as refused: the member stays, holding the key.
		return &holderLeaveError{member: c.Name, epoch: s.Leader.Epoch}
	}
	delete(s.Members, c.Name)
	s.Sync.dropFromQuorum(c.Name)
	s.Sync.Inherited = slices.DeleteFunc(slices.Clone(s.Sync.Inherited), func(n string) bool { return n == c.Name })
	s.Sync.Rev = index
	appendEvent(s, Event{Index: index, At: c.At, Kind: EventMemberLeave, Actor: c.Actor,
		Member: c.Name, Reason: c.Reason})
	return nil
}

func applySetLeader(s *State, index uint64, c SetLeader) error {
	if s.Leader.Epoch != c.PrevEpoch || s.Leader.Rev != c.PrevRev {
		return fmt.Errorf("%w: expected epoch %d rev %d, have epoch %d rev %d",
			ErrEpochMismatch, c.PrevEpoch, c.PrevRev, s.Leader.Epoch, s.Leader.Rev)
	}
	if c.Holder != "" {
		if _, ok := s.Members[c.Holder]; !ok {
			return fmt.Errorf("%w %s cannot hold the leader key", ErrUnknownMember, c.Holder)
		}
	}
	if c.Rules >= RulesSyncKey && c.Holder != "" && !takeoverExempt(s, c) {
		if ok, why := s.Electable(c.Holder); !ok {
			return fmt.Errorf("%w: %s cannot take the leader key: %s (synchronous record: primary %q, standbys %v, inherited %v)",
				ErrNotElectable, c.Holder, why, s.Sync.Primary, s.Sync.Standbys, s.Sync.Inherited)
		}
	}
	if c.Rules >= RulesSyncKey {
		switch {
		case !s.Config.SynchronousMode:
			s.Sync = SyncState{Rev: index}
		case c.Holder == "":
			// A release keeps the record: the last holder and its
			// standbys hold every commit it acknowledged.
			if s.Leader.Renewed {
				s.Sync.Inherited = nil
			}
			s.Sync.Rev = index
		default:
			s.Sync = s.syncAfterTakeover(c.Holder)
			s.Sync.Rev = index
		}
	}
	prev := s.Leader
	cause := c.Cause
	if cause == "" {
		cause = DefaultCause(prev.Holder, c.Holder)
	}
	renewed, lsn := c.At, uint64(0)
	if c.Holder == "" {
		// A release renews nothing, and keeps the end of the released
		// primary's WAL for the election that follows.
		renewed, lsn = prev.RenewedAt, prev.LSN
		if h, ok := s.Members[prev.Holder]; ok {
			lsn = max(lsn, s.leaderPosition(h.Status))
		}
	}
	s.Leader = LeaderKey{Holder: c.Holder, Epoch: c.PrevEpoch + 1, Rev: index, Since: c.At, RenewedAt: renewed, LSN: lsn}
	appendEvent(s, Event{Index: index, At: c.At, Kind: EventLeader, Actor: c.Actor,
		Member: c.Holder, Epoch: s.Leader.Epoch, Reason: c.Reason,
		Cause: cause, Choice: c.Choice, PrevRenewedAt: prev.RenewedAt})
	return nil
}

func applyRenewLeader(s *State, index uint64, c RenewLeader) error {
	if s.Leader.Holder != c.Holder || s.Leader.Epoch != c.Epoch {
		return fmt.Errorf("%w: %s at epoch %d, key is %q at epoch %d",
			ErrNotHolder, c.Holder, c.Epoch, s.Leader.Holder, s.Leader.Epoch)
	}
	s.Leader.Rev = index
	s.Leader.RenewedAt = c.At
	s.Leader.Renewed = true
	s.Leader.TTL = c.TTL
	s.Leader.MaxTTL = max(s.Leader.MaxTTL, c.TTL)
	if s.Sync.Primary == c.Holder && len(s.Sync.Inherited) > 0 {
		// From now on the holder may acknowledge commits that only it
		// and its recorded standbys hold.
		s.Sync.Inherited = nil
		s.Sync.Rev = index
	}
	stampFirstRenewal(s, c.Epoch, c.At)
	return nil
}

// stampFirstRenewal records at on the leader event of epoch, if this is
// its first renewal. Every change of epoch appends one leader event, so the
// newest leader event is the current epoch's: the search stops there (and
// finds nothing when History no longer holds it).
func stampFirstRenewal(s *State, epoch uint64, at time.Time) {
	for i := len(s.History) - 1; i >= 0; i-- {
		e := &s.History[i]
		if e.Kind != EventLeader {
			continue
		}
		if e.Epoch == epoch && e.FirstRenewalAt.IsZero() {
			s.History = slices.Clone(s.History) // shared with copies: never written in place
			s.History[i].FirstRenewalAt = at
		}
		return
	}
}

func applySetSync(s *State, index uint64, c SetSync) error {
	if s.Leader.Epoch != c.Epoch {
		return fmt.Errorf("%w: sync set for epoch %d, key is at epoch %d", ErrEpochMismatch, c.Epoch, s.Leader.Epoch)
	}
	if c.Prev != nil && !c.Prev.Equal(s.Sync) {
		return fmt.Errorf("%w: expected primary %q standbys %v inherited %v, have primary %q standbys %v inherited %v",
			ErrSyncMismatch, c.Prev.Primary, c.Prev.Standbys, c.Prev.Inherited, s.Sync.Primary, s.Sync.Standbys, s.Sync.Inherited)
	}
	inherited := s.Sync.Inherited
	if c.Prev == nil || c.Primary != s.Sync.Primary {
		inherited = nil // an entry of an older binary, or a record for another primary
	}
	s.Sync = SyncState{Primary: c.Primary, Standbys: slices.Clone(c.Standbys), Inherited: slices.Clone(inherited),
		Quorum: c.Quorum, Rev: index}
	return nil
}

// takeoverExempt: the key's first holder (nobody held it, the cluster is
// being made) and a switchover proposed by the holder itself (it stopped
// its PostgreSQL cleanly and waited for the candidate to replay its last
// WAL, so the candidate holds every acknowledged commit) are not judged by
// the synchronous record.
func takeoverExempt(s *State, c SetLeader) bool {
	switch c.Cause {
	case CauseBootstrap:
		return s.Leader.Epoch == 0 || s.Initialize == ""
	case CauseSwitchover:
		return s.Leader.Holder != "" && c.Actor == s.Leader.Holder
	}
	return false
}

func applySetFailover(s *State, index uint64, c SetFailover) error {
	if c.Request == nil && c.CAS && !sameRequest(s.Failover, c.Prev) {
		return fmt.Errorf("%w: the pending request is not the one being cleared", ErrFailoverPending)
	}
	if c.Request == nil {
		if s.Failover != nil {
			appendEvent(s, Event{Index: index, At: c.At, Kind: EventFailoverDone, Actor: c.Actor,
				Reason: c.Reason})
		}
		s.Failover = nil
		return nil
	}
	r := *c.Request
	if c.CAS && s.Failover != nil {
		return fmt.Errorf("%w: a %s from %q to %q is pending", ErrFailoverPending, s.Failover.Kind, s.Failover.From, s.Failover.To)
	}
	kind := string(r.Kind)
	if r.Hard {
		if r.From != s.Leader.Holder {
			return fmt.Errorf("%w: hard failover from %q: the key is held by %q", ErrNotHolder, r.From, s.Leader.Holder)
		}
		kind = "hard " + kind
	}
	s.Failover = &r
	appendEvent(s, Event{Index: index, At: c.At, Kind: EventFailoverReq, Actor: c.Actor,
		Member: r.To, Reason: fmt.Sprintf("%s from %q to %q", kind, r.From, r.To)})
	return nil
}

func sameRequest(a, b *FailoverRequest) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Kind == b.Kind && a.From == b.From && a.To == b.To && a.ScheduledAt.Equal(b.ScheduledAt) &&
		a.RequestedBy == b.RequestedBy && a.RequestedAt.Equal(b.RequestedAt) && a.Hard == b.Hard
}
