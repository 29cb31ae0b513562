package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestStandbyClusterFromArchive: a standby cluster with no host at all,
// restore_command only. Its first member restores the source's pgBackRest
// backup (create_replica_methods: [pgbackrest]) instead of running initdb,
// the other clones from it and cascades, the source's rows arrive through
// the WAL archive alone, nothing is rewound or recloned on the way (the
// standby leader never streams, and must not be taken for a broken one),
// and promote-cluster makes it writable once the source site is lost.
func TestStandbyClusterFromArchive(t *testing.T) {
	requireIntegration(t)
	requirePgBackRest(t)
	ctx := ctxT(t, 10*time.Minute)
	base := baseDir(t)
	repo := filepath.Join(base, "repo")
	if err := os.Mkdir(repo, 0o750); err != nil {
		t.Fatal(err)
	}
	chown(t, repo)
	section := fmt.Sprintf(`{stanza: src, repo_path: %s, options: {archive-timeout: "30"}}`, repo)
	a := startCluster(t, 1, func(nd *Node, all []*Node) NodeOptions {
		return NodeOptions{Peers: all, Postgres: true, DCS: fastDCS, Backup: section}
	})
	pa := a.waitPrimary(120*time.Second, a.nodes...)
	waitFor(t, 90*time.Second, "the pgBackRest stanza", func() (bool, error) {
		return strings.Contains(pa.Log(), "pgbackrest stanza ready"), nil
	})
	if err := pgExec(ctx, pa, "CREATE TABLE t (id int primary key); INSERT INTO t SELECT generate_series(1, 100)"); err != nil {
		t.Fatal(err)
	}
	agentCLI(t, 0, "backup", "-c", pa.Config, "--type", "full", "--from", "primary")

	// What a standby site's operator writes for archive-get: one
	// pgBackRest config for the source's repository, shared by the
	// members (restore_command is cluster-wide).
	rdir := filepath.Join(base, "restore")
	for _, d := range []string{rdir, filepath.Join(rdir, "log"), filepath.Join(rdir, "lock")} {
		if err := os.Mkdir(d, 0o750); err != nil {
			t.Fatal(err)
		}
		chown(t, d)
	}
	conf := filepath.Join(rdir, "pgbackrest.conf")
	body := fmt.Sprintf("[global]\nrepo1-path=%s\nlog-path=%s/log\nlock-path=%s/lock\n", repo, rdir, rdir)
	if err := os.WriteFile(conf, []byte(body), 0o640); err != nil {
		t.Fatal(err)
	}
	chown(t, conf)
	restore := fmt.Sprintf(`pgbackrest --config=%s --stanza=src --pg1-path="$PWD" archive-get %%f "%%p"`, conf)
	dcs := fmt.Sprintf("{ttl: 3, loop_wait: 300ms, retry_timeout: 1, standby_cluster: {restore_command: '%s', create_replica_methods: [pgbackrest]}}", restore)
	b := startCluster(t, 2, func(nd *Node, all []*Node) NodeOptions {
		return NodeOptions{Peers: all, Postgres: true, DCS: dcs, Backup: section}
	})
	leader := b.waitStandbyLeader(180*time.Second, "")
	waitRows(t, b, "1", "the backup's rows on the standby cluster")

	// A row written after the backup reaches the standby site through the
	// archive only (the WAL switch hands its segment to archive-push).
	if err := pgExec(ctx, pa, "INSERT INTO t VALUES (500)"); err != nil {
		t.Fatal(err)
	}
	var seg string
	if err := pgQueryRow(ctx, pa, "SELECT pg_walfile_name(pg_switch_wal())", &seg); err != nil {
		t.Fatal(err)
	}
	waitRows(t, b, "1,500", "the archived row on the standby cluster")
	acted := regexp.MustCompile(`acting: .*action="?[^"\n]*(reclone|rewind)[^\n]*`)
	for _, n := range b.nodes {
		if m := acted.FindString(n.Log()); m != "" {
			t.Fatalf("%s was rewound or recloned on the archive alone: %s", n.Name, m)
		}
	}

	// The source site is lost: promote-cluster.
	pa.Stop()
	if out, stderr, code := runCLI(t, "promote-cluster", "--force", "-c", b.nodes[0].Config); code != 0 || !strings.Contains(out, "is writable: "+leader.Name) {
		t.Fatalf("promote-cluster (%d):\n%s%s", code, out, stderr)
	}
	pb := b.waitPrimary(60*time.Second, b.nodes...)
	if err := pgExec(ctx, pb, "INSERT INTO t VALUES (1000)"); err != nil {
		t.Fatal(err)
	}
	waitRows(t, b, "1,500,1000", "the promoted cluster's rows")
	t.Logf("archive segment %s replayed; promoted %s", seg, pb.Name)
}
