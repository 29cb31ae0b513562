package integration

// The project's fault test (`make chaos`): an append workload of
// concurrent writers through multi-host libpq (target_session_attrs=
// read-write) against 3 members in network namespaces, under random faults
// one at a time, then the checks of chaos_check_test.go over what the
// writers saw and what the agents logged about their leases.
//
// CHAOS_MINUTES (default 2) is the fault period of each mode; CHAOS_SEED
// replays a fault sequence (the timing of a run never replays exactly).

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	"raftgres/internal/boottime"
	"raftgres/raftstore"
)

// chaosTTL is the ttl of fastDCS, syncDCS and quorumDCS.
const chaosTTL = 3 * time.Second

const chaosWriters = 4

// chaosCancelWriters more writers cancel each INSERT chaosCancelAfter
// after sending it, with a cancel request (as JDBC's setQueryTimeout, a
// pgx context with pgconn.CancelRequestContextWatcherHandler or psql's
// Ctrl-C do). A cancel that reaches a commit waiting in
// SyncRepWaitForLSN makes PostgreSQL acknowledge it as committed locally,
// with a WARNING: that path is counted apart. (The other writers' 2s
// deadline closes the connection instead, pgx's default: no cancel
// request, the commit is left waiting and the write is indeterminate.)
const chaosCancelWriters = 2

const chaosCancelAfter = 500 * time.Millisecond

// chaosPace is each writer's pause between two writes.
const chaosPace = 5 * time.Millisecond

// chaosConnLife is the mean life of a writer's connection.
const chaosConnLife = time.Second

func TestChaosSync(t *testing.T)  { runChaos(t, "sync") }
func TestChaosAsync(t *testing.T) { runChaos(t, "async") }

// TestChaosQuorum: synchronous_mode: quorum, synchronous_node_count 1
// (each commit waits for either standby); the durability check is the
// synchronous one.
func TestChaosQuorum(t *testing.T) { runChaos(t, "quorum") }

func chaosDuration(t *testing.T) time.Duration {
	s := os.Getenv("CHAOS_MINUTES")
	if s == "" {
		return 2 * time.Minute
	}
	m, err := strconv.ParseFloat(s, 64)
	if err != nil || m <= 0 {
		t.Fatalf("CHAOS_MINUTES=%q: want a positive number of minutes", s)
	}
	return time.Duration(m * float64(time.Minute))
}

func chaosSeed(t *testing.T) uint64 {
	s := os.Getenv("CHAOS_SEED")
	if s == "" {
		return uint64(time.Now().UnixNano())
	}
	seed, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("CHAOS_SEED=%q: want an unsigned integer", s)
	}
	return seed
}

// chaosRun is one run: the cluster, the faults in force and what happened.
type chaosRun struct {
	t      *testing.T
	mode   string
	sync   bool // synchronous mode, quorum commit included
	quorum bool
	seed   uint64
	c      *cluster
	lab    *netLab
	rng    *rand.Rand
	wl     *chaosWorkload
	start  time.Time
	frozen map[*Node]bool // agent SIGSTOPped
	cut    map[*Node]bool // cluster link down
	paused bool
	faults []*chaosFault
	// stuck says why the run stopped injecting faults early (a recovery
	// deadline missed); it fails the recovery check.
	stuck   string
	workMem int
	// syncBroken: times the FSM's Sync named a standby the primary's
	// PostgreSQL did not wait for (synchronous mode).
	syncBroken []string
	syncNoted  map[string]bool
	hung       []string // agents that did not stop on SIGTERM
}

// chaosFault is one injected fault and what followed it.
type chaosFault struct {
	N         int
	Kind      string
	Target    string
	Role      string // the target's role when hit
	At        time.Time
	Hold      time.Duration
	Extra     []string // operator actions during the fault
	Before    string   // leader key holder@epoch before
	After     string   // and once recovered
	FirstAck  time.Duration
	Acked     bool
	NewAck    time.Duration // to the first ack by a new key holder
	NewAcked  bool
	Recovered time.Duration
	Err       string
}

func (r *chaosRun) logf(format string, args ...any) {
	r.t.Helper()
	r.t.Logf("chaos: "+format, args...)
}

