package integration

import (
	"strings"
	"testing"
	"time"
)

// TestRewindCommand runs `raftgres rewind MEMBER` on a real
// cluster: refused on the primary with a reason; on a replica it stops
// PostgreSQL, runs pg_rewind from the primary, starts it as a standby and
// it streams again and catches up.
func TestRewindCommand(t *testing.T) {
	c := startCluster(t, 3, func(_ *Node, all []*Node) NodeOptions {
		return NodeOptions{Peers: all, Postgres: true, DCS: fastDCS}
	})
	primary := c.waitPrimary(120*time.Second, c.nodes...)
	c.waitStreaming(primary)
	ctx := ctxT(t, 3*time.Minute)
	if err := pgExec(ctx, primary, "CREATE TABLE probe (id int primary key)"); err != nil {
		t.Fatal(err)
	}
	if out, stderr, code := runCLI(t, "rewind", "-c", primary.Config, "--force", primary.Name); code == 0 ||
		!strings.Contains(out+stderr, "holds the leader key") {
		t.Fatalf("rewind of the primary: exit %d\n%s%s", code, out, stderr)
	}
	replica := c.follower(primary, c.nodes)
	before := pmPID(replica)
	out, stderr, code := runCLI(t, "rewind", "-c", primary.Config, "--force", replica.Name)
	if code != 0 {
		t.Fatalf("rewind %s: exit %d\n%s%s", replica.Name, code, out, stderr)
	}
	if !strings.Contains(replica.Log(), "rewound on request and started as a standby") || pmPID(replica) == before {
		t.Fatalf("%s was not rewound and restarted (postmaster %d, was %d)", replica.Name, pmPID(replica), before)
	}
	c.waitStreaming(primary)
	if err := pgExec(ctx, primary, "INSERT INTO probe SELECT generate_series(1, 10)"); err != nil {
		t.Fatal(err)
	}
	waitCount(t, replica, 10)
}
