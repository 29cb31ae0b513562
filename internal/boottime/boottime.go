// Package boottime is the clock every lease deadline is read on:
// CLOCK_BOOTTIME, which keeps counting while the host is suspended (Go's
// monotonic clock, CLOCK_MONOTONIC, stops then). A host that resumes from
// a suspend therefore sees its lease as ended, not as still running for
// the time it slept. A paused QEMU/KVM guest is another matter: kvm-clock
// stops every guest clock, this one included, while the VM is stopped
// (stop/cont, savevm/loadvm, migration downtime); see the README's
// guarantees.
//
// Now returns that clock as a time.Time anchored at the wall clock of the
// moment this process first read it. The value carries no monotonic
// reading, so Sub, Before and After between two of its values use the
// boot clock alone; formatted, it reads as the wall clock (drifting from
// it only by the NTP corrections made since the process started).
// Nanos gives the raw CLOCK_BOOTTIME reading of such a time, which another
// process (the fence keeper) compares with its own reading of the same
// system-wide clock.
package boottime

import (
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

var (
	anchorOnce sync.Once
	anchor     int64 // wall-clock nanoseconds at boot-clock reading zero
)

// Raw returns CLOCK_BOOTTIME in nanoseconds.
func Raw() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		// CLOCK_BOOTTIME exists on every Linux since 2.6.39; the
		// monotonic clock is the closest fallback.
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			panic("boottime: no monotonic clock: " + err.Error())
		}
	}
	return ts.Nano()
}

func base() int64 {
	anchorOnce.Do(func() {
		wall := time.Now().UnixNano()
		anchor = wall - Raw()
	})
	return anchor
}

// Now returns the boot clock as a time.Time with no monotonic reading.
func Now() time.Time { return time.Unix(0, base()+Raw()) }

// Nanos returns the CLOCK_BOOTTIME reading, in nanoseconds, of t, a time
// from Now (or derived from one with Add).
func Nanos(t time.Time) int64 { return t.UnixNano() - base() }

// FromNanos is the inverse of Nanos.
func FromNanos(n int64) time.Time { return time.Unix(0, base()+n) }
