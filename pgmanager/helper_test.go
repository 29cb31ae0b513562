package pgmanager

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"raftgres/internal/conf"
	"raftgres/internal/testutil"
)

// The test binary doubles as a stand-in agent process: with
// PGMANAGER_HELPER set, TestMain runs helperMain instead of the tests, so a
// test can kill -9 "the agent" and watch what happens to its children.

type helperSpec struct {
	Mode   string // "init": init and serve; "clone": clone from Source
	Config Config
	Source *Upstream
	RunAs  *syscall.Credential
	// Passwords travel apart: a Secret marshals as "***".
	Passwords [3]string
}

func TestMain(m *testing.M) {
	if spec := os.Getenv("PGMANAGER_HELPER"); spec != "" {
		os.Exit(helperMain(spec))
	}
	os.Exit(m.Run())
}

func helperMain(specJSON string) int {
	var spec helperSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Println("ERROR", err)
		return 2
	}
	spec.Config.Superuser.Password = conf.Secret(spec.Passwords[0])
	spec.Config.Replication.Password = conf.Secret(spec.Passwords[1])
	spec.Config.Rewind.Password = conf.Secret(spec.Passwords[2])
	logger := hclog.New(&hclog.LoggerOptions{Name: "helper", Output: os.Stderr, Level: hclog.Info})
	m, err := New(spec.Config, "helper", logger, Options{RunAs: spec.RunAs})
	if err != nil {
		fmt.Println("ERROR", err)
		return 2
	}
	ctx := context.Background()
	switch spec.Mode {
	case "init":
		if _, err := m.Init(ctx, Desired{}); err != nil {
			fmt.Println("ERROR", err)
			return 1
		}
		fmt.Println("READY", m.child.Load().pid())
	case "clone":
		fmt.Println("READY", 0)
		if err := m.Clone(ctx, Desired{Standby: spec.Source}); err != nil {
			fmt.Println("ERROR", err)
			return 1
		}
		fmt.Println("CLONED")
	}
	select {} // wait to be killed
}

// startHelper runs the test binary as a helper and returns it with the pid
// it reports once ready.
func startHelper(t *testing.T, spec helperSpec) (*exec.Cmd, int, *bufio.Scanner) {
	t.Helper()
	c := spec.Config
	spec.Passwords = [3]string{c.Superuser.Password.Reveal(), c.Replication.Password.Reveal(), c.Rewind.Password.Reveal()}
	b, _ := json.Marshal(spec)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PGMANAGER_HELPER="+string(b))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = testWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if pid, ok := strings.CutPrefix(line, "READY "); ok {
			var n int
			fmt.Sscan(pid, &n)
			return cmd, n, sc
		}
		if strings.HasPrefix(line, "ERROR") {
			t.Fatalf("helper: %s", line)
		}
	}
	t.Fatalf("helper exited before it was ready")
	return nil, 0, nil
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	if err != nil {
		return false
	}
	// A zombie is dead for our purposes.
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(data))
	return len(f) > 2 && f[2] != "Z"
}

func TestKilledAgentStopsPostgres(t *testing.T) {
	e := requirePG(t)
	cfg := e.config(t, "pg1")
	helper, pgPID, _ := startHelper(t, helperSpec{Mode: "init", Config: cfg, RunAs: e.runAs})
	if pgPID <= 0 || !alive(pgPID) {
		t.Fatalf("postgres pid %d not running", pgPID)
	}
	if err := helper.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = helper.Wait()
	testutil.WaitFor(t, 20*time.Second, fmt.Sprintf("postgres (pid %d) to exit after its agent was killed", pgPID), func() (bool, error) {
		return !alive(pgPID), nil
	})
	// Backends are gone too: nothing listens on the port any more.
	m := e.manager(t, "pg1", cfg)
	testutil.WaitFor(t, 20*time.Second, "postmaster.pid released", func() (bool, error) {
		_, running := m.foreignPID()
		return !running, nil
	})
}

func TestKilledCloneLeavesNoDataDir(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 3*time.Minute)
	p := e.initPrimary(t, ctx, "pg1")
	// Enough data that the copy takes a moment.
	if err := p.Exec(ctx, "CREATE TABLE big AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 200000) g"); err != nil {
		t.Fatal(err)
	}
	cfg := e.config(t, "pg2")
	cfg.Superuser = p.cfg.Superuser
	helper, _, _ := startHelper(t, helperSpec{Mode: "clone", Config: cfg, Source: upstreamOf(t, "pg1", p), RunAs: e.runAs})
	tmp := filepath.Clean(cfg.DataDir) + ".clone-tmp"
	testutil.WaitFor(t, 30*time.Second, "clone to start writing", func() (bool, error) {
		entries, err := os.ReadDir(tmp)
		return len(entries) > 0, err
	})
	if err := helper.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = helper.Wait()
	r := e.manager(t, "pg2", cfg)
	if r.HasDataDir() {
		t.Fatal("killed clone left a data directory")
	}
	if _, err := os.Stat(cfg.DataDir); err == nil {
		t.Fatalf("killed clone left %s", cfg.DataDir)
	}
	// A new clone cleans up the leftovers (the killed pg_basebackup's
	// background WAL streamer outlives it, streaming into the temporary
	// directory) and succeeds.
	d := Desired{Standby: upstreamOf(t, "pg1", p)}
	if err := r.Clone(ctx, d); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); err == nil {
		t.Fatalf("%s still exists after a successful clone", tmp)
	}
	if left := processesNaming(tmp); len(left) > 0 {
		t.Fatalf("processes of the killed clone still run: %v", left)
	}
	if err := r.Start(ctx, d); err != nil {
		t.Fatal(err)
	}
	waitStreaming(t, p, "pg2")
}

// physical is the physical slots named.
func physical(names ...string) []Slot {
	var out []Slot
	for _, n := range names {
		out = append(out, Slot{Name: n, Type: SlotPhysical})
	}
	return out
}

// keepNone keeps no slot from EnsureSlots's drop.
func keepNone(SlotState) bool { return false }

func hasSlot(have []SlotState, name string) bool {
	return slices.ContainsFunc(have, func(s SlotState) bool { return s.Name == name })
}
