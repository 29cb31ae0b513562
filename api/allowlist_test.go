package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/go-hclog"

	"raftgres/internal/conf"
	"raftgres/raftstore"
)

func TestParseAllowEntry(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "127.0.0.1", want: "127.0.0.1/32"},
		{in: "10.0.0.0/24", want: "10.0.0.0/24"},
		{in: "10.0.0.7/24", want: "10.0.0.0/24"}, // host bits dropped, as Patroni does
		{in: "0.0.0.0/0", want: "0.0.0.0/0"},
		{in: "::1", want: "::1/128"},
		{in: "2001:db8::/32", want: "2001:db8::/32"},
		{in: "2001:db8::1/48", want: "2001:db8::/48"},
		{in: "::ffff:10.1.2.3", want: "10.1.2.3/32"},     // IPv4-mapped: read as IPv4
		{in: "::ffff:10.1.2.0/120", want: "10.1.2.0/24"}, // mapped network: IPv4 bits
		{in: "::ffff:0:0/96", want: "0.0.0.0/0"},         // every mapped address
		{in: "::/0", want: "::/0"},                       // every IPv6 address (not IPv4)
		{in: "db.example.net", err: "host names are not accepted"},
		{in: "", err: "must be an IP address or a CIDR network"},
		{in: "10.0.0.0/33", err: "must be an IP address or a CIDR network"},
		{in: "10.0.0/24", err: "must be an IP address or a CIDR network"},
		{in: "10.0.0.1-10.0.0.9", err: "must be an IP address or a CIDR network"},
		{in: " 10.0.0.1", err: "must be an IP address or a CIDR network"},
		{in: "fe80::1%eth0", err: "must not have an IPv6 zone"},
		{in: "fe80::%eth0/64", err: "must be an IP address or a CIDR network"},
		{in: "127.0.0.1:8008", err: "must be an IP address or a CIDR network"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			p, err := parseAllowEntry(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("parse %q: %v, %v; want error %q", tc.in, p, err, tc.err)
				}
				return
			}
			if err != nil || p.String() != tc.want {
				t.Fatalf("parse %q: %v, %v; want %s", tc.in, p, err, tc.want)
			}
		})
	}
}

func TestParseAllowlistNamesTheEntry(t *testing.T) {
	t.Parallel()
	if _, err := parseAllowlist([]string{"10.0.0.0/8", "127.0.0.1", "nope"}); err == nil || !strings.HasPrefix(err.Error(), "allowlist[2]: ") {
		t.Fatalf("error %v, want it to name allowlist[2]", err)
	}
	err := Config{Listen: "127.0.0.1:8008", Allowlist: []string{"10.0.0.0/8", "x", "10.0.0.0/99"}}.Validate()
	var fe *conf.FieldError
	if !errors.As(err, &fe) || fe.Path != "allowlist[1]" || !strings.Contains(err.Error(), "allowlist[2]: must be") {
		t.Fatalf("Validate: %v, want allowlist[1] and allowlist[2]", err)
	}
	if err := (Config{Listen: "127.0.0.1:8008", Allowlist: []string{"10.0.0.0/8", "::1"}, AllowlistIncludeMembers: true}).Validate(); err != nil {
		t.Fatalf("Validate of a good allowlist: %v", err)
	}
}

func mustPrefixes(t *testing.T, entries ...string) []netip.Prefix {
	t.Helper()
	ps, err := parseAllowlist(entries)
	if err != nil {
		t.Fatal(err)
	}
	return ps
}

func addrs(ss ...string) addrSet {
	out := addrSet{}
	for _, s := range ss {
		out[netip.MustParseAddr(s)] = struct{}{}
	}
	return out
}

