package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/go-hclog"

	"raftgres/failover"
	"raftgres/internal/conf"
	"raftgres/raftstore"
)

const (
	adminUser = "admin"
	adminPass = "s3cret"
)

// startStore is a single-node store named n1 that leads, with the default
// cluster configuration seeded as the agent's bootstrap does.
func startStore(tb testing.TB) *fakeStore {
	tb.Helper()
	return newFakeStore(tb, "n1")
}

// startAPI serves an API over st with cfg and registers st's member with
// that API's address.
func startAPI(tb testing.TB, st *fakeStore, cfg Config, opts ...Option) string {
	tb.Helper()
	logger := hclog.NewNullLogger()
	srv, err := New(cfg, "test", st, NewProposer(st, ClientOptions{Token: testToken, Timeout: 5 * time.Second}, logger), logger, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	tb.Cleanup(hs.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := raftstore.Commit(ctx, st, raftstore.RegisterMember{Name: st.ID(), APIAddr: hs.URL, Tags: raftstore.DefaultTags(), At: time.Now().UTC()}); err != nil {
		tb.Fatalf("register: %v", err)
	}
	return hs.URL
}

func adminConfig() Config {
	return Config{Username: adminUser, Password: conf.Secret(adminPass), Token: conf.Secret(testToken)}
}

// newAdminServer is a raft-only single-node cluster whose API has admin
// credentials configured.
func newAdminServer(tb testing.TB, opts ...Option) string {
	tb.Helper()
	return startAPI(tb, startStore(tb), adminConfig(), opts...)
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

// call sends one request; user "" sends no credentials.
func call(tb testing.TB, method, url, user, pass, body string) reply {
	tb.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

func (r reply) wire(tb testing.TB) wireError {
	tb.Helper()
	var w wireError
	if err := json.Unmarshal(r.body, &w); err != nil {
		tb.Fatalf("body is not an error JSON: %v: %s", err, r.body)
	}
	return w
}

var adminRoutes = []struct{ method, path string }{
	{"PATCH", "/config"},
	{"PUT", "/config"},
	{"POST", "/switchover"},
	{"DELETE", "/switchover"},
	{"POST", "/failover"},
	{"POST", "/restart"},
	{"POST", "/reload"},
	{"POST", "/reinitialize"},
	{"POST", "/pause"},
	{"POST", "/resume"},
}

func TestAdminAuth(t *testing.T) {
	st := startStore(t)
	withAuth := startAPI(t, st, adminConfig())
	noAuth := startAPI(t, st, Config{Token: conf.Secret(testToken)})
	for _, rt := range adminRoutes {
		for _, tc := range []struct {
			name       string
			base       string
			user, pass string
			want       int
			code       string
		}{
			{"no credentials", withAuth, "", "", http.StatusUnauthorized, "unauthorized"},
			{"wrong password", withAuth, adminUser, "wrong", http.StatusUnauthorized, "unauthorized"},
			{"wrong user", withAuth, "root", adminPass, http.StatusUnauthorized, "unauthorized"},
			{"password prefix", withAuth, adminUser, adminPass[:3], http.StatusUnauthorized, "unauthorized"},
			{"admin disabled", noAuth, adminUser, adminPass, http.StatusForbidden, "forbidden"},
			{"admin disabled no credentials", noAuth, "", "", http.StatusForbidden, "forbidden"},
		} {
			t.Run(rt.method+rt.path+"/"+tc.name, func(t *testing.T) {
				r := call(t, rt.method, tc.base+rt.path, tc.user, tc.pass, `{"ttl":5}`)
				if r.status != tc.want {
					t.Fatalf("status %d, want %d: %s", r.status, tc.want, r.body)
				}
				if got := r.wire(t).Code; got != tc.code {
					t.Errorf("code %q, want %q", got, tc.code)
				}
				if ct := r.header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type %q", ct)
				}
				wantAuth := ""
				if tc.want == http.StatusUnauthorized {
					wantAuth = `Basic realm="raftgres"`
				}
				if got := r.header.Get("WWW-Authenticate"); got != wantAuth {
					t.Errorf("WWW-Authenticate %q, want %q", got, wantAuth)
				}
			})
		}
	}
	// Nothing refused above may have changed the configuration.
	if c := st.State().Config; c.TTL != 3*time.Second || c.Pause {
		t.Errorf("refused requests changed the config: %+v", c)
	}
}

func getConfig(t *testing.T, base string) ConfigDoc {
	t.Helper()
	r := call(t, "GET", base+"/config", "", "", "")
	if r.status != http.StatusOK {
		t.Fatalf("GET /config: %d %s", r.status, r.body)
	}
	var d ConfigDoc
	if err := json.Unmarshal(r.body, &d); err != nil {
		t.Fatalf("GET /config: %v: %s", err, r.body)
	}
	return d
}

func TestAdminPauseResume(t *testing.T) {
	base := newAdminServer(t)
	for _, tc := range []struct {
		path string
		want bool
	}{
		{"/pause", true},
		{"/pause", true}, // idempotent
		{"/resume", false},
		{"/resume", false},
		{"/pause", true},
	} {
		t.Run(tc.path, func(t *testing.T) {
			r := call(t, "POST", base+tc.path, adminUser, adminPass, "")
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			var m Message
			if err := json.Unmarshal(r.body, &m); err != nil || m.Message == "" {
				t.Errorf("body %s: %v", r.body, err)
			}
			// Read-your-writes: the GET right after sees the change.
			if d := getConfig(t, base); d.Pause == nil || *d.Pause != tc.want {
				t.Errorf("pause after %s: %v, want %v", tc.path, d.Pause, tc.want)
			}
		})
	}
}

// TestHistoryEndpoint: /history lists events oldest first and says how many
// the cluster keeps.
func TestHistoryEndpoint(t *testing.T) {
	base := newAdminServer(t)
	if r := call(t, "POST", base+"/pause", adminUser, adminPass, ""); r.status != http.StatusOK {
		t.Fatalf("pause: %d %s", r.status, r.body)
	}
	r := call(t, "GET", base+"/history", "", "", "")
	if r.status != http.StatusOK {
		t.Fatalf("GET /history: %d %s", r.status, r.body)
	}
	if got, want := r.header.Get(historyLimitHeader), fmt.Sprint(raftstore.MaxHistory); got != want {
		t.Errorf("%s: %q, want %q", historyLimitHeader, got, want)
	}
	evs, err := NewClient(base, ClientOptions{}).History(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) == 0 || evs[len(evs)-1].Kind != raftstore.EventPause {
		t.Fatalf("history %+v: want the pause last", evs)
	}
}

func TestAdminConfig(t *testing.T) {
	t.Parallel() // its 1 MiB bodies wait out net/http's 500 ms reset-avoidance delay
	base := newAdminServer(t)
	big := `{"postgresql":{"parameters":{"x":"` + strings.Repeat("a", maxBody) + `"}}}`
	tests := []struct {
		name, method, body string
		want               int
		code               string
		check              func(t *testing.T, d ConfigDoc)
	}{
		{name: "patch ttl", method: "PATCH", body: `{"ttl": 5}`, want: 200, check: func(t *testing.T, d ConfigDoc) {
			if time.Duration(*d.TTL) != 5*time.Second {
				t.Errorf("ttl %v", time.Duration(*d.TTL))
			}
		}},
		{name: "patch duration string and parameter", method: "PATCH",
			body: `{"loop_wait": "500ms", "postgresql": {"parameters": {"work_mem": "64MB", "max_connections": 200, "hot_standby": true}}}`,
			want: 200, check: func(t *testing.T, d ConfigDoc) {
				want := map[string]Param{"work_mem": "64MB", "max_connections": "200", "hot_standby": "on"}
				if diff := cmp.Diff(want, d.PostgreSQL.Parameters); diff != "" {
					t.Errorf("parameters (-want +got):\n%s", diff)
				}
				if time.Duration(*d.LoopWait) != 500*time.Millisecond || time.Duration(*d.TTL) != 5*time.Second {
					t.Errorf("loop_wait %v ttl %v", time.Duration(*d.LoopWait), time.Duration(*d.TTL))
				}
			}},
		{name: "patch null removes a parameter", method: "PATCH", body: `{"postgresql": {"parameters": {"work_mem": null}}}`,
			want: 200, check: func(t *testing.T, d ConfigDoc) {
				if _, ok := d.PostgreSQL.Parameters["work_mem"]; ok || len(d.PostgreSQL.Parameters) != 2 {
					t.Errorf("parameters %v", d.PostgreSQL.Parameters)
				}
			}},
		{name: "patch null resets ttl", method: "PATCH", body: `{"ttl": null}`, want: 200, check: func(t *testing.T, d ConfigDoc) {
			if time.Duration(*d.TTL) != 3*time.Second {
				t.Errorf("ttl %v, want the default 3s", time.Duration(*d.TTL))
			}
		}},
		{name: "patch ignores version", method: "PATCH", body: `{"version": 99, "ttl": 4}`, want: 200},
		{name: "patch ttl too small", method: "PATCH", body: `{"ttl": 0.5}`, want: 400, code: "bad_request"},
		{name: "patch ttl under loop_wait+2retry", method: "PATCH", body: `{"ttl": 1, "retry_timeout": 1}`, want: 400, code: "bad_request"},
		{name: "patch negative ttl", method: "PATCH", body: `{"ttl": -1}`, want: 400, code: "bad_request"},
		{name: "patch unknown key", method: "PATCH", body: `{"nope": 1}`, want: 400, code: "bad_request"},
		{name: "patch unknown nested key", method: "PATCH", body: `{"postgresql": {"nope": 1}}`, want: 400, code: "bad_request"},
		{name: "patch malformed json", method: "PATCH", body: `{"ttl": `, want: 400, code: "bad_request"},
		{name: "patch not an object", method: "PATCH", body: `[1,2]`, want: 400, code: "bad_request"},
		{name: "patch empty body", method: "PATCH", body: ``, want: 400, code: "bad_request"},
		{name: "patch trailing data", method: "PATCH", body: `{"ttl": 5} {}`, want: 400, code: "bad_request"},
		{name: "patch strict without sync", method: "PATCH", body: `{"synchronous_mode_strict": true}`, want: 400, code: "bad_request"},
		{name: "patch parameter of wrong type", method: "PATCH", body: `{"postgresql": {"parameters": {"a": [1]}}}`, want: 400, code: "bad_request"},
		{name: "patch body over 1 MiB", method: "PATCH", body: big, want: 413, code: "too_large"},
		{name: "put resets what it leaves out", method: "PUT", body: `{"ttl": 6}`, want: 200, check: func(t *testing.T, d ConfigDoc) {
			if time.Duration(*d.TTL) != 6*time.Second || time.Duration(*d.LoopWait) != 300*time.Millisecond || d.PostgreSQL.Parameters != nil {
				t.Errorf("after PUT: ttl %v loop_wait %v parameters %v", time.Duration(*d.TTL), time.Duration(*d.LoopWait), d.PostgreSQL.Parameters)
			}
		}},
		{name: "put unknown key", method: "PUT", body: `{"ttl": 6, "nope": 1}`, want: 400, code: "bad_request"},
		{name: "put invalid", method: "PUT", body: `{"ttl": 1}`, want: 400, code: "bad_request"},
		{name: "put malformed", method: "PUT", body: `{`, want: 400, code: "bad_request"},
		{name: "put trailing data", method: "PUT", body: `{} x`, want: 400, code: "bad_request"},
		{name: "put body over 1 MiB", method: "PUT", body: big, want: 413, code: "too_large"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := getConfig(t, base)
			r := call(t, tc.method, base+"/config", adminUser, adminPass, tc.body)
			if r.status != tc.want {
				t.Fatalf("status %d, want %d: %s", r.status, tc.want, r.body)
			}
			after := getConfig(t, base)
			if tc.want != http.StatusOK {
				if got := r.wire(t).Code; got != tc.code {
					t.Errorf("code %q, want %q", got, tc.code)
				}
				if diff := cmp.Diff(before, after); diff != "" {
					t.Errorf("a refused change changed the config (-before +after):\n%s", diff)
				}
				return
			}
			var answered ConfigDoc
			if err := json.Unmarshal(r.body, &answered); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(after, answered); diff != "" {
				t.Errorf("answer differs from GET /config (-get +answer):\n%s", diff)
			}
			if *after.Version != *before.Version+1 {
				t.Errorf("version %d after %d", *after.Version, *before.Version)
			}
			if tc.check != nil {
				tc.check(t, after)
			}
		})
	}
}

func TestAdminSwitchoverRefusals(t *testing.T) {
	base := newAdminServer(t)
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	tests := []struct {
		name, method, path, body string
		want                     int
		code                     string
	}{
		// A raft-only cluster has no primary: there is nothing to switch over from.
		{"switchover to ghost", "POST", "/switchover", `{"candidate":"ghost"}`, 412, "precondition_failed"},
		{"switchover without body", "POST", "/switchover", ``, 412, "precondition_failed"},
		{"switchover scheduled", "POST", "/switchover", `{"scheduled_at":"` + future + `"}`, 412, "precondition_failed"},
		{"switchover malformed", "POST", "/switchover", `{"candidate":`, 400, "bad_request"},
		{"switchover unknown key", "POST", "/switchover", `{"candidate":"n1","x":1}`, 400, "bad_request"},
		{"failover without candidate", "POST", "/failover", `{}`, 400, "bad_request"},
		{"failover without body", "POST", "/failover", ``, 400, "bad_request"},
		{"failover scheduled", "POST", "/failover", `{"candidate":"n1","scheduled_at":"` + future + `"}`, 400, "bad_request"},
		{"failover to ghost", "POST", "/failover", `{"candidate":"ghost"}`, 404, "unknown_member"},
		{"failover to a member without postgres", "POST", "/failover", `{"candidate":"n1"}`, 412, "precondition_failed"},
		{"failover with wrong leader", "POST", "/failover", `{"candidate":"n1","leader":"pg9"}`, 412, "precondition_failed"},
		{"failover wrong type", "POST", "/failover", `{"candidate":1}`, 400, "bad_request"},
		{"cancel with nothing pending", "DELETE", "/switchover", ``, 404, "not_found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := call(t, tc.method, base+tc.path, adminUser, adminPass, tc.body)
			if r.status != tc.want {
				t.Fatalf("status %d, want %d: %s", r.status, tc.want, r.body)
			}
			if got := r.wire(t).Code; got != tc.code {
				t.Errorf("code %q, want %q", got, tc.code)
			}
		})
	}
}

func TestValidateSwitchover(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st := raftstore.NewState()
	st.Leader = raftstore.LeaderKey{Holder: "pg1", Epoch: 3}
	running := raftstore.MemberStatus{Role: "replica", State: "running"}
	st.Members["pg1"] = &raftstore.Member{Name: "pg1", Status: raftstore.MemberStatus{Role: "primary", State: "running"}}
	st.Members["pg2"] = &raftstore.Member{Name: "pg2", Status: running, Tags: raftstore.DefaultTags()}
	st.Members["pg3"] = &raftstore.Member{Name: "pg3", Status: running, Tags: raftstore.Tags{NoFailover: true}}
	st.Members["pg4"] = &raftstore.Member{Name: "pg4", Status: raftstore.MemberStatus{Role: "replica", State: "stopped"}}
	pending := st.Clone()
	pending.Failover = &raftstore.FailoverRequest{Kind: "switchover", From: "pg1", To: "pg2"}
	headless := st.Clone()
	headless.Leader.Holder = ""
	// Synchronous mode: only the synchronous standby pg2 holds every
	// acknowledged commit; pg5 runs as a replica but is not in the record.
	syncMode := st.Clone()
	syncMode.Config.SynchronousMode = true
	syncMode.Sync = raftstore.SyncState{Primary: "pg1", Standbys: []string{"pg2"}}
	syncMode.Members["pg5"] = &raftstore.Member{Name: "pg5", Status: running, Tags: raftstore.DefaultTags()}
	// Nobody but the primary could be elected.
	lonely := st.Clone()
	lonely.Members["pg2"].Tags.NoFailover = true
	paused := st.Clone()
	paused.Config.Pause = true
	tests := []struct {
		name string
		kind raftstore.FailoverKind
		req  SwitchoverRequest
		st   raftstore.State
		want error // nil: accepted
	}{
		{"switchover to best", "switchover", SwitchoverRequest{}, st, nil},
		{"switchover to pg2", "switchover", SwitchoverRequest{Leader: "pg1", Candidate: "pg2"}, st, nil},
		{"switchover scheduled", "switchover", SwitchoverRequest{Candidate: "pg2", ScheduledAt: "2026-01-02T04:00:00Z"}, st, nil},
		{"switchover scheduled in the past", "switchover", SwitchoverRequest{ScheduledAt: "2026-01-02T03:04:05Z"}, st, ErrBadRequest},
		{"switchover scheduled not RFC 3339", "switchover", SwitchoverRequest{ScheduledAt: "tomorrow"}, st, ErrBadRequest},
		{"switchover while one is pending", "switchover", SwitchoverRequest{}, pending, ErrConflict},
		{"switchover without primary", "switchover", SwitchoverRequest{Candidate: "pg2"}, headless, ErrPrecondition},
		{"switchover wrong leader", "switchover", SwitchoverRequest{Leader: "pg2"}, st, ErrPrecondition},
		{"switchover to the primary", "switchover", SwitchoverRequest{Candidate: "pg1"}, st, ErrPrecondition},
		{"switchover to nofailover", "switchover", SwitchoverRequest{Candidate: "pg3"}, st, ErrPrecondition},
		{"switchover to stopped", "switchover", SwitchoverRequest{Candidate: "pg4"}, st, ErrPrecondition},
		{"switchover to ghost", "switchover", SwitchoverRequest{Candidate: "ghost"}, st, raftstore.ErrUnknownMember},
		{"switchover to the synchronous standby", "switchover", SwitchoverRequest{Candidate: "pg2"}, syncMode, nil},
		{"switchover to an asynchronous standby in synchronous mode", "switchover", SwitchoverRequest{Candidate: "pg5"}, syncMode, ErrPrecondition},
		{"failover to an asynchronous standby in synchronous mode", "failover", SwitchoverRequest{Candidate: "pg5"}, syncMode, ErrPrecondition},
		{"failover without primary", "failover", SwitchoverRequest{Candidate: "pg2"}, headless, nil},
		{"failover with primary", "failover", SwitchoverRequest{Candidate: "pg2"}, st, nil},
		{"failover without candidate", "failover", SwitchoverRequest{}, st, ErrBadRequest},
		{"failover scheduled", "failover", SwitchoverRequest{Candidate: "pg2", ScheduledAt: "2026-01-02T04:00:00Z"}, st, ErrBadRequest},
		{"failover while pending", "failover", SwitchoverRequest{Candidate: "pg2"}, pending, ErrConflict},
		{"hard failover", "failover", SwitchoverRequest{Leader: "pg1", Hard: true}, st, nil},
		{"hard failover to pg2", "failover", SwitchoverRequest{Leader: "pg1", Candidate: "pg2", Hard: true}, st, nil},
		{"hard failover in synchronous mode", "failover", SwitchoverRequest{Leader: "pg1", Hard: true}, syncMode, nil},
		{"hard failover without leader", "failover", SwitchoverRequest{Candidate: "pg2", Hard: true}, st, ErrBadRequest},
		{"hard failover wrong leader", "failover", SwitchoverRequest{Leader: "pg2", Hard: true}, st, ErrPrecondition},
		{"hard failover without primary", "failover", SwitchoverRequest{Leader: "pg1", Hard: true}, headless, ErrPrecondition},
		{"hard failover scheduled", "failover", SwitchoverRequest{Leader: "pg1", Hard: true, ScheduledAt: "2026-01-02T04:00:00Z"}, st, ErrBadRequest},
		{"hard switchover", "switchover", SwitchoverRequest{Leader: "pg1", Hard: true}, st, ErrBadRequest},
		{"hard failover to nofailover", "failover", SwitchoverRequest{Leader: "pg1", Candidate: "pg3", Hard: true}, st, ErrPrecondition},
		{"hard failover with nobody else electable", "failover", SwitchoverRequest{Leader: "pg1", Hard: true}, lonely, ErrPrecondition},
		{"hard failover while pending", "failover", SwitchoverRequest{Leader: "pg1", Hard: true}, pending, ErrConflict},
		{"hard failover while paused", "failover", SwitchoverRequest{Leader: "pg1", Hard: true}, paused, ErrPrecondition},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := validateSwitchover(tc.kind, tc.req, tc.st, now)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
}

// fakeMember is a Member whose supervisor answers every request with err.
type fakeMember struct {
	local failover.Local
	err   error

	mu  sync.Mutex
	got []failover.Request
}

func (m *fakeMember) Local() failover.Local { return m.local }

func (m *fakeMember) Do(_ context.Context, r failover.Request) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.got = append(m.got, r)
	return m.err
}

func (m *fakeMember) requests() []failover.Request {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]failover.Request(nil), m.got...)
}

