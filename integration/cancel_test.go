package integration

// Cancelled commit waits (docs/guarantees.md, "Cancelled commits") on
// real processes: PostgreSQL answers a cancel request that reaches a
// commit waiting in SyncRepWaitForLSN with a WARNING and a success, the
// commit being local only. The commit gate cannot refuse that; only a
// PostgreSQL that is stopped at the lease end can. With the primary's
// agent frozen, the fencer must still stop it on time.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	"raftgres/failover"
	"raftgres/raftstore"
)

// cancelClient's sessions insert into table cancelled on one member
// only, each INSERT with a client-side deadline that sends a cancel request (pgx with
// CancelRequestContextWatcherHandler, as JDBC's setQueryTimeout does). A
// connection is dropped after any write that reached its deadline, so a
// cancel request only ever ends the wait of its own write.
type cancelClient struct {
	n       *Node
	after   time.Duration
	mu      sync.Mutex
	writes  []chaosWrite
	lastTry time.Time // the last attempt, a failed connection included
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

func startCancelClient(t testing.TB, n *Node, sessions int, after time.Duration) *cancelClient {
	ctx, cancel := context.WithCancel(context.Background())
	cl := &cancelClient{n: n, after: after, cancel: cancel}
	for s := 1; s <= sessions; s++ {
		cl.wg.Add(1)
		go cl.run(ctx, s)
	}
	t.Cleanup(cl.stop)
	return cl
}

func (cl *cancelClient) stop() {
	cl.cancel()
	cl.wg.Wait()
}

func (cl *cancelClient) run(ctx context.Context, session int) {
	defer cl.wg.Done()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	var notice string
	var warned bool
	for seq := 1; ctx.Err() == nil; seq++ {
		id := int64(session)*1_000_000_000 + int64(seq)
		cl.mu.Lock()
		cl.lastTry = time.Now()
		cl.mu.Unlock()
		if conn == nil {
			cfg, err := pgx.ParseConfig(cl.n.PGConn())
			if err != nil {
				panic(err)
			}
			cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
				notice = n.Severity + ": " + n.Message
				if isCancelledWaitNotice(n.Severity, n.Message) {
					warned = true
				}
			}
			cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
				return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: 2 * time.Second}
			}
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			conn, err = pgx.ConnectConfig(cctx, cfg)
			cancel()
			if err != nil {
				conn = nil
				select {
				case <-ctx.Done():
				case <-time.After(20 * time.Millisecond): // reconnect rate limit
				}
				continue
			}
		}
		notice, warned = "", false
		w := chaosWrite{Writer: session, Seq: seq, ID: id, Sent: time.Now()}
		w.Deadline = w.Sent.Add(cl.after)
		wctx, cancel := context.WithDeadline(ctx, w.Deadline)
		_, err := conn.Exec(wctx, "INSERT INTO cancelled VALUES ($1)", id)
		w.Done = time.Now()
		expired := wctx.Err() != nil
		cancel()
		w.Notice, w.CancelledWait = notice, warned
		if err == nil {
			w.Outcome, w.Server = writeAcked, cl.n.Name
		} else {
			w.Outcome, w.Err = writeOutcomeOf(err), err.Error()
		}
		if err != nil || expired {
			_ = conn.Close(context.Background())
			conn = nil
		}
		cl.mu.Lock()
		cl.writes = append(cl.writes, w)
		cl.mu.Unlock()
	}
}

func (cl *cancelClient) all() ([]chaosWrite, time.Time) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return slices.Clone(cl.writes), cl.lastTry
}

// TestCancelledCommitWaitsEndAtLease freezes the primary's agent
// (SIGSTOP) while four client sessions insert on that primary, each
// INSERT with a 500 ms cancel, lets a replica take over, keeps the
// sessions going 2 s past the promotion, then resumes the agent. No insert may be acknowledged, with
// or without the cancelled-wait WARNING, after the old primary's lease
// end: the fence must stop PostgreSQL at that end although the agent is
// frozen. Inserts acknowledged with the WARNING before the lease end may
// be lost (PostgreSQL itself allows that); they are counted. In
// synchronous mode no ordinary acknowledgement may be lost either.
func TestCancelledCommitWaitsEndAtLease(t *testing.T) {
	for _, mode := range []struct{ name, dcs string }{{"async", fastDCS}, {"sync", syncDCS}} {
		t.Run(mode.name, func(t *testing.T) { testCancelledCommitWaits(t, mode.dcs, mode.name == "sync") })
	}
}

