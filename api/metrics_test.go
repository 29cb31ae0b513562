package api

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"raftgres/failover"
	"raftgres/raftstore"
)

// scrape returns the /metrics body.
func scrape(t *testing.T, base string) string {
	t.Helper()
	r := call(t, "GET", base+"/metrics", "", "", "")
	if r.status != 200 {
		t.Fatalf("/metrics: %d %s", r.status, r.body)
	}
	return string(r.body)
}

func checkSeries(t *testing.T, body string, want, absent []string) {
	t.Helper()
	for _, s := range want {
		if !strings.Contains(body, s+"\n") {
			t.Errorf("/metrics lacks %q", s)
		}
	}
	for _, s := range absent {
		if strings.Contains(body, s) {
			t.Errorf("/metrics has %q", s)
		}
	}
}

// TestMetricsLeaderChanges: the failover/switchover timestamps,
// the duration histogram by cause and the last election's info are built
// from History as the FSM recorded it.
func TestMetricsLeaderChanges(t *testing.T) {
	st := startStore(t)
	base := startAPI(t, st, adminConfig())
	commit := func(cmd raftstore.Command) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := raftstore.Commit(ctx, st, cmd); err != nil {
			t.Fatalf("commit %T: %v", cmd, err)
		}
	}
	t0 := time.Unix(1_700_000_000, 0).UTC()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	hand := func(holder, cause, choice string, ms int) {
		t.Helper()
		k := st.State().Leader
		commit(raftstore.SetLeader{Holder: holder, PrevEpoch: k.Epoch, PrevRev: k.Rev, Reason: "test",
			Cause: cause, Choice: choice, Actor: "test", At: at(ms)})
	}
	renew := func(holder string, ms int) {
		t.Helper()
		commit(raftstore.RenewLeader{Holder: holder, Epoch: st.State().Leader.Epoch, At: at(ms)})
	}

	checkSeries(t, scrape(t, base), []string{
		`raftgres_last_failover_timestamp_seconds{name="n1",scope="test"} 0`,
		`raftgres_last_switchover_timestamp_seconds{name="n1",scope="test"} 0`,
		`patroni_postgresql_last_failover_timestamp_seconds{name="n1",scope="test"} 0`,
		`raftgres_failover_duration_seconds_count{cause="failover",name="n1",scope="test"} 0`,
		`raftgres_failover_duration_seconds_count{cause="manual_failover",name="n1",scope="test"} 0`,
		`raftgres_failover_duration_seconds_count{cause="switchover",name="n1",scope="test"} 0`,
	}, []string{"raftgres_last_election_info{"})

	commit(raftstore.RegisterMember{Name: "n2", APIAddr: "http://n2", Tags: raftstore.DefaultTags(), At: at(0)})
	hand("n1", raftstore.CauseBootstrap, "", 0)
	renew("n1", 300)
	renew("n1", 1000)
	hand("n2", raftstore.CauseFailover, "only eligible member, at 0/3000060", 4000) // lease of n1 ran out
	renew("n2", 4200)                                                               // 3.2 s after n1's last renewal
	renew("n2", 9900)
	hand("n1", raftstore.CauseSwitchover, "", 10000)
	renew("n1", 10300) // 0.4 s
	// The switchover is the newest change.
	checkSeries(t, scrape(t, base), []string{
		`raftgres_last_failover_timestamp_seconds{name="n1",scope="test"} 1700000004`,
		`patroni_postgresql_last_failover_timestamp_seconds{name="n1",scope="test"} 1700000010`,
	}, nil)
	hand("", raftstore.CauseRelease, "", 12000)
	hand("n2", raftstore.CauseManualFailover, "requested candidate, at 0/4000000", 12500)
	renew("n2", 13000) // 2.7 s after n1's last renewal, through the release

	checkSeries(t, scrape(t, base), []string{
		`raftgres_last_failover_timestamp_seconds{name="n1",scope="test"} 1700000012.5`,
		`raftgres_last_switchover_timestamp_seconds{name="n1",scope="test"} 1700000010`,
		`patroni_postgresql_last_failover_timestamp_seconds{name="n1",scope="test"} 1700000012.5`,
		`raftgres_failover_duration_seconds_bucket{cause="failover",name="n1",scope="test",le="3"} 0`,
		`raftgres_failover_duration_seconds_bucket{cause="failover",name="n1",scope="test",le="3.5"} 1`,
		`raftgres_failover_duration_seconds_bucket{cause="failover",name="n1",scope="test",le="+Inf"} 1`,
		`raftgres_failover_duration_seconds_sum{cause="failover",name="n1",scope="test"} 3.2`,
		`raftgres_failover_duration_seconds_count{cause="failover",name="n1",scope="test"} 1`,
		`raftgres_failover_duration_seconds_bucket{cause="switchover",name="n1",scope="test",le="0.25"} 0`,
		`raftgres_failover_duration_seconds_bucket{cause="switchover",name="n1",scope="test",le="0.5"} 1`,
		`raftgres_failover_duration_seconds_count{cause="switchover",name="n1",scope="test"} 1`,
		`raftgres_failover_duration_seconds_bucket{cause="manual_failover",name="n1",scope="test",le="2"} 0`,
		`raftgres_failover_duration_seconds_bucket{cause="manual_failover",name="n1",scope="test",le="3"} 1`,
		`raftgres_failover_duration_seconds_count{cause="manual_failover",name="n1",scope="test"} 1`,
		`raftgres_last_election_info{cause="manual_failover",choice="requested candidate, at 0/4000000",member="n2",name="n1",scope="test"} 1`,
	}, []string{`cause="bootstrap"`, `cause="release"`})
	if testing.Verbose() {
		t.Log(scrape(t, base))
	}
}

