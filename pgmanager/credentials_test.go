package pgmanager

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"raftgres/internal/conf"
	"raftgres/internal/testutil"
)

// credManager is a Manager over a temporary directory (no PostgreSQL),
// logging into the returned buffer.
func credManager(t *testing.T, edit func(*Config)) (*Manager, *bytes.Buffer) {
	t.Helper()
	dir := t.TempDir()
	cfg := Config{
		Listen: "127.0.0.1:5433", ConnectAddress: "127.0.0.1:5433", DataDir: filepath.Join(dir, "pgdata"), BinDir: pgBin,
		Superuser:   Credentials{Username: "postgres", Password: "super-old"},
		Replication: Credentials{Username: "replicator", Password: "repl-old"},
		Rewind:      Credentials{Username: "rewind_user", Password: "rewind-old"},
	}
	if edit != nil {
		edit(&cfg)
	}
	var logs bytes.Buffer
	logger := hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Trace})
	m, err := New(cfg, "pg1", logger, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return m, &logs
}

func readPgpass(t *testing.T, m *Manager) string {
	t.Helper()
	b, err := os.ReadFile(m.pgpassPath())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSetPasswordRewritesPgpass(t *testing.T) {
	t.Parallel()
	m, logs := credManager(t, nil)
	if err := m.writePgpass(); err != nil {
		t.Fatal(err)
	}
	want := "*:*:*:replicator:repl-old\n*:*:*:rewind_user:rewind-old\n*:*:*:postgres:super-old\n"
	if got := readPgpass(t, m); got != want {
		t.Fatalf("pgpass before:\n%s\nwant:\n%s", got, want)
	}
	if err := m.SetPassword(RoleReplication, `n:e\w`); err != nil {
		t.Fatal(err)
	}
	want = "*:*:*:replicator:n\\:e\\\\w\n*:*:*:rewind_user:rewind-old\n*:*:*:postgres:super-old\n"
	if got := readPgpass(t, m); got != want {
		t.Fatalf("pgpass after SetPassword:\n%s\nwant:\n%s", got, want)
	}
	fi, err := os.Stat(m.pgpassPath())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("pgpass mode %04o, want 0600", fi.Mode().Perm())
	}
	if got := m.Password(RoleReplication).Reveal(); got != `n:e\w` {
		t.Fatalf("Password(replication) = %q", got)
	}
	if got := m.creds(RoleReplication).Password.Reveal(); got != `n:e\w` {
		t.Fatalf("creds(replication) = %q", got)
	}
	// Back to the config file's password: no override left.
	if err := m.SetPassword(RoleReplication, "repl-old"); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.override[RoleReplication]; ok {
		t.Fatal("an override equal to the config's password was kept")
	}
	if strings.Contains(logs.String(), `n:e\w`) {
		t.Fatalf("the password is in the log:\n%s", logs.String())
	}
}

func TestSetPasswordBeforeDataDirParentExists(t *testing.T) {
	t.Parallel()
	m, _ := credManager(t, func(c *Config) { c.DataDir = filepath.Join(c.DataDir, "not", "yet", "pgdata") })
	if err := m.SetPassword(RoleSuperuser, "super-new"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(m.pgpassPath()); err == nil {
		t.Fatal("pgpass written without its directory")
	}
	if got := m.Password(RoleSuperuser).Reveal(); got != "super-new" {
		t.Fatalf("Password(superuser) = %q", got)
	}
}

func TestSetPasswordRefusals(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		edit func(*Config)
		role Role
		pw   conf.Secret
		want string
	}{
		{"empty", nil, RoleReplication, "", "empty"},
		{"newline", nil, RoleReplication, "a\nb", "printable ASCII"},
		{"non-ascii", nil, RoleReplication, "pässword", "printable ASCII"},
		{"control", nil, RoleReplication, "a\x01b", "printable ASCII"},
		{"leading space", nil, RoleReplication, " secret", "space"},
		{"trailing space", nil, RoleReplication, "secret ", "space"},
		{"superuser without password", func(c *Config) { c.Superuser.Password = "" }, RoleSuperuser, "x", "peer"},
		{"no rewind role", func(c *Config) { c.Rewind = Credentials{} }, RoleRewind, "x", "rewind role"},
		{"rewind is the superuser", func(c *Config) { c.Rewind.Username = "postgres" }, RoleRewind, "x", "rewind role"},
		{"unknown role", nil, Role("app"), "x", "unknown role"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, _ := credManager(t, tc.edit)
			err := m.SetPassword(tc.role, tc.pw)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("SetPassword: %v, want an error with %q", err, tc.want)
			}
			if tc.pw.IsSet() && strings.Contains(err.Error(), tc.pw.Reveal()) {
				t.Fatalf("the error shows the password: %v", err)
			}
			if _, err := os.Stat(m.pgpassPath()); err == nil {
				t.Fatal("pgpass written after a refusal")
			}
		})
	}
}

func TestParseRole(t *testing.T) {
	t.Parallel()
	for _, r := range Roles() {
		if got, err := ParseRole(string(r)); err != nil || got != r {
			t.Fatalf("ParseRole(%s) = %v, %v", r, got, err)
		}
	}
	if _, err := ParseRole("postgres"); err == nil {
		t.Fatal("ParseRole(postgres) accepted")
	}
}

