package pgmanager

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/go-hclog"

	"raftgres/internal/testutil"
)

func sslTestConfig() Config {
	c := DefaultConfig()
	c.Listen, c.ConnectAddress, c.DataDir = "0.0.0.0:5433", "10.0.0.1:5433", "/data/pg"
	c.Superuser.Password, c.Replication.Password = "pw", "rpw"
	c.SSL = &SSL{CertFile: "/etc/rg/pg1.pem", KeyFile: "/etc/rg/pg1-key.pem", CAFile: "/etc/rg/ca.pem"}
	return c
}

func TestValidateSSL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		edit func(c *Config)
		want []string // substrings of the error, all required; none: valid
	}{
		{"valid", func(*Config) {}, nil},
		{"off", func(c *Config) { c.SSL = nil; c.Parameters = map[string]string{"ssl": "on"} }, nil},
		{"other ssl parameters stay the user's", func(c *Config) {
			c.Parameters = map[string]string{"ssl_min_protocol_version": "TLSv1.3", "ssl_ciphers": "HIGH"}
		}, nil},
		{"empty section", func(c *Config) { c.SSL = &SSL{} }, []string{
			"ssl.cert_file: is required when ssl is set", "ssl.key_file: is required", "ssl.ca_file: is required"}},
		{"one missing", func(c *Config) { c.SSL.CAFile = "" }, []string{"ssl.ca_file: is required when ssl is set"}},
		{"relative", func(c *Config) { c.SSL.KeyFile = "pg1-key.pem" }, []string{`ssl.key_file: must be an absolute path, got "pg1-key.pem"`}},
		{"line break", func(c *Config) { c.SSL.CertFile = "/etc/a\nb" }, []string{"ssl.cert_file: must be an absolute path"}},
		{"owned parameters", func(c *Config) {
			c.Parameters = map[string]string{"ssl": "off", "ssl_cert_file": "/x", "ssl_key_file": "/y", "ssl_ca_file": "/z", "work_mem": "8MB"}
		}, []string{"parameters.ssl: is set by raftgres from postgresql.ssl", "parameters.ssl_cert_file: is set by raftgres",
			"parameters.ssl_key_file: is set by raftgres", "parameters.ssl_ca_file: is set by raftgres"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := sslTestConfig()
			tc.edit(&c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if strings.Contains(err.Error(), "work_mem") {
				t.Errorf("work_mem refused: %v", err)
			}
		})
	}
}

func TestBuildSettingsWithSSL(t *testing.T) {
	t.Parallel()
	owned := map[string]string{"ssl": "on", "ssl_cert_file": "/etc/rg/pg1.pem", "ssl_key_file": "/etc/rg/pg1-key.pem", "ssl_ca_file": "/etc/rg/ca.pem"}
	for _, tc := range []struct {
		name    string
		ssl     bool
		local   map[string]string
		cluster map[string]string
		want    map[string]string // "" means unset
	}{
		{"on", true, nil, nil, owned},
		{"on, cluster parameters do not override", true, nil,
			map[string]string{"ssl": "off", "ssl_cert_file": "/other.pem", "ssl_ciphers": "HIGH"},
			map[string]string{"ssl": "on", "ssl_cert_file": "/etc/rg/pg1.pem", "ssl_ciphers": "HIGH"}},
		{"off", false, nil, nil, map[string]string{"ssl": "", "ssl_cert_file": "", "ssl_key_file": "", "ssl_ca_file": ""}},
		{"off, the user's own ssl settings", false, map[string]string{"ssl": "on"}, map[string]string{"ssl_cert_file": "/c.pem"},
			map[string]string{"ssl": "on", "ssl_cert_file": "/c.pem", "ssl_ca_file": ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := sslTestConfig()
			if !tc.ssl {
				cfg.SSL = nil
			}
			cfg.Parameters = tc.local
			m, err := New(cfg, "pg1", nil, Options{})
			if err != nil {
				t.Fatal(err)
			}
			got := m.BuildSettings(Desired{ClusterParams: tc.cluster})
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
			text := m.RenderManagedConf(Desired{ClusterParams: tc.cluster}).Text
			if tc.ssl && !strings.Contains(text, "\nssl_key_file = '/etc/rg/pg1-key.pem'\n") {
				t.Errorf("ssl_key_file not rendered:\n%s", text)
			}
		})
	}
}

