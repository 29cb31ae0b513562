package watchdog

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestArmRefusesNonDevice: a file that takes no watchdog ioctls is refused
// with ErrWatchdog and left closed; a missing device is refused and
// reported unusable.
func TestArmRefusesNonDevice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "watchdog")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	d := New(path)
	if err := d.Arm(4 * time.Second); !errors.Is(err, ErrWatchdog) {
		t.Fatalf("arm on a regular file: %v, want ErrWatchdog", err)
	}
	if d.Armed() {
		t.Fatal("left armed after a failed arm")
	}
	missing := New(filepath.Join(t.TempDir(), "missing"))
	if err := missing.Arm(4 * time.Second); !errors.Is(err, ErrWatchdog) {
		t.Fatalf("arm on a missing device: %v", err)
	}
	if err := missing.Usable(); !errors.Is(err, ErrWatchdog) {
		t.Fatalf("Usable on a missing device: %v", err)
	}
}

// TestKeepaliveAndDisarm: a keepalive needs an armed device, and disarm
// writes the magic close character before closing it.
func TestKeepaliveAndDisarm(t *testing.T) {
	if err := New("/nonexistent").Keepalive(); !errors.Is(err, ErrWatchdog) {
		t.Fatalf("keepalive when not armed: %v", err)
	}
	path := filepath.Join(t.TempDir(), "watchdog")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	d := New(path)
	d.arming(f, 2*time.Second)
	if err := d.Keepalive(); !errors.Is(err, ErrWatchdog) {
		t.Fatalf("keepalive on a regular file: %v, want the ioctl refused", err)
	}
	d.Disarm()
	if d.Armed() {
		t.Fatal("armed after Disarm")
	}
	if b, _ := os.ReadFile(path); string(b) != "V" {
		t.Fatalf("disarm wrote %q, want the magic close character V", b)
	}
}
