package failover

import (
	"time"

	"raftgres/raftstore"
)

// SlotMembers splits the members other than me into those whose
// replication slot the primary keeps and those absent for longer than the
// cluster's member_slots_ttl: no status report since (by the member's
// clock, which the ttl's scale of minutes dwarfs), or, never reported, no
// registration since (a member with neither time, from a state older than
// both, is kept). Without the cut a member down for a week would make
// the primary keep its WAL until the disk fills.
func SlotMembers(st raftstore.State, me string, now time.Time) (keep, absent []string) {
	ttl := st.Config.SlotsTTL()
	for _, name := range st.MemberNames() {
		if name == me {
			continue
		}
		m := st.Members[name]
		last := m.Status.ReportedAt
		if last.IsZero() {
			last = m.Registered
		}
		if !last.IsZero() && now.Sub(last) > ttl {
			absent = append(absent, name)
		} else {
			keep = append(keep, name)
		}
	}
	return keep, absent
}