func TestAllowed(t *testing.T) {
	t.Parallel()
	nets := mustPrefixes(t, "10.0.0.0/24", "127.0.0.2", "2001:db8::/32", "::1")
	members := addrs("192.0.2.10", "fd00::10")
	for _, tc := range []struct {
		name    string
		client  string // "" is an address that could not be parsed
		nets    []netip.Prefix
		include bool
		members addrSet
		want    bool
	}{
		{name: "no rule: everyone", client: "203.0.113.9", want: true},
		{name: "no rule: even an unparsable peer", client: "", want: true},
		{name: "no rule with members known", client: "203.0.113.9", members: members, want: true},
		{name: "ipv4 in a network", client: "10.0.0.200", nets: nets, want: true},
		{name: "ipv4 just outside the network", client: "10.0.1.0", nets: nets, want: false},
		{name: "single ipv4", client: "127.0.0.2", nets: nets, want: true},
		{name: "neighbour of a single ipv4", client: "127.0.0.1", nets: nets, want: false},
		{name: "ipv6 in a network", client: "2001:db8:1::5", nets: nets, want: true},
		{name: "ipv6 outside", client: "2001:db9::5", nets: nets, want: false},
		{name: "single ipv6", client: "::1", nets: nets, want: true},
		{name: "ipv4-mapped client in an ipv4 network", client: "::ffff:10.0.0.3", nets: nets, want: true},
		{name: "ipv4-mapped client outside", client: "::ffff:10.0.9.3", nets: nets, want: false},
		{name: "ipv4-mapped entry matches a plain ipv4 client", client: "10.9.9.9", nets: mustPrefixes(t, "::ffff:10.9.9.9"), want: true},
		{name: "ipv6 network does not admit ipv4", client: "10.0.0.1", nets: mustPrefixes(t, "::/0"), want: false},
		{name: "ipv4 any admits every ipv4", client: "198.51.100.1", nets: mustPrefixes(t, "0.0.0.0/0"), want: true},
		{name: "zoned client", client: "fe80::1%eth0", nets: mustPrefixes(t, "fe80::/64"), want: true},
		{name: "unparsable peer is refused", client: "", nets: nets, want: false},
		{name: "members not included", client: "192.0.2.10", nets: nets, members: members, want: false},
		{name: "member ipv4", client: "192.0.2.10", nets: nets, include: true, members: members, want: true},
		{name: "member as ipv4-mapped", client: "::ffff:192.0.2.10", include: true, members: members, want: true},
		{name: "member ipv6", client: "fd00::10", include: true, members: members, want: true},
		{name: "not a member", client: "192.0.2.11", nets: nets, include: true, members: members, want: false},
		{name: "include members alone, none known yet", client: "192.0.2.10", include: true, want: false},
		{name: "include members still honours the list", client: "10.0.0.1", nets: nets, include: true, members: members, want: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var client netip.Addr
			if tc.client != "" {
				client = netip.MustParseAddr(tc.client)
			}
			if got := allowed(client, allowRule{nets: tc.nets, includeMembers: tc.include}, tc.members); got != tc.want {
				t.Fatalf("allowed(%s) = %v, want %v", tc.client, got, tc.want)
			}
		})
	}
}

func TestClientAddr(t *testing.T) {
	t.Parallel()
	for remote, want := range map[string]string{
		"10.0.0.1:5000":          "10.0.0.1",
		"[::ffff:10.0.0.1]:5000": "10.0.0.1",
		"[2001:db8::1]:443":      "2001:db8::1",
		"[fe80::1%eth0]:443":     "fe80::1",
		"garbage":                "invalid IP",
		"":                       "invalid IP",
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = remote
		r.Header.Set("X-Forwarded-For", "10.0.0.1")
		if got := clientAddr(r).String(); got != want {
			t.Errorf("clientAddr(%q) = %s, want %s", remote, got, want)
		}
	}
}

func TestMemberHosts(t *testing.T) {
	t.Parallel()
	st := raftstore.State{Members: map[string]*raftstore.Member{
		"pg1": {APIAddr: "http://10.0.0.1:8008", PGAddr: "10.0.0.1:5432", RaftAddr: "10.0.0.1:7001"},
		"pg2": {APIAddr: "https://pg2.example.net:8008", PGAddr: "pg2-db.example.net:5432", RaftAddr: "10.0.0.2:7001"},
		"pg3": {APIAddr: "http://[2001:db8::3]:8008/", PGAddr: "0.0.0.0:5432"},
		"pg4": {APIAddr: "10.0.0.4:8008"},
	}}
	servers := []raftstore.Server{{ID: "pg1", Address: "10.0.0.1:7001"}, {ID: "pg5", Address: "10.0.0.5:7001"}, {ID: "pg6", Address: "[::]:7001"}}
	want := []string{"10.0.0.1", "10.0.0.2", "10.0.0.4", "10.0.0.5", "2001:db8::3", "pg2-db.example.net", "pg2.example.net"}
	if diff := cmp.Diff(want, memberHosts(st, servers)); diff != "" {
		t.Fatalf("member hosts (-want +got):\n%s", diff)
	}
}

