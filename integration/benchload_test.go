package integration

// The failover benchmark's load and its measuring client:
// pgbench in a restart loop, and ackWriter, which writes one sequenced row
// every ackPace and records every acknowledgement. Both reach the cluster
// through one multi-host libpq conninfo with target_session_attrs=
// read-write, as an application would.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

const (
	// ackPace is the measuring client's interval between two writes.
	ackPace = 20 * time.Millisecond
	// ackWriteTimeout bounds one write: a primary cut off in synchronous
	// mode holds a commit until it fences itself.
	ackWriteTimeout = time.Second
	// pgbenchClients and pgbenchSegment shape the background load: one
	// pgbench run lasts at most pgbenchSegment.
	pgbenchClients = 4
	pgbenchSegment = 30 * time.Second
)

// multiHostConninfo is a libpq keyword/value conninfo naming every
// member's PostgreSQL (the addresses the test reaches them by) that only
// accepts a read-write server. pgbench (libpq) and pgx both take it.
func multiHostConninfo(c *cluster) string {
	var hosts, ports []string
	for _, n := range c.nodes {
		hosts = append(hosts, n.probeHost())
		ports = append(ports, strconv.Itoa(n.PGPort))
	}
	return fmt.Sprintf("host=%s port=%s user=postgres dbname=postgres sslmode=disable connect_timeout=1 target_session_attrs=read-write",
		strings.Join(hosts, ","), strings.Join(ports, ","))
}

// writeOutcomeOf classifies a failed write: refused before anything was
// sent, or by a read-only server, it was not written; any other error
// leaves it indeterminate (the INSERT may have committed without its
// acknowledgement reaching the client).
func writeOutcomeOf(err error) writeOutcome {
	var pgErr *pgconn.PgError
	if pgconn.SafeToRetry(err) || errors.As(err, &pgErr) && pgErr.Code == "25006" {
		return writeFailed
	}
	return writeIndeterminate
}

// ackWriter is the measuring client. Every attempt takes a new id: a
// write whose outcome is unknown is never retried under the same id (it
// may already be committed, and a retry would meet a duplicate key
// forever) and never counted as acknowledged.
type ackWriter struct {
	name     string
	id       int    // chaosWrite.Writer; ids are id·10¹² + seq
	conninfo string // with the password
	byAddr   map[string]string
	mu       sync.Mutex
	writes   []chaosWrite // every attempt, in order
	checked  int          // writes[:checked] were checked for loss
	cancel   context.CancelFunc
	done     chan struct{}
}

const benchAcksTable = "CREATE TABLE IF NOT EXISTS bench_acks (id bigint PRIMARY KEY)"

// startAckWriter starts writing into bench_acks (which must exist)
// through conninfo; it stops in cleanup.
func startAckWriter(tb testing.TB, c *cluster, name string, id int, conninfo string) *ackWriter {
	ctx, cancel := context.WithCancel(context.Background())
	w := &ackWriter{name: name, id: id, conninfo: conninfo + " password=" + superPassword,
		byAddr: map[string]string{}, cancel: cancel, done: make(chan struct{})}
	for _, n := range c.nodes {
		w.byAddr[fmt.Sprintf("%s:%d", n.probeHost(), n.PGPort)] = n.Name
	}
	go w.run(ctx)
	tb.Cleanup(w.stop)
	return w
}

func (w *ackWriter) stop() { w.cancel(); <-w.done }

func (w *ackWriter) run(ctx context.Context) {
	defer close(w.done)
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	for seq := 0; ctx.Err() == nil; {
		start := time.Now()
		if conn == nil {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			c, err := pgx.Connect(cctx, w.conninfo)
			cancel()
			if err == nil {
				conn = c
			}
		}
		if conn != nil {
			seq++
			wr := chaosWrite{Writer: w.id, Seq: seq, ID: int64(w.id)*1_000_000_000_000 + int64(seq)}
			var addr string
			var port int
			wctx, cancel := context.WithTimeout(ctx, ackWriteTimeout)
			wr.Sent = time.Now()
			err := conn.QueryRow(wctx, "INSERT INTO bench_acks VALUES ($1) RETURNING host(inet_server_addr()), inet_server_port()",
				wr.ID).Scan(&addr, &port)
			wr.Done = time.Now()
			cancel()
			if err == nil {
				wr.Outcome, wr.Server = writeAcked, w.byAddr[fmt.Sprintf("%s:%d", addr, port)]
				if wr.Server == "" {
					wr.Server = fmt.Sprintf("unknown server %s:%d", addr, port)
				}
			} else {
				wr.Outcome, wr.Err = writeOutcomeOf(err), err.Error()
				_ = conn.Close(context.Background())
				conn = nil
			}
			w.mu.Lock()
			w.writes = append(w.writes, wr)
			w.mu.Unlock()
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Until(start.Add(ackPace))): // the pace: one write per ackPace
		}
	}
}

