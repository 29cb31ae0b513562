package main

import (
	"github.com/urfave/cli/v2"

	"raftgres/pgmanager"
)

// fenceKeeperCommand is the hidden `raftgres fence-keeper`: the process
// the agent's PostgreSQL manager starts to kill PostgreSQL at the lease's
// end even when the agent is stopped or dead (pgmanager.RunFenceKeeper).
// It reads its instructions from stdin and is not meant to be run by hand.
func fenceKeeperCommand() *cli.Command {
	return &cli.Command{
		Name:   pgmanager.FenceKeeperCommand,
		Hidden: true,
		Usage:  "kill PostgreSQL at the lease's end (started by the agent)",
		Action: func(c *cli.Context) error {
			if code := pgmanager.FenceKeeperMain(); code != 0 {
				return cli.Exit("", code)
			}
			return nil
		},
	}
}
