package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// gateName is the commit gate's application_name (pgmanager.GateName;
// spelled out so that this file builds before and after the gate lands).
const gateName = "raftgres_fence"

const (
	gateBenchScale    = 10
	gateWithoutOption = "-c synchronous_commit=local"
)

// gateBenchTarget is the tps cost (%) allowed per client count.
var gateBenchTarget = map[int]float64{1: 10, 8: 5}

// gateRun is one pgbench run against the primary.
type gateRun struct {
	Clients int     `json:"clients"`
	Mode    string  `json:"mode"` // "gate" or "no-gate"
	Seconds int     `json:"seconds"`
	Order   int     `json:"order"` // position in the sequence of runs
	Slice   int     `json:"slice"` // runs of one slice are adjacent: one per mode
	TPS     float64 `json:"tps"`
	Xacts   int     `json:"transactions"`
	P50ms   float64 `json:"p50_ms"`
	P99ms   float64 `json:"p99_ms"`
	AvgMs   float64 `json:"avg_ms"`
	// What the monitor saw on the primary while pgbench ran.
	Samples       int `json:"samples"`
	GateSync      int `json:"samples_gate_sync"` // gate listed in the setting and sync in pg_stat_replication
	SyncRepWaits  int `json:"samples_with_syncrep_waiters"`
	MonitorErrors int `json:"monitor_errors"`
	// Load is /proc/loadavg's 1-minute figure and the CPU steal share
	// over the run: the machine is shared, so say how busy it was.
	Load string `json:"load"`
	// CPU time over the run of the primary's agent (which runs the gate)
	// and of the gate's walsender (-1: not found, or it reconnected).
	AgentCPUms float64 `json:"agent_cpu_ms"`
	FenceCPUms float64 `json:"fence_walsender_cpu_ms"`

	lat []float64 // µs per transaction, sorted
}

