package integration

import (
	"context"
	"encoding/csv"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// haproxyPorts are the test's replacements for the example's :7000, :5000
// and :5001.
type haproxyPorts struct{ stats, write, read int }

// rewriteHAProxyConfig takes examples/haproxy.cfg and points it at the
// test cluster: listen ports on 127.0.0.1, server pgN at node N's
// PostgreSQL, health checks at its REST API. Nothing else changes, so the
// test runs the check settings users copy.
func rewriteHAProxyConfig(t testing.TB, c *cluster, p haproxyPorts) string {
	t.Helper()
	raw, err := os.ReadFile("../examples/haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(raw)
	for from, to := range map[string]int{"bind *:7000": p.stats, "bind *:5000": p.write, "bind *:5001": p.read} {
		if strings.Count(cfg, from) != 1 {
			t.Fatalf("examples/haproxy.cfg has no single %q line", from)
		}
		cfg = strings.Replace(cfg, from, fmt.Sprintf("bind 127.0.0.1:%d", to), 1)
	}
	for i, n := range c.nodes {
		re := regexp.MustCompile(fmt.Sprintf(`server pg%d 10\.0\.0\.1%d:5432 (.*) check port 8008`, i+1, i+1))
		if got := len(re.FindAllString(cfg, -1)); got != 2 {
			t.Fatalf("examples/haproxy.cfg: %d server lines for pg%d, want 2 (primary and replicas)", got, i+1)
		}
		cfg = re.ReplaceAllString(cfg, fmt.Sprintf("server pg%d 127.0.0.1:%d $1 check port %d", i+1, n.PGPort, n.APIPort))
	}
	return cfg
}

// startHAProxy runs the Debian haproxy in the foreground; stop (also run
// in cleanup, and safe to call twice) ends it by PID.
func startHAProxy(t testing.TB, cfg string, statsPort int) (stop func()) {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatalf("haproxy not installed (scripts/install-deps.sh installs it): %v", err)
	}
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-db", "-f", path)
	var out strings.Builder
	var mu sync.Mutex
	cmd.Stdout, cmd.Stderr = &lockedWriter{w: &out, mu: &mu}, &lockedWriter{w: &out, mu: &mu}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			<-done
			mu.Lock()
			defer mu.Unlock()
			if t.Failed() {
				t.Logf("haproxy output:\n%s", out.String())
			}
		})
	}
	t.Cleanup(stop)
	waitFor(t, 10*time.Second, "haproxy stats port", func() (bool, error) {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", statsPort), time.Second)
		if err != nil {
			return false, err
		}
		return true, conn.Close()
	})
	return stop
}

// waitHAProxySettled waits until HAProxy's checks have run and route
// writes to one server and reads to the replicas (HAProxy counts a server
// as up until its first check says otherwise).
func waitHAProxySettled(t testing.TB, statsPort, replicas int) {
	t.Helper()
	waitFor(t, 15*time.Second, fmt.Sprintf("haproxy checks: 1 server up for writes, %d for reads", replicas), func() (bool, error) {
		up, err := haproxyUp(statsPort)
		if err != nil {
			return false, err
		}
		return len(up["primary"]) == 1 && len(up["replicas"]) == replicas, fmt.Errorf("up: %v", up)
	})
}

// haproxyUp reads the stats CSV and returns, per listen section, the
// servers whose last check passed and that are up. It fails while any
// server has not been checked yet (HAProxy counts those as up).
func haproxyUp(statsPort int) (map[string][]string, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/;csv", statsPort))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	rows, err := csv.NewReader(resp.Body).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("empty stats csv")
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[strings.TrimPrefix(h, "# ")] = i
	}
	up := map[string][]string{}
	for _, r := range rows[1:] {
		sv := r[col["svname"]]
		if sv == "FRONTEND" || sv == "BACKEND" {
			continue
		}
		cs := r[col["check_status"]]
		if !strings.HasPrefix(cs, "L") {
			return nil, fmt.Errorf("%s/%s not checked yet (%q)", r[col["pxname"]], sv, cs)
		}
		switch status := r[col["status"]]; {
		case status == "UP" && strings.HasPrefix(cs, "L7OK"):
			up[r[col["pxname"]]] = append(up[r[col["pxname"]]], sv)
		case status != "DOWN":
			return nil, fmt.Errorf("%s/%s is %s (%s)", r[col["pxname"]], sv, status, cs)
		}
	}
	return up, nil
}

type lockedWriter struct {
	w  *strings.Builder
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// viaHAProxy runs sql on a fresh connection through port and returns the
// backend's port and whether it is in recovery.
func viaHAProxy(ctx context.Context, port int, sql string, args ...any) (backendPort int, inRecovery bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2", superPassword, port))
	if err != nil {
		return 0, false, err
	}
	defer conn.Close(context.Background())
	if sql != "" {
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			return 0, false, err
		}
	}
	err = conn.QueryRow(ctx, "SELECT inet_server_port(), pg_is_in_recovery()").Scan(&backendPort, &inRecovery)
	return backendPort, inRecovery, err
}

