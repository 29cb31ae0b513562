package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"

	"github.com/urfave/cli/v2"

	"raftgres/config"
	"raftgres/ops"
)

func drillCommand() *cli.Command {
	return &cli.Command{
		Name:  "drill",
		Usage: "the failover drill: a switchover, optionally a hard failover, with RTO and RPO measured",
		Description: "Runs against a live, healthy cluster (it refuses otherwise, as restart --rolling does):\n" +
			"a probe writes to its own table (" + ops.DrillTable + ", created if missing, dropped at the end)\n" +
			"on the primary throughout; the drill switches over to the streaming replica closest to the\n" +
			"primary and, with --failover, then stops that new primary's PostgreSQL hard (immediate, as a\n" +
			"crash: POST /failover with \"hard\": true), the election picking among the others. Each step\n" +
			"waits until a new primary runs, every other member streams from it and the probe writes on it.\n" +
			"\n" +
			"It prints, for each step, the RTO (the longest gap between acknowledged probe writes) and the\n" +
			"time until every member streams again; then the RPO (acknowledged writes missing on the new\n" +
			"primary, read back after the drill) and PASS or FAIL. It fails when a step fails or the\n" +
			"primary does not move, and in synchronous mode when the RPO is not 0 (in asynchronous mode the\n" +
			"RPO is reported). Exit status 1 on FAIL or refusal, 2 on bad input.\n" +
			"\n" +
			"The probe connects to each member's PostgreSQL address as /cluster lists it, with --dsn\n" +
			"(a libpq URL or key/value string; its host and port are replaced), by default the superuser\n" +
			"of -c FILE on database postgres, else libpq's environment (PGUSER, PGPASSWORD, ...).\n" +
			"--format json prints one JSON object for the audit trail; --dry-run says what it would do.",
		Flags: append(adminFlags(),
			&cli.BoolFlag{Name: "force", Aliases: []string{"f", "yes", "y"}, Usage: "do not ask for confirmation"},
			&cli.BoolFlag{Name: "failover", Usage: "after the switchover, stop the new primary's PostgreSQL hard and fail over"},
			&cli.BoolFlag{Name: "dry-run", Usage: "say what the drill would do (which member is switched to, which stopped hard) and do nothing"},
			&cli.StringFlag{Name: "format", Value: "text", Usage: "text or json"},
			&cli.StringFlag{Name: "dsn", Usage: "the probe's PostgreSQL `CONNINFO`, without host and port", EnvVars: []string{"RAFTGRES_DRILL_DSN"}},
		),
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return cli.Exit("drill: takes no arguments", 2)
			}
			format := c.String("format")
			if format != "text" && format != "json" {
				return cli.Exit("drill: --format must be text or json, got "+format, 2)
			}
			client, err := clientOrExit(c)
			if err != nil {
				return err
			}
			conn, err := drillConn(c)
			if err != nil {
				return cli.Exit("drill: "+err.Error(), 2)
			}
			progress := c.App.Writer
			if format == "json" {
				progress = c.App.ErrWriter // stdout is the JSON object alone
			}
			r, err := ops.Drill(c.Context, client, ops.DrillOptions{Failover: c.Bool("failover"), DryRun: c.Bool("dry-run"),
				Conn: conn, Out: progress, Confirm: func(q string) error { return confirm(c, q) }})
			switch {
			case errors.As(err, new(cli.ExitCoder)):
				return err // the prompt's answer
			case err != nil:
				return cli.Exit("drill: "+err.Error(), 1)
			}
			if format == "json" {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				if err := enc.Encode(r); err != nil {
					return cli.Exit("drill: "+err.Error(), 1)
				}
			} else {
				fmt.Fprint(c.App.Writer, r.Summary())
			}
			if !r.Pass {
				return cli.Exit("drill: FAIL", 1)
			}
			return nil
		},
	}
}

// drillConn is the probe's connection string: --dsn, else the superuser
// of -c FILE on database postgres, else "" (libpq's environment).
func drillConn(c *cli.Context) (string, error) {
	if dsn := c.String("dsn"); dsn != "" {
		return dsn, nil
	}
	path := c.String("config")
	if path == "" {
		return "", nil
	}
	cfg, err := config.Load(path)
	if err != nil {
		return "", err
	}
	su := cfg.Postgres.Superuser
	if !cfg.HasPostgres || su.Username == "" {
		return "", nil
	}
	u := url.URL{Scheme: "postgres", User: url.UserPassword(su.Username, su.Password.Reveal()), Path: "/postgres"}
	return u.String(), nil
}