// BenchmarkCommitGate reports the commit gate's cost: pgbench
// tpcb-like, scale 10, 1 and 8 clients, each with the gate (the default)
// and without it (PGOPTIONS='-c synchronous_commit=local', which opts a
// session out of synchronous replication and so out of the gate) against
// the primary of a real 3-member cluster (default config, asynchronous
// mode). tps comes from pgbench's output, p99 latency from its
// per-transaction log, all of it once with fsync off and once with fsync
// on (BENCH_GATE_FSYNC=off or on for one only; set by ALTER SYSTEM and a
// reload on every member). Each mode gets 30 s per client count and fsync
// setting (BENCH_GATE_SECONDS to change), split into ~5 s runs that alternate
// between the modes (A B B A …, A changing with the client count): the
// project's machines are shared, and a burst of outside load must hit both
// modes alike. Before each run the standbys catch up and the primary
// checkpoints, so no run pays for the one before. The targets (1 client:
// < 10 %, 8 clients: < 5 %) are judged on the 95% confidence interval of
// the paired runs' cost; on a
// busy 2-CPU machine 30 s often cannot resolve 5% (BENCH_GATE_SECONDS=120
// gives 24 pairs). It also reports the CPU the gate uses per transaction:
// the no-gate runs still stream WAL to it and pay that CPU too.
//
// While the "gate" runs go, a monitor checks on the primary that the gate
// is in the commit path: raftgres_fence in synchronous_standby_names and
// sync in pg_stat_replication. If it is not, no figures are reported: the
// benchmark skips while this tree has no gate, and fails once it has one.
// Run with make bench (or go test -run '^$' -bench CommitGate
// -benchtime=1x ./integration/ with RAFTGRES_INTEGRATION=1).
func BenchmarkCommitGate(b *testing.B) {
	if binPath == "" {
		b.Skip("set RAFTGRES_INTEGRATION=1 (make bench does)")
	}
	pgbench := pgBinary(b, "pgbench")
	psql := pgBinary(b, "psql")
	secs := 30
	if v := os.Getenv("BENCH_GATE_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("BENCH_GATE_SECONDS=%q: want a positive number of seconds", v)
		}
		secs = n
	}
	implemented, why := gateImplemented(b)

	c := startCluster(b, 3, func(_ *Node, all []*Node) NodeOptions {
		return NodeOptions{Peers: all, Postgres: true} // default bootstrap.dcs: asynchronous mode
	})
	primary := c.waitPrimary(120*time.Second, c.nodes...)
	waitStandbysStreaming(b, c, primary)

	// The gate attaches once the agent runs it; give it a polled while.
	var named bool
	active, state := pollBool(30*time.Second, func() (bool, string) {
		var ok bool
		var state string
		ok, named, state = gateActive(primary)
		return ok, state
	})
	if !active {
		fmt.Printf("commit gate: GATE NOT ACTIVE on primary %s (%s); %s\n", primary.Name, state, why)
		if implemented {
			b.Fatalf("the commit gate is implemented in this tree (%s) but not active on the primary: %s", why, state)
		}
		if os.Getenv("BENCH_GATE_ANYWAY") != "1" {
			b.Skip("commit gate not active (not in this tree yet): no figures (BENCH_GATE_ANYWAY=1 measures anyway, as noise)")
		}
		if named { // named in the setting, nobody to acknowledge
			b.Skip("BENCH_GATE_ANYWAY=1: synchronous_standby_names names the gate but it is not connected: commits with synchronous_commit=on would wait forever")
		}
		fmt.Println("commit gate: BENCH_GATE_ANYWAY=1: measuring anyway; the two modes differ by noise only")
	} else {
		fmt.Printf("commit gate: active on primary %s (%s)\n", primary.Name, state)
	}

	env := append(os.Environ(), "PGPASSWORD="+superPassword, "PGSSLMODE=disable", "PGCONNECT_TIMEOUT=5",
		"PGHOST="+primary.probeHost(), fmt.Sprintf("PGPORT=%d", primary.PGPort), "PGUSER=postgres", "PGDATABASE=postgres")
	envWithout := append(slices.Clone(env), "PGOPTIONS="+gateWithoutOption)

	// The opt-out must really reach the session: check it the way pgbench
	// gets it (libpq reads PGOPTIONS).
	for _, m := range []struct {
		env  []string
		want string
	}{{env, "on"}, {envWithout, "local"}} {
		out, err := runCmd(b, 30*time.Second, m.env, psql, "-XAtc", "SHOW synchronous_commit")
		if err != nil || strings.TrimSpace(out) != m.want {
			b.Fatalf("synchronous_commit through libpq: got %q (%v), want %q", strings.TrimSpace(out), err, m.want)
		}
	}

	start := time.Now()
	// The load is not what is measured: it opts out of the gate.
	if out, err := runCmd(b, 10*time.Minute, envWithout, pgbench, "-i", "-q", "-s", strconv.Itoa(gateBenchScale)); err != nil {
		b.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	fmt.Printf("commit gate: pgbench -i -s %d on %s took %s\n", gateBenchScale, primary.Name, time.Since(start).Round(time.Millisecond))

	fsyncs := []string{"off", "on"}
	if v := os.Getenv("BENCH_GATE_FSYNC"); v != "" {
		if v != "on" && v != "off" {
			b.Fatalf("BENCH_GATE_FSYNC=%q: want on or off (unset: both)", v)
		}
		fsyncs = []string{v}
	}
	report := map[string]any{}
	for _, fsync := range fsyncs {
		setFsync(b, c, fsync)
		report["fsync_"+fsync] = benchGateSetting(b, c, primary, pgbench, env, envWithout, secs, "fsync="+fsync, active)
	}
	if !active {
		return
	}
	report["scale"], report["seconds"], report["at"] = gateBenchScale, secs, time.Now().UTC()
	data, err := json.MarshalIndent(report, "", "  ")
	if err != nil {
		b.Logf("bench-gate.json: %v", err)
		return
	}
	path := filepath.Join(moduleRoot(b), "bin", "bench-gate.json")
	_ = os.MkdirAll(filepath.Dir(path), 0o755)
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		b.Logf("write %s: %v", path, err)
	} else {
		fmt.Printf("wrote %s\n", path)
	}
}

// setFsync sets fsync on every member (ALTER SYSTEM and a reload: fsync
// needs no restart) and checks that each runs with it.
func setFsync(b *testing.B, c *cluster, value string) {
	b.Helper()
	for _, n := range c.nodes {
		ctx := ctxT(b, 10*time.Second)
		if err := pgExec(ctx, n, "ALTER SYSTEM SET fsync = "+value); err != nil {
			b.Fatalf("%s: ALTER SYSTEM SET fsync = %s: %v", n.Name, value, err)
		}
		if err := pgExec(ctx, n, "SELECT pg_reload_conf()"); err != nil {
			b.Fatalf("%s: reload: %v", n.Name, err)
		}
	}
	for _, n := range c.nodes {
		waitFor(b, 10*time.Second, fmt.Sprintf("fsync=%s on %s", value, n.Name), func() (bool, error) {
			var v string
			err := pgQueryRow(ctxT(b, 5*time.Second), n, "SHOW fsync", &v)
			return v == value, err
		})
	}
	fmt.Printf("commit gate: fsync = %s on every member\n", value)
}

