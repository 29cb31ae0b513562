package pgmanager

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"raftgres/internal/testutil"
)

// tlsOnlyHBA accepts TCP connections only over TLS, with a client
// certificate signed by the CA, and rejects plain ones.
var tlsOnlyHBA = []string{
	"hostssl replication replicator 127.0.0.1/32 scram-sha-256 clientcert=verify-ca",
	"hostssl all all 127.0.0.1/32 scram-sha-256 clientcert=verify-ca",
	"hostnossl all all 0.0.0.0/0 reject",
	"hostnossl replication all 0.0.0.0/0 reject",
}

// TestTLSReplicationCloneRewind: with postgresql.ssl and a pg_hba that
// takes only TLS connections with a client certificate, a replica is
// cloned and streams over TLS presenting its own certificate, plain
// clients are refused, a rewind source whose certificate does not verify
// is unavailable (with a hint) and nothing is touched, and pg_rewind and
// the timeline-history fetch work over TLS.
func TestTLSReplicationCloneRewind(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 4*time.Minute)
	dir := filepath.Join(e.base, "tls")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ca := testutil.NewCA(t, dir, "ca", e.runAs)
	other := testutil.NewCA(t, dir, "other", e.runAs)
	e.tweak = func(name string, c *Config) {
		cert, key := ca.Issue(t, name, testutil.CertOpts{IPs: []string{"127.0.0.1"}, DNS: []string{"localhost"}})
		c.SSL = &SSL{CertFile: cert, KeyFile: key, CAFile: ca.File}
		c.PgHba = tlsOnlyHBA
	}
	p, r := newPrimaryAndReplica(t, e) // pg_basebackup and streaming over TLS
	for _, m := range []*Manager{p, r} {
		if err := m.cfg.CheckSSLFiles(m.sslUID()); err != nil {
			t.Fatal(err)
		}
	}
	requireTLSWalsender(t, ctx, p, "pg2")
	var conninfo string
	if err := queryRow(ctx, r, "SHOW primary_conninfo", nil, &conninfo); err != nil || !strings.Contains(conninfo, "sslmode='verify-full'") {
		t.Fatalf("replica's primary_conninfo %q (%v)", conninfo, err)
	}

	// Plain clients are refused, TCP and replication alike; a TLS client
	// needs the CA and a certificate of its own.
	port := strings.Split(p.cfg.Listen, ":")[1]
	base := fmt.Sprintf("host=127.0.0.1 port=%s dbname=postgres connect_timeout=5 ", port)
	appCert, appKey := ca.Issue(t, "app", testutil.CertOpts{})
	for _, tc := range []struct {
		name, conninfo, want string
	}{
		{"plain", base + "user=app password=app-pw sslmode=disable", "no encryption"},
		{"plain replication", base + "user=replicator password=repl-secret replication=true sslmode=disable", "no encryption"},
		{"TLS without a client certificate", base + "user=app password=app-pw sslmode=verify-full sslrootcert=" + ca.File,
			"certificate"},
		{"TLS with a certificate of another CA", base + "user=app password=app-pw sslmode=verify-full sslrootcert=" + other.File,
			"certificate signed by unknown authority"},
		{"TLS", base + "user=app password=app-pw sslmode=verify-full sslrootcert=" + ca.File + " sslcert=" + appCert + " sslkey=" + appKey, ""},
	} {
		conn, err := pgconn.Connect(ctx, tc.conninfo)
		if err == nil {
			_ = conn.Close(ctx)
		}
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got %v, want an error holding %q", tc.name, err, tc.want)
		}
	}

	// The replica takes over; the old primary diverges, then is rewound
	// from it over TLS.
	if err := r.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Exec(ctx, "INSERT INTO t VALUES (7777)"); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(ctx, StopFast); err != nil {
		t.Fatal(err)
	}
	if _, err := r.EnsureSlots(ctx, physical(SlotName("pg1")), keepNone); err != nil {
		t.Fatal(err)
	}
	d := Desired{Standby: upstreamOf(t, "pg2", r), Slot: SlotName("pg1")}
	good := *p.cfg.SSL
	bad := good
	bad.CAFile = other.File
	p.cfg.SSL = &bad
	before, err := p.ControlData(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = p.Rewind(ctx, d)
	if !errors.Is(err, ErrRewindSourceUnavailable) || !strings.Contains(err.Error(), "must be signed by a CA in "+other.File) {
		t.Fatalf("rewind from a source whose certificate does not verify: %v, want ErrRewindSourceUnavailable with a hint", err)
	}
	if after, err := p.ControlData(ctx); err != nil || !maps.Equal(before, after) {
		t.Fatalf("pg_control changed by a refused rewind (%v):\n%v\n%v", err, before, after)
	}
	p.cfg.SSL = &good
	if err := p.Rewind(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx, d); err != nil {
		t.Fatal(err)
	}
	waitStreaming(t, r, "pg1")
	requireTLSWalsender(t, ctx, r, "pg1")
	testutil.WaitFor(t, 30*time.Second, "rewound pg1 drops its diverged row", func() (bool, error) { return p.count(ctx, t) == 100, nil })

	// A clone's timeline-history fetch (a replication connection of the
	// agent itself) goes over TLS too: a data directory on timeline 3
	// lacks 00000002.history, which pg2 has.
	clone := filepath.Join(e.base, "clone")
	if err := os.MkdirAll(filepath.Join(clone, "pg_wal"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(clone, "pg_wal", "00000003.history"), []byte("2\t0/3000000\tno recovery target specified\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.fetchHistories(ctx, clone, upstreamOf(t, "pg2", r)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(clone, "pg_wal", "00000002.history")); err != nil {
		t.Fatalf("timeline history not fetched over TLS: %v", err)
	}
}

// requireTLSWalsender fails unless primary's walsender for standby runs
// over TLS with the standby's certificate as the client's.
func requireTLSWalsender(t *testing.T, ctx context.Context, primary *Manager, standby string) {
	t.Helper()
	var ssl bool
	var dn string
	err := queryRow(ctx, primary, `SELECT s.ssl, coalesce(s.client_dn, '') FROM pg_stat_replication r
		JOIN pg_stat_ssl s USING (pid) WHERE r.application_name = $1`, []any{standby}, &ssl, &dn)
	if err != nil || !ssl || !strings.Contains(dn, "CN="+standby) {
		t.Fatalf("walsender of %s on %s: ssl %v, client %q (%v); want TLS with its certificate", standby, primary.member, ssl, dn, err)
	}
}

// queryRow runs sql with args on m through its local socket and scans
// the single row into dest.
func queryRow(ctx context.Context, m *Manager, sql string, args []any, dest ...any) error {
	conn, err := m.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.QueryRow(ctx, sql, args...).Scan(dest...)
}
