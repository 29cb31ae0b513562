package main

import (
	"fmt"
	"net/netip"

	"github.com/urfave/cli/v2"

	"raftgres/internal/vip"
	"raftgres/pgmanager"
)

// fenceKeeperCommand is the hidden `raftgres fence-keeper`: the process
// the agent's PostgreSQL manager starts to kill PostgreSQL at the lease's
// end even when the agent is stopped or dead (pgmanager.RunFenceKeeper),
// and to remove the VIP then (--vip, --vip-interface).
// It reads its instructions from stdin and is not meant to be run by hand.
func fenceKeeperCommand() *cli.Command {
	return &cli.Command{
		Name:   pgmanager.FenceKeeperCommand,
		Hidden: true,
		Usage:  "kill PostgreSQL at the lease's end (started by the agent)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: pgmanager.FenceKeeperVIPFlag, Usage: "the VIP to remove at the lease's end (ADDRESS/LEN)"},
			&cli.StringFlag{Name: pgmanager.FenceKeeperVIPInterfaceFlag, Usage: "its interface"},
		},
		Action: func(c *cli.Context) error {
			v, err := fenceKeeperVIP(c.String(pgmanager.FenceKeeperVIPFlag), c.String(pgmanager.FenceKeeperVIPInterfaceFlag))
			if err != nil {
				return cli.Exit("fence-keeper: "+err.Error(), 2)
			}
			if code := pgmanager.FenceKeeperMain(v); code != 0 {
				return cli.Exit("", code)
			}
			return nil
		},
	}
}

// fenceKeeperVIP is the VIP the keeper's flags name (zero without
// --vip), checked as the config's is.
func fenceKeeperVIP(addr, iface string) (vip.Config, error) {
	var v vip.Config
	if addr != "" || iface != "" {
		p, err := netip.ParsePrefix(addr)
		if err != nil {
			return vip.Config{}, fmt.Errorf("--%s: %w", pgmanager.FenceKeeperVIPFlag, err)
		}
		v = vip.Config{Address: p, Interface: iface}
	}
	if err := v.Validate(); err != nil {
		return vip.Config{}, fmt.Errorf("vip: %w", err)
	}
	return v, nil
}
