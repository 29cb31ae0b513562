package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	"raftgres/config"
	"raftgres/raftstore"
)

// basePatroni is the smallest Patroni config that converts into a loadable
// raftgres config; each case merges its own keys into it.
const basePatroni = `scope: demo
name: pg1
restapi:
  listen: 127.0.0.1:8008
  connect_address: 127.0.0.1:8008
postgresql:
  listen: 127.0.0.1:5432
  connect_address: 127.0.0.1:5432
  data_dir: /var/lib/postgresql/15/main
  authentication:
    superuser: {username: postgres, password: su-pw}
    replication: {username: replicator, password: repl-pw}
`

func baseConvertOptions() convertOptions {
	return convertOptions{Source: "patroni.yml", RaftAddr: "127.0.0.1:7001", DataDir: "/var/lib/raftgres", Token: "tok-secret",
		Peers: []raftstore.Peer{{ID: "pg1", Address: "127.0.0.1:7001"}, {ID: "pg2", Address: "127.0.0.1:7002"},
			{ID: "pg3", Address: "127.0.0.1:7003"}}}
}

// mergePatroni merges the mapping patch into base (patch wins) and returns
// the YAML text.
func mergePatroni(t *testing.T, base, patch string) []byte {
	t.Helper()
	var b, p yaml.Node
	if err := yaml.Unmarshal([]byte(base), &b); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal([]byte(patch), &p); err != nil {
		t.Fatalf("patch: %v", err)
	}
	if len(p.Content) > 0 {
		mergeNodes(b.Content[0], p.Content[0])
	}
	out, err := yaml.Marshal(b.Content[0])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mergeNodes(dst, src *yaml.Node) {
	for i := 0; i+1 < len(src.Content); i += 2 {
		k, v := src.Content[i], src.Content[i+1]
		if d := lookupNode(dst, k.Value); d != nil && d.Kind == yaml.MappingNode && v.Kind == yaml.MappingNode {
			mergeNodes(d, v)
			continue
		}
		replaced := false
		for j := 0; j+1 < len(dst.Content); j += 2 {
			if dst.Content[j].Value == k.Value {
				dst.Content[j+1], replaced = v, true
			}
		}
		if !replaced {
			dst.Content = append(dst.Content, k, v)
		}
	}
}

// outText is the value at the "/"-separated path of a converted config:
// a scalar's value, [a, b] for a list, {k: v} for a mapping; "" if absent.
func outText(t *testing.T, out []byte, path string) string {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal(out, &doc); err != nil {
		t.Fatalf("output is not YAML: %v\n%s", err, out)
	}
	n := doc.Content[0]
	for _, k := range strings.Split(path, "/") {
		if n = lookupNode(n, k); n == nil {
			return ""
		}
	}
	return nodeText(n)
}

func nodeText(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		var items []string
		for _, c := range n.Content {
			items = append(items, nodeText(c))
		}
		return "[" + strings.Join(items, ", ") + "]"
	case yaml.MappingNode:
		var items []string
		for i := 0; i+1 < len(n.Content); i += 2 {
			items = append(items, n.Content[i].Value+": "+nodeText(n.Content[i+1]))
		}
		return "{" + strings.Join(items, ", ") + "}"
	}
	return n.Value
}

