// Package integration runs the real raftgres binary: several agents on
// 127.0.0.1, each with its own data dir and ports, as the postgres OS user.
// It runs only with RAFTGRES_INTEGRATION=1 (make test sets it).
package integration

import (
	"bufio"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"raftgres/api"
	"raftgres/config"
	"raftgres/internal/testutil"
	"raftgres/raftstore"
)

const testToken = "integration-token"

var (
	binPath string              // the raftgres binary built by TestMain
	agentAs *syscall.Credential // postgres user when running as root
)

func TestMain(m *testing.M) {
	if os.Getenv("RAFTGRES_INTEGRATION") != "1" {
		fmt.Println("integration: skipped (set RAFTGRES_INTEGRATION=1; make test does)")
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "raftgres-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		if err := os.Chmod(dir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		binPath = filepath.Join(dir, "raftgres")
		args := []string{"build", "-o", binPath}
		if os.Getenv("RAFTGRES_RACE") == "1" { // agents built with the race detector
			args = append(args, "-race")
		}
		build := exec.Command("go", append(args, "raftgres/cmd/raftgres")...)
		if os.Getenv("RAFTGRES_RACE") != "1" { // as make build: a VIP's agent clears its ambient capabilities
			build.Env = append(os.Environ(), "CGO_ENABLED=0")
		}
		build.Stdout, build.Stderr = os.Stdout, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build raftgres:", err)
			return 2
		}
		if os.Geteuid() == 0 {
			u, err := user.Lookup("postgres")
			if err != nil {
				fmt.Fprintln(os.Stderr, "running as root needs the postgres OS user:", err)
				return 2
			}
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			agentAs = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		}
		return m.Run()
	}()
	os.Exit(code)
}

func requireIntegration(t testing.TB) {
	t.Helper()
	if binPath == "" {
		t.Skip("set RAFTGRES_INTEGRATION=1 (make test does)")
	}
}

// chown gives path to the agents' OS user.
func chown(t testing.TB, path string) {
	t.Helper()
	if agentAs == nil {
		return
	}
	if err := os.Chown(path, int(agentAs.Uid), int(agentAs.Gid)); err != nil {
		t.Fatal(err)
	}
}

// baseDir is a per-test directory the postgres user can traverse.
func baseDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "rgit")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	chown(t, dir)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// freePort is a port free on 127.0.0.1, never handed out twice.
func freePort(t testing.TB) int { return testutil.FreePort(t) }

// Node is one agent: its ports, files and process.
type Node struct {
	t        testing.TB
	Name     string
	RaftPort int
	APIPort  int
	PGPort   int
	// In a network namespace (NetNS set), Host is the address peers use
	// and ProbeHost the one the test reaches the node by; both default to
	// 127.0.0.1.
	NetNS     string
	Host      string
	ProbeHost string
	Dir       string
	Config    string
	// PGSSLParams replace sslmode=disable in PGConn's query (set by
	// WriteConfig with NodeOptions.PGTLS).
	PGSSLParams string
	// SuperPassword replaces superPassword in PGConn (after a rotation).
	SuperPassword string
	// Bin is the raftgres binary Start runs (default: the one TestMain
	// built from this tree).
	Bin string
	// netCaps: Start gives the agent CAP_NET_ADMIN and CAP_NET_RAW in its
	// ambient set, as systemd's AmbientCapabilities= does (NodeOptions.VIP).
	netCaps bool

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	log  strings.Builder
}