// TestMetricsLeaseRemaining: raftgres_lease_remaining_seconds is what is
// left of this primary's lease, and 0 whenever it holds none.
func TestMetricsLeaseRemaining(t *testing.T) {
	t.Parallel()
	var lease metric
	for _, m := range newMetrics("test", "n1") {
		if strings.Contains(m.desc.String(), `"raftgres_lease_remaining_seconds"`) {
			lease = m
		}
	}
	if lease.value == nil {
		t.Fatal("raftgres_lease_remaining_seconds is not defined")
	}
	now := time.Now()
	primary := failover.Local{Member: "n1", HasData: true, Epoch: 4, LeaseUntil: now.Add(1500 * time.Millisecond)}
	primary.PG.Running = true
	key := raftstore.LeaderKey{Holder: "n1", Epoch: 4}
	for _, tc := range []struct {
		name string
		mod  func(v *nodeView)
		want float64
	}{
		{name: "valid lease", want: 1.5},
		{name: "lease ended", mod: func(v *nodeView) { v.now = now.Add(2 * time.Second) }},
		{name: "lease ends now", mod: func(v *nodeView) { v.now = v.local.LeaseUntil }},
		{name: "no lease", mod: func(v *nodeView) { v.local.LeaseUntil = time.Time{} }},
		{name: "key held by another member", mod: func(v *nodeView) { v.st.Leader.Holder = "n2" }},
		{name: "lease of an older epoch", mod: func(v *nodeView) { v.st.Leader.Epoch = 5 }},
		{name: "postgres stopped", mod: func(v *nodeView) { v.local.PG.Running = false }},
		{name: "raft-only agent", mod: func(v *nodeView) { v.hasPG = false }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := nodeView{name: "n1", st: raftstore.NewState(), local: primary, hasPG: true, now: now}
			v.st.Leader = key
			if tc.mod != nil {
				tc.mod(&v)
			}
			if got := lease.value(v, &metricInput{}); got != tc.want {
				t.Fatalf("lease remaining %v, want %v", got, tc.want)
			}
		})
	}
}

// TestMetricsVIPHeld: raftgres_vip_held is the supervisor's live view.
func TestMetricsVIPHeld(t *testing.T) {
	t.Parallel()
	var held metric
	for _, m := range newMetrics("test", "n1") {
		if strings.Contains(m.desc.String(), `"raftgres_vip_held"`) {
			held = m
		}
	}
	if held.value == nil {
		t.Fatal("raftgres_vip_held is not defined")
	}
	for _, tc := range []struct {
		vip  failover.VIPState
		want float64
	}{
		{failover.VIPState{}, 0},
		{failover.VIPState{Configured: true}, 0},
		{failover.VIPState{Configured: true, Held: true}, 1},
	} {
		v := nodeView{name: "n1", st: raftstore.NewState(), local: failover.Local{Member: "n1", VIP: tc.vip}, hasPG: true}
		if got := held.value(v, &metricInput{}); got != tc.want {
			t.Errorf("%+v: raftgres_vip_held %v, want %v", tc.vip, got, tc.want)
		}
	}
}

// fakeArchive is a PostgreSQL that reports archive statistics.
type fakeArchive struct {
	stats failover.ArchiveStats
	err   error
}

func (a *fakeArchive) ArchiveStats(context.Context) (failover.ArchiveStats, error) {
	return a.stats, a.err
}

