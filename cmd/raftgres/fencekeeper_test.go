package main

import (
	"net/netip"
	"testing"

	"raftgres/internal/vip"
	"raftgres/pgmanager"
)

// The keeper reads back the VIP the agent names on its command line
// (pgmanager.SelfFenceKeeperWithVIP), and refuses a malformed one.
func TestFenceKeeperVIPFlags(t *testing.T) {
	t.Parallel()
	want := vip.Config{Address: netip.MustParsePrefix("10.0.0.10/24"), Interface: "eth0"}
	args := pgmanager.SelfFenceKeeperWithVIP(want)().Args
	if len(args) != 6 {
		t.Fatalf("keeper args %q", args)
	}
	got, err := fenceKeeperVIP(args[3], args[5])
	if err != nil || got != want {
		t.Fatalf("fenceKeeperVIP(%q, %q) = %+v, %v; want %+v", args[3], args[5], got, err, want)
	}
	if got, err := fenceKeeperVIP("", ""); err != nil || got.Enabled() {
		t.Errorf("no flags: %+v, %v; want no VIP", got, err)
	}
	for _, bad := range [][2]string{{"10.0.0.10", "eth0"}, {"10.0.0.10/24", ""}, {"", "eth0"}, {"fd00::1/64", "eth0"}} {
		if _, err := fenceKeeperVIP(bad[0], bad[1]); err == nil {
			t.Errorf("fenceKeeperVIP(%q, %q) accepted", bad[0], bad[1])
		}
	}
}
