package pgmanager

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"raftgres/internal/boottime"
	"raftgres/internal/testutil"
)

// TestGateQuorumCost measures the median latency of a single-row INSERT
// (synchronous_commit on, one client) on a primary with two streaming
// standbys s1 and s2, under synchronous_standby_names and gate settings:
//
//	FIRST 2 (gate, s1)   today's synchronous mode, one synchronous standby
//	ANY 1 (s1, s2)       PostgreSQL's quorum, no gate
//	gate, 1 of (s1, s2)  the gate counting the quorum (SetGateQuorum)
//	ANY 2 (s1, s2)       PostgreSQL's quorum, no gate
//	gate, 2 of (s1, s2)
//
// plus the gate alone and no synchronous standby at all, for scale. Each
// run takes every setting in turn (the order rotating between runs); a
// setting's figure is the median of all its commits, with the runs'
// medians beside it. It also times the poller's query. Run with
//
//	RAFTGRES_INTEGRATION=1 GATE_QUORUM_COST=300 \
//	  go test -run TestGateQuorumCost -count=1 -v ./pgmanager/
//
// GATE_QUORUM_COST commits per setting and run, GATE_QUORUM_COST_RUNS runs
// (default 3), GATE_QUORUM_COST_FSYNC on or off (default off: the tests'
// setting), GATE_QUORUM_COST_POLL the poller's interval (default
// gateQuorumPoll; a negative one polls back to back).
func TestGateQuorumCost(t *testing.T) {
	commits, _ := strconv.Atoi(os.Getenv("GATE_QUORUM_COST"))
	if commits <= 0 {
		t.Skip("set GATE_QUORUM_COST (and RAFTGRES_INTEGRATION=1) to measure quorum commit through the gate")
	}
	runs, _ := strconv.Atoi(os.Getenv("GATE_QUORUM_COST_RUNS"))
	runs = max(runs, 1)
	if os.Getenv("GATE_QUORUM_COST_RUNS") == "" {
		runs = 3
	}
	fsync := os.Getenv("GATE_QUORUM_COST_FSYNC")
	if fsync == "" {
		fsync = "off"
	}
	e := requirePG(t)
	e.tweak = func(_ string, c *Config) { c.Parameters["fsync"] = fsync }
	ctx := ctxT(t, 30*time.Minute)
	p, _ := newPrimaryAndStandbys(t, e, gateOnly, "s1", "s2")
	if s := os.Getenv("GATE_QUORUM_COST_POLL"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		p.gateQPoll = d
		if d == 0 {
			p.gateQPoll = -1
		}
	}
	runGate(t, p, newLease(boottime.Now().Add(time.Hour)))
	testutil.WaitFor(t, 10*time.Second, "gate connected", func() (bool, error) { return p.GateConnected(), nil })
	client := clientConn(ctx, t, p)

	pollCost(ctx, t, p)

	both := []string{"s1", "s2"}
	gate := `"` + GateName + `"`
	settings := []struct {
		name, ssn string
		q         int
	}{
		{"no synchronous standby", "", 0},
		{"gate alone", gate, 0},
		{`(a) FIRST 2 (gate, s1)`, `FIRST 2 ("` + GateName + `", "s1")`, 0},
		{`(b) ANY 1 (s1, s2), no gate`, `ANY 1 ("s1", "s2")`, 0},
		{`(c) gate, quorum 1 of (s1, s2)`, gate, 1},
		{`(d) ANY 2 (s1, s2), no gate`, `ANY 2 ("s1", "s2")`, 0},
		{`(d) gate, quorum 2 of (s1, s2)`, gate, 2},
	}
	all := make([][]time.Duration, len(settings))
	runMedians := make([][]time.Duration, len(settings))
	cpu := make([]time.Duration, len(settings))
	id := 0
	for run := range runs {
		for k := range settings {
			i := (k + run) % len(settings)
			s := settings[i]
			// The quorum first: synchronous_standby_names may name the
			// gate alone only once it counts.
			p.SetGateQuorum(s.q, both)
			if _, err := p.Reload(ctx, Desired{SyncStandbyNames: s.ssn}); err != nil {
				t.Fatal(err)
			}
			testutil.WaitFor(t, 10*time.Second, "synchronous_standby_names = "+s.ssn, func() (bool, error) {
				var got string
				err := client.QueryRow(ctx, "SHOW synchronous_standby_names").Scan(&got)
				return got == s.ssn, err
			})
			for range 20 { // warm-up
				id++
				timedInsert(ctx, t, client, id)
			}
			lat := make([]time.Duration, 0, commits)
			cpu0 := selfCPU()
			for range commits {
				id++
				lat = append(lat, timedInsert(ctx, t, client, id))
			}
			cpu[i] += selfCPU() - cpu0
			all[i] = append(all[i], lat...)
			runMedians[i] = append(runMedians[i], median(lat))
		}
	}
	p.SetGateQuorum(0, nil)
	var report strings.Builder
	fmt.Fprintf(&report, "gate quorum cost: fsync=%s, poll interval %s, %d runs of %d commits per setting\n", fsync, pollInterval(p), runs, commits)
	for i, s := range settings {
		lat := all[i]
		slices.Sort(lat)
		fmt.Fprintf(&report, "  %-34s median %7.3f ms  p90 %7.3f ms  runs %v  test process cpu %5.1f µs/commit\n", s.name,
			ms(median(lat)), ms(lat[len(lat)*9/10]), msAll(runMedians[i]), float64(cpu[i].Microseconds())/float64(len(lat)))
	}
	t.Log("\n" + report.String())
	fmt.Print(report.String())
}

// pollCost times the poller's query against pg_stat_replication's.
func pollCost(ctx context.Context, t *testing.T, p *Manager) {
	t.Helper()
	conn, err := p.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	const n = 2000
	for range 500 { // warm-up
		if _, err := conn.Exec(ctx, walSendersSQL); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []struct{ name, sql string }{
		{"poller's query", walSendersSQL},
		{"pg_stat_replication", "SELECT application_name, flush_lsn::text FROM pg_stat_replication WHERE state = 'streaming'"},
		{"SELECT 1 (a round trip)", "SELECT 1"},
	} {
		var lat []time.Duration
		cpu0 := selfCPU()
		for range n {
			start := time.Now()
			rows, err := conn.Query(ctx, q.sql)
			if err != nil {
				t.Fatal(err)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		cpu := selfCPU() - cpu0
		slices.Sort(lat)
		line := fmt.Sprintf("gate quorum cost: %s: median %.0f µs, p90 %.0f µs per query, test process cpu %.1f µs per query",
			q.name, float64(median(lat).Nanoseconds())/1e3, float64(lat[n*9/10].Nanoseconds())/1e3, float64(cpu.Microseconds())/n)
		t.Log(line)
		fmt.Println(line)
	}
}

func pollInterval(p *Manager) string {
	w := quorumWatch{m: p}
	if d := w.interval(); d > 0 {
		return d.String()
	}
	return "0 (back to back)"
}

func timedInsert(ctx context.Context, t *testing.T, client *pgx.Conn, id int) time.Duration {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := client.Exec(cctx, "INSERT INTO t VALUES ($1)", id); err != nil {
		t.Fatalf("insert %d: %v", id, err)
	}
	return time.Since(start)
}

// median of lat (sorted in place).
func median(lat []time.Duration) time.Duration {
	slices.Sort(lat)
	return lat[len(lat)/2]
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

func msAll(v []time.Duration) []string {
	var s []string
	for _, d := range v {
		s = append(s, strconv.FormatFloat(ms(d), 'f', 3, 64))
	}
	return s
}