// allowStore is the part of Store the allowlist reads: members and the
// Raft configuration, changeable while a test runs.
type allowStore struct {
	Store // nil: the other methods are not called

	mu      sync.Mutex
	members map[string]*raftstore.Member
	servers []raftstore.Server
}

func (s *allowStore) ID() string { return "pg1" }

func (s *allowStore) State() raftstore.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]*raftstore.Member{}
	for k, v := range s.members {
		m[k] = v
	}
	return raftstore.State{Members: m}
}

func (s *allowStore) Status() (raftstore.Status, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return raftstore.Status{ID: "pg1", State: "Leader", LeaderID: "pg1", Servers: append([]raftstore.Server(nil), s.servers...)}, nil
}

func (s *allowStore) Export(string, time.Time) ([]byte, error) { return []byte("{}"), nil }

func (s *allowStore) set(members map[string]*raftstore.Member, servers ...raftstore.Server) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.members, s.servers = members, servers
}

// fakeDNS answers lookups from a table and counts them.
type fakeDNS struct {
	mu    sync.Mutex
	table map[string][]netip.Addr
	calls map[string]int
}

func (d *fakeDNS) lookup(_ context.Context, host string) ([]netip.Addr, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls[host]++
	a, ok := d.table[host]
	if !ok {
		return nil, fmt.Errorf("lookup %s: no such host", host)
	}
	return a, nil
}

func (d *fakeDNS) setHost(host string, a ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var as []netip.Addr
	for _, s := range a {
		as = append(as, netip.MustParseAddr(s))
	}
	if as == nil {
		delete(d.table, host)
		return
	}
	d.table[host] = as
}

func (d *fakeDNS) count(host string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.calls[host]
}

func (m *memberAddrs) snapshot() []string {
	var out []string
	for a := range *m.current.Load() {
		out = append(out, a.String())
	}
	slices.Sort(out)
	return out
}

