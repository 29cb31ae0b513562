package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"raftgres/raftstore"
)

// previousRelease is the commit of the release before this tree (v0.1.0,
// the first whose agents register their release and protocol). The
// upgrade test builds it from the repository's history.
const previousRelease = "6c99a4d"

// buildRelease builds raftgres at commit, reporting version, from the
// repository this test runs in (git archive: no worktree is left behind),
// and returns the binary's path.
func buildRelease(t *testing.T, commit, version string) string {
	t.Helper()
	root, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("the previous release is built from git history, and this is not a git checkout: %v", err)
	}
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	archive := exec.Command("sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", strings.TrimSpace(string(root)), commit, src)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("extract %s from the repository's history (a shallow clone lacks it): %v\n%s", commit, err, out)
	}
	dir := filepath.Dir(binPath)
	bin := filepath.Join(dir, "raftgres-"+version)
	build := exec.Command("go", "build", "-ldflags", "-X main.version="+version, "-o", bin, "./cmd/raftgres")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build %s at %s: %v\n%s", version, commit, err, out)
	}
	return bin
}

// upgradeStep is what upgrade-check --format json says.
type upgradeStep struct {
	Blockers []string `json:"blockers"`
	Next     string   `json:"next"`
	Step     *struct {
		Action, Member, Candidate string
	} `json:"step"`
	Done bool `json:"done"`
}

// upgradeCheck runs this tree's upgrade-check against the cluster.
func upgradeCheck(t *testing.T, via *Node) (plan upgradeStep, code int) {
	t.Helper()
	out, stderr, code := runCLI(t, "upgrade-check", "-c", via.Config, "--format", "json")
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatalf("upgrade-check: %v\n%s\n%s", err, out, stderr)
	}
	return plan, code
}

// TestRollingUpgradeFromThePreviousRelease upgrades a 3-member cluster of
// the previous release host by host under writes, the way
// docs/operations/upgrades.md says, asking upgrade-check before each step:
// the replicas, then a switchover, then the old primary. No acknowledged
// write is lost, no two members take writes at once, and the key moves
// only once, by the switchover.
func TestRollingUpgradeFromThePreviousRelease(t *testing.T) {
	requireIntegration(t)
	old := buildRelease(t, previousRelease, "v0.1.0")
	c := &cluster{t: t, base: baseDir(t)}
	for i := range 3 {
		n := newNode(t, c.base, fmt.Sprintf("pg%d", i+1))
		n.Bin = old
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		n.WriteConfig(NodeOptions{Peers: c.nodes, Postgres: true, DCS: fastDCS})
		n.Start()
	}
	c.waitStable(c.nodes, len(c.nodes))
	primary := c.waitPrimary(120*time.Second, c.nodes...)
	c.waitStreaming(primary)
	ctx := ctxT(t, 10*time.Minute)
	if err := pgExec(ctx, primary, "CREATE TABLE windows (node text, seq int)"); err != nil {
		t.Fatal(err)
	}
	w := startWriterProbe(c)
	defer w.stop()
	st0, err := c.state()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		if a := st0.Members[n.Name].Agent; a.Version != "v0.1.0" || a.Protocol != 1 {
			t.Fatalf("%s registered as %+v, want v0.1.0 protocol 1", n.Name, a)
		}
	}

	switchovers := 0
	for step := 0; ; step++ {
		if step > 6 {
			t.Fatal("upgrade-check did not say done after 6 steps")
		}
		var plan upgradeStep
		waitFor(t, 60*time.Second, "upgrade-check without blockers", func() (bool, error) {
			var code int
			plan, code = upgradeCheck(t, c.nodes[0])
			return code == 0, nil
		})
		t.Logf("upgrade-check: %+v", plan)
		if plan.Done {
			break
		}
		if plan.Step == nil {
			t.Fatalf("upgrade-check gives no step: %+v", plan)
		}
		switch plan.Step.Action {
		case "switchover":
			cand := plan.Step.Candidate
			if out, stderr, code := runCLI(t, "switchover", "-c", c.nodes[0].Config, "--candidate", cand, "--force"); code != 0 {
				t.Fatalf("switchover to %s: exit %d\n%s%s", cand, code, out, stderr)
			}
			switchovers++
			primary = c.waitPrimary(60*time.Second, c.nodes...)
			if primary.Name != cand {
				t.Fatalf("switchover went to %s, asked %s", primary.Name, cand)
			}
			c.waitStreaming(primary)
		case "upgrade":
			n := c.byName(plan.Step.Member)
			if n == nil {
				t.Fatalf("upgrade-check names no member of ours: %q", plan.Next)
			}
			if s, _ := c.state(); s.Leader.Holder == n.Name {
				t.Fatalf("upgrade-check asked to restart the primary %s: %q", n.Name, plan.Next)
			}
			n.Stop()
			n.Bin = ""
			n.Start()
			waitFor(t, 60*time.Second, n.Name+" registered with this release", func() (bool, error) {
				s, err := c.state()
				return err == nil && s.Members[n.Name].Agent.Version == version(t), err
			})
			c.waitStreaming(c.byName(mustState(t, c).Leader.Holder))
		default:
			t.Fatalf("upgrade-check's next step is not one this test knows: %q", plan.Next)
		}
	}
	w.stop()
	final := c.waitPrimary(60*time.Second, c.nodes...)
	lost, err := w.lost(ctx, final)
	if err != nil {
		t.Fatal(err)
	}
	if len(lost) > 0 {
		t.Fatalf("%d acknowledged writes lost in the upgrade: %v", len(lost), lost)
	}
	if o := w.overlaps(); len(o) > 0 {
		t.Fatalf("two members took writes at once: %v", o)
	}
	st, err := c.state()
	if err != nil {
		t.Fatal(err)
	}
	if switchovers != 1 || st.Leader.Epoch != st0.Leader.Epoch+1 {
		t.Fatalf("%d switchovers, leader epoch %d -> %d: the key moved other than by the one switchover", switchovers, st0.Leader.Epoch, st.Leader.Epoch)
	}
	view, err := final.Client().ClusterView(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range view.Members {
		if m.Agent.Version != version(t) || m.Agent.Protocol != raftstore.Protocol {
			t.Errorf("%s runs %+v after the upgrade", m.Name, m.Agent)
		}
	}
}

