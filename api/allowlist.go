package api

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"raftgres/raftstore"
)

// restapi.allowlist and restapi.allowlist_include_members (Patroni's keys):
// when either is set, a request whose TCP peer address is neither in the
// list nor, with include_members, one of the cluster members' hosts is
// refused with 403 on every endpoint.

const (
	// memberPollEvery is how often the member hosts are read from the
	// store (no DNS unless they changed).
	memberPollEvery = time.Second
	// resolveEvery bounds how long a resolved member host name is trusted.
	resolveEvery = 30 * time.Second
	// resolveRetry is how soon a failed resolution is tried again.
	resolveRetry = 5 * time.Second
	// resolveTimeout bounds one round of resolutions.
	resolveTimeout = 5 * time.Second
)

// allowRule is the parsed restapi.allowlist and allowlist_include_members.
type allowRule struct {
	nets           []netip.Prefix
	includeMembers bool
}

// active reports whether the rule restricts anything.
func (a allowRule) active() bool { return len(a.nets) > 0 || a.includeMembers }

// addrSet is a set of IP addresses (unmapped, without zone).
type addrSet map[netip.Addr]struct{}

// allowed decides whether a request from client may be served. It is pure
// so that every case is table-tested: everyone when the rule is inactive;
// else a client in one of the rule's networks, or, with include_members,
// one of members. An invalid client address is refused.
func allowed(client netip.Addr, rule allowRule, members addrSet) bool {
	if !rule.active() {
		return true
	}
	if !client.IsValid() {
		return false
	}
	client = client.Unmap().WithZone("")
	for _, p := range rule.nets {
		if p.Contains(client) {
			return true
		}
	}
	if rule.includeMembers {
		_, ok := members[client]
		return ok
	}
	return false
}

// parseAllowEntry parses one restapi.allowlist entry: an IP address (a
// network of one) or a CIDR network; host bits are dropped (10.0.0.1/24 is
// 10.0.0.0/24, as Patroni reads it) and IPv4-mapped IPv6 is read as IPv4.
func parseAllowEntry(s string) (netip.Prefix, error) {
	bad := fmt.Errorf("must be an IP address or a CIDR network such as 10.0.0.0/24 (host names are not accepted), got %q", s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, bad
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, bad
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("must not have an IPv6 zone, got %q", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// parseAllowlist parses every entry; the first bad one is the error.
func parseAllowlist(entries []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, e := range entries {
		p, err := parseAllowEntry(e)
		if err != nil {
			return nil, fmt.Errorf("allowlist[%d]: %w", i, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// clientAddr is the request's TCP peer address (never a header a client
// can forge, such as X-Forwarded-For).
func clientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap().WithZone("")
}

// withAllowlist wraps next so that requests the allowlist refuses get 403.
func (s *Server) withAllowlist(next http.Handler) http.Handler {
	if !s.allow.active() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		client := clientAddr(r)
		var members addrSet
		if s.members != nil {
			members = *s.members.current.Load()
		}
		if !allowed(client, s.allow, members) {
			// Debug only: a scanner must not be able to flood the log.
			s.logger.Debug("request refused by restapi.allowlist", "client", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
			writeError(w, fmt.Errorf("%w: client %s is not allowed by restapi.allowlist", ErrNotAllowed, client), "")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// memberHosts lists the hosts (sorted, without duplicates) of every
// member's API, PostgreSQL and Raft address, and of every server in the
// Raft configuration (a bootstrap peer or a new nonvoter that has not
// registered yet). Unspecified addresses (0.0.0.0, ::) are left out.
func memberHosts(st raftstore.State, servers []raftstore.Server) []string {
	var hosts []string
	add := func(addr string) {
		h := hostOf(addr)
		if a, err := netip.ParseAddr(h); h == "" || (err == nil && a.IsUnspecified()) {
			return
		}
		hosts = append(hosts, h)
	}
	for _, m := range st.Members {
		add(m.APIAddr)
		add(m.PGAddr)
		add(m.RaftAddr)
	}
	for _, srv := range servers {
		add(srv.Address)
	}
	slices.Sort(hosts)
	return slices.Compact(hosts)
}

// hostOf is the host of "host:port", "[v6]:port" or a URL like
// "http://host:port/".
func hostOf(addr string) string {
	if _, rest, ok := strings.Cut(addr, "://"); ok {
		addr = rest
	}
	if i := strings.IndexAny(addr, "/?#"); i >= 0 {
		addr = addr[:i]
	}
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
}

// memberAddrs keeps the IP addresses of the members' hosts for
// allowlist_include_members: requests read current; one goroutine (Run's)
// calls refresh, which resolves host names only when the hosts changed or
// resolveEvery has passed, never per request.
type memberAddrs struct {
	store   Store
	lookup  func(ctx context.Context, host string) ([]netip.Addr, error)
	logger  hclog.Logger
	current atomic.Pointer[addrSet]

	// Owned by the refreshing goroutine.
	hosts      []string
	byHost     map[string][]netip.Addr
	failing    map[string]bool // hosts whose last resolution failed
	resolvedAt time.Time
}

func newMemberAddrs(store Store, logger hclog.Logger) *memberAddrs {
	m := &memberAddrs{store: store, logger: logger, byHost: map[string][]netip.Addr{},
		lookup: func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}}
	m.current.Store(&addrSet{})
	return m
}

// refresh reads the member hosts and, if they changed or their
// resolutions are older than resolveEvery, resolves them again. A host
// whose resolution fails keeps its previous addresses.
func (m *memberAddrs) refresh(ctx context.Context, now time.Time) {
	rs, _ := m.store.Status() // on error: the FSM's members alone
	hosts := memberHosts(m.store.State(), rs.Servers)
	if slices.Equal(hosts, m.hosts) && now.Sub(m.resolvedAt) < resolveEvery {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	byHost, set, failing := map[string][]netip.Addr{}, addrSet{}, map[string]bool{}
	for _, h := range hosts {
		addrs, err := m.resolve(ctx, h)
		if err != nil {
			if !m.failing[h] { // once per failure, not at every retry
				m.logger.Warn("cannot resolve a member host for restapi.allowlist_include_members: keeping its last addresses",
					"host", h, "addresses", m.byHost[h], "error", err)
			}
			failing[h] = true
			addrs = m.byHost[h]
		}
		byHost[h] = addrs
		for _, a := range addrs {
			set[a] = struct{}{}
		}
	}
	if !slices.Equal(hosts, m.hosts) {
		m.logger.Debug("restapi allowlist member hosts", "hosts", hosts, "addresses", len(set))
	}
	m.hosts, m.byHost, m.failing, m.resolvedAt = hosts, byHost, failing, now
	if len(failing) > 0 {
		m.resolvedAt = now.Add(resolveRetry - resolveEvery)
	}
	m.current.Store(&set)
}

func (m *memberAddrs) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap().WithZone("")}, nil
	}
	addrs, err := m.lookup(ctx, host)
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, a.Unmap().WithZone(""))
	}
	return out, nil
}

// run refreshes every memberPollEvery until ctx ends.
func (m *memberAddrs) run(ctx context.Context) {
	t := time.NewTicker(memberPollEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			m.refresh(ctx, now)
		}
	}
}
