package integration

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// netnsCLI runs the raftgres CLI inside n's network namespace, against n.
func netnsCLI(n *Node, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	full := append([]string{"netns", "exec", n.NetNS, binPath}, args...)
	full = append(full, "-c", n.Config)
	out, err := exec.CommandContext(ctx, "ip", full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("raftgres %s via %s: %v: %s", strings.Join(args, " "), n.Name, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// TestLoweringTTLDuringACutKeepsOneWriter: the holder renews
// under ttl 12s, its cluster link is cut (clients still reach it), and
// ttl is lowered to 3s through another member. The lease already given
// runs 8s (ttl − ttl/3) from that renewal: no other member may be promoted
// before it ended, so no two members ever accept writes at once. Before
// the lease carried its ttl, the coordinator counted with the new 3s and
// two primaries acknowledged writes for seconds.
func TestLoweringTTLDuringACutKeepsOneWriter(t *testing.T) {
	requireIntegration(t)
	lab, c := startNetnsCluster(t, 3, fastDCS)
	primary := c.waitPrimary(120*time.Second, c.nodes...)
	c.waitStreaming(primary)
	idx, other := labIndex(c, primary)
	ctx := ctxT(t, 10*time.Second)
	if err := pgExec(ctx, primary, "CREATE TABLE windows (node text, seq int)"); err != nil {
		t.Fatal(err)
	}
	if out, err := netnsCLI(other, "edit-config", "--set", "ttl=12", "--force"); err != nil {
		t.Fatalf("edit-config ttl=12: %v\n%s", err, out)
	}
	// Wait for a renewal made under ttl 12s: the lease it gives runs 8s.
	waitFor(t, 30*time.Second, "a renewal under ttl 12s (lease over 5s left)", func() (bool, error) {
		st, err := primary.Client().MemberStatus(ctxT(t, 2*time.Second))
		if err != nil {
			return false, nil
		}
		return st.Raftgres.LeaseRemaining > 5, nil
	})
	w := startWriterProbe(c)
	defer w.stop()
	waitFor(t, 10*time.Second, "the writer probe's first writes", func() (bool, error) {
		_, n := w.lastOn(primary.Name)
		return n > 10, nil
	})
	cutAt := time.Now()
	if err := lab.cut(idx); err != nil {
		t.Fatal(err)
	}
	if err := poll(30*time.Second, "edit-config ttl=3 through a member of the majority", func() error {
		_, err := netnsCLI(other, "edit-config", "--set", "ttl=3", "--force")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	loweredAt := time.Now()
	newPrimary := w.takeover(t, c, primary, cutAt)
	first := w.firstOnAfter(newPrimary.Name, cutAt)
	t.Logf("ttl lowered %s after the cut; %s took writes %s after the cut",
		loweredAt.Sub(cutAt).Round(time.Millisecond), newPrimary.Name, first.Sub(cutAt).Round(time.Millisecond))
	if o := w.overlaps(); len(o) > 0 {
		t.Fatalf("two members accepted writes at once:\n%s", strings.Join(o, "\n"))
	}
	if err := lab.heal(idx); err != nil {
		t.Fatal(err)
	}
	c.waitPrimary(90*time.Second, c.nodes...)
	w.stop()
	if o := w.overlaps(); len(o) > 0 {
		t.Fatalf("two members accepted writes at once:\n%s", strings.Join(o, "\n"))
	}
}

// labIndex returns n's link number in its netLab (the cut and heal
// argument) and another member of c.
func labIndex(c *cluster, n *Node) (idx int, other *Node) {
	for i, m := range c.nodes {
		if m == n {
			idx = i + 1
		} else if other == nil {
			other = m
		}
	}
	return idx, other
}
