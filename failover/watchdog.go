package failover

import (
	"errors"
	"fmt"
	"math"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"raftgres/internal/conf"
	"raftgres/raftstore"
)

// Watchdog modes (the watchdog: section), as in Patroni.
const (
	WatchdogOff       = "off"
	WatchdogAutomatic = "automatic" // use it when it can be armed, else run without
	WatchdogRequired  = "required"  // never be primary without an armed watchdog
)

// WatchdogConfig is the watchdog: section.
type WatchdogConfig struct {
	Mode   string
	Device string
}

// DefaultWatchdogConfig is an absent watchdog: section.
func DefaultWatchdogConfig() WatchdogConfig {
	return WatchdogConfig{Mode: WatchdogOff, Device: "/dev/watchdog"}
}

// Validate checks the section against the bootstrap ttl; paths are relative
// to watchdog:.
func (c WatchdogConfig) Validate(ttl time.Duration) error {
	switch c.Mode {
	case WatchdogOff:
		return nil
	case WatchdogAutomatic, WatchdogRequired:
	default:
		return conf.Errorf("mode", "must be off, automatic or required, got %q", c.Mode)
	}
	if c.Device == "" {
		return conf.Errorf("device", "is required with mode %s", c.Mode)
	}
	if _, ok := WatchdogTimeout(ttl); !ok {
		return conf.Errorf("mode", "%s needs a whole-second watchdog timeout between the lease's end plus the fencing "+
			"budget and ttl (minus drift); bootstrap.dcs.ttl %s has none: use ttl ≥ 5s", c.Mode, ttl)
	}
	return nil
}

// WatchdogTimeout is the hardware watchdog timeout T for ttl. A keepalive
// is sent right after an acknowledged renewal (at most FenceBudget/2 after
// it was sent), so an agent that freezes after it is reset at T:
//   - T ≥ ttl − Margin + FenceBudget: after the lease's end and the software
//     fence that follows it, so a healthy agent that lost its lease demotes
//     (and disarms) before the watchdog fires;
//   - T ≤ ttl − 2·ρ·ttl − FenceBudget/2: before the coordinator, counting
//     ttl on its own clock from that renewal, may elect someone else.
//
// Linux watchdogs count whole seconds; ok is false when no whole second
// fits (ttl under 5s).
func WatchdogTimeout(ttl time.Duration) (time.Duration, bool) {
	lo := ttl - Margin(ttl) + FenceBudget
	hi := ttl - time.Duration(2*raftstore.ClockRate*float64(ttl)) - FenceBudget/2
	t := time.Duration(math.Ceil(lo.Seconds())) * time.Second
	return t, t <= hi && t >= time.Second
}

// watchdog drives a Linux watchdog device (/dev/watchdog): opening arms it,
// WDIOC_KEEPALIVE feeds it, writing "V" before close disarms it.
type watchdog struct {
	device  string
	f       *os.File
	timeout time.Duration
}

// ErrWatchdog wraps a watchdog that cannot be armed or fed.
var ErrWatchdog = errors.New("watchdog")

// arm opens the device with timeout (whole seconds), or re-sets the timeout
// if it is armed with another one.
func (w *watchdog) arm(timeout time.Duration) error {
	if w.f != nil && w.timeout == timeout {
		return nil
	}
	if w.f == nil {
		f, err := os.OpenFile(w.device, os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("%w: open %s: %w", ErrWatchdog, w.device, err)
		}
		w.f = f
	}
	secs := int(timeout / time.Second)
	if err := unix.IoctlSetPointerInt(int(w.f.Fd()), unix.WDIOC_SETTIMEOUT, secs); err != nil {
		w.disarm()
		return fmt.Errorf("%w: set %s timeout to %ds: %w", ErrWatchdog, w.device, secs, err)
	}
	got, err := unix.IoctlGetInt(int(w.f.Fd()), unix.WDIOC_GETTIMEOUT)
	if err != nil || got != secs {
		w.disarm()
		return fmt.Errorf("%w: %s took timeout %ds, want %ds (%v)", ErrWatchdog, w.device, got, secs, err)
	}
	w.timeout = timeout
	return nil
}

func (w *watchdog) keepalive() error {
	if w.f == nil {
		return fmt.Errorf("%w: not armed", ErrWatchdog)
	}
	if _, err := unix.IoctlGetInt(int(w.f.Fd()), unix.WDIOC_KEEPALIVE); err != nil {
		return fmt.Errorf("%w: keepalive %s: %w", ErrWatchdog, w.device, err)
	}
	return nil
}

// disarm writes the magic close character and closes the device.
func (w *watchdog) disarm() {
	if w.f == nil {
		return
	}
	_, _ = w.f.Write([]byte("V"))
	_ = w.f.Close()
	w.f, w.timeout = nil, 0
}

func (w *watchdog) armed() bool { return w.f != nil }

// MemberTags returns the tags this member registers with: in required mode
// a watchdog that cannot be used makes it nofailover (it must never be
// primary without one), and err says why.
func (c WatchdogConfig) MemberTags(tags raftstore.Tags) (raftstore.Tags, error) {
	if c.Mode != WatchdogRequired || tags.NoFailover {
		return tags, nil
	}
	if err := WatchdogUsable(c.Device); err != nil {
		tags.NoFailover = true
		return tags, fmt.Errorf("watchdog.mode is required but the watchdog is unusable: registered as nofailover: %w", err)
	}
	return tags, nil
}

// WatchdogUsable reports why the device cannot be used, without arming it.
func WatchdogUsable(device string) error {
	if err := unix.Access(device, unix.W_OK); err != nil {
		return fmt.Errorf("%w: %s is not writable by this user: %w", ErrWatchdog, device, err)
	}
	return nil
}
