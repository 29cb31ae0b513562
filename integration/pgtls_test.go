package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// tlsOnlyHBA takes TCP connections only over TLS (replication also with a
// member's certificate) and rejects plain ones.
var tlsOnlyHBA = []string{
	"hostssl replication replicator 127.0.0.1/32 scram-sha-256 clientcert=verify-ca",
	"hostssl all all 127.0.0.1/32 scram-sha-256",
	"hostnossl all all 0.0.0.0/0 reject",
	"hostnossl replication all 0.0.0.0/0 reject",
}

// TestPostgresTLS: three members with postgresql.ssl and a pg_hba that
// takes only TLS on TCP bootstrap, clone and stream over TLS; a plain
// client is refused and a verify-full one served; after kill -9 of the
// primary's agent a replica takes over, the other follows it and the old
// primary rejoins, all streaming over TLS.
func TestPostgresTLS(t *testing.T) {
	var ca *certSet
	c := startCluster(t, 3, func(nd *Node, all []*Node) NodeOptions {
		if ca == nil {
			ca = newCA(t, filepath.Dir(nd.Dir), "pgca")
		}
		return NodeOptions{Peers: all, Postgres: true, DCS: fastDCS, PGTLS: ca, PgHba: tlsOnlyHBA}
	})
	primary := c.waitPrimary(90*time.Second, c.nodes...)
	c.waitStreaming(primary)
	requireTLSStandbys(t, primary, 2)
	ctx := ctxT(t, 3*time.Minute)

	plain := fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2", superPassword, primary.PGPort)
	if conn, err := pgx.Connect(ctx, plain); err == nil {
		_ = conn.Close(ctx)
		t.Fatal("a client with sslmode=disable was served")
	} else if !strings.Contains(err.Error(), "no encryption") {
		t.Fatalf("a client with sslmode=disable: %v, want pg_hba's rejection of an unencrypted connection", err)
	}
	var ssl bool
	if err := pgQueryRow(ctx, primary, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &ssl); err != nil || !ssl {
		t.Fatalf("a client with sslmode=verify-full and the CA: ssl %v (%v)", ssl, err)
	}

	if err := pgExec(ctx, primary, "CREATE TABLE probe (id int primary key)"); err != nil {
		t.Fatal(err)
	}
	if err := pgExec(ctx, primary, "INSERT INTO probe SELECT generate_series(1, 100)"); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		waitCount(t, n, 100)
	}

	primary.Kill9()
	newPrimary := c.waitNewPrimaryWriting(primary, "INSERT INTO probe VALUES (1000)")
	c.waitStreaming(newPrimary) // the third member follows the new primary
	requireTLSStandbys(t, newPrimary, 1)

	primary.Start()
	c.waitPrimary(90*time.Second, c.nodes...)
	c.waitStreaming(newPrimary)
	requireTLSStandbys(t, newPrimary, 2)
	for _, n := range c.nodes {
		waitCount(t, n, 101)
	}
}

// requireTLSStandbys fails unless primary has want walsenders for
// members, every one of them over TLS with a member's certificate.
func requireTLSStandbys(t *testing.T, primary *Node, want int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var all, tls int
	err := pgQueryRow(ctx, primary, `SELECT count(*), count(*) FILTER (WHERE s.ssl AND s.client_dn LIKE '%CN=pg_') FROM pg_stat_replication r
		JOIN pg_stat_ssl s USING (pid) WHERE r.application_name <> 'raftgres_fence'`, &all, &tls)
	if err != nil || all != want || tls != want {
		t.Fatalf("walsenders on %s: %d, %d over TLS (%v); want %d, all over TLS", primary.Name, all, tls, err, want)
	}
}
