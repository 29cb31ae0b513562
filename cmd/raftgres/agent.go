package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"raftgres/agent"
	"raftgres/config"
)

func agentCommand() *cli.Command {
	return &cli.Command{
		Name:  "agent",
		Usage: "run the raftgres agent of this host (Raft peer, REST API, PostgreSQL supervisor)",
		Description: "Runs this host's Raft peer and REST API until SIGINT or SIGTERM and, when the config\n" +
			"has a postgresql: section, supervises the local PostgreSQL (initdb or clone, streaming,\n" +
			"promotion, fencing, pg_rewind) as a child process.\n\n" +
			"A brand-new cluster starts from raft.bootstrap_peers (the same list on every host); a host\n" +
			"joining an existing cluster lists any member's API address in raft.join and is added as a\n" +
			"nonvoter, then promoted to voter once it has caught up. The agent refuses to run as root:\n" +
			"run it as the postgres user (see examples/ for a systemd unit).",
		Flags: []cli.Flag{configFlag(true)},
		Action: func(c *cli.Context) error {
			if os.Geteuid() == 0 {
				return cli.Exit("the agent must not run as root: PostgreSQL refuses root and so does raftgres; "+
					"run it as the postgres user, e.g. sudo -u postgres raftgres agent -c "+c.String("config"), 1)
			}
			cfg, err := config.Load(c.String("config"))
			if err != nil {
				return cli.Exit(err.Error(), 2)
			}
			if cfg.HasPostgres {
				// PostgreSQL and the libpq tools run as this user and refuse a
				// key file that others can read: say so before starting.
				if err := cfg.Postgres.CheckSSLFiles(os.Geteuid()); err != nil {
					return cli.Exit(fmt.Sprintf("config %s: %v", cfg.Path, err), 2)
				}
			}
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			logger := newLogger(cfg.Log, os.Stderr).With("node", cfg.Name)
			for _, n := range cfg.Notes {
				logger.Info("config note", "key", n.Path, "line", n.Line, "note", n.Msg)
			}
			if err := agent.Run(ctx, cfg, logger, version); err != nil {
				logger.Error("agent stopped", "error", err)
				return cli.Exit("", 1)
			}
			return nil
		},
	}
}
