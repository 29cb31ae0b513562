package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRestoreFromRepository runs create_replica_methods and
// bootstrap.method pgbackrest with real pgBackRest and PostgreSQL:
//   - the first replicas fall back to pg_basebackup (no backup yet);
//   - after a backup, a fourth member is created from the repository and
//     streams, and a reinit of a replica restores from it too;
//   - a new cluster restored to a time between two known writes holds
//     exactly the rows committed before that time, its other members clone
//     and stream, and it archives on its new timeline;
//   - a restore point that does not exist stops the restore with an error
//     and leaves no primary and no data directory behind.
func TestRestoreFromRepository(t *testing.T) {
	requireIntegration(t)
	requirePgBackRest(t)
	repo := filepath.Join(baseDir(t), "repo")
	if err := os.Mkdir(repo, 0o750); err != nil {
		t.Fatal(err)
	}
	chown(t, repo)
	section := fmt.Sprintf(`{stanza: itest, repo_path: %s, options: {archive-timeout: "30"}}`, repo)
	methods := []string{"create_replica_methods: [pgbackrest, basebackup]"}
	opts := func(peers []*Node, bootstrap ...string) NodeOptions {
		return NodeOptions{Peers: peers, Postgres: true, DCS: fastDCS, Backup: section, PostgresKeys: methods, BootstrapKeys: bootstrap}
	}
	// The first cluster's members run pgBackRest's TLS server, with
	// certificates whose CN is the member's name.
	ca := newCA(t, filepath.Dir(repo), "backup")
	withServer := func(nd *Node, o NodeOptions) NodeOptions {
		cert, key := issueNode(t, ca, nd.Name)
		o.Backup = fmt.Sprintf(`{stanza: itest, repo_path: %s, options: {archive-timeout: "30"}, `+
			`server: {listen: "localhost:%d", ca_file: %s, cert_file: %s, key_file: %s}}`, repo, freePort(t), ca.File, cert, key)
		return o
	}
	cli := func(want int, args ...string) string {
		t.Helper()
		return agentCLI(t, want, args...)
	}
	a := startCluster(t, 3, func(nd *Node, all []*Node) NodeOptions { return withServer(nd, opts(all)) })
	primary := a.waitPrimary(120*time.Second, a.nodes...)
	a.waitStreaming(primary)
	waitFor(t, 90*time.Second, "the pgBackRest stanza", func() (bool, error) {
		return strings.Contains(primary.Log(), "pgbackrest stanza ready"), nil
	})
	for _, n := range a.nodes {
		if n != primary && !logLine(n, "clone finished:", "method=basebackup") {
			t.Errorf("%s: no clone by pg_basebackup before the first backup", n.Name)
		}
	}

	ctx := ctxT(t, 10*time.Minute)
	insert := func(n *Node, from, to int) {
		t.Helper()
		if err := pgExec(ctx, n, fmt.Sprintf("INSERT INTO probe SELECT generate_series(%d, %d)", from, to)); err != nil {
			t.Fatal(err)
		}
	}
	if err := pgExec(ctx, primary, "CREATE TABLE probe (id int primary key)"); err != nil {
		t.Fatal(err)
	}
	insert(primary, 1, 100)
	// On a replica's host, by default: the replica's files, the primary
	// read through its TLS server; on the primary's host, by default, a
	// replica's files through the replica's TLS server.
	replica := a.follower(primary, a.nodes)
	if out := cli(0, "backup", "-c", replica.Config, "--type", "full"); !strings.Contains(out, "copying "+replica.Name+"'s files, primary "+primary.Name) {
		t.Fatalf("backup on %s: %s", replica.Name, out)
	}
	if out := cli(0, "backup", "-c", primary.Config, "--type", "incr"); strings.Contains(out, "copying "+primary.Name+"'s files") {
		t.Fatalf("backup on the primary's host copied the primary: %s", out)
	}
	var list backupList
	if err := json.Unmarshal([]byte(cli(0, "backups", "-c", primary.Config, "--format", "json")), &list); err != nil || len(list.Backups) != 2 {
		t.Fatalf("backups: %+v (%v)", list, err)
	}
	// pgBackRest picks the newest backup whose stop time, in whole
	// seconds, is before the target: the target must be past it.
	waitFor(t, 10*time.Second, "the clock past the backup's stop second", func() (bool, error) {
		var now time.Time
		err := pgQueryRow(ctx, primary, "SELECT clock_timestamp()", &now)
		return err == nil && now.After(list.Backups[1].Stop.Add(time.Second)), err
	})
	insert(primary, 101, 150)
	var target time.Time
	if err := pgQueryRow(ctx, primary, "SELECT clock_timestamp()", &target); err != nil {
		t.Fatal(err)
	}
	insert(primary, 151, 175)
	cli(0, "backup", "check", "-c", primary.Config) // the last inserts are archived

	// A fourth member is created from the repository, then streams.
	n4 := newNode(t, a.base, "pg4")
	o := withServer(n4, opts(nil))
	o.Join = []*Node{primary}
	n4.WriteConfig(o)
	n4.Start()
	a.nodes = append(a.nodes, n4)
	waitFor(t, 120*time.Second, "pg4 created from the repository", func() (bool, error) {
		return logLine(n4, "clone finished:", "method=pgbackrest"), nil
	})
	a.waitStreaming(primary)
	waitCount(t, n4, 175)

	// A reinit restores from the repository too.
	if out, stderr, code := runCLI(t, "reinit", "-c", primary.Config, "--force", replica.Name); code != 0 {
		t.Fatalf("reinit %s: exit %d\n%s%s", replica.Name, code, out, stderr)
	}
	waitFor(t, 120*time.Second, replica.Name+" recloned from the repository", func() (bool, error) {
		return logLine(replica, "clone finished:", "method=pgbackrest"), nil
	})
	a.waitStreaming(primary)
	insert(primary, 176, 180)
	waitCount(t, replica, 180)
	for _, n := range a.nodes {
		n.Stop()
	}

	// A restore point that was never made: the restore fails, and leaves
	// no primary and no data directory behind.
	bad := startCluster(t, 1, func(_ *Node, all []*Node) NodeOptions {
		return opts(all, "method: pgbackrest", "pgbackrest: {target_name: no-such-point}")
	})
	b0 := bad.nodes[0]
	waitFor(t, 120*time.Second, "the failed restore", func() (bool, error) {
		return strings.Contains(b0.Log(), "postgres exited during recovery"), nil
	})
	b0.Stop()
	if _, err := os.Stat(b0.PGDataDir()); !os.IsNotExist(err) {
		t.Errorf("a failed restore left %s behind (%v)", b0.PGDataDir(), err)
	}
	if strings.Contains(b0.Log(), "cluster initialised") {
		t.Error("a failed restore initialised the cluster")
	}

	// A new cluster restored to target: exactly the first 150 rows.
	ts := target.UTC().Format(time.RFC3339Nano)
	b := startCluster(t, 3, func(_ *Node, all []*Node) NodeOptions {
		return opts(all, "method: pgbackrest", fmt.Sprintf("pgbackrest: {target_time: '%s'}", ts))
	})
	bp := b.waitPrimary(180*time.Second, b.nodes...)
	if k, err := pgCount(ctx, bp); err != nil || k != 150 {
		t.Fatalf("restored to %s: %d rows (%v), want the 150 committed before it", ts, k, err)
	}
	b.waitStreaming(bp)
	insert(bp, 1000, 1000)
	for _, n := range b.nodes {
		waitCount(t, n, 151)
	}
	cli(0, "backup", "check", "-c", bp.Config)
	var tli int
	if err := pgQueryRow(ctx, bp, "SELECT timeline_id FROM pg_control_checkpoint()", &tli); err != nil || tli < 2 {
		t.Fatalf("restored primary on timeline %d (%v), want a new timeline", tli, err)
	}
}

// logLine reports whether one line of n's log holds every part.
func logLine(n *Node, parts ...string) bool {
	for _, l := range strings.Split(n.Log(), "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(l, p)
		}
		if all {
			return true
		}
	}
	return false
}