// firstAck is the first acknowledged write sent after since by a member
// other than not ("" = any member).
func (w *ackWriter) firstAck(since time.Time, not string) (chaosWrite, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	// One writer sends one write at a time: writes are in order of Sent.
	i := sort.Search(len(w.writes), func(i int) bool { return w.writes[i].Sent.After(since) })
	for _, x := range w.writes[i:] {
		if x.Outcome == writeAcked && x.Server != not {
			return x, true
		}
	}
	return chaosWrite{}, false
}

// waitTakeover waits until a member other than old acknowledges a write
// sent after at, and returns that write; it fails the benchmark after
// timeout (a fault never recovered from).
func (w *ackWriter) waitTakeover(tb testing.TB, old string, at time.Time, timeout time.Duration) chaosWrite {
	tb.Helper()
	var first chaosWrite
	waitFor(tb, timeout, fmt.Sprintf("a write through %s acknowledged by a member other than %s", w.name, old), func() (bool, error) {
		var ok bool
		first, ok = w.firstAck(at, old)
		return ok, nil
	})
	return first
}

// waitAcksOn waits until member acknowledged n writes sent from now on.
func (w *ackWriter) waitAcksOn(tb testing.TB, member string, n int) {
	tb.Helper()
	since := time.Now()
	waitFor(tb, 60*time.Second, fmt.Sprintf("%d writes through %s acknowledged by %s", n, w.name, member), func() (bool, error) {
		w.mu.Lock()
		defer w.mu.Unlock()
		k := 0
		for i := len(w.writes) - 1; i >= 0 && w.writes[i].Sent.After(since); i-- {
			if w.writes[i].Outcome == writeAcked && w.writes[i].Server == member {
				k++
			}
		}
		return k >= n, nil
	})
}

// gap is the longest time between two consecutive acknowledgements from
// the last one before from through the first one at or after to.
func (w *ackWriter) gap(from, to time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var acks []time.Time
	for _, x := range w.writes {
		if x.Outcome != writeAcked {
			continue
		}
		if !x.Done.After(from) {
			acks = append(acks[:0], x.Done) // the last before from
			continue
		}
		acks = append(acks, x.Done)
		if !x.Done.Before(to) {
			break
		}
	}
	var gap time.Duration
	for i := 1; i < len(acks); i++ {
		gap = max(gap, acks[i].Sub(acks[i-1]))
	}
	return gap
}

// ackedBy returns writes member acknowledged that were sent after t.
func (w *ackWriter) ackedBy(member string, t time.Time) []chaosWrite {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []chaosWrite
	for _, x := range w.writes {
		if x.Outcome == writeAcked && x.Server == member && x.Sent.After(t) {
			out = append(out, x)
		}
	}
	return out
}

// lostOn returns the writes acknowledged since the previous call that n
// does not have, and how many were checked.
func (w *ackWriter) lostOn(n *Node) (lost []chaosWrite, checked int, err error) {
	w.mu.Lock()
	todo := append([]chaosWrite(nil), w.writes[w.checked:]...)
	upto := len(w.writes)
	w.mu.Unlock()
	var lo, hi int64 = -1, -1
	for _, x := range todo {
		if x.Outcome == writeAcked {
			if lo < 0 {
				lo = x.ID
			}
			hi, checked = x.ID, checked+1
		}
	}
	if checked > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, n.PGConn())
		if err != nil {
			return nil, 0, err
		}
		defer conn.Close(context.Background())
		rows, err := conn.Query(ctx, "SELECT id FROM bench_acks WHERE id BETWEEN $1 AND $2", lo, hi)
		if err != nil {
			return nil, 0, err
		}
		have := map[int64]bool{}
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				return nil, 0, err
			}
			have[id] = true
		}
		if err := rows.Err(); err != nil {
			return nil, 0, err
		}
		lost = missingAcked(todo, have)
	}
	w.mu.Lock()
	w.checked = upto
	w.mu.Unlock()
	return lost, checked, nil
}

// latencies returns the time each acknowledged write took, sorted, in ms.
func (w *ackWriter) latencies() []float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []float64
	for _, x := range w.writes {
		if x.Outcome == writeAcked {
			out = append(out, float64(x.Done.Sub(x.Sent).Microseconds())/1000)
		}
	}
	sort.Float64s(out)
	return out
}

// counts returns how many writes were acknowledged and how many ended
// indeterminate.
func (w *ackWriter) counts() (acked, indeterminate int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, x := range w.writes {
		switch x.Outcome {
		case writeAcked:
			acked++
		case writeIndeterminate:
			indeterminate++
		}
	}
	return acked, indeterminate
}

