package vip

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// The gratuitous ARP is a dozen lines on an AF_PACKET socket rather than
// github.com/mdlayher/arp: that package has had no release or commit since
// 2022, and would bring three more modules (ethernet, packet, socket) for
// one fixed 42-byte frame.

const (
	ethPArp  = 0x0806
	ethPIPv4 = 0x0800
	// garpLen is an Ethernet header (14) and an ARP packet for IPv4 over
	// Ethernet (28); the kernel pads it to the minimum frame size.
	garpLen = 14 + 28
)

// garpFrame is a gratuitous ARP request (an ARP announcement, RFC 5227):
// broadcast, sender and target protocol address both addr, target
// hardware address zero. Every host on the segment that has addr in its
// cache updates it to mac; none replies.
func garpFrame(mac net.HardwareAddr, addr netip.Addr) ([]byte, error) {
	if len(mac) != 6 {
		return nil, fmt.Errorf("hardware address %q is not Ethernet", mac)
	}
	if !addr.Is4() {
		return nil, fmt.Errorf("%s is not IPv4", addr)
	}
	ip := addr.As4()
	b := make([]byte, garpLen)
	copy(b[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(b[6:12], mac)
	binary.BigEndian.PutUint16(b[12:14], ethPArp)
	a := b[14:]
	binary.BigEndian.PutUint16(a[0:2], 1) // hardware type: Ethernet
	binary.BigEndian.PutUint16(a[2:4], ethPIPv4)
	a[4], a[5] = 6, 4                     // address lengths
	binary.BigEndian.PutUint16(a[6:8], 1) // request
	copy(a[8:14], mac)
	copy(a[14:18], ip[:])
	// a[18:24]: target hardware address, zero
	copy(a[24:28], ip[:])
	return b, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// garpSocket is a packet socket bound to nothing, opened in the calling
// thread's network namespace (which it keeps, whichever thread sends).
func garpSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(ethPArp)))
	if err != nil {
		return -1, fmt.Errorf("gratuitous arp: packet socket: %w", err)
	}
	return fd, nil
}

// sendGARP sends frame once on the interface ifindex.
func sendGARP(fd, ifindex int, frame []byte) error {
	sa := &unix.SockaddrLinklayer{Protocol: htons(ethPArp), Ifindex: ifindex, Halen: 6}
	copy(sa.Addr[:], frame[0:6])
	if err := unix.Sendto(fd, frame, 0, sa); err != nil {
		return fmt.Errorf("gratuitous arp: send: %w", err)
	}
	return nil
}

// announce sends the first gratuitous ARP now, the others from a
// goroutine on the same socket; done closes after the last.
func announce(cfg Config, ifindex int, mac net.HardwareAddr, an Announce) (<-chan struct{}, error) {
	if an.Count <= 0 || len(mac) == 0 {
		// No link-layer address (a tunnel, lo): nothing to announce.
		return closed(), nil
	}
	frame, err := garpFrame(mac, cfg.Address.Addr())
	if err != nil {
		return closed(), err
	}
	fd, err := garpSocket()
	if err != nil {
		return closed(), err
	}
	first := sendGARP(fd, ifindex, frame)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer unix.Close(fd)
		t := time.NewTicker(an.Spacing)
		defer t.Stop()
		for range an.Count - 1 {
			<-t.C
			_ = sendGARP(fd, ifindex, frame)
		}
	}()
	return done, first
}