func runChaos(t *testing.T, mode string) {
	requireIntegration(t)
	dcs := map[string]string{"async": fastDCS, "sync": syncDCS, "quorum": quorumDCS(1)}[mode]
	syncMode := mode != "async"
	dur, seed := chaosDuration(t), chaosSeed(t)
	// The agents log lease_end on the boot clock anchored at the wall clock
	// of their start; the checker compares it with the clients' wall
	// clock. Anchored here, before any agent starts, this process's boot
	// clock drifts from the wall clock at least as much as theirs.
	boottime.Now()
	lab := newNetLab(t, 3)
	placed := false
	c := startCluster(t, 3, func(nd *Node, all []*Node) NodeOptions {
		if !placed { // every address must be known before the first config is written
			for i, n := range all {
				n.NetNS, n.Host, n.ProbeHost = lab.nodes[i], lab.clusterIP(i+1), lab.probeIP(i+1)
			}
			placed = true
		}
		return NodeOptions{Peers: all, Postgres: true, DCS: dcs}
	})
	r := &chaosRun{t: t, mode: mode, sync: syncMode, quorum: mode == "quorum", seed: seed, c: c, lab: lab, rng: rand.New(rand.NewPCG(seed, 8)),
		frozen: map[*Node]bool{}, cut: map[*Node]bool{}, workMem: 4, syncNoted: map[string]bool{}}
	t.Cleanup(r.unfreeze) // a SIGSTOPped agent must not outlive a failed test
	r.logf("%s mode, %s of faults, seed %d (CHAOS_SEED=%d replays the fault sequence)", mode, dur, seed, seed)
	primary, err := r.waitHealthy(3 * time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 10*time.Second)
	if err := pgExec(ctx, primary, "CREATE TABLE chaos (id bigint PRIMARY KEY, writer int, seq int)"); err != nil {
		t.Fatal(err)
	}
	r.wl = startChaosWorkload(t, c)
	if err := r.waitAckAfter(time.Now(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	r.start = time.Now()
	for n := 1; time.Since(r.start) < dur && r.stuck == ""; n++ {
		r.fault(n)
	}
	r.finish()
}

// --- the cluster as the test sees it ------------------------------------

// state reads the FSM from every live, unfrozen member and returns the
// copy with the highest applied index.
func (r *chaosRun) state() (raftstore.State, error) { return r.c.stateExcept(r.frozen) }

func keyOf(st raftstore.State) string {
	return fmt.Sprintf("%s@%d", valueOr(st.Leader.Holder, "none"), st.Leader.Epoch)
}

// healthy returns the primary when the cluster is whole: the key holder is
// a writable PostgreSQL, every other member a replica streaming from it,
// and in synchronous mode a synchronous standby is recorded.
func (r *chaosRun) healthy() (*Node, error) {
	st, err := r.state()
	if err != nil {
		return nil, err
	}
	p := r.c.byName(st.Leader.Holder)
	if p == nil {
		return nil, fmt.Errorf("no leader key holder (key %s)", keyOf(st))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var others []string
	for _, n := range r.c.nodes {
		var inRecovery bool
		if err := pgQueryRow(ctx, n, "SELECT pg_is_in_recovery()", &inRecovery); err != nil {
			return nil, fmt.Errorf("%s: %w", n.Name, err)
		}
		if n == p && inRecovery {
			return nil, fmt.Errorf("holder %s is in recovery", n.Name)
		}
		if n != p {
			if !inRecovery {
				return nil, fmt.Errorf("%s is writable while %s holds the key", n.Name, p.Name)
			}
			others = append(others, n.Name)
		}
	}
	var streaming int
	if err := chaosQueryRow(ctx, p, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND application_name = ANY($1)",
		[]any{others}, &streaming); err != nil {
		return nil, err
	}
	if streaming != len(others) {
		return nil, fmt.Errorf("%d of %v streaming from %s", streaming, others, p.Name)
	}
	if r.sync && (st.Sync.Primary != p.Name || len(st.Sync.Standbys) == 0) {
		return nil, fmt.Errorf("no synchronous standby recorded for %s (sync %+v)", p.Name, st.Sync)
	}
	if r.sync && !r.quorum {
		// In quorum mode PostgreSQL waits for no standby by name: the
		// commit gate counts the quorum.
		r.checkSyncPromise(ctx, p, st)
	}
	return p, nil
}

// checkSyncPromise notes when the FSM records a synchronous standby that
// the primary's PostgreSQL does not actually wait for: every commit it
// acknowledges then is at risk (invariant 2). A figure, not a wait: the
// lost writes, if any, fail the run.
func (r *chaosRun) checkSyncPromise(ctx context.Context, p *Node, st raftstore.State) {
	var names string
	var syncs []string
	err := chaosQueryRow(ctx, p, `SELECT current_setting('synchronous_standby_names'),
		coalesce(array_agg(application_name::text) FILTER (WHERE sync_state IN ('sync', 'quorum')), '{}')
		FROM pg_stat_replication`, nil, &names, &syncs)
	if err != nil {
		return
	}
	for _, want := range st.Sync.Standbys {
		if !slices.Contains(syncs, want) {
			note := fmt.Sprintf("%s: the FSM records %s as synchronous standby of %s (epoch %d), but %s has synchronous_standby_names=%q and confirms %v",
				clock(time.Now()), want, p.Name, st.Leader.Epoch, p.Name, names, syncs)
			key := fmt.Sprintf("%s/%d/%s/%q", p.Name, st.Leader.Epoch, want, names)
			if !r.syncNoted[key] {
				r.syncNoted[key] = true
				r.syncBroken = append(r.syncBroken, note)
				r.logf("sync promise broken: %s", note)
			}
			return
		}
	}
}

func chaosQueryRow(ctx context.Context, n *Node, sql string, args []any, dest ...any) error {
	conn, err := pgx.Connect(ctx, n.PGConn())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.QueryRow(ctx, sql, args...).Scan(dest...)
}

// poll calls cond every 250ms until it returns nil or timeout passes.
func poll(timeout time.Duration, what string, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %s (last: %v)", what, timeout, err)
		}
		time.Sleep(250 * time.Millisecond) // polling interval, not synchronisation
	}
}

func (r *chaosRun) waitHealthy(timeout time.Duration) (*Node, error) {
	var p *Node
	err := poll(timeout, "a primary with streaming replicas", func() error {
		var err error
		p, err = r.healthy()
		return err
	})
	return p, err
}

// waitAckAfter waits for a write sent after since to be acknowledged.
func (r *chaosRun) waitAckAfter(since time.Time, timeout time.Duration) error {
	return poll(timeout, "an acknowledged write", func() error {
		if _, ok := r.wl.firstAckAfter(since); !ok {
			return errors.New("none yet")
		}
		return nil
	})
}

// available is a member whose agent runs, is not frozen and is not cut
// off: operator commands go through it.
func (r *chaosRun) available() *Node {
	var ok []*Node
	for _, n := range r.c.nodes {
		if _, exited := n.Exited(); !exited && !r.frozen[n] && !r.cut[n] {
			ok = append(ok, n)
		}
	}
	if len(ok) == 0 {
		return nil
	}
	// Not the seeded generator: how often this runs depends on timing.
	return ok[rand.IntN(len(ok))]
}

// cli runs the raftgres CLI inside member n's namespace (where the
// members' API addresses are reachable) with n's config.
func (r *chaosRun) cli(n *Node, args ...string) (string, error) { return netnsCLI(n, args...) }

// operator runs a CLI command through any available member, retrying
// (a partition may have taken the Raft leader away) until timeout. A
// command that needed retries is noted in f (if not nil) with its first
// refusal.
func (r *chaosRun) operator(f *chaosFault, timeout time.Duration, args ...string) error {
	tries, first := 0, error(nil)
	start := time.Now()
	err := poll(timeout, "raftgres "+args[0], func() error {
		n := r.available()
		if n == nil {
			return errors.New("no member available")
		}
		tries++
		_, err := r.cli(n, args...)
		if err != nil && first == nil {
			first = err
		}
		return err
	})
	if f != nil && err == nil && tries > 1 {
		f.Extra = append(f.Extra, fmt.Sprintf("%s accepted at the %dth try after %s (first refusal: %v)",
			args[0], tries, time.Since(start).Round(100*time.Millisecond), first))
	}
	return err
}

func (r *chaosRun) setPause(pause bool) error {
	cmd := "resume"
	if pause {
		cmd = "pause"
	}
	if err := r.operator(nil, 30*time.Second, cmd); err != nil {
		return err
	}
	r.paused = pause
	return poll(10*time.Second, cmd+" applied", func() error {
		st, err := r.state()
		if err == nil && st.Config.Pause != pause {
			err = fmt.Errorf("config says pause=%v", st.Config.Pause)
		}
		return err
	})
}

func (r *chaosRun) unfreeze() {
	for n := range r.frozen {
		if _, exited := n.Exited(); !exited {
			_ = syscall.Kill(n.PID(), syscall.SIGCONT)
		}
		delete(r.frozen, n)
	}
}

func (r *chaosRun) index(n *Node) int { return slices.Index(r.c.nodes, n) + 1 }

// --- faults ----------------------------------------------------------------

var chaosKinds = []string{
	"kill-agent",         // kill -9 of the primary's agent (its PostgreSQL dies with it)
	"kill-postmaster",    // kill -9 of the primary's postmaster
	"stop-primary-agent", // SIGSTOP of the primary's agent for 1.5-3 ttl
	"stop-replica-agent", // SIGSTOP of a replica's agent for 1.5-3 ttl
	"cut-primary",        // the primary's cluster link down for 5-15s
	"cut-replica",        // a replica's cluster link down for 5-15s
	"restart-agent",      // SIGTERM of a member's agent, started again
	"restart-postgres",   // raftgres restart MEMBER
	"switchover",         // raftgres switchover
}

// fault waits for a whole cluster, injects one random fault, holds it,
// heals it and waits for the cluster to recover.
func (r *chaosRun) fault(n int) {
	primary, err := r.waitHealthy(2 * time.Minute)
	if err != nil {
		r.stuck = fmt.Sprintf("before fault %d: %v", n, err)
		r.logf("%s", r.stuck)
		return
	}
	st, _ := r.state()
	// Every random choice is drawn here, in a fixed order, so that a seed
	// replays the same sequence whatever the timing.
	kind := chaosKinds[r.rng.IntN(len(chaosKinds))]
	pick, frac := r.rng.IntN(1000), r.rng.Float64()
	doEdit, doPause := r.rng.IntN(3) == 0, r.rng.IntN(4) == 0
	editAt, pauseAt, resumeAt := 0.2+0.6*r.rng.Float64(), 0.1+0.3*r.rng.Float64(), 0.6+0.3*r.rng.Float64()
	var replicas []*Node
	for _, m := range r.c.nodes {
		if m != primary {
			replicas = append(replicas, m)
		}
	}
	target := primary
	switch kind {
	case "stop-replica-agent", "cut-replica":
		target = replicas[pick%len(replicas)]
	case "restart-agent", "restart-postgres":
		target = r.c.nodes[pick%len(r.c.nodes)]
	case "switchover":
		target = replicas[pick%len(replicas)]
		if r.sync && len(st.Sync.Standbys) > 0 {
			target = r.c.byName(st.Sync.Standbys[0])
		}
	}
	f := &chaosFault{N: n, Kind: kind, Target: target.Name, Role: "replica", Before: keyOf(st)}
	if target == primary {
		f.Role = "primary"
	}
	r.faults = append(r.faults, f)
	ttl := float64(chaosTTL)
	f.At = time.Now()
	switch kind {
	case "kill-agent":
		target.Kill9()
		f.Hold = time.Duration((1 + 2*frac) * ttl)
		r.hold(f, doEdit, doPause, editAt, pauseAt, resumeAt)
		target.Start()
	case "kill-postmaster":
		pid, err := postmasterPID(target)
		if err == nil {
			err = syscall.Kill(pid, syscall.SIGKILL)
		}
		if err != nil {
			f.Err = "no postmaster to kill: " + err.Error()
		}
	case "stop-primary-agent", "stop-replica-agent":
		if err := syscall.Kill(target.PID(), syscall.SIGSTOP); err != nil {
			r.t.Fatal(err)
		}
		r.frozen[target] = true
		f.Hold = time.Duration((1.5 + 1.5*frac) * ttl)
		r.hold(f, doEdit, doPause, editAt, pauseAt, resumeAt)
		_ = syscall.Kill(target.PID(), syscall.SIGCONT)
		delete(r.frozen, target)
	case "cut-primary", "cut-replica":
		if err := r.lab.cut(r.index(target)); err != nil {
			r.t.Fatal(err)
		}
		r.cut[target] = true
		f.Hold = time.Duration(5+10*frac) * time.Second
		r.hold(f, doEdit, doPause, editAt, pauseAt, resumeAt)
		if err := r.lab.heal(r.index(target)); err != nil {
			r.t.Fatal(err)
		}
		delete(r.cut, target)
	case "restart-agent":
		if err := r.stopAgent(target); err != nil {
			f.Err = err.Error()
			r.hung = append(r.hung, fmt.Sprintf("fault %d: %v", n, err))
		}
		target.Start()
	case "restart-postgres":
		if err := r.operator(f, 30*time.Second, "restart", target.Name, "--force"); err != nil {
			f.Err = err.Error()
		}
	case "switchover":
		if err := r.operator(f, 30*time.Second, "switchover", "--candidate", target.Name, "--force"); err != nil {
			f.Err = err.Error()
		} else if err := poll(60*time.Second, "the switchover to "+target.Name, func() error {
			s, err := r.state()
			if err == nil && (s.Leader.Holder != target.Name || s.Failover != nil) {
				err = fmt.Errorf("key %s, pending %+v", keyOf(s), s.Failover)
			}
			return err
		}); err != nil {
			f.Err = err.Error()
		}
	}
	if r.paused {
		if err := r.setPause(false); err != nil {
			f.Extra = append(f.Extra, "resume failed: "+err.Error())
		}
	}
	_, err = r.waitHealthy(2 * time.Minute)
	f.Recovered = time.Since(f.At)
	if err == nil {
		err = r.waitAckAfter(f.At, 30*time.Second)
	}
	if err != nil {
		f.Err = strings.TrimPrefix(f.Err+"; ", "; ") + "recovery: " + err.Error()
		r.stuck = fmt.Sprintf("after fault %d (%s of %s): %v", n, kind, target.Name, err)
	}
	f.FirstAck, f.Acked = r.wl.firstAckAfter(f.At)
	st, _ = r.state()
	f.After = keyOf(st)
	if st.Leader.Holder != "" && !strings.HasPrefix(f.Before, st.Leader.Holder+"@") {
		f.NewAck, f.NewAcked = r.wl.firstAckAfterOn(f.At, st.Leader.Holder)
	}
	r.logf("%s", f)
	// A little steady load before the next fault.
	time.Sleep(time.Second + time.Duration(r.rng.IntN(2000))*time.Millisecond) // workload time, not synchronisation
}

// hold keeps a fault in force for f.Hold, running the operator actions
// drawn for it (edit-config, pause then resume) at their points.
func (r *chaosRun) hold(f *chaosFault, doEdit, doPause bool, editAt, pauseAt, resumeAt float64) {
	type step struct {
		at   float64
		name string
	}
	var steps []step
	if doEdit {
		steps = append(steps, step{editAt, "edit-config"})
	}
	if doPause {
		steps = append(steps, step{pauseAt, "pause"}, step{resumeAt, "resume"})
	}
	sort.Slice(steps, func(i, j int) bool { return steps[i].at < steps[j].at })
	for _, s := range steps {
		if d := time.Until(f.At.Add(time.Duration(s.at * float64(f.Hold)))); d > 0 {
			time.Sleep(d) // the fault's duration
		}
		var err error
		note := s.name
		switch s.name {
		case "edit-config":
			r.workMem++
			note = fmt.Sprintf("edit-config work_mem=%dMB", r.workMem)
			err = r.operator(f, 10*time.Second, "edit-config", "--pg", fmt.Sprintf("work_mem=%dMB", r.workMem), "--force")
		case "pause":
			err = r.setPause(true)
		case "resume":
			err = r.setPause(false)
		}
		if err != nil {
			note += " failed: " + err.Error()
		}
		f.Extra = append(f.Extra, fmt.Sprintf("%s at +%s", note, time.Since(f.At).Round(100*time.Millisecond)))
	}
	if d := time.Until(f.At.Add(f.Hold)); d > 0 {
		time.Sleep(d) // the fault's duration
	}
}

func (f *chaosFault) String() string {
	s := fmt.Sprintf("fault %d: %s of %s (%s) at %s", f.N, f.Kind, f.Target, f.Role, clock(f.At))
	if f.Hold > 0 {
		s += fmt.Sprintf(" for %s", f.Hold.Round(100*time.Millisecond))
	}
	s += fmt.Sprintf("; key %s -> %s", f.Before, f.After)
	if f.Acked {
		s += fmt.Sprintf("; new acknowledged write after %s", f.FirstAck.Round(time.Millisecond))
	} else {
		s += "; no acknowledged write since"
	}
	if f.NewAcked {
		s += fmt.Sprintf(" (on the new primary after %s)", f.NewAck.Round(time.Millisecond))
	}
	s += fmt.Sprintf("; whole again after %s", f.Recovered.Round(100*time.Millisecond))
	if len(f.Extra) > 0 {
		s += "; during it: " + strings.Join(f.Extra, ", ")
	}
	if f.Err != "" {
		s += "; ERROR: " + f.Err
	}
	return s
}

// stopAgent stops n's agent as an operator would: SIGTERM, then after
// 20s a SIGQUIT, whose goroutine dump lands in the agent's log (printed
// here, its raftgres frames), then SIGKILL.
func (r *chaosRun) stopAgent(n *Node) error {
	exited := func() error {
		if _, done := n.Exited(); !done {
			return errors.New("still running")
		}
		return nil
	}
	_ = syscall.Kill(n.PID(), syscall.SIGTERM)
	if poll(20*time.Second, n.Name+"'s agent to exit", exited) == nil {
		return nil
	}
	mark := len(n.Log())
	_ = syscall.Kill(n.PID(), syscall.SIGQUIT)
	if poll(10*time.Second, n.Name+"'s agent to dump and exit", exited) != nil {
		n.Kill9()
	}
	frames := raftgresFrames(n.Log()[mark:])
	r.logf("%s's agent did not stop within 20s of SIGTERM; its goroutines (raftgres frames) at SIGQUIT:", n.Name)
	for _, l := range frames[:min(len(frames), 80)] {
		r.logf("    %s", l)
	}
	return fmt.Errorf("%s's agent did not stop within 20s of SIGTERM (goroutine dump in its log)", n.Name)
}

// raftgresFrames picks, from a Go goroutine dump, the goroutines running
// raftgres code: their header, and each raftgres frame with its file:line.
func raftgresFrames(dump string) []string {
	var frames []string
	for _, block := range strings.Split(dump, "\n\n") {
		lines := strings.Split(strings.TrimSpace(block), "\n")
		if !strings.HasPrefix(lines[0], "goroutine ") || !strings.Contains(block, "raftgres/") {
			continue
		}
		var own []string
		for i, l := range lines {
			if strings.HasPrefix(l, "raftgres/") && i+1 < len(lines) {
				own = append(own, "  "+l, "  "+strings.TrimSpace(lines[i+1]))
			}
		}
		if len(own) > 0 {
			frames = append(append(frames, lines[0]), own...)
		}
	}
	return frames
}

func postmasterPID(n *Node) (int, error) {
	data, err := os.ReadFile(n.PGDataDir() + "/postmaster.pid")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(strings.SplitN(string(data), "\n", 2)[0]))
}

