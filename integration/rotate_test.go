package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"raftgres/api"
)

// walSenders maps each standby's application_name to its walsender pid
// on primary (the commit gate left out).
func walSenders(ctx context.Context, primary *Node) (map[string]int, error) {
	conn, err := pgx.Connect(ctx, primary.PGConn())
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SELECT application_name, pid FROM pg_stat_replication "+
		"WHERE state = 'streaming' AND application_name <> 'raftgres_fence'")
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for rows.Next() {
		var name string
		var pid int
		if err := rows.Scan(&name, &pid); err != nil {
			return nil, err
		}
		out[name] = pid
	}
	return out, rows.Err()
}

// loginAs connects to n's PostgreSQL over TCP as user with password.
func loginAs(ctx context.Context, n *Node, user, password string) error {
	conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://%s@%s:%d/postgres?sslmode=disable&connect_timeout=2",
		url.UserPassword(user, password), n.probeHost(), n.PGPort))
	if err != nil {
		return err
	}
	return conn.Close(context.Background())
}

func isAuthFailure(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "28P01"
}

// TestRotatePasswords rotates the replication password while writes go on
// (no stream breaks, a restarted replica streams with the new password, the
// old one is refused), then the superuser password (the agents still manage
// PostgreSQL: a switchover, a restarted agent loading its override).
func TestRotatePasswords(t *testing.T) {
	c := newPGCluster(t, 3)
	primary := c.waitPrimary(90*time.Second, c.nodes...)
	c.waitStreaming(primary)
	ctx := ctxT(t, 10*time.Minute)

	// No password on argv, ever.
	if _, stderr, code := runCLI(t, "rotate-password", "replication", "-c", primary.Config, "--password", "x"); code == 0 ||
		!strings.Contains(stderr, "flag provided but not defined") {
		t.Fatalf("--password accepted: exit %d: %s", code, stderr)
	}

	// 1. The replication password, with writes going on.
	p := startProbe(t, c, primary)
	waitFor(t, 10*time.Second, "the probe's first writes", func() (bool, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.acked) > 20, nil
	})
	before, err := walSenders(ctx, primary)
	if err != nil || len(before) != 2 {
		t.Fatalf("walsenders before: %v (%v)", before, err)
	}
	const replNew = "Repl-n3w:pw"
	pwFile := filepath.Join(t.TempDir(), "repl.pw")
	if err := os.WriteFile(pwFile, []byte(replNew+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := runCLI(t, "rotate-password", "replication", "-c", primary.Config, "--password-file", pwFile)
	if code != 0 || !strings.Contains(out, "rotated on all 3 members") {
		t.Fatalf("rotate-password replication: exit %d:\n%s\n%s", code, out, stderr)
	}
	t.Logf("rotate-password replication:\n%s", out)
	ackedAt := func() int { p.mu.Lock(); defer p.mu.Unlock(); return len(p.acked) }
	n0 := ackedAt()
	waitFor(t, 10*time.Second, "writes after the rotation", func() (bool, error) { return ackedAt() > n0+20, nil })
	after, err := walSenders(ctx, primary)
	if err != nil || fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("streams changed during the rotation: before %v, after %v (%v)", before, after, err)
	}
	for _, n := range c.nodes {
		fi, err := os.Stat(filepath.Join(n.Dir, "secrets.yml"))
		if err != nil {
			t.Fatalf("%s: %v", n.Name, err)
		}
		if fi.Mode().Perm() != 0o600 || (agentAs != nil && fi.Sys().(*syscall.Stat_t).Uid != agentAs.Uid) {
			t.Fatalf("%s: secrets.yml mode %04o, owner %d", n.Name, fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Uid)
		}
		pgpass, err := os.ReadFile(n.PGDataDir() + ".pgpass")
		if err != nil || !strings.Contains(string(pgpass), ":replicator:Repl-n3w\\:pw\n") {
			t.Fatalf("%s: pgpass without the new password (%v)", n.Name, err)
		}
	}
	// A replica restarted by its agent streams again, with the new password.
	var replica *Node
	for _, n := range c.nodes {
		if n != primary {
			replica = n
			break
		}
	}
	if out, stderr, code := runCLI(t, "restart", "-c", primary.Config, "--force", replica.Name); code != 0 {
		t.Fatalf("restart %s: exit %d: %s %s", replica.Name, code, out, stderr)
	}
	waitFor(t, 60*time.Second, replica.Name+" streaming again after its restart", func() (bool, error) {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		now, err := walSenders(cctx, primary)
		return err == nil && now[replica.Name] != 0 && now[replica.Name] != before[replica.Name], err
	})
	p.stop()
	for _, n := range c.nodes {
		waitFor(t, 30*time.Second, n.Name+" holding every acknowledged write", func() (bool, error) {
			m, err := p.missing(n)
			return err == nil && len(m) == 0, err
		})
	}
	if err := loginAs(ctx, primary, "replicator", "repl-pw"); !isAuthFailure(err) {
		t.Fatalf("replicator with the old password: %v, want a password failure", err)
	}
	if err := loginAs(ctx, primary, "replicator", replNew); err != nil {
		t.Fatalf("replicator with the new password: %v", err)
	}

	// 2. The superuser password, from standard input.
	const superNew = "Super-n3w pw"
	cmd := exec.Command(binPath, "rotate-password", "superuser", "-c", replica.Config)
	cmd.Stdin = strings.NewReader(superNew + "\n")
	out, stderr, code = runCLICmd(t, cmd)
	if code != 0 || !strings.Contains(out, "rotated on all 3 members") {
		t.Fatalf("rotate-password superuser: exit %d:\n%s\n%s", code, out, stderr)
	}
	for _, n := range c.nodes {
		n.SuperPassword = superNew
	}
	if err := loginAs(ctx, primary, "postgres", superPassword); !isAuthFailure(err) {
		t.Fatalf("postgres with the old password: %v, want a password failure", err)
	}
	// The agents still manage PostgreSQL: a switchover.
	target := replica
	if out, stderr, code := runCLI(t, "switchover", "-c", primary.Config, "--candidate", target.Name, "--force"); code != 0 {
		t.Fatalf("switchover: exit %d: %s %s", code, out, stderr)
	}
	if got := c.waitPrimary(90*time.Second, c.nodes...); got != target {
		t.Fatalf("primary %s after the switchover, want %s", got.Name, target.Name)
	}
	c.waitStreaming(target)
	listAllRunning := func() {
		t.Helper()
		waitFor(t, 30*time.Second, "list showing every member running", func() (bool, error) {
			out, stderr, code := runCLI(t, "list", "-c", target.Config, "--format", "json")
			var view api.ClusterView
			if err := json.Unmarshal([]byte(out), &view); code != 0 || err != nil {
				return false, fmt.Errorf("list: exit %d, %v: %s", code, err, stderr)
			}
			for _, m := range view.Members {
				// patronictl's words: a replica streaming from the primary is "streaming".
				if m.State != "running" && m.State != "streaming" {
					return false, fmt.Errorf("%s is %s", m.Name, m.State)
				}
			}
			return len(view.Members) == 3, nil
		})
	}
	listAllRunning()

	// A restarted agent loads its override (its config file still holds
	// the old passwords) and manages its PostgreSQL again.
	restarted := primary // a replica now
	restarted.Stop()
	restarted.Start()
	waitFor(t, 60*time.Second, restarted.Name+" streaming after its agent restarted", func() (bool, error) {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		now, err := walSenders(cctx, target)
		return err == nil && now[restarted.Name] != 0, err
	})
	listAllRunning()
	if l := restarted.Log(); !strings.Contains(l, "password overridden by rotate-password") {
		t.Fatalf("%s did not log its overrides at start", restarted.Name)
	}
	if err := pgExec(ctx, target, "INSERT INTO acks VALUES (-1)"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the last write on "+restarted.Name, func() (bool, error) {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		var k int
		err := pgQueryRow(cctx, restarted, "SELECT count(*) FROM acks WHERE id = -1", &k)
		return k == 1, err
	})
	for _, n := range c.nodes {
		for _, secret := range []string{replNew, superNew} {
			if strings.Contains(n.Log(), secret) {
				t.Errorf("%s's log holds a new password", n.Name)
			}
		}
	}
}
