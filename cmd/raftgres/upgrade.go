package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"raftgres/ops"
	"raftgres/raftstore"
)

func upgradeCheckCommand() *cli.Command {
	return &cli.Command{
		Name:  "upgrade-check",
		Usage: "say whether the cluster can take the next step of a rolling upgrade to this binary's release",
		Description: "Run it with the new binary, from any host, before each step. It reads the cluster and\n" +
			"compares every member's agent (the release and protocol it registered with, GET /cluster)\n" +
			"with this binary's. It names the next member to upgrade, replicas first; the primary's host\n" +
			"comes last, after a switchover to a streaming replica. It refuses (exit 1, with every\n" +
			"reason) while the cluster is not healthy enough to lose one member for a restart: no running\n" +
			"primary, a member not running or not streaming, a pending switchover, maintenance mode, or\n" +
			"a member already on a newer protocol than this binary. Exit 0: the step it prints may be\n" +
			"taken, or every member already runs this release.",
		Flags: append(adminFlags(),
			&cli.StringFlag{Name: "format", Value: "text", Usage: "text or json"},
		),
		Action: func(c *cli.Context) error {
			if f := c.String("format"); f != "text" && f != "json" {
				return cli.Exit("upgrade-check: --format must be text or json, got "+f, 2)
			}
			client, probe, note, err := readClient(c)
			if err != nil {
				return err
			}
			if note != "" {
				fmt.Fprintln(c.App.ErrWriter, note)
			}
			if probe == nil {
				ctx, cancel := context.WithTimeout(c.Context, 10*time.Second)
				defer cancel()
				view, err := client.ClusterView(ctx)
				if err != nil {
					return cli.Exit("upgrade-check: cannot read the cluster: "+err.Error(), 1)
				}
				probe = &view
			}
			target := raftstore.AgentVersion{Version: version, Protocol: raftstore.Protocol}
			plan := ops.PlanUpgrade(*probe, ops.StreamingReplicas(c.Context, client, *probe), target)
			if c.String("format") == "json" {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				_ = enc.Encode(plan)
			} else {
				plan.Render(c.App.Writer)
			}
			if len(plan.Blockers) > 0 {
				return cli.Exit("", 1)
			}
			return nil
		},
	}
}