func TestAdminLocalRequests(t *testing.T) {
	st := startStore(t)
	raftOnly := startAPI(t, st, adminConfig())
	replica := failover.Local{Member: "n1", HasData: true, ObservedAt: time.Now()}
	replica.PG.Running, replica.PG.InRecovery = true, true
	tests := []struct {
		name       string
		member     *fakeMember // nil: raft-only
		path, body string
		want       int
		code       string
		wantReq    []failover.Request
	}{
		{name: "restart without member", path: "/restart", want: 412, code: "precondition_failed"},
		{name: "reload without member", path: "/reload", want: 412, code: "precondition_failed"},
		{name: "reinitialize without member", path: "/reinitialize", want: 412, code: "precondition_failed"},
		{name: "restart", member: &fakeMember{local: replica}, path: "/restart", want: 200,
			wantReq: []failover.Request{{Kind: failover.RequestRestart}}},
		{name: "restart pending only", member: &fakeMember{local: replica}, path: "/restart", body: `{"restart_pending":true}`, want: 200,
			wantReq: []failover.Request{{Kind: failover.RequestRestart, OnlyPending: true}}},
		{name: "restart matching role", member: &fakeMember{local: replica}, path: "/restart", body: `{"role":"replica"}`, want: 200,
			wantReq: []failover.Request{{Kind: failover.RequestRestart}}},
		{name: "restart other role", member: &fakeMember{local: replica}, path: "/restart", body: `{"role":"primary"}`,
			want: 412, code: "precondition_failed"},
		{name: "restart bad body", member: &fakeMember{local: replica}, path: "/restart", body: `{"role":`, want: 400, code: "bad_request"},
		{name: "restart refused", member: &fakeMember{local: replica, err: fmt.Errorf("%w: busy", failover.ErrRequestRefused)},
			path: "/restart", want: 412, code: "refused", wantReq: []failover.Request{{Kind: failover.RequestRestart}}},
		{name: "restart failed", member: &fakeMember{local: replica, err: errors.New("pg_ctl exploded")},
			path: "/restart", want: 500, code: "request_failed", wantReq: []failover.Request{{Kind: failover.RequestRestart}}},
		{name: "restart timed out", member: &fakeMember{local: replica, err: context.DeadlineExceeded},
			path: "/restart", want: 504, code: "timeout", wantReq: []failover.Request{{Kind: failover.RequestRestart}}},
		{name: "reload with force", member: &fakeMember{local: replica}, path: "/reload", body: `{"force":true}`, want: 200,
			wantReq: []failover.Request{{Kind: failover.RequestReload}}},
		{name: "reload unknown key", member: &fakeMember{local: replica}, path: "/reload", body: `{"nope":1}`, want: 400, code: "bad_request"},
		{name: "reinitialize", member: &fakeMember{local: replica}, path: "/reinitialize", want: 200,
			wantReq: []failover.Request{{Kind: failover.RequestReinit}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := raftOnly
			if tc.member != nil {
				base = startAPI(t, st, adminConfig(), WithMember(tc.member))
			}
			r := call(t, "POST", base+tc.path, adminUser, adminPass, tc.body)
			if r.status != tc.want {
				t.Fatalf("status %d, want %d: %s", r.status, tc.want, r.body)
			}
			if tc.want != http.StatusOK {
				if got := r.wire(t).Code; got != tc.code {
					t.Errorf("code %q, want %q", got, tc.code)
				}
			}
			if tc.member != nil {
				if diff := cmp.Diff(tc.wantReq, tc.member.requests()); diff != "" {
					t.Errorf("requests to the supervisor (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestRaftOnlyEndpoints(t *testing.T) {
	base := newAdminServer(t, WithVersion("v1.2.3"))
	tests := []struct {
		method, path string
		want         int
		emptyBody    bool
		allow        string
		contains     []string
	}{
		{method: "GET", path: "/primary", want: 503, contains: []string{`"role": "uninitialized"`}},
		{method: "GET", path: "/", want: 503},
		{method: "GET", path: "/replica", want: 503},
		{method: "GET", path: "/read-only", want: 503},
		{method: "GET", path: "/health", want: 503},
		{method: "GET", path: "/readiness", want: 503},
		{method: "GET", path: "/liveness", want: 200},
		{method: "GET", path: "/replica?lag=abc", want: 400, contains: []string{`"code": "bad_request"`}},
		{method: "HEAD", path: "/primary", want: 503, emptyBody: true},
		{method: "OPTIONS", path: "/primary", want: 503, emptyBody: true},
		{method: "HEAD", path: "/liveness", want: 200, emptyBody: true},
		{method: "POST", path: "/primary", want: 405, allow: "GET, HEAD, OPTIONS", contains: []string{`"code": "method_not_allowed"`}},
		{method: "GET", path: "/patroni", want: 200,
			contains: []string{`"patroni": {`, `"scope": "test"`, `"name": "n1"`, `"version": "v1.2.3"`, `"raft_state": "Leader"`}},
		{method: "GET", path: "/metrics", want: 200,
			contains: []string{`patroni_primary{`, `raftgres_raft_term{`, `patroni_cluster_unlocked{`,
				`patroni_cluster_unlocked{name="n1",scope="test"} 1`, `raftgres_raft_is_leader{name="n1",scope="test"} 1`,
				`patroni_version{name="n1",scope="test"} 10203`}},
		{method: "GET", path: "/pause", want: 405, allow: "POST", contains: []string{`"code": "method_not_allowed"`}},
		{method: "GET", path: "/switchover", want: 405, allow: "POST, DELETE"},
		{method: "POST", path: "/config", want: 405, allow: "GET, PUT, PATCH"},
		{method: "GET", path: "/nowhere", want: 404, contains: []string{`"code": "not_found"`}},
		{method: "GET", path: "/config", want: 200, contains: []string{`"ttl": 3`}},
	}
	for _, tc := range tests {
		t.Run(tc.method+tc.path, func(t *testing.T) {
			r := call(t, tc.method, base+tc.path, "", "", "")
			if r.status != tc.want {
				t.Fatalf("status %d, want %d: %s", r.status, tc.want, r.body)
			}
			if tc.emptyBody && len(r.body) != 0 {
				t.Errorf("body %q, want none", r.body)
			}
			if !tc.emptyBody && tc.path != "/metrics" && !json.Valid(r.body) {
				t.Errorf("body is not JSON: %s", r.body)
			}
			if got := r.header.Get("Allow"); got != tc.allow {
				t.Errorf("Allow %q, want %q", got, tc.allow)
			}
			for _, s := range tc.contains {
				if !bytes.Contains(r.body, []byte(s)) {
					t.Errorf("body lacks %q:\n%s", s, r.body)
				}
			}
		})
	}
}

func TestHealthWithMember(t *testing.T) {
	st := startStore(t)
	// The api package may not import pgmanager (docs/design.md): fill PG field by field.
	local := failover.Local{Member: "n1", HasData: true, ObservedAt: time.Now()}
	local.PG.Running, local.PG.InRecovery, local.PG.Timeline, local.PG.Version = true, true, 4, "16.2"
	local.PG.ReceivedLSN, local.PG.ReplayedLSN = 0x3000060, 0x3000000
	member := &fakeMember{local: local}
	base := startAPI(t, st, adminConfig(), WithMember(member))
	tests := []struct {
		method, path string
		want         int
	}{
		{"GET", "/replica", 200},
		{"HEAD", "/replica", 200},
		{"GET", "/read-only", 200},
		{"GET", "/async", 200},
		{"GET", "/sync", 503},
		{"GET", "/primary", 503},
		{"GET", "/health", 200},
		{"GET", "/readiness", 200},
	}
	for _, tc := range tests {
		t.Run(tc.method+tc.path, func(t *testing.T) {
			r := call(t, tc.method, base+tc.path, "", "", "")
			if r.status != tc.want {
				t.Fatalf("status %d, want %d: %s", r.status, tc.want, r.body)
			}
		})
	}
	t.Run("status body", func(t *testing.T) {
		r := call(t, "GET", base+"/patroni", "", "", "")
		var got MemberStatus
		if err := json.Unmarshal(r.body, &got); err != nil {
			t.Fatal(err)
		}
		if got.Role != "replica" || got.State != "running" || got.Timeline != 4 || got.ServerVersion != 160002 ||
			got.Xlog == nil || got.Xlog.ReceivedLocation == nil || *got.Xlog.ReceivedLocation != 0x3000060 {
			t.Errorf("status %s", r.body)
		}
	})
}

// TestSwitchoverAwaitsTheOutcome: POST /switchover commits the request,
// then answers when the state shows its outcome: the key moved to the
// candidate (200), or the request was dropped (412 with the reason the
// acting side recorded).
func TestSwitchoverAwaitsTheOutcome(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		act      func(st raftstore.State) []raftstore.Command
		want     int
		contains string
	}{
		{"handed over", func(st raftstore.State) []raftstore.Command {
			return []raftstore.Command{
				raftstore.SetLeader{Holder: "pg2", PrevEpoch: st.Leader.Epoch, PrevRev: st.Leader.Rev, Reason: "switchover",
					Cause: raftstore.CauseSwitchover, Actor: "pg1", At: time.Now().UTC()},
				raftstore.SetFailover{CAS: true, Prev: st.Failover, Actor: "pg1", Reason: "done", At: time.Now().UTC()},
			}
		}, http.StatusOK, `Successfully switched over to \"pg2\"`},
		{"dropped", func(st raftstore.State) []raftstore.Command {
			return []raftstore.Command{raftstore.SetFailover{CAS: true, Prev: st.Failover, Actor: "pg1",
				Reason: "refused: candidate pg2 is not streaming from pg1", At: time.Now().UTC()}}
		}, http.StatusPreconditionFailed, "switchover did not happen: refused: candidate pg2 is not streaming from pg1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := newFakeStore(t, "pg1")
			base := startAPI(t, st, adminConfig())
			st.commit(t, raftstore.RegisterMember{Name: "pg2", APIAddr: "http://pg2:8008", Tags: raftstore.DefaultTags(), At: time.Now().UTC()})
			st.commit(t, raftstore.SetLeader{Holder: "pg1", Reason: "test", At: time.Now().UTC()})
			st.edit(func(s *raftstore.State) {
				s.Members["pg1"].Status = raftstore.MemberStatus{Role: "primary", State: "running"}
				s.Members["pg2"].Status = raftstore.MemberStatus{Role: "replica", State: "running"}
			})
			type answer struct {
				status int
				body   []byte
				err    error
			}
			done := make(chan answer, 1)
			go func() { // no t.Fatal off the test's goroutine
				req, _ := http.NewRequest("POST", base+"/switchover", strings.NewReader(`{"candidate":"pg2"}`))
				req.SetBasicAuth(adminUser, adminPass)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					done <- answer{err: err}
					return
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				done <- answer{status: resp.StatusCode, body: b, err: err}
			}()
			// The acting side (the holder's supervisor) sees the request.
			pending := st.await(t, "the switchover request committed", func(s raftstore.State) bool { return s.Failover != nil })
			for _, cmd := range tc.act(pending) {
				st.commit(t, cmd)
			}
			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.status != tc.want || !strings.Contains(string(r.body), tc.contains) {
				t.Fatalf("status %d, want %d with %q: %s", r.status, tc.want, tc.contains, r.body)
			}
		})
	}
}
