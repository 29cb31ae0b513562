package vip

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The agent runs as the postgres user. With a VIP it needs CAP_NET_ADMIN
// (addresses) and CAP_NET_RAW (the ARP), which systemd gives it with
// AmbientCapabilities=. The ambient set is inherited across execve by
// every child, though (PostgreSQL, archive_command, hooks, pg_basebackup),
// so the agent clears it at start in every thread (ClearAmbient) and
// keeps the capabilities in its own permitted and effective sets only;
// the fence keeper, which removes the VIP when the agent cannot, is
// started with CAP_NET_ADMIN raised explicitly (pgmanager.SelfFenceKeeperWithVIP).

// Needed are the capabilities a non-root agent with a VIP must have.
var Needed = []uintptr{unix.CAP_NET_ADMIN, unix.CAP_NET_RAW}

var capNames = map[uintptr]string{unix.CAP_NET_ADMIN: "CAP_NET_ADMIN", unix.CAP_NET_RAW: "CAP_NET_RAW"}

// CapSets are a thread's capability sets (64 bits each).
type CapSets struct {
	Effective, Permitted, Inheritable uint64
}

// Has reports whether set holds capability c.
func Has(set uint64, c uintptr) bool { return set&(1<<c) != 0 }

// ReadCaps reads the calling thread's capability sets.
func ReadCaps() (CapSets, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return CapSets{}, fmt.Errorf("capget: %w", err)
	}
	join := func(lo, hi uint32) uint64 { return uint64(hi)<<32 | uint64(lo) }
	return CapSets{
		Effective:   join(data[0].Effective, data[1].Effective),
		Permitted:   join(data[0].Permitted, data[1].Permitted),
		Inheritable: join(data[0].Inheritable, data[1].Inheritable),
	}, nil
}

// ErrCaps wraps missing capabilities and an ambient set that cannot be
// cleared.
var ErrCaps = errors.New("capabilities")

// CheckCaps says what a non-root agent with a VIP lacks: each capability
// of Needed in its effective set (to add and remove the address, send
// the ARP; being permitted, it can also be raised in the fence keeper's
// ambient set). nil when nothing is missing.
func CheckCaps(c CapSets) error {
	var missing []string
	for _, n := range Needed {
		if !Has(c.Effective, n) {
			missing = append(missing, capNames[n])
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%w: vip: needs %s: add to the systemd unit "+
		"AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW (see examples/systemd/raftgres.service), or remove the vip: section",
		ErrCaps, strings.Join(missing, " and "))
}

// ClearAmbient empties the ambient and inheritable capability sets of
// every thread of this process, so no child it starts from now on
// inherits a capability (not even by executing a file with inheritable
// file capabilities); the process keeps its own permitted and effective
// sets. Go's AllThreadsSyscall is refused (ENOTSUP) in a binary built
// with cgo: build with CGO_ENABLED=0.
func ClearAmbient() error {
	_, _, errno := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0)
	if errno != 0 {
		return allThreadsError("clear the ambient set", errno)
	}
	// Every thread has the same sets (nothing here changes one alone):
	// read them on this one, write them back without the inheritable.
	hdr := &unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := new([2]unix.CapUserData)
	if err := unix.Capget(hdr, &data[0]); err != nil {
		return fmt.Errorf("%w: capget: %w", ErrCaps, err)
	}
	data[0].Inheritable, data[1].Inheritable = 0, 0
	_, _, errno = syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	runtime.KeepAlive(hdr)
	runtime.KeepAlive(data)
	if errno != 0 {
		return allThreadsError("clear the inheritable set", errno)
	}
	return nil
}

func allThreadsError(what string, errno syscall.Errno) error {
	if errno == syscall.ENOTSUP {
		return fmt.Errorf("%w: %s: this binary was built with cgo, which cannot change "+
			"every thread: build it with CGO_ENABLED=0 (make build does)", ErrCaps, what)
	}
	return fmt.Errorf("%w: %s: %w", ErrCaps, what, errno)
}

// AmbientIsEmpty reports whether the calling thread's ambient set is
// empty (each of Needed checked).
func AmbientIsEmpty() bool {
	for _, c := range Needed {
		r, err := unix.PrctlRetInt(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_IS_SET, c, 0, 0)
		if err == nil && r != 0 {
			return false
		}
	}
	return true
}
