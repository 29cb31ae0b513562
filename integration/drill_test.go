package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// drillJSON is `raftgres drill --format json` as read by an audit tool.
type drillJSON struct {
	Cluster string   `json:"cluster"`
	Members []string `json:"members"`
	Mode    string   `json:"mode"`
	DryRun  bool     `json:"dry_run"`
	Plan    struct {
		Primary  string   `json:"primary"`
		SwitchTo string   `json:"switch_to"`
		HardStop string   `json:"hard_stop"`
		Steps    []string `json:"steps"`
	} `json:"plan"`
	Started time.Time `json:"started"`
	Ended   time.Time `json:"ended"`
	Steps   []struct {
		Name                  string    `json:"name"`
		From                  string    `json:"from"`
		To                    string    `json:"to"`
		Started               time.Time `json:"started"`
		Ended                 time.Time `json:"ended"`
		RTOSeconds            float64   `json:"rto_seconds"`
		StreamingAfterSeconds float64   `json:"streaming_after_seconds"`
		Error                 string    `json:"error"`
	} `json:"steps"`
	Writes       int      `json:"writes"`
	RPO          int      `json:"rpo"`
	FinalPrimary string   `json:"final_primary"`
	Pass         bool     `json:"pass"`
	Failures     []string `json:"failures"`
}

