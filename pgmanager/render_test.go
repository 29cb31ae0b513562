package pgmanager

import (
	"strings"
	"testing"
)

func TestQuoteConfValue(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"plain", "'plain'"},
		{"", "''"},
		{"it's", "'it''s'"},
		{`C:\dir`, `'C:\\dir'`},
		{"two\nlines", `'two\nlines'`},
		{"nul\x00byte", "'nulbyte'"},
		{"host=a port=5432", "'host=a port=5432'"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if got := QuoteConfValue(tc.in); got != tc.want {
				t.Fatalf("QuoteConfValue(%q) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
}

func TestRenderConfStableAndSorted(t *testing.T) {
	t.Parallel()
	a := RenderConf("hdr", map[string]string{"b": "2", "a": "1"})
	b := RenderConf("hdr", map[string]string{"a": "1", "b": "2"})
	if a != b {
		t.Fatal("same settings rendered differently")
	}
	if want := "# hdr\na = '1'\nb = '2'\n"; a.Text != want {
		t.Fatalf("got %q, want %q", a.Text, want)
	}
	if c := RenderConf("hdr", map[string]string{"a": "1", "b": "3"}); c.Hash == a.Hash {
		t.Fatal("different settings, same hash")
	}
}

func TestConninfo(t *testing.T) {
	t.Parallel()
	got := Conninfo(map[string]string{"host": "h", "user": "o'brien", "password": "", "application_name": `a\b`})
	want := `application_name='a\\b' host='h' user='o\'brien'`
	if got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func testManager(t *testing.T) *Manager {
	t.Helper()
	m, err := New(Config{
		Listen: "0.0.0.0:5433", ConnectAddress: "10.0.0.1:5433", DataDir: "/data/pg", BinDir: pgBin,
		Superuser:   Credentials{Username: "postgres", Password: "pw"},
		Replication: Credentials{Username: "replicator", Password: "rpw"},
		Parameters: map[string]string{"work_mem": "8MB", "primary_conninfo": "host=evil", "wal_level": "minimal",
			"synchronous_standby_names": "evil"},
		PgHba: []string{"host replication replicator 10.0.0.0/8 scram-sha-256"},
	}, "pg1", nil, Options{Scope: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestBuildSettings(t *testing.T) {
	t.Parallel()
	m := testManager(t)
	for _, tc := range []struct {
		name string
		d    Desired
		want map[string]string
		gone []string
	}{
		{"primary", Desired{ClusterParams: map[string]string{"work_mem": "4MB", "max_connections": "200"}},
			map[string]string{"listen_addresses": "*", "port": "5433", "work_mem": "8MB", "max_connections": "200",
				"wal_level": "replica", "hot_standby": "on", "wal_log_hints": "on", "cluster_name": "demo",
				"hba_file": "/data/pg/pg_hba.conf", "unix_socket_directories": "/data/pg.run",
				"wal_retrieve_retry_interval": "500ms", "synchronous_standby_names": ""},
			[]string{"primary_conninfo", "primary_slot_name", "recovery_target_timeline"}},
		{"primary with the gate", Desired{SyncStandbyNames: `FIRST 2 ("raftgres_fence", "pg2")`},
			map[string]string{"synchronous_standby_names": `FIRST 2 ("raftgres_fence", "pg2")`}, nil},
		{"standby", Desired{Standby: &Upstream{Name: "pg2", Host: "10.0.0.2", Port: 5433}, Slot: "pg1"},
			map[string]string{"primary_slot_name": "pg1", "recovery_target_timeline": "latest",
				"primary_conninfo": "application_name='pg1' connect_timeout='3' host='10.0.0.2' passfile='/data/pg.pgpass' port='5433' sslmode='prefer' target_session_attrs='read-write' user='replicator'"},
			nil},
		{"standby leader of a source of two hosts", Desired{Standby: &Upstream{Name: "source", Host: "10.1.0.1,10.1.0.2", Port: 5432},
			Slot: "dr", RestoreCommand: "cp /arch/%f %p", Replica: true},
			map[string]string{"primary_slot_name": "dr", "restore_command": "cp /arch/%f %p",
				"primary_conninfo": "application_name='pg1' connect_timeout='3' host='10.1.0.1,10.1.0.2' passfile='/data/pg.pgpass' port='5432' sslmode='prefer' target_session_attrs='read-write' user='replicator'"},
			nil},
		{"cascade from a standby leader", Desired{Standby: &Upstream{Name: "pg2", Host: "10.0.0.2", Port: 5433, Cascade: true}},
			map[string]string{"primary_conninfo": "application_name='pg1' connect_timeout='3' host='10.0.0.2' passfile='/data/pg.pgpass' port='5433' sslmode='prefer' target_session_attrs='any' user='replicator'"},
			nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := m.BuildSettings(tc.d)
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
			for _, k := range tc.gone {
				if _, ok := got[k]; ok {
					t.Errorf("%s is set (%q) but must not be", k, got[k])
				}
			}
			text := m.RenderManagedConf(tc.d).Text
			if strings.Contains(text, "rpw") {
				t.Error("a password leaked into postgresql.conf")
			}
			if !strings.Contains(text, "\nsynchronous_standby_names = ") {
				t.Error("synchronous_standby_names not rendered")
			}
		})
	}
}

func TestBuildSettingsWithArchiving(t *testing.T) {
	t.Parallel()
	m := testManager(t)
	if got := m.BuildSettings(Desired{}); got["archive_mode"] != "" || got["restore_command"] != "" {
		t.Fatalf("archiving set without Options.Archive: %v", got)
	}
	m.archive = &Archive{Command: `pgbackrest archive-push "%p"`, RestoreCommand: `pgbackrest archive-get %f "%p"`}
	m.cfg.Parameters = map[string]string{"archive_mode": "off", "archive_command": "/bin/true"}
	for _, d := range []Desired{{}, {Standby: &Upstream{Name: "pg2", Host: "10.0.0.2", Port: 5433}}} {
		got := m.BuildSettings(d)
		if got["archive_mode"] != "on" || got["archive_command"] != m.archive.Command || got["restore_command"] != m.archive.RestoreCommand {
			t.Fatalf("standby %v: archive_mode %q, archive_command %q, restore_command %q", d.Standby != nil,
				got["archive_mode"], got["archive_command"], got["restore_command"])
		}
	}
}

func TestBuildSettingsForRecovery(t *testing.T) {
	t.Parallel()
	m := testManager(t)
	for _, tc := range []struct {
		target RecoveryTarget
		want   map[string]string
	}{
		{RecoveryTarget{}, map[string]string{}},
		{RecoveryTarget{Time: "2026-11-29 01:02:03.5+00"}, map[string]string{"recovery_target_time": "2026-11-29 01:02:03.5+00", "recovery_target_action": "promote"}},
		{RecoveryTarget{LSN: "0/3000060"}, map[string]string{"recovery_target_lsn": "0/3000060", "recovery_target_action": "promote"}},
		{RecoveryTarget{Name: "before-upgrade", Set: "20261129-010203F"}, map[string]string{"recovery_target_name": "before-upgrade", "recovery_target_action": "promote"}},
	} {
		got := m.BuildSettings(Desired{Recovery: &tc.target})
		for k := range recoveryParams {
			if k != "synchronous_standby_names" && got[k] != tc.want[k] {
				t.Errorf("target %s: %s = %q, want %q", tc.target, k, got[k], tc.want[k])
			}
		}
	}
}

func TestTargetTime(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"2026-11-29T01:02:03Z", "2026-11-29 01:02:03+00"},
		{"2026-11-29T02:02:03.25+01:00", "2026-11-29 01:02:03.25+00"},
		{"2026-11-29 01:02:03.123456+00", "2026-11-29 01:02:03.123456+00"},
		{"2026-11-29 03:02:03+02:00", "2026-11-29 01:02:03+00"},
		{"2026-11-29 01:02:03", ""},
		{"yesterday", ""},
	} {
		tm, err := ParseTargetTime(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("%q accepted as %v", tc.in, tm)
			}
			continue
		}
		if err != nil || FormatTargetTime(tm) != tc.want {
			t.Errorf("%q: %q, %v; want %q", tc.in, FormatTargetTime(tm), err, tc.want)
		}
	}
}

func TestRenderHBA(t *testing.T) {
	t.Parallel()
	got := testManager(t).RenderHBA().Text
	for _, want := range []string{"local all postgres scram-sha-256\n", "host replication replicator 10.0.0.0/8 scram-sha-256\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("pg_hba.conf lacks %q:\n%s", want, got)
		}
	}
}

func TestStripRecoverySettings(t *testing.T) {
	t.Parallel()
	in := "# Do not edit\nwork_mem = '8MB'\nprimary_conninfo = 'host=x'\n  PRIMARY_SLOT_NAME='s'\nrestore_command = 'cp'\nsynchronous_standby_names = 'x'\n"
	out, removed := StripRecoverySettings(in)
	if !removed || out != "# Do not edit\nwork_mem = '8MB'\n" {
		t.Fatalf("removed=%v out=%q", removed, out)
	}
	if _, removed := StripRecoverySettings("work_mem = '1MB'\n"); removed {
		t.Fatal("nothing to strip, but reported removed")
	}
}

func TestLSN(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"0/0", "16/B374D848", "FFFFFFFF/FFFFFFFF"} {
		l, err := ParseLSN(s)
		if err != nil || FormatLSN(l) != s {
			t.Fatalf("%s -> %d %v -> %s", s, l, err, FormatLSN(l))
		}
	}
	for _, bad := range []string{"", "16", "x/1", "1/100000000"} {
		if _, err := ParseLSN(bad); err == nil {
			t.Fatalf("ParseLSN(%q) accepted", bad)
		}
	}
}

