package api

import (
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"raftgres/failover"
	"raftgres/raftstore"
)

// addReplica adds a pg_stat_replication row to a primary's status (api
// may not name pgmanager's types: docs/design.md's layering).
func addReplica(l *failover.Local, name string, flush, replay uint64) {
	n := len(l.PG.Replicas)
	l.PG.Replicas = slices.Grow(l.PG.Replicas, 1)[:n+1]
	r := &l.PG.Replicas[n]
	r.ApplicationName, r.FlushLSN, r.ReplayLSN = name, flush, replay
}

// TestVersionNum: patroni_version encodes the first X.Y.Z of the version
// string as Patroni encodes 3.0.2 (30002), and 0 when there is none.
func TestVersionNum(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		version string
		want    float64
	}{
		{"3.0.2", 30002},
		{"v0.3.1", 301},
		{"v0.3.1-12-gabc1234", 301},
		{"v0.3.1-12-gabc1234-dirty", 301},
		{"v0.1.0-dev-gf836b9d-dirty", 100},
		{"v1.2.3-rc.1", 10203},
		{"v12.34.56", 123456},
		{"raftgres-v2.0.1", 20001},
		{"v1.99.99", 19999},
		{"dev", 0},
		{"", 0},
		{"f836b9d", 0},
		{"f836b9d-dirty", 0},
		{"v1.2", 0},
		{"v1.100.0", 0}, // would read as 2.0.0
		{"v1.2.100", 0},
	} {
		if got := versionNum(tc.version); got != tc.want {
			t.Errorf("versionNum(%q) = %v, want %v", tc.version, got, tc.want)
		}
	}
}

// TestPlainNumbers: sample values printed with an exponent become plain
// decimals below 2^53; nothing else in the text changes.
func TestPlainNumbers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, in, want string }{
		{"lsn", "patroni_xlog_location{name=\"pg1\",scope=\"demo\"} 8.3886296e+07\n",
			"patroni_xlog_location{name=\"pg1\",scope=\"demo\"} 83886296\n"},
		{"no labels", "go_memstats_sys_bytes 1.2345678e+07\n", "go_memstats_sys_bytes 12345678\n"},
		{"timestamp", "x{a=\"b\"} 1.7000000125e+09\n", "x{a=\"b\"} 1700000012.5\n"},
		{"one million", "x 1e+06\n", "x 1000000\n"},
		{"2^53 - 1", "x 9.007199254740991e+15\n", "x 9007199254740991\n"},
		{"2^53 stays", "x 9.007199254740992e+15\n", "x 9.007199254740992e+15\n"},
		{"tiny stays", "x 1.5e-07\n", "x 1.5e-07\n"},
		{"negative", "x -2.5e+07\n", "x -25000000\n"},
		{"plain stays", "x 3.2\ny 0\nz 42\n", "x 3.2\ny 0\nz 42\n"},
		{"specials", "x NaN\ny +Inf\nz -Inf\n", "x NaN\ny +Inf\nz -Inf\n"},
		{"comments", "# HELP x An LSN like 8.3886296e+07.\n# TYPE x gauge\nx 8.3886296e+07\n",
			"# HELP x An LSN like 8.3886296e+07.\n# TYPE x gauge\nx 83886296\n"},
		{"le label", "h_bucket{le=\"1e+06\"} 1.2e+07\n", "h_bucket{le=\"1e+06\"} 12000000\n"},
		{"awkward label", "x{choice=\"a} 1e+06 \\\"q\\\" {b}\",n=\"x\"} 2e+06\n",
			"x{choice=\"a} 1e+06 \\\"q\\\" {b}\",n=\"x\"} 2000000\n"},
		{"with a timestamp", "x 1e+07 1700000000000\n", "x 10000000 1700000000000\n"},
		{"no final newline", "x 1e+07", "x 10000000"},
		{"not a sample", "x{a=\"unterminated 1e+07\n", "x{a=\"unterminated 1e+07\n"},
		{"empty lines", "\n\nx 1e+07\n\n", "\n\nx 10000000\n\n"},
	} {
		if got := string(plainNumbers([]byte(tc.in))); got != tc.want {
			t.Errorf("%s: plainNumbers(%q) = %q, want %q", tc.name, tc.in, got, tc.want)
		}
	}
}

