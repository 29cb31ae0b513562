package main

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"raftgres/config"
	"raftgres/raftstore"
)

// runApp runs the CLI in-process and returns its output and exit code.
func runApp(t *testing.T, args ...string) (stdout string, code int, msg string) {
	t.Helper()
	app := newApp()
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &out
	app.ExitErrHandler = func(*cli.Context, error) {}
	err := app.Run(append([]string{"raftgres"}, args...))
	var ec cli.ExitCoder
	switch {
	case err == nil:
	case errors.As(err, &ec):
		code, msg = ec.ExitCode(), err.Error()
	default:
		t.Fatalf("%v: %v", args, err)
	}
	return out.String(), code, msg
}

func TestSnapshotKeygenVerify(t *testing.T) {
	dir := t.TempDir()
	prefix := filepath.Join(dir, "audit")
	out, code, msg := runApp(t, "snapshot", "keygen", "--out", prefix)
	if code != 0 || !strings.Contains(out, "key id SHA256:") {
		t.Fatalf("keygen: exit %d %s %s", code, out, msg)
	}
	for name, want := range map[string]os.FileMode{prefix + ".key": 0o600, prefix + ".pub": 0o644} {
		fi, err := os.Stat(name)
		if err != nil || fi.Mode().Perm() != want {
			t.Fatalf("%s: %v, mode %v, want %v", name, err, fi.Mode().Perm(), want)
		}
	}
	if _, code, msg := runApp(t, "snapshot", "keygen", "--out", prefix); code != 1 || !strings.Contains(msg, "exists: not overwriting") {
		t.Fatalf("second keygen: exit %d %s", code, msg)
	}
	if _, code, _ := runApp(t, "snapshot", "keygen", "--out", filepath.Join(dir, "other")); code != 0 {
		t.Fatal("keygen other")
	}

	key, err := raftstore.LoadAuditKey(prefix + ".key")
	if err != nil {
		t.Fatal(err)
	}
	body := raftstore.ExportBody{Scope: "demo", ExportedBy: "pg2", ExportedAt: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC),
		RaftIndex: 77, RaftTerm: 5}
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	signed, err := raftstore.EncodeExport(body, key)
	if err != nil {
		t.Fatal(err)
	}
	unsigned, err := raftstore.EncodeExport(body, nil)
	if err != nil {
		t.Fatal(err)
	}
	flipped := append([]byte{}, signed...)
	i := bytes.Index(flipped, []byte(`"pg2"`)) + 3
	flipped[i] ^= 0x01 // pg2 -> pg3
	kid := raftstore.KeyID(key.Public().(ed25519.PublicKey))
	otherKey, err := raftstore.LoadAuditKey(filepath.Join(dir, "other.key"))
	if err != nil {
		t.Fatal(err)
	}
	otherID := raftstore.KeyID(otherKey.Public().(ed25519.PublicKey))

	good, bad, trunc, uns := write("good.json", signed), write("bad.json", flipped), write("trunc.json", signed[:len(signed)/3]), write("unsigned.json", unsigned)
	pub, other := prefix+".pub", filepath.Join(dir, "other.pub")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string // in stdout (exit 0) or the error (exit != 0)
	}{
		{"verified", []string{"--pubkey", pub, good}, 0,
			"ok, signature verified: signed by key " + kid + "; scope demo, raft index 77, term 5, 0 members, exported by pg2 at 2026-12-01T10:00:00Z"},
		{"signed, not checked", []string{good}, 0, "signed by key " + kid + " but the signature was NOT checked"},
		{"unsigned", []string{uns}, 0, "digest ok, unsigned"},
		{"unsigned with key", []string{"--pubkey", pub, uns}, 1, "export unsigned: the file carries no signature"},
		{"modified", []string{"--pubkey", pub, bad}, 1, "export body modified"},
		{"modified, no key", []string{bad}, 1, "export body modified: the body does not match its SHA-256 digest"},
		{"wrong key", []string{"--pubkey", other, good}, 1, "export signed by another key: signed by key " + kid + ", not by " + otherID},
		{"truncated", []string{"--pubkey", pub, trunc}, 1, "truncated or malformed export: truncated"},
		{"missing file", []string{filepath.Join(dir, "none.json")}, 1, "no such file"},
		{"private key as pubkey", []string{"--pubkey", prefix + ".key", good}, 2, "this is a private key"},
		{"no file", []string{"--pubkey", pub}, 2, "give exactly one FILE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code, msg := runApp(t, append([]string{"snapshot", "verify"}, tc.args...)...)
			got := msg
			if tc.code == 0 {
				got = out
			}
			if code != tc.code || !strings.Contains(got, tc.want) {
				t.Fatalf("exit %d, output %q %q; want exit %d with %q", code, out, msg, tc.code, tc.want)
			}
		})
	}
}

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{"pg1": "pg1", "": "", "a b": `"a b"`, "x\x1b[2J": `"x\x1b[2J"`,
		strings.Repeat("a", 200): `"` + strings.Repeat("a", 128) + `…"`} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestLoadConfigAuditKey(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "audit.key")
	if _, code, msg := runApp(t, "snapshot", "keygen", "--out", filepath.Join(dir, "audit")); code != 0 {
		t.Fatal(msg)
	}
	cfg := filepath.Join(dir, "pg1.yml")
	if err := os.WriteFile(cfg, []byte(strings.Replace(validConfig, "/etc/rg/audit.key", key, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(cfg)
	if err != nil || c.Raft.AuditKeyFile != key {
		t.Fatalf("load with a 0600 key: %v", err)
	}
	if err := os.Chmod(key, 0o640); err != nil {
		t.Fatal(err)
	}
	want := "raft.audit_key_file: audit key " + key + " is readable by group or others (mode 0640): run chmod 600 " + key
	if _, err := config.Load(cfg); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("load with a 0640 key: %v, want %q", err, want)
	}
	if err := os.WriteFile(key, []byte("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAgB3nCAGc/noNnEOXY+Gs0WhzRqLC6lTCa0/qOzIyDTY=\n-----END PUBLIC KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(key, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(cfg); err == nil || !strings.Contains(err.Error(), "this is a public key") {
		t.Fatalf("load with a public key: %v", err)
	}
}
