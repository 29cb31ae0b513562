package failover

import (
	"cmp"
	"fmt"
	"slices"

	"raftgres/raftstore"
)

// ElectionInput is what the coordinator measured itself (on its monotonic
// clock) and hands to the pure Elect.
type ElectionInput struct {
	// Fresh holds the members whose status the coordinator saw change
	// within the last ttl.
	Fresh map[string]bool
	// Exclude is a member that must not win (the one being replaced).
	Exclude string
	// Candidate, when set, is the only member that may win (manual
	// failover or switchover).
	Candidate string
	// Reason goes into History.
	Reason string
	// Actor is the coordinator's member name.
	Actor string
	// IgnoreLag skips the maximum_lag_on_failover check: a switchover
	// stops the primary cleanly and waits for its candidate to receive
	// everything, so lag only decides how long that wait is.
	IgnoreLag bool
}

// Candidate is one ranked member.
type Candidate struct {
	Name     string
	LSN      uint64
	Priority int
	// Why is set when the member is not eligible.
	Why string
}

// RankCandidates returns every member with the reason it is not eligible
// (Why empty means eligible), eligible ones first, best first: highest
// received/replayed LSN, then failover_priority, then name. In synchronous
// mode only the members the synchronous record proves complete are
// eligible (raftstore.State.Electable, the rule the FSM itself applies to
// the election), and lag is not
// held against them: they hold every acknowledged commit by construction,
// while the reported LSNs of a loaded primary and its standby are read at
// different moments.
func RankCandidates(st raftstore.State, in ElectionInput) []Candidate {
	lastPrimary := st.LastPrimaryLSN()
	var out []Candidate
	for _, name := range st.MemberNames() {
		m := st.Members[name]
		c := Candidate{Name: name, LSN: max(m.Status.ReceivedLSN, m.Status.ReplayedLSN), Priority: m.Tags.FailoverPriority}
		switch {
		case name == in.Exclude || name == st.Leader.Holder:
			c.Why = "current primary"
		case in.Candidate != "" && name != in.Candidate:
			c.Why = "not the requested candidate"
		case !in.Fresh[name]:
			c.Why = "no recent status"
		case m.Status.State != raftstore.StateRunning || m.Status.Role != raftstore.RoleReplica && m.Status.Role != raftstore.RoleStandbyLeader:
			c.Why = fmt.Sprintf("not a running replica (%s, %s)", m.Status.Role, m.Status.State)
		case m.Tags.NoFailover:
			c.Why = "tagged nofailover"
		case m.Tags.FailoverPriority <= 0 && in.Candidate == "":
			c.Why = "failover_priority 0"
		case !electable(st, name) && !(in.IgnoreLag && quorumHandOver(st, name)):
			_, c.Why = st.Electable(name)
		case !in.IgnoreLag && !st.Config.SynchronousMode && lastPrimary > c.LSN && int64(lastPrimary-c.LSN) > st.Config.MaximumLagOnFailover:
			c.Why = fmt.Sprintf("lag %d bytes over maximum_lag_on_failover %d", lastPrimary-c.LSN, st.Config.MaximumLagOnFailover)
		}
		out = append(out, c)
	}
	slices.SortStableFunc(out, func(a, b Candidate) int {
		if (a.Why == "") != (b.Why == "") {
			if a.Why == "" {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(b.LSN, a.LSN); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Priority, a.Priority); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	return out
}

// Elect chooses the new primary, if any member is eligible, and returns the
// compare-and-set command that hands it the leader key.
func Elect(st raftstore.State, in ElectionInput) (raftstore.SetLeader, bool) {
	ranked := RankCandidates(st, in)
	if len(ranked) == 0 || ranked[0].Why != "" {
		return raftstore.SetLeader{}, false
	}
	return raftstore.SetLeader{
		Holder: ranked[0].Name, PrevEpoch: st.Leader.Epoch, PrevRev: st.Leader.Rev,
		Reason: in.Reason, Choice: explainChoice(ranked, in), Actor: in.Actor,
		Rules: raftstore.RulesSyncKey,
	}, true
}

// quorumHandOver: in quorum mode a switchover may go to any recorded
// standby of the holder. The holder stops cleanly and hands over only once
// the candidate has its shutdown checkpoint, so the candidate then holds
// every commit, whichever q of the set each waited for.
func quorumHandOver(st raftstore.State, name string) bool {
	return st.Sync.QuorumNeed() > 0 && st.Leader.Holder != "" && st.Sync.Primary == st.Leader.Holder &&
		slices.Contains(st.Sync.Standbys, name)
}

func electable(st raftstore.State, name string) bool {
	ok, _ := st.Electable(name)
	return ok
}

// RequestRefusal is why the member to cannot take the leader key by an
// operator's switchover or failover request, judged on st by the rules
// that later rank it (RankCandidates): "" when it can, "not a member"
// when st has no such member. Freshness and lag are left to the side
// that acts on the request, which measures them then: a hand-over waits
// for its candidate to catch up, and reports age on its own clock.
func RequestRefusal(st raftstore.State, to string) string {
	fresh := make(map[string]bool, len(st.Members))
	for name := range st.Members {
		fresh[name] = true
	}
	for _, c := range RankCandidates(st, ElectionInput{Fresh: fresh, Candidate: to, IgnoreLag: true}) {
		if c.Name == to {
			return c.Why
		}
	}
	return "not a member"
}
