package raftstore

import (
	"testing"
	"time"
)

// TestReportCadence checks the relation the coordinator, sync mode and the
// API rely on: a member reporting on time, even one report late by a Raft
// election (1s), stays fresh, and staleness is never under 2·ttl.
func TestReportCadence(t *testing.T) {
	for _, tc := range []struct {
		ttl, lw, rt           time.Duration
		wantReport, wantStale time.Duration
	}{
		{3 * time.Second, 300 * time.Millisecond, time.Second, 4500 * time.Millisecond, 6 * time.Second},
		{30 * time.Second, 10 * time.Second, 10 * time.Second, 45 * time.Second, 60 * time.Second},
		{2 * time.Second, 200 * time.Millisecond, 500 * time.Millisecond, 3 * time.Second, 4 * time.Second},
	} {
		c := ClusterConfig{TTL: tc.ttl, LoopWait: tc.lw, RetryTimeout: tc.rt}
		if err := c.Validate(); err != nil {
			t.Fatalf("ttl %s: %v", tc.ttl, err)
		}
		ri, stale := c.ReportInterval(), c.StaleAfter()
		if ri != tc.wantReport || stale != tc.wantStale {
			t.Errorf("ttl %s: report every %s, stale after %s; want %s, %s", tc.ttl, ri, stale, tc.wantReport, tc.wantStale)
		}
		if stale < ri+time.Second || stale < 2*c.TTL {
			t.Errorf("ttl %s: stale after %s leaves no room for a late report (interval %s)", tc.ttl, stale, ri)
		}
	}
}
