package failover

import (
	"time"

	"raftgres/pgmanager"
)

// crashTracker counts the ways a member's PostgreSQL fails to serve: exits
// nobody asked for that follow each other within ttl of a (re)start, and
// starts or promotions that fail. Past MaxCrashes the holder gives the
// key up, so a server that cannot come back never holds the cluster
// without a primary (TestHolderWhoseStartKeepsFailingReleasesTheKey,
// TestHolderWhosePromoteKeepsFailingReleasesTheKey).
type crashTracker struct {
	epoch        uint64 // the tenure counted; a new one starts from zero
	crashes      int
	wasRunning   bool
	runningSince time.Time // when postgres was last seen starting to run
}

// observe updates the count from a status read at now; ownProcess is
// whether the Manager still sees its postgres (a stop it asked for is not
// a crash). It reports whether an unexpected exit was counted.
func (c *crashTracker) observe(pgst pgmanager.Status, ownProcess bool, ttl time.Duration, now time.Time) bool {
	crashed := false
	switch {
	case c.wasRunning && !pgst.Running && !ownProcess:
		if now.Sub(c.runningSince) > ttl {
			c.crashes = 0
		}
		c.crashes++
		crashed = true
	case !c.wasRunning && pgst.Running:
		c.runningSince = now
	case pgst.Running && !pgst.InRecovery && c.crashes > 0 && now.Sub(c.runningSince) > ttl:
		// Ran as a primary for a ttl: a new count starts. A standby that
		// keeps failing to promote does not reset it.
		c.crashes = 0
	}
	c.wasRunning = pgst.Running
	return crashed
}

// tenure starts a new count when the leader key's epoch changed: failures
// before this member's tenure say nothing about it.
func (c *crashTracker) tenure(epoch uint64) {
	if c.epoch != epoch {
		c.epoch, c.crashes = epoch, 0
	}
}

// failed counts a start or promotion that did not bring the server up.
func (c *crashTracker) failed() { c.crashes++ }

// acted records the state after an action: stops it asked for are not
// crashes, and a server it started runs from now.
func (c *crashTracker) acted(running bool, now time.Time) {
	if running && !c.wasRunning {
		c.runningSince = now
	}
	c.wasRunning = running
}

// forget starts a new count (a new tenure, a reclone).
func (c *crashTracker) forget() { c.crashes = 0 }