func testCancelledCommitWaits(t *testing.T, dcs string, syncMode bool) {
	requireIntegration(t)
	const ttl = 3 * time.Second // fastDCS and syncDCS
	c := newPGClusterDCS(t, 3, nil, dcs)
	primary := c.waitPrimary(120*time.Second, c.nodes...)
	c.waitStreaming(primary)
	if syncMode {
		waitFor(t, 60*time.Second, "a synchronous standby recorded", func() (bool, error) {
			st, err := c.state()
			return err == nil && st.Sync.Primary == primary.Name && len(st.Sync.Standbys) == 1, err
		})
	}
	ctx := ctxT(t, 5*time.Minute)
	if err := pgExec(ctx, primary, "CREATE TABLE cancelled (id bigint PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	st, err := c.state()
	if err != nil {
		t.Fatal(err)
	}
	epoch := st.Leader.Epoch

	cl := startCancelClient(t, primary, 4, 500*time.Millisecond)
	waitFor(t, 30*time.Second, "ordinary acknowledgements by "+primary.Name, func() (bool, error) {
		ws, _ := cl.all()
		n := 0
		for _, w := range ws {
			if w.Outcome == writeAcked && !w.CancelledWait {
				n++
			}
		}
		return n >= 10, nil
	})
	stoppedAt := time.Now()
	if err := syscall.Kill(primary.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := true
	resume := func() {
		if frozen {
			frozen = false
			_ = syscall.Kill(primary.PID(), syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	var next *Node
	var seenAt time.Time
	waitFor(t, 60*time.Second, "a replica promoted", func() (bool, error) {
		s, err := c.stateExcept(map[*Node]bool{primary: true})
		if err != nil || s.Leader.Holder == "" || s.Leader.Holder == primary.Name || s.Leader.Epoch <= epoch {
			return false, err
		}
		n := c.byName(s.Leader.Holder)
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		var inRecovery bool
		if err := pgQueryRow(qctx, n, "SELECT pg_is_in_recovery()", &inRecovery); err != nil || inRecovery {
			return false, err
		}
		next, seenAt = n, time.Now()
		return true, nil
	})
	// The sessions keep trying the old primary for 2 s past both the
	// promotion and the latest its lease can end (every renewal was sent
	// before the SIGSTOP; synchronous mode's fast path may promote before
	// the lease end).
	until := later(seenAt, stoppedAt.Add(ttl-failover.Margin(ttl))).Add(2 * time.Second)
	waitFor(t, 30*time.Second, "the client's attempts 2s past the promotion and the lease", func() (bool, error) {
		_, last := cl.all()
		return last.After(until), nil
	})
	cl.stop()
	clientStopped := time.Now()
	resume()
	writes, _ := cl.all()

	// The old primary's lease end, from its agent's log: the latest
	// lease_end of its renewals at the epoch it held (its lease ends
	// ttl − ttl/3 after the send time of its last acknowledged renewal;
	// a renewal acknowledged but not yet logged when SIGSTOP hit is
	// logged after SIGCONT, so the log is read once the agent runs again
	// and has seen the key gone).
	waitFor(t, 30*time.Second, primary.Name+" no longer a writable primary", func() (bool, error) {
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		var inRecovery bool
		err := pgQueryRow(qctx, primary, "SELECT pg_is_in_recovery()", &inRecovery)
		return err != nil || inRecovery, nil
	})
	waitFor(t, 30*time.Second, primary.Name+"'s agent logging its lease end", func() (bool, error) {
		lines, _ := parseLeaseLines(primary.Name, primary.Log())
		return slices.ContainsFunc(lines, func(l leaseLine) bool { return l.Ended && l.Epoch == epoch }), nil
	})
	lines, bad := parseLeaseLines(primary.Name, primary.Log())
	var leaseEnd, endedSays time.Time
	for _, l := range lines {
		switch {
		case l.Epoch != epoch:
		case l.Ended:
			endedSays = l.End
		default:
			leaseEnd = later(leaseEnd, l.End)
		}
	}
	if leaseEnd.IsZero() {
		t.Fatalf("%s logged no renewal at epoch %d (%d unparsable lease lines)", primary.Name, epoch, len(bad))
	}
	// Cross-checks of that figure. Every renewal was sent before the
	// SIGSTOP, so the lease ends within ttl − margin of it; and the
	// election of the new primary (its History time, taken when the
	// coordinator decided) came at least ttl after the last renewal was
	// applied, itself after it was sent, so at least margin after the
	// lease end (the synchronous fast path may elect earlier: then no
	// such bound).
	margin := failover.Margin(ttl)
	if bound := stoppedAt.Add(ttl - margin); leaseEnd.After(bound) {
		t.Errorf("%s's logged lease end %s is after SIGSTOP + ttl − margin = %s", primary.Name, clock(leaseEnd), clock(bound))
	}
	switch {
	case endedSays.After(leaseEnd):
		t.Errorf("%s logged `lease ended` with lease_end %s, after its renewals' latest end %s", primary.Name, clock(endedSays), clock(leaseEnd))
	case endedSays.Before(leaseEnd): // a renewal acknowledged before the SIGSTOP, applied after the SIGCONT
		t.Logf("%s logged `lease ended` with lease_end %s; a renewal logged later ends at %s (used)", primary.Name, clock(endedSays), clock(leaseEnd))
	}
	// What the new primary holds of the old timeline is final (the old
	// primary is rewound onto the new one): read there, before waiting for
	// the whole cluster, which is checked last.
	st, _ = c.stateExcept(map[*Node]bool{primary: true})
	var elected raftstore.Event
	for _, e := range st.History {
		if e.Kind == raftstore.EventLeader && e.Epoch == epoch+1 {
			elected = e
		}
	}
	// (Each agent reads the boot clock anchored at the wall clock of its
	// own start: 20ms of tolerance for the NTP slew between two anchors.)
	if !syncMode && !elected.At.IsZero() && elected.At.Before(leaseEnd.Add(margin-20*time.Millisecond)) {
		t.Errorf("%s elected at %s, less than ttl after %s's last renewal (lease end %s): the logged lease end is wrong, or the election came early",
			elected.Member, clock(elected.At), primary.Name, clock(leaseEnd))
	}
	t.Logf("%s frozen at %s, lease end %s (SIGSTOP +%s), %s elected at %s (lease end + %s; %s), promotion seen at %s, client stopped at %s",
		primary.Name, clock(stoppedAt), clock(leaseEnd), leaseEnd.Sub(stoppedAt).Round(time.Millisecond),
		next.Name, clock(elected.At), elected.At.Sub(leaseEnd).Round(time.Millisecond), elected.Reason, clock(seenAt), clock(clientStopped))

	have := map[int64]bool{}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(rctx, next.PGConn())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(rctx, "SELECT id FROM cancelled")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		have[id] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	// Every acknowledgement against the lease end. The server cannot have
	// acknowledged before the ack's floor: the send time, or for a
	// cancelled wait the cancel request (sent at the deadline).
	var after, afterLost, ordinaryLost []chaosWrite
	var ordinary, cancelledBefore, cancelledBeforeLost, straddling, afterFreeze, failed, indeterminate int
	for _, w := range writes {
		switch w.Outcome {
		case writeFailed:
			failed++
			continue
		case writeIndeterminate:
			indeterminate++
			continue
		}
		lost := !have[w.ID]
		if w.Sent.After(stoppedAt) {
			afterFreeze++
		}
		switch {
		case !w.ackFloor().Before(leaseEnd):
			after = append(after, w)
			if lost {
				afterLost = append(afterLost, w)
			}
		case !w.CancelledWait:
			ordinary++
			if lost {
				ordinaryLost = append(ordinaryLost, w)
			}
		default:
			cancelledBefore++
			if lost {
				cancelledBeforeLost++
			}
			if w.Done.After(leaseEnd) {
				straddling++
			}
		}
	}
	cw := cancelledWaits(writes, have, newLeaseBook(lines)) // the chaos checker's rule, for comparison
	t.Logf("%d attempts: %d acknowledged (%d after the SIGSTOP), %d failed, %d indeterminate; %d ordinary acks before the lease end (%d lost); "+
		"%d acks with the cancelled-wait warning before the lease end (%d lost, allowed; %d of them answered after it); "+
		"%d acks after the lease end (%d of them lost)",
		len(writes), len(writes)-failed-indeterminate, afterFreeze, failed, indeterminate, ordinary, len(ordinaryLost),
		cancelledBefore, cancelledBeforeLost, straddling, len(after), len(afterLost))
	t.Logf("the chaos checker's figures: %d cancelled-wait acks, %d lost, %d after the lease end (%d of them lost), %d answered after it",
		cw.Acks, cw.Lost, cw.After, len(cw.LostAfter), cw.Straddling)
	if len(after) > 0 {
		var ex []string
		for _, w := range after[:min(len(after), 5)] {
			ex = append(ex, fmt.Sprintf("  %s: answered %s past the lease end", w, w.Done.Sub(leaseEnd).Round(time.Millisecond)))
		}
		last := after[0]
		for _, w := range after {
			if w.Done.After(last.Done) {
				last = w
			}
		}
		t.Errorf("%s acknowledged %d inserts after its lease ended at %s (%d with the cancelled-wait warning; the last answered %s past it, "+
			"%d of them lost on %s): PostgreSQL must be stopped at the lease end even while the agent is frozen "+
			"(a fencer inside the agent freezes with it). First ones:\n%s",
			primary.Name, len(after), clock(leaseEnd), countCancelled(after), last.Done.Sub(leaseEnd).Round(time.Millisecond),
			len(afterLost), next.Name, strings.Join(ex, "\n"))
	}
	if syncMode && len(ordinaryLost) > 0 {
		t.Errorf("synchronous mode: %d ordinary acknowledgements lost, e.g. %s", len(ordinaryLost), ordinaryLost[0])
	}
	if cancelledBefore+len(after) == 0 {
		t.Errorf("no insert was acknowledged with the cancelled-wait warning: the test did not reach the path it is about")
	}
	// The old primary comes back as a replica of the new one.
	c.waitPrimary(120*time.Second, c.nodes...)
}

func countCancelled(ws []chaosWrite) int {
	n := 0
	for _, w := range ws {
		if w.CancelledWait {
			n++
		}
	}
	return n
}