// TestHAProxyRoutesWritesAndReads runs the real HAProxy with
// examples/haproxy.cfg: writes reach the primary, reads the replicas, and
// across a lost primary (kill -9 of its agent and postmaster) the longest
// pause in writes through HAProxy stays within the failover's (seen by a
// client writing to the members directly) plus 2s. It also logs the pause
// through a second HAProxy with the common inter 3s fall 3 rise 2 checks.
func TestHAProxyRoutesWritesAndReads(t *testing.T) {
	c := newPGCluster(t, 3)
	primary := c.waitPrimary(90*time.Second, c.nodes...)
	c.waitStreaming(primary)
	ports := haproxyPorts{stats: freePort(t), write: freePort(t), read: freePort(t)}
	startHAProxy(t, rewriteHAProxyConfig(t, c, ports), ports.stats)
	ctx := ctxT(t, 3*time.Minute)
	// Wait for the checks to settle before routing asserts anything.
	waitHAProxySettled(t, ports.stats, 2)

	if err := pgExec(ctx, primary, "CREATE TABLE probe (id int primary key)"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "a write through the write port", func() (bool, error) {
		port, rec, err := viaHAProxy(ctx, ports.write, "INSERT INTO probe VALUES (1)")
		if err != nil {
			return false, err
		}
		if port != primary.PGPort || rec {
			t.Fatalf("write port reached port %d (recovery %v), want the primary %s on %d", port, rec, primary.Name, primary.PGPort)
		}
		return true, nil
	})

	replicaPorts := map[int]bool{}
	for _, n := range c.nodes {
		if n != primary {
			replicaPorts[n.PGPort] = true
		}
	}
	waitFor(t, 15*time.Second, "reads through the read port reaching both replicas", func() (bool, error) {
		seen := map[int]bool{}
		for range 4 {
			port, rec, err := viaHAProxy(ctx, ports.read, "")
			if err != nil {
				return false, err
			}
			if !rec || !replicaPorts[port] {
				t.Fatalf("read port reached port %d (in recovery %v), want a replica", port, rec)
			}
			seen[port] = true
		}
		return len(seen) == len(replicaPorts), fmt.Errorf("reads reached %v", seen)
	})
	if _, _, err := viaHAProxy(ctx, ports.read, "INSERT INTO probe VALUES (2)"); err == nil {
		t.Fatal("a write through the read port succeeded")
	}

	// Failover, seen by three clients writing a row every 20ms: one
	// straight to the members (multi-host libpq, the failover itself), one
	// through this HAProxy (examples/haproxy.cfg) and one through a second
	// HAProxy that differs only in the primary section's check timing:
	// Patroni's example line, inter 3s fall 3 rise 2.
	common := haproxyPorts{stats: freePort(t), write: freePort(t), read: freePort(t)}
	startHAProxy(t, withPrimaryChecks(t, rewriteHAProxyConfig(t, c, common), commonHAProxyChecks), common.stats)
	waitHAProxySettled(t, common.stats, 2)
	if err := pgExec(ctx, primary, benchAcksTable); err != nil {
		t.Fatal(err)
	}
	haproxyConninfo := func(port int) string {
		return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable connect_timeout=1", port)
	}
	direct := startAckWriter(t, c, "multi-host libpq", 1, multiHostConninfo(c))
	recommended := startAckWriter(t, c, "HAProxy (examples/haproxy.cfg)", 2, haproxyConninfo(ports.write))
	old := startAckWriter(t, c, "HAProxy ("+commonHAProxyChecks+")", 3, haproxyConninfo(common.write))
	for _, w := range []*ackWriter{direct, recommended, old} {
		w.waitAcksOn(t, primary.Name, 5)
	}

	// kill -9 of the primary's agent and its postmaster's process group
	// (the postmaster and every backend): the host is lost.
	pm, err := postmasterPID(primary)
	if err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	_ = syscall.Kill(primary.PID(), syscall.SIGKILL)
	if err := syscall.Kill(-pm, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 of %s's postmaster process group %d: %v", primary.Name, pm, err)
	}
	primary.Kill9() // waits until the agent is gone
	gap := func(w *ackWriter) (time.Duration, string) {
		first := w.waitTakeover(t, primary.Name, killedAt, 90*time.Second)
		return w.gap(killedAt, first.Done), first.Server
	}
	failover, next := gap(direct)
	viaProxy, proxyNext := gap(recommended)
	viaOld, oldNext := gap(old)
	for _, s := range []string{proxyNext, oldNext} {
		if s != next {
			t.Errorf("writes through HAProxy resumed on %s, direct ones on %s", s, next)
		}
	}
	t.Logf("kill -9 of %s (agent and postmaster), new primary %s; longest gap between acknowledged writes: "+
		"direct %s, through examples/haproxy.cfg %s, through %q %s",
		primary.Name, next, failover.Round(time.Millisecond), viaProxy.Round(time.Millisecond),
		commonHAProxyChecks, viaOld.Round(time.Millisecond))
	// examples/haproxy.cfg marks the dead primary down 0.25-0.75s after
	// the kill (fastinter 250ms, fall 2), long before the failover, and
	// the new primary up at its first check (downinter 250ms, rise 1) once
	// its /primary answers 200: about 0.3s behind the direct client, plus
	// the client's reconnect. 2s leaves room for a busy 2-core machine
	// (a check may take up to timeout check, 1s) and still fails a
	// setting that trails the failover by whole check intervals, as
	// inter 3s fall 3 rise 2 does (6-9s).
	if limit := failover + 2*time.Second; viaProxy > limit {
		t.Fatalf("writes through examples/haproxy.cfg paused %s, over the failover's %s + 2s", viaProxy, failover)
	}
}

// commonHAProxyChecks is the check timing of Patroni's example
// haproxy.cfg, which many setups copied.
const commonHAProxyChecks = "inter 3s fall 3 rise 2 on-marked-down shutdown-sessions"

// withPrimaryChecks replaces the settings of the primary section's
// default-server line of a haproxy.cfg.
func withPrimaryChecks(t testing.TB, cfg, settings string) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^(listen primary\n(?:[ \t].*\n)*?[ \t]+default-server ).*$`)
	if len(re.FindAllString(cfg, -1)) != 1 {
		t.Fatal("examples/haproxy.cfg: no default-server line in listen primary")
	}
	return re.ReplaceAllString(cfg, "${1}"+settings)
}
