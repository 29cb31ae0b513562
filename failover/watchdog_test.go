package failover

import (
	"strings"
	"testing"
	"time"

	"raftgres/raftstore"
)

func TestWatchdogTimeout(t *testing.T) {
	cases := []struct {
		ttl  time.Duration
		want time.Duration
		ok   bool
	}{
		{3 * time.Second, 0, false},
		{4 * time.Second, 0, false},
		{5 * time.Second, 4 * time.Second, true},
		{6 * time.Second, 5 * time.Second, true},
		{10 * time.Second, 8 * time.Second, true},
		{30 * time.Second, 21 * time.Second, true},
	}
	for _, tc := range cases {
		got, ok := WatchdogTimeout(tc.ttl)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("ttl %s: got %s %v, want %s %v", tc.ttl, got, ok, tc.want, tc.ok)
		}
		if !ok {
			continue
		}
		// The safety argument, checked for every accepted ttl: the watchdog
		// fires after the lease's end plus fencing, and before the
		// coordinator may elect someone else.
		lease := tc.ttl - Margin(tc.ttl)
		if got < lease+FenceBudget {
			t.Errorf("ttl %s: timeout %s fires before the software fence (%s)", tc.ttl, got, lease+FenceBudget)
		}
		if limit := tc.ttl - time.Duration(2*raftstore.ClockRate*float64(tc.ttl)) - FenceBudget/2; got > limit {
			t.Errorf("ttl %s: timeout %s fires after others may be elected (%s)", tc.ttl, got, limit)
		}
	}
}

func TestWatchdogConfigValidate(t *testing.T) {
	cases := []struct {
		cfg  WatchdogConfig
		ttl  time.Duration
		want string
	}{
		{DefaultWatchdogConfig(), 3 * time.Second, ""},
		{WatchdogConfig{Mode: "automatic", Device: "/dev/watchdog"}, 10 * time.Second, ""},
		{WatchdogConfig{Mode: "required", Device: "/dev/watchdog"}, 3 * time.Second, "use ttl ≥ 5s"},
		{WatchdogConfig{Mode: "sometimes", Device: "/dev/watchdog"}, 10 * time.Second, "must be off, automatic or required"},
		{WatchdogConfig{Mode: "required"}, 10 * time.Second, "device"},
	}
	for _, tc := range cases {
		err := tc.cfg.Validate(tc.ttl)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v ttl %s: got %v, want %q", tc.cfg, tc.ttl, err, tc.want)
		}
	}
}

func TestWatchdogMemberTags(t *testing.T) {
	missing := &fakeWatchdog{unusable: ErrWatchdog}
	tags, err := WatchdogConfig{Mode: WatchdogRequired, Device: "/dev/missing"}.MemberTags(raftstore.DefaultTags(), missing)
	if err == nil || !tags.NoFailover {
		t.Fatalf("required without a device: tags %+v, err %v; want nofailover and an error", tags, err)
	}
	tags, err = WatchdogConfig{Mode: WatchdogAutomatic, Device: "/dev/missing"}.MemberTags(raftstore.DefaultTags(), missing)
	if err != nil || tags.NoFailover {
		t.Fatalf("automatic without a device: tags %+v, err %v; want them unchanged", tags, err)
	}
	// Required mode with no device handed in is never usable.
	if tags, err := (WatchdogConfig{Mode: WatchdogRequired, Device: "/dev/watchdog"}).MemberTags(raftstore.DefaultTags(), nil); err == nil || !tags.NoFailover {
		t.Fatalf("required with no device given: tags %+v, err %v; want nofailover", tags, err)
	}
}