// NodeOptions shape a node's config file.
type NodeOptions struct {
	Peers []*Node // bootstrap peers (include the node itself), or nil to join
	Join  []*Node // join through these members' APIs
	TLS   *certSet
	// Postgres adds a postgresql: section: the agent then runs PostgreSQL.
	Postgres bool
	// DCS replaces the bootstrap.dcs flow mapping.
	DCS string
	// Tags is a tags: flow mapping, e.g. "{nofailover: true}".
	Tags string
	// Callbacks is a postgresql.callbacks flow mapping.
	Callbacks string
	// Raft adds keys to the raft: section, as a flow mapping's contents
	// ("heartbeat_timeout: 200ms, election_timeout: 200ms").
	Raft string
	// Backup is the backup: section as a flow mapping.
	Backup string
	// PostgresKeys, BootstrapKeys and RestAPIKeys are more lines of the
	// postgresql:, bootstrap: and restapi: sections
	// ("create_replica_methods: [pgbackrest]").
	PostgresKeys, BootstrapKeys, RestAPIKeys []string
	// PGTLS adds postgresql.ssl with a certificate from this CA, and makes
	// PGConn connect with sslmode=verify-full.
	PGTLS *certSet
	// PgHba replaces the default bootstrap.pg_hba lines.
	PgHba []string
	// Scope is the cluster's name (default itest): two clusters side by
	// side (a standby cluster) tell their logs and lists apart by it.
	Scope string
	// VIP is the vip: section as a flow mapping; the agent then runs with
	// CAP_NET_ADMIN and CAP_NET_RAW (in a network namespace only).
	VIP string
}

