package main

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"raftgres/api"
	"raftgres/config"
	"raftgres/raftstore"
)

func joinCommand() *cli.Command {
	return &cli.Command{
		Name:      "join",
		Usage:     "ask the cluster to add this host (from its config) as a nonvoter",
		ArgsUsage: " ",
		Description: "Sends a join request for the member described by -c FILE (name and raft address) to\n" +
			"--api URL, or to the addresses in raft.join. The member is added as a nonvoter; its agent,\n" +
			"once started, catches up and promotes itself to voter. An agent with raft.join set does\n" +
			"this by itself, so this command is only needed to pre-register a host.",
		Flags: []cli.Flag{configFlag(true), apiFlag(), tokenFlag()},
		Action: func(c *cli.Context) error {
			cfg, err := config.Load(c.String("config"))
			if err != nil {
				return cli.Exit(err.Error(), 2)
			}
			targets := cfg.Join
			if u := c.String("api"); u != "" {
				targets = []string{u}
			}
			if len(targets) == 0 {
				return cli.Exit("join: no target: set raft.join in the config or pass --api URL", 2)
			}
			opts, err := cfg.PeerClientOptions()
			if err != nil {
				return cli.Exit(err.Error(), 2)
			}
			if t := c.String("token"); t != "" {
				opts.Token = t
			}
			req := raftstore.JoinRequest{ID: cfg.Name, RaftAddr: cfg.Raft.AdvertiseAddr()}
			var errs []error
			for _, t := range targets {
				resp, err := api.NewClient(t, opts).Join(c.Context, req)
				if err == nil {
					fmt.Fprintf(c.App.Writer, "%s added as nonvoter at raft index %d (leader %s); start its agent to finish joining\n",
						cfg.Name, resp.Index, resp.LeaderID)
					return nil
				}
				errs = append(errs, fmt.Errorf("%s: %w", t, err))
			}
			return cli.Exit("join failed: "+errors.Join(errs...).Error(), 1)
		},
	}
}
