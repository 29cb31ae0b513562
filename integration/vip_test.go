package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// The VIP test's addresses on the lab's cluster subnet (10.213.0.0/24):
// the VIP, and the test process's own leg on the bridge, from which it
// connects to the VIP as a client on the same segment would.
const (
	vipAddress = "10.213.0.100"
	vipClient  = "10.213.0.250"
)

// addClientLeg gives the root namespace a veth into the lab's bridge with
// vipClient, so the test connects to the VIP across the bridge (ARP,
// gratuitous ARP and all). Deleting the root end deletes the pair.
func (l *netLab) addClientLeg(t testing.TB) {
	t.Helper()
	root, peer := "rg"+l.id+"v", "rg"+l.id+"w"
	for _, args := range [][]string{
		{"link", "add", root, "type", "veth", "peer", "name", peer, "netns", l.bridge},
		{"-n", l.bridge, "link", "set", peer, "master", "br0", "up"},
		{"addr", "add", vipClient + "/24", "dev", root},
		{"link", "set", root, "up"},
	} {
		if err := ipCmd(args...); err != nil {
			_ = ipCmd("link", "del", root)
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = ipCmd("link", "del", root) })
}

// vipSampler reads, every 30 ms, which namespaces carry the VIP on their
// cluster link: a namespace answers for it (ARP) only while that link is
// up, so a holder whose link is cut or whose host is lost does not count
// as answering. It records every sample where two namespaces answer, and,
// apart, where two carry it at all (hosts marked lost excepted: nothing
// runs there to remove it).
type vipSampler struct {
	names   []string // member names, in lab order
	handles []*netlink.Handle
	stopC   chan struct{}
	done    chan struct{}

	mu       sync.Mutex
	samples  int
	errs     int
	double   []string // samples with two answering holders
	rawTwice []string // samples with two carrying it (lost hosts excepted)
	lost     map[string]bool
	last     []string // the answering holders of the last sample
	lastAt   time.Time
}

func startVIPSampler(t testing.TB, lab *netLab, c *cluster) *vipSampler {
	t.Helper()
	s := &vipSampler{stopC: make(chan struct{}), done: make(chan struct{}), lost: map[string]bool{}}
	for i, ns := range lab.nodes {
		h, err := netns.GetFromName(ns)
		if err != nil {
			t.Fatalf("namespace %s: %v", ns, err)
		}
		nh, err := netlink.NewHandleAt(h)
		_ = h.Close()
		if err != nil {
			t.Fatalf("netlink in %s: %v", ns, err)
		}
		s.names, s.handles = append(s.names, c.nodes[i].Name), append(s.handles, nh)
	}
	go s.run()
	t.Cleanup(s.stop)
	return s
}

func (s *vipSampler) run() {
	defer close(s.done)
	tick := time.NewTicker(30 * time.Millisecond)
	defer tick.Stop()
	want := net.ParseIP(vipAddress)
	for {
		select {
		case <-s.stopC:
			return
		case <-tick.C:
		}
		var answering, carrying []string
		errs := 0
		for i, h := range s.handles {
			l, err := h.LinkByName("cl0")
			if err != nil {
				errs++
				continue
			}
			addrs, err := h.AddrList(l, netlink.FAMILY_V4)
			if err != nil {
				errs++
				continue
			}
			if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.IP.Equal(want) }) {
				continue
			}
			carrying = append(carrying, s.names[i])
			if l.Attrs().OperState == netlink.OperUp {
				answering = append(answering, s.names[i])
			}
		}
		now := time.Now()
		s.mu.Lock()
		s.samples++
		s.errs += errs
		s.last, s.lastAt = answering, now
		if len(answering) > 1 {
			s.double = append(s.double, fmt.Sprintf("%s: %v answer", now.Format("15:04:05.000"), answering))
		}
		alive := slices.DeleteFunc(slices.Clone(carrying), func(n string) bool { return s.lost[n] })
		if len(alive) > 1 {
			s.rawTwice = append(s.rawTwice, fmt.Sprintf("%s: %v carry it", now.Format("15:04:05.000"), alive))
		}
		s.mu.Unlock()
	}
}

func (s *vipSampler) stop() {
	select {
	case <-s.stopC:
	default:
		close(s.stopC)
		<-s.done
		for _, h := range s.handles {
			h.Close()
		}
	}
}

func (s *vipSampler) setLost(name string, lost bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lost[name] = lost
}

// holders is the last sample's answering holders, taken after since.
func (s *vipSampler) holders(since time.Time) ([]string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.last), s.lastAt.After(since)
}