func newNode(t testing.TB, base, name string) *Node {
	n := &Node{t: t, Name: name, RaftPort: freePort(t), APIPort: freePort(t), Dir: filepath.Join(base, name)}
	if err := os.MkdirAll(n.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	chown(t, n.Dir)
	n.Config = filepath.Join(base, name+".yml")
	t.Cleanup(n.stopForCleanup)
	return n
}

const superPassword = "super-pw"

// PGDataDir is the node's PostgreSQL data directory.
func (n *Node) PGDataDir() string { return filepath.Join(n.Dir, "pgdata") }

// PGConn is a libpq URL for the node's PostgreSQL as superuser.
func (n *Node) PGConn() string {
	return fmt.Sprintf("postgres://%s@%s:%d/postgres?%s&connect_timeout=2",
		url.UserPassword("postgres", valueOr(n.SuperPassword, superPassword)), n.probeHost(), n.PGPort,
		valueOr(n.PGSSLParams, "sslmode=disable"))
}

func (n *Node) host() string { return valueOr(n.Host, "127.0.0.1") }

func (n *Node) probeHost() string { return valueOr(n.ProbeHost, n.host()) }

func valueOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// listenHost is where the node's servers bind: everything inside its own
// namespace, loopback otherwise.
func (n *Node) listenHost() string {
	if n.NetNS != "" {
		return "0.0.0.0"
	}
	return "127.0.0.1"
}

func (n *Node) RaftAddr() string { return fmt.Sprintf("%s:%d", n.host(), n.RaftPort) }
func (n *Node) APIAddr() string  { return fmt.Sprintf("%s:%d", n.host(), n.APIPort) }
func (n *Node) APIURL() string   { return fmt.Sprintf("http://%s:%d", n.probeHost(), n.APIPort) }

// Client talks to this node's API with the cluster token.
func (n *Node) Client() *api.Client {
	return api.NewClient(n.APIURL(), api.ClientOptions{Token: testToken, Timeout: 5 * time.Second})
}

// WriteConfig writes the node's YAML config (mode 0600, owned by postgres),
// built as a config.File: o's typed options first, then its YAML snippets
// decoded into their sections.
func (n *Node) WriteConfig(o NodeOptions) {
	f := &config.File{Scope: valueOr(o.Scope, "itest"), Name: n.Name, DataDir: n.Dir,
		Raft: config.Raft{Listen: n.RaftAddr(), Token: testToken},
		RestAPI: config.RestAPI{Listen: fmt.Sprintf("%s:%d", n.listenHost(), n.APIPort), ConnectAddress: n.APIAddr(),
			Authentication: &config.Auth{Username: "admin", Password: "adminpw"}},
		Log: config.Log{Level: "debug"},
	}
	for _, p := range o.Peers {
		f.Raft.BootstrapPeers = append(f.Raft.BootstrapPeers, p.Name+"="+p.RaftAddr())
	}
	for _, j := range o.Join {
		f.Raft.Join = append(f.Raft.Join, j.APIAddr())
	}
	n.overlay(&f.Raft, "{"+o.Raft+"}")
	if o.TLS != nil {
		c, k := issueNode(n.t, o.TLS, n.Name)
		f.Raft.TLS = &config.TLS{CAFile: o.TLS.File, CertFile: c, KeyFile: k}
	}
	n.overlay(&f.RestAPI, strings.Join(o.RestAPIKeys, "\n"))
	n.overlay(&f.Bootstrap.DCS, valueOr(o.DCS, "{ttl: 10, loop_wait: 1, retry_timeout: 3}"))
	n.overlay(&f.Bootstrap, strings.Join(o.BootstrapKeys, "\n"))
	if o.Postgres {
		if n.PGPort == 0 {
			n.PGPort = freePort(n.t)
		}
		f.Bootstrap.PgHba = o.PgHba
		if f.Bootstrap.PgHba == nil {
			f.Bootstrap.PgHba = []string{"host replication replicator 127.0.0.1/32 scram-sha-256", "host all all 127.0.0.1/32 scram-sha-256",
				"host replication replicator 10.213.0.0/24 scram-sha-256", "host all all 10.0.0.0/8 scram-sha-256"}
		}
		f.PostgreSQL = &config.Postgres{
			Listen: fmt.Sprintf("%s:%d", n.listenHost(), n.PGPort), ConnectAddress: fmt.Sprintf("%s:%d", n.host(), n.PGPort),
			DataDir: n.PGDataDir(),
			Authentication: config.PGAuth{
				Superuser:   &config.Auth{Username: "postgres", Password: superPassword},
				Replication: &config.Auth{Username: "replicator", Password: "repl-pw"},
				Rewind:      &config.Auth{Username: "rewind_user", Password: "rewind-pw"},
			},
			Parameters: map[string]raftstore.Param{"shared_buffers": "16MB", "max_connections": "40", "fsync": "off", "wal_keep_size": "64MB"},
		}
		n.overlay(&f.PostgreSQL.Callbacks, o.Callbacks)
		n.overlay(f.PostgreSQL, strings.Join(o.PostgresKeys, "\n"))
		if o.PGTLS != nil {
			c, k := issueNode(n.t, o.PGTLS, n.Name)
			f.PostgreSQL.SSL = &config.TLS{CertFile: c, KeyFile: k, CAFile: o.PGTLS.File}
			n.PGSSLParams = "sslmode=verify-full&sslrootcert=" + url.QueryEscape(o.PGTLS.File)
		}
	}
	n.overlay(&f.Tags, o.Tags)
	if o.VIP != "" {
		f.VIP = &config.VIP{}
		n.overlay(f.VIP, o.VIP)
		n.netCaps = true
	}
	if o.Backup != "" {
		f.Backup = &config.Backup{}
		n.overlay(f.Backup, o.Backup)
	}
	data, err := config.Marshal(f)
	if err != nil {
		n.t.Fatal(err)
	}
	if err := os.WriteFile(n.Config, data, 0o600); err != nil {
		n.t.Fatal(err)
	}
	chown(n.t, n.Config)
}

// overlay decodes the YAML snippet (a mapping, or nothing) into the config
// section dst: the keys it names replace dst's, an unknown key fails the
// test.
func (n *Node) overlay(dst any, snippet string) {
	n.t.Helper()
	if strings.Trim(snippet, "{} \n") == "" {
		return
	}
	dec := yaml.NewDecoder(strings.NewReader(snippet))
	dec.KnownFields(true)
	if err := dec.Decode(dst); err != nil {
		n.t.Fatalf("config snippet %q: %v", snippet, err)
	}
}

// Start runs the agent as the postgres user; its output goes to the test
// log with a [name] prefix and is kept for assertions.
func (n *Node) Start() {
	n.t.Helper()
	bin := valueOr(n.Bin, binPath)
	cmd := exec.Command(bin, "agent", "-c", n.Config)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: agentAs}
	if n.NetNS != "" {
		// ip netns exec and setpriv both exec in place: the pid is the agent's.
		args := []string{"netns", "exec", n.NetNS}
		if agentAs != nil {
			args = append(args, "setpriv", fmt.Sprintf("--reuid=%d", agentAs.Uid), fmt.Sprintf("--regid=%d", agentAs.Gid),
				"--clear-groups")
			if n.netCaps {
				args = append(args, "--inh-caps", "+net_admin,+net_raw", "--ambient-caps", "+net_admin,+net_raw")
			}
			args = append(args, "--")
		}
		cmd = exec.Command("ip", append(args, bin, "agent", "-c", n.Config)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	}
	out, err := cmd.StderrPipe()
	if err != nil {
		n.t.Fatal(err)
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		n.t.Fatalf("start %s: %v", n.Name, err)
	}
	done := make(chan struct{})
	n.mu.Lock()
	n.cmd, n.done, n.err = cmd, done, nil
	n.mu.Unlock()
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			n.mu.Lock()
			n.log.WriteString(sc.Text() + "\n")
			n.mu.Unlock()
			n.t.Logf("[%s] %s", n.Name, sc.Text())
			if strings.Contains(sc.Text(), "WARNING: DATA RACE") {
				n.t.Errorf("%s: the race detector found a data race (RAFTGRES_RACE=1)", n.Name)
			}
		}
		err := cmd.Wait()
		n.t.Logf("[%s] agent exited: %v", n.Name, err)
		n.mu.Lock()
		n.err = err
		n.mu.Unlock()
		close(done)
	}()
}

