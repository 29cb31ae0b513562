package api

import (
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"raftgres/failover"
	"raftgres/raftstore"
)

// healthNow is the instant every view below is taken at.
var healthNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

const mb = 1 << 20

// viewOpt tweaks a base view.
type viewOpt func(*nodeView)

// baseView is member name in a three-member cluster where pg1 holds the
// leader key at epoch 7 and reported WrittenLSN 100MB; the local member has
// data and finished a cycle just now, but its PostgreSQL state is left to
// the options.
func baseView(name string, opts ...viewOpt) nodeView {
	st := raftstore.NewState()
	st.Config = raftstore.DefaultClusterConfig()
	st.Leader = raftstore.LeaderKey{Holder: "pg1", Epoch: 7}
	for _, n := range []string{"pg1", "pg2", "pg3"} {
		st.Members[n] = &raftstore.Member{Name: n, Tags: raftstore.DefaultTags()}
	}
	st.Members["pg1"].Status.WrittenLSN = 100 * mb
	v := nodeView{name: name, st: st, hasPG: true, now: healthNow,
		local: failover.Local{Member: name, HasData: true, ObservedAt: healthNow}}
	for _, o := range opts {
		o(&v)
	}
	return v
}

func asPrimary(v *nodeView) {
	v.local.PG.Running, v.local.PG.InRecovery, v.local.PG.CurrentLSN = true, false, 100*mb
	v.local.Epoch, v.local.LeaseUntil = v.st.Leader.Epoch, v.now.Add(2*time.Second)
}

// asStandbyLeader makes the view a standby cluster's holder running as
// a standby of its source, under a valid lease.
func asStandbyLeader(v *nodeView) {
	asReplica(v)
	v.st.Config.StandbyCluster = &raftstore.StandbyCluster{Host: "src"}
	v.local.Epoch, v.local.LeaseUntil = v.st.Leader.Epoch, v.now.Add(2*time.Second)
	v.local.PG.SourceLSN = v.local.PG.ReplayedLSN + 4096
}

func asReplica(v *nodeView) {
	v.local.PG.Running, v.local.PG.InRecovery = true, true
	v.local.PG.ReceivedLSN, v.local.PG.ReplayedLSN = 100*mb, 100*mb
}

