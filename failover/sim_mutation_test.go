package failover

// Mutation proof of the simulator: each patch in
// testdata/sim/mutations re-introduces one finding of review 2f0509d into a
// copy of the module; the short sweep must then fail. SIM_MUTATIONS=1 runs
// it (make sim does); it reports how many schedules each one needed.

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestSimMutations(t *testing.T) {
	if os.Getenv("SIM_MUTATIONS") == "" {
		t.Skip("SIM_MUTATIONS=1 runs the simulator against re-introduced findings")
	}
	patches, err := filepath.Glob("testdata/sim/mutations/*.patch")
	if err != nil || len(patches) == 0 {
		t.Fatalf("no mutation patches: %v", err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	schedules := os.Getenv("SIM_MUTATION_SCHEDULES")
	if schedules == "" {
		schedules = "2000"
	}
	first := regexp.MustCompile(`SIM-FIRST-FAIL seed=(\d+) invariant=(\S+) schedules=(\d+)`)
	// SIM_MUTATION_BASE names patches applied to both copies first (e.g.
	// a proposed fix the mutation is judged on).
	var basePatches []string
	if g := os.Getenv("SIM_MUTATION_BASE"); g != "" {
		if _, err := os.Stat(g); err != nil {
			g = filepath.Join(root, g) // relative to the module (make sim)
		}
		basePatches, _ = filepath.Glob(filepath.Join(g, "*.patch"))
		if len(basePatches) == 0 {
			t.Fatalf("SIM_MUTATION_BASE=%s: no patches", os.Getenv("SIM_MUTATION_BASE"))
		}
	}
	applyPatch := func(t *testing.T, dir, p string) {
		abs, _ := filepath.Abs(p)
		if out, err := exec.Command("patch", "-p1", "-d", dir, "-i", abs).CombinedOutput(); err != nil {
			t.Fatalf("patch %s: %v\n%s", p, err, out)
		}
	}
	base := t.TempDir()
	copyModule(t, root, base)
	for _, bp := range basePatches {
		applyPatch(t, base, bp)
	}
	for _, p := range patches {
		name := strings.TrimSuffix(filepath.Base(p), ".patch")
		if only := os.Getenv("SIM_MUTATION"); only != "" && !strings.Contains(name, only) {
			continue
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			copyModule(t, root, dir)
			for _, bp := range basePatches {
				applyPatch(t, dir, bp)
			}
			applyPatch(t, dir, p)
			n, _ := strconv.Atoi(schedules)
			// A seed that fails on the unpatched code too (a finding still
			// open) proves nothing: go on after it.
			for start := 1; start <= n; {
				out, err := simGoTest(dir, "SIM_SCHEDULES="+strconv.Itoa(n-start+1), "SIM_SEED="+strconv.Itoa(start),
					"SIM_NO=regressions", "SIM_MAX_FAILURES=1")
				if err == nil {
					t.Errorf("mutation %s: schedules %d to %d found nothing", name, start, n)
					return
				}
				m := first.FindSubmatch(out)
				if m == nil {
					t.Errorf("mutation %s: the sweep failed without a finding:\n%s", name, tail(string(out), 3000))
					return
				}
				seed, _ := strconv.Atoi(string(m[1]))
				if want := simMutationKinds(name); !slices.Contains(want, string(m[2])) {
					t.Logf("mutation %s: seed %d breaks %s, not what this finding breaks (%v): skipped", name, seed, m[2], want)
					start = seed + 1
					continue
				}
				if _, err := simGoTest(base, "SIM_SEED="+string(m[1])); err != nil {
					t.Logf("mutation %s: seed %d fails without the mutation too (%s): skipped", name, seed, m[2])
					start = seed + 1
					continue
				}
				t.Logf("mutation %s found after %d schedules (seed %d, invariant %s)", name, seed, seed, m[2])
				return
			}
			t.Errorf("mutation %s: %d schedules found nothing", name, n)
		})
	}
}

// simMutationKinds are the invariants a re-introduced finding is expected
// to break: review10-last-primary is a liveness bug, lag-measure-lost
// breaks maximum_lag_on_failover, the others are safety bugs.
func simMutationKinds(name string) []string {
	switch {
	case strings.HasPrefix(name, "review10"):
		return []string{"liveness"}
	case strings.HasPrefix(name, "lag-"):
		return []string{"lag"}
	}
	return []string{"single-writer-instant", "single-writer-ack", "lease-end", "sync-durability", "only-copy"}
}

// simGoTest runs the sweep in the module copy at dir with env added.
func simGoTest(dir string, env ...string) ([]byte, error) {
	cmd := exec.Command("go", "test", "-count=1", "-run", "^TestSimSweep$", "./failover/")
	cmd.Dir = dir
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "SIM_") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	return cmd.CombinedOutput()
}

// copyModule copies the module at root (without .git and bin) to dir.
func copyModule(t *testing.T, root, dir string) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() && (rel == ".git" || rel == "bin" || strings.HasPrefix(d.Name(), ".")) && rel != "." {
			return filepath.SkipDir
		}
		target := filepath.Join(dir, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
