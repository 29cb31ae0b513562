package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkFailover (make bench) measures faults under write
// load on 3-member clusters with real PostgreSQL, in synchronous_mode true
// and false side by side, each fault BENCH_RUNS times (default 5):
//
//   - kill -9 of the primary's agent and its postmaster's process group
//     together (a lost host), seen directly and through HAProxy with
//     examples/haproxy.cfg;
//   - the primary's network link cut (its veth down: no TCP reset), with
//     each member in a network namespace;
//   - a switchover (raftgres switchover);
//   - a rolling restart of every PostgreSQL (raftgres restart --rolling);
//   - kill -9 of the Raft leader's agent: time until the survivors agree
//     on a new Raft leader, and the write gap meanwhile;
//   - a crash of the primary's postmaster alone (restarted in place);
//   - then the idle cost: agent CPU and Raft commits per host over
//     BENCH_IDLE_SECONDS (default 60) without load, and agent RSS;
//   - quorum commit (scenario "quorum"): on 5-member clusters, kill -9 of the
//     primary's host and the client's commit latency with synchronous_mode
//     true (FIRST 1), and quorum with synchronous_node_count 1 and 2 of the
//     4 standbys.
//
// During every fault pgbench (tpcb-like, 4 clients) writes through a
// multi-host libpq conninfo with target_session_attrs=read-write, and the
// measuring client (ackWriter) writes one row every 20ms through the same
// conninfo: the figures are its longest gap between acknowledgements
// around the fault and its acknowledged writes missing on the new primary
// (in synchronous mode any is a failure). The clusters run the product's
// default bootstrap.dcs plus synchronous_mode; BENCH_DCS adds keys to it
// ("ttl: 2, loop_wait: 200ms"), BENCH_RAFT adds keys to the agents' raft:
// section, BENCH_ONLY picks scenarios (kill9,cut,switchover,rolling,raft,pgcrash,
// idle), BENCH_PGBENCH_SCALE sets pgbench -i -s (default 2) and
// BENCH_PGBENCH_RATE its -R (default: unthrottled). It prints a table of
// min / median / max, writes bin/bench-failover.json and keeps the agents'
// output in bin/bench-logs/.
func BenchmarkFailover(b *testing.B) {
	if binPath == "" {
		b.Skip("set RAFTGRES_INTEGRATION=1 (make bench does)")
	}
	s := benchSettingsFromEnv(b)
	r := &benchResults{series: map[string]*series{}, ttl: map[string]float64{}, failures: []string{}, notes: []string{}}
	fmt.Printf("failover bench: %d runs per fault; bootstrap.dcs sync %s, async %s; raft: {%s}; idle window %s\n",
		s.runs, s.dcs(true), s.dcs(false), s.raftExtra, s.idle)
	for _, cl := range []benchSpec{
		{name: "loopback-sync", sync: true, scenarios: []string{"kill9", "switchover", "rolling", "raft", "pgcrash", "idle"}},
		{name: "loopback-async", scenarios: []string{"kill9", "switchover", "rolling", "raft", "pgcrash", "idle"}},
		{name: "netns-sync", sync: true, netns: true, scenarios: []string{"cut"}},
		{name: "netns-async", netns: true, scenarios: []string{"cut"}},
		{name: "loopback-first5", mode: "first5", sync: true, members: 5, scenarios: []string{"quorum"}},
		{name: "loopback-quorum1", mode: "quorum1", sync: true, members: 5, quorum: 1, scenarios: []string{"quorum"}},
		{name: "loopback-quorum2", mode: "quorum2", sync: true, members: 5, quorum: 2, scenarios: []string{"quorum"}},
	} {
		todo := slices.DeleteFunc(slices.Clone(cl.scenarios), func(sc string) bool { return !s.want(sc) })
		if len(todo) == 0 {
			continue
		}
		b.Run(cl.name, func(b *testing.B) {
			started := time.Now()
			bc := startBenchCluster(b, s, r, cl, slices.Contains(todo, "kill9"))
			for _, sc := range todo {
				switch sc {
				case "kill9", "quorum":
					bc.kill9()
				case "cut":
					bc.cut()
				case "switchover":
					bc.switchover()
				case "rolling":
					bc.rollingRestart()
				case "raft":
					bc.raftLeaderKill()
				case "pgcrash":
					bc.postgresCrash()
				case "idle":
					bc.idleCost()
				}
			}
			bc.finish()
			fmt.Printf("bench: %s done in %s\n", cl.name, time.Since(started).Round(time.Second))
		})
	}
	r.report(b, s)
	if len(r.failures) > 0 {
		b.Fatalf("%d failures:\n%s", len(r.failures), strings.Join(r.failures, "\n"))
	}
}

