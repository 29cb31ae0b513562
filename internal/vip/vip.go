// Package vip adds and removes one virtual IPv4 address on a local
// interface through netlink, and announces it with gratuitous ARP sent on
// an AF_PACKET socket. It holds no state: the failover supervisor decides
// when this host holds the address (failover/vip.go), the fence keeper
// removes it at the lease's end when the agent cannot, and the agent
// removes a stale one at start. Adding needs CAP_NET_ADMIN, the ARP
// CAP_NET_RAW (caps.go).
package vip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"raftgres/internal/conf"
)

// Config is the vip: section.
type Config struct {
	// Address is the virtual address with its prefix length (10.0.0.10/24):
	// the length decides the subnet route of the address, as with ip addr add.
	Address netip.Prefix
	// Interface is the link it is added to (eth0).
	Interface string
}

// Enabled reports whether a VIP is configured.
func (c Config) Enabled() bool { return c.Address.IsValid() }

// String is "ADDRESS on INTERFACE" for the log.
func (c Config) String() string { return c.Address.String() + " on " + c.Interface }

// Validate checks an enabled section (a zero Config is valid: no VIP).
func (c Config) Validate() error {
	if !c.Enabled() {
		if c.Interface != "" {
			return conf.Errorf("address", "is required with interface")
		}
		return nil
	}
	var errs []error
	a := c.Address.Addr()
	switch {
	case !a.Is4():
		errs = append(errs, conf.Errorf("address", "must be an IPv4 address with a prefix length (10.0.0.10/24), got %s", c.Address))
	case c.Address.Bits() < 1 || c.Address.Bits() > 32:
		errs = append(errs, conf.Errorf("address", "prefix length must be 1 to 32, got %d", c.Address.Bits()))
	case a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		errs = append(errs, conf.Errorf("address", "%s cannot be a virtual address", a))
	case c.Address.Bits() <= 30 && (a == c.Address.Masked().Addr() || a == broadcast(c.Address)):
		errs = append(errs, conf.Errorf("address", "%s is the network or broadcast address of %s", a, c.Address.Masked()))
	}
	if err := checkInterfaceName(c.Interface); err != nil {
		errs = append(errs, conf.Errorf("interface", "%v", err))
	}
	return errors.Join(errs...)
}

func broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// checkInterfaceName applies the kernel's rules (dev_valid_name).
func checkInterfaceName(name string) error {
	switch {
	case name == "":
		return errors.New("is required with address")
	case len(name) >= unix.IFNAMSIZ:
		return fmt.Errorf("%q is longer than %d bytes", name, unix.IFNAMSIZ-1)
	case name == "." || name == "..":
		return fmt.Errorf("%q is not an interface name", name)
	case strings.ContainsAny(name, "/: \t\n"):
		return fmt.Errorf("%q holds a character an interface name cannot have", name)
	}
	return nil
}

// ErrNoInterface wraps an interface that does not exist.
var ErrNoInterface = errors.New("no such interface")

func link(cfg Config) (netlink.Link, error) {
	l, err := netlink.LinkByName(cfg.Interface)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("%w: %s", ErrNoInterface, cfg.Interface)
		}
		return nil, fmt.Errorf("interface %s: %w", cfg.Interface, err)
	}
	return l, nil
}

func nlAddr(cfg Config) *netlink.Addr {
	ip := net.IP(cfg.Address.Addr().AsSlice())
	return &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(cfg.Address.Bits(), 32)}}
}

// Announce is how the address is announced after Add: Count gratuitous
// ARP requests, Spacing apart.
type Announce struct {
	Count   int
	Spacing time.Duration
}

// DefaultAnnounce sends 3, 150 ms apart: a switch or a client that missed
// the first still learns the new owner within a third of a second.
var DefaultAnnounce = Announce{Count: 3, Spacing: 150 * time.Millisecond}

// Add adds the address to the interface (nothing when it is there) and
// announces it: the first gratuitous ARP is sent before Add returns, the
// rest from a goroutine (done is closed after the last; it may be
// ignored). An error sending the ARP is returned with the address added:
// the address is held, clients' ARP caches may lag until they ask again.
func Add(cfg Config, an Announce) (done <-chan struct{}, err error) {
	l, err := link(cfg)
	if err != nil {
		return closed(), err
	}
	if err := netlink.AddrReplace(l, nlAddr(cfg)); err != nil {
		return closed(), fmt.Errorf("add %s: %w", cfg, err)
	}
	return announce(cfg, l.Attrs().Index, l.Attrs().HardwareAddr, an)
}

func closed() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// Remove removes the address from the interface; an address or an
// interface that is not there is no error.
func Remove(cfg Config) error {
	l, err := link(cfg)
	if errors.Is(err, ErrNoInterface) {
		return nil
	}
	if err != nil {
		return err
	}
	err = netlink.AddrDel(l, nlAddr(cfg))
	if err == nil || errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.ENOENT) {
		return nil
	}
	return fmt.Errorf("remove %s: %w", cfg, err)
}

// Held reports whether the interface carries the address (with any
// prefix length).
func Held(cfg Config) (bool, error) {
	l, err := link(cfg)
	if errors.Is(err, ErrNoInterface) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return false, fmt.Errorf("list addresses of %s: %w", cfg.Interface, err)
	}
	want := net.IP(cfg.Address.Addr().AsSlice())
	for _, a := range addrs {
		if a.IP.Equal(want) {
			return true, nil
		}
	}
	return false, nil
}
