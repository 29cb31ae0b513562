package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"raftgres/config"
)

// writeConfig writes a config file with mode into a temporary directory.
// validConfig is a config that loads, naming every section.
var validConfig = func() string {
	b, err := os.ReadFile("../../config/testdata/valid.yml")
	if err != nil {
		panic(err)
	}
	return string(b)
}()

func writeConfig(t *testing.T, text string, mode fs.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "raftgres.yml")
	if err := os.WriteFile(path, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // whatever the umask
		t.Fatal(err)
	}
	return path
}

// replaceIn replaces old (which must be there) once in s.
func replaceIn(t *testing.T, s, old, new string) string {
	t.Helper()
	if !strings.Contains(s, old) {
		t.Fatalf("fixture lacks %q", old)
	}
	return strings.Replace(s, old, new, 1)
}

func TestCheckConfigOK(t *testing.T) {
	t.Parallel()
	// validConfig names certificates, a data directory and binaries that do
	// not exist here: check-config is static.
	path := writeConfig(t, validConfig, 0o600)
	var stdout, stderr bytes.Buffer
	if code := runCheckConfig(path, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr.String())
	}
	if got, want := stdout.String(), path+": ok\n"; got != want {
		t.Errorf("stdout %q, want %q", got, want)
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr: %s", stderr.String())
	}
}

