package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// hoistFlags lets flags come before the verb ("raftgres -c FILE list",
// patronictl's order) and after positional arguments ("raftgres leave pg4
// --api URL"), neither of which urfave/cli v2 parses: it moves the flags
// of the innermost subcommand named in args, with their values, right
// after that subcommand. Flags before the verb that the subcommand does not
// define (--help, --version) stay where they are. Everything after "--" is
// left alone.
func hoistFlags(app *cli.App, args []string) []string {
	// Options before the verb. Whether one takes a value is not known
	// before the verb is: any command's flag of that name that does says
	// so.
	i := 1
	var lead []string
	for i < len(args) && len(args[i]) > 1 && args[i][0] == '-' && args[i] != "--" {
		lead = append(lead, args[i])
		if name := flagName(args[i]); !strings.Contains(args[i], "=") && anyTakesValue(app.Commands, name) && i+1 < len(args) {
			lead = append(lead, args[i+1])
			i++
		}
		i++
	}
	start := i
	cmds := app.Commands
	var cmd *cli.Command
	for i < len(args) {
		c := findCommand(cmds, args[i])
		if c == nil {
			break
		}
		cmd, cmds = c, c.Subcommands
		i++
	}
	if cmd == nil {
		return args
	}
	takesValue := flagTakesValue(cmd)
	var kept, moved []string
	for j := 0; j < len(lead); j++ {
		a := lead[j]
		v, defined := takesValue[flagName(a)]
		n := 1
		if !strings.Contains(a, "=") && anyTakesValue(app.Commands, flagName(a)) && j+1 < len(lead) {
			n = 2
		}
		if defined {
			moved = append(moved, lead[j:j+n]...)
			if !v && n == 2 { // a bool here but valued elsewhere: the next word is not its value
				moved = moved[:len(moved)-1]
				kept = append(kept, lead[j+1])
			}
		} else {
			kept = append(kept, lead[j:j+n]...)
		}
		j += n - 1
	}
	args = append(append(append(append([]string{args[0]}, kept...), args[start:i]...), moved...), args[i:]...)
	i = 1 + len(kept) + (i - start) + len(moved)
	// The moved flags are in place: hoist those after the positionals.
	return append(append([]string{}, args[:i]...), hoistRest(args[i:], takesValue)...)
}

// flagName is a flag argument's name: "--api=x" and "-api" give "api".
func flagName(a string) string {
	name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
	return name
}

// flagTakesValue maps cmd's flag names to whether each takes a value.
func flagTakesValue(cmd *cli.Command) map[string]bool {
	takesValue := map[string]bool{}
	for _, f := range cmd.Flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			takesValue[n] = !isBool
		}
	}
	return takesValue
}

// anyTakesValue reports whether some command (or subcommand) defines a
// flag called name that takes a value.
func anyTakesValue(cmds []*cli.Command, name string) bool {
	for _, c := range cmds {
		if flagTakesValue(c)[name] || anyTakesValue(c.Subcommands, name) {
			return true
		}
	}
	return false
}

// hoistRest moves flags (with their values) in front of the positional
// arguments of rest.
func hoistRest(rest []string, takesValue map[string]bool) []string {
	var flags, pos []string
	for j := 0; j < len(rest); j++ {
		a := rest[j]
		if a == "--" {
			pos = append(pos, rest[j:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		if !strings.Contains(a, "=") && takesValue[flagName(a)] && j+1 < len(rest) {
			flags = append(flags, rest[j+1])
			j++
		}
	}
	return append(flags, pos...)
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.Name == name || c.HasName(name) {
			return c
		}
	}
	return nil
}
