package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestConvertPatroniCLI runs the built binary: convert-patroni on a
// realistic patroni.yml creates the cluster token file and a config that
// check-config accepts once it is chmod 600; a second host's conversion
// reuses the token; a broken key makes check-config exit 1 naming its line.
func TestConvertPatroniCLI(t *testing.T) {
	requireIntegration(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "cluster.token")
	patroni := filepath.Join("..", "config", "patroni", "testdata", "patroni-pg1.yml")
	peers := "pg1=10.0.0.11:7001,pg2=10.0.0.12:7001,pg3=10.0.0.13:7001"

	out, stderr, code := runCLI(t, "convert-patroni", "--raft-addr", "10.0.0.11:7001", "--peers", peers,
		"--token-file", tokenFile, patroni)
	if code != 0 {
		t.Fatalf("convert-patroni: exit %d\n%s", code, stderr)
	}
	for _, want := range []string{
		patroni + ":22: etcd3: not converted: raftgres keeps its own Raft store (see raft:)",
		patroni + ":124: postgresql.callbacks.on_reload: not converted: no such callback here",
		"wrote a new cluster token to " + tokenFile + " (mode 0600)",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	for _, secret := range []string{"rest-S3cret!", "etcd-S3cret", "super-S3cret", "repl-S3cret", "rewind-S3cret", "app-S3cret"} {
		if strings.Contains(stderr, secret) {
			t.Errorf("stderr holds the password %q", secret)
		}
	}
	fi, err := os.Stat(tokenFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi, err)
	}
	token, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "  token: "+strings.TrimSpace(string(token))+"\n") {
		t.Errorf("the config lacks the token file's token:\n%s", out)
	}

	cfg := filepath.Join(dir, "raftgres.yml")
	if err := os.WriteFile(cfg, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := runCLI(t, "check-config", "-c", cfg); code != 1 ||
		!strings.Contains(stderr, cfg+": holds passwords but is readable by group or others (mode 0644)") {
		t.Errorf("check-config of a 0644 file: exit %d\n%s", code, stderr)
	}
	if err := os.Chmod(cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, stderr, code := runCLI(t, "check-config", "-c", cfg); code != 0 || out != cfg+": ok\n" || stderr != "" {
		t.Errorf("check-config: exit %d, stdout %q, stderr %q", code, out, stderr)
	}

	// Another host: same token, its own name.
	out2, stderr, code := runCLI(t, "convert-patroni", patroni, "--member", "pg2", "--raft-addr", "10.0.0.12:7001",
		"--peers", peers, "--token-file", tokenFile)
	if code != 0 || !strings.Contains(out2, "\nname: pg2\n") || !strings.Contains(out2, "  token: "+strings.TrimSpace(string(token))+"\n") ||
		strings.Contains(stderr, "wrote a new cluster token") {
		t.Errorf("second conversion: exit %d, stderr:\n%s\noutput:\n%s", code, stderr, out2)
	}

	// A broken key: check-config names its line.
	lines := strings.Split(out, "\n")
	i := slices.Index(lines, "name: pg1")
	if i < 0 {
		t.Fatalf("no name line in:\n%s", out)
	}
	broken := strings.Join(slices.Insert(slices.Clone(lines), i+1, "nmae: pg1"), "\n")
	if err := os.WriteFile(cfg, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%s:%d: nmae: unknown key (did you mean name?)\n%s: 1 problem\n", cfg, i+2, cfg)
	if out, stderr, code := runCLI(t, "check-config", "-c", cfg); code != 1 || out != "" || stderr != want {
		t.Errorf("check-config of a broken file: exit %d, stdout %q, stderr:\n%s\nwant:\n%s", code, out, stderr, want)
	}

	// Bad usage exits 2.
	if _, stderr, code := runCLI(t, "convert-patroni", "--bogus", patroni); code != 2 {
		t.Errorf("convert-patroni --bogus: exit %d\n%s", code, stderr)
	}
	if _, stderr, code := runCLI(t, "convert-patroni", "--peers", peers, "--token-file", tokenFile, patroni); code != 2 ||
		!strings.Contains(stderr, "--raft-addr HOST:PORT is required") {
		t.Errorf("convert-patroni without --raft-addr: exit %d\n%s", code, stderr)
	}
}
