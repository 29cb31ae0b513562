package failover

import (
	"errors"
	"testing"
	"time"
)

func TestRetryBackoff(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 1, 0, 0, 0, time.UTC)
	clone := plan("no data directory", Action{Kind: ActClone, From: "pg1"}, Action{Kind: ActStartStandby, Primary: "pg1"})
	other := plan("no data directory", Action{Kind: ActClone, From: "pg2"}, Action{Kind: ActStartStandby, Primary: "pg2"})
	start := plan("stopped", Action{Kind: ActStartStandby, Primary: "pg1"})
	failed := errors.New("restore failed")
	var b retryBackoff
	if w := b.wait(clone, t0); w != 0 {
		t.Fatalf("wait before any failure: %v", w)
	}
	now := t0
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second} {
		b.done(clone, failed, now)
		if w := b.wait(clone, now); w != want {
			t.Fatalf("after failure %d: wait %v, want %v", i+1, w, want)
		}
		if w := b.wait(other, now); w != 0 {
			t.Fatalf("a different plan waits %v", w)
		}
		if w := b.wait(clone, now.Add(want)); w != 0 {
			t.Fatalf("after failure %d: still waiting %v once the pause is over", i+1, w)
		}
		now = now.Add(want)
	}
	b.done(clone, nil, now)
	if w := b.wait(clone, now); w != 0 || b.failures != 0 {
		t.Fatalf("after a success: wait %v, failures %d", w, b.failures)
	}
	b.done(start, failed, now) // not slow: retried every loop_wait, as before
	if w := b.wait(start, now); w != 0 {
		t.Fatalf("a failed start waits %v", w)
	}
	b.done(clone, failed, now)
	b.done(other, failed, now)
	if w := b.wait(other, now); w != time.Second {
		t.Fatalf("a new failing plan starts over: wait %v", w)
	}
}
