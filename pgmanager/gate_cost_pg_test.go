package pgmanager

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"raftgres/internal/boottime"
	"raftgres/internal/testutil"
)

// TestGateCost measures the commit gate alone on one real primary (no
// standby, synchronous_standby_names = the gate): pgbench tpcb-like,
// scale 10, 1 and 8 clients, runs alternating between the gate and
// synchronous_commit=local (no gate), and the gate's CPU per transaction
// (this process's, which runs only the gate, plus the gate's walsender).
// It is the quick loop for the gate's cost (integration's
// BenchmarkCommitGate is the judge): run with
//
//	RAFTGRES_INTEGRATION=1 GATE_COST_SECONDS=20 GATE_COST_FSYNC=on \
//	  go test -run TestGateCost -count=1 -v -cpuprofile /tmp/gate.prof ./pgmanager/
//
// GATE_COST_SECONDS per client count and mode (in 5 s runs), GATE_COST_FSYNC
// on or off (default off).
func TestGateCost(t *testing.T) {
	secs, _ := strconv.Atoi(os.Getenv("GATE_COST_SECONDS"))
	if secs <= 0 {
		t.Skip("set GATE_COST_SECONDS (and RAFTGRES_INTEGRATION=1) to measure the gate's cost")
	}
	fsync := os.Getenv("GATE_COST_FSYNC")
	if fsync == "" {
		fsync = "off"
	}
	e := requirePG(t)
	e.tweak = func(_ string, c *Config) {
		c.Parameters["fsync"] = fsync
		c.Parameters["shared_buffers"] = "128MB"
		c.Parameters["max_wal_size"] = "1GB"
	}
	ctx := ctxT(t, time.Duration(secs)*4*time.Second+5*time.Minute)
	p := e.initPrimaryWith(t, ctx, "pg1", gateOnly)
	runGate(t, p, newLease(boottime.Now().Add(time.Hour)))
	testutil.WaitFor(t, 10*time.Second, "gate connected", func() (bool, error) { return p.GateConnected(), nil })

	cc, err := p.gateConfig()
	if err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "PGPASSWORD=super-secret", "PGHOST="+cc.Host, fmt.Sprintf("PGPORT=%d", cc.Port),
		"PGUSER=postgres", "PGDATABASE=postgres")
	without := append(slices.Clone(env), "PGOPTIONS=-c synchronous_commit=local")
	pgbench := filepath.Join(pgBin, "pgbench")
	run := func(env []string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, pgbench, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("pgbench %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run(without, "-i", "-q", "-s", "10")
	tpsRE := regexp.MustCompile(`(?m)^tps = ([0-9.]+) \(without`)
	xactRE := regexp.MustCompile(`(?m)^number of transactions actually processed: ([0-9]+)`)
	run(env, "-c", "8", "-j", "2", "-T", "3") // warm-up
	slice := min(5, secs)
	for _, clients := range []int{1, 8} {
		var costs []float64
		var gateCPU, gateXacts, fenceCPU float64
		for k := range max(1, secs/slice) {
			modes := []string{"gate", "no-gate"}
			if k%2 == 1 {
				modes = []string{"no-gate", "gate"}
			}
			tps := map[string]float64{}
			for _, mode := range modes {
				en := env
				if mode == "no-gate" {
					en = without
				}
				if err := p.Exec(ctx, "CHECKPOINT"); err != nil {
					t.Fatal(err)
				}
				fpid := gatePID(ctx, t, p)
				self0, f0 := selfCPU(), pidCPU(fpid)
				out := run(en, "-c", strconv.Itoa(clients), "-j", strconv.Itoa(min(clients, 2)), "-T", strconv.Itoa(slice))
				self1, f1 := selfCPU(), pidCPU(fpid)
				m, x := tpsRE.FindStringSubmatch(out), xactRE.FindStringSubmatch(out)
				if m == nil || x == nil {
					t.Fatalf("no tps in pgbench output:\n%s", out)
				}
				tps[mode], _ = strconv.ParseFloat(m[1], 64)
				if mode == "gate" {
					n, _ := strconv.ParseFloat(x[1], 64)
					gateCPU += (self1 - self0).Seconds()
					fenceCPU += (f1 - f0).Seconds()
					gateXacts += n
				}
			}
			costs = append(costs, 100*(tps["no-gate"]-tps["gate"])/tps["no-gate"])
			t.Logf("fsync=%s clients=%d slice %d: gate %.0f tps, no-gate %.0f tps, cost %.1f %%", fsync, clients, k, tps["gate"], tps["no-gate"], costs[len(costs)-1])
		}
		slices.Sort(costs)
		fmt.Printf("gate cost: fsync=%s clients=%d: median cost %.1f %% over %d pairs %v; gate cpu %.1f µs/xact (agent %.1f + walsender %.1f)\n",
			fsync, clients, costs[len(costs)/2], len(costs), roundAll(costs), 1e6*(gateCPU+fenceCPU)/gateXacts, 1e6*gateCPU/gateXacts, 1e6*fenceCPU/gateXacts)
	}
}

func roundAll(v []float64) []string {
	var s []string
	for _, x := range v {
		s = append(s, strconv.FormatFloat(x, 'f', 1, 64))
	}
	return s
}

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pidCPU is a process's user+system CPU time (0 when unreadable).
func pidCPU(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(data), ')')
	f := strings.Fields(string(data)[i+1:])
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}
