// Command raftgres keeps a PostgreSQL cluster highly available with one
// binary per host: every agent embeds a Raft peer, and the peers together
// are the consistent store.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	app := newApp()
	if err := app.Run(hoistFlags(app, os.Args)); err != nil {
		var ec cli.ExitCoder
		if errors.As(err, &ec) {
			if msg := err.Error(); msg != "" {
				fmt.Fprintln(os.Stderr, "raftgres:", msg)
			}
			os.Exit(ec.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "raftgres:", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:    "raftgres",
		Usage:   "PostgreSQL high availability with an embedded Raft store",
		Version: version,
		Description: "One raftgres agent runs on each of three or five PostgreSQL hosts. The agents form\n" +
			"their own Raft cluster (no etcd, Consul or ZooKeeper) holding the cluster's configuration,\n" +
			"members and leader key. Admin commands talk to any member's REST API: pass -c FILE (the\n" +
			"agent's config) or --api URL (with --username and $RAFTGRES_PASSWORD for changes, --token\n" +
			"for join/leave/snapshot).",
		HideHelpCommand: true,
		Commands: append(append([]*cli.Command{agentCommand(), demoCommand()}, ctlCommands()...),
			joinCommand(), leaveCommand(), snapshotCommand(), recoverCommand(), backupCommand(), backupsCommand(),
			checkConfigCommand(), convertPatroniCommand(), rotatePasswordCommand(), upgradeCheckCommand(), drillCommand(), versionCommand(),
			fenceKeeperCommand()),
	}
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the raftgres version",
		Action: func(c *cli.Context) error {
			fmt.Fprintf(c.App.Writer, "raftgres %s\n", version)
			return nil
		},
	}
}