func TestCheckConfigProblems(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		yaml string
		mode fs.FileMode
		want []string // stderr lines after "FILE", in order
	}{
		{"unknown key", replaceIn(t, validConfig, "scope: demo", "scope: demo\nscop: x"), 0o600,
			[]string{":2: scop: unknown key (did you mean scope?)"}},
		{"bad value", replaceIn(t, validConfig, "listen: 127.0.0.1:8008", "listen: nope"), 0o600,
			[]string{":13: restapi.listen: must be host:port, got \"nope\""}},
		{"wrong type", replaceIn(t, validConfig, "name: pg1", "name: [pg1]"), 0o600,
			[]string{":2: name: must be a single value"}},
		{"duplicate key", replaceIn(t, validConfig, "name: pg1", "name: pg1\nname: pg2"), 0o600,
			[]string{":3: name: key already defined at line 2"}},
		{"relation between settings", replaceIn(t, validConfig, "ttl: 20", "ttl: 6"), 0o600,
			[]string{":31: bootstrap.dcs.ttl: must be at least loop_wait + 2*retry_timeout (10.5s), got 6s"}},
		{"YAML syntax", replaceIn(t, validConfig, "name: pg1", "name: pg1\n bad: x"), 0o600,
			[]string{":3: mapping values are not allowed in this context"}},
		{"permission", validConfig, 0o640,
			[]string{": holds passwords but is readable by group or others (mode 0640): run chmod 600 "}},
		{"several, in file order, with the permission first",
			replaceIn(t, replaceIn(t, validConfig, "log: {level: debug, format: json}", "log: {level: loud, format: json}"),
				"name: pg1", "name: pg1\nnmae: x"), 0o644,
			[]string{": holds passwords but is readable", ":3: nmae: unknown key (did you mean name?)"}},
		{"several validation problems", replaceIn(t, validConfig, "log: {level: debug, format: json}", "log: {level: loud, format: xml}"), 0o600,
			[]string{":43: log.format: must be text or json", ":43: log.level: must be trace, debug, info, warn or error"}},
		{"pg_hba twice, different", replaceIn(t, validConfig, "  callbacks:", "  pg_hba: [host all all 10.0.0.0/8 md5]\n  callbacks:"), 0o600,
			[]string{":28: postgresql.pg_hba: differs from bootstrap.pg_hba: raftgres has one list of pg_hba lines"}},
		{"certfile and tls.cert_file differ", replaceIn(t, validConfig, "  authentication: {username: admin, password: admin-pw}\n",
			"  authentication: {username: admin, password: admin-pw}\n  tls: {cert_file: /a.pem, key_file: /a-key.pem}\n  certfile: /b.pem\n"), 0o600,
			[]string{":17: restapi.certfile: differs from restapi.tls.cert_file (the same setting): set only one"}},
		{"log level not Patroni's either", replaceIn(t, validConfig, "level: debug", "level: NOTSET"), 0o600,
			[]string{":43: log.level: must be trace, debug, info, warn or error (or Patroni's DEBUG, INFO, WARNING, ERROR, CRITICAL), got \"NOTSET\""}},
		{"empty file", "", 0o600, []string{": empty file"}},
		{"member named as the commit gate", replaceIn(t, validConfig, "name: pg1", "name: RAFTGRES_FENCE"), 0o600,
			[]string{`:2: name: "RAFTGRES_FENCE" is reserved: PostgreSQL would take a member of that name (in any letter case) for the commit gate "raftgres_fence"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := writeConfig(t, tc.yaml, tc.mode)
			var stdout, stderr bytes.Buffer
			if code := runCheckConfig(path, &stdout, &stderr); code != 1 {
				t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr.String())
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout: %s", stdout.String())
			}
			lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
			if len(lines) != len(tc.want)+1 {
				t.Fatalf("want %d problems and a summary, got:\n%s", len(tc.want), stderr.String())
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(lines[i], path+w) {
					t.Errorf("line %d:\n got %s\nwant %s%s...", i+1, lines[i], path, w)
				}
			}
			if got, want := lines[len(lines)-1], path+": "+plural(len(tc.want), "problem"); got != want {
				t.Errorf("summary %q, want %q", got, want)
			}
			for _, pw := range []string{"admin-pw", "super-pw", "repl-pw", "rewind-pw", "app-pw", "cluster-token"} {
				if strings.Contains(stderr.String(), pw) {
					t.Errorf("stderr leaks %q", pw)
				}
			}
		})
	}
}

func TestCheckConfigMissingFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "nope.yml")
	var stdout, stderr bytes.Buffer
	if code := runCheckConfig(path, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "no such file") {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
}

// patroniKeysConfig is validConfig with the keys Patroni users have that
// raftgres accepts: pgpass and use_unix_socket* (ignored, with notes),
// postgresql.pg_hba instead of bootstrap.pg_hba, restapi.certfile/keyfile
// and Patroni's log level.
var patroniKeysConfig = strings.NewReplacer(
	"  authentication: {username: admin, password: admin-pw}\n",
	"  authentication: {username: admin, password: admin-pw}\n  certfile: /etc/rg/api.pem\n  keyfile: /etc/rg/api-key.pem\n",
	"  callbacks:",
	"  pgpass: /tmp/pgpass0\n  use_unix_socket: true\n  use_unix_socket_repl: false\n"+
		"  pg_hba:\n    - host replication replicator 127.0.0.1/32 scram-sha-256\n  callbacks:",
	"  pg_hba:\n    - host replication replicator 127.0.0.1/32 scram-sha-256\n  users:", "  users:",
	"level: debug", "level: WARNING",
).Replace(validConfig)

func TestCheckConfigPatroniKeys(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, patroniKeysConfig, 0o600)
	var stdout, stderr bytes.Buffer
	if code := runCheckConfig(path, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr.String())
	}
	line := func(sub string) string { // where sub is in the file: other sections may grow
		return fmt.Sprint(strings.Count(patroniKeysConfig[:strings.Index(patroniKeysConfig, sub)], "\n") + 1)
	}
	want := path + ":" + line("  pgpass:") + ": postgresql.pgpass: note: ignored: raftgres writes its own 0600 pgpass file beside the data directory " +
		"(/var/lib/postgresql/15/main.pgpass)\n" +
		path + ":" + line("  use_unix_socket:") + ": postgresql.use_unix_socket: note: ignored: raftgres always connects locally through its own socket " +
		"directory (/var/lib/postgresql/15/main.run)\n" +
		path + ":" + line("  use_unix_socket_repl:") + ": postgresql.use_unix_socket_repl: note: ignored: raftgres always connects locally through its own socket " +
		"directory (/var/lib/postgresql/15/main.run)\n"
	if diff := cmp.Diff(want, stderr.String()); diff != "" {
		t.Errorf("notes (-want +got):\n%s", diff)
	}
	if stdout.String() != path+": ok\n" {
		t.Errorf("stdout %q", stdout.String())
	}
}

func TestParsePatroniKeys(t *testing.T) {
	t.Parallel()
	c, err := config.Parse("pg1.yml", []byte(patroniKeysConfig), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if c.API.TLS.CertFile != "/etc/rg/api.pem" || c.API.TLS.KeyFile != "/etc/rg/api-key.pem" {
		t.Errorf("restapi.certfile/keyfile: tls %+v", c.API.TLS)
	}
	hba := []string{"host replication replicator 127.0.0.1/32 scram-sha-256"}
	if !cmp.Equal(c.Postgres.PgHba, hba) || !cmp.Equal(c.Cluster.PostgreSQL.PgHba, hba) {
		t.Errorf("postgresql.pg_hba: postgres %q, cluster %q", c.Postgres.PgHba, c.Cluster.PostgreSQL.PgHba)
	}
	if c.Log.Level != "warn" {
		t.Errorf("log.level WARNING became %q", c.Log.Level)
	}
	var notes []string
	for _, n := range c.Notes {
		notes = append(notes, n.Path)
	}
	if want := []string{"postgresql.pgpass", "postgresql.use_unix_socket", "postgresql.use_unix_socket_repl"}; !cmp.Equal(notes, want) {
		t.Errorf("notes %q, want %q", notes, want)
	}
}

func TestParseConfigPatroniMappings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		yaml  string
		check func(c *config.Agent) bool
	}{
		{"log DEBUG", replaceIn(t, validConfig, "level: debug", "level: DEBUG"), func(c *config.Agent) bool { return c.Log.Level == "debug" }},
		{"log Info", replaceIn(t, validConfig, "level: debug", "level: Info"), func(c *config.Agent) bool { return c.Log.Level == "info" }},
		{"log warning", replaceIn(t, validConfig, "level: debug", "level: warning"), func(c *config.Agent) bool { return c.Log.Level == "warn" }},
		{"log ERROR", replaceIn(t, validConfig, "level: debug", "level: ERROR"), func(c *config.Agent) bool { return c.Log.Level == "error" }},
		{"log CRITICAL", replaceIn(t, validConfig, "level: debug", "level: CRITICAL"), func(c *config.Agent) bool { return c.Log.Level == "error" }},
		{"log trace stays", replaceIn(t, validConfig, "level: debug", "level: trace"), func(c *config.Agent) bool { return c.Log.Level == "trace" }},
		{"certfile equal to tls.cert_file", replaceIn(t, validConfig, "  authentication: {username: admin, password: admin-pw}\n",
			"  authentication: {username: admin, password: admin-pw}\n  tls: {cert_file: /a.pem, key_file: /k.pem}\n  certfile: /a.pem\n"),
			func(c *config.Agent) bool { return c.API.TLS.CertFile == "/a.pem" && c.API.TLS.KeyFile == "/k.pem" }},
		{"pg_hba in both places, the same", replaceIn(t, validConfig, "  callbacks:",
			"  pg_hba: ['host replication replicator 127.0.0.1/32 scram-sha-256']\n  callbacks:"),
			func(c *config.Agent) bool { return len(c.Postgres.PgHba) == 1 && len(c.Notes) == 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := config.Parse("pg1.yml", []byte(tc.yaml), 0o600)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Errorf("log %+v, api tls %+v, pg_hba %q", c.Log, c.API.TLS, c.Postgres.PgHba)
			}
		})
	}
}
