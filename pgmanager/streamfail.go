package pgmanager

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// streamFailures are the walreceiver errors that repeat until someone
// acts: the standby needs WAL or a timeline history the upstream no
// longer has (or never had), so it cannot stream, and without streaming
// a rewound standby never reaches a consistent state (it then refuses
// connections, and its Status can say nothing else). A connection lost
// to a primary that died is not one of them: that heals on a failover.
var streamFailures = []string{
	"has already been removed",           // requested WAL segment ... has already been removed
	"could not receive timeline history", // the upstream has no such history file
	"could not start WAL streaming",      // requested starting point ... is ahead of the WAL flush position
	"is not in this server's history",    // the upstream's timeline forked before our position
	"highest timeline",                   // ... of the primary is behind recovery timeline
}

// divergedFailures are the streamFailures that mean the upstream's
// history forked before this standby's position: a pg_rewind onto it
// helps. WAL or a history file gone from the upstream are not among them
// (a restore_command may fetch it; a rewind would not bring it back).
var divergedFailures = []string{
	"could not start WAL streaming",   // requested starting point ... is ahead of the WAL flush position
	"is not in this server's history", // the upstream's timeline forked before our position
	"highest timeline",                // ... of the primary is behind recovery timeline
}

// divergedAfter is how long a diverged walreceiver must have kept failing
// before it counts (WalReceiverDiverged): a cascade briefly ahead of an
// upstream that is catching up heals by itself.
const divergedAfter = 5 * time.Second

// divergedAt reports whether the postmaster's walreceiver has kept
// failing, for divergedAfter, with a line of divergedFailures last.
func (p *postmaster) divergedAt(now time.Time) bool {
	failing, since, line := p.streamFailingAt(now)
	if !failing || now.Sub(since) < divergedAfter {
		return false
	}
	for _, f := range divergedFailures {
		if strings.Contains(line, f) {
			return true
		}
	}
	return false
}

// streamFailing is how long after its last walreceiver failure a standby
// counts as failing to stream: the walreceiver retries every
// wal_retrieve_retry_interval (5 s by default), so a failure that
// persists is seen again well within it.
const streamFailing = 15 * time.Second

// cannotStreamAfter is how long a starting standby's walreceiver must
// have kept failing before Start gives up waiting for it to accept
// connections (it never will): long enough for a restore_command to
// fetch what streaming could not.
const cannotStreamAfter = 10 * time.Second

// ErrCannotStream is returned by Start for a standby that cannot reach a
// consistent state because its walreceiver keeps failing in a way that
// does not heal (the WAL or timeline history it needs is gone from its
// upstream): rewinding it again does not help, a new copy does.
var ErrCannotStream = errors.New("standby cannot stream from its upstream")

// isStreamFailure reports whether a PostgreSQL log line is one of
// streamFailures.
func isStreamFailure(line string) bool {
	// The walreceiver's failures are FATAL (the upstream's ERROR nested
	// in them). A bare ERROR is this server's walsender refusing one of
	// its own standbys (a cascade: "requested WAL segment … has already
	// been removed"): nothing wrong with this server's stream.
	if !strings.Contains(line, "FATAL") {
		return false
	}
	for _, f := range streamFailures {
		if strings.Contains(line, f) {
			return true
		}
	}
	return false
}

// noteLine records, from the running postmaster's log, when its
// walreceiver failed in a way that does not heal by itself: the last
// time, and since when it has kept failing (failures less than
// streamFailing apart). The walreceiver logs "started streaming" before
// each such failure, so that line clears nothing; a streak ends when no
// failure follows for streamFailing.
func (p *postmaster) noteLine(line string) {
	if !isStreamFailure(line) {
		return
	}
	now := time.Now()
	p.failMu.Lock()
	defer p.failMu.Unlock()
	if p.failLast.IsZero() || now.Sub(p.failLast) >= streamFailing {
		p.failSince = now
	}
	p.failLast, p.failLine = now, line
}

// streamFailingAt reports whether the postmaster's walreceiver failed
// within streamFailing before now, since when it has kept failing, and
// the last failure's log line.
func (p *postmaster) streamFailingAt(now time.Time) (failing bool, since time.Time, line string) {
	p.failMu.Lock()
	defer p.failMu.Unlock()
	if p.failLast.IsZero() || now.Sub(p.failLast) >= streamFailing {
		return false, time.Time{}, ""
	}
	return true, p.failSince, p.failLine
}

// cannotStream reports whether a starting standby's walreceiver has kept
// failing for cannotStreamAfter, as an error wrapping ErrCannotStream.
func (p *postmaster) cannotStream(now time.Time) error {
	failing, since, line := p.streamFailingAt(now)
	if !failing || now.Sub(since) < cannotStreamAfter {
		return nil
	}
	return fmt.Errorf("%w for %s: %s", ErrCannotStream, now.Sub(since).Round(time.Second), line)
}

// cannotConnectNow is SQLSTATE 57P03: the server is starting up (not yet
// consistent, for a standby) or shutting down.
const cannotConnectNow = "57P03"

// streamFailing reports whether the walreceiver failed within
// streamFailing before now.
func (p *postmaster) streamFailing(now time.Time) bool {
	failing, _, _ := p.streamFailingAt(now)
	return failing
}
