package pgmanager

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"raftgres/internal/conf"
	"raftgres/internal/testutil"
)

// These tests run real PostgreSQL 15. They need RAFTGRES_INTEGRATION=1
// (make test sets it) and the binaries in /usr/lib/postgresql/15/bin. As
// root, PostgreSQL runs as the postgres OS user.

const pgBin = "/usr/lib/postgresql/15/bin"

type pgEnv struct {
	base  string
	runAs *syscall.Credential
	// tweak, when set, edits every config that config returns.
	tweak func(name string, c *Config)
}

func requirePG(t *testing.T) *pgEnv {
	t.Helper()
	if os.Getenv("RAFTGRES_INTEGRATION") != "1" {
		t.Skip("real-PostgreSQL test: set RAFTGRES_INTEGRATION=1 (make test does)")
	}
	if _, err := os.Stat(filepath.Join(pgBin, "postgres")); err != nil {
		t.Fatalf("RAFTGRES_INTEGRATION=1 but PostgreSQL 15 is missing: %v", err)
	}
	env := &pgEnv{}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root needs the postgres OS user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		env.runAs = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	// A short base path: the Unix socket lives in the data dir and its path
	// must stay under 108 bytes.
	base, err := os.MkdirTemp("/tmp", "rgpm")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	if env.runAs != nil {
		if err := os.Chown(base, int(env.runAs.Uid), int(env.runAs.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	env.base = base
	return env
}

func (e *pgEnv) config(t *testing.T, name string) Config {
	t.Helper()
	port := testutil.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	c := Config{
		Listen: addr, ConnectAddress: addr, DataDir: filepath.Join(e.base, name), BinDir: pgBin,
		Superuser:   Credentials{Username: "postgres", Password: conf.Secret("super-secret")},
		Replication: Credentials{Username: "replicator", Password: "repl-secret"},
		Rewind:      Credentials{Username: "rewind_user", Password: "rewind-secret"},
		Parameters:  map[string]string{"shared_buffers": "16MB", "max_connections": "30", "fsync": "off"},
		Initdb:      []InitdbOption{{Name: "encoding", Value: "UTF8"}, {Name: "data-checksums"}},
		PgHba: []string{
			"host replication replicator 127.0.0.1/32 scram-sha-256",
			"host all all 127.0.0.1/32 scram-sha-256",
		},
		Users: map[string]User{"app": {Password: "app-pw", Options: []string{"login"}}},
	}
	if e.tweak != nil {
		e.tweak(name, &c)
	}
	return c
}

// initPrimary initialises and starts a primary named name.
func (e *pgEnv) initPrimary(t *testing.T, ctx context.Context, name string) *Manager {
	t.Helper()
	return e.initPrimaryWith(t, ctx, name, Desired{})
}

// initPrimaryWith initialises and starts a primary with d.
func (e *pgEnv) initPrimaryWith(t *testing.T, ctx context.Context, name string, d Desired) *Manager {
	t.Helper()
	m := e.manager(t, name, e.config(t, name))
	if _, err := m.Init(ctx, d); err != nil {
		t.Fatal(err)
	}
	return m
}

func (e *pgEnv) manager(t *testing.T, name string, cfg Config) *Manager {
	t.Helper()
	logger := hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Info, Output: testWriter{t}})
	m, err := New(cfg, name, logger, Options{Scope: "test", RunAs: e.runAs, StopStep: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop(context.Background(), StopImmediate) })
	return m
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func upstreamOf(t *testing.T, name string, m *Manager) *Upstream {
	u, err := ParseUpstream(name, m.cfg.ConnectAddress)
	if err != nil {
		t.Fatal(err)
	}
	return &u
}

func (m *Manager) count(ctx context.Context, t *testing.T) int {
	t.Helper()
	conn, err := m.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// newPrimaryAndReplica initialises a primary with a slot for the replica,
// clones the replica and waits until it streams.
func newPrimaryAndReplica(t *testing.T, e *pgEnv) (*Manager, *Manager) {
	t.Helper()
	return newPrimaryAndReplicaWith(t, e, Desired{})
}

// newPrimaryAndReplicaWith is newPrimaryAndReplica with the primary
// started with pd.
func newPrimaryAndReplicaWith(t *testing.T, e *pgEnv, pd Desired) (*Manager, *Manager) {
	t.Helper()
	ctx := ctxT(t, 3*time.Minute)
	p := e.initPrimaryWith(t, ctx, "pg1", pd)
	if _, err := p.EnsureSlots(ctx, physical(SlotName("pg2")), keepNone); err != nil {
		t.Fatal(err)
	}
	if err := p.Exec(ctx, "CREATE TABLE t (id int primary key)"); err != nil {
		t.Fatal(err)
	}
	if err := p.Exec(ctx, "INSERT INTO t SELECT generate_series(1, 100)"); err != nil {
		t.Fatal(err)
	}
	r := e.manager(t, "pg2", e.config(t, "pg2"))
	d := Desired{Standby: upstreamOf(t, "pg1", p), Slot: SlotName("pg2")}
	if err := r.Clone(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx, d); err != nil {
		t.Fatal(err)
	}
	waitStreaming(t, p, "pg2")
	return p, r
}

func waitStreaming(t *testing.T, primary *Manager, standby string) {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	testutil.WaitFor(t, 30*time.Second, standby+" streaming from "+primary.member, func() (bool, error) {
		st, err := primary.Status(ctx)
		if err != nil {
			return false, err
		}
		for _, r := range st.Replicas {
			if r.ApplicationName == standby && r.State == "streaming" {
				return true, nil
			}
		}
		return false, fmt.Errorf("replicas: %+v", st.Replicas)
	})
}

func TestInitStartConnect(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 2*time.Minute)
	m := e.manager(t, "pg1", e.config(t, "pg1"))
	sysid, err := m.Init(ctx, Desired{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := m.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Running || st.InRecovery || st.Timeline != 1 || st.SystemID != sysid || !strings.HasPrefix(st.Version, "15") {
		t.Fatalf("status after init: %+v", st)
	}
	fromControl, err := m.SystemID(ctx)
	if err != nil || fromControl != sysid {
		t.Fatalf("pg_controldata system id %q (%v), want %q", fromControl, err, sysid)
	}
	// The rewind role has exactly the four grants, and the passwords work
	// over TCP with SCRAM.
	var n int
	conn, err := m.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM information_schema.routine_privileges
		WHERE grantee = 'rewind_user' AND privilege_type = 'EXECUTE'`).Scan(&n); err != nil || n != 4 {
		t.Fatalf("rewind grants: %d (%v), want 4", n, err)
	}
	var method string
	if err := conn.QueryRow(ctx, `SELECT substr(rolpassword, 1, 13) FROM pg_authid WHERE rolname = 'app'`).Scan(&method); err != nil || method != "SCRAM-SHA-256" {
		t.Fatalf("app password stored as %q (%v)", method, err)
	}
	for _, tc := range []struct{ user, pw string }{{"app", "app-pw"}, {"rewind_user", "rewind-secret"}} {
		out, err := exec.CommandContext(ctx, filepath.Join(pgBin, "psql"), "-X", "-At", "-c", "select current_user",
			fmt.Sprintf("host=127.0.0.1 port=%s user=%s dbname=postgres password=%s", strings.Split(m.cfg.Listen, ":")[1], tc.user, tc.pw)).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != tc.user {
			t.Fatalf("login as %s: %v %s", tc.user, err, out)
		}
	}
	if err := m.Stop(ctx, StopFast); err != nil {
		t.Fatal(err)
	}
	if m.Running() {
		t.Fatal("still running after stop")
	}
	cd, err := m.ControlData(ctx)
	if err != nil || cd["Database cluster state"] != "shut down" {
		t.Fatalf("control data after fast stop: %q (%v)", cd["Database cluster state"], err)
	}
}

func TestReplicaPromoteRewind(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 4*time.Minute)
	p, r := newPrimaryAndReplica(t, e)
	if err := p.Exec(ctx, "INSERT INTO t SELECT generate_series(101, 200)"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "replica replays 200 rows", func() (bool, error) { return r.count(ctx, t) == 200, nil })
	rs, err := r.Status(ctx)
	if err != nil || !rs.InRecovery || rs.WalReceiver != "streaming" || rs.ReplayedLSN == 0 {
		t.Fatalf("replica status: %+v (%v)", rs, err)
	}
	if rs.UpstreamAddr != p.cfg.ConnectAddress {
		t.Fatalf("replica's upstream %q, want %q", rs.UpstreamAddr, p.cfg.ConnectAddress)
	}
	if psys, _ := p.SystemID(ctx); psys != rs.SystemID {
		t.Fatalf("system ids differ: primary %s replica %s", psys, rs.SystemID)
	}

	// Promote the replica; the old primary writes on its own timeline.
	if err := r.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	rs, err = r.Status(ctx)
	if err != nil || rs.InRecovery || rs.Timeline != 2 {
		t.Fatalf("after promote: %+v (%v)", rs, err)
	}
	if err := p.Exec(ctx, "INSERT INTO t SELECT generate_series(1001, 1100)"); err != nil {
		t.Fatal(err)
	}
	if err := r.Exec(ctx, "INSERT INTO t VALUES (5000)"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.EnsureSlots(ctx, physical(SlotName("pg1")), keepNone); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(ctx, StopFast); err != nil {
		t.Fatal(err)
	}
	d := Desired{Standby: upstreamOf(t, "pg2", r), Slot: SlotName("pg1")}
	if err := p.Rewind(ctx, d); err != nil {
		t.Fatal(err)
	}
	if !p.IsStandbyConfigured() {
		t.Fatal("standby.signal missing after rewind")
	}
	if err := p.Start(ctx, d); err != nil {
		t.Fatal(err)
	}
	waitStreaming(t, r, "pg1")
	testutil.WaitFor(t, 30*time.Second, "rewound pg1 has pg2's 201 rows and none of its own diverged ones", func() (bool, error) {
		return p.count(ctx, t) == 201, nil
	})
	ps, err := p.Status(ctx)
	if err != nil || !ps.InRecovery || ps.Timeline != 2 {
		t.Fatalf("rewound old primary: %+v (%v)", ps, err)
	}
}

func TestRewindImpossibleThenReclone(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 4*time.Minute)
	src := e.initPrimary(t, ctx, "pg1")
	other := e.initPrimary(t, ctx, "pg3")
	if err := other.Stop(ctx, StopFast); err != nil {
		t.Fatal(err)
	}
	d := Desired{Standby: upstreamOf(t, "pg1", src)}
	err := other.Rewind(ctx, d)
	if !errors.Is(err, ErrRewindFailed) {
		t.Fatalf("rewind of a foreign cluster: %v, want ErrRewindFailed", err)
	}
	if err := other.Reclone(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := other.Start(ctx, d); err != nil {
		t.Fatal(err)
	}
	a, _ := src.SystemID(ctx)
	b, _ := other.SystemID(ctx)
	if a != b {
		t.Fatalf("recloned system id %s, want %s", b, a)
	}
	waitStreaming(t, src, "pg3")
}

func TestPendingRestart(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 2*time.Minute)
	cfg := e.config(t, "pg1")
	m := e.manager(t, "pg1", cfg)
	if _, err := m.Init(ctx, Desired{}); err != nil {
		t.Fatal(err)
	}
	ch, err := m.Reload(ctx, Desired{})
	if err != nil || ch.Changed() {
		t.Fatalf("reload without changes rewrote %v (%v)", ch.Files, err)
	}
	m.cfg.Parameters["max_connections"] = "40"
	ch, err = m.Reload(ctx, Desired{})
	if err != nil || !ch.Changed() {
		t.Fatalf("reload with a change: %v (%v)", ch.Files, err)
	}
	testutil.WaitFor(t, 10*time.Second, "pending_restart after max_connections change", func() (bool, error) {
		st, err := m.Status(ctx)
		return st.PendingRestart, err
	})
	if err := m.Restart(ctx, Desired{}); err != nil {
		t.Fatal(err)
	}
	st, err := m.Status(ctx)
	if err != nil || st.PendingRestart {
		t.Fatalf("after restart: pending %v (%v)", st.PendingRestart, err)
	}
}

func TestAutoConfRecoverySettingsStripped(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 2*time.Minute)
	m := e.initPrimary(t, ctx, "pg1")
	if err := m.Exec(ctx, "ALTER SYSTEM SET primary_conninfo = 'host=elsewhere'"); err != nil {
		t.Fatal(err)
	}
	if err := m.Exec(ctx, "ALTER SYSTEM SET work_mem = '8MB'"); err != nil {
		t.Fatal(err)
	}
	ch, err := m.Configure(Desired{})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(m.cfg.DataDir, autoConfFile))
	if strings.Contains(string(data), "primary_conninfo") || !strings.Contains(string(data), "work_mem") {
		t.Fatalf("auto.conf after configure (%v):\n%s", ch.Files, data)
	}
}

func TestSlotsAndSynchronousStandby(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 3*time.Minute)
	p, r := newPrimaryAndReplica(t, e)
	sync := Desired{SyncStandbyNames: `FIRST 1 ("pg2")`}
	if err := p.SetSynchronousStandbyNames(ctx, sync); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "pg2 reported as sync", func() (bool, error) {
		st, err := p.Status(ctx)
		for _, rep := range st.Replicas {
			if rep.ApplicationName == "pg2" && rep.SyncState == "sync" {
				return true, nil
			}
		}
		return false, err
	})
	// The setting lives in the managed config: a reload with the same
	// Desired (what edit-config, pause and resume do) keeps it, even after
	// someone put another value in postgresql.auto.conf.
	if err := p.Exec(ctx, "ALTER SYSTEM SET synchronous_standby_names = ''"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Reload(ctx, sync); err != nil {
		t.Fatal(err)
	}
	if err := p.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	st, err := p.Status(ctx)
	if err != nil || st.SyncStandbyNames != sync.SyncStandbyNames {
		t.Fatalf("synchronous_standby_names after reload: %q (%v), want %q", st.SyncStandbyNames, err, sync.SyncStandbyNames)
	}
	// A standby reports the value it carries too.
	if rs, err := r.Status(ctx); err != nil || rs.SyncStandbyNames != "" {
		t.Fatalf("standby's synchronous_standby_names: %q (%v)", rs.SyncStandbyNames, err)
	}
	// An active slot is never dropped, even when no longer wanted.
	if have, err := p.EnsureSlots(ctx, nil, keepNone); err != nil || !hasSlot(have, "pg2") {
		t.Fatalf("pg2's slot dropped while pg2 streams: %v (%v)", have, err)
	}
	if err := p.SetSynchronousStandbyNames(ctx, Desired{}); err != nil {
		t.Fatal(err)
	}
	if err := r.Stop(ctx, StopFast); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "pg2's slot dropped once inactive", func() (bool, error) {
		have, err := p.EnsureSlots(ctx, nil, keepNone)
		return err == nil && !hasSlot(have, "pg2"), err
	})
}

// TestSetSynchronousStandbyNamesNotRunning: on a stopped server the call
// fails, but the managed file already holds the value for the next start.
func TestSetSynchronousStandbyNamesNotRunning(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 2*time.Minute)
	m := e.initPrimary(t, ctx, "pg1")
	if err := m.Stop(ctx, StopFast); err != nil {
		t.Fatal(err)
	}
	err := m.SetSynchronousStandbyNames(ctx, Desired{SyncStandbyNames: `"x"`})
	if !errors.Is(err, errNotRunning) {
		t.Fatalf("set on a stopped server: %v, want errNotRunning", err)
	}
	// The managed file holds it for the next start all the same.
	data, _ := os.ReadFile(filepath.Join(m.cfg.DataDir, confFile))
	if !strings.Contains(string(data), `synchronous_standby_names = '"x"'`) {
		t.Fatalf("managed conf lacks the value:\n%s", data)
	}
}

func TestStopEscalates(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 2*time.Minute)
	m := e.initPrimary(t, ctx, "pg1")
	// A connected client keeps a smart shutdown waiting; the manager must
	// escalate to fast after its step timeout.
	conn, err := m.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	m.step = 500 * time.Millisecond
	start := time.Now()
	if err := m.Stop(ctx, StopSmart); err != nil {
		t.Fatal(err)
	}
	if m.Running() {
		t.Fatal("still running")
	}
	if took := time.Since(start); took < m.step {
		t.Fatalf("smart stop with a client returned after %s: it did not wait for the client", took)
	}
	cd, err := m.ControlData(ctx)
	if err != nil || cd["Database cluster state"] != "shut down" {
		t.Fatalf("after escalation to fast: %q (%v)", cd["Database cluster state"], err)
	}
}

// TestFollowReloadsAStandby: a running standby follows a new primary by a
// reload (same postmaster, new upstream, new rows arrive); a running
// primary told to follow is restarted as a standby.
func TestFollowReloadsAStandby(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 4*time.Minute)
	p, r := newPrimaryAndReplica(t, e)
	if _, err := p.EnsureSlots(ctx, physical(SlotName("pg2"), SlotName("pg3")), keepNone); err != nil {
		t.Fatal(err)
	}
	r3 := e.manager(t, "pg3", e.config(t, "pg3"))
	d3 := Desired{Standby: upstreamOf(t, "pg1", p), Slot: SlotName("pg3")}
	if err := r3.Clone(ctx, d3); err != nil {
		t.Fatal(err)
	}
	if err := r3.Start(ctx, d3); err != nil {
		t.Fatal(err)
	}
	waitStreaming(t, p, "pg3")
	// A clean switchover: the primary stops, pg2 is promoted, pg3 follows.
	if err := p.Stop(ctx, StopFast); err != nil {
		t.Fatal(err)
	}
	if err := r.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.EnsureSlots(ctx, physical(SlotName("pg1"), SlotName("pg3")), keepNone); err != nil {
		t.Fatal(err)
	}
	before, err := r3.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d3 = Desired{Standby: upstreamOf(t, "pg2", r), Slot: SlotName("pg3")}
	if err := r3.Follow(ctx, d3); err != nil {
		t.Fatal(err)
	}
	waitStreaming(t, r, "pg3")
	if err := r.Exec(ctx, "INSERT INTO t VALUES (4242)"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "pg3 replays pg2's new row", func() (bool, error) { return r3.count(ctx, t) == 101, nil })
	after, err := r3.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !after.PostmasterStart.Equal(before.PostmasterStart) || after.Foreign {
		t.Fatalf("pg3 was restarted to follow: postmaster start %v, then %v", before.PostmasterStart, after.PostmasterStart)
	}
	if after.UpstreamAddr != r.cfg.ConnectAddress || after.Timeline != 2 {
		t.Fatalf("pg3 after follow: upstream %q timeline %d, want %q on 2", after.UpstreamAddr, after.Timeline, r.cfg.ConnectAddress)
	}
	// The old primary, running as a primary again, is restarted as a
	// standby when told to follow.
	if err := p.Start(ctx, Desired{}); err != nil {
		t.Fatal(err)
	}
	pBefore, err := p.Status(ctx)
	if err != nil || pBefore.InRecovery {
		t.Fatalf("pg1 restarted as primary: %+v (%v)", pBefore, err)
	}
	if err := p.Follow(ctx, Desired{Standby: upstreamOf(t, "pg2", r), Slot: SlotName("pg1")}); err != nil {
		t.Fatal(err)
	}
	pAfter, err := p.Status(ctx)
	if err != nil || !pAfter.InRecovery || pAfter.PostmasterStart.Equal(pBefore.PostmasterStart) {
		t.Fatalf("pg1 after follow: in recovery %v, postmaster start %v then %v (%v)",
			pAfter.InRecovery, pBefore.PostmasterStart, pAfter.PostmasterStart, err)
	}
}

// A clone of a member that has been through several promotions carries the
// history file of every earlier timeline the source has, not only the
// newest one pg_basebackup brings: a standby that later follows the clone
// across those timelines asks it for each of them (found by make bench:
// "could not receive timeline history file", a standby stuck for good).
func TestCloneCopiesOlderTimelineHistories(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 4*time.Minute)
	p, r := newPrimaryAndReplica(t, e) // timeline 1
	if err := p.Stop(ctx, StopFast); err != nil {
		t.Fatal(err)
	}
	if err := r.Promote(ctx); err != nil { // timeline 2
		t.Fatal(err)
	}
	if _, err := r.EnsureSlots(ctx, physical(SlotName("pg3")), keepNone); err != nil {
		t.Fatal(err)
	}
	s := e.manager(t, "pg3", e.config(t, "pg3"))
	d := Desired{Standby: upstreamOf(t, "pg2", r), Slot: SlotName("pg3")}
	if err := s.Clone(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx, d); err != nil {
		t.Fatal(err)
	}
	waitStreaming(t, r, "pg3")
	if err := r.Stop(ctx, StopFast); err != nil {
		t.Fatal(err)
	}
	if err := s.Promote(ctx); err != nil { // timeline 3
		t.Fatal(err)
	}
	// pg_basebackup brings only 00000003.history; 00000002.history must
	// come from the clone's own fetch.
	c := e.manager(t, "pg4", e.config(t, "pg4"))
	if err := c.Clone(ctx, Desired{Standby: upstreamOf(t, "pg3", s)}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"00000002.history", "00000003.history"} {
		if _, err := os.Stat(filepath.Join(c.cfg.DataDir, "pg_wal", f)); err != nil {
			t.Errorf("clone of a timeline-3 primary lacks %s: %v", f, err)
		}
	}
}

// TestCloneFallsBackToBasebackup: with create_replica_methods [pgbackrest,
// basebackup], a failing restore leaves nothing behind and the clone goes
// on with pg_basebackup; a restore-only list fails with the restore's
// error and no data directory.
func TestCloneFallsBackToBasebackup(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 3*time.Minute)
	p := e.initPrimary(t, ctx, "pg1")
	var calls []RestoreRequest
	restore := func(_ context.Context, dir string, r RestoreRequest) error {
		calls = append(calls, r)
		if entries, err := os.ReadDir(dir); err != nil || len(entries) > 0 {
			t.Errorf("restore into %s: not an empty directory (%v, %d entries)", dir, err, len(entries))
		}
		// What a failed restore may leave: it must not survive.
		_ = os.WriteFile(filepath.Join(dir, "PG_VERSION"), []byte("15\n"), 0o600)
		return errors.New("no backup set in the repository")
	}
	mk := func(name string, methods []string) *Manager {
		cfg := e.config(t, name)
		cfg.ReplicaMethods = methods
		logger := hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Info, Output: testWriter{t}})
		m, err := New(cfg, name, logger, Options{Scope: "test", RunAs: e.runAs, Restore: restore})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Stop(context.Background(), StopImmediate) })
		return m
	}
	d := Desired{Standby: upstreamOf(t, "pg1", p)}
	only := mk("pg2", []string{MethodPgBackRest})
	if err := only.Clone(ctx, d); err == nil || !strings.Contains(err.Error(), "no backup set") {
		t.Fatalf("clone with pgbackrest only: %v", err)
	}
	if only.HasDataDir() {
		t.Fatal("a failed restore left a data directory")
	}
	r := mk("pg3", []string{MethodPgBackRest, MethodBasebackup})
	if err := r.Clone(ctx, d); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 2 || !calls[0].Standby || !calls[1].Standby {
		t.Fatalf("restore calls %+v, want two standby restores", calls)
	}
	if err := r.Start(ctx, d); err != nil {
		t.Fatal(err)
	}
	waitStreaming(t, p, "pg3")
	if _, err := New(e.config(t, "pg4"), "pg4", nil, Options{}); err != nil {
		t.Fatalf("default methods need no repository: %v", err)
	}
	cfg := e.config(t, "pg5")
	cfg.BootstrapMethod = BootstrapPgBackRest
	if _, err := New(cfg, "pg5", nil, Options{}); err == nil || !strings.Contains(err.Error(), "no backup repository") {
		t.Fatalf("pgbackrest bootstrap without a repository: %v", err)
	}
}
