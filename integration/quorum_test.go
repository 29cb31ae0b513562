package integration

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// quorumDCS is synchronous_mode: quorum with k standbys, at the test
// timings.
func quorumDCS(k int) string {
	return fmt.Sprintf("{ttl: 3, loop_wait: 300ms, retry_timeout: 1, synchronous_mode: quorum, synchronous_node_count: %d}", k)
}

// TestQuorumCommit runs 5 members in network namespaces with
// synchronous_mode: quorum, synchronous_node_count: 1 (each commit waits
// for any 1 of the 4 standbys, counted by the commit gate), under a writer
// that tries every member in turn:
//   - one standby's link is cut: writes go on (in synchronous mode, with
//     FIRST 1, commits stalled until another standby was recorded);
//   - with synchronous_node_count raised to 2, the primary and one standby
//     are cut off together, the partition {A,B} | {C,D,E}: the majority
//     side elects the most advanced of the standbys it holds and writes go
//     on there;
//   - the new primary's host is lost (kill -9 of its agent and PostgreSQL).
//
// No acknowledged write is ever missing on the new primary, and no two
// members accept writes at once.
func TestQuorumCommit(t *testing.T) {
	requireIntegration(t)
	lab, c := startNetnsCluster(t, 5, quorumDCS(1))
	primary := c.waitPrimary(180*time.Second, c.nodes...)
	c.waitStreaming(primary)
	waitQuorumRecorded(t, c, primary.Name, 1, 4)
	ctx := ctxT(t, 10*time.Second)
	if err := pgExec(ctx, primary, "CREATE TABLE windows (node text, seq int)"); err != nil {
		t.Fatal(err)
	}
	w := startWriterProbe(c)
	defer w.stop()
	waitFor(t, 20*time.Second, "the writer probe's first writes", func() (bool, error) {
		_, n := w.lastOn(primary.Name)
		return n > 10, nil
	})
	index := func(n *Node) int { return slices.Index(c.nodes, n) + 1 }
	others := func(not ...*Node) []*Node {
		return slices.DeleteFunc(slices.Clone(c.nodes), func(n *Node) bool { return slices.Contains(not, n) })
	}

	// 1. A standby's link cut: with any 1 of 4, writes do not wait. The
	// probe's own longest gap before it, for comparison.
	quiet := time.Now()
	waitFor(t, 30*time.Second, "8s of writes", func() (bool, error) {
		at, _ := w.lastOn(primary.Name)
		return at.After(quiet.Add(8 * time.Second)), nil
	})
	baseline := w.longestGapOn(primary.Name, quiet, quiet.Add(8*time.Second))
	standby := others(primary)[0]
	cutAt := time.Now()
	if err := lab.cut(index(standby)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "writes after the cut", func() (bool, error) {
		at, _ := w.lastOn(primary.Name)
		return at.After(cutAt.Add(8 * time.Second)), nil
	})
	gap := w.longestGapOn(primary.Name, cutAt.Add(-time.Second), cutAt.Add(8*time.Second))
	t.Logf("quorum figure: longest write gap on %s while standby %s's link was cut: %s (in the 8s before: %s)", primary.Name,
		standby.Name, gap.Round(time.Millisecond), baseline.Round(time.Millisecond))
	if gap > 2*time.Second {
		t.Fatalf("writes stalled %s when one of 4 quorum standbys was cut off (any 1 suffices)", gap.Round(time.Millisecond))
	}
	if err := lab.heal(index(standby)); err != nil {
		t.Fatal(err)
	}
	c.waitStreaming(primary)
	waitQuorumRecorded(t, c, primary.Name, 1, 4)

	// 2. The partition {primary, B} | {C, D, E}. With k = 1 a commit may be
	// on B alone among the standbys: C, D and E cannot prove they hold it,
	// and nobody may be promoted. With k = 2 every commit is on one of
	// them: raise k first.
	if out, stderr, code := runCLI(t, "edit-config", "-c", primary.Config, "--api", primary.APIURL(), "--set", "synchronous_node_count=2", "--force"); code != 0 {
		t.Fatalf("edit-config synchronous_node_count=2: exit %d: %s%s", code, out, stderr)
	}
	waitQuorumRecorded(t, c, primary.Name, 2, 4)
	b := others(primary)[1]
	cutAt = time.Now()
	for _, n := range []*Node{primary, b} {
		if err := lab.cut(index(n)); err != nil {
			t.Fatal(err)
		}
	}
	next := w.takeover(t, c, primary, cutAt)
	if next == b {
		t.Fatalf("%s, cut off with the old primary, accepted writes", b.Name)
	}
	t.Logf("quorum figure: partition {%s,%s} | rest: %s took writes %s after the cut", primary.Name, b.Name, next.Name,
		w.firstOnAfter(next.Name, cutAt).Sub(cutAt).Round(time.Millisecond))
	checkNoneLost(t, w, next)
	for _, n := range []*Node{primary, b} {
		if err := lab.heal(index(n)); err != nil {
			t.Fatal(err)
		}
	}
	primary = c.waitPrimary(120*time.Second, c.nodes...)
	c.waitStreaming(primary)
	waitQuorumRecorded(t, c, primary.Name, 2, 4)

	// 3. The primary's host lost.
	pm, err := postmasterPID(primary)
	if err != nil {
		t.Fatal(err)
	}
	lostAt := time.Now()
	_ = syscall.Kill(primary.PID(), syscall.SIGKILL)
	if err := syscall.Kill(-pm, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 of %s's postmaster process group: %v", primary.Name, err)
	}
	primary.Kill9()
	next = w.takeover(t, c, primary, lostAt)
	t.Logf("quorum figure: %s's host lost: %s took writes %s after", primary.Name, next.Name,
		w.firstOnAfter(next.Name, lostAt).Sub(lostAt).Round(time.Millisecond))
	checkNoneLost(t, w, next)
	st, err := c.state()
	if err != nil {
		t.Fatal(err)
	}
	if ev := lastLeaderEvent(st); ev.Member != next.Name {
		t.Fatalf("last leader event %+v, want %s", ev, next.Name)
	} else {
		t.Logf("the election: %s (%s)", ev.Reason, ev.Choice)
	}
	w.stop()
	if o := w.overlaps(); len(o) > 0 {
		t.Fatalf("two members accepted writes at once:\n%s", strings.Join(o, "\n"))
	}
	checkNoneLost(t, w, next)
}

