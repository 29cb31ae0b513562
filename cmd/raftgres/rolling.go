package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"raftgres/api"
	"raftgres/ops"
)

// rollingRestart is restart --rolling: ops.RollingRestart with the
// command's flags, prompt and exit codes.
func rollingRestart(c *cli.Context, client *api.Client) error {
	since := time.Now()
	if s := c.String("since"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return cli.Exit("restart --rolling: --since must be an RFC 3339 time, as the interrupted run printed", 2)
		}
		since = t
	}
	err := ops.RollingRestart(c.Context, client, ops.RollingOptions{Since: since, Pending: c.Bool("pending"), Out: c.App.Writer,
		Confirm: func(q string) error { return confirm(c, q) }})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ops.ErrUnhealthy):
		return cli.Exit("restart --rolling: "+err.Error(), 1)
	case errors.As(err, new(cli.ExitCoder)):
		return err // the prompt's answer
	}
	return cli.Exit(fmt.Sprintf("restart --rolling: %v\nfix it, then resume with: raftgres restart --rolling --since %s",
		err, since.UTC().Format(time.RFC3339)), 1)
}
