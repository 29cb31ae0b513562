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
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := hoistFlags(app, tc.in); !slices.Equal(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}
