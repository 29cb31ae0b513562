package ops

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"raftgres/api"
)

func TestPlanDrill(t *testing.T) {
	lag := func(n int64) *int64 { return &n }
	view := api.ClusterView{Scope: "demo", Members: []api.ClusterMember{
		{Name: "pg1", Role: api.ClusterLeader},
		{Name: "pg2", Role: api.ClusterReplica, Lag: lag(4096)},
		{Name: "pg3", Role: api.ClusterSyncStandby, Lag: lag(0)},
	}}
	for _, tc := range []struct {
		name     string
		replicas []string
		failover bool
		want     DrillPlan
		err      error
	}{
		{"switchover only", []string{"pg2", "pg3"}, false,
			DrillPlan{Primary: "pg1", SwitchTo: "pg3"}, nil},
		{"with the hard failover", []string{"pg2", "pg3"}, true,
			DrillPlan{Primary: "pg1", SwitchTo: "pg3", HardStop: "pg3"}, nil},
		{"only the streaming replicas count", []string{"pg2"}, true,
			DrillPlan{Primary: "pg1", SwitchTo: "pg2", HardStop: "pg2"}, nil},
		{"nobody streams", nil, false, DrillPlan{}, ErrUnhealthy},
		{"synchronous mode: the synchronous standby, though further behind", []string{"pg2", "pg3"}, true,
			DrillPlan{Primary: "pg1", SwitchTo: "pg2", HardStop: "pg2"}, nil},
		{"synchronous mode: the synchronous standby does not stream", []string{"pg3"}, false, DrillPlan{}, ErrUnhealthy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			view := view
			if strings.HasPrefix(tc.name, "synchronous mode") {
				view.SynchronousMode = true
				view.Members = []api.ClusterMember{view.Members[0],
					{Name: "pg2", Role: api.ClusterSyncStandby, Lag: lag(4096)}, {Name: "pg3", Role: api.ClusterReplica, Lag: lag(0)}}
			}
			got, err := PlanDrill(view, ClusterHealth{Primary: "pg1", Replicas: tc.replicas}, tc.failover)
			if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if err != nil {
				return
			}
			if got.Primary != tc.want.Primary || got.SwitchTo != tc.want.SwitchTo || got.HardStop != tc.want.HardStop {
				t.Fatalf("plan %+v, want %+v", got, tc.want)
			}
			if n := 1 + btoi(tc.failover); len(got.Steps) != n {
				t.Fatalf("steps %q, want %d", got.Steps, n)
			}
			if !strings.Contains(got.Steps[0], "from pg1 to "+tc.want.SwitchTo) {
				t.Errorf("step 1 %q does not name the switchover", got.Steps[0])
			}
			if tc.failover && !strings.Contains(got.Steps[1], "stop "+tc.want.HardStop+"'s PostgreSQL immediate") {
				t.Errorf("step 2 %q does not name the member stopped hard", got.Steps[1])
			}
		})
	}
}