// pgbenchLoad keeps pgbench (tpcb-like, pgbenchClients clients) writing
// through a multi-host conninfo: a pgbench client aborts when its server
// goes away, so each run is restarted (at most every 200ms) until stop.
type pgbenchLoad struct {
	bin       string
	args, env []string
	mu        sync.Mutex
	cmd       *exec.Cmd // the running pgbench, or nil
	startedAt time.Time
	stopping  bool
	runs      []pgbenchRun
	stopC     chan struct{}
	done      chan struct{}
	once      sync.Once
}

// pgbenchRun is one pgbench process: how long it ran and the transactions
// it reported.
type pgbenchRun struct {
	Elapsed time.Duration
	Xacts   int
	Aborted bool
	Err     string
}

// initPgbench runs pgbench -i at the given scale once: its tables for the
// load.
func initPgbench(tb testing.TB, conninfo string, scale int) (string, error) {
	tb.Helper()
	env := append(os.Environ(), "PGPASSWORD="+superPassword)
	return runCmd(tb, 5*time.Minute, env, pgBinary(tb, "pgbench"), "-i", "-q", "-s", strconv.Itoa(scale), conninfo)
}

// startPgbenchLoad starts the restart loop (pgbench's tables must exist);
// rate, when positive, is pgbench -R (transactions per second in all).
// stop (also run in cleanup) ends the running pgbench by its PID.
func startPgbenchLoad(tb testing.TB, conninfo string, rate int) *pgbenchLoad {
	tb.Helper()
	bin := pgBinary(tb, "pgbench")
	env := append(os.Environ(), "PGPASSWORD="+superPassword)
	args := []string{"-n", "-b", "tpcb-like", "-c", strconv.Itoa(pgbenchClients), "-j", "2",
		"-T", strconv.Itoa(int(pgbenchSegment.Seconds()))}
	if rate > 0 {
		args = append(args, "-R", strconv.Itoa(rate))
	}
	l := &pgbenchLoad{bin: bin, args: append(args, conninfo), env: env, stopC: make(chan struct{}), done: make(chan struct{})}
	go l.loop()
	tb.Cleanup(l.stop)
	return l
}

var pgbenchXacts = regexp.MustCompile(`(?m)^number of transactions actually processed: ([0-9]+)`)

func (l *pgbenchLoad) loop() {
	defer close(l.done)
	for {
		l.mu.Lock()
		if l.stopping {
			l.mu.Unlock()
			return
		}
		cmd := exec.Command(l.bin, l.args...)
		cmd.Env = l.env
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		err := cmd.Start()
		if err == nil {
			l.cmd, l.startedAt = cmd, start
		}
		l.mu.Unlock()
		if err == nil {
			err = cmd.Wait()
		}
		r := pgbenchRun{Elapsed: time.Since(start), Aborted: err != nil}
		if err != nil {
			r.Err = err.Error()
		}
		if m := pgbenchXacts.FindStringSubmatch(out.String()); m != nil {
			r.Xacts, _ = strconv.Atoi(m[1])
		}
		l.mu.Lock()
		l.cmd = nil
		l.runs = append(l.runs, r)
		l.mu.Unlock()
		if r.Elapsed < time.Second {
			select {
			case <-l.stopC:
				return
			case <-time.After(200 * time.Millisecond): // restart rate limit
			}
		}
	}
}

// stop ends the running pgbench by its PID and the loop.
func (l *pgbenchLoad) stop() {
	l.once.Do(func() {
		l.mu.Lock()
		l.stopping = true
		if l.cmd != nil {
			_ = l.cmd.Process.Signal(syscall.SIGTERM)
		}
		l.mu.Unlock()
		close(l.stopC)
		<-l.done
	})
}

// waitRunning waits until one pgbench run has been going for d.
func (l *pgbenchLoad) waitRunning(tb testing.TB, d time.Duration) {
	tb.Helper()
	waitFor(tb, 60*time.Second, fmt.Sprintf("pgbench running for %s", d), func() (bool, error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.cmd != nil && time.Since(l.startedAt) >= d, nil
	})
}

// tps is the transaction rate of each run that lasted at least 5 s, and
// how many runs there were.
func (l *pgbenchLoad) tps() (rates []float64, runs int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.runs {
		if r.Elapsed >= 5*time.Second {
			rates = append(rates, float64(r.Xacts)/r.Elapsed.Seconds())
		}
	}
	return rates, len(l.runs)
}

// scrapeMetric reads one unlabelled-by-us gauge from n's /metrics.
func scrapeMetric(n *Node, name string) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.APIURL()+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			f := strings.Fields(line)
			return strconv.ParseFloat(f[len(f)-1], 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s in /metrics", n.Name, name)
}