// waitQuorumRecorded waits until primary's record is a quorum of q over n
// standbys, and every one of them shows quorum_standby in /cluster.
func waitQuorumRecorded(t *testing.T, c *cluster, primary string, q, n int) {
	t.Helper()
	waitFor(t, 60*time.Second, fmt.Sprintf("%s's quorum record: %d of %d standbys", primary, q, n), func() (bool, error) {
		st, err := c.state()
		if err != nil {
			return false, err
		}
		return st.Sync.Primary == primary && st.Sync.Quorum == q && len(st.Sync.Standbys) == n, nil
	})
}

// checkNoneLost fails when an acknowledged write is missing on n.
func checkNoneLost(t *testing.T, w *writerProbe, n *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lost, err := w.lost(ctx, n)
	if err != nil {
		t.Fatalf("read the writes on %s: %v", n.Name, err)
	}
	if len(lost) > 0 {
		t.Fatalf("%d acknowledged writes missing on %s: %v", len(lost), n.Name, lost[:min(len(lost), 10)])
	}
}

// longestGapOn is the longest time in [from, to] during which node
// acknowledged no write (from the end of one to the end of the next).
func (w *writerProbe) longestGapOn(node string, from, to time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	last, longest := from, time.Duration(0)
	for _, x := range w.windows {
		if x.Node != node || x.End.Before(from) {
			continue
		}
		if x.End.After(to) {
			break
		}
		longest = max(longest, x.End.Sub(last))
		last = x.End
	}
	return max(longest, to.Sub(last))
}