func mustState(t *testing.T, c *cluster) raftstore.State {
	t.Helper()
	st, err := c.state()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// version is what this tree's binary reports.
func version(t *testing.T) string {
	t.Helper()
	out, _, code := runCLI(t, "version")
	f := strings.Fields(out)
	if code != 0 || len(f) != 2 {
		t.Fatalf("raftgres version: %q (exit %d)", out, code)
	}
	return f[1]
}

// longestGap is the longest time between two acknowledged writes the
// probe recorded, and when it began.
func (w *writerProbe) longestGap() (time.Duration, time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var gap time.Duration
	var at time.Time
	for i := 1; i < len(w.windows); i++ {
		if d := w.windows[i].End.Sub(w.windows[i-1].End); d > gap {
			gap, at = d, w.windows[i-1].End
		}
	}
	return gap, at
}

// TestRollingRestartUnderWrites: `raftgres restart --rolling` restarts
// every member's PostgreSQL under writes (the replicas one at a time, the
// primary by a switchover): every postmaster restarted, no acknowledged
// write lost, no two members taking writes at once, and the only pause in
// writes is the switchover's.
func TestRollingRestartUnderWrites(t *testing.T) {
	requireIntegration(t)
	c := newPGCluster(t, 3)
	primary := c.waitPrimary(120*time.Second, c.nodes...)
	c.waitStreaming(primary)
	ctx := ctxT(t, 10*time.Minute)
	if err := pgExec(ctx, primary, "CREATE TABLE windows (node text, seq int)"); err != nil {
		t.Fatal(err)
	}
	epoch0 := mustState(t, c).Leader.Epoch
	w := startWriterProbe(c)
	defer w.stop()
	waitFor(t, 30*time.Second, "writes on "+primary.Name, func() (bool, error) {
		_, n := w.lastOn(primary.Name)
		return n > 20, nil
	})
	// restart --rolling refuses ("not now") while a replica does not
	// stream yet; upgrade-check applies the same health checks.
	waitFor(t, 60*time.Second, "every replica streaming (upgrade-check without blockers)", func() (bool, error) {
		plan, code := upgradeCheck(t, c.nodes[0])
		return code == 0 && len(plan.Blockers) == 0, fmt.Errorf("%v", plan.Blockers)
	})
	begin := time.Now()
	out, stderr, code := runCLI(t, "restart", "--rolling", "--force", "-c", c.nodes[0].Config)
	t.Logf("restart --rolling (%s):\n%s%s", time.Since(begin).Round(time.Millisecond), out, stderr)
	if code != 0 {
		t.Fatalf("restart --rolling: exit %d", code)
	}
	for _, n := range c.nodes {
		if !strings.Contains(out, n.Name+": running and streaming again") {
			t.Errorf("%s was not restarted", n.Name)
		}
	}
	// The writes go on after the last step.
	end := time.Now()
	waitFor(t, 30*time.Second, "writes after the rolling restart", func() (bool, error) {
		st, err := c.state()
		if err != nil {
			return false, err
		}
		last, _ := w.lastOn(st.Leader.Holder)
		return last.After(end.Add(time.Second)), nil
	})
	w.stop()
	final := c.waitPrimary(60*time.Second, c.nodes...)
	if final.Name == primary.Name {
		t.Fatalf("the primary is still %s: it was not switched over", primary.Name)
	}
	lost, err := w.lost(ctx, final)
	if err != nil {
		t.Fatal(err)
	}
	if len(lost) > 0 {
		t.Fatalf("%d acknowledged writes lost: %v", len(lost), lost)
	}
	if o := w.overlaps(); len(o) > 0 {
		t.Fatalf("two members took writes at once: %v", o)
	}
	if e := mustState(t, c).Leader.Epoch; e != epoch0+1 {
		t.Fatalf("leader epoch %d -> %d: the key moved other than by the one switchover", epoch0, e)
	}
	gap, at := w.longestGap()
	t.Logf("longest pause in acknowledged writes: %s from %s", gap.Round(time.Millisecond), at.Format("15:04:05.000"))
	if gap > 3*time.Second {
		t.Fatalf("writes paused %s at %s: more than a switchover's pause", gap.Round(time.Millisecond), at.Format("15:04:05.000"))
	}
}