func TestSlotName(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"pg1": "pg1", "PG-2.east": "pg_2_east", strings.Repeat("a", 70): strings.Repeat("a", 63)} {
		if got := SlotName(in); got != want {
			t.Errorf("SlotName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestInitdbArgs(t *testing.T) {
	t.Parallel()
	got := strings.Join(InitdbArgs("/d", "postgres", "/d.pw", []InitdbOption{{Name: "encoding", Value: "UTF8"}, {Name: "data-checksums"}}), " ")
	want := "-D /d --username=postgres --pwfile=/d.pw --auth-local=scram-sha-256 --auth-host=scram-sha-256 --encoding=UTF8 --data-checksums"
	if got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
}

func TestScramVerifier(t *testing.T) {
	t.Parallel()
	// Known answer computed with PostgreSQL's own algorithm for
	// password "pencil", salt "0123456789abcdef", 4096 iterations.
	v, err := scramVerifierWithSalt("pencil", []byte("0123456789abcdef"), 4096)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(v, "SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$") || strings.Count(v, ":") != 2 {
		t.Fatalf("verifier shape: %s", v)
	}
}

// FuzzRenderConf checks that any value renders as exactly one well-formed
// line that PostgreSQL's quoting rules read back as the same value.
func FuzzRenderConf(f *testing.F) {
	for _, s := range []string{"", "a", "it's", `back\slash`, "new\nline", "'", "''", `\'`, "ünïcode", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		r := RenderConf("", map[string]string{"k": v})
		if strings.Count(r.Text, "\n") != 1 || !strings.HasPrefix(r.Text, "k = '") || !strings.HasSuffix(r.Text, "'\n") {
			t.Fatalf("not one setting line: %q", r.Text)
		}
		quoted := strings.TrimSuffix(strings.TrimPrefix(r.Text, "k = "), "\n")
		if got := unquoteConf(t, quoted); got != strings.ReplaceAll(v, "\x00", "") {
			t.Fatalf("round trip %q -> %s -> %q", v, quoted, got)
		}
		if r != RenderConf("", map[string]string{"k": v}) {
			t.Fatal("rendering is not stable")
		}
	})
}

// unquoteConf reads a single-quoted postgresql.conf value the way the
// server's lexer does (” and \-escapes).
func unquoteConf(t *testing.T, q string) string {
	t.Helper()
	if len(q) < 2 || q[0] != '\'' || q[len(q)-1] != '\'' {
		t.Fatalf("not quoted: %s", q)
	}
	in := q[1 : len(q)-1]
	var b strings.Builder
	for i := 0; i < len(in); i++ {
		c := in[i]
		switch {
		case c == '\'' && i+1 < len(in) && in[i+1] == '\'':
			b.WriteByte('\'')
			i++
		case c == '\'':
			t.Fatalf("unescaped quote inside %s", q)
		case c == '\\' && i+1 < len(in):
			i++
			switch in[i] {
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			default:
				b.WriteByte(in[i])
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// TestPickHost: pg_basebackup and pg_rewind against a source of several
// hosts ask for the one that accepts writes; one host is left as it is.
func TestPickHost(t *testing.T) {
	t.Parallel()
	multi := &Upstream{Host: "a,b", Port: 5432}
	if got := multi.pickHost(map[string]string{})["target_session_attrs"]; got != "read-write" {
		t.Errorf("two hosts: target_session_attrs %q", got)
	}
	one := &Upstream{Host: "a", Port: 5432}
	if _, ok := one.pickHost(map[string]string{})["target_session_attrs"]; ok {
		t.Error("one host: target_session_attrs set")
	}
	if got := multi.Addr(); got != "a,b:5432" {
		t.Errorf("Addr %q", got)
	}
}
