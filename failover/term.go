package failover

// holderTerm is this member's state for one epoch of the leader key: made
// when the loop first sees the epoch and dropped, whole, when it sees
// another (as Nomad's leaderLoop state lives and dies with one
// leadership), so nothing of one tenure leaks into the next. Only the
// supervisor's loop goroutine reads or writes it.
//
// It counts the ways PostgreSQL failed to serve in the term: exits nobody
// asked for that follow each other within ttl of a (re)start, and starts
// or promotions that fail. Past MaxCrashes the holder gives the key up,
// so a server that cannot come back never holds the cluster without a
// primary (TestHolderWhoseStartKeepsFailingReleasesTheKey,
// TestHolderWhosePromoteKeepsFailingReleasesTheKey); failures before this
// member's tenure say nothing about it.
//
// The lease is not in it: the commit gate and the fencer read it from
// their own goroutines for the whole of Run, so it is one long-lived
// handle (lease.go) whose content is always a single renewal and names
// the epoch it was made for; lease.valid counts it only while that epoch
// is the key's, so a renewal of an earlier term never counts in a later
// one. Nor is the watchdog device: it is the process's, armed while this
// member runs as primary under a valid lease and disarmed by the loop
// (tendWatchdog), not at the epoch change, which would open a gap between
// the term's end and the demotion.
type holderTerm struct {
	epoch   uint64
	sync    syncState
	crashes int
	// absent are the members whose slot this primary last left out for
	// their absence (slotMembers), to log each change once.
	absent []string
	// slotClash are the permanent slots named as a member's slot, to
	// log each change once.
	slotClash []string
}

// curTerm is the current term (before the loop saw any epoch, one of
// epoch 0).
func (s *Supervisor) curTerm() *holderTerm {
	if s.term == nil {
		s.term = &holderTerm{}
	}
	return s.term
}

// termAt returns the term of epoch, dropping the current one when it is
// of another epoch.
func (s *Supervisor) termAt(epoch uint64) *holderTerm {
	if t := s.curTerm(); t.epoch != epoch {
		s.term = &holderTerm{epoch: epoch}
	}
	return s.term
}