// Kill9 sends SIGKILL and waits for the process to be gone.
func (n *Node) Kill9() {
	n.t.Helper()
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Stop sends SIGTERM and waits (SIGKILL after 20s).
func (n *Node) Stop() {
	n.t.Helper()
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
		n.t.Errorf("%s did not stop within 20s of SIGTERM", n.Name)
	}
}

func (n *Node) stopForCleanup() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Exited returns the exit error once the process is gone, or false.
func (n *Node) Exited() (error, bool) {
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	select {
	case <-done:
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.err, true
	default:
		return nil, false
	}
}

// Log returns everything the agent printed so far.
func (n *Node) Log() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.log.String()
}

// PID is the agent's process id.
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd.Process.Pid
}

// runCLI runs the binary (as the test's own user) and returns its output
// and exit code.
func runCLI(t testing.TB, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runCLICmd(t, exec.Command(binPath, args...))
}

// runCLIAsAgent runs the binary as the agent's user (postgres when the
// test runs as root), with empty stdin, for the offline commands that
// touch the agent's files.
func runCLIAsAgent(t testing.TB, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: agentAs}
	cmd.Stdin = strings.NewReader("")
	return runCLICmd(t, cmd)
}

func runCLICmd(t testing.TB, cmd *exec.Cmd) (stdout, stderr string, code int) {
	t.Helper()
	args := cmd.Args[1:]
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

// waitFor polls cond every 50ms until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	testutil.WaitFor(t, timeout, what, cond)
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// certSet is a test CA that issues node certificates, owned by the agents'
// user.
type certSet = testutil.CA

func newCA(t testing.TB, dir, name string) *certSet {
	t.Helper()
	return testutil.NewCA(t, dir, name, agentAs)
}

// issueNode issues node's certificate, good for 127.0.0.1, node and
// localhost.
func issueNode(t testing.TB, ca *certSet, node string) (certFile, keyFile string) {
	t.Helper()
	return ca.Issue(t, node, testutil.CertOpts{IPs: []string{"127.0.0.1"}, DNS: []string{node, "localhost"}})
}
