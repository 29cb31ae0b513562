package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	"raftgres/config"
)

// patroniInputs holds the Patroni configs the tests convert.
const patroniInputs = "../../config/patroni/testdata"

// goldenConversions are the testdata Patroni configs and their flags.
var goldenConversions = []struct {
	input string
	args  convertFlags
	code  int
}{
	{"patroni-pg1", convertFlags{RaftAddr: "10.0.0.11:7001", Peers: "pg1=10.0.0.11:7001,pg2=10.0.0.12:7001,pg3=10.0.0.13:7001"}, 0},
	{"patroni-pg3", convertFlags{RaftAddr: "0.0.0.0:7001", Peers: "pg1=10.1.0.11:7001,pg2=10.1.0.12:7001,pg3=10.1.0.13:7001",
		DataDir: "/srv/raftgres"}, 0},
	{"patroni-relative", convertFlags{RaftAddr: "127.0.0.1:7001", Peers: "postgresql0=127.0.0.1:7001,postgresql1=127.0.0.1:7002"}, 1},
}

const goldenToken = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// TestConvertPatroniGolden converts testdata/patroni-*.yml and compares
// stdout and stderr with the .golden files (go test -run
// TestConvertPatroniGolden -update rewrites them).
func TestConvertPatroniGolden(t *testing.T) {
	for _, g := range goldenConversions {
		t.Run(g.input, func(t *testing.T) {
			tokenFile := filepath.Join(t.TempDir(), "token")
			if err := os.WriteFile(tokenFile, []byte(goldenToken+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			f := g.args
			f.Source, f.TokenFile, f.DataDir = filepath.Join(patroniInputs, g.input+".yml"), tokenFile, valueOr(f.DataDir, "/var/lib/raftgres")
			var stdout, stderr bytes.Buffer
			if code := runConvertPatroni(f, &stdout, &stderr); code != g.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, g.code, stderr.String())
			}
			for _, out := range []struct {
				suffix string
				got    []byte
			}{{".raftgres.golden", stdout.Bytes()}, {".stderr.golden", stderr.Bytes()}} {
				golden := filepath.Join("testdata", g.input+out.suffix)
				if *update {
					if err := os.WriteFile(golden, out.got, 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test -run TestConvertPatroniGolden -update to create it)", err)
				}
				if diff := cmp.Diff(string(want), string(out.got)); diff != "" {
					t.Errorf("differs from %s (-want +got); rerun with -update if intended:\n%s", golden, diff)
				}
			}
			if g.code == 0 {
				r := config.Check("converted.yml", stdout.Bytes(), 0o600)
				if len(r.Problems) > 0 || len(r.Notes) > 0 {
					t.Errorf("the output does not load cleanly: problems %v, notes %v", r.Problems, r.Notes)
				}
			} else if stdout.Len() > 0 {
				t.Errorf("exit %d with output:\n%s", g.code, stdout.String())
			}
		})
	}
}

// secretValues are the values of every key that holds a secret in a
// Patroni config (password, token), found by walking the YAML.
func secretValues(t *testing.T, src []byte) []string {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		t.Fatal(err)
	}
	var out []string
	var walkNode func(n *yaml.Node)
	walkNode = func(n *yaml.Node) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if n.Kind == yaml.MappingNode && v.Kind == yaml.ScalarNode && regexp.MustCompile(`password|token|secret`).MatchString(k.Value) {
				out = append(out, v.Value)
			}
		}
		for _, c := range n.Content {
			walkNode(c)
		}
	}
	walkNode(&doc)
	return out
}

func TestConvertPatroniNeverPrintsSecrets(t *testing.T) {
	t.Parallel()
	for _, g := range goldenConversions {
		t.Run(g.input, func(t *testing.T) {
			t.Parallel()
			src := filepath.Join(patroniInputs, g.input+".yml")
			raw, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			secrets := append(secretValues(t, raw), goldenToken)
			if len(secrets) < 4 {
				t.Fatalf("found only %d secrets in %s", len(secrets), src)
			}
			tokenFile := filepath.Join(t.TempDir(), "token")
			if err := os.WriteFile(tokenFile, []byte(goldenToken), 0o600); err != nil {
				t.Fatal(err)
			}
			f := g.args
			f.Source, f.TokenFile, f.DataDir = src, tokenFile, valueOr(f.DataDir, "/var/lib/raftgres")
			var stdout, stderr bytes.Buffer
			runConvertPatroni(f, &stdout, &stderr)
			for _, s := range secrets {
				if strings.Contains(stderr.String(), s) {
					t.Errorf("stderr holds the secret %q:\n%s", s, stderr.String())
				}
			}
			if g.code == 0 && !strings.Contains(stdout.String(), goldenToken) {
				t.Errorf("the output lacks the token")
			}
		})
	}
}

func TestConvertPatroniFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notYAML := filepath.Join(dir, "bad.yml")
	if err := os.WriteFile(notYAML, []byte("scope: [x"), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyToken := filepath.Join(dir, "empty.token")
	if err := os.WriteFile(emptyToken, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := convertFlags{Source: patroniInputs + "/patroni-pg1.yml", RaftAddr: "10.0.0.11:7001",
		Peers: "pg1=10.0.0.11:7001,pg2=10.0.0.12:7001", DataDir: "/var/lib/raftgres"}
	for _, tc := range []struct {
		name   string
		change func(*convertFlags)
		want   string
	}{
		{"no --raft-addr", func(f *convertFlags) { f.RaftAddr = "" }, "--raft-addr HOST:PORT is required"},
		{"bad --raft-addr", func(f *convertFlags) { f.RaftAddr = "10.0.0.11" }, "--raft-addr: must be host:port"},
		{"no --peers", func(f *convertFlags) { f.Peers = "" }, "--peers: is required"},
		{"malformed --peers", func(f *convertFlags) { f.Peers = "pg1=10.0.0.11:7001,pg2" }, `--peers: "pg2": must be NAME=HOST:PORT`},
		{"peer without a host", func(f *convertFlags) { f.Peers = "pg1=:7001" }, "--peers: pg1: needs a host"},
		{"peer twice", func(f *convertFlags) { f.Peers = "pg1=10.0.0.11:7001,pg1=10.0.0.12:7001" }, "--peers: pg1: listed twice"},
		{"member not in --peers", func(f *convertFlags) { f.Peers = "pg2=10.0.0.12:7001" }, "--peers must include this member (pg1)"},
		{"bad --member", func(f *convertFlags) { f.Member = "pg 1" }, "--member: letters"},
		{"relative --data-dir", func(f *convertFlags) { f.DataDir = "raftgres" }, "--data-dir: must be an absolute path"},
		{"no --token-file", func(f *convertFlags) { f.TokenFile = "" }, "--token-file FILE is required"},
		{"empty token file", func(f *convertFlags) { f.TokenFile = emptyToken }, "must hold one token"},
		{"missing input", func(f *convertFlags) { f.Source = filepath.Join(dir, "nope.yml") }, "no such file or directory"},
		{"input not YAML", func(f *convertFlags) { f.Source = notYAML }, "bad.yml: line 1: did not find expected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := good
			f.TokenFile = filepath.Join(t.TempDir(), "token")
			tc.change(&f)
			var stdout, stderr bytes.Buffer
			if code := runConvertPatroni(f, &stdout, &stderr); code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if !strings.HasPrefix(stderr.String(), "convert-patroni: ") || !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr %q, want %q", stderr.String(), tc.want)
			}
			if stdout.Len() > 0 {
				t.Errorf("stdout: %s", stdout.String())
			}
			if f.TokenFile != emptyToken && f.TokenFile != "" {
				if _, err := os.Stat(f.TokenFile); err == nil {
					t.Errorf("a refused conversion created the token file")
				}
			}
		})
	}
}

func TestConvertPatroniTokenFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "cluster.token")
	convert := func(src, member, addr string) (string, string, int) {
		f := convertFlags{Source: src, Member: member, RaftAddr: addr, DataDir: "/var/lib/raftgres", TokenFile: tokenFile,
			Peers: "pg1=10.0.0.11:7001,pg2=10.0.0.12:7001,pg3=10.0.0.13:7001"}
		var stdout, stderr bytes.Buffer
		code := runConvertPatroni(f, &stdout, &stderr)
		return stdout.String(), stderr.String(), code
	}
	// A conversion whose result cannot load creates no token file.
	if _, _, code := convert(patroniInputs+"/patroni-relative.yml", "pg1", "10.0.0.11:7001"); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if _, err := os.Stat(tokenFile); err == nil {
		t.Fatal("a conversion that failed created the token file")
	}
	out1, stderr1, code := convert(patroniInputs+"/patroni-pg1.yml", "", "10.0.0.11:7001")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr1)
	}
	fi, err := os.Stat(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %04o, want 0600", fi.Mode().Perm())
	}
	raw, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(raw))
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(token) {
		t.Fatalf("token %q is not 32 random bytes in hex", token)
	}
	if !strings.Contains(out1, "  token: "+token+"\n") {
		t.Errorf("pg1's config lacks the token:\n%s", out1)
	}
	if !strings.Contains(stderr1, "wrote a new cluster token to "+tokenFile+" (mode 0600)") || strings.Contains(stderr1, token) {
		t.Errorf("stderr %q", stderr1)
	}
	// The other hosts' conversions reuse it.
	out2, stderr2, code := convert(patroniInputs+"/patroni-pg1.yml", "pg2", "10.0.0.12:7001")
	if code != 0 || !strings.Contains(out2, "  token: "+token+"\n") || strings.Contains(stderr2, "wrote a new cluster token") {
		t.Errorf("second conversion: exit %d, stderr %q, output:\n%s", code, stderr2, out2)
	}
	if !strings.Contains(out2, "\nname: pg2\n") {
		t.Errorf("--member pg2 not applied:\n%s", out2)
	}
	// A token file others can read still works, with a warning.
	if err := os.Chmod(tokenFile, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr3, code := convert(patroniInputs+"/patroni-pg1.yml", "pg3", "10.0.0.13:7001"); code != 0 ||
		!strings.Contains(stderr3, "is readable by group or others (mode 0644)") {
		t.Errorf("exit %d, stderr %q", code, stderr3)
	}
}

func valueOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
