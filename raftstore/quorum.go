package raftstore

import (
	"fmt"
	"slices"
)

// quorumRules reports whether the record's standbys are a quorum set:
// every acknowledged commit is on q of them but maybe not on all
// (0 < Quorum < len(Standbys)). A record with Quorum = len(Standbys), or
// zero, is one whose every standby holds every commit.
func (s SyncState) quorumRules() bool {
	return s.Quorum > 0 && s.Quorum < len(s.Standbys)
}

// QuorumNeed is how many of the recorded standbys must report a position
// read after the lease ended before one of them may be elected: n − q + 1
// of n. Any q of them and any n − q + 1 of them share a member, so the
// most advanced of those reports holds every commit acknowledged on q.
// Zero when the record is not a quorum set.
func (s SyncState) QuorumNeed() int {
	if !s.quorumRules() {
		return 0
	}
	return len(s.Standbys) - s.Quorum + 1
}

// PositionLSN is the furthest WAL position a member's status shows: what
// an election compares.
func PositionLSN(st MemberStatus) uint64 {
	return max(st.ReceivedLSN, st.ReplayedLSN, st.WrittenLSN)
}

// QuorumReports returns the recorded standbys whose last report was read
// after the current key's lease ended (Member.LeaseOver is the key's
// epoch and revision now), sorted.
func (s State) QuorumReports() []string {
	var out []string
	for _, name := range s.Sync.Standbys {
		if m, ok := s.Members[name]; ok && m.LeaseOver != nil && *m.LeaseOver == s.Leader.Ref() {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// quorumReady judges a recorded standby of a quorum record (see
// Electable): it may be elected once n − q + 1 of the record's n standbys
// reported positions read after the lease ended, it is one of them, and
// none of them is further than it. Every commit the holder acknowledged
// is on q standbys, one of which reported, so the candidate holds it
// (TestQuorumElectable).
func (s State) quorumReady(member string) (bool, string) {
	reports := s.QuorumReports()
	need := s.Sync.QuorumNeed()
	if len(reports) < need {
		return false, fmt.Sprintf("quorum commit: waiting for positions read after the lease ended from %d of %v (have %v)",
			need, s.Sync.Standbys, reports)
	}
	if !slices.Contains(reports, member) {
		return false, "quorum commit: no position read after the lease ended"
	}
	mine := s.Members[member].LeaseOverLSN
	for _, r := range reports {
		if l := s.Members[r].LeaseOverLSN; l > mine {
			return false, fmt.Sprintf("quorum commit: %s is further (%d > %d)", r, l, mine)
		}
	}
	return true, ""
}

// dropFromQuorum removes name from the record's standbys. In a quorum set
// a commit on q of n is on q − 1 of the n − 1 left; with q − 1 = 0 the
// rest prove nothing and the record keeps no standby.
func (s *SyncState) dropFromQuorum(name string) {
	if !slices.Contains(s.Standbys, name) {
		return
	}
	s.Standbys = slices.DeleteFunc(slices.Clone(s.Standbys), func(n string) bool { return n == name })
	if s.Quorum == 0 {
		return
	}
	s.Quorum--
	if s.Quorum == 0 {
		s.Standbys = nil
	}
}
