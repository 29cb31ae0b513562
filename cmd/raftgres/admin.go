package main

import (
	"fmt"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"raftgres/api"
	"raftgres/config"
)

func configFlag(required bool) cli.Flag {
	return &cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "agent config `FILE`", Required: required,
		EnvVars: []string{"RAFTGRES_CONFIG"}}
}

func apiFlag() cli.Flag {
	return &cli.StringFlag{Name: "api", Usage: "REST API `URL` of any member (instead of -c)", EnvVars: []string{"RAFTGRES_API"}}
}

func tokenFlag() cli.Flag {
	return &cli.StringFlag{Name: "token", Usage: "cluster `TOKEN` for internal endpoints (default: raft.token from -c)",
		EnvVars: []string{"RAFTGRES_TOKEN"}}
}

func adminFlags() []cli.Flag {
	return []cli.Flag{configFlag(false), apiFlag(), tokenFlag(),
		&cli.StringFlag{Name: "username", Usage: "REST API `USER` for admin requests (default: restapi.authentication from -c; " +
			"the password comes from -c or $RAFTGRES_PASSWORD)", EnvVars: []string{"RAFTGRES_USERNAME"}},
	}
}

// adminClient builds an API client from --api/--token or from -c FILE.
func adminClient(c *cli.Context) (*api.Client, error) {
	var opts api.ClientOptions
	base := c.String("api")
	if path := c.String("config"); path != "" {
		cfg, err := config.Load(path)
		if err != nil {
			return nil, err
		}
		if opts, err = cfg.PeerClientOptions(); err != nil {
			return nil, err
		}
		if base == "" {
			base = cfg.API.BaseURL()
		}
		opts.Username, opts.Password = cfg.API.Username, cfg.API.Password.Reveal()
	}
	if u := c.String("username"); u != "" {
		opts.Username = u
	}
	if p := os.Getenv("RAFTGRES_PASSWORD"); p != "" {
		opts.Password = p
	}
	if base == "" {
		return nil, fmt.Errorf("say which cluster: pass -c FILE or --api URL")
	}
	if t := c.String("token"); t != "" {
		opts.Token = t
	}
	opts.Timeout = 30 * time.Second
	return api.NewClient(base, opts), nil
}

func leaveCommand() *cli.Command {
	return &cli.Command{
		Name:      "leave",
		Usage:     "remove MEMBER from the cluster (Raft configuration and member list)",
		ArgsUsage: "MEMBER",
		Description: "Removes MEMBER through any member's API; the request is passed to the Raft leader.\n" +
			"If MEMBER is the Raft leader it first hands leadership to another voter. The removed\n" +
			"member's agent notices and stops. The member that holds the leader key (the primary)\n" +
			"is refused: run switchover first.",
		Flags: adminFlags(),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("leave: give exactly one MEMBER", 2)
			}
			client, err := adminClient(c)
			if err != nil {
				return cli.Exit(err.Error(), 2)
			}
			member := c.Args().First()
			if err := client.Leave(c.Context, member); err != nil {
				return cli.Exit(fmt.Sprintf("leave %s: %v", member, err), 1)
			}
			fmt.Fprintf(c.App.Writer, "%s left the cluster\n", member)
			return nil
		},
	}
}