// TestMetricsArchive: pg_stat_archiver's figures are served while the
// local PostgreSQL runs, and nothing (not zeros) when they cannot be read.
func TestMetricsArchive(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 28, 23, 0, 0, 0, time.UTC)
	a := newArchiveMetrics("test", "n1")
	running := nodeView{name: "n1", hasPG: true, local: failover.Local{Member: "n1", HasData: true}}
	running.local.PG.Running = true
	for _, tc := range []struct {
		name string
		src  ArchiveSource
		v    nodeView
		want map[string]float64 // empty: no series
	}{
		{"archiving", &fakeArchive{stats: failover.ArchiveStats{ArchivedCount: 7, FailedCount: 2, LastArchivedTime: at}}, running,
			map[string]float64{"raftgres_postgresql_archived_wal_total": 7, "raftgres_postgresql_archive_failures_total": 2,
				"raftgres_postgresql_last_archived_timestamp_seconds":        float64(at.Unix()),
				"raftgres_postgresql_last_archive_failure_timestamp_seconds": 0}},
		{"query failed", &fakeArchive{err: context.DeadlineExceeded}, running, nil},
		{"postgres stopped", &fakeArchive{stats: failover.ArchiveStats{ArchivedCount: 7}}, nodeView{name: "n1", hasPG: true}, nil},
		{"no source", nil, running, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ch := make(chan prometheus.Metric, 8)
			a.collect(ch, tc.src, tc.v)
			close(ch)
			got := map[string]float64{}
			for m := range ch {
				var pb dto.Metric
				if err := m.Write(&pb); err != nil {
					t.Fatal(err)
				}
				name := fqNameRE.FindStringSubmatch(m.Desc().String())[1]
				if pb.Counter != nil {
					got[name] = pb.Counter.GetValue()
				} else {
					got[name] = pb.Gauge.GetValue()
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("series %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
		})
	}
}

// TestArchiveEndpoint: GET /archive serves pg_stat_archiver read now, 404
// without a source, 503 while PostgreSQL is stopped or does not answer;
// GET /backup/endpoint is internal and 404 without a TLS server.
func TestArchiveEndpoint(t *testing.T) {
	st := startStore(t)
	running := failover.Local{Member: "n1", HasData: true, ObservedAt: time.Now()}
	running.PG.Running = true
	at := time.Date(2026, 11, 29, 1, 0, 0, 0, time.UTC)
	stats := failover.ArchiveStats{ArchivedCount: 5, LastArchivedWAL: "000000010000000000000005", LastArchivedTime: at}
	for _, tc := range []struct {
		name   string
		opts   []Option
		status int
	}{
		{"archiving", []Option{WithMember(&fakeMember{local: running}), WithArchiveSource(&fakeArchive{stats: stats})}, 200},
		{"no source", []Option{WithMember(&fakeMember{local: running})}, 404},
		{"no member", nil, 404},
		{"stopped", []Option{WithMember(&fakeMember{local: failover.Local{Member: "n1"}}), WithArchiveSource(&fakeArchive{stats: stats})}, 503},
		{"query fails", []Option{WithMember(&fakeMember{local: running}), WithArchiveSource(&fakeArchive{err: context.DeadlineExceeded})}, 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := startAPI(t, st, adminConfig(), tc.opts...)
			r := call(t, "GET", base+"/archive", "", "", "")
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if tc.status == 200 {
				var got failover.ArchiveStats
				if err := json.Unmarshal(r.body, &got); err != nil || got != stats {
					t.Fatalf("body %s (%v), want %+v", r.body, err, stats)
				}
			}
		})
	}
	base := startAPI(t, st, adminConfig(), WithBackupEndpoint(map[string]string{"server": "pg1:8432"}))
	ctx := context.Background()
	var got map[string]string
	if err := NewClient(base, ClientOptions{Timeout: 5 * time.Second}).BackupEndpoint(ctx, &got); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("/backup/endpoint without the token: %v", err)
	}
	if err := NewClient(base, ClientOptions{Token: testToken, Timeout: 5 * time.Second}).BackupEndpoint(ctx, &got); err != nil || got["server"] != "pg1:8432" {
		t.Fatalf("/backup/endpoint: %v %v", got, err)
	}
	if err := NewClient(startAPI(t, st, adminConfig()), ClientOptions{Token: testToken, Timeout: 5 * time.Second}).BackupEndpoint(ctx, &got); !errors.Is(err, ErrNotFound) {
		t.Fatalf("/backup/endpoint without a server: %v", err)
	}
}