// benchSettings are the benchmark's knobs, from the environment.
type benchSettings struct {
	runs      int
	idle      time.Duration
	dcsExtra  string // more bootstrap.dcs keys
	raftExtra string // more raft: keys
	scale     int
	rate      int             // pgbench -R; 0: as fast as it goes
	only      map[string]bool // nil: every scenario
}

func benchSettingsFromEnv(b *testing.B) benchSettings {
	s := benchSettings{runs: 5, idle: 60 * time.Second, scale: 2,
		dcsExtra: strings.TrimSpace(os.Getenv("BENCH_DCS")), raftExtra: strings.TrimSpace(os.Getenv("BENCH_RAFT"))}
	for _, v := range []struct {
		env string
		dst *int
	}{{"BENCH_RUNS", &s.runs}, {"BENCH_PGBENCH_SCALE", &s.scale}, {"BENCH_PGBENCH_RATE", &s.rate}} {
		if e := os.Getenv(v.env); e != "" {
			n, err := strconv.Atoi(e)
			if err != nil || n < 0 || n == 0 && v.dst != &s.rate {
				b.Fatalf("%s=%q: want a positive number", v.env, e)
			}
			*v.dst = n
		}
	}
	if e := os.Getenv("BENCH_IDLE_SECONDS"); e != "" {
		n, err := strconv.Atoi(e)
		if err != nil || n < 1 {
			b.Fatalf("BENCH_IDLE_SECONDS=%q: want a positive number of seconds", e)
		}
		s.idle = time.Duration(n) * time.Second
	}
	if e := os.Getenv("BENCH_ONLY"); e != "" {
		s.only = map[string]bool{}
		for _, sc := range strings.Split(e, ",") {
			s.only[strings.TrimSpace(sc)] = true
		}
	}
	return s
}

func (s benchSettings) want(scenario string) bool { return s.only == nil || s.only[scenario] }

// dcs is the clusters' bootstrap.dcs: the product's defaults, the mode,
// and BENCH_DCS.
func (s benchSettings) dcs(sync bool) string {
	extra := ""
	if s.dcsExtra != "" {
		extra = ", " + s.dcsExtra
	}
	return fmt.Sprintf("{synchronous_mode: %t%s}", sync, extra)
}

// benchSpec is one cluster of the benchmark.
type benchSpec struct {
	name, mode  string // mode: the figures' suffix (sync or async when empty)
	sync, netns bool
	members     int // 3 when 0
	quorum      int // synchronous_mode: quorum with this synchronous_node_count
	scenarios   []string
}

// dcsOf is spec's bootstrap.dcs.
func (s benchSettings) dcsOf(spec benchSpec) string {
	if spec.quorum == 0 {
		return s.dcs(spec.sync)
	}
	extra := ""
	if s.dcsExtra != "" {
		extra = ", " + s.dcsExtra
	}
	return fmt.Sprintf("{synchronous_mode: quorum, synchronous_node_count: %d%s}", spec.quorum, extra)
}

// series is one figure's values (one per run, or per host).
type series struct {
	Name   string    `json:"name"`
	Unit   string    `json:"unit"`
	Values []float64 `json:"values"`
	Hosts  []string  `json:"hosts,omitempty"` // per-host figures: the host of each value
}

func (s series) stats() (lo, med, hi float64) {
	v := slices.Clone(s.Values)
	slices.Sort(v)
	return v[0], v[len(v)/2], v[len(v)-1]
}

// benchResults collects the figures of every cluster.
type benchResults struct {
	series   map[string]*series
	ttl      map[string]float64 // per mode, seconds
	failures []string
	notes    []string
}

func (r *benchResults) add(name, unit string, v float64) { r.addHost(name, unit, "", v) }

func (r *benchResults) addHost(name, unit, host string, v float64) {
	if r.series[name] == nil {
		r.series[name] = &series{Name: name, Unit: unit}
	}
	r.series[name].Values = append(r.series[name].Values, v)
	if host != "" {
		r.series[name].Hosts = append(r.series[name].Hosts, host)
	}
}

func (r *benchResults) fail(msg string) {
	fmt.Println("bench: FAILURE: " + msg)
	r.failures = append(r.failures, msg)
}

func (r *benchResults) note(msg string) {
	fmt.Println("bench: note: " + msg)
	r.notes = append(r.notes, msg)
}

