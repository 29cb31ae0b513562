package backup

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	ok := Config{Stanza: "demo", RepoPath: "/var/lib/pgbackrest", Bin: "/usr/bin/pgbackrest",
		Options: map[string]string{"repo1-retention-full": "2"}}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string // "" = valid; else a substring of the error
	}{
		{"valid", func(*Config) {}, ""},
		{"off", func(c *Config) { *c = DefaultConfig() }, ""},
		{"options without a stanza", func(c *Config) { c.Stanza = "" }, "stanza: is required"},
		{"bad stanza", func(c *Config) { c.Stanza = "a b" }, "stanza: must be"},
		{"relative repository", func(c *Config) { c.RepoPath = "repo" }, "repo_path: must be an absolute path"},
		{"no repository", func(c *Config) { c.RepoPath = "" }, "repo_path: must be an absolute path"},
		{"relative config file", func(c *Config) { c.ConfigFile = "x.conf" }, "config_file: must be an absolute path"},
		{"an option raftgres owns", func(c *Config) { c.Options = map[string]string{"pg1-path": "/x"} }, "options.pg1-path: is set by raftgres"},
		{"not an option name", func(c *Config) { c.Options = map[string]string{"Repo1 Path": "/x"} }, "is not a pgBackRest option name"},
		{"a second line", func(c *Config) { c.Options = map[string]string{"repo1-s3-bucket": "b\n[x]"} }, "must be one line"},
		{"another member's pg option", func(c *Config) { c.Options = map[string]string{"pg2-host": "x"} }, "options.pg2-host: is set by raftgres"},
		{"a server option", func(c *Config) { c.Options = map[string]string{"tls-server-auth": "x=y"} }, "options.tls-server-auth: is set by raftgres"},
		{"server", func(c *Config) {
			c.Server = ServerConfig{Listen: "pg1.example.net:8432", CAFile: "/ca.pem", CertFile: "/c.pem", KeyFile: "/k.pem"}
		}, ""},
		{"server without listen", func(c *Config) { c.Server = ServerConfig{CAFile: "/ca.pem"} }, "server.listen: is required"},
		{"server on any address", func(c *Config) {
			c.Server = ServerConfig{Listen: "0.0.0.0:8432", CAFile: "/ca.pem", CertFile: "/c.pem", KeyFile: "/k.pem"}
		}, "server.listen: needs a host"},
		{"server without key", func(c *Config) {
			c.Server = ServerConfig{Listen: "pg1:8432", CAFile: "/ca.pem", CertFile: "/c.pem"}
		}, "server.key_file: must be an absolute path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			c.Options = map[string]string{"repo1-retention-full": "2"}
			tc.edit(&c)
			err := c.Validate()
			if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestRenderAndCommands(t *testing.T) {
	dir := t.TempDir()
	p := New(Config{Stanza: "demo", RepoPath: "/repo dir", Bin: "/usr/bin/pgbackrest",
		Options: map[string]string{"repo1-retention-full": "2"}},
		Target{DataDir: filepath.Join(dir, "pgdata"), Port: "5432", SocketDir: "/run/pg", User: "postgres", PassFile: "/data/s3cret.pgpass"}, nil)
	text := p.Render()
	for _, want := range []string{"[global]\n", "repo1-path=/repo dir\n", "repo1-retention-full=2\n",
		"\n[demo]\npg1-path=" + filepath.Join(dir, "pgdata") + "\npg1-port=5432\npg1-socket-path=/run/pg\npg1-user=postgres\n"} {
		if !strings.Contains(text, want) {
			t.Fatalf("config lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "s3cret") {
		t.Fatal("the password reached pgBackRest's config file")
	}
	if err := p.WriteConfig(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "pgdata.pgbackrest", "pgbackrest.conf"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config file: %v, mode %v, want 0600", err, fi.Mode())
	}
	if got, want := p.ArchiveCommand(), "/usr/bin/pgbackrest --config="+filepath.Join(dir, "pgdata.pgbackrest", "pgbackrest.conf")+
		` --stanza=demo archive-push "%p"`; got != want {
		t.Fatalf("archive_command %q, want %q", got, want)
	}
	if strings.Contains(text, "tls-server") {
		t.Fatalf("the main config carries the TLS server's settings:\n%s", text)
	}
	ps := New(Config{Stanza: "demo", RepoPath: "/r", Bin: "/usr/bin/pgbackrest",
		Server: ServerConfig{Listen: "pg1.example.net:8432", CAFile: "/ca.pem", CertFile: "/c.pem", KeyFile: "/k.pem"}},
		Target{DataDir: "/d"}, nil)
	if !ps.SetClients([]string{"pg2", "pg1"}) || ps.SetClients([]string{"pg1", "pg2"}) {
		t.Fatal("SetClients: a change not reported, or an unchanged set reported")
	}
	server := ps.RenderServer()
	for _, want := range []string{"tls-server-address=pg1.example.net\n", "tls-server-port=8432\n", "tls-server-ca-file=/ca.pem\n",
		"tls-server-cert-file=/c.pem\n", "tls-server-key-file=/k.pem\n", "tls-server-auth=pg1=demo\ntls-server-auth=pg2=demo\n"} {
		if !strings.Contains(server, want) {
			t.Fatalf("server config lacks %q:\n%s", want, server)
		}
	}
	if got := New(Config{Stanza: "demo", RepoPath: "/r", Bin: "/opt/pg backrest/bin", ConfigFile: "/etc/it's.conf"}, Target{DataDir: "/d"}, nil).
		RestoreCommand(); got != `'/opt/pg backrest/bin' '--config=/etc/it'\''s.conf' --stanza=demo archive-get %f "%p"` &&
		got != `'/opt/pg backrest/bin' --config='/etc/it'\''s.conf' --stanza=demo archive-get %f "%p"` {
		t.Fatalf("restore_command %q: quoting", got)
	}
}

func TestParseInfo(t *testing.T) {
	b, err := os.ReadFile("testdata/info.json")
	if err != nil {
		t.Fatal(err)
	}
	infos, err := ParseInfo(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 1 || infos[0].Name != "demo" || infos[0].Status != "ok" || len(infos[0].Backups) != 2 {
		t.Fatalf("ParseInfo = %+v", infos)
	}
	in := infos[0]
	if in.WALMin != "000000010000000000000001" || in.WALMax != "000000010000000000000007" {
		t.Fatalf("WAL range %s..%s", in.WALMin, in.WALMax)
	}
	incr := in.Backups[1]
	if incr.Type != "incr" || incr.Prior != "20261128-223000F" || incr.StopLSN != "0/5000100" ||
		!incr.Stop.Equal(time.Unix(1796164262, 0)) {
		t.Fatalf("incremental backup %+v", incr)
	}
	for _, bad := range []string{``, `{}`, `[{"name":""}]`, `[{"name":"x","backup":[{"label":""}]}]`, `[{"name":"x","backup":[{"label":3}]}]`} {
		if _, err := ParseInfo([]byte(bad)); err == nil {
			t.Errorf("ParseInfo(%q) accepted it", bad)
		}
	}
}

func FuzzParseInfo(f *testing.F) {
	b, err := os.ReadFile("testdata/info.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`[{"name":"x","archive":[{"database":{"id":1},"min":null}],"db":[{"id":1}]}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		infos, err := ParseInfo(b)
		if err != nil {
			return
		}
		for _, in := range infos {
			if in.Name == "" {
				t.Fatal("a stanza without a name was accepted")
			}
		}
	})
}