// check fails the test on any sample with two holders.
func (s *vipSampler) check(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.double) > 0 {
		t.Errorf("two namespaces answered on the VIP at once in %d samples:\n%s", len(s.double), strings.Join(s.double, "\n"))
	}
	if len(s.rawTwice) > 0 {
		t.Errorf("two live namespaces carried the VIP at once in %d samples:\n%s", len(s.rawTwice), strings.Join(s.rawTwice, "\n"))
	}
}

// vipWriter writes through the VIP, reconnecting on every error, and
// records each acknowledgement with the member that made it.
type vipWriter struct {
	port   int
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	ackAt []time.Time
	ackOn []string
	fails int
}

func startVIPWriter(t testing.TB, port int) *vipWriter {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &vipWriter{port: port, cancel: cancel, done: make(chan struct{})}
	go w.run(ctx)
	t.Cleanup(w.stop)
	return w
}

func (w *vipWriter) run(ctx context.Context) {
	defer close(w.done)
	url := fmt.Sprintf("postgres://postgres:%s@%s:%d/postgres?sslmode=disable&connect_timeout=1", superPassword, vipAddress, w.port)
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	for id := 0; ctx.Err() == nil; id++ {
		if conn == nil {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			c, err := pgx.Connect(cctx, url)
			cancel()
			if err != nil {
				w.fail(ctx)
				continue
			}
			conn = c
		}
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		var dir string
		err := conn.QueryRow(wctx, "INSERT INTO vipw VALUES ($1) RETURNING current_setting('data_directory')", id).Scan(&dir)
		cancel()
		if err != nil {
			_ = conn.Close(context.Background())
			conn = nil
			w.fail(ctx)
			continue
		}
		// The data directory is …/<member>/pgdata.
		member := filepath.Base(filepath.Dir(dir))
		w.mu.Lock()
		w.ackAt, w.ackOn = append(w.ackAt, time.Now()), append(w.ackOn, member)
		w.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (w *vipWriter) fail(ctx context.Context) {
	w.mu.Lock()
	w.fails++
	w.mu.Unlock()
	select {
	case <-ctx.Done():
	case <-time.After(20 * time.Millisecond):
	}
}

func (w *vipWriter) stop() {
	w.cancel()
	<-w.done
}

// gap is the time from the last acknowledgement before at to the first
// one by member after at (ok false when member acknowledged nothing
// after at).
func (w *vipWriter) gap(at time.Time, member string) (gap time.Duration, first time.Time, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var before time.Time
	for i, t := range w.ackAt {
		if t.Before(at) {
			before = t
			continue
		}
		if w.ackOn[i] == member {
			if before.IsZero() {
				before = at
			}
			return t.Sub(before), t, true
		}
	}
	return 0, time.Time{}, false
}

// onlyAfter reports acknowledgements by members other than member after t.
func (w *vipWriter) othersAfter(t time.Time, member string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for i, at := range w.ackAt {
		if at.After(t) && w.ackOn[i] != member {
			out = append(out, fmt.Sprintf("%s on %s", at.Format("15:04:05.000"), w.ackOn[i]))
		}
	}
	return out
}

func (w *vipWriter) count() (acks, fails int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.ackAt), w.fails
}

// procCaps reads CapEff, CapPrm, CapAmb and CapInh of pid.
func procCaps(pid int) (map[string]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	caps := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && (k == "CapEff" || k == "CapPrm" || k == "CapAmb" || k == "CapInh") {
			caps[k] = strings.TrimSpace(v)
		}
	}
	return caps, nil
}

func noCaps(caps map[string]string) bool {
	for _, k := range []string{"CapEff", "CapPrm", "CapAmb", "CapInh"} {
		if caps[k] != "0000000000000000" {
			return false
		}
	}
	return true
}

// killHost kills every process in n's namespace (the agent, its fence
// keeper, PostgreSQL and its children) with SIGKILL and cuts its link:
// the host is lost, and the VIP left on its interface answers no one.
func killHost(t testing.TB, lab *netLab, n *Node, idx int) {
	t.Helper()
	if err := lab.cut(idx); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "pids", n.NetNS).Output()
	if err != nil {
		t.Fatalf("ip netns pids %s: %v", n.NetNS, err)
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	t.Logf("host %s lost: link cut, processes %v killed", n.Name, pids)
	n.Kill9() // waits for the agent's exit
}

