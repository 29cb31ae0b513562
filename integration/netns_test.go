package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// netLab is a set of network namespaces made by the test: one per node,
// each with a "cluster" veth into a bridge that lives in its own namespace
// (peers talk over it; cutting it partitions the node) and a "probe" veth
// to the test process, which therefore always reaches every node.
type netLab struct {
	t      testing.TB
	id     string
	bridge string // namespace holding the bridge
	nodes  []string
	// probeNet is the third octet before node 1's probe subnet: the probe
	// links live in the root namespace, so two labs at once (two test
	// runs on one machine) must not share their subnets.
	probeNet int
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// newNetLab builds n namespaces; it skips the test (saying why) when the
// machine cannot create them.
func newNetLab(t testing.TB, n int) *netLab {
	t.Helper()
	id := fmt.Sprintf("%04d", rand.IntN(10000))
	lab := &netLab{t: t, id: id, bridge: "rg" + id + "br", probeNet: rand.IntN(40) * 6}
	if err := ipCmd("netns", "add", lab.bridge); err != nil {
		t.Skipf("network namespaces unavailable, partition test skipped: %v", err)
	}
	t.Cleanup(lab.destroy)
	must := func(args ...string) {
		t.Helper()
		if err := ipCmd(args...); err != nil {
			t.Fatal(err)
		}
	}
	must("-n", lab.bridge, "link", "add", "br0", "type", "bridge")
	must("-n", lab.bridge, "link", "set", "br0", "up")
	for i := 1; i <= n; i++ {
		ns := fmt.Sprintf("rg%sn%d", id, i)
		lab.nodes = append(lab.nodes, ns)
		must("netns", "add", ns)
		must("-n", ns, "link", "set", "lo", "up")
		c, p := fmt.Sprintf("rg%sc%d", id, i), fmt.Sprintf("rg%sp%d", id, i)
		must("link", "add", c, "type", "veth", "peer", "name", "cl0", "netns", ns)
		must("link", "set", c, "netns", lab.bridge)
		must("-n", lab.bridge, "link", "set", c, "master", "br0", "up")
		must("-n", ns, "addr", "add", lab.clusterIP(i)+"/24", "dev", "cl0")
		must("-n", ns, "link", "set", "cl0", "up")
		must("link", "add", p, "type", "veth", "peer", "name", "pr0", "netns", ns)
		must("addr", "add", fmt.Sprintf("10.214.%d.1/24", lab.probeNet+i), "dev", p)
		must("link", "set", p, "up")
		must("-n", ns, "addr", "add", lab.probeIP(i)+"/24", "dev", "pr0")
		must("-n", ns, "link", "set", "pr0", "up")
	}
	return lab
}

func (l *netLab) clusterIP(i int) string { return fmt.Sprintf("10.213.0.%d", 10+i) }
func (l *netLab) probeIP(i int) string   { return fmt.Sprintf("10.214.%d.2", l.probeNet+i) }

// cut and heal the cluster link of node i (1-based).
func (l *netLab) cut(i int) error {
	return ipCmd("-n", l.bridge, "link", "set", fmt.Sprintf("rg%sc%d", l.id, i), "down")
}
func (l *netLab) heal(i int) error {
	return ipCmd("-n", l.bridge, "link", "set", fmt.Sprintf("rg%sc%d", l.id, i), "up")
}

func (l *netLab) destroy() {
	for i := range l.nodes {
		_ = ipCmd("link", "del", fmt.Sprintf("rg%sp%d", l.id, i+1))
		_ = ipCmd("netns", "del", l.nodes[i])
	}
	_ = ipCmd("netns", "del", l.bridge)
}

// startNetnsCluster starts n members, each in its own network namespace
// of a new lab, so that a partition is a real cut link.
func startNetnsCluster(t testing.TB, n int, dcs string) (*netLab, *cluster) {
	t.Helper()
	return startNetnsClusterWith(t, n, NodeOptions{DCS: dcs})
}

// startNetnsClusterWith is startNetnsCluster with the DCS and Raft options
// of o (its peers and Postgres are set here).
func startNetnsClusterWith(t testing.TB, n int, o NodeOptions) (*netLab, *cluster) {
	t.Helper()
	lab := newNetLab(t, n)
	placed := false
	c := startCluster(t, n, func(nd *Node, all []*Node) NodeOptions {
		if !placed { // every address must be known before the first config is written
			for i, m := range all {
				m.NetNS, m.Host, m.ProbeHost = lab.nodes[i], lab.clusterIP(i+1), lab.probeIP(i+1)
			}
			placed = true
		}
		return NodeOptions{Peers: all, Postgres: true, DCS: o.DCS, Raft: o.Raft}
	})
	return lab, c
}

// takeover waits until a member other than old acknowledges a write sent
// after cutAt and checks that old acknowledged nothing after the new
// primary's first write began; it returns the new primary.
func (w *writerProbe) takeover(t *testing.T, c *cluster, old *Node, cutAt time.Time) *Node {
	t.Helper()
	var next *Node
	waitFor(t, 60*time.Second, "a new primary accepting writes", func() (bool, error) {
		for _, n := range c.nodes {
			if at, k := w.lastOn(n.Name); n != old && k > 0 && at.After(cutAt) {
				next = n
				return true, nil
			}
		}
		return false, nil
	})
	oldLast, _ := w.lastOn(old.Name)
	newFirst := w.firstOnAfter(next.Name, cutAt)
	t.Logf("%s cut off: its last acknowledged write ended %s after the cut; %s's first began %s after it",
		old.Name, oldLast.Sub(cutAt).Round(time.Millisecond), next.Name, newFirst.Sub(cutAt).Round(time.Millisecond))
	if !oldLast.Before(newFirst) {
		t.Fatalf("%s still acknowledged writes (until %s) after %s began taking them (%s)", old.Name,
			oldLast.Format("15:04:05.000"), next.Name, newFirst.Format("15:04:05.000"))
	}
	return next
}

// writeWindow is one write a member acknowledged: sent at Start, acked at End.
type writeWindow struct {
	Node       string
	Seq        int
	Start, End time.Time
}

// writerProbe tries a write on every member in turn, all the time, and
// records every write each member accepted.
type writerProbe struct {
	mu      sync.Mutex
	windows []writeWindow
	cancel  context.CancelFunc
	done    chan struct{}
}

func startWriterProbe(c *cluster) *writerProbe {
	ctx, cancel := context.WithCancel(context.Background())
	w := &writerProbe{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		conns := map[string]*pgx.Conn{}
		defer func() {
			for _, cn := range conns {
				_ = cn.Close(context.Background())
			}
		}()
		for seq := 0; ctx.Err() == nil; seq++ {
			for _, n := range c.nodes {
				w.try(ctx, conns, n, seq)
			}
		}
	}()
	return w
}

func (w *writerProbe) try(ctx context.Context, conns map[string]*pgx.Conn, n *Node, seq int) {
	cn := conns[n.Name]
	if cn == nil {
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		var err error
		cn, err = pgx.Connect(cctx, n.PGConn())
		cancel()
		if err != nil {
			return
		}
		conns[n.Name] = cn
	}
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err := cn.Exec(wctx, "INSERT INTO windows VALUES ($1, $2)", n.Name, seq)
	cancel()
	if err != nil {
		// Indeterminate (the INSERT may have committed without its
		// acknowledgement): never retried, never counted; the next round
		// writes a new seq.
		_ = cn.Close(context.Background())
		delete(conns, n.Name)
		return
	}
	w.mu.Lock()
	w.windows = append(w.windows, writeWindow{Node: n.Name, Seq: seq, Start: start, End: time.Now()})
	w.mu.Unlock()
}

func (w *writerProbe) stop() { w.cancel(); <-w.done }

// lost returns acknowledged writes missing on n.
func (w *writerProbe) lost(ctx context.Context, n *Node) ([]string, error) {
	// The acknowledged writes are taken before n is read: one acknowledged
	// while the query runs may be missing from its snapshot without being
	// lost (it was: TestQuorumCommit flagged the new primary's first write).
	w.mu.Lock()
	acked := slices.Clone(w.windows)
	w.mu.Unlock()
	conn, err := pgx.Connect(ctx, n.PGConn())
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SELECT node, seq FROM windows")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	have := map[string]bool{}
	for rows.Next() {
		var node string
		var seq int
		if err := rows.Scan(&node, &seq); err != nil {
			return nil, err
		}
		have[fmt.Sprintf("%s/%d", node, seq)] = true
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var out []string
	for _, x := range acked {
		if k := fmt.Sprintf("%s/%d", x.Node, x.Seq); !have[k] {
			out = append(out, k)
		}
	}
	return out, nil
}

// overlaps returns pairs of acknowledged writes on different members whose
// windows overlap in time: two members accepting writes at once.
func (w *writerProbe) overlaps() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	last := map[string]writeWindow{}
	var out []string
	for _, cur := range w.windows {
		for node, prev := range last {
			if node != cur.Node && prev.End.After(cur.Start) {
				out = append(out, fmt.Sprintf("%s acked until %s while %s was written from %s",
					node, prev.End.Format("15:04:05.000"), cur.Node, cur.Start.Format("15:04:05.000")))
			}
		}
		last[cur.Node] = cur
	}
	return out
}

// firstOnAfter is the start of node's first acknowledged write after t.
func (w *writerProbe) firstOnAfter(node string, t time.Time) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, x := range w.windows {
		if x.Node == node && x.Start.After(t) {
			return x.Start
		}
	}
	return time.Time{}
}