// --- the workload ------------------------------------------------------------

// chaosWorkload runs the writers and keeps every write they attempted.
type chaosWorkload struct {
	hosts  []string          // every member's PostgreSQL as host:port (probe addresses)
	byAddr map[string]string // host:port → member
	mu     sync.Mutex
	writes []chaosWrite // in order of completion
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startChaosWorkload(t *testing.T, c *cluster) *chaosWorkload {
	ctx, cancel := context.WithCancel(context.Background())
	wl := &chaosWorkload{byAddr: map[string]string{}, cancel: cancel}
	for _, n := range c.nodes {
		hp := fmt.Sprintf("%s:%d", n.probeHost(), n.PGPort)
		wl.hosts = append(wl.hosts, hp)
		wl.byAddr[hp] = n.Name
	}
	for w := 1; w <= chaosWriters+chaosCancelWriters; w++ {
		cancelAfter := time.Duration(0)
		if w > chaosWriters {
			cancelAfter = chaosCancelAfter
		}
		wl.wg.Add(1)
		go wl.writer(ctx, w, cancelAfter)
	}
	t.Cleanup(wl.stop)
	return wl
}

func (wl *chaosWorkload) stop() { wl.cancel(); wl.wg.Wait() }

// writer inserts (writer, seq) rows through a multi-host connection that
// only accepts a read-write server (hosts in random order), reconnecting
// after any error (at most every 200ms) and every 0.5-1.5s. Every attempt
// gets a new id. With cancelAfter > 0 each INSERT's deadline is that long
// and sends a cancel request; a connection is dropped after any write
// that reached its deadline, so a cancel request can only end the wait of
// the write it was sent for.
func (wl *chaosWorkload) writer(ctx context.Context, w int, cancelAfter time.Duration) {
	defer wl.wg.Done()
	rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
	var conn *pgx.Conn
	var notice string
	var cancelledWait bool
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	var lastConnect, recycleAt time.Time
	for seq := 1; ctx.Err() == nil; {
		if conn != nil && time.Now().After(recycleAt) {
			// Connections are recycled, as a pool does: with two writable
			// members the writers spread over both, so that two members
			// acknowledging at once shows.
			_ = conn.Close(context.Background())
			conn = nil
		}
		if conn == nil {
			if d := 200*time.Millisecond - time.Since(lastConnect); d > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(d): // reconnect rate limit
				}
			}
			lastConnect = time.Now()
			hosts := slices.Clone(wl.hosts)
			rng.Shuffle(len(hosts), func(i, j int) { hosts[i], hosts[j] = hosts[j], hosts[i] })
			cfg, err := pgx.ParseConfig(fmt.Sprintf("postgres://postgres:%s@%s/postgres?sslmode=disable&connect_timeout=1&target_session_attrs=read-write",
				superPassword, strings.Join(hosts, ",")))
			if err != nil {
				panic(err)
			}
			cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
				notice = n.Severity + ": " + n.Message
				if isCancelledWaitNotice(n.Severity, n.Message) {
					cancelledWait = true
				}
			}
			if cancelAfter > 0 {
				cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
					// The cancel request at the deadline; the connection's
					// own deadline only 2s later, for a server that does
					// not answer at all.
					return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: 2 * time.Second}
				}
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			conn, err = pgx.ConnectConfig(cctx, cfg)
			cancel()
			if err != nil {
				conn = nil
				continue
			}
			recycleAt = time.Now().Add(chaosConnLife/2 + time.Duration(rng.Int64N(int64(chaosConnLife))))
		}
		id := int64(w)*1_000_000_000 + int64(seq)
		wr := chaosWrite{Writer: w, Seq: seq, ID: id}
		seq++
		notice, cancelledWait = "", false
		var addr string
		var port int
		wr.Sent = time.Now()
		deadline := wr.Sent.Add(2 * time.Second)
		if cancelAfter > 0 {
			deadline = wr.Sent.Add(cancelAfter)
			wr.Deadline = deadline
		}
		wctx, cancel := context.WithDeadline(ctx, deadline)
		err := conn.QueryRow(wctx, "INSERT INTO chaos (id, writer, seq) VALUES ($1, $2, $3) RETURNING host(inet_server_addr()), inet_server_port()",
			id, w, wr.Seq).Scan(&addr, &port)
		wr.Done = time.Now()
		expired := wctx.Err() != nil
		cancel()
		wr.Notice, wr.CancelledWait = notice, cancelledWait
		if err == nil {
			wr.Outcome = writeAcked
			wr.Server = wl.byAddr[fmt.Sprintf("%s:%d", addr, port)]
			if wr.Server == "" {
				wr.Server = fmt.Sprintf("unknown server %s:%d", addr, port)
			}
		} else { // never retried: the next attempt takes a new id
			wr.Outcome, wr.Err = writeOutcomeOf(err), err.Error()
		}
		if err != nil || expired {
			_ = conn.Close(context.Background())
			conn = nil
		}
		wl.mu.Lock()
		wl.writes = append(wl.writes, wr)
		wl.mu.Unlock()
		if err == nil {
			select {
			case <-ctx.Done():
			case <-time.After(chaosPace): // a paced load a 2-core machine keeps up with
			}
		}
	}
}

