package failover

import (
	"errors"
	"os"
	"path/filepath"
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

// TestWatchdogArmRefusesNonDevice: a file that takes no watchdog ioctls
// is refused with ErrWatchdog and left closed.
func TestWatchdogArmRefusesNonDevice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "watchdog")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	w := &watchdog{device: path}
	if err := w.arm(4 * time.Second); !errors.Is(err, ErrWatchdog) {
		t.Fatalf("arm on a regular file: %v, want ErrWatchdog", err)
	}
	if w.armed() {
		t.Fatal("left armed after a failed arm")
	}
	if err := (&watchdog{device: filepath.Join(t.TempDir(), "missing")}).arm(4 * time.Second); !errors.Is(err, ErrWatchdog) {
		t.Fatalf("arm on a missing device: %v", err)
	}
	if err := WatchdogUsable(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, ErrWatchdog) {
		t.Fatalf("WatchdogUsable on a missing device: %v", err)
	}
}

func TestWatchdogMemberTags(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	tags, err := WatchdogConfig{Mode: WatchdogRequired, Device: missing}.MemberTags(raftstore.DefaultTags())
	if err == nil || !tags.NoFailover {
		t.Fatalf("required without a device: tags %+v, err %v; want nofailover and an error", tags, err)
	}
	tags, err = WatchdogConfig{Mode: WatchdogAutomatic, Device: missing}.MemberTags(raftstore.DefaultTags())
	if err != nil || tags.NoFailover {
		t.Fatalf("automatic without a device: tags %+v, err %v; want them unchanged", tags, err)
	}
}
