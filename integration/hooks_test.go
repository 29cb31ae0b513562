package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPrePromoteFailureElectsAnotherReplica runs three members whose
// postgresql.pre_promote is a script that exits with /bin/false's status
// once a marker file exists in the member's directory. After bootstrap,
// the marker is put on the replica the election ranks first
// (failover_priority), and the primary's agent is killed with SIGKILL: that
// replica takes the key, its hook fails, it gives the key up still a
// standby, and the other replica becomes primary.
func TestPrePromoteFailureElectsAnotherReplica(t *testing.T) {
	tags := map[string]string{"pg1": "{failover_priority: 1}", "pg2": "{failover_priority: 2}", "pg3": "{failover_priority: 3}"}
	c := startCluster(t, 3, func(nd *Node, all []*Node) NodeOptions {
		script := filepath.Join(nd.Dir, "pre_promote.sh")
		body := fmt.Sprintf("#!/bin/sh\nif [ -e %s ]; then exec /bin/false; fi\nexit 0\n", filepath.Join(nd.Dir, "pre_promote.fail"))
		if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		chown(t, script)
		return NodeOptions{Peers: all, Postgres: true, DCS: fastDCS, Tags: tags[nd.Name],
			PostgresKeys: []string{"pre_promote: " + script, "pre_promote_timeout: 1s"}}
	})
	primary := c.waitPrimary(90*time.Second, c.nodes...)
	ctx := ctxT(t, 30*time.Second)
	if err := pgExec(ctx, primary, "CREATE TABLE probe AS SELECT generate_series(1, 100) AS id"); err != nil {
		t.Fatal(err)
	}
	var failing, other *Node
	for _, n := range c.nodes {
		if n == primary {
			continue
		}
		waitCount(t, n, 100)
		if failing == nil || n.Name > failing.Name {
			failing, other = n, failing
		} else {
			other = n
		}
	}
	// Both replicas at the primary's position: failover_priority decides.
	waitFor(t, 30*time.Second, "both replicas reporting the primary's position", func() (bool, error) {
		st, err := c.state()
		if err != nil {
			return false, err
		}
		p, f, o := st.Members[primary.Name].Status, st.Members[failing.Name].Status, st.Members[other.Name].Status
		return p.WrittenLSN != 0 && f.ReceivedLSN == p.WrittenLSN && o.ReceivedLSN == p.WrittenLSN,
			fmt.Errorf("primary %x, %s %x, %s %x", p.WrittenLSN, failing.Name, f.ReceivedLSN, other.Name, o.ReceivedLSN)
	})
	if err := os.WriteFile(filepath.Join(failing.Dir, "pre_promote.fail"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("primary %s; pre_promote fails on %s", primary.Name, failing.Name)
	primary.Kill9()
	newPrimary := c.waitNewPrimaryWriting(primary, "INSERT INTO probe VALUES (1000)")
	if newPrimary != other {
		t.Fatalf("new primary %s, want %s (the replica whose pre_promote succeeds)", newPrimary.Name, other.Name)
	}
	log := failing.Log()
	if !strings.Contains(log, "pre_promote failed") {
		t.Errorf("%s's log does not say its pre_promote failed:\n%s", failing.Name, log)
	}
	if strings.Contains(log, "promoted to primary") {
		t.Errorf("%s promoted although its pre_promote failed", failing.Name)
	}
	st, err := c.state()
	if err != nil {
		t.Fatal(err)
	}
	released := false
	for _, e := range st.History {
		if e.Actor == failing.Name && strings.Contains(e.Reason, "pre_promote failed") {
			released = true
		}
	}
	if !released {
		t.Errorf("no release by %s for its pre_promote in the history", failing.Name)
	}
	// It stays a standby and follows the new primary.
	waitCount(t, failing, 101)
	var inRecovery bool
	if err := pgQueryRow(ctxT(t, 5*time.Second), failing, "SELECT pg_is_in_recovery()", &inRecovery); err != nil || !inRecovery {
		t.Errorf("%s in recovery = %v (%v), want a standby", failing.Name, inRecovery, err)
	}
}
