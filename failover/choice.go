package failover

import (
	"fmt"

	"raftgres/pgmanager"
)

// explainChoice says, in a short line for History and the
// raftgres_last_election_info metric, why Elect chose ranked[0] (eligible):
// which rule of the ranking decided against the runner-up.
func explainChoice(ranked []Candidate, in ElectionInput) string {
	w := ranked[0]
	eligible := 0
	for _, c := range ranked {
		if c.Why == "" {
			eligible++
		}
	}
	lsn := pgmanager.FormatLSN(w.LSN)
	switch {
	case in.Candidate != "":
		return fmt.Sprintf("requested candidate, at %s", lsn)
	case eligible == 1:
		return fmt.Sprintf("only eligible member, at %s", lsn)
	}
	next := ranked[1]
	switch {
	case w.LSN != next.LSN:
		return fmt.Sprintf("highest LSN %s of %d eligible (next: %s at %s)", lsn, eligible, next.Name, pgmanager.FormatLSN(next.LSN))
	case w.Priority != next.Priority:
		return fmt.Sprintf("LSN tie at %s, highest failover_priority %d of %d eligible (next: %s, priority %d)",
			lsn, w.Priority, eligible, next.Name, next.Priority)
	}
	return fmt.Sprintf("LSN and failover_priority tie at %s among %d eligible, first by name (next: %s)", lsn, eligible, next.Name)
}
