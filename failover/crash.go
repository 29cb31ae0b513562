package failover

import (
	"time"

	"raftgres/pgmanager"
)

// pgRuns tracks the local postmaster's runs: whether it ran at the last
// look and since when. It outlives every term (a process is the same
// process whoever holds the key); the crash count it feeds belongs to
// the term (holderTerm.crashes).
type pgRuns struct {
	wasRunning   bool
	runningSince time.Time // when postgres was last seen starting to run
}

// observe reads a status taken at now; ownProcess is whether the Manager
// still sees its postgres (a stop it asked for is not a crash). It
// reports whether an unexpected exit happened (crashed) and whether the
// crash count starts anew before that exit is counted (fresh): the exit
// came more than ttl after a (re)start, or the server has run as a
// primary for ttl (a standby that keeps failing to promote starts no new
// count).
func (r *pgRuns) observe(pgst pgmanager.Status, ownProcess bool, ttl time.Duration, now time.Time) (crashed, fresh bool) {
	switch {
	case r.wasRunning && !pgst.Running && !ownProcess:
		crashed, fresh = true, now.Sub(r.runningSince) > ttl
	case !r.wasRunning && pgst.Running:
		r.runningSince = now
	case pgst.Running && !pgst.InRecovery && now.Sub(r.runningSince) > ttl:
		fresh = true
	}
	r.wasRunning = pgst.Running
	return crashed, fresh
}

// acted records the state after an action: stops it asked for are not
// crashes, and a server it started runs from now.
func (r *pgRuns) acted(running bool, now time.Time) {
	if running && !r.wasRunning {
		r.runningSince = now
	}
	r.wasRunning = running
}