func TestPeerConninfo(t *testing.T) {
	t.Parallel()
	up := Upstream{Name: "pg2", Host: "10.0.0.2", Port: 5433}
	for _, tc := range []struct {
		name string
		ssl  bool
		want string
	}{
		{"off", false, "application_name='pg1' connect_timeout='3' host='10.0.0.2' passfile='/data/pg.pgpass' port='5433' " +
			"sslmode='prefer' target_session_attrs='read-write' user='replicator'"},
		{"on", true, "application_name='pg1' connect_timeout='3' host='10.0.0.2' passfile='/data/pg.pgpass' port='5433' " +
			"sslcert='/etc/rg/pg1.pem' sslkey='/etc/rg/pg1-key.pem' sslmode='verify-full' sslrootcert='/etc/rg/ca.pem' " +
			"target_session_attrs='read-write' user='replicator'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := sslTestConfig()
			if !tc.ssl {
				cfg.SSL = nil
			}
			m, err := New(cfg, "pg1", nil, Options{})
			if err != nil {
				t.Fatal(err)
			}
			got := m.BuildSettings(Desired{Standby: &up})["primary_conninfo"]
			if got != tc.want {
				t.Fatalf("primary_conninfo\n got %s\nwant %s", got, tc.want)
			}
			if _, err := ParseConninfo(got); err != nil {
				t.Fatal(err)
			}
			// Every other connection to a member gets the same TLS keys; one
			// that asked for nothing gets nothing without postgresql.ssl.
			kv, err := ParseConninfo(m.peerConninfo(map[string]string{"host": "10.0.0.2", "user": "rewind_user"}))
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"host": "10.0.0.2", "user": "rewind_user"}
			if tc.ssl {
				want["sslmode"], want["sslrootcert"], want["sslcert"], want["sslkey"] = "verify-full", "/etc/rg/ca.pem", "/etc/rg/pg1.pem", "/etc/rg/pg1-key.pem"
			}
			if d := cmp.Diff(want, kv); d != "" {
				t.Fatalf("peer conninfo (-want +got):\n%s", d)
			}
		})
	}
}

func TestTLSHint(t *testing.T) {
	t.Parallel()
	on, err := New(sslTestConfig(), "pg1", nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := sslTestConfig()
	cfg.SSL = nil
	off, err := New(cfg, "pg1", nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		m    *Manager
		msg  string
		want string // substring of the hint; "" means no hint
	}{
		{"libpq host name", on, `connection to server at "10.0.0.2", port 5433 failed: server certificate for "pg2.example" does not match host name "10.0.0.2"`,
			`the certificate of pg2 must be signed by a CA in /etc/rg/ca.pem and carry "10.0.0.2"`},
		{"libpq unknown CA", on, "SSL error: certificate verify failed", "subject alternative name"},
		{"go unknown CA", on, "tls: failed to verify certificate: x509: certificate signed by unknown authority", "signed by a CA in /etc/rg/ca.pem"},
		{"go host", on, "x509: certificate is valid for 127.0.0.1, not 10.0.0.2", `carry "10.0.0.2"`},
		{"no TLS on the server", on, "server does not support SSL, but SSL was required", "pg2 does not serve TLS: every member needs postgresql.ssl"},
		{"pgx no TLS on the server", on, "server refused TLS connection", "pg2 does not serve TLS"},
		{"not about TLS", on, "password authentication failed for user \"replicator\"", ""},
		{"TLS off", off, "SSL error: certificate verify failed", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src := Upstream{Name: "pg2", Host: "10.0.0.2", Port: 5433}
			err := tc.m.withTLSHint(errors.New(tc.msg), src)
			if tc.want == "" {
				if err.Error() != tc.msg {
					t.Fatalf("hint added: %v", err)
				}
				return
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), tc.msg) {
				t.Fatalf("got %q, want it to start with the error and hold %q", err, tc.want)
			}
		})
	}
	if h := on.tlsHint(`FATAL:  could not connect to the primary server: SSL error: certificate verify failed`, "", ""); !strings.Contains(h, "the upstream") ||
		!strings.Contains(h, "the host of its postgresql.connect_address") {
		t.Fatalf("walreceiver hint %q", h)
	}
}

