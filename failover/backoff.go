package failover

import "time"

// slowActions create a data directory (initdb or a restore, a clone):
// when one fails it is retried with a growing pause, not every
// loop_wait, so a restore that cannot succeed (a recovery target the
// archive does not reach, a repository that is down) does not run
// back to back.
var slowActions = map[ActionKind]bool{ActInit: true, ActClone: true, ActReclone: true}

// Backoff bounds of a failed slow action's retries.
const (
	retryFirst = time.Second
	retryMax   = 30 * time.Second
)

// retryBackoff spaces the retries of a failed slow plan.
type retryBackoff struct {
	steps    string // the failed plan's steps
	failures int
	next     time.Time // not before
}

// slow reports whether p holds a slow action.
func slow(p Plan) bool {
	for _, a := range p.Actions {
		if slowActions[a.Kind] {
			return true
		}
	}
	return false
}

// wait is how long p must still wait before it may run again (0: now).
func (b *retryBackoff) wait(p Plan, now time.Time) time.Duration {
	if b.failures == 0 || p.Steps() != b.steps || !now.Before(b.next) {
		return 0
	}
	return b.next.Sub(now)
}

// done records p's outcome.
func (b *retryBackoff) done(p Plan, err error, now time.Time) {
	if err == nil || !slow(p) {
		*b = retryBackoff{}
		return
	}
	if p.Steps() != b.steps {
		*b = retryBackoff{steps: p.Steps()}
	}
	d := retryFirst << min(b.failures, 5)
	b.failures++
	b.next = now.Add(min(d, retryMax))
}
