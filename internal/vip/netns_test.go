package vip

import (
	"bytes"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// inNewNetns runs f on a thread of its own in a fresh network namespace
// (unshare), which dies with the thread: nothing it does reaches the
// host's interfaces. It needs RAFTGRES_INTEGRATION=1 and root, as the
// other real tests.
func inNewNetns(t *testing.T, f func()) {
	t.Helper()
	if os.Getenv("RAFTGRES_INTEGRATION") != "1" {
		t.Skip("real network test: set RAFTGRES_INTEGRATION=1 (make test does)")
	}
	if os.Geteuid() != 0 {
		t.Skip("real network test: needs root to make a network namespace")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Never unlocked: the thread, in its own namespace, exits with
		// this goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("network namespaces unavailable: %v", err)
			return
		}
		f()
	}()
	<-done
}

// TestAddRemoveInANetworkNamespace: Add is idempotent and announces the
// address with gratuitous ARP requests seen on the other end of a veth;
// Held follows; Remove is idempotent.
func TestAddRemoveInANetworkNamespace(t *testing.T) {
	inNewNetns(t, func() {
		la := netlink.NewLinkAttrs()
		la.Name = "vip0"
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "vip1"}); err != nil {
			t.Errorf("add veth: %v", err)
			return
		}
		for _, n := range []string{"vip0", "vip1"} {
			l, _ := netlink.LinkByName(n)
			if err := netlink.LinkSetUp(l); err != nil {
				t.Errorf("up %s: %v", n, err)
				return
			}
		}
		peer, _ := netlink.LinkByName("vip1")
		own, _ := netlink.LinkByName("vip0")
		sniff, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(ethPArp)))
		if err != nil {
			t.Errorf("sniffer: %v", err)
			return
		}
		defer unix.Close(sniff)
		if err := unix.Bind(sniff, &unix.SockaddrLinklayer{Protocol: htons(ethPArp), Ifindex: peer.Attrs().Index}); err != nil {
			t.Errorf("bind sniffer: %v", err)
			return
		}
		_ = unix.SetsockoptTimeval(sniff, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2})

		cfg := Config{Address: netip.MustParsePrefix("10.99.0.10/24"), Interface: "vip0"}
		if held, err := Held(cfg); err != nil || held {
			t.Errorf("Held before Add = %v, %v", held, err)
		}
		if err := Remove(cfg); err != nil {
			t.Errorf("Remove of an absent address: %v", err)
		}
		start := time.Now()
		done, err := Add(cfg, Announce{Count: 3, Spacing: 50 * time.Millisecond})
		if err != nil {
			t.Errorf("Add: %v", err)
			return
		}
		if d := time.Since(start); d > 40*time.Millisecond {
			t.Errorf("Add took %s: it must not wait for the announcements", d)
		}
		if _, err := Add(cfg, Announce{}); err != nil {
			t.Errorf("second Add: %v", err)
		}
		if held, err := Held(cfg); err != nil || !held {
			t.Errorf("Held after Add = %v, %v", held, err)
		}
		<-done
		want, _ := garpFrame(own.Attrs().HardwareAddr, cfg.Address.Addr())
		buf := make([]byte, 128)
		for i := range 3 {
			n, _, err := unix.Recvfrom(sniff, buf, 0)
			if err != nil {
				t.Errorf("gratuitous arp %d not seen: %v", i+1, err)
				return
			}
			if !bytes.Equal(buf[:len(want)], want) || n < len(want) {
				t.Errorf("gratuitous arp %d: got %x, want %x", i+1, buf[:n], want)
			}
		}
		if err := Remove(cfg); err != nil {
			t.Errorf("Remove: %v", err)
		}
		if err := Remove(cfg); err != nil {
			t.Errorf("second Remove: %v", err)
		}
		if held, err := Held(cfg); err != nil || held {
			t.Errorf("Held after Remove = %v, %v", held, err)
		}
		missing := Config{Address: cfg.Address, Interface: "nosuch0"}
		if err := Remove(missing); err != nil {
			t.Errorf("Remove on a missing interface: %v", err)
		}
		if _, err := Add(missing, DefaultAnnounce); err == nil {
			t.Errorf("Add on a missing interface succeeded")
		}
	})
}