// TestDrill runs `raftgres drill --failover` on real clusters, in
// synchronous and asynchronous mode: it refuses a paused cluster;
// --dry-run names the members and
// changes nothing; the drill then switches over and fails over hard (the
// primary changes at each step), every member streams at the end, the
// probe's table is gone, and in synchronous mode no acknowledged write is
// lost.
func TestDrill(t *testing.T) {
	requireIntegration(t)
	for _, tc := range []struct {
		name, dcs, mode string
	}{
		{"sync", syncDCS, "synchronous"},
		{"async", fastDCS, "asynchronous"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newPGClusterDCS(t, 3, nil, tc.dcs)
			primary := c.waitPrimary(120*time.Second, c.nodes...)
			c.waitStreaming(primary)
			cfg := c.nodes[0].Config

			// Refused on an unhealthy cluster: paused (maintenance mode).
			if _, stderr, code := runCLI(t, "pause", "-c", cfg); code != 0 {
				t.Fatalf("pause: exit %d: %s", code, stderr)
			}
			waitFor(t, 30*time.Second, "the pause to be seen", func() (bool, error) {
				st, err := c.state()
				return err == nil && st.Config.Pause, err
			})
			if out, stderr, code := runCLI(t, "drill", "--failover", "--force", "-c", cfg); code != 1 || !strings.Contains(stderr, "paused") {
				t.Fatalf("drill on a paused cluster: exit %d, want 1 saying it is paused:\n%s%s", code, out, stderr)
			}
			if drillTableExists(t, primary) {
				t.Fatalf("a refused drill created the probe's table")
			}
			if _, stderr, code := runCLI(t, "resume", "-c", cfg); code != 0 {
				t.Fatalf("resume: exit %d: %s", code, stderr)
			}
			before := mustState(t, c)

			// --dry-run: waits out the refusal while the API does not yet
			// see every replica streaming, as restart --rolling does.
			var dry drillJSON
			waitFor(t, 60*time.Second, "drill --dry-run to accept the cluster", func() (bool, error) {
				out, stderr, code := runCLI(t, "drill", "--dry-run", "--failover", "--format", "json", "-c", cfg)
				if code != 0 {
					return false, fmt.Errorf("exit %d: %s", code, stderr)
				}
				return true, json.Unmarshal([]byte(out), &dry)
			})
			if !dry.DryRun || !dry.Pass || dry.Plan.Primary != primary.Name || dry.Plan.SwitchTo == "" ||
				dry.Plan.SwitchTo == primary.Name || dry.Plan.HardStop != dry.Plan.SwitchTo || len(dry.Plan.Steps) != 2 ||
				len(dry.Steps) != 0 || dry.Mode != tc.mode {
				t.Fatalf("dry run: %+v", dry)
			}
			// The same plan in words.
			text, stderr, code := runCLI(t, "drill", "--dry-run", "--failover", "-c", cfg)
			if code != 0 || !strings.Contains(text, "dry run: nothing done") ||
				!strings.Contains(text, "switchover from "+primary.Name+" to "+dry.Plan.SwitchTo) ||
				!strings.Contains(text, "stop "+dry.Plan.HardStop+"'s PostgreSQL immediate") {
				t.Fatalf("drill --dry-run: exit %d:\n%s%s", code, text, stderr)
			}
			after := mustState(t, c)
			if after.Leader.Holder != before.Leader.Holder || after.Leader.Epoch != before.Leader.Epoch || after.Failover != nil {
				t.Fatalf("--dry-run changed the cluster: key %+v -> %+v, pending %+v", before.Leader, after.Leader, after.Failover)
			}
			if exists := drillTableExists(t, primary); exists {
				t.Fatalf("--dry-run created the probe's table")
			}

			begin := time.Now()
			out, stderr, code := runCLI(t, "drill", "--failover", "--force", "--format", "json", "-c", cfg)
			t.Logf("drill (%s), stderr:\n%s\nstdout:\n%s", time.Since(begin).Round(time.Millisecond), stderr, out)
			var r drillJSON
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatalf("drill output is not one JSON object: %v", err)
			}
			if code != 0 || !r.Pass {
				t.Fatalf("drill: exit %d, pass %v, failures %q", code, r.Pass, r.Failures)
			}
			if r.Cluster == "" || len(r.Members) != 3 || r.Mode != tc.mode || r.Started.IsZero() || r.Ended.Before(r.Started) {
				t.Errorf("report header: %+v", r)
			}
			if len(r.Steps) != 2 || r.Steps[0].Name != "switchover" || r.Steps[1].Name != "failover" {
				t.Fatalf("steps %+v, want the switchover then the failover", r.Steps)
			}
			sw, fo := r.Steps[0], r.Steps[1]
			if sw.From != primary.Name || sw.To != dry.Plan.SwitchTo {
				t.Errorf("switchover %s -> %s, want %s -> %s", sw.From, sw.To, primary.Name, dry.Plan.SwitchTo)
			}
			if fo.From != sw.To || fo.To == "" || fo.To == fo.From {
				t.Errorf("failover %s -> %s: the primary did not move from the switchover's %s", fo.From, fo.To, sw.To)
			}
			for _, s := range r.Steps {
				if s.RTOSeconds <= 0 || s.StreamingAfterSeconds <= 0 || s.Ended.Before(s.Started) || s.Error != "" {
					t.Errorf("step figures %+v", s)
				}
			}
			if r.Writes == 0 || r.FinalPrimary != fo.To {
				t.Errorf("writes %d read back on %q, want some on %s", r.Writes, r.FinalPrimary, fo.To)
			}
			if tc.mode == "synchronous" && r.RPO != 0 {
				t.Errorf("RPO %d in synchronous mode", r.RPO)
			}
			t.Logf("%s: RTO switchover %.3fs, failover %.3fs; streaming after %.3fs, %.3fs; RPO %d of %d",
				tc.mode, sw.RTOSeconds, fo.RTOSeconds, sw.StreamingAfterSeconds, fo.StreamingAfterSeconds, r.RPO, r.Writes)

			// Every member streams from the final primary, which holds the
			// key; the probe's table is gone; no request is left pending.
			st := mustState(t, c)
			if st.Leader.Holder != fo.To || st.Failover != nil {
				t.Fatalf("after the drill: key %+v, pending %+v; want %s holding, nothing pending", st.Leader, st.Failover, fo.To)
			}
			final := c.byName(fo.To)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var streaming int
			if err := pgQueryRow(ctx, final, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND application_name <> 'raftgres_fence'", &streaming); err != nil || streaming != 2 {
				t.Errorf("%d members streaming from %s right after the drill (%v), want 2", streaming, final.Name, err)
			}
			if drillTableExists(t, final) {
				t.Errorf("the probe's table is still there")
			}
		})
	}
}

func drillTableExists(t *testing.T, n *Node) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var exists bool
	if err := pgQueryRow(ctx, n, "SELECT to_regclass('raftgres_drill') IS NOT NULL", &exists); err != nil {
		t.Fatal(err)
	}
	return exists
}