func TestCheckKeyFile(t *testing.T) {
	t.Parallel()
	const pgUID = 4242 // the PostgreSQL user, as seen by a root test
	for _, tc := range []struct {
		name  string
		owner int // -1: the test's own user, checked as the PostgreSQL user
		mode  os.FileMode
		want  string // substring of the error; "" means accepted
	}{
		{"own 0600", -1, 0o600, ""},
		{"own 0400", -1, 0o400, ""},
		{"own 0640", -1, 0o640, "is readable by group or others (mode 0640): PostgreSQL refuses such a key; run chmod 600"},
		{"own 0604", -1, 0o604, "run chmod 600"},
		{"root 0640", 0, 0o640, ""},
		{"root 0600", 0, 0o600, ""},
		{"root 0644", 0, 0o644, "is owned by root with mode 0644: PostgreSQL accepts at most 0640 then"},
		{"root 0660", 0, 0o660, "run chmod 640"},
		{"someone else's", 5151, 0o600, "is owned by uid 5151: PostgreSQL refuses a key not owned by its own user (uid 4242) or root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			uid := os.Geteuid()
			path := filepath.Join(t.TempDir(), "key.pem")
			if err := os.WriteFile(path, []byte("key"), 0o600); err != nil {
				t.Fatal(err)
			}
			if tc.owner >= 0 {
				if uid != 0 {
					t.Skip("changing a file's owner needs root")
				}
				uid = pgUID
				if err := os.Chown(path, tc.owner, 0); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			err := checkKeyFile(path, uid)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "postgresql.ssl.key_file: "+path) {
				t.Fatalf("got %v, want an error naming postgresql.ssl.key_file and holding %q", err, tc.want)
			}
		})
	}
	if err := checkKeyFile("/nonexistent/key.pem", 0); err == nil || !strings.Contains(err.Error(), "postgresql.ssl.key_file: ") {
		t.Fatalf("missing key: %v", err)
	}
}

func TestCheckSSLFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testutil.NewCA(t, dir, "ca", nil)
	other := testutil.NewCA(t, dir, "other", nil)
	ipCert, ipKey := ca.Issue(t, "pg1", testutil.CertOpts{IPs: []string{"10.0.0.1"}})
	dnsCert, dnsKey := ca.Issue(t, "pg1dns", testutil.CertOpts{DNS: []string{"pg1.example.net"}})
	cnCert, cnKey := ca.Issue(t, "10.0.0.1", testutil.CertOpts{}) // host only in the CN
	oldCert, oldKey := ca.Issue(t, "old", testutil.CertOpts{IPs: []string{"10.0.0.1"}, Expired: true})
	strangerCert, strangerKey := other.Issue(t, "pg1", testutil.CertOpts{IPs: []string{"10.0.0.1"}})
	loose := filepath.Join(dir, "loose-key.pem")
	data, _ := os.ReadFile(ipKey)
	if err := os.WriteFile(loose, data, 0o644); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		ssl     *SSL
		connect string
		want    string // substring of the error; "" means accepted
	}{
		{"ip SAN", &SSL{CertFile: ipCert, KeyFile: ipKey, CAFile: ca.File}, "10.0.0.1:5432", ""},
		{"dns SAN", &SSL{CertFile: dnsCert, KeyFile: dnsKey, CAFile: ca.File}, "pg1.example.net:5432", ""},
		{"off", nil, "10.0.0.9:5432", ""},
		{"another host", &SSL{CertFile: ipCert, KeyFile: ipKey, CAFile: ca.File}, "10.0.0.2:5432",
			`does not carry "10.0.0.2", the host of postgresql.connect_address, as a subject alternative name (it has DNS names [] and IP addresses [10.0.0.1])`},
		{"host only in the common name", &SSL{CertFile: cnCert, KeyFile: cnKey, CAFile: ca.File}, "10.0.0.1:5432", `does not carry "10.0.0.1"`},
		{"expired", &SSL{CertFile: oldCert, KeyFile: oldKey, CAFile: ca.File}, "10.0.0.1:5432", "expired"},
		{"another CA", &SSL{CertFile: strangerCert, KeyFile: strangerKey, CAFile: ca.File}, "10.0.0.1:5432",
			"postgresql.ssl.cert_file: " + strangerCert + " does not verify against ca_file " + ca.File},
		{"key of another certificate", &SSL{CertFile: dnsCert, KeyFile: ipKey, CAFile: ca.File}, "10.0.0.1:5432", "do not load as a pair"},
		{"loose key", &SSL{CertFile: ipCert, KeyFile: loose, CAFile: ca.File}, "10.0.0.1:5432", "run chmod 600 " + loose},
		{"missing key", &SSL{CertFile: ipCert, KeyFile: filepath.Join(dir, "none.pem"), CAFile: ca.File}, "10.0.0.1:5432",
			"postgresql.ssl.key_file: "},
		{"CA file without a certificate", &SSL{CertFile: ipCert, KeyFile: ipKey, CAFile: notPEM}, "10.0.0.1:5432",
			"postgresql.ssl.ca_file: " + notPEM + " holds no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := sslTestConfig()
			c.SSL, c.ConnectAddress = tc.ssl, tc.connect
			err := c.CheckSSLFiles(os.Geteuid())
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error holding %q", err, tc.want)
			}
		})
	}
}

