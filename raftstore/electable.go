package raftstore

import (
	"fmt"
	"slices"
	"time"
)

// RulesSyncKey is the value of SetLeader.Rules that makes the election and
// the synchronous record one object: the apply checks the candidate against
// State.Electable and resets Sync for the new holder. Entries written
// without it (older binaries) apply as they always did, so every member
// replays a log to the same state.
const RulesSyncKey = 1

// LeaseTTL bounds how long after any applied acquire or renewal of the
// current epoch the holder's lease may still run: the longest of the ttl
// in force and the ttls the epoch's renewals were made under
// (LeaderKey.TTL, MaxTTL). Lowering ttl never shortens a lease already
// given. A coordinator taking office counts down from then with it; one
// in office counts each renewal with its own ttl (failover's
// leaseCountdown).
func (s State) LeaseTTL() time.Duration {
	return max(s.Config.TTL, s.Leader.TTL, s.Leader.MaxTTL)
}

// Electable reports whether member holds every commit acknowledged so far,
// as far as the record in Sync proves, and so may take the leader key in
// synchronous mode; why says what it lacks. It is the one rule both the
// election (failover.RankCandidates) and the apply of SetLeader use.
//
//   - No record (Sync.NoRecord): anyone.
//   - The holder's recorded standbys (Sync.Primary is the holder, or the key
//     is released and Sync.Primary was the last holder): every commit the
//     holder acknowledged waited for them. In quorum mode, where a commit
//     waited for q of them only (Sync.Quorum), the one that is furthest
//     among n − q + 1 positions read after the lease ended (quorumReady).
//   - With the key released, the last holder itself (Sync.Primary).
//   - While the holder has not renewed at its epoch (it never held a lease,
//     so it acknowledged nothing): the members that were electable when it
//     took the key (Sync.Inherited), the holder it replaced among them.
//
// Outside synchronous mode, and in a standby cluster, everyone is
// electable (lag is judged apart).
func (s State) Electable(member string) (ok bool, why string) {
	if !s.Config.SynchronousMode || s.Sync.NoRecord() || s.Config.IsStandbyCluster() {
		// A standby cluster acknowledges no commit: its members only
		// copy the source's (a record from before demote-cluster is void).
		return true, ""
	}
	holder := s.Leader.Holder
	if holder == "" && member == s.Sync.Primary {
		return true, ""
	}
	quorumWhy := ""
	if (holder == "" || holder == s.Sync.Primary) && slices.Contains(s.Sync.Standbys, member) {
		if !s.Sync.quorumRules() {
			return true, ""
		}
		ok, why := s.quorumReady(member)
		if ok {
			return true, ""
		}
		quorumWhy = why
	}
	if !s.Leader.Renewed && slices.Contains(s.Sync.Inherited, member) {
		return true, ""
	}
	if quorumWhy != "" {
		return false, quorumWhy
	}
	if holder != "" && holder != s.Sync.Primary && s.Leader.Renewed {
		return false, "not a synchronous standby (the synchronous record is not the holder's)"
	}
	return false, "not a synchronous standby"
}

// electableSet returns the members Electable accepts, sorted; every member
// when there is no record.
func (s State) electableSet() []string {
	var out []string
	for _, name := range s.MemberNames() {
		if ok, _ := s.Electable(name); ok {
			out = append(out, name)
		}
	}
	return out
}

// syncAfterTakeover is the Sync record once newHolder has taken the key
// from the current holder: newHolder with no standbys yet, inheriting
// every member that was electable (newHolder aside) and the replaced
// holder, which holds every commit it acknowledged itself.
func (s State) syncAfterTakeover(newHolder string) SyncState {
	inherit := s.electableSet()
	if s.Leader.Holder != "" && !slices.Contains(inherit, s.Leader.Holder) {
		inherit = append(inherit, s.Leader.Holder)
	}
	if s.Leader.Holder == "" && s.Sync.Primary != "" && !slices.Contains(inherit, s.Sync.Primary) {
		if _, ok := s.Members[s.Sync.Primary]; ok {
			inherit = append(inherit, s.Sync.Primary)
		}
	}
	inherit = slices.DeleteFunc(inherit, func(n string) bool { return n == newHolder })
	slices.Sort(inherit)
	return SyncState{Primary: newHolder, Inherited: inherit}
}

// CheckLeave says why member may not leave the cluster now: it holds the
// leader key (ErrHolderLeave), or, in synchronous mode while no holder has
// renewed the key (none, or a new one that never did), the record names it
// as one that may be elected (ErrSyncLeave): it may then hold the only
// copy of acknowledged commits besides a lost holder, and RemoveMember
// drops it from the record for good, so a later election could find
// nobody, even after it joins again (TestCheckLeave; TestSimSweep drives
// leave and join). With a holder that renewed, that holder has every
// acknowledged commit itself, and a standby may leave.
func (s State) CheckLeave(member string) error {
	if s.Leader.Holder == member {
		return &holderLeaveError{member: member, epoch: s.Leader.Epoch}
	}
	if !s.Config.SynchronousMode || s.Sync.NoRecord() || s.Leader.Holder != "" && s.Leader.Renewed {
		return nil
	}
	if ok, _ := s.Electable(member); ok {
		return fmt.Errorf("%w (%s)", ErrSyncLeave, member)
	}
	if s.Sync.QuorumNeed() > 0 && slices.Contains(s.Sync.Standbys, member) {
		// A member of a quorum set is electable only once enough of the
		// set reported; RemoveMember lowers q, so its leaving would leave
		// the rest unable to prove they hold every commit.
		return fmt.Errorf("%w (%s, in the quorum set)", ErrSyncLeave, member)
	}
	return nil
}