// benchCluster is one 3-member cluster under load: pgbench, the measuring
// client and, on loopback, HAProxy with a second measuring client.
type benchCluster struct {
	b           *testing.B
	s           benchSettings
	r           *benchResults
	name        string // loopback-sync, netns-async, …
	mode        string // "sync", "async", "first5", "quorum1"…: the suffix of its figures
	sync        bool
	members     int
	quorum      int // synchronous_node_count in quorum mode, else 0
	c           *cluster
	lab         *netLab // nil on loopback
	ttl         time.Duration
	load        *pgbenchLoad
	w           *ackWriter // through the multi-host conninfo
	hw          *ackWriter // through HAProxy's write port, or nil
	stopHAProxy func()
}

func startBenchCluster(b *testing.B, s benchSettings, r *benchResults, spec benchSpec, haproxy bool) *benchCluster {
	bc := &benchCluster{b: b, s: s, r: r, name: spec.name, mode: spec.mode, sync: spec.sync, quorum: spec.quorum,
		members: max(spec.members, 3)}
	switch {
	case bc.mode != "":
	case spec.sync:
		bc.mode = "sync"
	default:
		bc.mode = "async"
	}
	haproxy = haproxy && bc.members == 3
	o := NodeOptions{DCS: s.dcsOf(spec), Raft: s.raftExtra}
	start := time.Now()
	if spec.netns {
		bc.lab, bc.c = startNetnsClusterWith(b, bc.members, o)
	} else {
		bc.c = startCluster(b, bc.members, func(_ *Node, all []*Node) NodeOptions {
			o := o
			o.Peers, o.Postgres = all, true
			return o
		})
	}
	// A passing benchmark prints none of the agents' output: keep it in
	// bin/bench-logs/ for a look at any figure.
	b.Cleanup(func() { bc.saveLogs() })
	primary := bc.c.waitPrimary(180*time.Second, bc.c.nodes...)
	r.add("bootstrap_"+bc.mode, "s", time.Since(start).Seconds())
	st, err := bc.c.state()
	if err != nil {
		b.Fatal(err)
	}
	bc.ttl = st.Config.TTL
	r.ttl[bc.mode] = bc.ttl.Seconds()
	if err := pgExec(ctxT(b, 10*time.Second), primary, benchAcksTable); err != nil {
		b.Fatal(err)
	}
	conninfo := multiHostConninfo(bc.c)
	// pgbench -i is a bulk load: on a busy machine the primary has lost
	// its lease in it (and restarted). That is worth a note, not the end
	// of the benchmark: wait for the primary and try again.
	for try := 1; ; try++ {
		out, err := initPgbench(b, conninfo, s.scale)
		if err == nil {
			break
		}
		if try == 3 {
			b.Fatalf("pgbench -i -s %d failed 3 times, the last: %v\n%s", s.scale, err, out)
		}
		r.note(fmt.Sprintf("%s cluster setup: pgbench -i failed (%v), tried again: %s", bc.mode, err, lastLine(out)))
		bc.c.waitPrimary(180*time.Second, bc.c.nodes...)
	}
	bc.load = startPgbenchLoad(b, conninfo, s.rate)
	bc.w = startAckWriter(b, bc.c, "multi-host libpq", 1, conninfo)
	if haproxy {
		ports := haproxyPorts{stats: freePort(b), write: freePort(b), read: freePort(b)}
		bc.stopHAProxy = startHAProxy(b, rewriteHAProxyConfig(b, bc.c, ports), ports.stats)
		waitHAProxySettled(b, ports.stats, 2)
		bc.hw = startAckWriter(b, bc.c, "HAProxy", 2,
			fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable connect_timeout=1", ports.write))
	}
	fmt.Printf("bench: %s cluster up in %s (primary %s, ttl %s), pgbench -i -s %d done, load running\n",
		bc.name, time.Since(start).Round(time.Millisecond), primary.Name, bc.ttl, s.scale)
	return bc
}

// saveLogs writes each agent's output to bin/bench-logs/<cluster>-<member>.log.
func (bc *benchCluster) saveLogs() {
	dir := filepath.Join(moduleRoot(bc.b), "bin", "bench-logs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		bc.b.Logf("agent logs: %v", err)
		return
	}
	for _, n := range bc.c.nodes {
		if err := os.WriteFile(filepath.Join(dir, bc.name+"-"+n.Name+".log"), []byte(n.Log()), 0o644); err != nil {
			bc.b.Logf("agent logs: %v", err)
		}
	}
}

// steady waits until the cluster is whole again: a primary with every
// other member streaming from it (and recorded as synchronous standby in
// synchronous mode), pgbench running and the measuring clients'
// writes acknowledged by the primary. It returns the primary.
func (bc *benchCluster) steady() *Node {
	b, c := bc.b, bc.c
	b.Helper()
	primary := c.waitPrimary(180*time.Second, c.nodes...)
	c.waitStreaming(primary)
	if bc.sync {
		want := 1
		if bc.quorum > 0 {
			want = bc.members - 1 // the whole quorum set
		}
		waitFor(b, 60*time.Second, fmt.Sprintf("%d synchronous standbys recorded for %s", want, primary.Name), func() (bool, error) {
			st, err := c.state()
			return err == nil && st.Sync.Primary == primary.Name && len(st.Sync.Standbys) >= want, err
		})
	}
	// The coordinator moves Raft leadership off the primary's host once it
	// has held the key for ttl: a lost primary then costs no Raft election.
	if ok, where := pollBool(2*bc.ttl+10*time.Second, func() (bool, string) {
		l := raftLeaderNow(c)
		return l != nil && l != primary, "raft leader " + nodeName(l)
	}); !ok {
		bc.r.note(fmt.Sprintf("%s: %s when the fault came, with %s primary", bc.mode, where, primary.Name))
	}
	bc.load.waitRunning(b, time.Second)
	bc.w.waitAcksOn(b, primary.Name, 25)
	if bc.hw != nil {
		bc.hw.waitAcksOn(b, primary.Name, 25)
	}
	return primary
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func nodeName(n *Node) string {
	if n == nil {
		return "none"
	}
	return n.Name
}

// raftLeaderNow is the live member that reports itself Raft leader, or nil.
func raftLeaderNow(c *cluster) *Node {
	for _, n := range c.nodes {
		if _, exited := n.Exited(); exited {
			continue
		}
		if st, err := status(n); err == nil && st.State == "Leader" {
			return n
		}
	}
	return nil
}

// takeover waits until a member other than old acknowledges a write sent
// after the fault at at, then records the writers' figures for it.
func (bc *benchCluster) takeover(figure string, run int, old *Node, at time.Time) {
	bc.b.Helper()
	line := bc.record(figure, bc.w, old, at)
	if bc.hw != nil && figure == "kill9" {
		line += "; " + bc.record(figure+"_haproxy", bc.hw, old, at)
	}
	fmt.Printf("bench: %s %s run %d: %s\n", figure, bc.mode, run, line)
}

// record adds one writer's longest gap between acknowledgements around
// the fault (until the first one by another member) and its acknowledged
// writes that member lacks. In synchronous mode a lost write fails the
// benchmark.
func (bc *benchCluster) record(figure string, w *ackWriter, old *Node, at time.Time) string {
	b := bc.b
	b.Helper()
	first := w.waitTakeover(b, old.Name, at, 2*time.Minute)
	next := bc.c.byName(first.Server)
	if next == nil {
		b.Fatalf("%s: a write was acknowledged by %s", w.name, first.Server)
	}
	gap := w.gap(at, first.Done)
	lost, checked, err := w.lostOn(next)
	if err != nil {
		b.Fatalf("read %s's acknowledged writes on %s: %v", w.name, next.Name, err)
	}
	bc.r.add(figure+"_gap_"+bc.mode, "s", gap.Seconds())
	bc.r.add(figure+"_lost_"+bc.mode, "writes", float64(len(lost)))
	if late := w.ackedBy(old.Name, first.Sent); len(late) > 0 {
		bc.r.fail(fmt.Sprintf("%s %s: %s acknowledged %d writes sent after %s's first acknowledged one (%s), the last %s",
			figure, bc.mode, old.Name, len(late), next.Name, first, late[len(late)-1]))
	}
	if bc.sync && len(lost) > 0 {
		var ls []string
		for _, x := range lost[:min(len(lost), 10)] {
			ls = append(ls, x.String())
		}
		b.Fatalf("synchronous mode: %s lost %d of %d acknowledged writes in a %s (%s to %s):\n%s", w.name, len(lost), checked,
			figure, old.Name, next.Name, strings.Join(ls, "\n"))
	}
	return fmt.Sprintf("%s: gap %.3f s, %d of %d acknowledged writes lost, new primary %s", w.name, gap.Seconds(), len(lost), checked, next.Name)
}

// kill9 kills the primary's agent and its postmaster's process group (the
// postmaster and every backend) at once: the host is lost.
func (bc *benchCluster) kill9() {
	b := bc.b
	for run := 1; run <= bc.s.runs; run++ {
		primary := bc.steady()
		pm, err := postmasterPID(primary)
		if err != nil {
			b.Fatal(err)
		}
		at := time.Now()
		_ = syscall.Kill(primary.PID(), syscall.SIGKILL)
		if err := syscall.Kill(-pm, syscall.SIGKILL); err != nil {
			b.Fatalf("kill -9 of %s's postmaster process group %d: %v", primary.Name, pm, err)
		}
		primary.Kill9() // waits until the agent is gone
		bc.takeover("kill9", run, primary, at)
		primary.Start()
	}
}

// cut takes the primary's cluster link down (no TCP reset); the test
// still reaches it through its probe link, as clients do.
func (bc *benchCluster) cut() {
	b := bc.b
	for run := 1; run <= bc.s.runs; run++ {
		primary := bc.steady()
		i := slices.Index(bc.c.nodes, primary) + 1
		at := time.Now()
		if err := bc.lab.cut(i); err != nil {
			b.Fatal(err)
		}
		bc.takeover("cut", run, primary, at)
		if err := bc.lab.heal(i); err != nil {
			b.Fatal(err)
		}
	}
}

// switchover runs raftgres switchover (the product picks the candidate);
// a refusal is a failure of the run, reported, not worked around.
func (bc *benchCluster) switchover() {
	for run := 1; run <= bc.s.runs; run++ {
		primary := bc.steady()
		at := time.Now()
		out, stderr, code := runCLI(bc.b, "switchover", "-c", primary.Config, "--force")
		if code != 0 {
			bc.r.fail(fmt.Sprintf("switchover %s run %d from %s: exit %d after %s: %s%s", bc.mode, run, primary.Name, code,
				time.Since(at).Round(time.Millisecond), strings.TrimSpace(stderr), strings.TrimSpace(out)))
			continue
		}
		bc.takeover("switchover", run, primary, at)
	}
}

// rollingRestart runs `raftgres restart --rolling` (every replica, then
// the primary by a switchover) under the load: the write gap from its
// start until the new primary's first acknowledgement is the only pause
// clients should see, the switchover's.
func (bc *benchCluster) rollingRestart() {
	for run := 1; run <= bc.s.runs; run++ {
		primary := bc.steady()
		at := time.Now()
		out, stderr, code := runCLI(bc.b, "restart", "--rolling", "--force", "-c", primary.Config)
		if code != 0 {
			bc.r.fail(fmt.Sprintf("restart --rolling %s run %d: exit %d after %s: %s%s", bc.mode, run, code,
				time.Since(at).Round(time.Millisecond), strings.TrimSpace(stderr), strings.TrimSpace(out)))
			continue
		}
		bc.takeover("rolling", run, primary, at)
	}
}

// raftLeaderKill kills the Raft leader's agent (a replica's host, once the
// coordinator has moved leadership off the primary's) and times until both
// survivors report the same new leader; the primary keeps its key.
func (bc *benchCluster) raftLeaderKill() {
	b, c := bc.b, bc.c
	for run := 1; run <= bc.s.runs; run++ {
		primary := bc.steady()
		leader := raftLeaderNow(c)
		if leader == nil {
			leader = c.raftLeader()
		}
		if leader == primary {
			bc.r.note(fmt.Sprintf("raft %s run %d: the Raft leader is the primary's host %s; killing it anyway (a failover too)", bc.mode, run, primary.Name))
		}
		var survivors []*Node
		for _, n := range c.nodes {
			if n != leader {
				survivors = append(survivors, n)
			}
		}
		role := "replica"
		if st, err := c.state(); err == nil && slices.Contains(st.Sync.Standbys, leader.Name) {
			role = "synchronous standby"
		}
		at := time.Now()
		leader.Kill9()
		var elected time.Time
		newLeader := ""
		deadline := at.Add(30 * time.Second)
		for elected.IsZero() {
			if time.Now().After(deadline) {
				b.Fatalf("no new Raft leader 30 s after kill -9 of %s", leader.Name)
			}
			ids := map[string]bool{}
			for _, n := range survivors {
				st, err := status(n)
				if err != nil || st.LeaderID == "" || st.LeaderID == leader.Name {
					ids["?"] = true
					break
				}
				ids[st.LeaderID] = true
				newLeader = st.LeaderID
			}
			if len(ids) == 1 && !ids["?"] {
				elected = time.Now()
				break
			}
			time.Sleep(10 * time.Millisecond) // polling interval of the measurement
		}
		d := elected.Sub(at)
		bc.r.add("raft_reelection_"+bc.mode, "s", d.Seconds())
		// The write gap meanwhile: up to a second after the election.
		until := elected.Add(time.Second)
		waitFor(b, 60*time.Second, "writes after the Raft election", func() (bool, error) {
			_, ok := bc.w.firstAck(until, "")
			return ok, nil
		})
		gap := bc.w.gap(at, until)
		bc.r.add("raft_kill_gap_"+bc.mode, "s", gap.Seconds())
		fmt.Printf("bench: raft %s run %d: kill -9 of %s's agent (a %s), %s and %s agree on leader %s after %.3f s; write gap %.3f s (primary %s)\n",
			bc.mode, run, leader.Name, role, survivors[0].Name, survivors[1].Name, newLeader, d.Seconds(), gap.Seconds(), primary.Name)
		leader.Start()
	}
}

// postgresCrash kills the primary's postmaster alone: the agent restarts
// it in place. Crashes closer together than ttl would count as a crash
// loop (the primary then releases the key), so each waits for writes
// acknowledged ttl+1s after the one before.
func (bc *benchCluster) postgresCrash() {
	b := bc.b
	var last time.Time
	for run := 1; run <= bc.s.runs; run++ {
		primary := bc.steady()
		calm := last.Add(bc.ttl + time.Second)
		waitFor(b, 60*time.Second, "writes ttl+1s after the previous crash", func() (bool, error) {
			_, ok := bc.w.firstAck(calm, "")
			return ok, nil
		})
		pm, err := postmasterPID(primary)
		if err != nil {
			b.Fatal(err)
		}
		at := time.Now()
		if err := syscall.Kill(pm, syscall.SIGKILL); err != nil {
			b.Fatal(err)
		}
		last = at
		var first chaosWrite
		waitFor(b, 2*time.Minute, "writes after a postgres crash", func() (bool, error) {
			var ok bool
			first, ok = bc.w.firstAck(at.Add(50*time.Millisecond), "")
			return ok, nil
		})
		gap := bc.w.gap(at, first.Done)
		lost, checked, err := bc.w.lostOn(bc.c.byName(first.Server))
		if err != nil {
			b.Fatal(err)
		}
		bc.r.add("pgcrash_gap_"+bc.mode, "s", gap.Seconds())
		bc.r.add("pgcrash_lost_"+bc.mode, "writes", float64(len(lost)))
		if bc.sync && len(lost) > 0 {
			b.Fatalf("synchronous mode: %d of %d acknowledged writes lost in a postgres crash of %s", len(lost), checked, primary.Name)
		}
		fmt.Printf("bench: pgcrash %s run %d: kill -9 of %s's postmaster: gap %.3f s, %d of %d acknowledged writes lost, primary now %s\n",
			bc.mode, run, primary.Name, gap.Seconds(), len(lost), checked, first.Server)
	}
}

// stopLoad stops pgbench, the measuring clients and HAProxy, and records
// the load's figures.
func (bc *benchCluster) stopLoad() {
	if bc.load == nil {
		return
	}
	bc.load.stop()
	rates, runs := bc.load.tps()
	for _, v := range rates {
		bc.r.add("pgbench_tps_"+bc.mode, "tps", v)
	}
	msg := fmt.Sprintf("bench: %s load: %d pgbench runs", bc.name, runs)
	for _, w := range []*ackWriter{bc.w, bc.hw} {
		if w != nil {
			w.stop()
			acked, indet := w.counts()
			lat := w.latencies()
			msg += fmt.Sprintf("; %s: %d writes acknowledged (p50 %.1f ms, p99 %.1f ms), %d indeterminate",
				w.name, acked, percentile(lat, 50), percentile(lat, 99), indet)
		}
	}
	if lat := bc.w.latencies(); len(lat) > 0 {
		bc.r.add("client_p50_"+bc.mode, "ms", percentile(lat, 50))
		bc.r.add("client_p99_"+bc.mode, "ms", percentile(lat, 99))
	}
	if bc.stopHAProxy != nil {
		bc.stopHAProxy()
	}
	fmt.Println(msg)
	bc.load = nil
}

// idleCost measures, without load, over the idle window: the CPU time of
// each agent process and each host's Raft commit rate.
func (bc *benchCluster) idleCost() {
	b, c := bc.b, bc.c
	bc.stopLoad()
	primary := c.waitPrimary(180*time.Second, c.nodes...)
	c.waitStreaming(primary)
	catchUp(b, c, primary)
	type sample struct {
		cpu    []uint64
		commit float64
	}
	read := func() []sample {
		var out []sample
		for _, n := range c.nodes {
			v, err := scrapeMetric(n, "raftgres_raft_commit_index")
			if err != nil {
				b.Fatal(err)
			}
			out = append(out, sample{procCPU(n.PID()), v})
		}
		return out
	}
	before, t0 := read(), time.Now()
	select {
	case <-time.After(bc.s.idle): // the measurement window
	case <-b.Context().Done():
		b.Fatal("cancelled")
	}
	after, elapsed := read(), time.Since(t0)
	msg := fmt.Sprintf("bench: idle %s over %s:", bc.name, elapsed.Round(time.Millisecond))
	for i, n := range c.nodes {
		ms := cpuDelta(before[i].cpu, after[i].cpu)
		if ms < 0 {
			b.Fatalf("%s's agent restarted during the idle window", n.Name)
		}
		cpu := ms / 1000 / elapsed.Minutes()
		commits := (after[i].commit - before[i].commit) / elapsed.Seconds()
		bc.r.addHost("idle_agent_cpu_"+bc.mode, "s/min", bc.name+"/"+n.Name, cpu)
		bc.r.addHost("idle_raft_commits_"+bc.mode, "1/s", bc.name+"/"+n.Name, commits)
		msg += fmt.Sprintf(" %s cpu %.2f s/min, %.2f raft commits/s;", n.Name, cpu, commits)
	}
	fmt.Println(strings.TrimSuffix(msg, ";"))
}

// finish stops the load and records each agent's RSS.
func (bc *benchCluster) finish() {
	bc.stopLoad()
	for _, n := range bc.c.nodes {
		if _, exited := n.Exited(); !exited {
			bc.r.addHost("agent_rss_"+bc.mode, "kB", bc.name+"/"+n.Name, float64(vmRSS(bc.b, n.PID())))
		}
	}
}

// benchRow is one line of the table: a figure in both modes.
type benchRow struct {
	label, figure string
	// target returns the median's limit in a mode, if it has one.
	target func(mode string, ttl float64) (float64, bool)
}

func below(limit float64) func(string, float64) (float64, bool) {
	return func(string, float64) (float64, bool) { return limit, true }
}

// noneLostInSync: synchronous mode must lose no acknowledged write.
func noneLostInSync(mode string, _ float64) (float64, bool) { return 0, mode == "sync" }

var benchRows = []benchRow{
	{"kill -9 agent+postmaster: write gap (s)", "kill9_gap", func(mode string, ttl float64) (float64, bool) {
		if mode == "sync" {
			return 1, true
		}
		return ttl + 0.5, true
	}},
	{"  acknowledged writes lost", "kill9_lost", noneLostInSync},
	{"  through HAProxy: write gap (s)", "kill9_haproxy_gap", nil},
	{"  through HAProxy: writes lost", "kill9_haproxy_lost", noneLostInSync},
	{"primary's link cut (netns): write gap (s)", "cut_gap", nil},
	{"  acknowledged writes lost", "cut_lost", noneLostInSync},
	{"switchover (CLI): write gap (s)", "switchover_gap", below(0.5)},
	{"  acknowledged writes lost", "switchover_lost", below(0)},
	{"restart --rolling: write gap (s)", "rolling_gap", below(1)},
	{"  acknowledged writes lost", "rolling_lost", below(0)},
	{"raft leader kill -9: new leader (s)", "raft_reelection", nil},
	{"  write gap meanwhile (s)", "raft_kill_gap", nil},
	{"postmaster crash: write gap (s)", "pgcrash_gap", nil},
	{"  acknowledged writes lost", "pgcrash_lost", noneLostInSync},
	{"idle agent CPU (s/min, per host)", "idle_agent_cpu", nil},
	{"idle raft commits (1/s, per host)", "idle_raft_commits", nil},
	{"agent RSS at the end (kB, per agent)", "agent_rss", nil},
	{"pgbench tps (runs >= 5 s)", "pgbench_tps", nil},
	{"client write latency p50 (ms, per cluster)", "client_p50", nil},
	{"client write latency p99 (ms, per cluster)", "client_p99", nil},
	{"bootstrap of 3 members (s)", "bootstrap", nil},
}

func fmtStat(v float64) string {
	switch {
	case v == float64(int64(v)) && (v >= 10 || v == 0):
		return strconv.FormatInt(int64(v), 10)
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

// report prints the table (min / median / max per mode, and the target
// of the median) and writes bin/bench-failover.json.
func (r *benchResults) report(b *testing.B, s benchSettings) {
	const lw, cw = 46, 30
	fmt.Printf("\n%-*s %-*s %-*s %s\n", lw, fmt.Sprintf("failover bench (%d runs)", s.runs), cw, "synchronous_mode: true", cw, "synchronous_mode: false", "target (median)")
	fmt.Printf("%-*s %-*s %-*s\n", lw, "", cw, "min / median / max", cw, "min / median / max")
	var out []series
	for _, row := range benchRows {
		cells, targets := [2]string{"-", "-"}, []string{}
		any := false
		for i, mode := range []string{"sync", "async"} {
			sr := r.series[row.figure+"_"+mode]
			if sr == nil || len(sr.Values) == 0 {
				continue
			}
			any = true
			lo, med, hi := sr.stats()
			cells[i] = fmt.Sprintf("%s / %s / %s (%d)", fmtStat(lo), fmtStat(med), fmtStat(hi), len(sr.Values))
			if row.target != nil {
				if limit, ok := row.target(mode, r.ttl[mode]); ok {
					verdict := "ok"
					if med > limit || (limit == 0 && hi > 0) {
						verdict = "MISSED"
					}
					op := "<"
					if limit == 0 {
						op = "="
					}
					targets = append(targets, fmt.Sprintf("%s %s %s %s", mode, op, fmtStat(limit), verdict))
				}
			}
			b.ReportMetric(med, sr.Name+"-median-"+strings.ReplaceAll(sr.Unit, "/", "per"))
			out = append(out, *sr)
		}
		if any {
			fmt.Printf("%-*s %-*s %-*s %s\n", lw, row.label, cw, cells[0], cw, cells[1], strings.Join(targets, "; "))
		}
	}
	if r.series["kill9_gap_first5"] != nil || r.series["kill9_gap_quorum1"] != nil || r.series["kill9_gap_quorum2"] != nil {
		fmt.Printf("\n%-*s %-*s %-*s %s\n", lw, "5 members, 4 standbys", cw, "FIRST 1 (synchronous_mode)", cw,
			"quorum, k = 1", "quorum, k = 2")
		for _, row := range []benchRow{
			{label: "kill -9 agent+postmaster: write gap (s)", figure: "kill9_gap"},
			{label: "  acknowledged writes lost", figure: "kill9_lost"},
			{label: "client write latency p50 (ms)", figure: "client_p50"},
			{label: "client write latency p99 (ms)", figure: "client_p99"},
			{label: "pgbench tps (runs >= 5 s)", figure: "pgbench_tps"},
		} {
			cells := []string{"-", "-", "-"}
			for i, mode := range []string{"first5", "quorum1", "quorum2"} {
				if sr := r.series[row.figure+"_"+mode]; sr != nil && len(sr.Values) > 0 {
					lo, med, hi := sr.stats()
					cells[i] = fmt.Sprintf("%s / %s / %s (%d)", fmtStat(lo), fmtStat(med), fmtStat(hi), len(sr.Values))
					b.ReportMetric(med, sr.Name+"-median-"+strings.ReplaceAll(sr.Unit, "/", "per"))
					out = append(out, *sr)
				}
			}
			fmt.Printf("%-*s %-*s %-*s %s\n", lw, row.label, cw, cells[0], cw, cells[1], cells[2])
		}
	}
	for _, name := range []string{"idle_agent_cpu", "idle_raft_commits", "agent_rss"} {
		for _, mode := range []string{"sync", "async"} {
			if sr := r.series[name+"_"+mode]; sr != nil {
				var hs []string
				for i, h := range sr.Hosts {
					hs = append(hs, fmt.Sprintf("%s %s", h, fmtStat(sr.Values[i])))
				}
				fmt.Printf("  %s %s per host: %s\n", name, mode, strings.Join(hs, ", "))
			}
		}
	}
	for _, n := range r.notes {
		fmt.Println("note: " + n)
	}
	for _, f := range r.failures {
		fmt.Println("FAILURE: " + f)
	}
	data, _ := json.MarshalIndent(map[string]any{
		"settings": map[string]any{"runs": s.runs, "dcs_sync": s.dcs(true), "dcs_async": s.dcs(false), "raft": s.raftExtra,
			"idle_seconds": s.idle.Seconds(), "pgbench_scale": s.scale, "pgbench_rate": s.rate, "pgbench_clients": pgbenchClients,
			"client_pace_ms": ackPace.Milliseconds()},
		"ttl_seconds": r.ttl, "series": out, "failures": r.failures, "notes": r.notes, "at": time.Now().UTC(),
	}, "", "  ")
	path := filepath.Join(moduleRoot(b), "bin", "bench-failover.json")
	_ = os.MkdirAll(filepath.Dir(path), 0o755)
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		b.Logf("write %s: %v", path, err)
	} else {
		fmt.Printf("wrote %s\n", path)
	}
}

func moduleRoot(tb testing.TB) string {
	wd, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	return filepath.Dir(wd) // tests run in integration/
}
