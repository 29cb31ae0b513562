package vip

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // substring of the error; "" for valid
	}{
		{"none", Config{}, ""},
		{"ok", Config{Address: p("10.0.0.10/24"), Interface: "eth0"}, ""},
		{"host route", Config{Address: p("10.0.0.10/32"), Interface: "eth0"}, ""},
		{"point to point", Config{Address: p("10.0.0.0/31"), Interface: "eth0"}, ""},
		{"interface without address", Config{Interface: "eth0"}, "address: is required with interface"},
		{"no interface", Config{Address: p("10.0.0.10/24")}, "interface: is required with address"},
		{"ipv6", Config{Address: p("fd00::10/64"), Interface: "eth0"}, "address: must be an IPv4 address"},
		{"network", Config{Address: p("10.0.0.0/24"), Interface: "eth0"}, "network or broadcast"},
		{"broadcast", Config{Address: p("10.0.0.255/24"), Interface: "eth0"}, "network or broadcast"},
		{"loopback", Config{Address: p("127.0.0.2/8"), Interface: "lo"}, "cannot be a virtual address"},
		{"prefix 0", Config{Address: p("10.0.0.10/0"), Interface: "eth0"}, "prefix length must be 1 to 32"},
		{"long name", Config{Address: p("10.0.0.10/24"), Interface: strings.Repeat("e", 16)}, "longer than 15 bytes"},
		{"slash", Config{Address: p("10.0.0.10/24"), Interface: "eth/0"}, "interface: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate() = %v, want it to say %q", err, tc.want)
			}
		})
	}
}

func TestGARPFrame(t *testing.T) {
	t.Parallel()
	mac := net.HardwareAddr{0x02, 0x42, 0xac, 0x11, 0x00, 0x02}
	got, err := garpFrame(mac, netip.MustParseAddr("10.0.0.10"))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := hex.DecodeString("ffffffffffff" + "0242ac110002" + "0806" + // Ethernet: broadcast, from mac, ARP
		"0001" + "0800" + "06" + "04" + "0001" + // Ethernet/IPv4, request
		"0242ac110002" + "0a00000a" + // sender: mac, 10.0.0.10
		"000000000000" + "0a00000a") // target: zero, 10.0.0.10
	if !bytes.Equal(got, want) {
		t.Fatalf("frame\n got %x\nwant %x", got, want)
	}
	if _, err := garpFrame(net.HardwareAddr{1, 2, 3}, netip.MustParseAddr("10.0.0.10")); err == nil {
		t.Fatal("a 3-byte hardware address was accepted")
	}
	if _, err := garpFrame(mac, netip.MustParseAddr("fd00::1")); err == nil {
		t.Fatal("an IPv6 address was accepted")
	}
}

func TestCheckCaps(t *testing.T) {
	t.Parallel()
	both := uint64(1)<<unix.CAP_NET_ADMIN | 1<<unix.CAP_NET_RAW
	if err := CheckCaps(CapSets{Effective: both, Permitted: both, Inheritable: both}); err != nil {
		t.Fatalf("all present: %v", err)
	}
	err := CheckCaps(CapSets{Effective: 1 << unix.CAP_NET_ADMIN, Inheritable: both})
	if !errors.Is(err, ErrCaps) || !strings.Contains(err.Error(), "needs CAP_NET_RAW") ||
		!strings.Contains(err.Error(), "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW") {
		t.Fatalf("no CAP_NET_RAW: %v", err)
	}
	err = CheckCaps(CapSets{Permitted: both})
	if err == nil || !strings.Contains(err.Error(), "CAP_NET_ADMIN and CAP_NET_RAW") {
		t.Fatalf("not effective: %v", err)
	}
}