func (w *writerProbe) lastOn(node string) (time.Time, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var at time.Time
	n := 0
	for _, x := range w.windows {
		if x.Node == node {
			at, n = x.End, n+1
		}
	}
	return at, n
}

// TestPartitionedPrimaryFencesBeforeNewPrimary cuts the primary off from
// both peers (its namespace's cluster link goes down): it must stop
// accepting writes before another member accepts any, and follow the new
// primary after the link heals.
func TestPartitionedPrimaryFencesBeforeNewPrimary(t *testing.T) {
	requireIntegration(t)
	lab, c := startNetnsCluster(t, 3, fastDCS)
	primary := c.waitPrimary(120*time.Second, c.nodes...)
	c.waitStreaming(primary)
	ctx := ctxT(t, 10*time.Second)
	if err := pgExec(ctx, primary, "CREATE TABLE windows (node text, seq int)"); err != nil {
		t.Fatal(err)
	}
	w := startWriterProbe(c)
	defer w.stop()
	waitFor(t, 10*time.Second, "the writer probe's first writes", func() (bool, error) {
		_, n := w.lastOn(primary.Name)
		return n > 10, nil
	})
	idx := 0
	for i, n := range c.nodes {
		if n == primary {
			idx = i + 1
		}
	}
	cutAt := time.Now()
	if err := lab.cut(idx); err != nil {
		t.Fatal(err)
	}
	newPrimary := w.takeover(t, c, primary, cutAt)
	if o := w.overlaps(); len(o) > 0 {
		t.Fatalf("two members accepted writes at once:\n%s", strings.Join(o, "\n"))
	}
	if err := lab.heal(idx); err != nil {
		t.Fatal(err)
	}
	c.waitPrimary(90*time.Second, c.nodes...)
	waitFor(t, 60*time.Second, "the old primary back as a streaming replica", func() (bool, error) {
		var inRecovery bool
		qctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err := pgQueryRow(qctx, primary, "SELECT pg_is_in_recovery()", &inRecovery)
		return err == nil && inRecovery, err
	})
	c.waitStreaming(newPrimary)
	w.stop()
	if o := w.overlaps(); len(o) > 0 {
		t.Fatalf("two members accepted writes at once:\n%s", strings.Join(o, "\n"))
	}
}