// TestMetricsTextIntegers scrapes /metrics: a large LSN prints as digits,
// patroni_version encodes the build's version, raftgres_build_info names
// it, and Prometheus's own text parser reads back every family the text
// declares. A protobuf scrape still works.
func TestMetricsTextIntegers(t *testing.T) {
	st := startStore(t)
	primary := failover.Local{Member: "n1", HasData: true, ObservedAt: time.Now()}
	primary.PG.Running, primary.PG.Timeline, primary.PG.CurrentLSN, primary.PG.Version = true, 3, 83886296, "15.4"
	addReplica(&primary, "n2", 83886000, 83000000)
	// pg_basebackup's two connections: the backup's (no positions) and
	// its WAL stream's, under one application_name.
	addReplica(&primary, "n3-clone", 0, 0)
	addReplica(&primary, "n3-clone", 83886200, 0)
	base := startAPI(t, st, adminConfig(), WithMember(&fakeMember{local: primary}), WithVersion("v0.3.1-12-gabc1234"))
	body := scrape(t, base)
	checkSeries(t, body, []string{
		`patroni_xlog_location{name="n1",scope="test"} 83886296`,
		`patroni_version{name="n1",scope="test"} 301`,
		`raftgres_build_info{name="n1",scope="test",version="v0.3.1-12-gabc1234"} 1`,
		`patroni_postgresql_replication_lag_bytes{application_name="n2",name="n1",scope="test"} 296`,
		`patroni_postgresql_replication_lag_bytes{application_name="n3-clone",name="n1",scope="test"} 96`,
		`patroni_postgres_server_version{name="n1",scope="test"} 150004`,
	}, nil)
	for _, line := range strings.Split(body, "\n") {
		f := strings.Fields(line)
		if len(f) != 2 || !strings.Contains(f[1], "e+") {
			continue
		}
		// Only values from 2^53 on (go_gc_gomemlimit_bytes is 2^63) keep their exponent.
		if v, err := strconv.ParseFloat(f[1], 64); err != nil || math.Abs(v) < 1<<53 {
			t.Errorf("/metrics prints %q with an exponent", line)
		}
	}

	families := map[string]bool{}
	for _, line := range strings.Split(body, "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[1] == "TYPE" {
			families[f[2]] = true
		}
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	parsed, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("text parser: %v", err)
	}
	if len(families) < 40 || len(parsed) != len(families) {
		t.Fatalf("parsed %d families, the text declares %d", len(parsed), len(families))
	}
	for name := range families {
		if parsed[name] == nil || len(parsed[name].Metric) == 0 {
			t.Errorf("family %s: not read back", name)
		}
	}
	if got := parsed["patroni_xlog_location"].Metric[0].GetGauge().GetValue(); got != 83886296 {
		t.Errorf("patroni_xlog_location read back as %v", got)
	}

	req, err := http.NewRequest("GET", base+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeProtoDelim)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	dec := expfmt.NewDecoder(resp.Body, expfmt.ResponseFormat(resp.Header))
	n := 0
	for {
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); err != nil {
			break
		}
		n++
	}
	if n != len(families) {
		t.Errorf("protobuf scrape (%s): %d families, want %d", resp.Header.Get("Content-Type"), n, len(families))
	}
}

// TestMetricsAliases: the alias series a member serves in each role.
func TestMetricsAliases(t *testing.T) {
	t.Parallel()
	a := newAliasMetrics("test", "n1")
	primary := nodeView{name: "n1", hasPG: true, st: raftstore.NewState(), local: failover.Local{Member: "n1", HasData: true}}
	primary.local.PG.Running, primary.local.PG.CurrentLSN = true, 5000
	addReplica(&primary.local, "n2", 4000, 3000)
	addReplica(&primary.local, "n3", 0, 4500)    // flush not reported
	addReplica(&primary.local, "n4", 5200, 5200) // ahead of the primary's last look
	addReplica(&primary.local, "n5", 0, 0)       // pg_basebackup's backup connection
	addReplica(&primary.local, "n5", 4900, 0)    // and its WAL stream, under the same name
	primary.st.Leader.Holder = "n1"
	replica := nodeView{name: "n1", hasPG: true, st: raftstore.NewState(), local: failover.Local{Member: "n1", HasData: true}}
	replica.local.PG.Running, replica.local.PG.InRecovery = true, true
	replica.local.PG.ReceivedLSN, replica.local.PG.ReplayedLSN = 123456789, 123000000
	stopped := nodeView{name: "n1", hasPG: true, st: raftstore.NewState(), local: failover.Local{Member: "n1", HasData: true}}
	fresh := nodeView{name: "n1", hasPG: true, st: raftstore.NewState()}
	raftOnly := nodeView{name: "n1", st: raftstore.NewState()}
	roles := func(current raftstore.Role) map[string]float64 {
		out := map[string]float64{}
		for _, r := range postgresqlRoles {
			out["patroni_postgresql_role{role="+string(r)+"}"] = b2f(r == current)
		}
		return out
	}
	with := func(m map[string]float64, state raftstore.PGState, more map[string]float64) map[string]float64 {
		for _, s := range postgresqlStates {
			m["patroni_postgresql_state{state="+string(s)+"}"] = b2f(s == state)
		}
		m["raftgres_build_info{version=v9.9.9}"] = 1
		for k, v := range more {
			m[k] = v
		}
		return m
	}
	for _, tc := range []struct {
		name string
		v    nodeView
		want map[string]float64
	}{
		{"primary", primary, with(roles("primary"), "running", map[string]float64{
			"patroni_postgresql_replication_lag_bytes{application_name=n2}": 1000,
			"patroni_postgresql_replication_lag_bytes{application_name=n3}": 500,
			"patroni_postgresql_replication_lag_bytes{application_name=n4}": 0,
			"patroni_postgresql_replication_lag_bytes{application_name=n5}": 100,
		})},
		{"replica", replica, with(roles("replica"), "running", map[string]float64{
			"patroni_postgresql_last_wal_receive_lsn_offset{}": 123456789,
		})},
		{"stopped", stopped, with(roles("replica"), "stopped", nil)},
		{"no data directory yet", fresh, with(roles("uninitialized"), "uninitialized", nil)},
		{"raft-only agent", raftOnly, with(roles("uninitialized"), "stopped", nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ch := make(chan prometheus.Metric, 32)
			a.collect(ch, tc.v, "v9.9.9")
			close(ch)
			got := map[string]float64{}
			for m := range ch {
				var pb dto.Metric
				if err := m.Write(&pb); err != nil {
					t.Fatal(err)
				}
				var ls []string
				for _, l := range pb.Label {
					if l.GetName() != "scope" && l.GetName() != "name" {
						ls = append(ls, l.GetName()+"="+l.GetValue())
					}
				}
				key := fqNameRE.FindStringSubmatch(m.Desc().String())[1] + "{" + strings.Join(ls, ",") + "}"
				if _, dup := got[key]; dup {
					t.Errorf("%s collected twice: the registry refuses the whole scrape", key)
				}
				got[key] = pb.Gauge.GetValue()
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("series (-want +got):\n%s", d)
			}
		})
	}
}
