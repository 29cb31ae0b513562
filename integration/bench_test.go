package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

// benchDCS is the LAN-fast setting the failover benchmark measures:
// ttl 2s, renewals every 200ms, retry_timeout 500ms (margin ttl/3).
const benchDCS = "{ttl: 2, loop_wait: 200ms, retry_timeout: 500ms, maximum_lag_on_failover: 1048576}"

const benchRuns = 5

type series struct {
	Name   string    `json:"name"`
	Unit   string    `json:"unit"`
	Values []float64 `json:"values"`
}

func (s series) stats() (lo, med, hi float64) {
	v := slices.Clone(s.Values)
	slices.Sort(v)
	return v[0], v[len(v)/2], v[len(v)-1]
}

// BenchmarkFailover measures, over 5 runs each on 127.0.0.1 with real
// PostgreSQL: bootstrap of 3 members; unplanned primary loss (kill -9 of
// its agent) to the first acknowledged write on the new primary; switchover
// unavailability; a PostgreSQL-only crash of the primary to its first
// acknowledged write again; acknowledged writes lost; agent RSS. It prints
// min/median/max and writes bin/bench-failover.json. Run with make bench.
func BenchmarkFailover(b *testing.B) {
	if binPath == "" {
		b.Skip("set RAFTGRES_INTEGRATION=1 (make bench does)")
	}
	res := map[string]*series{}
	add := func(name, unit string, v float64) {
		if res[name] == nil {
			res[name] = &series{Name: name, Unit: unit}
		}
		res[name].Values = append(res[name].Values, v)
	}
	for range benchRuns {
		start := time.Now()
		c := newPGClusterDCS(b, 3, nil, benchDCS)
		c.waitPrimary(120*time.Second, c.nodes...)
		add("bootstrap_3_members", "s", time.Since(start).Seconds())
		for _, n := range c.nodes {
			n.Stop()
		}
	}
	c := newPGClusterDCS(b, 3, nil, benchDCS)
	primary := c.waitPrimary(120*time.Second, c.nodes...)
	p := startProbe(b, c, primary)
	for range benchRuns {
		primary = c.waitPrimary(120*time.Second, c.nodes...)
		c.waitStreaming(primary)
		waitAcks(b, p, 20)
		killed := time.Now()
		primary.Kill9()
		var first time.Time
		waitFor(b, 60*time.Second, "a write acknowledged by a new primary", func() (bool, error) {
			at, ok := p.firstAckAfter(killed, primary.Name)
			first = at
			return ok, nil
		})
		add("unplanned_failover", "s", first.Sub(killed).Seconds())
		newPrimary := c.byName(p.ackOn[len(p.ackOn)-1])
		lost, err := p.missingFrom(newPrimary, primary.Name)
		if err != nil {
			b.Fatal(err)
		}
		add("acked_writes_lost_async", "writes", float64(len(lost)))
		primary.Start()
	}
	for range benchRuns {
		primary = c.waitPrimary(120*time.Second, c.nodes...)
		c.waitStreaming(primary)
		waitAcks(b, p, 20)
		st, _ := c.state()
		asked := time.Now()
		c.apply(switchoverTo(primary.Name, ""))
		waitFor(b, 30*time.Second, "switchover done and writes flowing", func() (bool, error) {
			s, err := c.state()
			if err != nil || s.Leader.Epoch == st.Leader.Epoch || s.Failover != nil {
				return false, err
			}
			_, ok := p.firstAckAfter(asked, primary.Name)
			return ok, nil
		})
		first, _ := p.firstAckAfter(asked, primary.Name)
		add("switchover_unavailability", "s", p.gapAround(asked, first).Seconds())
	}
	for range benchRuns {
		primary = c.waitPrimary(120*time.Second, c.nodes...)
		// Crashes closer together than ttl count as a crash loop (the
		// primary then releases the key): space them out.
		healthy := time.Now()
		waitFor(b, 30*time.Second, "writes for longer than ttl", func() (bool, error) {
			last, _ := p.firstAckAfter(healthy.Add(3*time.Second), "")
			return !last.IsZero(), nil
		})
		crashed := time.Now()
		if err := syscall.Kill(readPID(b, primary.PGDataDir()+"/postmaster.pid"), syscall.SIGKILL); err != nil {
			b.Fatal(err)
		}
		waitFor(b, 60*time.Second, "writes after a postgres crash", func() (bool, error) {
			_, ok := p.firstAckAfter(crashed.Add(50*time.Millisecond), "")
			return ok, nil
		})
		first, _ := p.firstAckAfter(crashed.Add(50*time.Millisecond), "")
		add("postgres_crash_recovery", "s", first.Sub(crashed).Seconds())
	}
	for _, n := range c.nodes {
		add("agent_rss", "kB", float64(vmRSS(b, n.PID())))
	}
	report(b, res)
}

func waitAcks(b *testing.B, p *probe, n int) {
	p.mu.Lock()
	base := len(p.acked)
	p.mu.Unlock()
	waitFor(b, 60*time.Second, "probe writes flowing", func() (bool, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.acked) >= base+n, nil
	})
}

func report(b *testing.B, res map[string]*series) {
	names := []string{"bootstrap_3_members", "unplanned_failover", "switchover_unavailability",
		"postgres_crash_recovery", "acked_writes_lost_async", "agent_rss"}
	var out []series
	for _, name := range names {
		s := res[name]
		if s == nil {
			continue
		}
		lo, med, hi := s.stats()
		fmt.Printf("%-28s min %8.3f  median %8.3f  max %8.3f %s  (%d runs)\n", name, lo, med, hi, s.Unit, len(s.Values))
		b.ReportMetric(med, name+"-median-"+s.Unit)
		out = append(out, *s)
	}
	data, _ := json.MarshalIndent(map[string]any{"dcs": benchDCS, "series": out, "at": time.Now().UTC()}, "", "  ")
	path := filepath.Join(moduleRoot(b), "bin", "bench-failover.json")
	_ = os.MkdirAll(filepath.Dir(path), 0o755)
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		b.Logf("write %s: %v", path, err)
	} else {
		fmt.Printf("wrote %s\n", path)
	}
}

func moduleRoot(tb testing.TB) string {
	wd, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	return filepath.Dir(wd) // tests run in integration/
}
