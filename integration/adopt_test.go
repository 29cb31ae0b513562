package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAdoptionTakesTheNewestDataDirectory: a stale
// ex-primary, killed and never restarted as a standby (no standby.signal),
// must not win adoption against the newer primary's data directory when
// every Raft state is lost and it starts first; the newer one is adopted
// and its rows survive (before, the stale one adopted and the newer
// primary was rewound onto the older timeline).
func TestAdoptionTakesTheNewestDataDirectory(t *testing.T) {
	requireIntegration(t)
	c := newPGCluster(t, 3)
	a := c.waitPrimary(90*time.Second, c.nodes...)
	c.waitStreaming(a)
	ctx := ctxT(t, 5*time.Minute)
	if err := pgExec(ctx, a, "CREATE TABLE probe (id int primary key)"); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 10; i++ {
		if err := pgExec(ctx, a, fmt.Sprintf("INSERT INTO probe VALUES (%d)", i)); err != nil {
			t.Fatal(err)
		}
	}
	var rest []*Node
	for _, n := range c.nodes {
		if n != a {
			rest = append(rest, n)
			waitCount(t, n, 10)
		}
	}
	a.Kill9()
	all := c.nodes
	b := c.waitNewPrimaryWriting(a, "INSERT INTO probe VALUES (11)")
	for i := 12; i <= 50; i++ {
		if err := pgExec(ctx, b, fmt.Sprintf("INSERT INTO probe VALUES (%d)", i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range rest {
		waitCount(t, n, 50)
	}
	for _, n := range rest {
		if n != b {
			n.Stop()
		}
	}
	b.Stop()
	if fileExists(filepath.Join(a.PGDataDir(), "standby.signal")) {
		t.Fatal("stale primary has standby.signal")
	}
	for _, n := range all {
		if err := os.RemoveAll(filepath.Join(n.Dir, "raft")); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("stale ex-primary %s (TL1), newer primary %s (TL2): restarting, the stale one first", a.Name, b.Name)
	c.nodes = all
	a.Start()
	// The stale one starts first: the others once its Raft peer runs
	// (a new Raft cluster needs them for a leader, so it cannot go
	// further alone; it then races them for the bootstrap key).
	waitFor(t, 60*time.Second, a.Name+"'s raft peer started", func() (bool, error) {
		return strings.Contains(a.Log(), "raft started"), nil
	})
	for _, n := range rest {
		n.Start()
	}
	got := c.waitPrimary(180*time.Second, all...)
	if got != b {
		t.Fatalf("adopted %s, want %s", got.Name, b.Name)
	}
	for _, n := range all {
		waitCount(t, n, 50)
	}
	if strings.Contains(b.Log(), "rewinding") {
		t.Errorf("%s, the newer primary, was rewound", b.Name)
	}
}