func TestHealthy(t *testing.T) {
	allPaths := append([]string{"/"}, healthPaths...)
	primaryPaths := []string{"/", "/primary", "/master", "/leader", "/read-write", "/read-only", "/read-only-quorum",
		"/health", "/liveness", "/readiness"}
	asyncReplica := []string{"/replica", "/read-only", "/async", "/asynchronous", "/health", "/liveness", "/readiness"}
	tests := []struct {
		name  string
		view  nodeView
		query string
		want  []string // the paths that answer 200; all others 503
	}{
		{
			name: "primary with valid lease",
			view: baseView("pg1", asPrimary),
			want: primaryPaths,
		},
		{
			name: "primary lease expired",
			view: baseView("pg1", asPrimary, func(v *nodeView) { v.local.LeaseUntil = v.now.Add(-time.Millisecond) }),
			want: []string{"/health", "/liveness"},
		},
		{
			name: "primary lease ends exactly now",
			view: baseView("pg1", asPrimary, func(v *nodeView) { v.local.LeaseUntil = v.now }),
			want: []string{"/health", "/liveness"},
		},
		{
			name: "primary without any lease",
			view: baseView("pg1", asPrimary, func(v *nodeView) { v.local.LeaseUntil = time.Time{} }),
			want: []string{"/health", "/liveness"},
		},
		{
			name: "primary but FSM names someone else",
			view: baseView("pg1", asPrimary, func(v *nodeView) { v.st.Leader.Holder = "pg2" }),
			want: []string{"/health", "/liveness"},
		},
		{
			name: "primary with a lease from an older epoch",
			view: baseView("pg1", asPrimary, func(v *nodeView) { v.local.Epoch = 6 }),
			want: []string{"/health", "/liveness"},
		},
		{
			name: "holder whose postgres is still in recovery",
			view: baseView("pg1", asPrimary, func(v *nodeView) { v.local.PG.InRecovery = true }),
			want: asyncReplica,
		},
		{
			name: "streaming replica",
			view: baseView("pg2", asReplica),
			want: asyncReplica,
		},
		{
			name: "replica tagged noloadbalance",
			view: baseView("pg2", asReplica, func(v *nodeView) { v.st.Members["pg2"].Tags.NoLoadBalance = true }),
			want: []string{"/health", "/liveness", "/readiness"},
		},
		{
			name: "replica not in the member table uses default tags",
			view: baseView("pg9", asReplica),
			want: asyncReplica,
		},
		{
			name: "synchronous standby",
			view: baseView("pg2", asReplica, func(v *nodeView) {
				v.st.Config.SynchronousMode = true
				v.st.Sync = raftstore.SyncState{Primary: "pg1", Standbys: []string{"pg2"}}
			}),
			want: []string{"/replica", "/read-only", "/sync", "/synchronous", "/health", "/liveness", "/readiness"},
		},
		{
			name: "quorum standby",
			view: baseView("pg2", asReplica, func(v *nodeView) {
				v.st.Config.SynchronousMode, v.st.Config.SynchronousQuorum = true, true
				v.st.Sync = raftstore.SyncState{Primary: "pg1", Standbys: []string{"pg2", "pg3"}, Quorum: 1}
			}),
			want: []string{"/replica", "/read-only", "/quorum", "/read-only-quorum", "/health", "/liveness", "/readiness"},
		},
		{
			name: "listed standby while synchronous_mode is off is async",
			view: baseView("pg2", asReplica, func(v *nodeView) {
				v.st.Sync = raftstore.SyncState{Primary: "pg1", Standbys: []string{"pg2"}}
			}),
			want: asyncReplica,
		},
		{
			name: "async replica in synchronous mode",
			view: baseView("pg3", asReplica, func(v *nodeView) {
				v.st.Config.SynchronousMode = true
				v.st.Sync = raftstore.SyncState{Primary: "pg1", Standbys: []string{"pg2"}}
			}),
			want: asyncReplica,
		},
		{
			name:  "replica 10MB behind, lag=1MB",
			view:  baseView("pg2", asReplica, lagging(10*mb)),
			query: "lag=1MB",
			want:  []string{"/health", "/liveness", "/readiness"},
		},
		{
			name:  "replica 10MB behind, lag=100MB",
			view:  baseView("pg2", asReplica, lagging(10*mb)),
			query: "lag=100MB",
			want:  asyncReplica,
		},
		{
			name:  "replica 10MB behind, lag exactly 10MB",
			view:  baseView("pg2", asReplica, lagging(10*mb)),
			query: "lag=10MB",
			want:  asyncReplica,
		},
		{
			name: "replica 10MB behind, no lag limit",
			view: baseView("pg2", asReplica, lagging(10*mb)),
			want: asyncReplica,
		},
		{
			name:  "replica ahead of the primary's last report, lag=0",
			view:  baseView("pg2", asReplica, func(v *nodeView) { v.local.PG.ReceivedLSN = 200 * mb }),
			query: "lag=0",
			want:  asyncReplica,
		},
		{
			name:  "lag does not affect the primary",
			view:  baseView("pg1", asPrimary),
			query: "lag=0",
			want:  primaryPaths,
		},
		{
			name:  "replica without a primary in the FSM has no lag",
			view:  baseView("pg2", asReplica, lagging(10*mb), func(v *nodeView) { v.st.Leader.Holder = "" }),
			query: "lag=1",
			want:  asyncReplica,
		},
		{
			name: "stopped postgres",
			view: baseView("pg2"),
			want: []string{"/liveness"},
		},
		{
			name: "stopped postgres, supervisor loop stuck",
			view: baseView("pg2", func(v *nodeView) { v.local.ObservedAt = v.now.Add(-time.Minute) }),
			want: nil,
		},
		{
			name: "stopped postgres, supervisor never finished a cycle",
			view: baseView("pg2", func(v *nodeView) { v.local.ObservedAt = time.Time{} }),
			want: nil,
		},
		{
			name: "member still without data (cloning) is alive",
			view: baseView("pg2", func(v *nodeView) { v.local.HasData, v.local.ObservedAt = false, time.Time{} }),
			want: []string{"/liveness"},
		},
		{
			name: "standby leader",
			view: baseView("pg1", asStandbyLeader),
			want: []string{"/leader", "/standby-leader", "/standby_leader", "/replica", "/read-only", "/async", "/asynchronous",
				"/health", "/liveness", "/readiness"},
		},
		{
			name: "standby leader whose lease ended",
			view: baseView("pg1", asStandbyLeader, func(v *nodeView) { v.local.LeaseUntil = v.now }),
			want: []string{"/replica", "/read-only", "/async", "/asynchronous", "/health", "/liveness", "/readiness"},
		},
		{
			name: "replica of a standby cluster",
			view: baseView("pg2", asReplica, func(v *nodeView) {
				v.st.Config.StandbyCluster = &raftstore.StandbyCluster{Host: "src"}
			}),
			want: asyncReplica,
		},
		{
			name: "no postgres (raft-only agent)",
			view: nodeView{name: "pg2", st: baseView("pg2").st, now: healthNow},
			want: []string{"/liveness"},
		},
		{
			name: "no postgres ignores a stale local view",
			view: baseView("pg1", asPrimary, func(v *nodeView) { v.hasPG = false }),
			want: []string{"/liveness"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, err := url.ParseQuery(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			wantOK := map[string]bool{}
			for _, p := range tc.want {
				wantOK[p] = true
			}
			got, want := map[string]bool{}, map[string]bool{}
			for _, p := range allPaths {
				ok, err := healthy(p, q, tc.view)
				if err != nil {
					t.Fatalf("healthy(%s): %v", p, err)
				}
				got[p], want[p] = ok, wantOK[p]
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("healthy per path (-want +got):\n%s", diff)
			}
		})
	}
}

// lagging puts the primary's last report behind bytes ahead of this replica.
func lagging(bytes uint64) viewOpt {
	return func(v *nodeView) {
		v.local.PG.ReceivedLSN, v.local.PG.ReplayedLSN = 50*mb, 50*mb-1000
		v.st.Members[v.st.Leader.Holder].Status.WrittenLSN = 50*mb + bytes
	}
}

func TestHealthyErrors(t *testing.T) {
	v := baseView("pg2", asReplica)
	tests := []struct {
		name, path, query string
		want              error
	}{
		{"lag not a number", "/replica", "lag=abc", ErrBadRequest},
		{"lag with bad unit", "/replica", "lag=5XB", ErrBadRequest},
		{"lag negative", "/read-only", "lag=-1", ErrBadRequest},
		{"lag checked on primary paths too", "/primary", "lag=abc", ErrBadRequest},
		{"lag checked on liveness too", "/liveness", "lag=abc", ErrBadRequest},
		{"unknown path", "/nope", "", ErrNotFound},
		{"unknown path wins over nothing", "/primary/", "", ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, err := url.ParseQuery(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			ok, err := healthy(tc.path, q, v)
			if !errors.Is(err, tc.want) {
				t.Fatalf("healthy(%s?%s) error %v, want %v", tc.path, tc.query, err, tc.want)
			}
			if ok {
				t.Errorf("healthy(%s?%s) = true with an error", tc.path, tc.query)
			}
		})
	}
}

func TestAlive(t *testing.T) {
	// ttl is 3s: the holder must have finished a cycle within ttl, others
	// within 2·ttl; never less than 2s.
	tests := []struct {
		name string
		ttl  time.Duration
		self string
		age  time.Duration
		want bool
	}{
		{"holder fresh", 3 * time.Second, "pg1", 0, true},
		{"holder at ttl", 3 * time.Second, "pg1", 3 * time.Second, true},
		{"holder past ttl", 3 * time.Second, "pg1", 4 * time.Second, false},
		{"replica past ttl within 2ttl", 3 * time.Second, "pg2", 4 * time.Second, true},
		{"replica at 2ttl", 3 * time.Second, "pg2", 6 * time.Second, true},
		{"replica past 2ttl", 3 * time.Second, "pg2", 6*time.Second + time.Millisecond, false},
		{"short ttl floor of 2s", 500 * time.Millisecond, "pg1", 1500 * time.Millisecond, true},
		{"short ttl past floor", 500 * time.Millisecond, "pg1", 2*time.Second + time.Millisecond, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := baseView(tc.self, asReplica, func(v *nodeView) {
				v.st.Config.TTL = tc.ttl
				v.local.ObservedAt = v.now.Add(-tc.age)
			})
			if got := v.alive(); got != tc.want {
				t.Errorf("alive() = %v, want %v", got, tc.want)
			}
			ok, err := healthy("/liveness", nil, v)
			if err != nil || ok != tc.want {
				t.Errorf("healthy(/liveness) = %v, %v; want %v", ok, err, tc.want)
			}
		})
	}
}