func TestConvertPatroniMappings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		patch   string
		opts    func(*convertOptions)
		want    map[string]string // output path ("/"-separated) → text; "" means absent
		skipped map[string]string // Patroni key → part of the reason
		invalid bool              // the result does not load (convert-patroni exits 1)
	}{
		{name: "base", want: map[string]string{"scope": "demo", "name": "pg1", "data_dir": "/var/lib/raftgres",
			"raft/listen": "127.0.0.1:7001", "raft/advertise": "", "raft/token": "tok-secret",
			"raft/bootstrap_peers": "[pg1=127.0.0.1:7001, pg2=127.0.0.1:7002, pg3=127.0.0.1:7003]",
			"restapi/listen":       "127.0.0.1:8008", "restapi/connect_address": "127.0.0.1:8008",
			"postgresql/listen": "127.0.0.1:5432", "postgresql/data_dir": "/var/lib/postgresql/15/main",
			"postgresql/authentication/superuser": "{username: postgres, password: su-pw}", "bootstrap": "", "log": ""}},
		{name: "restapi authentication, certfile and keyfile",
			patch: "restapi: {authentication: {username: adm, password: 'a:b'}, certfile: /c.pem, keyfile: /k.pem}",
			want: map[string]string{"restapi/authentication": "{username: adm, password: a:b}",
				"restapi/tls": "{cert_file: /c.pem, key_file: /k.pem}", "restapi/certfile": ""}},
		{name: "bootstrap.dcs", patch: `bootstrap: {dcs: {ttl: 20, loop_wait: 5, retry_timeout: 5, maximum_lag_on_failover: 1000,
  synchronous_mode: true, synchronous_mode_strict: "yes", postgresql: {use_pg_rewind: on, use_slots: false,
  parameters: {max_connections: 200, hot_standby: "on", pg_stat_statements.track: all}}}}`,
			want: map[string]string{"bootstrap/dcs/ttl": "20", "bootstrap/dcs/loop_wait": "5", "bootstrap/dcs/retry_timeout": "5",
				"bootstrap/dcs/maximum_lag_on_failover": "1000", "bootstrap/dcs/synchronous_mode": "true",
				"bootstrap/dcs/synchronous_mode_strict": "true", "bootstrap/dcs/postgresql/use_pg_rewind": "true",
				"bootstrap/dcs/postgresql/use_slots":  "false",
				"bootstrap/dcs/postgresql/parameters": "{max_connections: 200, hot_standby: on, pg_stat_statements.track: all}"}},
		{name: "initdb options raftgres allows", patch: "bootstrap: {initdb: [{encoding: UTF8}, data-checksums, {auth-local: trust}, [x]]}",
			want:    map[string]string{"bootstrap/initdb": "[{encoding: UTF8}, data-checksums]"},
			skipped: map[string]string{"bootstrap.initdb[2]": "passes --username, --pwfile and --auth", "bootstrap.initdb[3]": "must be an option name"}},
		{name: "bootstrap.pg_hba", patch: "bootstrap: {pg_hba: [host all all 10.0.0.0/8 md5]}",
			want: map[string]string{"bootstrap/pg_hba": "[host all all 10.0.0.0/8 md5]"}},
		{name: "postgresql.pg_hba replaces bootstrap.pg_hba",
			patch:   "bootstrap: {pg_hba: [host all all 10.0.0.0/8 md5]}\npostgresql: {pg_hba: [local all all peer, host all all 10.0.0.0/24 scram-sha-256]}",
			want:    map[string]string{"bootstrap/pg_hba": "[local all all peer, host all all 10.0.0.0/24 scram-sha-256]", "postgresql/pg_hba": ""},
			skipped: map[string]string{"bootstrap.pg_hba": "postgresql.pg_hba (line "}},
		{name: "dcs pg_hba replaces bootstrap.pg_hba",
			patch:   "bootstrap: {pg_hba: [host all all 10.0.0.0/8 md5], dcs: {postgresql: {pg_hba: [host all all 10.0.0.0/24 md5]}}}",
			want:    map[string]string{"bootstrap/pg_hba": "[host all all 10.0.0.0/24 md5]", "bootstrap/dcs/postgresql/pg_hba": ""},
			skipped: map[string]string{"bootstrap.pg_hba": "bootstrap.dcs.postgresql.pg_hba (line "}},
		{name: "the same pg_hba twice", patch: "bootstrap: {pg_hba: [host all all 10.0.0.0/8 md5]}\npostgresql: {pg_hba: [host all all 10.0.0.0/8 md5]}",
			want: map[string]string{"bootstrap/pg_hba": "[host all all 10.0.0.0/8 md5]"}},
		{name: "users", patch: "bootstrap: {users: {app: {password: app-pw, options: [login, createdb]}}}",
			want: map[string]string{"bootstrap/users/app": "{password: app-pw, options: [login, createdb]}"}},
		{name: "listen on every address", patch: "postgresql: {listen: '*:5433'}", want: map[string]string{"postgresql/listen": "0.0.0.0:5433"}},
		{name: "bin_dir, rewind credentials and callbacks",
			patch: "postgresql: {bin_dir: /usr/lib/postgresql/16/bin, authentication: {rewind: {username: rw, password: rw-pw, sslmode: require}}, " +
				"callbacks: {on_start: /s, on_stop: /t, on_role_change: /r, on_restart: /x}}",
			want: map[string]string{"postgresql/bin_dir": "/usr/lib/postgresql/16/bin", "postgresql/authentication/rewind": "{username: rw, password: rw-pw}",
				"postgresql/callbacks": "{on_start: /s, on_stop: /t, on_role_change: /r}"},
			skipped: map[string]string{"postgresql.authentication.rewind.sslmode": "no TLS or other libpq options",
				"postgresql.callbacks.on_restart": "no such callback here"}},
		{name: "create_replica_methods", patch: "postgresql: {create_replica_methods: [wal_e, pgbackrest, basebackup], wal_e: {command: x}, pgbackrest: {command: y}}",
			want: map[string]string{"postgresql/create_replica_methods": "[basebackup]", "postgresql/wal_e": ""},
			skipped: map[string]string{"postgresql.create_replica_methods[0]": "no such method here",
				"postgresql.create_replica_methods[1]": "backup: section, which is not converted",
				"postgresql.wal_e":                     "custom replica commands are not supported",
				"postgresql.pgbackrest":                "custom replica commands are not supported"}},
		{name: "only pgbackrest: raftgres's default", patch: "postgresql: {create_replica_methods: [pgbackrest]}",
			want:    map[string]string{"postgresql/create_replica_methods": ""},
			skipped: map[string]string{"postgresql.create_replica_methods[0]": "backup: section"}},
		{name: "parameters raftgres sets", patch: "postgresql: {parameters: {work_mem: 8MB, listen_addresses: '*', port: 5433, hba_file: /h, " +
			"config_file: /c, unix_socket_directories: /tmp, cluster_name: x, primary_conninfo: y, synchronous_standby_names: '*', Restore_Command: z}}",
			want: map[string]string{"postgresql/parameters": "{work_mem: 8MB}"},
			skipped: map[string]string{"postgresql.parameters.listen_addresses": "set by raftgres from postgresql.listen",
				"postgresql.parameters.port": "set by raftgres from postgresql.listen", "postgresql.parameters.hba_file": "manages pg_hba.conf",
				"postgresql.parameters.config_file": "manages postgresql.conf", "postgresql.parameters.unix_socket_directories": "own socket directory",
				"postgresql.parameters.cluster_name": "from scope", "postgresql.parameters.primary_conninfo": "replication and recovery",
				"postgresql.parameters.synchronous_standby_names": "commit gate", "postgresql.parameters.Restore_Command": "replication and recovery"}},
		{name: "tags", patch: "tags: {nofailover: yes, noloadbalance: 'off', clonefrom: true, nosync: false, failover_priority: 0, replicatefrom: pg2, zone: a}",
			want:    map[string]string{"tags": "{nofailover: true, noloadbalance: false, clonefrom: true, nosync: false, failover_priority: 0}"},
			skipped: map[string]string{"tags.replicatefrom": "cascading replication is not supported", "tags.zone": "no such tag here"}},
		{name: "watchdog", patch: "bootstrap: {dcs: {ttl: 30}}\nwatchdog: {mode: automatic, device: /dev/watchdog1, safety_margin: 5, driver: default}",
			want:    map[string]string{"watchdog": "{mode: automatic, device: /dev/watchdog1}"},
			skipped: map[string]string{"watchdog.safety_margin": "from bootstrap.dcs.ttl", "watchdog.driver": "no such setting"}},
		{name: "watchdog off as a YAML 1.1 boolean", patch: "watchdog: {mode: off}", want: map[string]string{"watchdog/mode": "off"}},
		{name: "watchdog mode unknown", patch: "watchdog: {mode: always}", want: map[string]string{"watchdog": ""},
			skipped: map[string]string{"watchdog.mode": "must be off, automatic or required"}},
		{name: "log WARNING", patch: "log: {level: WARNING, format: '%(message)s', dir: /var/log/patroni}", want: map[string]string{"log": "{level: warn}"},
			skipped: map[string]string{"log.format": "text or json", "log.dir": "logs to stderr"}},
		{name: "log CRITICAL", patch: "log: {level: CRITICAL}", want: map[string]string{"log/level": "error"}},
		{name: "log Debug", patch: "log: {level: Debug}", want: map[string]string{"log/level": "debug"}},
		{name: "log NOTSET", patch: "log: {level: NOTSET}", want: map[string]string{"log": ""},
			skipped: map[string]string{"log.level": "must be DEBUG, INFO, WARNING, ERROR or CRITICAL"}},
		{name: "local use_pg_rewind overrides the dynamic one",
			patch: "bootstrap: {dcs: {postgresql: {use_pg_rewind: true}}}\npostgresql: {use_pg_rewind: false, use_slots: false}",
			want:  map[string]string{"bootstrap/dcs/postgresql/use_pg_rewind": "false", "postgresql/use_pg_rewind": ""},
			skipped: map[string]string{"bootstrap.dcs.postgresql.use_pg_rewind": "postgresql.use_pg_rewind (line ",
				"postgresql.use_slots": "Patroni ignores it here too"}},
		{name: "DCS sections", patch: "etcd: {host: h:2379}\netcd3: {hosts: [h:2379], password: etcd-pw}\nconsul: {host: h}\n" +
			"zookeeper: {hosts: [h]}\nkubernetes: {labels: {a: b}}\nexhibitor: {hosts: [h], port: 8181}\nraft: {self_addr: h:2222, password: raft-pw}",
			skipped: map[string]string{"etcd": whyOwnStore, "etcd3": whyOwnStore, "consul": whyOwnStore, "zookeeper": whyOwnStore,
				"kubernetes": whyOwnStore, "exhibitor": whyOwnStore, "raft": whyOwnStore}},
		{name: "custom bootstrap method", patch: "bootstrap: {method: clone, clone: {command: /restore.sh, no_params: true}, post_init: /x.sh}",
			want: map[string]string{"bootstrap/method": "", "bootstrap/clone": ""},
			skipped: map[string]string{"bootstrap.method": whyCustomBoot, "bootstrap.clone": whyCustomBoot,
				"bootstrap.post_init": "no post-bootstrap script"}},
		{name: "bootstrap.method initdb", patch: "bootstrap: {method: initdb}", want: map[string]string{"bootstrap": ""}},
		{name: "Patroni-only keys", patch: "namespace: /service/\nctl: {insecure: true}\ncitus: {database: c, group: 0}\n" +
			"restapi: {keyfile_password: kp-secret, cafile: /ca, allowlist: [10.0.0.0/8], ciphers: x}\n" +
			"postgresql: {pgpass: /tmp/p, use_unix_socket: true, use_unix_socket_repl: true, config_dir: /etc/pg, pg_ident: [x], basebackup: {checkpoint: fast}}",
			skipped: map[string]string{"namespace": "no namespace", "ctl": "-c FILE", "citus": "Citus", "restapi.keyfile_password": "encrypted private keys",
				"restapi.cafile": "client certificates", "restapi.allowlist": "firewall", "restapi.ciphers": whyUnknown,
				"postgresql.pgpass":               "raftgres writes its own 0600 pgpass beside the data directory",
				"postgresql.use_unix_socket":      "its own socket directory for local connections",
				"postgresql.use_unix_socket_repl": "its own socket directory for local connections",
				"postgresql.config_dir":           "in the data directory", "postgresql.pg_ident": whyIdent, "postgresql.basebackup": "its own options"}},
		{name: "dynamic settings raftgres lacks", patch: "bootstrap: {dcs: {synchronous_node_count: 2, failsafe_mode: true, standby_cluster: {host: h}, " +
			"slots: {s: {type: physical}}, check_timeline: true, postgresql: {recovery_conf: {restore_command: x}, pg_ident: [y]}}}",
			skipped: map[string]string{"bootstrap.dcs.synchronous_node_count": "one synchronous standby", "bootstrap.dcs.failsafe_mode": "failsafe",
				"bootstrap.dcs.standby_cluster": "standby clusters", "bootstrap.dcs.slots": "permanent replication slots",
				"bootstrap.dcs.check_timeline": whyUnknown, "bootstrap.dcs.postgresql.recovery_conf": whyRecovery,
				"bootstrap.dcs.postgresql.pg_ident": whyIdent}},
		{name: "not a boolean", patch: "bootstrap: {dcs: {synchronous_mode: quorum}}", want: map[string]string{"bootstrap": ""},
			skipped: map[string]string{"bootstrap.dcs.synchronous_mode": "must be true or false"}},
		{name: "a section that is not a mapping", patch: "tags: [nofailover]", skipped: map[string]string{"tags": "must be a mapping"}},
		{name: "keys without a value keep the defaults", patch: "postgresql: {bin_dir: null, parameters: null}\nwatchdog:",
			want: map[string]string{"postgresql/bin_dir": "", "postgresql/parameters": "", "watchdog": ""}},
		{name: "--member renames, advertise follows --peers", opts: func(o *convertOptions) {
			o.Member, o.RaftAddr = "db1", "0.0.0.0:7001"
			o.Peers[0].ID = "db1"
		}, want: map[string]string{"name": "db1", "raft/listen": "0.0.0.0:7001", "raft/advertise": "127.0.0.1:7001"}},
		{name: "several listen addresses", patch: "postgresql: {listen: '127.0.0.1,10.0.0.1:5432'}", invalid: true,
			want:    map[string]string{"postgresql/listen": ""},
			skipped: map[string]string{"postgresql.listen": "raftgres listens on one address"}},
		{name: "relative data directory", patch: "postgresql: {data_dir: data/pg0}", invalid: true,
			want: map[string]string{"postgresql/data_dir": "data/pg0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := baseConvertOptions()
			if tc.opts != nil {
				tc.opts(&opts)
			}
			src := mergePatroni(t, basePatroni, tc.patch)
			conv, err := convertPatroni(src, opts)
			if err != nil {
				t.Fatal(err)
			}
			for path, want := range tc.want {
				if got := outText(t, conv.YAML, path); got != want {
					t.Errorf("%s = %q, want %q", path, got, want)
				}
			}
			got := map[string]string{}
			for _, u := range conv.Skipped {
				got[u.path] = u.why
				if u.line <= 0 {
					t.Errorf("%s: no line", u.path)
				}
			}
			for path, why := range tc.skipped {
				if !strings.Contains(got[path], why) {
					t.Errorf("%s: not converted because %q, want %q", path, got[path], why)
				}
			}
			for path := range got {
				if _, ok := tc.skipped[path]; !ok {
					t.Errorf("%s: unexpectedly not converted: %s", path, got[path])
				}
			}
			problems := config.Check("out.yml", conv.YAML, 0o600).Problems
			if (len(problems) > 0) != tc.invalid {
				t.Errorf("problems %v, want invalid=%v; output:\n%s", problems, tc.invalid, conv.YAML)
			}
		})
	}
}