func TestLocalPasswordsOrder(t *testing.T) {
	t.Parallel()
	m, _ := credManager(t, nil)
	if got := fmt.Sprint(m.localPasswords()); got != "[super-old]" {
		t.Fatalf("at start: %s", got)
	}
	m.StagePassword(RoleSuperuser, "super-new")
	if got := fmt.Sprint(m.localPasswords()); got != "[super-old super-new]" {
		t.Fatalf("staged: %s", got)
	}
	if err := m.SetPassword(RoleSuperuser, "super-new"); err != nil {
		t.Fatal(err)
	}
	// In use first, then the config file's (a standby that has not
	// replayed the change yet).
	if got := fmt.Sprint(m.localPasswords()); got != "[super-new super-old]" {
		t.Fatalf("after SetPassword: %s", got)
	}
	pw := "super-old"
	m.localPW = &pw // what the server accepted last goes first
	if got := fmt.Sprint(m.localPasswords()); got != "[super-old super-new]" {
		t.Fatalf("after the server accepted the old one: %s", got)
	}
	m.StagePassword(RoleSuperuser, "")
	if _, ok := m.staged[RoleSuperuser]; ok {
		t.Fatal("StagePassword with an empty password kept the staged one")
	}
}

func TestVerifierMatches(t *testing.T) {
	t.Parallel()
	v, err := scramVerifier("s3cret:pw")
	if err != nil {
		t.Fatal(err)
	}
	sum := md5.Sum([]byte("md5pw" + "alice"))
	md5v := "md5" + hex.EncodeToString(sum[:])
	for _, tc := range []struct {
		name, stored, user, pw string
		want                   bool
	}{
		{"scram right", v, "x", "s3cret:pw", true},
		{"scram wrong", v, "x", "s3cret:pX", false},
		{"md5 right", md5v, "alice", "md5pw", true},
		{"md5 other user", md5v, "bob", "md5pw", false},
		{"empty", "", "x", "", false},
		{"garbage", "SCRAM-SHA-256$x:y$z", "x", "pw", false},
		{"huge iterations", "SCRAM-SHA-256$999999999:c2FsdA==$a:b", "x", "pw", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := verifierMatches(tc.stored, tc.user, tc.pw); got != tc.want {
				t.Fatalf("verifierMatches = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestRotatePasswordsOnRealPostgres changes the replication and superuser
// passwords of a primary and its streaming replica as rotate-password
// does, and checks that replication and the agent's own connections keep
// working, before and after restarts.
func TestRotatePasswordsOnRealPostgres(t *testing.T) {
	e := requirePG(t)
	p, r := newPrimaryAndReplica(t, e)
	ctx := ctxT(t, 3*time.Minute)

	// Replication: stage, change on the primary, use everywhere.
	if err := r.AlterPassword(ctx, RoleReplication, "repl-new"); err == nil {
		t.Fatal("AlterPassword on a standby succeeded")
	}
	if err := p.AlterPassword(ctx, RoleReplication, "repl-new"); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*Manager{p, r} {
		if err := m.SetPassword(RoleReplication, "repl-new"); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 30*time.Second, "the replica's catalog holding the new replication password", func() (bool, error) {
		return r.PasswordMatches(ctx, RoleReplication, "repl-new")
	})
	if ok, err := r.PasswordMatches(ctx, RoleReplication, "repl-secret"); err != nil || ok {
		t.Fatalf("the old replication password still matches (%v)", err)
	}
	if err := p.Exec(ctx, "INSERT INTO t VALUES (1001)"); err != nil {
		t.Fatal(err)
	}
	waitStreaming(t, p, "pg2")
	// A restarted replica logs in with the new password from pgpass.
	d := Desired{Standby: upstreamOf(t, "pg1", p), Slot: SlotName("pg2")}
	if err := r.Restart(ctx, d); err != nil {
		t.Fatal(err)
	}
	waitStreaming(t, p, "pg2")
	if err := p.Exec(ctx, "INSERT INTO t VALUES (1002)"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "the replica replaying after its restart", func() (bool, error) {
		return r.count(ctx, t) == 102, nil
	})

	// Superuser: the replica only stages it, then replays the change: its
	// agent still connects (the staged password is tried).
	r.StagePassword(RoleSuperuser, "super-new")
	if err := p.AlterPassword(ctx, RoleSuperuser, "super-new"); err != nil {
		t.Fatal(err)
	}
	if err := p.SetPassword(RoleSuperuser, "super-new"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "the replica's catalog holding the new superuser password", func() (bool, error) {
		return r.PasswordMatches(ctx, RoleSuperuser, "super-new")
	})
	conn, err := r.connect(ctx)
	if err != nil {
		t.Fatalf("the replica's agent cannot connect with a staged superuser password: %v", err)
	}
	_ = conn.Close(ctx)
	if err := r.SetPassword(RoleSuperuser, "super-new"); err != nil {
		t.Fatal(err)
	}
	// The primary restarts with the new password (waitReady logs in).
	if err := p.Restart(ctx, Desired{}); err != nil {
		t.Fatal(err)
	}
	if err := p.Exec(ctx, "CHECKPOINT"); err != nil {
		t.Fatal(err)
	}
	waitStreaming(t, p, "pg2")
	if got := readPgpass(t, r); !strings.Contains(got, ":replicator:repl-new\n") || !strings.Contains(got, ":postgres:super-new\n") {
		t.Fatalf("the replica's pgpass holds old passwords")
	}
	if _, err := p.Status(context.Background()); err != nil {
		t.Fatal(err)
	}
}
