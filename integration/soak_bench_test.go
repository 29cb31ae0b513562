package integration

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkRaftSoak (Raft and timing tuned for a LAN): a
// 3-member synchronous-mode cluster at the product's default timings
// (Raft heartbeat and election timeouts 500ms) under pgbench (tpcb-like,
// 4 clients, unthrottled: the 2-core host saturated) for BENCH_SOAK_SECONDS
// (default 120). It counts needless Raft elections (term changes) and
// needless failovers (leader key epoch changes): nothing failed, so every
// one of them is needless. It fails when the primary changed, since a
// failover under plain load is a bug, not a figure.
func BenchmarkRaftSoak(b *testing.B) {
	requireIntegration(b)
	secs := 120
	if v := os.Getenv("BENCH_SOAK_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("BENCH_SOAK_SECONDS=%q: want a positive number of seconds", v)
		}
		secs = n
	}
	c := newPGClusterDCS(b, 3, nil, "{ttl: 3, loop_wait: 300ms, retry_timeout: 1, synchronous_mode: true}")
	primary := c.waitPrimary(120*time.Second, c.nodes...)
	c.waitStreaming(primary)
	conninfo := multiHostConninfo(c)
	if out, err := initPgbench(b, conninfo, 2); err != nil {
		b.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	read := func(metric string) map[string]float64 {
		out := map[string]float64{}
		for _, n := range c.nodes {
			v, err := scrapeMetric(n, metric)
			if err != nil {
				b.Fatalf("%s: %v", metric, err)
			}
			out[n.Name] = v
		}
		return out
	}
	maxOf := func(m map[string]float64) float64 {
		best := 0.0
		for _, v := range m {
			best = max(best, v)
		}
		return best
	}
	load := startPgbenchLoad(b, conninfo, 0)
	load.waitRunning(b, time.Second)
	termBefore, epochBefore := maxOf(read("raftgres_raft_term")), maxOf(read("raftgres_leader_epoch"))
	start := time.Now()
	time.Sleep(time.Duration(secs) * time.Second) // the soak's length, not synchronisation
	elapsed := time.Since(start)
	termAfter, epochAfter := maxOf(read("raftgres_raft_term")), maxOf(read("raftgres_leader_epoch"))
	load.stop()
	rates, runs := load.tps()
	elections, failovers := termAfter-termBefore, epochAfter-epochBefore
	perHour := func(n float64) float64 { return n * float64(time.Hour) / float64(elapsed) }
	var tps []string
	for _, r := range rates {
		tps = append(tps, fmt.Sprintf("%.0f", r))
	}
	b.Logf("raft soak: %s under pgbench (4 clients, %d runs, tps %s): %.0f needless raft elections (%.1f/h), %.0f needless failovers (%.1f/h)",
		elapsed.Round(time.Second), runs, strings.Join(tps, " "), elections, perHour(elections), failovers, perHour(failovers))
	b.ReportMetric(perHour(elections), "raft-elections/h")
	b.ReportMetric(perHour(failovers), "failovers/h")
	if failovers > 0 {
		b.Fatalf("%.0f failovers under plain load: the primary changed though nothing failed", failovers)
	}
}
