package pgmanager

import (
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

// streamFailing is how long after its last walreceiver failure a standby
// counts as failing to stream: the walreceiver retries every
// wal_retrieve_retry_interval (5 s by default), so a failure that
// persists is seen again well within it.
const streamFailing = 15 * time.Second

// isStreamFailure reports whether a PostgreSQL log line is one of
// streamFailures.
func isStreamFailure(line string) bool {
	if !strings.Contains(line, "FATAL") && !strings.Contains(line, "ERROR") {
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
// walreceiver last failed in a way that does not heal by itself; a
// walreceiver that then starts streaming clears it.
func (p *postmaster) noteLine(line string) {
	switch {
	case isStreamFailure(line):
		p.streamFailedAt.Store(time.Now().UnixNano())
	case strings.Contains(line, "started streaming WAL"):
		p.streamFailedAt.Store(0)
	}
}

// streamFailing reports whether the postmaster's walreceiver failed
// within streamFailing before now.
func (p *postmaster) streamFailingAt(now time.Time) bool {
	at := p.streamFailedAt.Load()
	return at != 0 && now.Sub(time.Unix(0, at)) < streamFailing
}

// cannotConnectNow is SQLSTATE 57P03: the server is starting up (not yet
// consistent, for a standby) or shutting down.
const cannotConnectNow = "57P03"
