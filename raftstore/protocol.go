package raftstore

import (
	"fmt"
	"slices"
	"strings"
)

// Protocol is the version of the replicated state's language this release
// speaks: the commands and the fields of commands it can apply. It grows
// by one with every release that adds a command or a field whose meaning
// matters. During a rolling upgrade older and newer agents share one log,
// and an entry an older agent cannot decode halts its FSM (Halt): a
// command that needs a newer protocol is proposed only once every voter
// registered with it (CheckProtocol).
const Protocol = 2

// commandProtocol is the protocol a command needs. Every command of
// protocol 1 needs 1; a command or field added later names its protocol
// here, and where only a field is new, only when it is set.
//
// Protocol 2 (after v0.1.0): ClusterConfig.MemberSlotsTTL, Slots and
// IgnoreSlots, SynchronousQuorum and SynchronousNodeCount, in SetConfig;
// ReportStatus.Slots and LeaseOver; FailoverRequest.Hard, in SetFailover;
// SetSync.Quorum (and SyncState.Quorum in its Prev); ClusterConfig.StandbyCluster;
// MemberStatus.SourceLSN and SourceAt.
// (A Bootstrap is proposed before any member registered, by a cluster
// that is new, so of one release.)
func commandProtocol(c Command) int {
	switch c := c.(type) {
	case SetConfig:
		if c.Config.MemberSlotsTTL != 0 || len(c.Config.Slots) > 0 || len(c.Config.IgnoreSlots) > 0 ||
			c.Config.SynchronousQuorum || c.Config.SynchronousNodeCount != 0 || c.Config.StandbyCluster != nil {
			return 2
		}
	case ReportStatus:
		if len(c.Slots) > 0 || c.LeaseOver != nil || c.Status.SourceLSN != 0 || !c.Status.SourceAt.IsZero() {
			return 2
		}
	case SetSync:
		if c.Quorum != 0 || c.Prev != nil && c.Prev.Quorum != 0 {
			return 2
		}
	case SetFailover:
		if c.Request != nil && c.Request.Hard || c.Prev != nil && c.Prev.Hard {
			return 2
		}
	}
	return 1
}

// MinProtocol is the lowest protocol among voters, by what each last
// registered with: 0 when a voter has not registered (an agent of a
// release from before registrations carried it, or one that never
// started), with the voters that hold it down.
func (s State) MinProtocol(voters []string) (int, []string) {
	lowest, by := 0, []string(nil)
	for i, v := range slices.Sorted(slices.Values(voters)) {
		p := 0
		if m, ok := s.Members[v]; ok {
			p = m.Agent.Protocol
		}
		switch {
		case i == 0 || p < lowest:
			lowest, by = p, []string{v}
		case p == lowest:
			by = append(by, v)
		}
	}
	return lowest, by
}

// CheckProtocol refuses cmd (ErrNeedsUpgrade) when a voter's agent does
// not speak the protocol it needs: committing it would halt that
// member's replicated state.
func CheckProtocol(s State, voters []string, cmd Command) error {
	need := commandProtocol(cmd)
	if need <= 1 {
		return nil
	}
	if have, by := s.MinProtocol(voters); have < need {
		return fmt.Errorf("%w: %s needs protocol %d, %s at %d", ErrNeedsUpgrade, cmd.Type(), need, strings.Join(by, ", "), have)
	}
	return nil
}
