package pgmanager

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Hook runs the configured command with no arguments (as Patroni does)
// and waits for it; a non-zero exit or its timeout is an error, and no
// command is success.
func TestHook(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	args := filepath.Join(dir, "args")
	script := filepath.Join(dir, "hook.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$#:$*\" > "+args+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		hooks   Hooks
		hook    string
		wantErr string
	}{
		{"none configured", Hooks{}, PrePromote, ""},
		{"success", Hooks{BeforeStop: script}, BeforeStop, ""},
		{"non-zero exit", Hooks{PrePromote: "/bin/false"}, PrePromote, "run pre_promote /bin/false: exit status 1"},
		{"timeout", Hooks{PrePromote: "/bin/sleep 30", PrePromoteTimeout: 100 * time.Millisecond}, PrePromote, "killed after 100ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testManager(t)
			m.cfg.Hooks = tc.hooks
			start := time.Now()
			err := m.Hook(context.Background(), tc.hook)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Hook = %v, want %q", err, tc.wantErr)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("Hook took %s", d)
			}
		})
	}
	if b, err := os.ReadFile(args); err != nil || string(b) != "0:\n" {
		t.Errorf("hook arguments %q (%v), want none", b, err)
	}
}