// benchGateSetting measures both client counts and modes under one
// setting (label) and reports them; it returns the report's data.
func benchGateSetting(b *testing.B, c *cluster, primary *Node, pgbench string, env, envWithout []string, secs int, label string, active bool) map[string]any {
	catchUp(b, c, primary)
	warm := min(secs, 5)
	runPgbench(b, primary, pgbench, env, 8, warm) // warm-up, not reported: caches, first-run effects
	fmt.Printf("commit gate (%s): %d s warm-up run done\n", label, warm)
	idle := idleCPU(b, primary, warm)
	fmt.Printf("commit gate (%s): idle for %d s: cpu ms agent %.0f, gate walsender %.0f\n", label, warm, idle[0], idle[1])

	// Each mode gets secs seconds per client count, in nSlices runs of
	// about 5 s (BENCH_GATE_SLICES to change) that alternate A B B A A B …,
	// so that a change in the machine's load (other processes, CPU steal)
	// hits both modes alike. The first mode alternates between client
	// counts too.
	nSlices := max(1, secs/5)
	if v := os.Getenv("BENCH_GATE_SLICES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("BENCH_GATE_SLICES=%q: want a positive number", v)
		}
		nSlices = n
	}
	nSlices = min(nSlices, secs)
	fmt.Printf("commit gate (%s): %d s per client count and mode, in %d alternating runs each\n", label, secs, nSlices)
	var runs []gateRun
	for i, clients := range []int{1, 8} {
		a, bb := "gate", "no-gate"
		if i%2 == 1 {
			a, bb = bb, a
		}
		var order []string
		for k := range nSlices {
			if k%2 == 0 {
				order = append(order, a, bb)
			} else {
				order = append(order, bb, a)
			}
		}
		for k, mode := range order {
			e := env
			if mode == "no-gate" {
				e = envWithout
			}
			d := secs / nSlices // the first slices take the remainder
			if k/2 < secs%nSlices {
				d++
			}
			catchUp(b, c, primary)
			r := runPgbench(b, primary, pgbench, e, clients, d)
			r.Mode, r.Order, r.Slice = mode, len(runs)+1, k/2
			runs = append(runs, r)
			fmt.Printf("commit gate (%s): run %2d: %d clients, %-7s %3d s %9.1f tps  p99 %7.2f ms  (%d xacts; gate sync in %d/%d samples, SyncRep waiters in %d; cpu ms agent %.0f, gate walsender %.0f; load %s)\n",
				label, r.Order, r.Clients, r.Mode, r.Seconds, r.TPS, r.P99ms, r.Xacts, r.GateSync, r.Samples, r.SyncRepWaits, r.AgentCPUms, r.FenceCPUms, r.Load)
		}
	}

	// The gate must have been in the path all through every "gate" run.
	var notActive []string
	for _, r := range runs {
		if r.Mode == "gate" && (r.Samples == 0 || r.GateSync != r.Samples) {
			notActive = append(notActive, fmt.Sprintf("%d clients: gate sync in %d of %d samples (%d monitor errors)",
				r.Clients, r.GateSync, r.Samples, r.MonitorErrors))
		}
	}
	for _, r := range runs {
		if r.Mode == "no-gate" && r.SyncRepWaits > 0 {
			fmt.Printf("commit gate: WARNING: run %d (%d clients, no-gate) saw sessions waiting on SyncRep in %d samples: did the opt-out hold?\n",
				r.Order, r.Clients, r.SyncRepWaits)
		}
	}
	if len(notActive) > 0 && active {
		fmt.Printf("commit gate: GATE NOT ACTIVE during the gate runs (%s): no figures\n", strings.Join(notActive, "; "))
		b.Fatalf("commit gate not in the commit path during the gate runs: %s", strings.Join(notActive, "; "))
	}

	return gateReport(b, runs, secs, active, idle, label)
}

