package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"raftgres/config"
)

func requirePgBackRest(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("pgbackrest"); err != nil {
		t.Fatalf("pgbackrest not installed (apt-get install pgbackrest; .ci/run does): %v", err)
	}
}

// agentCLI runs the raftgres CLI as the agent's OS user, wants exit
// status want, and returns stdout and stderr together.
func agentCLI(t *testing.T, want int, args ...string) string {
	t.Helper()
	out, stderr, code := runCLIAsAgent(t, args...)
	if code != want {
		t.Fatalf("raftgres %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, want, out, stderr)
	}
	return out + stderr
}

// backupList is what `raftgres backups --format json` prints.
type backupList struct {
	Name    string
	Status  string
	Backups []struct {
		Label string    `json:"label"`
		Type  string    `json:"type"`
		Stop  time.Time `json:"stop"`
	}
	WALMin, WALMax string
}

// TestBackupsAndArchiving runs pgBackRest under a real cluster: the stanza
// is created at bootstrap, backups (full, then incremental) run on the
// primary's host and list, WAL archiving works (pgbackrest check, and
// /metrics counts it) on the first primary, after a switchover and after a
// failover; a backup from a replica without backup.server, an unknown
// stanza and a missing repository fail with a clear message and exit 1.
func TestBackupsAndArchiving(t *testing.T) {
	requireIntegration(t)
	requirePgBackRest(t)
	base := baseDir(t)
	repo := filepath.Join(base, "repo")
	if err := os.Mkdir(repo, 0o750); err != nil {
		t.Fatal(err)
	}
	chown(t, repo)
	section := fmt.Sprintf(`{stanza: itest, repo_path: %s, options: {repo1-retention-full: "2", archive-timeout: "30"}}`, repo)
	c := startCluster(t, 3, func(nd *Node, all []*Node) NodeOptions {
		return NodeOptions{Peers: all, Postgres: true, DCS: fastDCS, Backup: section}
	})
	primary := c.waitPrimary(120*time.Second, c.nodes...)
	c.waitStreaming(primary)
	conf := filepath.Join(primary.PGDataDir()+".pgbackrest", "pgbackrest.conf")
	fi, err := os.Stat(conf)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("pgBackRest config %s: %v (mode %v), want mode 0600", conf, err, fi.Mode())
	}
	if b, _ := os.ReadFile(conf); strings.Contains(string(b), superPassword) {
		t.Fatal("a password reached pgBackRest's config file")
	}
	waitFor(t, 90*time.Second, "the pgBackRest stanza", func() (bool, error) {
		return strings.Contains(primary.Log(), "pgbackrest stanza ready"), nil
	})
	cli := func(want int, args ...string) string {
		t.Helper()
		return agentCLI(t, want, args...)
	}
	cli(0, "backup", "check", "-c", primary.Config)
	// check waited for a WAL file in the repository: /metrics counts it.
	for _, name := range []string{"raftgres_postgresql_archived_wal_total", "raftgres_postgresql_last_archived_timestamp_seconds"} {
		if v, err := scrapeMetric(primary, name); err != nil || v <= 0 {
			t.Fatalf("%s on the primary = %v (%v), want > 0", name, v, err)
		}
	}

	if out := cli(0, "list", "-c", primary.Config); !strings.Contains(out, "WAL archive ("+primary.Name+"): ") || !strings.Contains(out, " archived, last 0000") {
		t.Fatalf("list shows no WAL archiving:\n%s", out)
	}

	var replica *Node
	for _, n := range c.nodes {
		if n != primary {
			replica = n
			break
		}
	}
	// Without backup.server, a backup cannot read another host's
	// PostgreSQL: from a replica (the default) it says so.
	if out := cli(1, "backup", "-c", replica.Config, "--type", "full"); !strings.Contains(out, "backup.server") {
		t.Fatalf("backup on a replica without backup.server: %s", out)
	}
	if out := cli(0, "backup", "-c", primary.Config, "--type", "full", "--from", "primary"); !strings.Contains(out, "backup (full) from "+primary.Name+" done") {
		t.Fatalf("full backup: %s", out)
	}
	ctx := ctxT(t, 5*time.Minute)
	if err := pgExec(ctx, primary, "CREATE TABLE probe (id int primary key)"); err != nil {
		t.Fatal(err)
	}
	if err := pgExec(ctx, primary, "INSERT INTO probe SELECT generate_series(1, 100)"); err != nil {
		t.Fatal(err)
	}
	cli(0, "backup", "-c", primary.Config, "--from", "primary")
	var list backupList
	if err := json.Unmarshal([]byte(cli(0, "backups", "-c", primary.Config, "--format", "json")), &list); err != nil {
		t.Fatal(err)
	}
	if list.Name != "itest" || len(list.Backups) != 2 || list.Backups[0].Type != "full" || list.Backups[1].Type != "incr" || list.WALMax == "" {
		t.Fatalf("backups: %+v", list)
	}
	if out := cli(0, "backups", "-c", primary.Config); !strings.Contains(out, list.Backups[1].Label) {
		t.Fatalf("backups table lacks %s:\n%s", list.Backups[1].Label, out)
	}

	// Switchover: the new primary archives (check forces a WAL switch and
	// waits for that segment in the repository).
	c.apply(switchoverTo(primary.Name, replica.Name))
	waitFor(t, 60*time.Second, replica.Name+" primary after the switchover", func() (bool, error) {
		st, err := c.state()
		return err == nil && st.Leader.Holder == replica.Name && st.Failover == nil, err
	})
	c.waitPrimary(90*time.Second, c.nodes...)
	cli(0, "backup", "check", "-c", replica.Config)

	// Failover: kill -9 of that primary's agent; the next one archives.
	replica.Kill9()
	var next *Node
	waitFor(t, 60*time.Second, "a primary after the failover", func() (bool, error) {
		st, err := c.state()
		if err != nil || st.Leader.Holder == "" || st.Leader.Holder == replica.Name {
			return false, err
		}
		next = c.byName(st.Leader.Holder)
		m := st.Members[next.Name]
		return m.Status.Role == "primary" && m.Status.State == "running", nil
	})
	cli(0, "backup", "check", "-c", next.Config)
	if err := json.Unmarshal([]byte(cli(0, "backups", "-c", next.Config, "--format", "json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Backups) != 2 {
		t.Fatalf("backups after the failover: %+v", list)
	}

	// Bad input: an unknown stanza, a missing repository.
	for _, tc := range []struct{ name, section, want string }{
		{"unknown stanza", fmt.Sprintf(`{stanza: nosuch, repo_path: %s, config_file: %s}`, repo, filepath.Join(base, "nosuch.conf")), "nosuch"},
		{"missing repository", fmt.Sprintf(`{stanza: itest, repo_path: %s, config_file: %s}`, filepath.Join(base, "gone"), filepath.Join(base, "gone.conf")), "gone"},
	} {
		b, err := os.ReadFile(next.Config)
		if err != nil {
			t.Fatal(err)
		}
		var f config.File
		if err := yaml.Unmarshal(b, &f); err != nil {
			t.Fatal(err)
		}
		f.Backup = &config.Backup{}
		if err := yaml.Unmarshal([]byte(tc.section), f.Backup); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Marshal(&f)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(base, strings.ReplaceAll(tc.name, " ", "-")+".yml")
		if err := os.WriteFile(path, cfg, 0o600); err != nil {
			t.Fatal(err)
		}
		chown(t, path)
		for _, args := range [][]string{{"backups", "-c", path}, {"backup", "check", "-c", path}} {
			if out := cli(1, args...); !strings.Contains(out, tc.want) {
				t.Fatalf("%s: raftgres %s: %s", tc.name, strings.Join(args, " "), out)
			}
		}
	}
	st, _ := c.state()
	if st.Leader.Holder != next.Name {
		t.Fatalf("the bad-input commands moved the leader key: %+v", st.Leader)
	}
}
