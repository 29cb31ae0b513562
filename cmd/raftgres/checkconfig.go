package main

import (
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"raftgres/config"
)

func checkConfigCommand() *cli.Command {
	return &cli.Command{
		Name:  "check-config",
		Usage: "check a config file without starting anything (exit 0 ok, 1 problems)",
		Description: "Checks the config file as the agent would load it, statically: strict YAML (every unknown\n" +
			"key, wrong type and bad value), the relations between settings (ttl, loop_wait, Raft\n" +
			"timeouts, peers) and the file's mode (a file holding passwords must be chmod 600). It opens\n" +
			"no other file and no connection: data directories, binaries and certificates need not exist\n" +
			"yet. Patroni's validate-config does the same for patroni.yml.\n\n" +
			"Prints every problem as FILE:LINE: KEY.PATH: what is wrong, and notes about keys accepted\n" +
			"for Patroni's sake that have no effect here (postgresql.pgpass, use_unix_socket) as\n" +
			"FILE:LINE: KEY.PATH: note: ..., all on stderr, in file order. Exits 0 and prints FILE: ok\n" +
			"when there is no problem (notes are not problems), 1 otherwise, 2 on bad usage.",
		Flags:        []cli.Flag{configFlag(false)},
		OnUsageError: usageError("check-config"),
		Action: func(c *cli.Context) error {
			path := c.String("config")
			if path == "" || c.Args().Present() {
				return cli.Exit("check-config: usage: raftgres check-config -c FILE", 2)
			}
			if code := runCheckConfig(path, c.App.Writer, c.App.ErrWriter); code != 0 {
				return cli.Exit("", code)
			}
			return nil
		},
	}
}

// usageError makes a flag parsing error exit 2, as other bad usage does.
func usageError(cmd string) cli.OnUsageErrorFunc {
	return func(_ *cli.Context, err error, _ bool) error {
		return cli.Exit(cmd+": "+err.Error(), 2)
	}
}

// runCheckConfig checks the file at path and prints the result: its exit
// code is 0 when the agent would accept the file, 1 otherwise.
func runCheckConfig(path string, stdout, stderr io.Writer) int {
	fi, err := os.Stat(path)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", path, err)
		return 1
	}
	data, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", path, err)
		return 1
	}
	r := config.Check(path, data, fi.Mode())
	printReport(stderr, path, r)
	if len(r.Problems) > 0 {
		fmt.Fprintf(stderr, "%s: %s\n", path, plural(len(r.Problems), "problem"))
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", path)
	return 0
}

// printReport prints problems and notes in file order.
func printReport(w io.Writer, path string, r config.Report) {
	all := append([]*config.LineError(nil), r.Problems...)
	for _, n := range r.Notes {
		all = append(all, &config.LineError{Line: n.Line, Path: n.Path, Msg: "note: " + n.Msg})
	}
	config.SortLineErrors(all)
	for _, e := range all {
		fmt.Fprintln(w, e.Located(path))
	}
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