// idleCPU is the CPU ms that the primary's agent and the gate's walsender
// use over secs seconds without load: the baseline of the cpu columns.
func idleCPU(b *testing.B, primary *Node, secs int) [2]float64 {
	b.Helper()
	pid := fenceWalsender(b, primary)
	agent0, fence0 := procCPU(primary.PID()), procCPU(pid)
	time.Sleep(time.Duration(secs) * time.Second) // the measurement window, not synchronisation
	return [2]float64{cpuDelta(agent0, procCPU(primary.PID())), cpuDelta(fence0, procCPU(pid))}
}

// fenceWalsender is the pid of the gate's walsender on primary (0: none).
func fenceWalsender(b *testing.B, primary *Node) int {
	b.Helper()
	pid := 0
	err := pgQueryRow(ctxT(b, 5*time.Second), primary,
		"SELECT coalesce((SELECT pid FROM pg_stat_replication WHERE application_name = '"+gateName+"' LIMIT 1), 0)", &pid)
	if err != nil {
		b.Fatalf("read the gate's walsender pid: %v", err)
	}
	return pid
}

// gateResult aggregates one mode's runs at one client count.
type gateResult struct {
	TPS      float64 `json:"tps"` // all transactions over all runs' time
	Xacts    int     `json:"transactions"`
	P50ms    float64 `json:"p50_ms"` // over every transaction of those runs
	P99ms    float64 `json:"p99_ms"`
	SpreadPc float64 `json:"run_tps_spread_percent"` // (max-min)/mean of the runs' tps
	// CPU ms per 1000 transactions of the primary's agent and of the
	// gate's walsender (-1 where not measured).
	AgentCPU float64 `json:"agent_cpu_ms_per_1000_xacts"`
	FenceCPU float64 `json:"fence_walsender_cpu_ms_per_1000_xacts"`
	// GateCPUus is the gate's CPU per transaction: the agent's above its
	// idle rate plus the gate's walsender, in µs (-1: not measured).
	GateCPUus float64 `json:"gate_cpu_us_per_xact"`
}

// pairedCosts are the tps costs (%) between the two adjacent runs of each
// slice, sorted.
func pairedCosts(runs []gateRun, clients int) []float64 {
	with, without := map[int]float64{}, map[int]float64{}
	for _, r := range runs {
		if r.Clients != clients {
			continue
		}
		if r.Mode == "gate" {
			with[r.Slice] = r.TPS
		} else {
			without[r.Slice] = r.TPS
		}
	}
	var costs []float64
	for k, w := range with {
		if wo, ok := without[k]; ok {
			costs = append(costs, 100*(wo-w)/wo)
		}
	}
	slices.Sort(costs)
	return costs
}

// jsonNum is v, or nil (null) for NaN, which JSON cannot carry.
func jsonNum(v float64) any {
	if math.IsNaN(v) {
		return nil
	}
	return v
}

// pairedStats summarises paired costs: their median (less sensitive than
// the pooled figure to a burst of outside load that hits a few runs), and
// their mean with the half-width of its 95% confidence interval (Student's
// t; NaN for fewer than 2 pairs).
func pairedStats(costs []float64) (median, mean, ci float64) {
	n := len(costs)
	if n == 0 {
		return math.NaN(), math.NaN(), math.NaN()
	}
	median = costs[n/2]
	if n%2 == 0 {
		median = (costs[n/2-1] + costs[n/2]) / 2
	}
	for _, c := range costs {
		mean += c
	}
	mean /= float64(n)
	if n < 2 {
		return median, mean, math.NaN()
	}
	var ss float64
	for _, c := range costs {
		ss += (c - mean) * (c - mean)
	}
	sd := math.Sqrt(ss / float64(n-1))
	t := []float64{12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23}
	q := 2.0 // df 11..30, and a little conservative beyond
	if n-1 <= len(t) {
		q = t[n-2]
	}
	return median, mean, q * sd / math.Sqrt(float64(n))
}

