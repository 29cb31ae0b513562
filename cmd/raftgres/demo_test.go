package main

import (
	"testing"

	"raftgres/config"
)

func TestDemoConfigLoads(t *testing.T) {
	peers := []string{"pg1=127.0.0.1:7001", "pg2=127.0.0.1:7002", "pg3=127.0.0.1:7003"}
	m := &demoMember{name: "pg2", raftPort: 7002, apiPort: 8009, pgPort: 5433}
	out, err := config.Marshal(demoConfig(m, "/tmp/demo/pg2", peers, "/usr/lib/postgresql/16/bin"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse("pg2.yml", out, 0o600)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if c.Name != "pg2" || c.Raft.Listen != "127.0.0.1:7002" || len(c.Raft.BootstrapPeers) != 3 || c.API.Listen != "127.0.0.1:8009" ||
		c.Postgres.Listen != "127.0.0.1:5433" || c.Postgres.DataDir != "/tmp/demo/pg2/pgdata" || c.API.Token.Reveal() != demoToken ||
		c.Postgres.Superuser.Password.Reveal() != demoPassword || c.Postgres.Parameters["shared_buffers"] != "32MB" || len(c.Postgres.PgHba) != 2 {
		t.Fatalf("unexpected config:\n%s", out)
	}
}
