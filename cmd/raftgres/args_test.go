package main

import (
	"slices"
	"testing"
)

func TestHoistFlags(t *testing.T) {
	app := newApp()
	for _, tc := range []struct {
		name string
		in   []string
		want []string
	}{
		{"flags after member", []string{"raftgres", "leave", "pg4", "--api", "URL", "--token=t"},
			[]string{"raftgres", "leave", "--api", "URL", "--token=t", "pg4"}},
		{"flags before member unchanged", []string{"raftgres", "leave", "--api", "URL", "pg4"},
			[]string{"raftgres", "leave", "--api", "URL", "pg4"}},
		{"subcommand", []string{"raftgres", "snapshot", "verify", "f.json", "--help"},
			[]string{"raftgres", "snapshot", "verify", "--help", "f.json"}},
		{"nested flags with value", []string{"raftgres", "snapshot", "export", "-c", "x.yml", "--out", "f"},
			[]string{"raftgres", "snapshot", "export", "-c", "x.yml", "--out", "f"}},
		{"double dash", []string{"raftgres", "leave", "--", "-weird"},
			[]string{"raftgres", "leave", "--", "-weird"}},
		{"unknown command", []string{"raftgres", "nope", "x", "--y"},
			[]string{"raftgres", "nope", "x", "--y"}},
		// Issue 12: patronictl's order, options before the verb.
		{"config before the verb", []string{"raftgres", "-c", "cfg.yml", "list"},
			[]string{"raftgres", "list", "-c", "cfg.yml"}},
		{"long options before the verb", []string{"raftgres", "--config=cfg.yml", "--api", "URL", "list", "--format", "json"},
			[]string{"raftgres", "list", "--config=cfg.yml", "--api", "URL", "--format", "json"}},
		{"before the verb and after a member", []string{"raftgres", "-c", "cfg.yml", "restart", "pg2", "--force"},
			[]string{"raftgres", "restart", "-c", "cfg.yml", "--force", "pg2"}},
		{"before a subcommand", []string{"raftgres", "-c", "cfg.yml", "backup", "check"},
			[]string{"raftgres", "backup", "check", "-c", "cfg.yml"}},
		{"app flags stay", []string{"raftgres", "--help", "list"},
			[]string{"raftgres", "--help", "list"}},
		{"no verb", []string{"raftgres", "-c", "cfg.yml"},
			[]string{"raftgres", "-c", "cfg.yml"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := hoistFlags(app, tc.in); !slices.Equal(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}