func TestMemberAddrsRefresh(t *testing.T) {
	t.Parallel()
	store := &allowStore{}
	store.set(map[string]*raftstore.Member{
		"pg1": {APIAddr: "http://10.0.0.1:8008", PGAddr: "db1.example.net:5432", RaftAddr: "10.0.0.1:7001"},
	}, raftstore.Server{ID: "pg2", Address: "raft2.example.net:7001"})
	dns := &fakeDNS{table: map[string][]netip.Addr{}, calls: map[string]int{}}
	dns.setHost("db1.example.net", "10.0.1.1", "::ffff:10.0.1.2")
	dns.setHost("raft2.example.net", "fd00::2")
	m := newMemberAddrs(store, hclog.NewNullLogger())
	m.lookup = dns.lookup
	ctx := context.Background()
	t0 := time.Now()

	m.refresh(ctx, t0)
	want := []string{"10.0.0.1", "10.0.1.1", "10.0.1.2", "fd00::2"}
	if diff := cmp.Diff(want, m.snapshot()); diff != "" {
		t.Fatalf("addresses (-want +got):\n%s", diff)
	}
	// Unchanged hosts within resolveEvery: no lookup at all.
	for i := range 20 {
		m.refresh(ctx, t0.Add(time.Duration(i)*time.Second))
	}
	if n := dns.count("db1.example.net"); n != 1 {
		t.Fatalf("db1 resolved %d times with unchanged members, want 1", n)
	}
	// After resolveEvery: resolved again, and a new address is seen.
	dns.setHost("db1.example.net", "10.0.1.3")
	m.refresh(ctx, t0.Add(resolveEvery))
	if n := dns.count("db1.example.net"); n != 2 {
		t.Fatalf("db1 resolved %d times after %s, want 2", n, resolveEvery)
	}
	want = []string{"10.0.0.1", "10.0.1.3", "fd00::2"}
	if diff := cmp.Diff(want, m.snapshot()); diff != "" {
		t.Fatalf("addresses after re-resolving (-want +got):\n%s", diff)
	}
	// A new member: resolved at once.
	t1 := t0.Add(resolveEvery + time.Second)
	store.set(map[string]*raftstore.Member{
		"pg1": {APIAddr: "http://10.0.0.1:8008", PGAddr: "db1.example.net:5432", RaftAddr: "10.0.0.1:7001"},
		"pg2": {APIAddr: "http://10.0.0.2:8008", RaftAddr: "raft2.example.net:7001"},
	}, raftstore.Server{ID: "pg2", Address: "raft2.example.net:7001"})
	m.refresh(ctx, t1)
	want = []string{"10.0.0.1", "10.0.0.2", "10.0.1.3", "fd00::2"}
	if diff := cmp.Diff(want, m.snapshot()); diff != "" {
		t.Fatalf("addresses after a member joined (-want +got):\n%s", diff)
	}
	// A failed resolution keeps the host's previous addresses and is
	// retried after resolveRetry, not resolveEvery.
	dns.setHost("db1.example.net")
	m.refresh(ctx, t1.Add(resolveEvery))
	if diff := cmp.Diff(want, m.snapshot()); diff != "" {
		t.Fatalf("addresses after a failed lookup (-want +got):\n%s", diff)
	}
	before := dns.count("db1.example.net")
	m.refresh(ctx, t1.Add(resolveEvery+resolveRetry-time.Millisecond))
	if n := dns.count("db1.example.net"); n != before {
		t.Fatalf("retried before resolveRetry")
	}
	dns.setHost("db1.example.net", "10.0.1.4")
	m.refresh(ctx, t1.Add(resolveEvery+resolveRetry))
	want = []string{"10.0.0.1", "10.0.0.2", "10.0.1.4", "fd00::2"}
	if diff := cmp.Diff(want, m.snapshot()); diff != "" {
		t.Fatalf("addresses after the retry (-want +got):\n%s", diff)
	}
	// A member gone: its addresses go with it.
	store.set(map[string]*raftstore.Member{"pg1": {APIAddr: "http://10.0.0.1:8008"}})
	m.refresh(ctx, t1.Add(resolveEvery+resolveRetry+time.Second))
	if diff := cmp.Diff([]string{"10.0.0.1"}, m.snapshot()); diff != "" {
		t.Fatalf("addresses after members left (-want +got):\n%s", diff)
	}
}

