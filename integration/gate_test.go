package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"raftgres/raftstore"
)

// ssnSampler reads the primary's synchronous_standby_names every 20 ms
// and remembers every value it saw (connection errors, e.g. during a
// restart, are not values).
type ssnSampler struct {
	mu   sync.Mutex
	seen map[string]int
	stop context.CancelFunc
	done chan struct{}
}

func sampleSSN(n *Node) *ssnSampler {
	ctx, cancel := context.WithCancel(context.Background())
	s := &ssnSampler{seen: map[string]int{}, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			qctx, qcancel := context.WithTimeout(ctx, time.Second)
			var v string
			var inRecovery bool
			err := pgQueryRow(qctx, n, "SELECT current_setting('synchronous_standby_names'), pg_is_in_recovery()", &v, &inRecovery)
			qcancel()
			if err == nil && !inRecovery {
				s.mu.Lock()
				s.seen[v]++
				s.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *ssnSampler) values() map[string]int {
	s.stop()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen
}

// TestSyncModeSurvivesAdminActions, on real servers: in
// synchronous mode the primary's synchronous_standby_names names the
// commit gate and the recorded synchronous standby, and no edit-config,
// pause, resume, reload or restart ever leaves it without them, not even
// for one sample.
func TestSyncModeSurvivesAdminActions(t *testing.T) {
	requireIntegration(t)
	c := newPGClusterDCS(t, 3, nil, syncDCS)
	primary := c.waitPrimary(120*time.Second, c.nodes...)
	c.waitStreaming(primary)
	var standby string
	waitFor(t, 60*time.Second, "a synchronous standby recorded", func() (bool, error) {
		st, err := c.state()
		if err != nil || st.Sync.Primary != primary.Name || len(st.Sync.Standbys) != 1 {
			return false, err
		}
		standby = st.Sync.Standbys[0]
		return true, nil
	})
	want := fmt.Sprintf(`FIRST 2 ("raftgres_fence", "%s")`, standby)
	waitFor(t, 10*time.Second, "the gate and the standby synchronous", func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var ssn string
		var sync int
		err := pgQueryRow(ctx, primary, fmt.Sprintf(`SELECT current_setting('synchronous_standby_names'),
			(SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync' AND application_name IN ('raftgres_fence', '%s'))`,
			standby), &ssn, &sync)
		return ssn == want && sync == 2, fmt.Errorf("ssn %q, %d synchronous: %v", ssn, sync, err)
	})
	for _, step := range [][]string{
		{"edit-config", "-c", primary.Config, "--pg", "work_mem=8MB", "--force"},
		{"pause", "-c", primary.Config},
		{"resume", "-c", primary.Config},
		{"reload", primary.Name, "-c", primary.Config, "--force"},
		{"restart", primary.Name, "-c", primary.Config, "--force"},
	} {
		s := sampleSSN(primary)
		out, stderr, code := runCLI(t, step...)
		if code != 0 {
			s.values()
			t.Fatalf("%s: exit %d: %s %s", step[0], code, out, stderr)
		}
		// Three loop_waits: a dropped setting used to stay dropped.
		time.Sleep(time.Second) // observation window, not synchronisation
		seen := s.values()
		for v := range seen {
			// A restart disconnects the standby: in non-strict mode it is
			// dropped (from Sync first, then from the setting) until it
			// streams again. A reload-type action keeps it throughout.
			if v != want && !(step[0] == "restart" && v == `"raftgres_fence"`) {
				t.Fatalf("after %s the primary ran with synchronous_standby_names %q (want only %q): %v", step[0], v, want, seen)
			}
		}
		t.Logf("%s: samples %v", step[0], seen)
		waitFor(t, 30*time.Second, "the standby synchronous again after "+step[0], func() (bool, error) {
			st, err := c.state()
			if err != nil || st.Sync.Primary != primary.Name || len(st.Sync.Standbys) != 1 || st.Sync.Standbys[0] != standby {
				return false, err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			var ssn string
			err = pgQueryRow(ctx, primary, "SELECT current_setting('synchronous_standby_names')", &ssn)
			return ssn == want, err
		})
	}
	if st, _ := c.state(); st.Leader.Holder != primary.Name {
		t.Fatalf("admin actions moved the leader key to %q", st.Leader.Holder)
	}
}

// TestFrozenPrimaryAgentAcksNothing, on real servers, in
// asynchronous mode and without a watchdog: after SIGSTOP of the primary's
// agent, its PostgreSQL acknowledges no commit sent after the agent's
// lease ended (the commit gate is frozen with the agent), a replica takes
// over, and after SIGCONT the old primary is stopped at once.
func TestFrozenPrimaryAgentAcksNothing(t *testing.T) {
	requireIntegration(t)
	c := newPGCluster(t, 3)
	primary := c.waitPrimary(120*time.Second, c.nodes...)
	c.waitStreaming(primary)
	ctx := ctxT(t, 5*time.Minute)
	if err := pgExec(ctx, primary, "CREATE TABLE frozen (id serial primary key, at timestamptz default now())"); err != nil {
		t.Fatal(err)
	}
	type write struct {
		sent, acked time.Time
		err         error
	}
	var mu sync.Mutex
	var writes []write
	var wg sync.WaitGroup
	wctx, stopWriters := context.WithCancel(ctx)
	// A new connection to the old primary every 50 ms, each with one
	// INSERT that may wait: commits held by the gate must not be lost from
	// view.
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for wctx.Err() == nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cctx, cancel := context.WithTimeout(wctx, 15*time.Second)
				defer cancel()
				conn, err := pgx.Connect(cctx, primary.PGConn())
				if err != nil {
					return
				}
				defer conn.Close(context.Background())
				w := write{sent: time.Now()}
				_, w.err = conn.Exec(cctx, "INSERT INTO frozen DEFAULT VALUES")
				w.acked = time.Now()
				mu.Lock()
				writes = append(writes, w)
				mu.Unlock()
			}()
			select {
			case <-wctx.Done():
			case <-tick.C:
			}
		}
	}()
	waitFor(t, 10*time.Second, "writes acknowledged by "+primary.Name, func() (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		return len(writes) > 5, nil
	})
	stoppedAt := time.Now()
	if err := syscall.Kill(primary.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var next *Node
	waitFor(t, 30*time.Second, "a new primary", func() (bool, error) {
		st, err := c.state()
		if err != nil || st.Leader.Holder == "" || st.Leader.Holder == primary.Name {
			return false, err
		}
		next = c.byName(st.Leader.Holder)
		return true, nil
	})
	// Hold the freeze past the new primary's promotion (1.5-3 ttl in all).
	time.Sleep(3 * time.Second) // the fault's duration, not synchronisation
	if err := syscall.Kill(primary.PID(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the old primary stopped or read-only", func() (bool, error) {
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		var inRecovery bool
		err := pgQueryRow(qctx, primary, "SELECT pg_is_in_recovery()", &inRecovery)
		return err != nil || inRecovery, nil
	})
	stopWriters()
	wg.Wait()
	// The lease ends at most ttl − margin (2 s) after the last renewal,
	// which was sent before the SIGSTOP.
	leaseEnd := stoppedAt.Add(2 * time.Second)
	var late []string
	acked := 0
	for _, w := range writes {
		if w.err != nil {
			continue
		}
		acked++
		if w.sent.After(leaseEnd) {
			late = append(late, fmt.Sprintf("sent %s acked %s", w.sent.Format("15:04:05.000"), w.acked.Format("15:04:05.000")))
		}
	}
	if len(late) > 0 {
		t.Fatalf("%s acknowledged %d commits sent after its lease ended (%s):\n%s", primary.Name, len(late),
			leaseEnd.Format("15:04:05.000"), strings.Join(late, "\n"))
	}
	// Its fencer fires once the agent runs again (a connection refused
	// for "too many clients" above is no proof of that).
	waitFor(t, 10*time.Second, primary.Name+"'s agent logging its lease end", func() (bool, error) {
		return strings.Contains(primary.Log(), "lease ended"), nil
	})
	t.Logf("%s acknowledged %d commits, none sent after its lease end; %s took over", primary.Name, acked, next.Name)
	c.waitPrimary(90*time.Second, c.nodes...)
}