func TestParseBytes(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "0", want: 0},
		{in: "512", want: 512},
		{in: "512B", want: 512},
		{in: "1kB", want: 1 << 10},
		{in: "1KB", want: 1 << 10},
		{in: "16MB", want: 16 << 20},
		{in: "2GB", want: 2 << 30},
		{in: "3TB", want: 3 << 40},
		{in: " 5 MB ", want: 5 << 20},
		{in: "4194304TB", want: 1 << 62},
		{in: "4611686018427387904", want: 1 << 62},
		{in: "", wantErr: true},
		{in: "   ", wantErr: true},
		{in: "MB", wantErr: true},
		{in: "abc", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "1.5MB", wantErr: true},
		{in: "1mb", wantErr: true},
		{in: "1PB", wantErr: true},
		{in: "1 X", wantErr: true},
		{in: "4194305TB", wantErr: true},
		{in: "4611686018427387905", wantErr: true},
		{in: "9223372036854775808", wantErr: true}, // over int64
		{in: "99999999999999999999999GB", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseBytes(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("ParseBytes(%q) = %d, %v; want error %v", tc.in, got, err, tc.wantErr)
			}
			if err == nil && got != tc.want {
				t.Errorf("ParseBytes(%q) = %d, want %d", tc.in, got, tc.want)
			}
		})
	}
}