func TestConvertPatroniRefusesInput(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, src string
		opts      func(*convertOptions)
		want      string
	}{
		{name: "not YAML", src: "scope: [demo", want: "patroni.yml: line 1: did not find expected ',' or ']'"},
		{name: "not a mapping", src: "- a\n- b\n", want: "not a Patroni config"},
		{name: "empty", src: "", want: "not a Patroni config"},
		{name: "no name", src: "scope: demo\n", want: "patroni.yml has no name: pass --member NAME"},
		{name: "member not a peer", src: basePatroni, opts: func(o *convertOptions) { o.Member = "pg9" },
			want: "--peers must include this member (pg9)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := baseConvertOptions()
			if tc.opts != nil {
				tc.opts(&opts)
			}
			_, err := convertPatroni([]byte(tc.src), opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

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
			f.Source, f.TokenFile, f.DataDir = filepath.Join("testdata", g.input+".yml"), tokenFile, valueOr(f.DataDir, "/var/lib/raftgres")
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

// TestConvertPatroniOutputLoads checks what the loader makes of the pg1
// conversion, key by key.
func TestConvertPatroniOutputLoads(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile("testdata/patroni-pg1.yml")
	if err != nil {
		t.Fatal(err)
	}
	opts := baseConvertOptions()
	opts.RaftAddr = "10.0.0.11:7001"
	opts.Peers = []raftstore.Peer{{ID: "pg1", Address: "10.0.0.11:7001"}, {ID: "pg2", Address: "10.0.0.12:7001"}}
	conv, err := convertPatroni(src, opts)
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse("converted.yml", conv.YAML, 0o600)
	if err != nil {
		t.Fatalf("%v\n%s", err, conv.YAML)
	}
	for _, ck := range []struct {
		what      string
		got, want any
	}{
		{"scope", c.Scope, "orders"},
		{"name", c.Name, "pg1"},
		{"raft dir", c.Raft.Dir, "/var/lib/raftgres/raft"},
		{"raft token", c.API.Token.Reveal(), "tok-secret"},
		{"api user", c.API.Username, "patroni"},
		{"api password", c.API.Password.Reveal(), "rest-S3cret!"},
		{"api tls", c.API.TLS.CertFile + " " + c.API.TLS.KeyFile, "/etc/patroni/tls/pg1.pem /etc/patroni/tls/pg1-key.pem"},
		{"ttl", c.Cluster.TTL.String(), "30s"},
		{"loop_wait", c.Cluster.LoopWait.String(), "10s"},
		{"synchronous mode", c.Cluster.SynchronousMode, true},
		{"cluster parameters", c.Cluster.PostgreSQL.Parameters["max_connections"], "300"},
		{"pg listen", c.Postgres.Listen, "0.0.0.0:5432"},
		{"superuser password", c.Postgres.Superuser.Password.Reveal(), "super-S3cret"},
		{"rewind user", c.Postgres.Rewind.Username, "rewind_user"},
		{"local parameters", fmt.Sprint(c.Postgres.Parameters), "map[pg_stat_statements.track:all shared_preload_libraries:pg_stat_statements work_mem:16MB]"},
		{"pg_hba", len(c.Postgres.PgHba), 3},
		{"callbacks", c.Postgres.Callbacks.OnRoleChange, "/usr/local/bin/vip_switch.sh"},
		{"replica methods", fmt.Sprint(c.Postgres.ReplicaMethods), "[basebackup]"},
		{"initdb", fmt.Sprint(c.Postgres.Initdb), "[{encoding UTF8} {locale en_US.UTF-8} {data-checksums }]"},
		{"users", c.Postgres.Users["app"].Password.Reveal(), "app-S3cret"},
		{"tags", c.Tags, raftstore.Tags{CloneFrom: true, FailoverPriority: 2}},
		{"watchdog", c.Watchdog.Mode + " " + c.Watchdog.Device, "required /dev/watchdog"},
		{"log", c.Log, config.Log{Level: "warn", Format: "text"}},
	} {
		if !cmp.Equal(ck.got, ck.want) {
			t.Errorf("%s: %v, want %v", ck.what, ck.got, ck.want)
		}
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
			src := filepath.Join("testdata", g.input+".yml")
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
	good := convertFlags{Source: "testdata/patroni-pg1.yml", RaftAddr: "10.0.0.11:7001",
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
	if _, _, code := convert("testdata/patroni-relative.yml", "pg1", "10.0.0.11:7001"); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if _, err := os.Stat(tokenFile); err == nil {
		t.Fatal("a conversion that failed created the token file")
	}
	out1, stderr1, code := convert("testdata/patroni-pg1.yml", "", "10.0.0.11:7001")
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
	out2, stderr2, code := convert("testdata/patroni-pg1.yml", "pg2", "10.0.0.12:7001")
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
	if _, stderr3, code := convert("testdata/patroni-pg1.yml", "pg3", "10.0.0.13:7001"); code != 0 ||
		!strings.Contains(stderr3, "is readable by group or others (mode 0644)") {
		t.Errorf("exit %d, stderr %q", code, stderr3)
	}
}

// FuzzConvertPatroni: any input either is refused or converts into YAML
// the loader reads (perhaps with problems, never with a syntax error), and
// the keys not converted each have a line.
func FuzzConvertPatroni(f *testing.F) {
	f.Add(basePatroni)
	for _, g := range goldenConversions {
		if raw, err := os.ReadFile(filepath.Join("testdata", g.input+".yml")); err == nil {
			f.Add(string(raw))
		}
	}
	f.Add("name: pg1\na: &x [*x]")
	f.Add("name: pg1\npostgresql: {parameters: {a: {b: c}}, pg_hba: [[x]], listen: '[::1]:5432'}")
	f.Add("name: pg1\nbootstrap: {initdb: [{}, {a: b, c: d}], users: {x: y}}\n<<: {a: b}")
	f.Add("name: pg1\n? [a]\n: b\nrestapi: {authentication: {password: {a: b}}}")
	f.Fuzz(func(t *testing.T, s string) {
		conv, err := convertPatroni([]byte(s), baseConvertOptions())
		if err != nil {
			return
		}
		for _, p := range config.Check("out.yml", conv.YAML, 0o600).Problems {
			if p.Path == "" {
				t.Fatalf("the output is not a config: %v\n%s", p, conv.YAML)
			}
		}
		for _, u := range conv.Skipped {
			if u.line <= 0 {
				t.Errorf("%s: no line", u.path)
			}
		}
	})
}

func valueOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
