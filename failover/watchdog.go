package failover

import (
	"errors"
	"fmt"
	"math"
	"time"

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

// Watchdog is the hardware watchdog the supervisor arms while this member
// runs as primary under a valid lease and feeds after each acknowledged
// renewal (internal/watchdog drives Linux's /dev/watchdog; the agent hands
// it in through Config.WatchdogDevice). Only the supervisor's loop drives
// it.
type Watchdog interface {
	// Usable reports why the device cannot be used, without arming it.
	Usable() error
	// Arm arms it with timeout (whole seconds), or re-sets the timeout;
	// a device that does not take it is left disarmed.
	Arm(timeout time.Duration) error
	// Keepalive feeds the armed device.
	Keepalive() error
	// Disarm disarms it (a clean close).
	Disarm()
	Armed() bool
	// String names the device for the log.
	String() string
}

// ErrWatchdog wraps a watchdog that cannot be armed, fed or used.
var ErrWatchdog = errors.New("watchdog")

// noWatchdog stands for a device the agent did not hand in while the mode
// asks for one: never usable, so required mode never promotes without one.
type noWatchdog struct{}

func (noWatchdog) Usable() error {
	return fmt.Errorf("%w: no watchdog device given to the supervisor", ErrWatchdog)
}
func (w noWatchdog) Arm(time.Duration) error { return w.Usable() }
func (w noWatchdog) Keepalive() error        { return w.Usable() }
func (noWatchdog) Disarm()                   {}
func (noWatchdog) Armed() bool               { return false }
func (noWatchdog) String() string            { return "none" }

// MemberTags returns the tags this member registers with: in required mode
// a watchdog that cannot be used makes it nofailover (it must never be
// primary without one), and err says why.
func (c WatchdogConfig) MemberTags(tags raftstore.Tags, wd Watchdog) (raftstore.Tags, error) {
	if c.Mode != WatchdogRequired || tags.NoFailover {
		return tags, nil
	}
	if wd == nil {
		wd = noWatchdog{}
	}
	if err := wd.Usable(); err != nil {
		tags.NoFailover = true
		return tags, fmt.Errorf("watchdog.mode is required but the watchdog is unusable: registered as nofailover: %w", err)
	}
	return tags, nil
}