func aggregate(runs []gateRun, clients int, mode string, idleAgentPerSec float64) gateResult {
	var g gateResult
	var lat, tps []float64
	var secs, agent, fence, runSecs float64
	for _, r := range runs {
		if r.Clients != clients || r.Mode != mode {
			continue
		}
		agent += r.AgentCPUms
		runSecs += float64(r.Seconds)
		fence += r.FenceCPUms
		if r.AgentCPUms < 0 || math.IsNaN(agent) {
			agent = math.NaN()
		}
		if r.FenceCPUms < 0 || math.IsNaN(fence) {
			fence = math.NaN()
		}
		g.Xacts += r.Xacts
		secs += float64(r.Xacts) / r.TPS
		lat = append(lat, r.lat...)
		tps = append(tps, r.TPS)
	}
	if len(tps) == 0 {
		return g
	}
	slices.Sort(lat)
	g.TPS = float64(g.Xacts) / secs
	g.P50ms = percentile(lat, 50) / 1000
	g.P99ms = percentile(lat, 99) / 1000
	var sum float64
	for _, v := range tps {
		sum += v
	}
	g.SpreadPc = 100 * (slices.Max(tps) - slices.Min(tps)) / (sum / float64(len(tps)))
	g.AgentCPU, g.FenceCPU, g.GateCPUus = -1, -1, -1 // JSON has no NaN
	if !math.IsNaN(agent) && !math.IsNaN(fence) && idleAgentPerSec >= 0 {
		g.GateCPUus = 1000 * (agent - idleAgentPerSec*runSecs + fence) / float64(g.Xacts)
	}
	if !math.IsNaN(agent) {
		g.AgentCPU = 1000 * agent / float64(g.Xacts)
	}
	if !math.IsNaN(fence) {
		g.FenceCPU = 1000 * fence / float64(g.Xacts)
	}
	return g
}

// gateReport prints the table and the cost per client count under one
// setting, reports the metrics, and returns the data for
// bin/bench-gate.json.
func gateReport(b *testing.B, runs []gateRun, secs int, active bool, idle [2]float64, setting string) map[string]any {
	label := ""
	if !active {
		label = "  [GATE NOT ACTIVE: noise only]"
	}
	fmt.Printf("\ncommit gate cost (%s): pgbench tpcb-like, scale %d, %d s per client count and mode, over TCP to the primary%s\n",
		setting, gateBenchScale, secs, label)
	fmt.Printf("%7s  %-7s  %10s  %8s  %8s  %10s  %s\n", "clients", "mode", "tps", "p50 ms", "p99 ms", "run spread",
		"cpu ms per 1000 xacts: agent, gate walsender; gate cpu µs per xact")
	results := map[string]any{}
	var costLines []string
	for _, clients := range []int{1, 8} {
		idleRate := idle[0] / float64(min(secs, 5)) // agent ms per s
		with, without := aggregate(runs, clients, "gate", idleRate), aggregate(runs, clients, "no-gate", idleRate)
		for _, m := range []struct {
			name string
			g    gateResult
		}{{"gate", with}, {"no-gate", without}} {
			fmt.Printf("%7d  %-7s  %10.1f  %8.2f  %8.2f  %9.1f%%  %6.1f, %6.1f; %6.1f\n", clients, m.name, m.g.TPS, m.g.P50ms, m.g.P99ms,
				m.g.SpreadPc, m.g.AgentCPU, m.g.FenceCPU, m.g.GateCPUus)
		}
		cost := 100 * (without.TPS - with.TPS) / without.TPS
		paired, mean, ci := pairedStats(pairedCosts(runs, clients))
		verdict := ""
		if target, ok := gateBenchTarget[clients]; ok {
			// Judged on the paired mean's confidence interval: on a busy
			// machine the runs' spread can dwarf a 5% effect.
			switch {
			case mean+ci < target:
				verdict = fmt.Sprintf("; target < %.0f%%: met", target)
			case mean-ci >= target:
				verdict = fmt.Sprintf("; target < %.0f%%: NOT MET", target)
			default:
				verdict = fmt.Sprintf("; target < %.0f%%: not resolved at this noise (longer: BENCH_GATE_SECONDS)", target)
			}
		}
		costLines = append(costLines, fmt.Sprintf("%7d  tps cost %6.2f %% pooled; over %d pairs of runs: median %6.2f %%, mean %6.2f ± %.2f %% (95%% CI); p99 %+7.2f ms%s%s",
			clients, cost, len(pairedCosts(runs, clients)), paired, mean, ci, with.P99ms-without.P99ms, verdict, label))
		results[fmt.Sprintf("%dc", clients)] = map[string]any{"gate": with, "no_gate": without, "tps_cost_percent": cost,
			"paired_median_tps_cost_percent": jsonNum(paired), "paired_mean_tps_cost_percent": jsonNum(mean), "paired_mean_ci95": jsonNum(ci)}
		if active {
			sfx := fmt.Sprintf("_%dc_%s", clients, strings.ReplaceAll(setting, "=", "_"))
			b.ReportMetric(with.TPS, "tps_gate"+sfx)
			b.ReportMetric(without.TPS, "tps_nogate"+sfx)
			b.ReportMetric(with.P99ms, "p99ms_gate"+sfx)
			b.ReportMetric(without.P99ms, "p99ms_nogate"+sfx)
			b.ReportMetric(cost, "tps_cost%"+sfx)
			b.ReportMetric(paired, "paired_median_tps_cost%"+sfx)
			b.ReportMetric(ci, "paired_mean_ci95_tps_cost%"+sfx)
		}
	}
	idleSecs := min(secs, 5)
	fmt.Printf("(idle for %d s: agent %.0f, gate walsender %.0f cpu ms; gate cpu = agent above that idle rate + gate walsender.\n"+
		" The no-gate runs still stream WAL to the gate, so its CPU shows in both modes: what they leave out is\n"+
		" the commit's wait for the gate's reply. On a CPU-bound primary the gate's CPU costs tps in both.)\n", idleSecs, idle[0], idle[1])
	fmt.Printf("cost of the gate (gate against no-gate, %s):\n", setting)
	for _, l := range costLines {
		fmt.Println(l)
	}
	return map[string]any{"runs": runs, "results": results,
		"idle_cpu_ms": map[string]any{"seconds": min(secs, 5), "agent": idle[0], "fence_walsender": idle[1]}}
}

