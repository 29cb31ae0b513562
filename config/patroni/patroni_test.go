package patroni

import (
	"fmt"
	"os"
	"path/filepath"
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

func baseOptions() Options {
	return Options{Source: "patroni.yml", RaftAddr: "127.0.0.1:7001", DataDir: "/var/lib/raftgres", Token: "tok-secret",
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
		opts    func(*Options)
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
		{name: "permanent slots, ignore_slots and member_slots_ttl", patch: `bootstrap: {dcs: {member_slots_ttl: 30min,
  postgresql: {parameters: {wal_level: logical}},
  slots: {debezium: {type: logical, database: orders, plugin: pgoutput}, barman: {type: physical}, x: {type: physical, failover: true}},
  ignore_slots: [{name: manual}, {type: logical, plugin: wal2json}]}}`,
			want: map[string]string{"bootstrap/dcs/member_slots_ttl": "30m",
				"bootstrap/dcs/slots/debezium": "{type: logical, database: orders, plugin: pgoutput}",
				"bootstrap/dcs/slots/barman":   "{type: physical}",
				"bootstrap/dcs/ignore_slots":   "[{name: manual}, {type: logical, plugin: wal2json}]"},
			skipped: map[string]string{"bootstrap.dcs.slots.x.failover": "type, database and plugin"}},
		{name: "member_slots_ttl in seconds, hours, days", patch: "bootstrap: {dcs: {member_slots_ttl: 1800}}",
			want: map[string]string{"bootstrap/dcs/member_slots_ttl": "1800"}},
		{name: "member_slots_ttl in days", patch: "bootstrap: {dcs: {member_slots_ttl: 2d}}",
			want: map[string]string{"bootstrap/dcs/member_slots_ttl": "48h"}},
		{name: "member_slots_ttl not a duration", patch: "bootstrap: {dcs: {member_slots_ttl: soon}}",
			skipped: map[string]string{"bootstrap.dcs.member_slots_ttl": "must be a number of seconds"}},
		{name: "ignore_slots not a list of matches", patch: "bootstrap: {dcs: {ignore_slots: [{name: a, owner: b}]}}",
			skipped: map[string]string{"bootstrap.dcs.ignore_slots": "must be a list of"}},
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
		{name: "pre_promote and before_stop", patch: "postgresql: {pre_promote: /usr/local/bin/fence.sh --vip, before_stop: /usr/local/bin/drain.sh}",
			want: map[string]string{"postgresql/pre_promote": "/usr/local/bin/fence.sh --vip", "postgresql/before_stop": "/usr/local/bin/drain.sh"}},
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
		{name: "dynamic settings raftgres lacks", patch: "bootstrap: {dcs: {synchronous_node_count: 2, failsafe_mode: true, " +
			"check_timeline: true, postgresql: {recovery_conf: {restore_command: x}, pg_ident: [y]}}}",
			skipped: map[string]string{"bootstrap.dcs.synchronous_node_count": "keeps one synchronous standby", "bootstrap.dcs.failsafe_mode": "failsafe",
				"bootstrap.dcs.check_timeline": whyUnknown, "bootstrap.dcs.postgresql.recovery_conf": whyRecovery,
				"bootstrap.dcs.postgresql.pg_ident": whyIdent}},
		{name: "standby cluster", patch: "bootstrap: {dcs: {standby_cluster: {host: 'a,b', port: 5433, primary_slot_name: dr, " +
			"create_replica_methods: [basebackup], restore_command: 'cp %f %p', recovery_min_apply_delay: 60}}}",
			want: map[string]string{"bootstrap/dcs/standby_cluster/host": "a,b", "bootstrap/dcs/standby_cluster/port": "5433",
				"bootstrap/dcs/standby_cluster/primary_slot_name": "dr", "bootstrap/dcs/standby_cluster/restore_command": "cp %f %p"},
			skipped: map[string]string{"bootstrap.dcs.standby_cluster.recovery_min_apply_delay": "has host, port"}},
		{name: "quorum commit", patch: "bootstrap: {dcs: {synchronous_mode: quorum, synchronous_node_count: 2}}",
			want: map[string]string{"bootstrap/dcs/synchronous_mode": "quorum", "bootstrap/dcs/synchronous_node_count": "2"}},
		{name: "not a mode", patch: "bootstrap: {dcs: {synchronous_mode: maybe}}", want: map[string]string{"bootstrap": ""},
			skipped: map[string]string{"bootstrap.dcs.synchronous_mode": "must be true, false or quorum"}},
		{name: "a section that is not a mapping", patch: "tags: [nofailover]", skipped: map[string]string{"tags": "must be a mapping"}},
		{name: "keys without a value keep the defaults", patch: "postgresql: {bin_dir: null, parameters: null}\nwatchdog:",
			want: map[string]string{"postgresql/bin_dir": "", "postgresql/parameters": "", "watchdog": ""}},
		{name: "--member renames, advertise follows --peers", opts: func(o *Options) {
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
			opts := baseOptions()
			if tc.opts != nil {
				tc.opts(&opts)
			}
			src := mergePatroni(t, basePatroni, tc.patch)
			conv, err := Convert(src, opts)
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
				got[u.Path] = u.Why
				if u.Line <= 0 {
					t.Errorf("%s: no line", u.Path)
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
		opts      func(*Options)
		want      string
	}{
		{name: "not YAML", src: "scope: [demo", want: "patroni.yml: line 1: did not find expected ',' or ']'"},
		{name: "not a mapping", src: "- a\n- b\n", want: "not a Patroni config"},
		{name: "empty", src: "", want: "not a Patroni config"},
		{name: "no name", src: "scope: demo\n", want: "patroni.yml has no name: pass --member NAME"},
		{name: "member not a peer", src: basePatroni, opts: func(o *Options) { o.Member = "pg9" },
			want: "--peers must include this member (pg9)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := baseOptions()
			if tc.opts != nil {
				tc.opts(&opts)
			}
			_, err := Convert([]byte(tc.src), opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
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
	opts := baseOptions()
	opts.RaftAddr = "10.0.0.11:7001"
	opts.Peers = []raftstore.Peer{{ID: "pg1", Address: "10.0.0.11:7001"}, {ID: "pg2", Address: "10.0.0.12:7001"}}
	conv, err := Convert(src, opts)
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

// FuzzConvertPatroni: any input either is refused or converts into YAML
// the loader reads (perhaps with problems, never with a syntax error), and
// the keys not converted each have a line.
func FuzzConvertPatroni(f *testing.F) {
	f.Add(basePatroni)
	inputs, _ := filepath.Glob("testdata/*.yml")
	for _, in := range inputs {
		if raw, err := os.ReadFile(in); err == nil {
			f.Add(string(raw))
		}
	}
	f.Add("name: pg1\na: &x [*x]")
	f.Add("name: pg1\npostgresql: {parameters: {a: {b: c}}, pg_hba: [[x]], listen: '[::1]:5432'}")
	f.Add("name: pg1\nbootstrap: {initdb: [{}, {a: b, c: d}], users: {x: y}}\n<<: {a: b}")
	f.Add("name: pg1\n? [a]\n: b\nrestapi: {authentication: {password: {a: b}}}")
	f.Fuzz(func(t *testing.T, s string) {
		conv, err := Convert([]byte(s), baseOptions())
		if err != nil {
			return
		}
		for _, p := range config.Check("out.yml", conv.YAML, 0o600).Problems {
			if p.Path == "" {
				t.Fatalf("the output is not a config: %v\n%s", p, conv.YAML)
			}
		}
		for _, u := range conv.Skipped {
			if u.Line <= 0 {
				t.Errorf("%s: no line", u.Path)
			}
		}
	})
}
