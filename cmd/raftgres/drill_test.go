package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

func TestDrillRefusesBadInput(t *testing.T) {
	out, _, err := runAppStdin(t, "", "drill", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"RTO", "RPO", "--failover", "--dry-run", "--yes", "--format", "raftgres_drill"} {
		if !strings.Contains(out, want) {
			t.Errorf("--help does not mention %s:\n%s", want, out)
		}
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"an argument", []string{"drill", "pg1", "--api", "127.0.0.1:1"}, "takes no arguments"},
		{"a bad format", []string{"drill", "--format", "yaml", "--api", "127.0.0.1:1"}, "--format must be text or json"},
		{"no cluster", []string{"drill"}, "say which cluster"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := runAppStdin(t, "", tc.args...)
			var ec cli.ExitCoder
			if !errors.As(err, &ec) || ec.ExitCode() != 2 || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want exit 2 saying %q", err, tc.want)
			}
		})
	}
}