// TestVIPFollowsTheLease: a 3-member cluster in synchronous mode with
// vip: on every member. A client on the bridge writes through the VIP
// across a switchover, a cut link of the primary, the loss of the
// primary's host and a frozen agent; a sampler reads every namespace's addresses every
// 30 ms and no two ever answer on the VIP at once. After each step the
// VIP is on the new primary only and the writes land there. PostgreSQL
// and a callback run without capabilities.
func TestVIPFollowsTheLease(t *testing.T) {
	requireIntegration(t)
	if os.Getenv("RAFTGRES_RACE") == "1" {
		t.Skip("agents built with the race detector use cgo: with vip: they refuse to start (they cannot clear their ambient capabilities)")
	}
	lab := newNetLab(t, 3)
	lab.addClientLeg(t)
	hooks := baseDir(t)
	script := filepath.Join(hooks, "caps.sh")
	body := "#!/bin/sh\ngrep ^Cap /proc/$$/status > " + hooks + "/caps.$1.$$\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	chown(t, hooks)
	pgPort := freePort(t) // the same on every member: the VIP's port
	placed := false
	c := startCluster(t, 3, func(nd *Node, all []*Node) NodeOptions {
		if !placed {
			for i, m := range all {
				m.NetNS, m.Host, m.ProbeHost, m.PGPort = lab.nodes[i], lab.clusterIP(i+1), lab.probeIP(i+1), pgPort
			}
			placed = true
		}
		return NodeOptions{Peers: all, Postgres: true, DCS: syncDCS, VIP: "{address: " + vipAddress + "/24, interface: cl0}",
			Callbacks: fmt.Sprintf("{on_start: %s, on_role_change: %s}", script, script)}
	})
	primary := c.waitPrimary(120*time.Second, c.nodes...)
	c.waitStreaming(primary)
	sampler := startVIPSampler(t, lab, c)
	defer sampler.check(t)

	// Capabilities: the agent has them, its children do not.
	for _, n := range c.nodes {
		pm, err := postmasterPID(n)
		if err != nil {
			t.Fatal(err)
		}
		caps, err := procCaps(pm)
		if err != nil {
			t.Fatal(err)
		}
		if !noCaps(caps) {
			t.Errorf("%s's postmaster %d has capabilities: %v", n.Name, pm, caps)
		}
		agent, _ := procCaps(n.PID())
		t.Logf("%s: agent %v, postmaster %v", n.Name, agent, caps)
	}
	waitFor(t, 30*time.Second, "a callback's capabilities", func() (bool, error) {
		m, _ := filepath.Glob(filepath.Join(hooks, "caps.*"))
		return len(m) > 0, nil
	})
	outs, _ := filepath.Glob(filepath.Join(hooks, "caps.*"))
	for _, f := range outs {
		b, _ := os.ReadFile(f)
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			k, v, _ := strings.Cut(line, ":")
			if (k == "CapEff" || k == "CapPrm" || k == "CapAmb" || k == "CapInh") && strings.TrimSpace(v) != "0000000000000000" {
				t.Errorf("callback %s: %s", filepath.Base(f), line)
			}
		}
	}
	t.Logf("%d callback runs checked for capabilities", len(outs))

	// Each step starts with a synchronous standby recorded: a switchover
	// needs one, and the fast path too.
	waitSync := func(p *Node) {
		t.Helper()
		c.waitStreaming(p)
		waitFor(t, 60*time.Second, "a synchronous standby of "+p.Name, func() (bool, error) {
			st, err := c.state()
			return err == nil && st.Sync.Primary == p.Name && len(st.Sync.Standbys) > 0, err
		})
	}
	waitVIPOn := func(n *Node, since time.Time) {
		t.Helper()
		waitFor(t, 30*time.Second, "the VIP on "+n.Name+" only", func() (bool, error) {
			h, fresh := sampler.holders(since)
			return fresh && len(h) == 1 && h[0] == n.Name, fmt.Errorf("answering: %v", h)
		})
	}
	waitVIPOn(primary, time.Now())
	if err := pgExec(ctxT(t, 10*time.Second), primary, "CREATE TABLE vipw (id int primary key)"); err != nil {
		t.Fatal(err)
	}
	w := startVIPWriter(t, pgPort)
	start := time.Now()
	waitFor(t, 30*time.Second, "writes through the VIP on "+primary.Name, func() (bool, error) {
		_, _, ok := w.gap(start, primary.Name)
		return ok, nil
	})

	const maxGap = 30 * time.Second
	step := func(name string, old *Node, at time.Time) *Node {
		t.Helper()
		var next *Node
		waitFor(t, 60*time.Second, "a new primary after the "+name, func() (bool, error) {
			st, err := c.stateExcept(map[*Node]bool{old: true})
			if err != nil || st.Leader.Holder == "" || st.Leader.Holder == old.Name {
				return false, err
			}
			next = c.byName(st.Leader.Holder)
			return true, nil
		})
		waitVIPOn(next, at)
		waitFor(t, maxGap, "writes through the VIP on "+next.Name+" after the "+name, func() (bool, error) {
			_, _, ok := w.gap(at, next.Name)
			return ok, nil
		})
		gap, first, _ := w.gap(at, next.Name)
		settle := time.Now()
		waitFor(t, 10*time.Second, "more writes on "+next.Name, func() (bool, error) {
			_, _, ok := w.gap(settle, next.Name)
			return ok, nil
		})
		if o := w.othersAfter(first, next.Name); len(o) > 0 {
			t.Errorf("%s: writes through the VIP landed elsewhere than on %s after its first: %v", name, next.Name, o)
		}
		acks, fails := w.count()
		t.Logf("VIP %s: %s → %s, write gap %.3f s (first write on %s %.3f s after the fault); so far %d writes acknowledged, %d attempts failed",
			name, old.Name, next.Name, gap.Seconds(), next.Name, first.Sub(at).Seconds(), acks, fails)
		if gap > maxGap {
			t.Errorf("%s: write gap %s over %s", name, gap, maxGap)
		}
		return next
	}

	// 1. A switchover.
	waitSync(primary)
	at := time.Now()
	if out, err := netnsCLI(primary, "switchover", "--force"); err != nil {
		t.Fatalf("switchover: %v\n%s", err, out)
	}
	primary = step("switchover", primary, at)
	c.waitPrimary(90*time.Second, c.nodes...)
	waitSync(primary)

	// 2. A cut link of the primary, then healed: it rejoins without the VIP.
	idx, _ := labIndex(c, primary)
	at = time.Now()
	if err := lab.cut(idx); err != nil {
		t.Fatal(err)
	}
	cut := primary
	primary = step("cut link", cut, at)
	if err := lab.heal(idx); err != nil {
		t.Fatal(err)
	}
	c.waitPrimary(90*time.Second, c.nodes...)
	waitSync(primary)
	waitVIPOn(primary, time.Now())

	// 3. The primary's host is lost (kill -9 of everything in it, link
	// down). It comes back: its agent removes the VIP it left before its
	// link is up again.
	idx, _ = labIndex(c, primary)
	lostNode := primary
	sampler.setLost(lostNode.Name, true)
	at = time.Now()
	killHost(t, lab, lostNode, idx)
	primary = step("lost host (kill -9)", lostNode, at)
	lostNode.Start()
	waitFor(t, 30*time.Second, lostNode.Name+" removing its stale VIP at start", func() (bool, error) {
		held, err := exec.Command("ip", "-n", lostNode.NetNS, "-br", "addr", "show", "dev", "cl0").Output()
		return err == nil && !strings.Contains(string(held), vipAddress+"/"), nil
	})
	sampler.setLost(lostNode.Name, false)
	if err := lab.heal(idx); err != nil {
		t.Fatal(err)
	}
	c.waitPrimary(120*time.Second, c.nodes...)
	waitSync(primary)
	waitVIPOn(primary, time.Now())

	// 4. The primary's agent is frozen (SIGSTOP): its link stays up and
	// its host answers ARP for the VIP until its fence keeper removes it
	// at the lease's end; the new primary, elected by the fast path
	// before that end, adds it only after.
	frozen := primary
	at = time.Now()
	if err := syscall.Kill(frozen.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	primary = step("frozen agent (SIGSTOP)", frozen, at)
	if err := syscall.Kill(frozen.PID(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	c.waitPrimary(120*time.Second, c.nodes...)
	waitVIPOn(primary, time.Now())
	if !strings.Contains(frozen.Log(), "vip "+vipAddress+"/24 on cl0 removed") {
		t.Errorf("%s's fence keeper did not say it removed the VIP", frozen.Name)
	}
	w.stop()
	sampler.stop()
	acks, fails := w.count()
	sampler.mu.Lock()
	t.Logf("VIP sampler: %d samples (every 30 ms), %d read errors, %d with two answering holders, %d with two live carriers; writer: %d acknowledged, %d failed attempts",
		sampler.samples, sampler.errs, len(sampler.double), len(sampler.rawTwice), acks, fails)
	sampler.mu.Unlock()
	if !strings.Contains(lostNode.Log(), "stale at agent start") {
		t.Errorf("%s's agent did not say it removed a stale VIP at start", lostNode.Name)
	}
}
