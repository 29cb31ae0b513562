package integration

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMigrateStandbyClusterFromPatroni moves a Patroni 3.0.2 standby
// cluster to raftgres: a Patroni source cluster (scope src, permanent slot
// dr) and a 2-member Patroni standby cluster of it on one etcd; the
// standby cluster is paused, its Patroni stopped (PostgreSQL keeps
// running), each patroni.yml converted (standby_cluster included), and
// raftgres started on the same data directories. It must adopt them as a
// standby cluster of the source's system (no initdb, no copy, no rewind),
// with a standby leader replicating from the source and a replica
// cascading from it, and rows written on the source after the migration
// must reach both.
func TestMigrateStandbyClusterFromPatroni(t *testing.T) {
	requireIntegration(t)
	requirePatroni(t)
	base := baseDir(t)
	etcdAddr := startEtcd(t, base)
	ctx := ctxT(t, 10*time.Minute)

	patroniNode := func(name, scope, dcs string) (*Node, int, string, *proc) {
		n := newNode(t, base, name)
		n.PGPort = freePort(t)
		rest := freePort(t)
		cfg := patroniConfigFor(t, n, rest, etcdAddr, scope, dcs)
		t.Cleanup(func() {
			if pid := pmPID(n); pid > 0 && !processGone(pid) {
				_ = syscall.Kill(pid, syscall.SIGQUIT)
			}
		})
		return n, rest, cfg, startProc(t, base, "patroni-"+name, "patroni", cfg)
	}
	restOK := func(port int, path string) bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}

	src, srcRest, _, _ := patroniNode("src1", "src", "    slots: {dr: {type: physical}}\n")
	waitFor(t, 120*time.Second, "the source's Patroni primary", func() (bool, error) { return restOK(srcRest, "/primary"), nil })
	var sysid string
	if err := pgQueryRow(ctx, src, "SELECT system_identifier::text FROM pg_control_system()", &sysid); err != nil {
		t.Fatal(err)
	}
	if err := pgExec(ctx, src, "CREATE TABLE t (id int primary key); INSERT INTO t SELECT generate_series(1, 100)"); err != nil {
		t.Fatal(err)
	}

	standbyDCS := fmt.Sprintf("    standby_cluster: {host: 127.0.0.1, port: %d, primary_slot_name: dr}\n", src.PGPort)
	c := &cluster{t: t, base: base}
	rest := map[*Node]int{}
	var cfgs []string
	var patronis []*proc
	for i := range 2 {
		n, r, cfg, p := patroniNode(fmt.Sprintf("pg%d", i+1), "itest", standbyDCS)
		c.nodes, cfgs, patronis = append(c.nodes, n), append(cfgs, cfg), append(patronis, p)
		rest[n] = r
	}
	var leader *Node
	waitFor(t, 180*time.Second, "a Patroni standby leader with its replica streaming", func() (bool, error) {
		for _, n := range c.nodes {
			if !restOK(rest[n], "/standby-leader") {
				continue
			}
			leader = n
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			var k int
			err := pgQueryRow(cctx, n, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'", &k)
			return k == 1, err
		}
		return false, fmt.Errorf("no Patroni standby leader yet")
	})
	waitRows(t, c, "1", "the source's rows on Patroni's standby cluster")

	// Pause the standby cluster and stop its Patroni: PostgreSQL keeps
	// running. The source stays under Patroni.
	if out, err := exec.Command("patronictl", "-c", cfgs[0], "pause", "--wait").CombinedOutput(); err != nil {
		t.Fatalf("patronictl pause: %v\n%s", err, out)
	}
	for i, n := range c.nodes {
		if !patronis[i].stop(syscall.SIGTERM, 30*time.Second) {
			t.Fatalf("patroni on %s did not stop on SIGTERM", n.Name)
		}
		if pid := pmPID(n); pid == 0 || processGone(pid) {
			t.Fatalf("%s: PostgreSQL stopped with paused Patroni", n.Name)
		}
	}

	var peers []string
	for _, n := range c.nodes {
		peers = append(peers, n.Name+"="+n.RaftAddr())
	}
	tokenFile := filepath.Join(base, "raftgres.token")
	if err := os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i, n := range c.nodes {
		out, stderr, code := runCLI(t, "convert-patroni", "--raft-addr", n.RaftAddr(), "--peers", strings.Join(peers, ","),
			"--data-dir", n.Dir, "--token-file", tokenFile, cfgs[i])
		if code != 0 {
			t.Fatalf("convert-patroni %s: exit %d\n%s", cfgs[i], code, stderr)
		}
		if !strings.Contains(out, "standby_cluster:") {
			t.Fatalf("convert-patroni %s dropped standby_cluster:\n%s", cfgs[i], out)
		}
		if err := os.WriteFile(n.Config, []byte(out), 0o600); err != nil {
			t.Fatal(err)
		}
		chown(t, n.Config)
		n.APIPort = rest[n]
		n.Start()
	}
	got := c.waitStandbyLeader(120*time.Second, "")
	// The standby leader runs (and reports so) before its record of the
	// adopted system commits.
	waitFor(t, 30*time.Second, "the adopted system recorded", func() (bool, error) {
		st, err := c.state()
		if err != nil {
			return false, err
		}
		if st.Config.StandbyCluster == nil || st.Config.StandbyCluster.Port != src.PGPort {
			t.Fatalf("after adoption: standby_cluster %+v, want the source's port %d", st.Config.StandbyCluster, src.PGPort)
		}
		if st.Initialize != "" && st.Initialize != sysid {
			t.Fatalf("after adoption: system id %s, want the source's %s", st.Initialize, sysid)
		}
		return st.Initialize == sysid, fmt.Errorf("system id %q not yet recorded", st.Initialize)
	})
	if err := pgExec(ctx, src, "INSERT INTO t VALUES (500)"); err != nil {
		t.Fatal(err)
	}
	waitRows(t, c, "1,500", "a row written on the source after the migration")
	acted := regexp.MustCompile(`acting: [^\n]*action="?(?:[^"\n]*, )?(?:init|clone|reclone)\b[^\n]*|acting: [^\n]*action="[^"\n]* rewind\b[^\n]*`)
	for _, n := range c.nodes {
		if m := acted.FindString(n.Log()); m != "" {
			t.Fatalf("%s replaced or rewound its data on adoption: %s", n.Name, m)
		}
	}
	t.Logf("standby cluster adopted: Patroni's standby leader %s, raftgres's %s", leader.Name, got.Name)
}
