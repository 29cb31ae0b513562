package secrets

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"

	"raftgres/api"
	"raftgres/pgmanager"
)

// fakeCluster is a Cluster over fake members.
type fakeCluster struct {
	view  api.ClusterView
	creds map[string]*fakeCreds
	rots  map[string]*Rotator
	down  map[string]bool
	// failPhase makes member's step fail.
	failPhase map[string]string

	mu    sync.Mutex
	calls []string
}

func newFakeCluster(t *testing.T, names ...string) *fakeCluster {
	c := &fakeCluster{view: api.ClusterView{Scope: "demo"}, creds: map[string]*fakeCreds{}, rots: map[string]*Rotator{},
		down: map[string]bool{}, failPhase: map[string]string{}}
	for i, n := range names {
		role := api.ClusterReplica
		if i == 0 {
			role = api.ClusterLeader
		}
		c.view.Members = append(c.view.Members, api.ClusterMember{Name: n, Role: role, Host: "10.0.0.1",
			APIURL: "https://" + n + ":8008/patroni"})
		c.creds[n] = newFakeCreds(configured())
		r, err := NewRotator(n, t.TempDir(), c.creds[n], configured(), hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		c.rots[n] = r
	}
	// A Raft-only member takes no part.
	c.view.Members = append(c.view.Members, api.ClusterMember{Name: "witness", Role: "replica", APIURL: "https://witness:8008/patroni"})
	return c
}

func (c *fakeCluster) ClusterView(context.Context) (api.ClusterView, error) { return c.view, nil }

func (c *fakeCluster) RotateSecret(ctx context.Context, url string, req api.RotateRequest) (api.RotateStatus, error) {
	name := strings.TrimSuffix(strings.TrimPrefix(url, "https://"), ":8008/patroni")
	c.mu.Lock()
	c.calls = append(c.calls, req.Phase+" "+name)
	c.mu.Unlock()
	if c.down[name] {
		return api.RotateStatus{}, fmt.Errorf("POST %s/secrets/rotate: connection refused", url)
	}
	if c.failPhase[name] == req.Phase {
		return api.RotateStatus{}, fmt.Errorf("POST %s/secrets/rotate: timeout", url)
	}
	return c.rots[name].Rotate(ctx, req)
}

func (c *fakeCluster) phases() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := slices.Clone(c.calls)
	slices.Sort(out)
	return out
}

func TestRunRotation(t *testing.T) {
	t.Parallel()
	c := newFakeCluster(t, "pg1", "pg2", "pg3")
	var out, warn bytes.Buffer
	if err := Rotate(context.Background(), &out, &warn, c, pgmanager.RoleReplication, newSecret); err != nil {
		t.Fatal(err)
	}
	want := []string{"activate pg2", "activate pg3", "apply pg1", "check pg1", "check pg2", "check pg3",
		"stage pg1", "stage pg2", "stage pg3"}
	if got := c.phases(); !slices.Equal(got, want) {
		t.Fatalf("calls %v, want %v", got, want)
	}
	for n, f := range c.creds {
		if f.Password(pgmanager.RoleReplication) != newSecret {
			t.Errorf("%s does not use the new password", n)
		}
	}
	if len(c.creds["pg1"].altered) != 1 || len(c.creds["pg2"].altered) != 0 {
		t.Fatal("the role was not changed on the primary only")
	}
	if !strings.Contains(out.String(), "rotated on all 3 members") || strings.Contains(out.String()+warn.String(), newSecret) {
		t.Fatalf("output:\n%s\n%s", out.String(), warn.String())
	}
	// Again with the same password: nothing new, all fine.
	out.Reset()
	if err := Rotate(context.Background(), &out, &warn, c, pgmanager.RoleReplication, newSecret); err != nil {
		t.Fatal(err)
	}
}

func TestRunRotationRefusesWhenAMemberIsDown(t *testing.T) {
	t.Parallel()
	c := newFakeCluster(t, "pg1", "pg2", "pg3")
	c.down["pg3"] = true
	var out, warn bytes.Buffer
	err := Rotate(context.Background(), &out, &warn, c, pgmanager.RoleReplication, newSecret)
	if err == nil || !strings.Contains(err.Error(), "pg3: POST") || !strings.Contains(err.Error(), "nothing was changed") {
		t.Fatalf("error %v", err)
	}
	for _, call := range c.phases() {
		if !strings.HasPrefix(call, "check ") {
			t.Fatalf("a member is down, yet %q was sent", call)
		}
	}
}

func TestRunRotationReportsAndResumes(t *testing.T) {
	t.Parallel()
	c := newFakeCluster(t, "pg1", "pg2", "pg3")
	c.failPhase["pg3"] = api.RotateActivate
	var out, warn bytes.Buffer
	err := Rotate(context.Background(), &out, &warn, c, pgmanager.RoleReplication, newSecret)
	if err == nil || !strings.Contains(err.Error(), "pg3 could not be told") || !strings.Contains(err.Error(), "same command again") {
		t.Fatalf("error %v", err)
	}
	table := out.String()
	for _, want := range []string{`pg1\s+primary\s+new in use`, `pg2\s+replica\s+new in use`, `pg3\s+replica\s+unknown\s+POST`} {
		if !regexp.MustCompile(want).MatchString(table) {
			t.Errorf("the report lacks %q:\n%s", want, table)
		}
	}
	if c.creds["pg3"].Password(pgmanager.RoleReplication) != "repl-old" {
		t.Fatal("pg3 switched although its step failed")
	}
	// The same command again finishes the job.
	delete(c.failPhase, "pg3")
	out.Reset()
	if err := Rotate(context.Background(), &out, &warn, c, pgmanager.RoleReplication, newSecret); err != nil {
		t.Fatal(err)
	}
	if c.creds["pg3"].Password(pgmanager.RoleReplication) != newSecret {
		t.Fatal("re-running did not finish the rotation on pg3")
	}
}

func TestRunRotationNeedsAPrimary(t *testing.T) {
	t.Parallel()
	c := newFakeCluster(t, "pg1", "pg2")
	c.view.Members[0].Role = "replica"
	err := Rotate(context.Background(), &bytes.Buffer{}, &bytes.Buffer{}, c, pgmanager.RoleReplication, newSecret)
	if err == nil || !strings.Contains(err.Error(), "no primary") || len(c.phases()) != 0 {
		t.Fatalf("error %v, calls %v", err, c.phases())
	}
}

func TestInsecureURL(t *testing.T) {
	t.Parallel()
	for url, want := range map[string]bool{
		"http://10.0.0.1:8008/patroni": true, "http://pg1:8008": true, "10.0.0.1:8008": true,
		"http://127.0.0.1:8008": false, "http://localhost:8008": false, "http://[::1]:8008": false,
		"https://10.0.0.1:8008": false,
	} {
		if got := insecureURL(url); got != want {
			t.Errorf("insecureURL(%s) = %v, want %v", url, got, want)
		}
	}
}
