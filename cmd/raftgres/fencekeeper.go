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
			var v vip.Config
			if a := c.String(pgmanager.FenceKeeperVIPFlag); a != "" {
				p, err := netip.ParsePrefix(a)
				if err != nil {
					return cli.Exit(fmt.Sprintf("fence-keeper: --%s: %v", pgmanager.FenceKeeperVIPFlag, err), 2)
				}
				v = vip.Config{Address: p, Interface: c.String(pgmanager.FenceKeeperVIPInterfaceFlag)}
			}
			if err := v.Validate(); err != nil {
				return cli.Exit(fmt.Sprintf("fence-keeper: vip: %v", err), 2)
			}
			if code := pgmanager.FenceKeeperMain(v); code != 0 {
				return cli.Exit("", code)
			}
			return nil
		},
	}
}