// TestStandbyLeaderStatus: /patroni names the role standby_leader, the
// metrics give its lag behind the source, and /cluster shows where the
// standby cluster stands against its source.
func TestStandbyLeaderStatus(t *testing.T) {
	v := baseView("pg1", asStandbyLeader)
	if r := v.role(); r != raftstore.RoleStandbyLeader {
		t.Fatalf("role %q", r)
	}
	if !v.isStandbyLeader() || v.sourceLag() != 4096 || v.holdsValidLease() {
		t.Fatalf("standby leader %v, source lag %d, primary %v", v.isStandbyLeader(), v.sourceLag(), v.holdsValidLease())
	}
	st := v.st
	st.Members["pg1"].Status = raftstore.MemberStatus{Role: raftstore.RoleStandbyLeader, State: raftstore.StateRunning,
		ReceivedLSN: 10 * mb, ReplayedLSN: 10 * mb, SourceLSN: 10*mb + 100, SourceAt: healthNow, ReportedAt: healthNow}
	st.Members["pg2"].Status = raftstore.MemberStatus{Role: raftstore.RoleReplica, State: raftstore.StateRunning,
		ReceivedLSN: 9 * mb, ReplayedLSN: 9 * mb, ReportedAt: healthNow}
	cv := BuildClusterView("dr", st, raftstore.Status{}, healthNow)
	sc := cv.StandbyCluster
	if sc == nil || sc.StandbyLeader != "pg1" || sc.Behind == nil || *sc.Behind != 100 || sc.Source != "src port 5432" {
		t.Fatalf("standby cluster view: %+v", sc)
	}
	for _, m := range cv.Members {
		switch m.Name {
		case "pg1":
			if m.Role != ClusterStandbyLeader || m.Lag == nil || *m.Lag != 100 {
				t.Errorf("pg1: role %s lag %v", m.Role, m.Lag)
			}
		case "pg2":
			if m.Role != ClusterReplica || m.Lag == nil || *m.Lag != mb {
				t.Errorf("pg2 (behind the standby leader by 1 MB): role %s lag %v", m.Role, m.Lag)
			}
		}
	}
}
