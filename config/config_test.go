package config

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"raftgres/api"
	"raftgres/pgmanager"
	"raftgres/raftstore"
)

// validConfig is testdata/valid.yml: a config that loads, naming every
// section (the CLI's tests use it too).
var validConfig = func() string {
	b, err := os.ReadFile("testdata/valid.yml")
	if err != nil {
		panic(err)
	}
	return string(b)
}()

func TestParseValidConfig(t *testing.T) {
	t.Parallel()
	c, err := Parse("pg1.yml", []byte(validConfig), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	wantRaft := raftstore.DefaultConfig()
	wantRaft.NodeID, wantRaft.Dir, wantRaft.Listen = "pg1", "/var/lib/raftgres/raft", "127.0.0.1:7001"
	wantRaft.BootstrapPeers = []raftstore.Peer{{ID: "pg1", Address: "127.0.0.1:7001"}, {ID: "pg2", Address: "127.0.0.1:7002"}, {ID: "pg3", Address: "127.0.0.1:7003"}}
	wantRaft.TLS = raftstore.TLSConfig{CAFile: "/etc/rg/ca.pem", CertFile: "/etc/rg/pg1.pem", KeyFile: "/etc/rg/pg1-key.pem"}
	wantRaft.HeartbeatTimeout, wantRaft.ElectionTimeout = 700*time.Millisecond, 800*time.Millisecond
	wantRaft.AuditKeyFile = "/etc/rg/audit.key"
	if diff := cmp.Diff(wantRaft, c.Raft); diff != "" {
		t.Errorf("raft (-want +got):\n%s", diff)
	}
	wantCluster := raftstore.DefaultClusterConfig()
	wantCluster.TTL, wantCluster.LoopWait, wantCluster.RetryTimeout = 20*time.Second, 500*time.Millisecond, 5*time.Second
	wantCluster.DetectionWindow = 600 * time.Millisecond
	wantCluster.SynchronousMode, wantCluster.PostgreSQL.UseSlots = true, false
	wantCluster.PostgreSQL.Parameters = map[string]string{"wal_keep_size": "1GB"}
	wantCluster.PostgreSQL.PgHba = []string{"host replication replicator 127.0.0.1/32 scram-sha-256"}
	if diff := cmp.Diff(wantCluster, c.Cluster); diff != "" {
		t.Errorf("cluster (-want +got):\n%s", diff)
	}
	wantAPI := api.Config{Listen: "127.0.0.1:8008", ConnectAddress: "127.0.0.1:8008", Username: "admin", Password: "admin-pw",
		Allowlist: []string{"10.0.0.0/24", "127.0.0.1", "::1", "2001:db8::/32"}, AllowlistIncludeMembers: true,
		Token: "cluster-token", PeerTLS: api.PeerTLS{CAFile: "/etc/rg/ca.pem", CertFile: "/etc/rg/pg1.pem", KeyFile: "/etc/rg/pg1-key.pem"}}
	if diff := cmp.Diff(wantAPI, c.API); diff != "" {
		t.Errorf("api (-want +got):\n%s", diff)
	}
	if !c.HasPostgres || c.Postgres.Parameters["max_connections"] != "200" || c.Postgres.Parameters["hot_standby_feedback"] != "on" ||
		c.Postgres.Replication.Password.Reveal() != "repl-pw" || c.Postgres.Callbacks.OnRoleChange != "/usr/local/bin/notify" ||
		c.Postgres.Users["app"].Password.Reveal() != "app-pw" ||
		!cmp.Equal(c.Postgres.Initdb, []pgmanager.InitdbOption{{Name: "encoding", Value: "UTF8"}, {Name: "data-checksums"}}) {
		t.Errorf("postgres: %#v", c.Postgres)
	}
	if want := (raftstore.Tags{NoFailover: true, CloneFrom: true, FailoverPriority: 3}); c.Tags != want {
		t.Errorf("tags %+v, want %+v", c.Tags, want)
	}
	if c.Log != (Log{Level: "debug", Format: "json"}) {
		t.Errorf("log %+v", c.Log)
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		out := fmt.Sprintf(verb, *c)
		for _, pw := range []string{"admin-pw", "super-pw", "repl-pw", "rewind-pw", "app-pw", "cluster-token"} {
			if strings.Contains(out, pw) {
				t.Errorf("%s of the config prints secret %q", verb, pw)
			}
		}
	}
}

func TestParseRestoreConfig(t *testing.T) {
	t.Parallel()
	y := strings.Replace(strings.Replace(validConfig, "  callbacks:", "  create_replica_methods: [pgbackrest, basebackup]\n  callbacks:", 1),
		"bootstrap:\n", "bootstrap:\n  method: pgbackrest\n  pgbackrest: {target_time: '2026-11-29T01:02:03Z', set: 20261128-230000F}\n", 1) +
		"backup: {stanza: main, repo_path: /var/lib/pgbackrest}\n"
	c, err := Parse("pg1.yml", []byte(y), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal(c.Postgres.ReplicaMethods, []string{"pgbackrest", "basebackup"}) || c.Postgres.BootstrapMethod != "pgbackrest" ||
		c.Postgres.RecoveryTarget != (pgmanager.RecoveryTarget{Time: "2026-11-29T01:02:03Z", Set: "20261128-230000F"}) {
		t.Errorf("methods %v, bootstrap %q, target %+v", c.Postgres.ReplicaMethods, c.Postgres.BootstrapMethod, c.Postgres.RecoveryTarget)
	}
	d, err := Parse("pg1.yml", []byte(validConfig), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal(d.Postgres.ReplicaMethods, []string{"basebackup"}) || d.Postgres.BootstrapMethod != "initdb" {
		t.Errorf("defaults: methods %v, bootstrap %q", d.Postgres.ReplicaMethods, d.Postgres.BootstrapMethod)
	}
}

// TestJoinThroughPeers: a member's config copied to a new host with only
// the name and addresses changed joins through the listed peers.
func TestJoinThroughPeers(t *testing.T) {
	t.Parallel()
	y := strings.NewReplacer("name: pg1", "name: pg4", "listen: 127.0.0.1:7001", "listen: 10.0.0.4:7001",
		"pg1=127.0.0.1:7001, pg2=127.0.0.1:7002, pg3=127.0.0.1:7003", "pg1=10.0.0.1:7001, pg2=10.0.0.2:7001, pg3=10.0.0.3:7001",
		"listen: 127.0.0.1:8008", "listen: 10.0.0.4:8008", "connect_address: 127.0.0.1:8008", "connect_address: 10.0.0.4:8008").Replace(validConfig)
	r := Check("pg4.yml", []byte(y), 0o600)
	if len(r.Problems) > 0 {
		t.Fatalf("problems: %v", r.Problems)
	}
	c := r.Config
	if want := []string{"http://10.0.0.1:8008", "http://10.0.0.2:8008", "http://10.0.0.3:8008"}; !cmp.Equal(c.Join, want) || len(c.Raft.BootstrapPeers) != 0 {
		t.Fatalf("join %v, bootstrap peers %v; want %v and none", c.Join, c.Raft.BootstrapPeers, want)
	}
	found := false
	for _, n := range r.Notes {
		found = found || strings.Contains(n.Error(), "raft.bootstrap_peers: this member (pg4) is not listed: it joins the existing cluster through http://10.0.0.1:8008")
	}
	if !found {
		t.Fatalf("no note about joining: %v", r.Notes)
	}
	// An explicit raft.join wins.
	y2 := strings.Replace(y, "token: cluster-token", "token: cluster-token\n  join: [10.0.0.2:8010]", 1)
	if r := Check("pg4.yml", []byte(y2), 0o600); len(r.Problems) > 0 || !cmp.Equal(r.Config.Join, []string{"10.0.0.2:8010"}) {
		t.Fatalf("explicit join: %v %v", r.Problems, r.Config)
	}
}

func TestParseConfigErrors(t *testing.T) {
	t.Parallel()
	replace := func(old, new string) string {
		if !strings.Contains(validConfig, old) {
			t.Fatalf("fixture lacks %q", old)
		}
		return strings.Replace(validConfig, old, new, 1)
	}
	for _, tc := range []struct {
		name string
		yaml string
		mode fs.FileMode
		want []string // substrings of the error, all required
	}{
		{"unknown top key", replace("scope: demo", "scope: demo\nscop: x"), 0o600, []string{"line 2: scop: unknown key (did you mean scope?)"}},
		{"unknown raft.tls key", replace("key_file: /etc/rg/pg1-key.pem}", "key_file: k, crt: x}"), 0o600,
			[]string{"line 8: raft.tls.crt: unknown key"}},
		{"unknown dcs.postgresql key", replace("use_slots: false,", "use_slot: false,"), 0o600,
			[]string{"bootstrap.dcs.postgresql.use_slot: unknown key (did you mean use_slots?)"}},
		{"/config-only keys in bootstrap.dcs", replace("    synchronous_mode: true\n", "    synchronous_mode: true\n    pause: true\n    version: 3\n    -: x\n"), 0o600,
			[]string{"line 37: bootstrap.dcs.pause: unknown key", "line 38: bootstrap.dcs.version: unknown key", "line 39: bootstrap.dcs.-: unknown key"}},
		{"pg_hba in bootstrap.dcs.postgresql", replace("use_slots: false,", "use_slots: false, pg_hba: [x],"), 0o600,
			[]string{"bootstrap.dcs.postgresql.pg_hba: unknown key"}},
		{"duplicate key", replace("name: pg1", "name: pg1\nname: pg2"), 0o600, []string{"line 3: name: key already defined at line 2"}},
		{"bad listen", replace("listen: 127.0.0.1:7001", "listen: nope"), 0o600, []string{"line 5: raft.listen: must be host:port"}},
		{"port out of range", replace("listen: 127.0.0.1:8008", "listen: 127.0.0.1:70000"), 0o600, []string{"restapi.listen: port must be 1-65535"}},
		{"advertise unspecified", replace("listen: 127.0.0.1:7001", "listen: 127.0.0.1:7001\n  advertise: 0.0.0.0:7001"), 0o600,
			[]string{"raft.advertise: needs a host that peers can reach"}},
		{"connect address without host", replace("connect_address: 127.0.0.1:8008", "connect_address: :8008"), 0o600,
			[]string{"restapi.connect_address: needs a host"}},
		{"bad duration", replace("ttl: 20", "ttl: soon"), 0o600, []string{"bootstrap.dcs.ttl: must be a duration"}},
		{"relative audit key", replace("audit_key_file: /etc/rg/audit.key", "audit_key_file: audit.key"), 0o600,
			[]string{"line 11: raft.audit_key_file: must be an absolute path"}},
		{"ttl too short", replace("ttl: 20", "ttl: 6"), 0o600, []string{"bootstrap.dcs.ttl: must be at least loop_wait + 2*retry_timeout"}},
		{"raft leader change outlasts the lease", replace("election_timeout: 800ms", "election_timeout: 6s"), 0o600,
			[]string{"raft: a Raft leader change can take up to 2·heartbeat_timeout + 2·election_timeout = 13.4s, more than the lease"}},
		{"election under heartbeat", replace("election_timeout: 800ms", "election_timeout: 100ms"), 0o600,
			[]string{"raft.election_timeout: must be at least the heartbeat timeout"}},
		{"detection window over ttl", replace("detection_window: 600ms", "detection_window: 30s"), 0o600,
			[]string{"bootstrap.dcs.detection_window: must be between 50ms and ttl (20s), got 30s"}},
		{"list where scalar", replace("name: pg1", "name: [pg1]"), 0o600, []string{"name: must be a single value"}},
		{"bad watchdog mode", replace("name: pg1", "name: pg1\nwatchdog: {mode: always}"), 0o600,
			[]string{"line 3: watchdog.mode: must be off, automatic or required"}},
		{"watchdog needs a longer ttl", strings.Replace(replace("ttl: 20", "ttl: 4"), "retry_timeout: 5", "retry_timeout: 1", 1) +
			"watchdog: {mode: required}\n", 0o600,
			[]string{"watchdog.mode: required needs a whole-second watchdog timeout"}},
		{"vip without a prefix length", replace("name: pg1", "name: pg1\nvip: {address: 10.0.0.10, interface: eth0}"), 0o600,
			[]string{"line 3: vip.address: must be an IPv4 address with its prefix length (10.0.0.10/24), got \"10.0.0.10\""}},
		{"vip without an interface", replace("name: pg1", "name: pg1\nvip: {address: 10.0.0.10/24}"), 0o600,
			[]string{"vip.interface: is required with address"}},
		{"vip on ipv6", replace("name: pg1", "name: pg1\nvip: {address: 'fd00::10/64', interface: eth0}"), 0o600,
			[]string{"vip.address: must be an IPv4 address"}},
		{"vip without an address", replace("name: pg1", "name: pg1\nvip: {interface: eth0}"), 0o600,
			[]string{"vip.address: is required in vip:"}},
		{"malformed peer", replace("pg2=127.0.0.1:7002", "pg2"), 0o600, []string{"raft.bootstrap_peers[1]: must be name=host:port"}},
		{"duplicate peer", replace("pg3=127.0.0.1:7003", "pg2=127.0.0.1:7004"), 0o600, []string{"member \"pg2\" already listed"}},
		{"both join and peers", replace("token: cluster-token", "token: cluster-token\n  join: [127.0.0.1:8009]"), 0o600,
			[]string{"raft.join: set only one"}},
		{"no token, no tls", replace("  token: cluster-token\n", ""), 0o600, []string{"raft.token: is required"}},
		{"passwords world readable", validConfig, 0o644, []string{"readable by group or others (mode 0644): run chmod 600 pg1.yml"}},
		{"passwords group readable", validConfig, 0o640, []string{"chmod 600"}},
		{"bad initdb option", replace("data-checksums]", "data-checksums, username=x]"), 0o600, []string{"bootstrap.initdb[2]: initdb option"}},
		{"bad parameter name", replace("shared_buffers: 256MB", "shared-buffers: 256MB"), 0o600, []string{"postgresql.parameters.shared-buffers"}},
		{"several problems at once", replace("log: {level: debug, format: json}", "log: {level: loud, format: xml}"), 0o600,
			[]string{"2 problems", "log.level", "log.format"}},
		{"empty file", "", 0o600, []string{"empty file"}},
		{"negative hook timeout", replace("  callbacks:", "  before_stop: /bin/true\n  before_stop_timeout: -1s\n  callbacks:"), 0o600,
			[]string{"postgresql.before_stop_timeout: duration \"-1s\" must not be negative"}},
		{"pre_promote_timeout past the lease", replace("  callbacks:", "  pre_promote: /bin/true\n  pre_promote_timeout: 15s\n  callbacks:"), 0o600,
			[]string{"postgresql.pre_promote_timeout: 15s is not shorter than the lease (bootstrap.dcs.ttl − ttl/3 = 13.333s)"}},
		{"unknown replica method", replace("  callbacks:", "  create_replica_methods: [wal_e, basebackup]\n  callbacks:"), 0o600,
			[]string{"postgresql.create_replica_methods[0]: must be pgbackrest or basebackup, got \"wal_e\""}},
		{"pgbackrest replicas without backup:", replace("  callbacks:", "  create_replica_methods: [pgbackrest, basebackup]\n  callbacks:"), 0o600,
			[]string{"postgresql.create_replica_methods: pgbackrest needs the backup: section"}},
		{"unknown bootstrap method", replace("bootstrap:\n", "bootstrap:\n  method: wal_g\n"), 0o600,
			[]string{"bootstrap.method: must be initdb or pgbackrest, got \"wal_g\""}},
		{"restore target without pgbackrest", replace("bootstrap:\n", "bootstrap:\n  pgbackrest: {target_lsn: 0/3000060}\n"), 0o600,
			[]string{"bootstrap.pgbackrest: is used only with bootstrap.method: pgbackrest"}},
		{"restore target time without offset", replace("bootstrap:\n", "bootstrap:\n  method: pgbackrest\n  pgbackrest: {target_time: '2026-11-29 01:02:03'}\n") +
			"backup: {stanza: main, repo_path: /var/lib/pgbackrest}\n", 0o600,
			[]string{"bootstrap.pgbackrest.target_time: must be a time with a UTC offset"}},
		{"two restore targets", replace("bootstrap:\n", "bootstrap:\n  method: pgbackrest\n  pgbackrest: {target_lsn: 0/3000060, target_name: before}\n") +
			"backup: {stanza: main, repo_path: /var/lib/pgbackrest}\n", 0o600,
			[]string{"bootstrap.pgbackrest: set at most one of target_time, target_lsn and target_name"}},
		{"backup server without listen", validConfig + "backup: {stanza: main, repo_path: /r, server: {ca_file: /ca.pem}}\n", 0o600,
			[]string{"backup.server.listen: is required"}},
		{"unknown backup server key", validConfig + "backup: {stanza: main, repo_path: /r, server: {address: x}}\n", 0o600,
			[]string{"backup.server.address: unknown key"}},
		{"allowlist entry not an address", replace("127.0.0.1, \"::1\"", "127.0.0.1, db.example.net"), 0o600,
			[]string{"line 16: restapi.allowlist[2]: must be an IP address or a CIDR network such as 10.0.0.0/24 (host names are not accepted), got \"db.example.net\""}},
		{"allowlist bad prefix length", replace("10.0.0.0/24,", "10.0.0.0/24, 10.0.0.0/33,"), 0o600,
			[]string{"restapi.allowlist[1]: must be an IP address or a CIDR network", "got \"10.0.0.0/33\""}},
		{"allowlist entry with a port", replace("10.0.0.0/24,", "10.0.0.0/24, 10.0.0.1:8008,"), 0o600,
			[]string{"restapi.allowlist[1]: must be an IP address or a CIDR network"}},
		{"allowlist entry with a zone", replace("127.0.0.1, \"::1\"", "127.0.0.1, \"fe80::1%eth0\""), 0o600,
			[]string{"restapi.allowlist[2]: must not have an IPv6 zone"}},
		{"allowlist not a list", replace("allowlist: [10.0.0.0/24, 127.0.0.1, \"::1\", \"2001:db8::/32\"]", "allowlist: 10.0.0.0/24"), 0o600,
			[]string{"line 16: restapi.allowlist: must be a list"}},
		{"allowlist_include_members not a bool", replace("allowlist_include_members: true", "allowlist_include_members: sometimes"), 0o600,
			[]string{"line 17: restapi.allowlist_include_members: cannot unmarshal"}},
		{"allowlist key misspelt", replace("allowlist_include_members: true", "allowlist_include_member: true"), 0o600,
			[]string{"restapi.allowlist_include_member: unknown key (did you mean allowlist_include_members?)"}},
		{"ssl without key_file", replace("  callbacks:", "  ssl: {cert_file: /etc/rg/pg1.pem, ca_file: /etc/rg/ca.pem}\n  callbacks:"), 0o600,
			[]string{"line 28: postgresql.ssl.key_file: is required when ssl is set"}},
		{"empty ssl section", replace("  callbacks:", "  ssl: {}\n  callbacks:"), 0o600,
			[]string{"3 problems", "postgresql.ssl.cert_file: is required", "postgresql.ssl.key_file: is required", "postgresql.ssl.ca_file: is required"}},
		{"relative ssl path", replace("  callbacks:", "  ssl: {cert_file: pg1.pem, key_file: /etc/rg/pg1-key.pem, ca_file: /etc/rg/ca.pem}\n  callbacks:"), 0o600,
			[]string{`postgresql.ssl.cert_file: must be an absolute path, got "pg1.pem"`}},
		{"unknown ssl key", replace("  callbacks:", "  ssl: {cert_file: /c.pem, key_file: /k.pem, ca_file: /ca.pem, crl_file: /crl.pem}\n  callbacks:"), 0o600,
			[]string{"line 28: postgresql.ssl.crl_file: unknown key"}},
		{"ssl setting in parameters", strings.Replace(replace("  callbacks:", "  ssl: {cert_file: /c.pem, key_file: /k.pem, ca_file: /ca.pem}\n  callbacks:"),
			"hot_standby_feedback: on}", "hot_standby_feedback: on, ssl_cert_file: /x.pem}", 1), 0o600,
			[]string{"line 27: postgresql.parameters.ssl_cert_file: is set by raftgres from postgresql.ssl: remove it here"}},
		{"unknown restore key", replace("bootstrap:\n", "bootstrap:\n  method: pgbackrest\n  pgbackrest: {target: x}\n"), 0o600,
			[]string{"bootstrap.pgbackrest.target: unknown key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse("pg1.yml", []byte(tc.yaml), tc.mode)
			if err == nil {
				t.Fatalf("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			for _, pw := range []string{"admin-pw", "super-pw", "repl-pw", "cluster-token"} {
				if strings.Contains(err.Error(), pw) {
					t.Errorf("error leaks %q", pw)
				}
			}
		})
	}
}

// The hooks and their timeouts reach pgmanager; an unset timeout is
// left to pgmanager's default.
func TestParseHooks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, lines string
		want        pgmanager.Hooks
	}{
		{"unset", "", pgmanager.Hooks{}},
		{"set", "  pre_promote: /usr/local/bin/fence.sh --vip\n  pre_promote_timeout: 5s\n  before_stop: /bin/drain\n  before_stop_timeout: 1m\n",
			pgmanager.Hooks{PrePromote: "/usr/local/bin/fence.sh --vip", PrePromoteTimeout: 5 * time.Second,
				BeforeStop: "/bin/drain", BeforeStopTimeout: time.Minute}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := Parse("pg1.yml", []byte(strings.Replace(validConfig, "  callbacks:", tc.lines+"  callbacks:", 1)), 0o600)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, c.Postgres.Hooks); diff != "" {
				t.Errorf("hooks (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParsePostgresSSL(t *testing.T) {
	t.Parallel()
	y := strings.Replace(validConfig, "  callbacks:",
		"  ssl: {cert_file: /etc/rg/pg1.pem, key_file: /etc/rg/pg1-key.pem, ca_file: /etc/rg/ca.pem}\n  callbacks:", 1)
	c, err := Parse("pg1.yml", []byte(y), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	want := &pgmanager.SSL{CertFile: "/etc/rg/pg1.pem", KeyFile: "/etc/rg/pg1-key.pem", CAFile: "/etc/rg/ca.pem"}
	if diff := cmp.Diff(want, c.Postgres.SSL); diff != "" {
		t.Errorf("postgresql.ssl (-want +got):\n%s", diff)
	}
	for _, y := range []string{validConfig, strings.Replace(validConfig, "  callbacks:", "  ssl:\n  callbacks:", 1)} {
		c, err := Parse("pg1.yml", []byte(y), 0o600)
		if err != nil || c.Postgres.SSL != nil {
			t.Errorf("without postgresql.ssl: %+v, %v", c.Postgres.SSL, err)
		}
	}
}

func TestParseConfigNoPasswordsWorldReadable(t *testing.T) {
	t.Parallel()
	cfg := `scope: demo
name: pg1
data_dir: /var/lib/raftgres
raft:
  listen: 127.0.0.1:7001
  join: [127.0.0.1:8009]
  tls: {ca_file: /ca, cert_file: /c, key_file: /k}
restapi:
  listen: 127.0.0.1:8008
  tls: {cert_file: /api.pem, key_file: /api-key.pem}
`
	if _, err := Parse("x.yml", []byte(cfg), 0o644); err != nil {
		t.Fatalf("a config without passwords may be world readable: %v", err)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add(validConfig)
	f.Add("scope: [")
	f.Add("raft: {bootstrap_peers: [=, a=b]}")
	f.Add("bootstrap: {initdb: [{a: b, c: d}, [x]]}")
	f.Add("postgresql: {parameters: {a: {b: c}}}")
	f.Add("a: &x {b: *x}")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse("fuzz.yml", []byte(s), 0o600)
		if err != nil {
			return
		}
		if errs := c.validate(); len(errs) > 0 {
			t.Fatalf("accepted a config that does not validate: %v", errs)
		}
	})
}

// TestExampleConfigsLoad keeps examples/ valid: every agent config there
// loads (copied to a 0600 file, as users must install it), also with its
// commented PostgreSQL TLS lines in use.
func TestExampleConfigsLoad(t *testing.T) {
	paths, err := filepath.Glob("../examples/*-node/*.yml")
	if err != nil || len(paths) < 8 {
		t.Fatalf("example configs: %v %v", paths, err)
	}
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(t.TempDir(), "raftgres.yml")
		if err := os.WriteFile(dst, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(dst); err != nil {
			t.Errorf("%s: %v", p, err)
		}
		c, err := Parse(p, []byte(withExampleTLS(string(raw))), 0o600)
		if err != nil {
			t.Errorf("%s with its TLS lines: %v", p, err)
			continue
		}
		if c.Postgres.SSL == nil || len(c.Postgres.PgHba) != 4 || !strings.HasPrefix(c.Postgres.PgHba[0], "hostssl ") ||
			c.Postgres.PgHba[3] != "hostnossl all all all reject" {
			t.Errorf("%s with its TLS lines: ssl %+v, pg_hba %q", p, c.Postgres.SSL, c.Postgres.PgHba)
		}
	}
}

// withExampleTLS uncomments an example's postgresql.ssl and hostssl lines
// and drops the plain host lines they replace.
func withExampleTLS(raw string) string {
	var out []string
	for _, l := range strings.Split(raw, "\n") {
		switch {
		case strings.HasPrefix(l, "    - host "):
			continue
		case strings.HasPrefix(l, "  # ssl: "), strings.HasPrefix(l, "    # - host"):
			l = strings.Replace(l, "# ", "", 1)
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

// TestMemberNameNotGateName: a member name that PostgreSQL would take for
// the commit gate's (in any letter case) is refused, as this member's name
// and as a bootstrap peer's; names merely close to it are not.
func TestMemberNameNotGateName(t *testing.T) {
	t.Parallel()
	peers := "bootstrap_peers: [pg1=127.0.0.1:7001, pg2=127.0.0.1:7002, pg3=127.0.0.1:7003]"
	for _, tc := range []struct {
		name   string
		member string // replaces pg1 as the name and as the first peer
		peer3  string // replaces pg3 among the peers
		want   []string
	}{
		{"the gate's name", pgmanager.GateName, "pg3", []string{
			`name: "raftgres_fence" is reserved`,
			`raft.bootstrap_peers[0]: "raftgres_fence" is reserved`}},
		{"upper case", "RAFTGRES_FENCE", "pg3", []string{
			`name: "RAFTGRES_FENCE" is reserved: PostgreSQL would take a member of that name (in any letter case) for the commit gate "raftgres_fence"`,
			`raft.bootstrap_peers[0]: "RAFTGRES_FENCE" is reserved`}},
		{"mixed case", "RaftGres_Fence", "pg3", []string{`name: "RaftGres_Fence" is reserved`, `raft.bootstrap_peers[0]: "RaftGres_Fence" is reserved`}},
		{"another peer", "pg1", "Raftgres_fence", []string{`raft.bootstrap_peers[2]: "Raftgres_fence" is reserved`}},
		{"a longer name", "raftgres_fence2", "pg3", nil},
		{"a dash", "raftgres-fence", "pg3", nil},
		{"a prefix", "raftgres", "raftgres_fenc", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			y := strings.Replace(validConfig, "name: pg1", "name: "+tc.member, 1)
			y = strings.Replace(y, peers, strings.NewReplacer("pg1=", tc.member+"=", "pg3=", tc.peer3+"=").Replace(peers), 1)
			r := Check("pg1.yml", []byte(y), 0o600)
			var got []string
			for _, p := range r.Problems {
				got = append(got, p.Error())
			}
			if len(got) != len(tc.want) {
				t.Fatalf("problems %q, want %d", got, len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("problem %d:\n got %s\nwant %s", i, got[i], w)
				}
			}
			if _, err := Parse("pg1.yml", []byte(y), 0o600); (err != nil) != (len(tc.want) > 0) {
				t.Errorf("loading the agent's config: %v, want an error %v", err, len(tc.want) > 0)
			}
		})
	}
}

// TestGateMarginIsHalfFenceBudget: the commit gate stops replying
// FenceBudget/2 before the lease end (pgmanager cannot import raftstore,
// so it carries its own constant; cmd sees both).
func TestGateMarginIsHalfFenceBudget(t *testing.T) {
	t.Parallel()
	if pgmanager.GateMargin != raftstore.FenceBudget/2 {
		t.Fatalf("pgmanager.GateMargin = %s, want raftstore.FenceBudget/2 = %s", pgmanager.GateMargin, raftstore.FenceBudget/2)
	}
}