// firstAckAfter is how long after since the first write sent after since
// was acknowledged.
func (wl *chaosWorkload) firstAckAfter(since time.Time) (time.Duration, bool) {
	return wl.firstAckAfterOn(since, "")
}

// firstAckAfterOn is firstAckAfter for acks by server ("" any).
func (wl *chaosWorkload) firstAckAfterOn(since time.Time, server string) (time.Duration, bool) {
	wl.mu.Lock()
	defer wl.mu.Unlock()
	best, found := time.Duration(0), false
	for i := len(wl.writes) - 1; i >= 0; i-- {
		w := wl.writes[i]
		if w.Done.Before(since) {
			break // completion order: everything earlier finished before since
		}
		if w.Outcome == writeAcked && w.Sent.After(since) && (server == "" || w.Server == server) && (!found || w.Done.Sub(since) < best) {
			best, found = w.Done.Sub(since), true
		}
	}
	return best, found
}

func (wl *chaosWorkload) all() []chaosWrite {
	wl.mu.Lock()
	defer wl.mu.Unlock()
	return slices.Clone(wl.writes)
}

// --- the end: heal, converge, check, report -------------------------------

func (r *chaosRun) finish() {
	t := r.t
	faultEnd := time.Now()
	r.unfreeze()
	for n := range r.cut {
		if err := r.lab.heal(r.index(n)); err != nil {
			t.Fatal(err)
		}
		delete(r.cut, n)
	}
	for _, n := range r.c.nodes {
		if _, exited := n.Exited(); exited {
			n.Start()
		}
	}
	var opFailures []string
	opRetried := 0
	for _, f := range r.faults {
		for _, x := range f.Extra {
			switch {
			case strings.Contains(x, " accepted at the "):
				opRetried++
			case strings.Contains(x, " failed: "):
				opFailures = append(opFailures, fmt.Sprintf("fault %d: %s", f.N, x))
			}
		}
		if f.Err != "" && (f.Kind == "switchover" || f.Kind == "restart-postgres") {
			opFailures = append(opFailures, fmt.Sprintf("fault %d (%s): %s", f.N, f.Kind, f.Err))
		}
	}
	var recovery []string
	if r.stuck != "" {
		recovery = append(recovery, r.stuck)
	}
	if err := poll(time.Minute, "resume", func() error {
		st, err := r.state()
		if err == nil && st.Config.Pause {
			err = r.setPause(false)
		}
		return err
	}); err != nil {
		recovery = append(recovery, err.Error())
	}
	healedAt := time.Now()
	primary, err := r.waitHealthy(3 * time.Minute)
	if err == nil {
		err = r.waitAckAfter(healedAt, 30*time.Second)
	}
	if err != nil {
		recovery = append(recovery, "at the end: "+err.Error())
	}
	r.wl.stop()
	writes := r.wl.all()
	st, _ := r.state()
	if p := r.c.byName(st.Leader.Holder); p != nil {
		primary = p
	}

	// Convergence: once writes stop, every member reaches the same rows.
	var digests []memberDigest
	convErr := poll(2*time.Minute, "all members with the same rows", func() error {
		digests = r.digests()
		return checkConverged(digests)
	})
	have, haveErr := map[int64]bool{}, error(nil)
	if primary != nil {
		have, haveErr = idSet(primary, "chaos")
	} else {
		haveErr = errors.New("no primary at the end")
	}

	// Lease lines the agents logged.
	var lines []leaseLine
	var badLines []string
	for _, n := range r.c.nodes {
		l, bad := parseLeaseLines(n.Name, n.Log())
		lines, badLines = append(lines, l...), append(badLines, bad...)
	}
	book := newLeaseBook(lines)
	epoch := func(w chaosWrite) uint64 { return epochOf(w, book) }

	var acked, failed, indeterminate, warned int
	perServer := map[string]int{}
	for _, w := range writes {
		switch w.Outcome {
		case writeAcked:
			acked++
			perServer[w.Server]++
			if w.Notice != "" {
				warned++
			}
		case writeFailed:
			failed++
		case writeIndeterminate:
			indeterminate++
		}
	}
	lost := missingAcked(writes, have)
	lostOrdinary, lostCancelled := splitCancelled(lost)
	cw := cancelledWaits(writes, have, book)
	leaseVs := checkLeases(writes, book)
	// Cancelled-wait acks are judged by the lease rule alone: synchronous
	// mode's fast path promotes the standby before the old primary's lease
	// ends, and PostgreSQL answers a cancelled wait without the gate.
	ordinaryWrites, _ := splitCancelled(writes)
	epochVs := checkEpochOrder(ordinaryWrites, epoch)
	cancelOverlaps := 0
	for _, v := range checkEpochOrder(writes, epoch) {
		if v.Earlier.CancelledWait || v.Later.CancelledWait {
			cancelOverlaps++
		}
	}
	offKey := ackedOffKey(writes, st.History, 0)
	gap, gapAt := maxAckGap(writes)
	ackSecs, allSecs := ackSeconds(writes, r.start, faultEnd)
	renewals, ends := 0, 0
	for _, l := range lines {
		if l.Ended {
			ends++
		} else {
			renewals++
		}
	}

	// The report.
	kinds := map[string]int{}
	for _, f := range r.faults {
		kinds[f.Kind]++
	}
	var kl []string
	for k, v := range kinds {
		kl = append(kl, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(kl)
	var sl []string
	for s, v := range perServer {
		sl = append(sl, fmt.Sprintf("%s %d", s, v))
	}
	sort.Strings(sl)
	r.logf("---- %s mode summary (seed %d) ----", r.mode, r.seed)
	r.logf("faults: %d in %s (%s)", len(r.faults), faultEnd.Sub(r.start).Round(time.Second), strings.Join(kl, ", "))
	r.logf("writes: %d acknowledged (%s), %d failed, %d indeterminate; %d acks came with a warning",
		acked, strings.Join(sl, ", "), failed, indeterminate, warned)
	r.logf("lost acknowledged writes: %d (%d ordinary, %d with the cancelled-wait warning)", len(lost), len(lostOrdinary), len(lostCancelled))
	r.logf("cancelled commit waits acknowledged with the warning: %d; lost: %d; acknowledged after the member's lease end: %d (%d of them lost); cancelled before the lease end but answered after it: %d",
		cw.Acks, cw.Lost, cw.After, len(cw.LostAfter), cw.Straddling)
	if renewals == 0 {
		r.logf("writes acknowledged after a lease end: %d (every ack: the agents logged no lease)", len(leaseVs))
	} else {
		r.logf("writes acknowledged after a lease end: %d", len(leaseVs))
	}
	r.logf("overlapping-epoch violations: %d (and %d more involving cancelled-wait acks, left to the lease rule)", len(epochVs), cancelOverlaps)
	r.logf("wall clock minus boot clock since the agents first started: %s (bounds the error of comparing client times with lease_end)",
		time.Now().Sub(boottime.Now()))
	r.logf("writes sent after the key had left their member (FSM history) and acked by it: %d", len(offKey))
	r.logf("max write gap: %s (from %s)", gap.Round(time.Millisecond), clock(gapAt))
	r.logf("seconds with an acknowledged write, during the faults: %d of %d (%.1f %%)", ackSecs, allSecs,
		100*float64(ackSecs)/float64(max(allSecs, 1)))
	if r.sync && !r.quorum {
		r.logf("times the FSM's synchronous standby was not synchronous in PostgreSQL: %d", len(r.syncBroken))
	}
	r.logf("operator commands that failed: %d; accepted only after retries: %d", len(opFailures), opRetried)
	for _, o := range opFailures {
		r.logf("    %s", o)
	}
	r.logf("lease lines logged: %d renewals, %d lease ends (%d unparsable)", renewals, ends, len(badLines))
	for _, e := range st.History {
		if e.Kind == raftstore.EventLeader {
			r.logf("history: %s epoch %d -> %s (%s)", clock(e.At), e.Epoch, valueOr(e.Member, "none"), e.Reason)
		}
	}
	for _, d := range digests {
		r.logf("final: %s %d rows md5 %s %v", d.Member, d.Rows, d.Checksum, errOrEmpty(d.Err))
	}

	var checks []chaosCheck
	add := func(name string, failed bool, detail string) {
		checks = append(checks, chaosCheck{Name: name, Failed: failed, Detail: detail})
	}
	add("the workload ran (acknowledged writes, faults)", acked == 0 || len(r.faults) == 0,
		fmt.Sprintf("%d acks, %d faults", acked, len(r.faults)))
	add("the cluster recovered after every fault and at the end", len(recovery) > 0, strings.Join(recovery, "; "))
	add("every agent stopped within 20s of SIGTERM", len(r.hung) > 0, strings.Join(r.hung, "; "))
	if haveErr != nil {
		add("the final primary's rows could be read", true, haveErr.Error())
	}
	if r.sync {
		add("sync: every acknowledged write is on the final primary, but for cancelled commit waits", len(lostOrdinary) > 0 || haveErr != nil,
			fmt.Sprintf("%d lost, %d more with the cancelled-wait warning", len(lostOrdinary), len(lostCancelled)))
	} else {
		un := unexplainedLoss(lost, epoch, st.History)
		add("async: acknowledged writes lost only to a failover within the lease", len(un) > 0,
			fmt.Sprintf("%d lost, %d not explained by a failover", len(lost), len(un)))
	}
	leaseDetail := fmt.Sprintf("%d writes", len(leaseVs))
	if renewals == 0 {
		leaseDetail += "; the agents logged no `lease renewed` line at all (the lease log contract is not implemented by this binary)"
	}
	add("no write acknowledged by a member after its lease ended (a cancelled wait's ack no earlier than its cancel)", len(leaseVs) > 0, leaseDetail)
	add("a cancelled commit wait is lost only if acknowledged before its member's lease end", len(cw.LostAfter) > 0 || (cw.Lost > 0 && haveErr != nil),
		fmt.Sprintf("%d lost of %d, %d of those acknowledged after the lease end", cw.Lost, cw.Acks, len(cw.LostAfter)))
	epochDetail := fmt.Sprintf("%d writes", len(epochVs))
	if renewals == 0 {
		epochDetail = "not checkable: no lease lines, so no epoch for any ack"
	}
	add("no two members acknowledge writes in overlapping intervals (epochs monotone)", len(epochVs) > 0 || (acked > 0 && renewals == 0),
		epochDetail)
	add("all members converge (same count and checksum)", convErr != nil, errOrEmpty(convErr))
	// Issue 19's liveness target, judged on runs of 5 minutes or more:
	// in a 2-minute run (make test) one asynchronous failover more or
	// less (each costs about ttl of writes) moves the share by 2-3 points.
	// Quorum mode has no fast path: each lost primary costs the lease and
	// then the reports of n − k + 1 standbys read after it (2.7-4.6 s in the
	// first 10-minute run, against 0.4-1.9 s in synchronous mode and
	// 2.5-3.2 s in asynchronous mode), so its target is 85 %.
	target := 90
	if r.quorum {
		target = 85
	}
	add(fmt.Sprintf("writes succeed in at least %d %% of the seconds of the faults (judged from 5 minutes of faults)", target),
		allSecs >= 300 && ackSecs*100 < allSecs*target, fmt.Sprintf("%d of %d seconds", ackSecs, allSecs))

	r.explainLost(lostOrdinary, book, st.History)
	r.explainLostCancelled(lostCancelled, book)
	if renewals > 0 {
		r.explainLeases(leaseVs, book)
	}
	r.explainOffKey(offKey, st.History)
	r.explainEpochs(epochVs)
	for _, b := range badLines[:min(len(badLines), 5)] {
		r.logf("unparsable lease line: %s", b)
	}

	passed, failedN := 0, 0
	for _, c := range checks {
		status := "PASS"
		if c.Failed {
			status = "FAIL"
			failedN++
		} else {
			passed++
		}
		r.logf("%s  %s (%s)", status, c.Name, c.Detail)
	}
	r.logf("%s mode: %d passed, %d failed", r.mode, passed, failedN)
	if failedN > 0 {
		t.Errorf("chaos %s: %d of %d checks failed (seed %d; the lines starting with \"chaos:\" say which and why)",
			r.mode, failedN, len(checks), r.seed)
	}
}

func errOrEmpty(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (r *chaosRun) digests() []memberDigest {
	var out []memberDigest
	for _, n := range r.c.nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		d := memberDigest{Member: n.Name}
		d.Err = pgQueryRow(ctx, n, "SELECT count(*), coalesce(md5(string_agg(id::text, ',' ORDER BY id)), '') FROM chaos", &d.Rows, &d.Checksum)
		cancel()
		out = append(out, d)
	}
	return out
}

// idSet reads table's id column on n (30 s at most) as a set.
func idSet(n *Node, table string) (map[int64]bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, n.PGConn())
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SELECT id FROM "+table)
	if err != nil {
		return nil, err
	}
	have := map[int64]bool{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		have[id] = true
	}
	return have, rows.Err()
}

// faultAt names the fault in force (or recovering) at t.
func (r *chaosRun) faultAt(t time.Time) string {
	for i := len(r.faults) - 1; i >= 0; i-- {
		f := r.faults[i]
		if !t.Before(f.At) && !t.After(f.At.Add(f.Recovered)) {
			return fmt.Sprintf("fault %d (%s of %s)", f.N, f.Kind, f.Target)
		}
		if t.Before(f.At) && f.At.Sub(t) < time.Second {
			return fmt.Sprintf("just before fault %d (%s of %s)", f.N, f.Kind, f.Target)
		}
	}
	return "no fault"
}

func (r *chaosRun) explainOffKey(ws []chaosWrite, history []raftstore.Event) {
	var vs []leaseViolation // grouped like lease violations: by member, close in time
	for _, w := range ws {
		vs = append(vs, leaseViolation{W: w})
	}
	for i, e := range leaseEpisodes(vs) {
		if i == 10 {
			break
		}
		moved := ""
		for _, h := range history {
			if h.Kind == raftstore.EventLeader && !h.At.After(e.First.W.Sent) {
				moved = fmt.Sprintf("epoch %d -> %s at %s (%s)", h.Epoch, valueOr(h.Member, "none"), clock(h.At), h.Reason)
			}
		}
		r.logf("off the key: %d writes acked by %s (%s - %s, during %s) after the key moved: %s; first: %s",
			e.N, e.Member, clock(e.First.W.Done), clock(e.LastAck), r.faultAt(e.First.W.Done), moved, e.First.W)
		r.agentContext(e.Member, e.First.W.Sent.Add(-10*time.Second), e.LastAck.Add(2*time.Second))
	}
}

// explainLost prints lost acknowledged writes by episode (member, close
// in time), with what that member's agent said around it unless a
// failover explains the loss (asynchronous mode).
func (r *chaosRun) explainLost(lost []chaosWrite, book *leaseBook, history []raftstore.Event) {
	epoch := func(w chaosWrite) uint64 { return epochOf(w, book) }
	var vs []leaseViolation // grouped like lease violations
	for _, w := range lost {
		vs = append(vs, leaseViolation{W: w})
	}
	for i, e := range leaseEpisodes(vs) {
		if i == 10 {
			r.logf("lost: more episodes left out")
			break
		}
		r.logf("lost: %d writes acked by %s under epoch %d, acked %s - %s during %s; first: %s",
			e.N, e.Member, epochOf(e.First.W, book), clock(e.First.W.Done), clock(e.LastAck), r.faultAt(e.First.W.Done), e.First.W)
		if r.sync || len(unexplainedLoss([]chaosWrite{e.First.W}, epoch, history)) > 0 {
			r.agentContext(e.Member, e.First.W.Sent.Add(-30*time.Second), e.LastAck.Add(2*time.Second))
		}
	}
}

// explainLostCancelled prints lost cancelled-wait acks by episode, each
// placed against its member's lease end (before it: allowed).
func (r *chaosRun) explainLostCancelled(lost []chaosWrite, book *leaseBook) {
	var vs []leaseViolation
	for _, w := range lost {
		vs = append(vs, leaseViolation{W: w})
	}
	for i, e := range leaseEpisodes(vs) {
		if i == 10 {
			r.logf("lost with the cancelled-wait warning: more episodes left out")
			break
		}
		before := 0
		for _, w := range lost {
			if w.Server != e.Member || w.Done.Before(e.First.W.Done) || w.Done.After(e.LastAck) {
				continue
			}
			if _, end, ok := book.at(w.Server, w.Done); ok && end.After(w.ackFloor()) {
				before++
			}
		}
		r.logf("lost with the cancelled-wait warning: %d writes acked by %s (%d before its lease end, allowed), acked %s - %s during %s; first: %s",
			e.N, e.Member, before, clock(e.First.W.Done), clock(e.LastAck), r.faultAt(e.First.W.Done), e.First.W)
	}
}

// agentContextRE picks the agent lines that explain an episode: actions,
// lease and key events, synchronous replication, config reloads.
var agentContextRE = regexp.MustCompile(`acting:|demote|promot|lease|renewal failed|released|synchronous|config applied|reloading|pause|resume|fenc`)

// agentContext prints member's last interesting log lines within [from, to].
func (r *chaosRun) agentContext(member string, from, to time.Time) {
	n := r.c.byName(member)
	if n == nil {
		return
	}
	var picked []string
	repeats := map[string]int{} // a message seen again is counted, not printed
	for _, line := range strings.Split(n.Log(), "\n") {
		ts, rest, _ := strings.Cut(line, " ")
		at, err := time.Parse(agentLogTime, ts)
		if err != nil || at.Before(from) || at.After(to) || !agentContextRE.MatchString(line) ||
			strings.Contains(line, ": lease renewed:") {
			continue
		}
		if _, seen := repeats[rest]; seen {
			repeats[rest]++
			continue
		}
		repeats[rest] = 0
		picked = append(picked, line)
	}
	if len(picked) > 12 {
		picked = picked[len(picked)-12:]
	}
	for _, l := range picked {
		_, rest, _ := strings.Cut(l, " ")
		if k := repeats[rest]; k > 0 {
			l += fmt.Sprintf(" (and %d more times)", k)
		}
		r.logf("    [%s] %s", member, l)
	}
}

func (r *chaosRun) explainLeases(vs []leaseViolation, book *leaseBook) {
	eps := leaseEpisodes(vs)
	for i, e := range eps {
		if i == 10 {
			r.logf("lease violation: %d more episodes", len(eps)-10)
			break
		}
		v := e.First
		if !v.Found {
			r.logf("lease violation: %d writes acked by %s (%s - %s, during %s) with no lease renewal logged before; first: %s",
				e.N, e.Member, clock(v.W.Done), clock(e.LastAck), r.faultAt(v.W.Done), v.W)
		} else {
			r.logf("lease violation: %d writes acked by %s after its lease ended at %s (epoch %d): acks %s - %s, up to %s past the lease end, during %s; first: %s",
				e.N, e.Member, clock(v.LeaseEnd), v.Renewal.Epoch, clock(v.W.Done), clock(e.LastAck),
				e.PastLease.Round(time.Millisecond), r.faultAt(v.W.Done), v.W)
		}
		if v.LateBy > 0 && v.LateBy < time.Second {
			r.logf("    (a renewal logged %s after that ack covers the write: the log line follows the gate's update?)", v.LateBy)
		}
		for _, l := range book.near(e.Member, v.W.Sent.Add(-3*time.Second), e.LastAck.Add(time.Second)) {
			r.logf("    [%s] %s", l.Member, l.Text)
		}
	}
}

func (r *chaosRun) explainEpochs(vs []epochViolation) {
	type pair struct {
		s1, s2 string
		e1, e2 uint64
	}
	count := map[pair]int{}
	first := map[pair]epochViolation{}
	var order []pair
	for _, v := range vs {
		p := pair{v.Earlier.Server, v.Later.Server, v.E1, v.E2}
		if count[p] == 0 {
			order = append(order, p)
			first[p] = v
		}
		count[p]++
	}
	for _, p := range order[:min(len(order), 10)] {
		v := first[p]
		r.logf("overlap: %d writes acked by %s under epoch %d were sent after %s acked one under epoch %d (during %s); e.g. %s, after %s",
			count[p], p.s2, p.e2, p.s1, p.e1, r.faultAt(v.Later.Done), v.Later, v.Earlier)
	}
}