func TestAutoConfSSLSettingsStripped(t *testing.T) {
	t.Parallel()
	auto := "# Do not edit\nwork_mem = '8MB'\nssl = 'off'\nssl_cert_file = '/x.pem'\nssl_ciphers = 'HIGH'\nprimary_conninfo = 'host=x'\n"
	for _, tc := range []struct {
		name string
		ssl  bool
		want string
	}{
		{"on", true, "# Do not edit\nwork_mem = '8MB'\nssl_ciphers = 'HIGH'\n"},
		{"off", false, "# Do not edit\nwork_mem = '8MB'\nssl = 'off'\nssl_cert_file = '/x.pem'\nssl_ciphers = 'HIGH'\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := sslTestConfig()
			cfg.DataDir = t.TempDir()
			if !tc.ssl {
				cfg.SSL = nil
			}
			m, err := New(cfg, "pg1", nil, Options{})
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(cfg.DataDir, autoConfFile)
			if err := os.WriteFile(path, []byte(auto), 0o600); err != nil {
				t.Fatal(err)
			}
			if stripped, err := m.sanitizeAutoConf(); err != nil || !stripped {
				t.Fatalf("stripped %v, %v", stripped, err)
			}
			got, _ := os.ReadFile(path)
			if string(got) != tc.want {
				t.Fatalf("auto.conf\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestNoteTLSLine(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	logger := hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Info})
	m, err := New(sslTestConfig(), "pg1", logger, Options{})
	if err != nil {
		t.Fatal(err)
	}
	const failed = `2026-11-29 01:02:03.000 UTC [42] FATAL:  could not connect to the primary server: connection to server at "10.0.0.2", ` +
		`port 5433 failed: server certificate for "pg2.example" does not match host name "10.0.0.2"`
	m.noteTLSLine(`2026-11-29 01:02:03.000 UTC [42] FATAL:  could not connect to the primary server: connection refused`)
	m.noteTLSLine(failed)
	m.noteTLSLine(failed) // within tlsHintEvery: not repeated
	if n := strings.Count(out.String(), "cannot connect to its upstream over TLS"); n != 1 {
		t.Fatalf("%d hints logged, want 1:\n%s", n, out.String())
	}
	m.tlsHintAt.Store(time.Now().Add(-tlsHintEvery).UnixNano())
	m.noteTLSLine(failed)
	if n := strings.Count(out.String(), "cannot connect to its upstream over TLS"); n != 2 {
		t.Fatalf("%d hints logged after tlsHintEvery, want 2:\n%s", n, out.String())
	}
}
