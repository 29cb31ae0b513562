package integration

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// proc is a helper process of a test (etcd, Patroni). Its output goes to
// a file, not a pipe: PostgreSQL started by Patroni inherits it and
// outlives Patroni.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// startProc runs argv as the agent's OS user (postgres when root) in its
// own process group, its output in dir/name.log (printed when the test
// fails); cleanup kills what is left by pid.
func startProc(t *testing.T, dir, name string, argv ...string) *proc {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	// Killed with the test binary too (a timeout's SIGKILL skips cleanup).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: agentAs}
	cmd.Env = append(os.Environ(), "HOME=/tmp", "PYTHONUNBUFFERED=1")
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(syscall.SIGKILL, time.Second)
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 20000 {
				b = b[len(b)-20000:]
			}
			t.Logf("--- %s (%s), last 20 kB:\n%s", name, logPath, b)
		}
	})
	return p
}

// stop signals the process and waits up to d, then kills it.
func (p *proc) stop(sig syscall.Signal, d time.Duration) bool {
	select {
	case <-p.done:
		return true
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		_ = p.cmd.Process.Kill()
		<-p.done
		return false
	}
}

// pmPID is n's postmaster pid from postmaster.pid (0 if none).
func pmPID(n *Node) int {
	pid, err := postmasterPID(n)
	if err != nil {
		return 0
	}
	return pid
}

// parentPID is pid's parent process id (0 if unknown).
func parentPID(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// migWriter inserts one row per transaction into mig on addr's primary,
// remembering each acknowledged id and the longest time between two
// acknowledged commits.
type migWriter struct {
	mu      sync.Mutex
	acked   []int
	last    time.Time
	maxGap  time.Duration
	gapEnd  time.Time
	cancel  context.CancelFunc
	done    chan struct{}
	connstr string
}

func startMigWriter(connstr string) *migWriter {
	ctx, cancel := context.WithCancel(context.Background())
	w := &migWriter{cancel: cancel, done: make(chan struct{}), connstr: connstr, last: time.Now()}
	go func() {
		defer close(w.done)
		var conn *pgx.Conn
		for id := 1; ctx.Err() == nil; {
			if conn == nil {
				cctx, c := context.WithTimeout(ctx, time.Second)
				conn, _ = pgx.Connect(cctx, w.connstr)
				c()
				if conn == nil {
					time.Sleep(20 * time.Millisecond) // retry pace of a client, not synchronisation
					continue
				}
			}
			qctx, c := context.WithTimeout(ctx, 2*time.Second)
			_, err := conn.Exec(qctx, "INSERT INTO mig (id) VALUES ($1)", id)
			c()
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "23505" {
				// An earlier attempt at id committed without reaching us
				// (the client gave up first): not acknowledged, move on.
				id++
				continue
			}
			if err != nil {
				_ = conn.Close(context.Background())
				conn = nil
				continue
			}
			now := time.Now()
			w.mu.Lock()
			w.acked = append(w.acked, id)
			if gap := now.Sub(w.last); gap > w.maxGap {
				w.maxGap, w.gapEnd = gap, now
			}
			w.last = now
			w.mu.Unlock()
			id++
			time.Sleep(5 * time.Millisecond) // a steady write rate
		}
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	return w
}

func (w *migWriter) stop() ([]int, time.Duration, time.Time) {
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]int(nil), w.acked...), w.maxGap, w.gapEnd
}