// runPgbench runs one timed pgbench (tpcb-like) with a per-transaction
// log, while a monitor samples the primary's replication state.
func runPgbench(b *testing.B, primary *Node, pgbench string, env []string, clients, secs int) gateRun {
	b.Helper()
	ctx := ctxT(b, 30*time.Second)
	// The same starting point for every run: no checkpoint (and its burst
	// of full-page images) left pending from the previous one.
	if err := pgExec(ctx, primary, "CHECKPOINT"); err != nil {
		b.Fatalf("checkpoint: %v", err)
	}
	dir := b.TempDir()
	prefix := filepath.Join(dir, "pgbench_log")
	threads := min(clients, runtime.NumCPU())
	args := []string{"-b", "tpcb-like", "-c", strconv.Itoa(clients), "-j", strconv.Itoa(threads),
		"-T", strconv.Itoa(secs), "-l", "--log-prefix", prefix}

	r := gateRun{Clients: clients, Seconds: secs}
	fencePID := fenceWalsender(b, primary)
	agent0, fence0 := procCPU(primary.PID()), procCPU(fencePID)
	cpu0 := readCPUStat()
	mctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); monitorGate(mctx, primary, &r) }()
	out, err := runCmd(b, time.Duration(secs)*time.Second+2*time.Minute, env, pgbench, args...)
	stop()
	wg.Wait()
	r.Load = loadSummary(cpu0, readCPUStat())
	r.AgentCPUms, r.FenceCPUms = cpuDelta(agent0, procCPU(primary.PID())), cpuDelta(fence0, procCPU(fencePID))
	if err != nil {
		b.Fatalf("pgbench %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	b.Logf("pgbench %s:\n%s", strings.Join(args, " "), out)

	m := regexp.MustCompile(`(?m)^tps = ([0-9.]+) \(without initial connection time\)`).FindStringSubmatch(out)
	if m == nil {
		b.Fatalf("no tps in pgbench output:\n%s", out)
	}
	r.TPS, _ = strconv.ParseFloat(m[1], 64)
	if m := regexp.MustCompile(`(?m)^number of failed transactions: ([0-9]+)`).FindStringSubmatch(out); m != nil && m[1] != "0" {
		b.Fatalf("pgbench reports %s failed transactions:\n%s", m[1], out)
	}
	lat := readPgbenchLog(b, prefix)
	if len(lat) == 0 {
		b.Fatalf("pgbench wrote no per-transaction log under %s", dir)
	}
	if m := regexp.MustCompile(`(?m)^number of transactions actually processed: ([0-9]+)`).FindStringSubmatch(out); m != nil {
		if n, _ := strconv.Atoi(m[1]); n != len(lat) {
			b.Fatalf("pgbench processed %d transactions but logged %d", n, len(lat))
		}
	}
	r.Xacts = len(lat)
	slices.Sort(lat)
	r.lat = lat
	var sum float64
	for _, v := range lat {
		sum += v
	}
	r.AvgMs = sum / float64(len(lat)) / 1000
	r.P50ms = percentile(lat, 50) / 1000
	r.P99ms = percentile(lat, 99) / 1000
	return r
}

// monitorGate samples, every 250ms until ctx ends, whether the gate is in
// the primary's commit path and whether sessions wait on synchronous
// replication.
func monitorGate(ctx context.Context, primary *Node, r *gateRun) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if conn == nil {
			c, err := pgx.Connect(qctx, primary.PGConn())
			if err != nil {
				cancel()
				if ctx.Err() == nil {
					r.MonitorErrors++
				}
				continue
			}
			conn = c
		}
		var names string
		var syncState *string
		var waiters int
		err := conn.QueryRow(qctx, `SELECT current_setting('synchronous_standby_names'),
			(SELECT sync_state FROM pg_stat_replication WHERE application_name = $1 LIMIT 1),
			(SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep')`, gateName).Scan(&names, &syncState, &waiters)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				r.MonitorErrors++
			}
			_ = conn.Close(context.Background())
			conn = nil
			continue
		}
		r.Samples++
		if strings.Contains(names, gateName) && syncState != nil && *syncState == "sync" {
			r.GateSync++
		}
		if waiters > 0 {
			r.SyncRepWaits++
		}
	}
}

