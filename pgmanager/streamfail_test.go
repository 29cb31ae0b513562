package pgmanager

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestStreamFailureLines(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		line string
		want bool
	}{
		{"2026-11-28 18:19:37.661 UTC [14624] FATAL:  could not receive data from WAL stream: ERROR:  requested WAL segment 000000020000000000000009 has already been removed", true},
		{"FATAL:  could not receive timeline history file from the primary server: ERROR:  could not open file \"pg_wal/00000003.history\": No such file or directory", true},
		{"FATAL:  could not start WAL streaming: ERROR:  requested starting point 0/9000000 on timeline 2 is not in this server's history", true},
		{"FATAL:  highest timeline 2 of the primary is behind recovery timeline 3", true},
		// Healed by a failover or a restart: not a stream failure.
		{"FATAL:  could not receive data from WAL stream: server closed the connection unexpectedly", false},
		{"FATAL:  the database system is not yet accepting connections", false},
		{"FATAL:  terminating walreceiver process due to administrator command", false},
		{"LOG:  restored log file \"000000020000000000000009\" has already been removed", false}, // not an error
		// This server's walsender refusing a cascading standby.
		{"2026-12-07 00:34:58.910 UTC [4242] ERROR:  requested WAL segment 000000040000000000000007 has already been removed", false},
	} {
		if got := isStreamFailure(tc.line); got != tc.want {
			t.Errorf("isStreamFailure(%q) = %v, want %v", tc.line, got, tc.want)
		}
	}
}

func TestStreamFailingExpires(t *testing.T) {
	t.Parallel()
	const gone = "FATAL:  could not receive data from WAL stream: ERROR:  requested WAL segment 00000002000000000000000A has already been removed"
	p := &postmaster{}
	now := time.Now()
	if p.streamFailing(now) || p.cannotStream(now) != nil {
		t.Fatal("failing before any failure")
	}
	p.noteLine(gone)
	if !p.streamFailing(time.Now()) {
		t.Fatal("not failing right after a failure")
	}
	if p.streamFailing(time.Now().Add(streamFailing)) {
		t.Fatalf("still failing %s after the last failure", streamFailing)
	}
	// The walreceiver logs "started streaming" before each failure: that
	// clears nothing.
	p.noteLine("LOG:  started streaming WAL from primary at 0/A000000 on timeline 2")
	if !p.streamFailing(time.Now()) {
		t.Fatal("a started-streaming line cleared the failure")
	}
	// A standby is given up on only once failures kept coming for
	// cannotStreamAfter.
	if err := p.cannotStream(time.Now()); err != nil {
		t.Fatalf("cannotStream right after the first failure = %v", err)
	}
	p.failMu.Lock()
	p.failSince = p.failSince.Add(-cannotStreamAfter)
	p.failMu.Unlock()
	if err := p.cannotStream(time.Now()); !errors.Is(err, ErrCannotStream) || !strings.Contains(err.Error(), "00000002000000000000000A") {
		t.Fatalf("cannotStream after %s of failures = %v, want ErrCannotStream naming the segment", cannotStreamAfter, err)
	}
	// A failure after a quiet streamFailing starts a new streak.
	p.failMu.Lock()
	p.failLast = p.failLast.Add(-streamFailing)
	p.failMu.Unlock()
	p.noteLine(gone)
	if err := p.cannotStream(time.Now()); err != nil {
		t.Fatalf("cannotStream on a new streak = %v", err)
	}
}

// TestDivergedAt: only a fork (not WAL gone, which an archive may heal)
// that has kept failing for divergedAfter counts as diverged.
func TestDivergedAt(t *testing.T) {
	t.Parallel()
	now := time.Now()
	for _, tc := range []struct {
		name  string
		line  string
		since time.Duration // how long it has been failing
		want  bool
	}{
		{"fork, long enough", "FATAL:  could not start WAL streaming: ERROR:  requested starting point 0/9000000 on timeline 2 is not in this server's history", 6 * time.Second, true},
		{"ahead of the upstream, long enough", "FATAL:  could not start WAL streaming: ERROR:  requested starting point 0/9000000 is ahead of the WAL flush position of this server 0/8000000", 6 * time.Second, true},
		{"fork, just started", "FATAL:  highest timeline 2 of the primary is behind recovery timeline 3", time.Second, false},
		{"WAL gone", "FATAL:  could not receive data from WAL stream: ERROR:  requested WAL segment 00000002000000000000000A has already been removed", time.Minute, false},
	} {
		p := &postmaster{failSince: now.Add(-tc.since), failLast: now, failLine: tc.line}
		if got := p.divergedAt(now); got != tc.want {
			t.Errorf("%s: diverged %v, want %v", tc.name, got, tc.want)
		}
	}
}