func (w *migWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// patroniConfig is a Patroni 3 config for node n of the cluster whose
// etcd listens on etcdAddr, using the same ports, data directory and
// credentials the raftgres harness gives n.
func patroniConfig(t *testing.T, n *Node, restPort int, etcdAddr string) string {
	t.Helper()
	return patroniConfigFor(t, n, restPort, etcdAddr, "itest", "")
}

// patroniConfigFor is patroniConfig for the cluster scope, with dcs (YAML
// lines indented by four spaces) added to bootstrap.dcs.
func patroniConfigFor(t *testing.T, n *Node, restPort int, etcdAddr, scope, dcs string) string {
	t.Helper()
	path := filepath.Join(filepath.Dir(n.Config), n.Name+"-patroni.yml")
	y := fmt.Sprintf(`scope: %[8]s
name: %[1]s
restapi:
  listen: 127.0.0.1:%[2]d
  connect_address: 127.0.0.1:%[2]d
  authentication: {username: admin, password: adminpw}
etcd3:
  hosts: %[3]s
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 1
    retry_timeout: 3
    maximum_lag_on_failover: 1048576
%[9]s    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters: {wal_keep_size: 64MB, max_connections: 40, wal_log_hints: "on"}
  initdb: [{encoding: UTF8}, data-checksums]
postgresql:
  listen: 127.0.0.1:%[4]d
  connect_address: 127.0.0.1:%[4]d
  data_dir: %[5]s
  bin_dir: /usr/lib/postgresql/15/bin
  pgpass: %[6]s/patroni.pgpass
  authentication:
    superuser: {username: postgres, password: %[7]s}
    replication: {username: replicator, password: repl-pw}
    rewind: {username: rewind_user, password: rewind-pw}
  parameters: {unix_socket_directories: %[6]s, shared_buffers: 16MB, fsync: "off"}
  pg_hba:
    - local all all scram-sha-256
    - host replication replicator 127.0.0.1/32 scram-sha-256
    - host all all 127.0.0.1/32 scram-sha-256
`, n.Name, restPort, etcdAddr, n.PGPort, n.PGDataDir(), n.Dir, superPassword, scope, dcs)
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	chown(t, path)
	return path
}

// TestMigrateFromPatroni moves a running Patroni 3.0.2 + etcd 3.4 cluster
// to raftgres with writes running: patronictl pause, Patroni stopped on
// every host (PostgreSQL keeps running), each patroni.yml converted with
// convert-patroni and checked with check-config, raftgres started on the
// same data directories. The member running the primary adopts it (the
// cluster's system id), the replicas follow it, each PostgreSQL is
// restarted once under its agent (replicas first, then the primary), and
// no acknowledged write is lost. The longest write gap is reported.
func TestMigrateFromPatroni(t *testing.T) {
	requireIntegration(t)
	requirePatroni(t)
	base := baseDir(t)
	etcdAddr := startEtcd(t, base)

	c := &cluster{t: t, base: base}
	var patronis []*proc
	var cfgs []string
	rest := map[*Node]int{}
	for i := range 3 {
		n := newNode(t, base, fmt.Sprintf("pg%d", i+1))
		n.PGPort = freePort(t)
		c.nodes = append(c.nodes, n)
		rest[n] = freePort(t)
		cfg := patroniConfig(t, n, rest[n], etcdAddr)
		cfgs = append(cfgs, cfg)
		// Whatever a failure leaves running of Patroni's PostgreSQL.
		t.Cleanup(func() {
			if pid := pmPID(n); pid > 0 && !processGone(pid) {
				_ = syscall.Kill(pid, syscall.SIGQUIT)
			}
		})
		patronis = append(patronis, startProc(t, base, "patroni-"+n.Name, "patroni", cfg))
	}
	var primary *Node
	waitFor(t, 180*time.Second, "a Patroni leader with two streaming replicas", func() (bool, error) {
		for _, n := range c.nodes {
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/primary", rest[n]))
			if err != nil {
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			var k int
			err = pgQueryRow(ctx, n, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'", &k)
			primary = n
			return k == 2, err
		}
		return false, fmt.Errorf("no Patroni leader yet")
	})
	ctx := ctxT(t, 10*time.Minute)
	var sysid string
	if err := pgQueryRow(ctx, primary, "SELECT system_identifier::text FROM pg_control_system()", &sysid); err != nil {
		t.Fatal(err)
	}
	if err := pgExec(ctx, primary, "CREATE TABLE mig (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	w := startMigWriter(primary.PGConn())
	waitFor(t, 30*time.Second, "writes through Patroni's primary", func() (bool, error) { return w.count() > 50, nil })

	// 1. Pause Patroni and stop it everywhere: PostgreSQL keeps running.
	if out, err := exec.Command("patronictl", "-c", cfgs[0], "pause", "--wait").CombinedOutput(); err != nil {
		t.Fatalf("patronictl pause: %v\n%s", err, out)
	}
	pids := map[*Node]int{}
	for i, n := range c.nodes {
		if !patronis[i].stop(syscall.SIGTERM, 30*time.Second) {
			t.Fatalf("patroni on %s did not stop on SIGTERM", n.Name)
		}
		pids[n] = pmPID(n)
		if pids[n] == 0 || processGone(pids[n]) {
			t.Fatalf("%s: PostgreSQL stopped with paused Patroni", n.Name)
		}
	}
	before := w.count()

	// 2. raftgres with each host's converted patroni.yml: the same data
	// directories, ports and credentials, the API where Patroni's was.
	var peers []string
	for _, n := range c.nodes {
		peers = append(peers, n.Name+"="+n.RaftAddr())
	}
	// The harness's clients use the test token: convert with it (a
	// missing file would get a new random one).
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
		t.Logf("convert-patroni %s, not converted:\n%s", n.Name, stderr)
		if strings.Contains(stderr, superPassword) || strings.Contains(stderr, "repl-pw") {
			t.Fatal("convert-patroni printed a password")
		}
		if err := os.WriteFile(n.Config, []byte(out), 0o600); err != nil {
			t.Fatal(err)
		}
		chown(t, n.Config)
		if out, stderr, code := runCLI(t, "check-config", "-c", n.Config); code != 0 {
			t.Fatalf("check-config %s: exit %d\n%s%s", n.Config, code, out, stderr)
		}
		n.APIPort = rest[n] // raftgres serves the API where Patroni did
		n.Start()
	}
	got := c.waitPrimary(120*time.Second, c.nodes...)
	st, err := c.state()
	if err != nil {
		t.Fatal(err)
	}
	if got != primary || st.Initialize != sysid {
		t.Fatalf("after adoption: primary %s, system id %s; want %s, %s", got.Name, st.Initialize, primary.Name, sysid)
	}
	c.waitStreaming(primary)
	if w.count() <= before {
		t.Fatal("no write acknowledged since raftgres started")
	}

	// 3. Each PostgreSQL restarted once under its agent, replicas first.
	restart := func(n *Node) {
		t.Helper()
		if out, stderr, code := runCLI(t, "restart", "-c", primary.Config, "--force", n.Name); code != 0 {
			t.Fatalf("restart %s: exit %d\n%s%s", n.Name, code, out, stderr)
		}
		waitFor(t, 60*time.Second, n.Name+"'s PostgreSQL a child of its agent", func() (bool, error) {
			pid := pmPID(n)
			return pid != 0 && pid != pids[n] && parentPID(pid) == n.PID(), fmt.Errorf("postmaster %d, parent %d, agent %d", pid, parentPID(pid), n.PID())
		})
	}
	for _, n := range c.nodes {
		if n != primary {
			restart(n)
		}
	}
	c.waitStreaming(primary)
	restart(primary)
	c.waitPrimary(60*time.Second, c.nodes...)
	c.waitStreaming(primary)
	n := w.count()
	waitFor(t, 30*time.Second, "writes after the primary's restart", func() (bool, error) { return w.count() > n+50, nil })
	acked, gap, gapEnd := w.stop()

	// No acknowledged write lost, on any member (a write the client gave
	// up on may be there too: it was never acknowledged).
	missing := func(m *Node) (int, error) {
		conn, err := pgx.Connect(ctx, m.PGConn())
		if err != nil {
			return 0, err
		}
		defer conn.Close(context.Background())
		var k int
		err = conn.QueryRow(ctx, "SELECT count(*) FROM unnest($1::int[]) AS a(id) WHERE NOT EXISTS (SELECT 1 FROM mig WHERE mig.id = a.id)", acked).Scan(&k)
		return k, err
	}
	if k, err := missing(primary); err != nil || k != 0 {
		t.Fatalf("%d of %d acknowledged writes missing on the primary (%v)", k, len(acked), err)
	}
	for _, m := range c.nodes {
		waitFor(t, 30*time.Second, m.Name+" has every acknowledged write", func() (bool, error) {
			k, err := missing(m)
			return k == 0, err
		})
	}
	t.Logf("migration: %d acknowledged writes, 0 lost; longest write gap %s (ending %s, the primary's restart under its agent)",
		len(acked), gap.Round(time.Millisecond), gapEnd.Format("15:04:05.000"))
}

// requirePatroni fails the test when Patroni or etcd is missing.
func requirePatroni(t *testing.T) {
	t.Helper()
	for _, bin := range []string{"patroni", "patronictl", "etcd"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not installed (apt-get install patroni etcd-server; .ci/run does): %v", bin, err)
		}
	}
}

// startEtcd runs a one-member etcd on loopback for Patroni and returns
// its client address once it is healthy.
func startEtcd(t *testing.T, base string) string {
	t.Helper()
	etcdClient, etcdPeer := freePort(t), freePort(t)
	etcdAddr := fmt.Sprintf("127.0.0.1:%d", etcdClient)
	etcdDir := filepath.Join(base, "etcd")
	if err := os.Mkdir(etcdDir, 0o700); err != nil {
		t.Fatal(err)
	}
	chown(t, etcdDir)
	startProc(t, base, "etcd", "etcd", "--name", "e1", "--data-dir", etcdDir,
		"--listen-client-urls", "http://"+etcdAddr, "--advertise-client-urls", "http://"+etcdAddr,
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPeer),
		"--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPeer),
		"--initial-cluster", fmt.Sprintf("e1=http://127.0.0.1:%d", etcdPeer), "--log-level", "warn")
	waitFor(t, 30*time.Second, "etcd", func() (bool, error) {
		resp, err := http.Get("http://" + etcdAddr + "/health")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == 200, nil
	})
	return etcdAddr
}

// processGone reports whether pid no longer runs.
func processGone(pid int) bool {
	return syscall.Kill(pid, 0) != nil
}
