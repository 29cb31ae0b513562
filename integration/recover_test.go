package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// destroy loses the nodes' hosts for good, all at once: agents and
// postmasters killed, then their directories (PostgreSQL data, Raft
// store) removed.
func destroy(t testing.TB, nodes ...*Node) {
	t.Helper()
	var pgs []int
	for _, n := range nodes {
		if pidFile := filepath.Join(n.PGDataDir(), "postmaster.pid"); fileExists(pidFile) {
			pgs = append(pgs, readPID(t, pidFile))
		}
	}
	for _, n := range nodes {
		n.Kill9()
	}
	for _, pg := range pgs {
		_ = syscall.Kill(pg, syscall.SIGKILL)
	}
	for _, pg := range pgs {
		waitFor(t, 10*time.Second, fmt.Sprintf("postmaster %d to die", pg), func() (bool, error) {
			return syscall.Kill(pg, 0) != nil, nil
		})
	}
	for _, n := range nodes {
		if err := os.RemoveAll(n.Dir); err != nil {
			t.Fatal(err)
		}
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// syncClusterWithAckedWrites starts three members in synchronous mode and
// writes acked rows one by one, each acknowledged once the recorded
// synchronous standby had it; it returns the primary and that standby.
func syncClusterWithAckedWrites(t *testing.T, acked int) (c *cluster, primary, standby *Node) {
	c = newPGClusterDCS(t, 3, nil, syncDCS)
	primary = c.waitPrimary(120*time.Second, c.nodes...)
	c.waitStreaming(primary)
	ctx := ctxT(t, 5*time.Minute)
	if err := pgExec(ctx, primary, "CREATE TABLE probe (id int primary key)"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "a synchronous standby recorded", func() (bool, error) {
		st, err := c.state()
		if err != nil || st.Sync.Primary != st.Leader.Holder || len(st.Sync.Standbys) != 1 {
			return false, err
		}
		standby = c.byName(st.Sync.Standbys[0])
		return true, nil
	})
	for i := 1; i <= acked; i++ {
		if err := pgExec(ctx, primary, fmt.Sprintf("INSERT INTO probe VALUES (%d)", i)); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	return c, primary, standby
}

// TestRecoverAfterLosingTheMajority: three members in synchronous mode,
// two destroyed after acknowledged writes. `raftgres recover` is refused
// while the survivor's agent runs and changes nothing; with the agent
// stopped it rewrites the Raft store keeping the synchronous record (the
// survivor is the recorded standby), the survivor comes up as primary
// with every acknowledged write, and two fresh hosts join and stream.
func TestRecoverAfterLosingTheMajority(t *testing.T) {
	const acked = 200
	c, _, survivor := syncClusterWithAckedWrites(t, acked)
	ctx := ctxT(t, 5*time.Minute)
	var lost []*Node
	for _, n := range c.nodes {
		if n != survivor {
			lost = append(lost, n)
		}
	}
	t.Logf("destroying %s and %s; %s (the synchronous standby) survives", lost[0].Name, lost[1].Name, survivor.Name)
	destroy(t, lost...)

	// Refused while the agent runs: nothing changes.
	_, stderr, code := runCLIAsAgent(t, "recover", "-c", survivor.Config, "--force")
	if code != 1 || !strings.Contains(stderr, "running agent") || !strings.Contains(stderr, "nothing was changed") {
		t.Fatalf("recover while the agent runs: exit %d, stderr %q", code, stderr)
	}
	survivor.Stop()
	// Asked, not confirmed (empty stdin): nothing changes either.
	if _, stderr, code := runCLIAsAgent(t, "recover", "-c", survivor.Config); code != 1 || !strings.Contains(stderr, "aborted") {
		t.Fatalf("unconfirmed recover: exit %d, stderr %q", code, stderr)
	}
	out, stderr, code := runCLIAsAgent(t, "recover", "-c", survivor.Config, "--force")
	if code != 0 {
		t.Fatalf("recover: exit %d\n%s%s", code, out, stderr)
	}
	t.Logf("recover:\n%s", out)
	// The record kept names the survivor as the one that may be first
	// primary: as primary's synchronous standby, or as the holder itself
	// when the fast path elected it between the two hosts' destruction
	// (the other one still gave it a quorum for a moment).
	for _, want := range []string{"new raft configuration: " + survivor.Name + "=", "leader key",
		"is kept: only " + survivor.Name + " (known to hold every acknowledged commit)", "recovered"} {
		if !strings.Contains(out, want) {
			t.Fatalf("recover output lacks %q:\n%s", want, out)
		}
	}

	survivor.Start()
	c.nodes = []*Node{survivor}
	waitFor(t, 90*time.Second, survivor.Name+" primary after the recovery", func() (bool, error) {
		st, err := c.state()
		if err != nil || st.Leader.Holder != survivor.Name {
			return false, err
		}
		wctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return pgExec(wctx, survivor, fmt.Sprintf("INSERT INTO probe VALUES (%d)", acked+1)) == nil, nil
	})
	waitCount(t, survivor, acked+1)
	st, err := c.state()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Members) != 1 {
		t.Fatalf("members after the recovery: %v", st.MemberNames())
	}
	recovered := false
	for _, ev := range st.History {
		recovered = recovered || ev.Kind == "raft_recover" && strings.Contains(ev.Reason, "synchronous record kept")
	}
	if !recovered {
		t.Fatalf("no raft_recover event saying the synchronous record was kept: %+v", st.History)
	}

	// Two fresh hosts join the recovered cluster and stream.
	for _, name := range []string{"pg4", "pg5"} {
		n := newNode(t, c.base, name)
		n.WriteConfig(NodeOptions{Join: []*Node{survivor}, Postgres: true})
		n.Start()
		c.nodes = append(c.nodes, n)
	}
	c.waitPrimary(180*time.Second, c.nodes...)
	c.waitStreaming(survivor)
	if err := pgExec(ctx, survivor, fmt.Sprintf("INSERT INTO probe VALUES (%d)", acked+2)); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		waitCount(t, n, acked+2)
	}
}

// TestRecoverRefusesToLoseTheSyncRecord: three members in synchronous
// mode; the primary and its recorded synchronous standby are destroyed,
// the asynchronous replica survives. `raftgres recover` refuses (no
// survivor is known to hold every acknowledged commit) and changes
// nothing; with --allow-data-loss it clears the record, says so in
// history, and the survivor becomes primary.
func TestRecoverRefusesToLoseTheSyncRecord(t *testing.T) {
	c, primary, standby := syncClusterWithAckedWrites(t, 20)
	var survivor *Node
	for _, n := range c.nodes {
		if n != primary && n != standby {
			survivor = n
		}
	}
	t.Logf("destroying %s (primary) and %s (synchronous standby); %s survives", primary.Name, standby.Name, survivor.Name)
	destroy(t, primary, standby)
	survivor.Stop()

	out, stderr, code := runCLIAsAgent(t, "recover", "-c", survivor.Config, "--force")
	if code != 1 || !strings.Contains(stderr, "no recorded synchronous member survives") ||
		!strings.Contains(stderr, "--allow-data-loss") || !strings.Contains(stderr, "nothing was changed") {
		t.Fatalf("recover without the synchronous standby: exit %d\n%s%s", code, out, stderr)
	}
	if !strings.Contains(out, "every acknowledged commit may be lost") {
		t.Fatalf("refused plan does not warn:\n%s", out)
	}
	out, stderr, code = runCLIAsAgent(t, "recover", "-c", survivor.Config, "--force", "--allow-data-loss")
	if code != 0 || !strings.Contains(out, "DATA LOSS ALLOWED") {
		t.Fatalf("recover --allow-data-loss: exit %d\n%s%s", code, out, stderr)
	}
	t.Logf("recover --allow-data-loss:\n%s", out)

	survivor.Start()
	c.nodes = []*Node{survivor}
	waitFor(t, 90*time.Second, survivor.Name+" primary after the recovery", func() (bool, error) {
		st, err := c.state()
		if err != nil || st.Leader.Holder != survivor.Name {
			return false, err
		}
		wctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return pgExec(wctx, survivor, "INSERT INTO probe VALUES (1000)") == nil, nil
	})
	st, err := c.state()
	if err != nil {
		t.Fatal(err)
	}
	loss := false
	for _, ev := range st.History {
		loss = loss || ev.Kind == "raft_recover" && strings.Contains(ev.Reason, "DATA LOSS ALLOWED")
	}
	if !loss {
		t.Fatalf("no raft_recover event recording the allowed data loss: %+v", st.History)
	}
}
