package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"raftgres/api"
)

// httpCode sends method to url (with basic auth when user is set) and
// returns the status and body.
func httpCode(t testing.TB, method, url, body, user, pass string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	client := &http.Client{Timeout: 60 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// roleCodes is what each health endpoint answers on a primary and on a
// streaming asynchronous replica (Patroni's semantics).
var roleCodes = []struct {
	path             string
	primary, replica int
}{
	{"/", 200, 503}, {"/primary", 200, 503}, {"/master", 200, 503}, {"/leader", 200, 503}, {"/read-write", 200, 503},
	{"/replica", 503, 200}, {"/replica?lag=64MB", 503, 200}, {"/read-only", 200, 200},
	{"/sync", 503, 503}, {"/synchronous", 503, 503}, {"/async", 503, 200}, {"/asynchronous", 503, 200},
	{"/health", 200, 200}, {"/liveness", 200, 200}, {"/readiness", 200, 200},
}

// TestAPIRolesAdminAndCLI checks every health endpoint's code in each
// role for GET, HEAD and OPTIONS, that admin endpoints demand credentials,
// and the CLI's list, switchover, edit-config, restart and check against a
// real cluster (check: 0 healthy, 1 degraded, 2 leaderless).
func TestAPIRolesAdminAndCLI(t *testing.T) {
	c := newPGCluster(t, 3)
	primary := c.waitPrimary(90*time.Second, c.nodes...)
	c.waitStreaming(primary)

	for _, n := range c.nodes {
		role := "replica"
		if n == primary {
			role = "primary"
		}
		for _, rc := range roleCodes {
			want := rc.replica
			if n == primary {
				want = rc.primary
			}
			for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodOptions} {
				code, body := httpCode(t, m, n.APIURL()+rc.path, "", "", "")
				if code != want {
					t.Errorf("%s %s on %s (%s): %d, want %d: %s", m, rc.path, n.Name, role, code, want, body)
				}
				if m == http.MethodGet && rc.path != "/liveness" {
					var st api.MemberStatus
					if err := json.Unmarshal([]byte(body), &st); err != nil || string(st.Role) != role || st.Patroni.Name != n.Name {
						t.Errorf("GET %s on %s: role %q name %q (%v), want %s", rc.path, n.Name, st.Role, st.Patroni.Name, err, role)
					}
				} else if m != http.MethodGet && body != "" {
					t.Errorf("%s %s on %s has a body: %q", m, rc.path, n.Name, body)
				}
			}
		}
		_, metrics := httpCode(t, "GET", n.APIURL()+"/metrics", "", "", "")
		wantPrimary := map[bool]string{true: "1", false: "0"}[n == primary]
		line := fmt.Sprintf(`patroni_primary{name=%q,scope="itest"} %s`, n.Name, wantPrimary)
		if !strings.Contains(metrics, line) {
			t.Errorf("/metrics on %s lacks %q", n.Name, line)
		}
		if n == primary {
			// The lag series come from the supervisor's last look at
			// pg_stat_replication (every ttl/2 when steady), which may
			// predate the standbys' streaming that waitStreaming saw.
			waitFor(t, 10*time.Second, "the primary's replication lag series", func() (bool, error) {
				_, metrics = httpCode(t, "GET", n.APIURL()+"/metrics", "", "", "")
				return strings.Count(metrics, "patroni_postgresql_replication_lag_bytes{") == len(c.nodes)-1, nil
			})
		}
		checkAliasMetrics(t, c, n, primary, metrics)
	}

	// Admin endpoints refuse anonymous and wrong credentials.
	admin := []struct{ method, path string }{
		{"PATCH", "/config"}, {"PUT", "/config"}, {"POST", "/switchover"}, {"DELETE", "/switchover"},
		{"POST", "/failover"}, {"POST", "/restart"}, {"POST", "/reload"}, {"POST", "/reinitialize"},
		{"POST", "/pause"}, {"POST", "/resume"},
	}
	for _, a := range admin {
		for _, pass := range []string{"", "wrong"} {
			user := map[string]string{"": "", "wrong": "admin"}[pass]
			if code, body := httpCode(t, a.method, primary.APIURL()+a.path, "{}", user, pass); code != http.StatusUnauthorized {
				t.Errorf("%s %s with password %q: %d, want 401: %s", a.method, a.path, pass, code, body)
			}
		}
	}
	if code, _ := httpCode(t, "POST", primary.APIURL()+"/switchover", `{"candidate": "ghost"}`, "admin", "adminpw"); code != 404 {
		t.Errorf("switchover to an unknown member: %d, want 404", code)
	}
	if code, _ := httpCode(t, "POST", primary.APIURL()+"/failover", `{"candidate": `, "admin", "adminpw"); code != 400 {
		t.Errorf("malformed failover body: %d, want 400", code)
	}
	if t.Failed() {
		t.FailNow()
	}

	// CLI: list, switchover to a named replica, check.
	out, stderr, code := runCLI(t, "list", "-c", primary.Config, "--format", "json")
	var view api.ClusterView
	if err := json.Unmarshal([]byte(out), &view); code != 0 || err != nil || len(view.Members) != 3 {
		t.Fatalf("list --format json: exit %d, %v: %s %s", code, err, out, stderr)
	}
	if out, _, code := runCLI(t, "check", "-c", primary.Config); code != 0 || !strings.HasPrefix(out, "OK:") {
		t.Fatalf("check on a healthy cluster: exit %d: %s", code, out)
	}
	var target *Node
	for _, n := range c.nodes {
		if n != primary {
			target = n
			break
		}
	}
	out, stderr, code = runCLI(t, "switchover", "-c", target.Config, "--candidate", target.Name, "--force")
	if code != 0 {
		t.Fatalf("switchover: exit %d: %s %s", code, out, stderr)
	}
	st, err := c.state()
	if err != nil || st.Leader.Holder != target.Name {
		t.Fatalf("after switchover the key is %q (%v), want %s", st.Leader.Holder, err, target.Name)
	}
	newPrimary := c.waitPrimary(60*time.Second, c.nodes...)
	if newPrimary != target {
		t.Fatalf("primary %s, want %s", newPrimary.Name, target.Name)
	}

	// edit-config reaches every PostgreSQL (reload on config change).
	if out, stderr, code := runCLI(t, "edit-config", "-c", primary.Config, "--pg", "work_mem=7MB", "--force"); code != 0 {
		t.Fatalf("edit-config: exit %d: %s %s", code, out, stderr)
	}
	for _, n := range c.nodes {
		waitFor(t, 15*time.Second, n.Name+" work_mem 7MB", func() (bool, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			var v string
			err := pgQueryRow(ctx, n, "SHOW work_mem", &v)
			return v == "7MB", err
		})
	}

	// restart of one replica through its own API restarts its postmaster.
	replica := primary // the old primary follows now
	before, err := replica.Client().MemberStatus(ctxT(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if out, stderr, code := runCLI(t, "restart", replica.Name, "-c", target.Config, "--force"); code != 0 {
		t.Fatalf("restart %s: exit %d: %s %s", replica.Name, code, out, stderr)
	}
	waitFor(t, 30*time.Second, replica.Name+" restarted", func() (bool, error) {
		after, err := replica.Client().MemberStatus(context.Background())
		return err == nil && after.State == "running" && after.PostmasterStartTime != before.PostmasterStartTime, err
	})

	// restart of the primary keeps its key: no failover.
	st, _ = c.state()
	epoch := st.Leader.Epoch
	before, _ = newPrimary.Client().MemberStatus(ctxT(t, 5*time.Second))
	if out, stderr, code := runCLI(t, "restart", newPrimary.Name, "-c", newPrimary.Config, "--force"); code != 0 {
		t.Fatalf("restart %s: exit %d: %s %s", newPrimary.Name, code, out, stderr)
	}
	waitFor(t, 30*time.Second, newPrimary.Name+" restarted as primary", func() (bool, error) {
		after, err := newPrimary.Client().MemberStatus(context.Background())
		return err == nil && after.Role == "primary" && after.Raftgres.LeaseValid &&
			after.PostmasterStartTime != before.PostmasterStartTime, err
	})
	if st, _ := c.state(); st.Leader.Holder != newPrimary.Name || st.Leader.Epoch != epoch {
		t.Fatalf("restart of the primary moved the key: %+v (epoch was %d)", st.Leader, epoch)
	}

	// Degraded: a replica's agent is gone → warning once its report is stale.
	var lost *Node
	for _, n := range c.nodes {
		if n != newPrimary {
			lost = n
			break
		}
	}
	lost.Kill9()
	waitFor(t, 30*time.Second, "check exit 1 with a replica gone", func() (bool, error) {
		out, _, code := runCLI(t, "check", "-c", newPrimary.Config)
		return code == 1 && strings.HasPrefix(out, "WARNING:"), fmt.Errorf("exit %d: %s", code, out)
	})

	// Leaderless: in maintenance mode nobody replaces a lost primary.
	if out, stderr, code := runCLI(t, "pause", "-c", newPrimary.Config); code != 0 {
		t.Fatalf("pause: exit %d: %s %s", code, out, stderr)
	}
	newPrimary.Kill9()
	var survivor *Node
	for _, n := range c.nodes {
		if n != newPrimary && n != lost {
			survivor = n
		}
	}
	waitFor(t, 30*time.Second, "check exit 2 without a primary", func() (bool, error) {
		out, _, code := runCLI(t, "check", "-c", survivor.Config)
		return code == 2 && strings.HasPrefix(out, "CRITICAL:"), fmt.Errorf("exit %d: %s", code, out)
	})
}

// checkAliasMetrics checks a member's alias series (README, Metrics) on a
// real cluster: its role, a received LSN printed as digits on a replica,
// and the primary's lag series for every streaming replica.
func checkAliasMetrics(t *testing.T, c *cluster, n, primary *Node, metrics string) {
	t.Helper()
	role := map[bool]string{true: "primary", false: "replica"}[n == primary]
	want := []string{fmt.Sprintf(`patroni_postgresql_role{name=%q,role=%q,scope="itest"} 1`, n.Name, role),
		fmt.Sprintf(`patroni_postgresql_state{name=%q,scope="itest",state="running"} 1`, n.Name)}
	var pattern string
	if n == primary {
		for _, r := range c.nodes {
			if r != primary {
				want = append(want, fmt.Sprintf(`patroni_postgresql_replication_lag_bytes{application_name=%q,name=%q,scope="itest"} `, r.Name, n.Name))
			}
		}
	} else {
		pattern = fmt.Sprintf(`(?m)^patroni_postgresql_last_wal_receive_lsn_offset\{name=%q,scope="itest"\} [1-9][0-9]*$`, n.Name)
	}
	for _, w := range want {
		if !strings.Contains(metrics, w) {
			t.Errorf("/metrics on %s lacks %q", n.Name, w)
		}
	}
	if pattern != "" && !regexp.MustCompile(pattern).MatchString(metrics) {
		t.Errorf("/metrics on %s has no received LSN in digits (%s)", n.Name, pattern)
	}
}