// gateActive reports whether the gate is in primary's commit path,
// whether synchronous_standby_names names it, and what was seen.
func gateActive(primary *Node) (active, named bool, seen string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var names string
	var app, syncState *string
	err := pgQueryRow(ctx, primary, `SELECT current_setting('synchronous_standby_names'),
		(SELECT application_name FROM pg_stat_replication WHERE application_name = '`+gateName+`' LIMIT 1),
		(SELECT sync_state FROM pg_stat_replication WHERE application_name = '`+gateName+`' LIMIT 1)`,
		&names, &app, &syncState)
	if err != nil {
		return false, false, err.Error()
	}
	seen = fmt.Sprintf("synchronous_standby_names=%q, %s in pg_stat_replication: ", names, gateName)
	if app == nil {
		seen += "absent"
	} else {
		seen += "sync_state=" + *syncState
	}
	named = strings.Contains(names, gateName)
	return named && syncState != nil && *syncState == "sync", named, seen
}

var runGateRE = regexp.MustCompile(`(?m)^func \(\w+ \*Manager\) RunGate\(`)

// gateImplemented tells whether this source tree has the commit gate: a
// RunGate method on pgmanager.Manager outside a stub file. (The gate is
// developed against a stub that never connects; such a tree reports "gate
// not active" rather than failing.)
func gateImplemented(tb testing.TB) (bool, string) {
	dir := filepath.Join(moduleRoot(tb), "pgmanager")
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil || len(files) == 0 {
		return false, fmt.Sprintf("no Go files in %s (%v)", dir, err)
	}
	stub := ""
	for _, f := range files {
		base := filepath.Base(f)
		if strings.HasSuffix(base, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil || !runGateRE.Match(src) {
			continue
		}
		if strings.Contains(base, "stub") {
			stub = base
			continue
		}
		return true, "pgmanager/" + base + " implements RunGate"
	}
	if stub != "" {
		return false, "RunGate is only stubbed (pgmanager/" + stub + ")"
	}
	return false, "no RunGate in pgmanager: the gate is not in this tree"
}

// waitStandbysStreaming waits until every other member streams from
// primary (by member name: the gate's own connection does not count).
func waitStandbysStreaming(b *testing.B, c *cluster, primary *Node) {
	b.Helper()
	var names []string
	for _, n := range c.nodes {
		if n != primary {
			names = append(names, n.Name)
		}
	}
	waitFor(b, 60*time.Second, fmt.Sprintf("%v streaming from %s", names, primary.Name), func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, primary.PGConn())
		if err != nil {
			return false, err
		}
		defer conn.Close(context.Background())
		var k int
		err = conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND application_name = ANY($1)",
			names).Scan(&k)
		return k == len(names), err
	})
}