// newAllowServer builds a Server over a fake store with the given
// restapi allowlist keys.
func newAllowServer(t *testing.T, store *allowStore, allow []string, includeMembers bool) *Server {
	t.Helper()
	cfg := Config{Listen: "127.0.0.1:0", Token: conf.Secret(testToken), Allowlist: allow, AllowlistIncludeMembers: includeMembers}
	srv, err := New(cfg, "test", store, nil, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

func serve(h http.Handler, method, path, remote string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, nil)
	r.RemoteAddr = remote
	r.Header.Set("Authorization", "Bearer "+testToken)
	r.Header.Set("X-Forwarded-For", "127.0.0.2") // never trusted
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// refusedByAllowlist tells the allowlist's 403 from other answers (a
// HEAD answer has no body: any 403 counts).
func refusedByAllowlist(w *httptest.ResponseRecorder) bool {
	return w.Code == http.StatusForbidden && (w.Body.Len() == 0 || strings.Contains(w.Body.String(), `"not_allowed"`))
}

// everyPath is one request per kind of endpoint: health, status, metrics,
// admin, internal and an unknown path.
var everyPath = []struct{ method, path string }{
	{"GET", "/"}, {"GET", "/primary"}, {"HEAD", "/replica"}, {"OPTIONS", "/health"}, {"GET", "/liveness"},
	{"GET", "/patroni"}, {"GET", "/cluster"}, {"GET", "/history"}, {"GET", "/config"}, {"GET", "/metrics"},
	{"POST", "/switchover"}, {"PATCH", "/config"}, {"GET", "/raft/status"}, {"POST", "/raft/join"},
	{"POST", "/raft/apply"}, {"GET", "/snapshot"}, {"GET", "/backup/endpoint"}, {"GET", "/no/such/path"},
}

func TestAllowlistMiddleware(t *testing.T) {
	t.Parallel()
	store := &allowStore{}
	store.set(map[string]*raftstore.Member{"pg1": {APIAddr: "http://192.0.2.1:8008", PGAddr: "192.0.2.1:5432"},
		"pg2": {APIAddr: "http://[2001:db8::2]:8008"}})

	open := newAllowServer(t, store, nil, false)
	if open.members != nil {
		t.Fatal("member addresses kept without allowlist_include_members")
	}
	for _, p := range everyPath {
		if w := serve(open.Handler(), p.method, p.path, "203.0.113.7:4000"); refusedByAllowlist(w) {
			t.Errorf("no allowlist: %s %s refused: %s", p.method, p.path, w.Body)
		}
	}

	listed := newAllowServer(t, store, []string{"10.0.0.0/24", "127.0.0.2"}, false)
	members := newAllowServer(t, store, []string{"10.0.0.0/24"}, true)
	members.members.refresh(context.Background(), time.Now())
	for _, tc := range []struct {
		name   string
		srv    *Server
		remote string
		want   bool
	}{
		{"listed network", listed, "10.0.0.9:1234", true},
		{"listed address", listed, "127.0.0.2:1234", true},
		{"listed, as ipv4-mapped", listed, "[::ffff:127.0.0.2]:1234", true},
		{"not listed (X-Forwarded-For ignored)", listed, "127.0.0.1:1234", false},
		{"a member's host, members not included", listed, "192.0.2.1:1234", false},
		{"a member's host", members, "192.0.2.1:1234", true},
		{"a member's ipv6 host", members, "[2001:db8::2]:1234", true},
		{"listed network with members", members, "10.0.0.1:1234", true},
		{"neither", members, "192.0.2.3:1234", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, p := range everyPath {
				w := serve(tc.srv.Handler(), p.method, p.path, tc.remote)
				if refusedByAllowlist(w) == tc.want {
					t.Errorf("%s %s from %s: %d, want allowed=%v: %s", p.method, p.path, tc.remote, w.Code, tc.want, w.Body)
					continue
				}
				if tc.want || p.method == "HEAD" {
					continue
				}
				var we wireError
				if err := json.Unmarshal(w.Body.Bytes(), &we); err != nil || we.Code != "not_allowed" ||
					!strings.Contains(we.Error, "is not allowed by restapi.allowlist") {
					t.Errorf("%s %s from %s: body %q (%v), want a not_allowed JSON error", p.method, p.path, tc.remote, w.Body, err)
				}
				if ct := w.Header().Get("Content-Type"); ct != "application/json" {
					t.Errorf("%s %s: content type %q", p.method, p.path, ct)
				}
			}
		})
	}
	if err := errorFromWire("not_allowed", "client 1.2.3.4 is not allowed"); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("a not_allowed answer decodes to %v, want ErrNotAllowed", err)
	}
}

// TestAllowlistOverTCP checks the rule on real connections: the peer
// address is the one the kernel reports, from 127.0.0.1 or 127.0.0.2.
func TestAllowlistOverTCP(t *testing.T) {
	t.Parallel()
	store := &allowStore{}
	srv := newAllowServer(t, store, []string{"127.0.0.2"}, false)
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	get := func(from string) (int, string) {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
		c := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 5 * time.Second}
		defer c.CloseIdleConnections()
		req, _ := http.NewRequest("GET", hs.URL+"/cluster", nil)
		req.Header.Set("X-Forwarded-For", "127.0.0.2")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET from %s: %v", from, err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Content-Type")
	}
	if code, _ := get("127.0.0.2"); code != http.StatusOK {
		t.Errorf("from 127.0.0.2: %d, want 200", code)
	}
	if code, ct := get("127.0.0.1"); code != http.StatusForbidden || ct != "application/json" {
		t.Errorf("from 127.0.0.1: %d %s, want 403 application/json", code, ct)
	}
	// The Go client sees the sentinel.
	_, err := NewClient(hs.URL, ClientOptions{Token: testToken, Timeout: 5 * time.Second}).Cluster(context.Background())
	if !errors.Is(err, ErrNotAllowed) {
		t.Errorf("client from 127.0.0.1: %v, want ErrNotAllowed", err)
	}
}
