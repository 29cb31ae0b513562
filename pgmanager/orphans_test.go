package pgmanager

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestOrphanBackends: only postgres processes running in the data
// directory count as orphans of a killed postmaster.
func TestOrphanBackends(t *testing.T) {
	t.Parallel()
	root, data, other := t.TempDir(), t.TempDir(), t.TempDir()
	proc := func(pid, exe, cwd string) {
		t.Helper()
		dir := filepath.Join(root, pid)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, target := range map[string]string{"exe": exe, "cwd": cwd} {
			if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	proc("101", "/usr/lib/postgresql/15/bin/postgres", data)           // orphan backend
	proc("102", "/usr/lib/postgresql/15/bin/postgres (deleted)", data) // upgraded binary
	proc("103", "/bin/bash", data)                                     // a DBA's shell
	proc("104", "/usr/lib/postgresql/15/bin/postgres", other)          // another cluster
	if err := os.MkdirAll(filepath.Join(root, "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	got := orphanBackends(root, data)
	slices.Sort(got)
	if !slices.Equal(got, []int{101, 102}) {
		t.Fatalf("orphanBackends = %v, want [101 102]", got)
	}
	if got := orphanBackends(filepath.Join(root, "missing"), data); len(got) != 0 {
		t.Fatalf("no procfs: %v", got)
	}
}
