// Package watchdog drives a Linux hardware watchdog device
// (/dev/watchdog): opening arms it, WDIOC_KEEPALIVE feeds it, writing "V"
// before close disarms it. It implements failover.Watchdog; the agent
// hands a Device to the supervisor, which never sees the ioctls.
package watchdog

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ErrWatchdog wraps a watchdog that cannot be armed, fed or used.
var ErrWatchdog = errors.New("watchdog")

// Device is one watchdog device. It is not safe for concurrent use: the
// supervisor's loop alone drives it.
type Device struct {
	path    string
	f       *os.File
	timeout time.Duration
}

// New returns the device at path, not armed.
func New(path string) *Device { return &Device{path: path} }

// String is the device's path.
func (d *Device) String() string { return d.path }

// Usable reports why the device cannot be used, without arming it.
func (d *Device) Usable() error {
	if err := unix.Access(d.path, unix.W_OK); err != nil {
		return fmt.Errorf("%w: %s is not writable by this user: %w", ErrWatchdog, d.path, err)
	}
	return nil
}

// Arm opens the device with timeout (whole seconds), or re-sets the
// timeout if it is armed with another one. A device that does not take
// the timeout is left disarmed.
func (d *Device) Arm(timeout time.Duration) error {
	if d.f != nil && d.timeout == timeout {
		return nil
	}
	if d.f == nil {
		f, err := os.OpenFile(d.path, os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("%w: open %s: %w", ErrWatchdog, d.path, err)
		}
		d.f = f
	}
	secs := int(timeout / time.Second)
	if err := unix.IoctlSetPointerInt(int(d.f.Fd()), unix.WDIOC_SETTIMEOUT, secs); err != nil {
		d.Disarm()
		return fmt.Errorf("%w: set %s timeout to %ds: %w", ErrWatchdog, d.path, secs, err)
	}
	got, err := unix.IoctlGetInt(int(d.f.Fd()), unix.WDIOC_GETTIMEOUT)
	if err != nil || got != secs {
		d.Disarm()
		return fmt.Errorf("%w: %s took timeout %ds, want %ds (%v)", ErrWatchdog, d.path, got, secs, err)
	}
	d.timeout = timeout
	return nil
}

// Keepalive feeds the armed device.
func (d *Device) Keepalive() error {
	if d.f == nil {
		return fmt.Errorf("%w: not armed", ErrWatchdog)
	}
	if _, err := unix.IoctlGetInt(int(d.f.Fd()), unix.WDIOC_KEEPALIVE); err != nil {
		return fmt.Errorf("%w: keepalive %s: %w", ErrWatchdog, d.path, err)
	}
	return nil
}

// Disarm writes the magic close character and closes the device.
func (d *Device) Disarm() {
	if d.f == nil {
		return
	}
	_, _ = d.f.Write([]byte("V"))
	_ = d.f.Close()
	d.f, d.timeout = nil, 0
}

// Armed reports whether the device is open (armed).
func (d *Device) Armed() bool { return d.f != nil }

// arming opens a regular file as if it were the device (tests).
func (d *Device) arming(f *os.File, timeout time.Duration) { d.f, d.timeout = f, timeout }