// TestPausedPrimaryCutOffStopsOnResume, on real servers and
// real partitions: the cluster is paused, the primary's network link is
// cut, and an operator resumes on the majority side. The majority elects
// a new primary at once (the old lease is long over); the cut-off primary,
// still seeing pause in its own FSM copy, must have stopped acknowledging
// at its lease's end: at most one writer at any time.
func TestPausedPrimaryCutOffStopsOnResume(t *testing.T) {
	requireIntegration(t)
	lab, c := startNetnsCluster(t, 3, fastDCS)
	primary := c.waitPrimary(120*time.Second, c.nodes...)
	c.waitStreaming(primary)
	ctx := ctxT(t, 5*time.Minute)
	if err := pgExec(ctx, primary, "CREATE TABLE windows (node text, seq int)"); err != nil {
		t.Fatal(err)
	}
	idx, other := labIndex(c, primary)
	setPause := func(pause bool) {
		t.Helper()
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := raftstore.Commit(actx, other.Client(), raftstore.SetPause{Pause: pause, Actor: "itest", At: time.Now().UTC()}); err != nil {
			t.Fatalf("pause %v through %s: %v", pause, other.Name, err)
		}
	}
	setPause(true)
	waitFor(t, 10*time.Second, "pause applied on the primary's host", func() (bool, error) {
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		st, err := primary.Client().Cluster(qctx)
		return err == nil && st.Config.Pause, err
	})
	w := startWriterProbe(c)
	defer w.stop()
	waitFor(t, 10*time.Second, "writes on "+primary.Name, func() (bool, error) {
		_, n := w.lastOn(primary.Name)
		return n > 10, nil
	})
	cutAt := time.Now()
	if err := lab.cut(idx); err != nil {
		t.Fatal(err)
	}
	// Past the old primary's lease (ttl 3s), then resume on the majority.
	time.Sleep(4 * time.Second) // the fault's duration, not synchronisation
	setPause(false)
	w.takeover(t, c, primary, cutAt)
	oldLast, _ := w.lastOn(primary.Name)
	// Its last renewal was sent before the cut, so its lease ended within
	// ttl − margin (2 s) of it; the acknowledgement itself may reach the
	// client a moment after the gate's reply.
	if oldLast.After(cutAt.Add(2*time.Second + 200*time.Millisecond)) {
		t.Fatalf("paused %s acknowledged a write %s after the cut, past its lease", primary.Name, oldLast.Sub(cutAt))
	}
	if err := lab.heal(idx); err != nil {
		t.Fatal(err)
	}
	c.waitPrimary(90*time.Second, c.nodes...)
	w.stop()
	if o := w.overlaps(); len(o) > 0 {
		t.Fatalf("two members accepted writes at once:\n%s", strings.Join(o, "\n"))
	}
}