// catchUp waits until every standby has replayed all the WAL the primary
// had written when called, so that one run's replication backlog does not
// cost CPU in the next.
func catchUp(b *testing.B, c *cluster, primary *Node) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	var lsn string
	err := pgQueryRow(ctx, primary, "SELECT pg_current_wal_lsn()::text", &lsn)
	cancel()
	if err != nil {
		b.Fatalf("read the primary's WAL position: %v", err)
	}
	want := len(c.nodes) - 1
	waitFor(b, 120*time.Second, fmt.Sprintf("%d standbys replayed up to %s", want, lsn), func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var k int
		err := pgQueryRow(ctx, primary, `SELECT count(*) FROM pg_stat_replication
			WHERE application_name <> '`+gateName+`' AND replay_lsn >= '`+lsn+`'::pg_lsn`, &k)
		return k >= want, err
	})
}

// procCPU is a process's user+system CPU time in clock ticks from
// /proc/<pid>/stat, with its start time to notice a reused pid (nil when
// unreadable).
func procCPU(pid int) []uint64 {
	if pid <= 0 {
		return nil
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return nil
	}
	f := strings.Fields(string(data)[i+1:]) // f[0] is the state (field 3)
	if len(f) < 20 {
		return nil
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	start, _ := strconv.ParseUint(f[19], 10, 64)
	return []uint64{ut + st, start}
}

// cpuDelta is the CPU ms between two procCPU readings of one process
// (Linux's USER_HZ is 100), or -1.
func cpuDelta(before, after []uint64) float64 {
	if before == nil || after == nil || before[1] != after[1] {
		return -1
	}
	return float64(after[0]-before[0]) * 10
}

// readCPUStat returns /proc/stat's aggregate cpu line (jiffies).
func readCPUStat() []uint64 {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil
	}
	line, _, _ := strings.Cut(string(data), "\n")
	var v []uint64
	for _, f := range strings.Fields(line)[1:] {
		n, _ := strconv.ParseUint(f, 10, 64)
		v = append(v, n)
	}
	return v
}

// loadSummary is the 1-minute load average now and the busy and steal
// shares of CPU time between two /proc/stat readings.
func loadSummary(before, after []uint64) string {
	load := "?"
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = strings.Fields(string(data))[0]
	}
	if len(before) < 8 || len(after) < 8 {
		return load
	}
	var total uint64
	for i := range after {
		total += after[i] - before[i]
	}
	if total == 0 {
		return load
	}
	idle := after[3] - before[3] + after[4] - before[4]
	steal := after[7] - before[7]
	return fmt.Sprintf("%s, cpu busy %d%%, steal %d%%", load, 100*(total-idle)/total, 100*steal/total)
}

// pollBool polls cond every 100ms until it holds or timeout passes, and
// returns its last answer.
func pollBool(timeout time.Duration, cond func() (bool, string)) (bool, string) {
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok || time.Now().After(deadline) {
			return ok, state
		}
		time.Sleep(100 * time.Millisecond) // polling interval, not synchronisation
	}
}

// pgBinary finds a PostgreSQL client program: PATH first, then Debian's
// PostgreSQL 15 directory.
func pgBinary(tb testing.TB, name string) string {
	tb.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	p := filepath.Join("/usr/lib/postgresql/15/bin", name)
	if _, err := os.Stat(p); err != nil {
		tb.Fatalf("%s not found in PATH nor in /usr/lib/postgresql/15/bin", name)
	}
	return p
}

// runCmd runs a client program (as the test's own user: it only talks to
// PostgreSQL over TCP and writes into the test's temp dirs) and returns
// its combined output.
func runCmd(tb testing.TB, timeout time.Duration, env []string, name string, args ...string) (string, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// readPgbenchLog returns the latency (µs) of every transaction in the
// per-transaction logs prefix.<pid>[.<thread>] (format: client_id
// transaction_no time script_no time_epoch time_us [schedule_lag]).
func readPgbenchLog(b *testing.B, prefix string) []float64 {
	b.Helper()
	files, err := filepath.Glob(prefix + ".*")
	if err != nil {
		b.Fatal(err)
	}
	var lat []float64
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 6 {
				b.Fatalf("%s: unexpected line %q", f, sc.Text())
			}
			us, err := strconv.ParseFloat(fs[2], 64)
			if err != nil { // "failed" or "skipped"
				b.Fatalf("%s: transaction not completed: %q", f, sc.Text())
			}
			lat = append(lat, us)
		}
		_ = fh.Close()
		if err := sc.Err(); err != nil {
			b.Fatal(err)
		}
	}
	return lat
}

// percentile is the nearest-rank p-th percentile of sorted values.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