func TestLongestGap(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	at := func(ms ...int) []ProbeAck {
		var out []ProbeAck
		for i, m := range ms {
			out = append(out, ProbeAck{ID: int64(i), At: t0.Add(time.Duration(m) * time.Millisecond)})
		}
		return out
	}
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	for _, tc := range []struct {
		name     string
		acks     []ProbeAck
		from, to int
		want     time.Duration
	}{
		{"steady writes", at(0, 10, 20, 30, 40), 15, 35, ms(10)},
		{"the gap across the step's start counts from the last write before it", at(0, 10, 500, 510), 100, 510, ms(490)},
		{"the longest of several", at(0, 100, 150, 1150, 1160), 50, 1200, ms(1000)},
		{"writes after the step end it", at(0, 10, 300, 2000), 5, 400, ms(290)},
		{"writes never resumed: the gap runs to the end", at(0, 10), 20, 3000, ms(2990)},
		{"no write at all", nil, 0, 700, ms(700)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := LongestGap(tc.acks, t0.Add(ms(tc.from)), t0.Add(ms(tc.to))); got != tc.want {
				t.Fatalf("LongestGap = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestMissingWritesAndJudge(t *testing.T) {
	acks := []ProbeAck{{ID: 1}, {ID: 2}, {ID: 4}, {ID: 7}}
	missing := MissingWrites(acks, map[int64]bool{1: true, 3: true, 4: true})
	if !slices.Equal(missing, []int64{2, 7}) {
		t.Fatalf("missing %v, want [2 7] (3 was never acknowledged)", missing)
	}
	ok := func() DrillReport {
		return DrillReport{Mode: modeSync, Plan: DrillPlan{Primary: "pg1", SwitchTo: "pg2", HardStop: "pg2"}, FinalPrimary: "pg3",
			Steps: []DrillStep{{Name: StepSwitchover, From: "pg1", To: "pg2"}, {Name: StepFailover, From: "pg2", To: "pg3"}}}
	}
	for _, tc := range []struct {
		name string
		edit func(r *DrillReport)
		want string // "" = pass, else a failure containing it
	}{
		{"both steps, nothing lost", func(*DrillReport) {}, ""},
		{"lost writes in synchronous mode", func(r *DrillReport) { r.RPO = 2 }, "RPO 2 in synchronous mode"},
		{"lost writes in asynchronous mode are reported, not failed", func(r *DrillReport) { r.RPO, r.Mode = 2, modeAsync }, ""},
		{"a step failed", func(r *DrillReport) { r.Steps[1].Error = "not whole again" }, "failover: not whole again"},
		{"the primary did not move", func(r *DrillReport) { r.Steps[1].To = "pg2" }, "did not change"},
		{"the failover never ran", func(r *DrillReport) { r.Steps = r.Steps[:1] }, "1 of 2 steps ran"},
		{"nothing read back", func(r *DrillReport) { r.FinalPrimary = "" }, "could not be read back"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ok()
			tc.edit(&r)
			r.Judge()
			if r.Pass != (tc.want == "") {
				t.Fatalf("pass %v, failures %q", r.Pass, r.Failures)
			}
			if tc.want != "" && !strings.Contains(strings.Join(r.Failures, "; "), tc.want) {
				t.Fatalf("failures %q, want one saying %q", r.Failures, tc.want)
			}
			sum := r.Summary()
			if last := strings.TrimSpace(sum[strings.LastIndex(strings.TrimSpace(sum), "\n")+1:]); r.Pass != (last == "PASS") {
				t.Errorf("summary ends %q, pass %v", last, r.Pass)
			}
		})
	}
	dry := DrillReport{Cluster: "demo", Mode: modeAsync, DryRun: true, Plan: DrillPlan{Steps: []string{"switchover from pg1 to pg2"}}}
	if s := dry.Summary(); !strings.Contains(s, "dry run: nothing done") || !strings.Contains(s, "1. switchover from pg1 to pg2") {
		t.Errorf("dry-run summary:\n%s", s)
	}
}

func TestTargetConnString(t *testing.T) {
	for _, tc := range []struct {
		base     string
		wantUser string
		wantDB   string
	}{
		{"postgres://drill:s%40cret@/app?sslmode=disable", "drill", "app"},
		{"postgres://drill:pw@oldhost:5433/app", "drill", "app"},
		{"user=drill password='a b' dbname=app host=oldhost port=1", "drill", "app"},
		{"", "", ""},
	} {
		s, err := TargetConnString(tc.base, "10.0.0.7", 6432)
		if err != nil {
			t.Fatalf("%q: %v", tc.base, err)
		}
		cfg, err := pgx.ParseConfig(s)
		if err != nil {
			t.Fatalf("%q -> %q: %v", tc.base, s, err)
		}
		if cfg.Host != "10.0.0.7" || cfg.Port != 6432 {
			t.Errorf("%q -> host %s port %d, want the member's", tc.base, cfg.Host, cfg.Port)
		}
		if tc.wantUser != "" && (cfg.User != tc.wantUser || cfg.Database != tc.wantDB) {
			t.Errorf("%q -> user %s db %s", tc.base, cfg.User, cfg.Database)
		}
	}
}
