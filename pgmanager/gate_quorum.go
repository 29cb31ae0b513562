package pgmanager

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"golang.org/x/sys/unix"
)

// Quorum commit through the gate (docs/design.md, "Fencing"). PostgreSQL
// cannot nest ANY k (…) inside FIRST n (…), so in quorum mode
// synchronous_standby_names is the gate alone and the gate counts the
// quorum itself: it confirms a position only while the lease is valid AND
// at least q of a given set of standbys have flushed past it, as
// pg_stat_replication reports. The reply position is
//
//	max(replied, min(received, the q-th highest flush_lsn of the named standbys))
//
// where replied is what this connection confirmed before (a reply never
// goes back) and the standbys counted are the named ones streaming, each
// once. A poller on an ordinary SQL connection reads their positions,
// fast while the gate holds WAL it could not confirm, not at all
// otherwise, and wakes the stream loop (an eventfd) when the quorum
// position moves; only the loop writes to the replication connection.

// GateQuorum is what SetGateQuorum set: the gate confirms WAL only once Q
// of Names flushed it (Q = 0: no standby needed).
type GateQuorum struct {
	Q     int
	Names []string
}

// gateQuorum is one SetGateQuorum's setting. It is never modified once
// stored; changed is closed when it is replaced.
type gateQuorum struct {
	q       int
	names   map[string]bool
	changed chan struct{}
}

// newGateQuorum normalises SetGateQuorum's arguments: q below 0 is 0, a
// name is counted once, and the gate's own name never counts.
func newGateQuorum(q int, names []string) *gateQuorum {
	gq := &gateQuorum{q: max(q, 0), names: map[string]bool{}, changed: make(chan struct{})}
	for _, n := range names {
		if n != "" && !IsGateName(n) {
			gq.names[n] = true
		}
	}
	return gq
}

// SetGateQuorum makes the commit gate confirm WAL only once at least q of
// the standbys names have flushed it, besides the lease being valid. The
// names are member names, matched exactly against the application_name
// of the local server's physical walsenders (pg_stat_replication; a
// logical decoding walsender is no standby whatever its name). Only
// walsenders in state 'streaming' count, a name with several walsenders
// counts once at its highest flush_lsn, and the gate's own name never
// counts. q = 0 (the default) requires no standby: the gate alone
// confirms what it receives. While fewer than q of names stream, the gate
// confirms nothing new and commits wait.
//
// Safe to call from any goroutine. Contract: every reply the gate
// computes after SetGateQuorum returns uses the new (q, names). A reply
// computed before may still be sent afterwards, but it confirms no more
// than the local server had flushed when it was computed (a walsender
// sends only flushed WAL), so no more than it had flushed when
// SetGateQuorum returned. Hence, once SetGateQuorum(q ≥ 1, names) has
// returned at T, and until the next call, every position the gate
// confirms beyond the server's WAL flush position at T was reported
// flushed by at least q of names before the reply was computed. A reply
// never goes back on a connection: when the quorum is behind what it
// confirmed before, that position is sent again, which confirms nothing
// new.
//
// Setting what is already set changes nothing (and logs nothing).
func (m *Manager) SetGateQuorum(q int, names []string) {
	gq := newGateQuorum(q, names)
	for {
		old := m.gateQuorum()
		if old.same(gq) {
			return
		}
		if m.gateQ.CompareAndSwap(old, gq) {
			close(old.changed)
			break
		}
	}
	m.logger.Named("gate").Info("commit gate quorum set", "quorum", gq.q, "names", gq.list())
}

// GateQuorum returns the setting SetGateQuorum made last (names sorted).
func (m *Manager) GateQuorum() GateQuorum {
	gq := m.gateQuorum()
	return GateQuorum{Q: gq.q, Names: gq.list()}
}

// gateQuorum returns the current setting (q = 0 before any SetGateQuorum).
func (m *Manager) gateQuorum() *gateQuorum {
	if gq := m.gateQ.Load(); gq != nil {
		return gq
	}
	m.gateQ.CompareAndSwap(nil, newGateQuorum(0, nil))
	return m.gateQ.Load()
}

// same reports whether gq and o ask for the same quorum.
func (gq *gateQuorum) same(o *gateQuorum) bool {
	return gq.q == o.q && maps.Equal(gq.names, o.names)
}

// list is the names, sorted.
func (gq *gateQuorum) list() []string {
	out := make([]string, 0, len(gq.names))
	for n := range gq.names {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// walSender is one row of pg_stat_replication as the quorum counts it.
type walSender struct {
	name  string
	state string
	flush pglogrepl.LSN
}

// position is the q-th highest flush position among the named standbys
// streaming in senders (each name once, at its highest), and how many of
// them stream. It is 0 when q is 0 or fewer than q of them stream.
func (gq *gateQuorum) position(senders []walSender) (pglogrepl.LSN, int) {
	best := make(map[string]pglogrepl.LSN, len(gq.names))
	for _, s := range senders {
		if s.state != "streaming" || !gq.names[s.name] || IsGateName(s.name) {
			continue
		}
		if f, ok := best[s.name]; !ok || s.flush > f {
			best[s.name] = s.flush
		}
	}
	if gq.q == 0 || len(best) < gq.q {
		return 0, len(best)
	}
	flushes := make([]pglogrepl.LSN, 0, len(best))
	for _, f := range best {
		flushes = append(flushes, f)
	}
	slices.SortFunc(flushes, func(a, b pglogrepl.LSN) int { return cmp.Compare(b, a) })
	return flushes[gq.q-1], len(best)
}

// replyPosition is the position the gate confirms: with q = 0 all it
// received; otherwise no further than the quorum position; never less
// than what it confirmed before on this connection.
func (gq *gateQuorum) replyPosition(received, replied pglogrepl.LSN, senders []walSender) pglogrepl.LSN {
	pos := received
	if gq.q > 0 {
		qp, _ := gq.position(senders)
		pos = min(pos, qp)
	}
	return max(pos, replied)
}

const (
	// gateQuorumPoll is the poller's interval while the gate holds WAL
	// it could not confirm (measured in TestGateQuorumCost).
	gateQuorumPoll = time.Millisecond
	// gateQuorumSlowPoll is its interval while fewer than q of the named
	// standbys stream: commits wait for one to come back, and ten
	// milliseconds more then cost less than a thousand queries a second.
	gateQuorumSlowPoll = 10 * time.Millisecond
	// gateQuorumRetry is the pause after a failed connection or query.
	gateQuorumRetry = 100 * time.Millisecond
)

// walSendersSQL lists the physical walsenders (a logical decoding
// walsender, connected to a database, is not a standby however it is
// named) with their flush positions.
const walSendersSQL = `SELECT coalesce(a.application_name, ''), w.state, coalesce(w.flush_lsn, '0/0')::text
	FROM pg_stat_get_wal_senders() w JOIN pg_stat_get_activity(NULL) a ON a.pid = w.pid
	WHERE a.datid IS NULL`

// quorumWatch is the quorum side of one gate session, shared by the
// stream loop and the poller.
type quorumWatch struct {
	m      *Manager
	logger hclog.Logger
	src    walSenderSource
	// wake is an eventfd the poller signals when the quorum position may
	// have moved; the stream loop waits on it with the socket.
	wake int
	// senders is the last poll's result (nil before the first).
	senders atomic.Pointer[[]walSender]
	// need is the end of the WAL the loop received and could not confirm
	// (0: none); needed says it rose.
	need   atomic.Uint64
	needed chan struct{}
	// state is the last logged state of the poller.
	state string
}

func newQuorumWatch(m *Manager, logger hclog.Logger) (*quorumWatch, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("quorum wake eventfd: %w", err)
	}
	return &quorumWatch{m: m, logger: logger, src: &sqlWalSenders{m: m}, wake: fd, needed: make(chan struct{}, 1)}, nil
}

// close releases the eventfd (after the poller has returned).
func (w *quorumWatch) close() { _ = unix.Close(w.wake) }

// walSenderSource lists the local server's walsenders; only the poller
// calls it.
type walSenderSource interface {
	list(ctx context.Context) ([]walSender, error)
	close()
}

// want tells the poller the loop holds WAL up to need it could not
// confirm (0: nothing). Only the stream loop calls it.
func (w *quorumWatch) want(need pglogrepl.LSN) {
	if pglogrepl.LSN(w.need.Load()) == need {
		return
	}
	w.need.Store(uint64(need))
	if need != 0 {
		select {
		case w.needed <- struct{}{}:
		default:
		}
	}
}

// signal wakes the stream loop.
func (w *quorumWatch) signal() {
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], 1)
	_, _ = unix.Write(w.wake, b[:]) // EAGAIN only if the counter is full: it is set anyway
}

// interval is the pause between polls while the quorum is reachable.
func (w *quorumWatch) interval() time.Duration {
	if w.m.gateQPoll != 0 {
		return max(w.m.gateQPoll, 0)
	}
	return gateQuorumPoll
}

// walSenders is the last poll's result (nil before the first).
func (w *quorumWatch) walSenders() []walSender {
	if p := w.senders.Load(); p != nil {
		return *p
	}
	return nil
}

// run polls pg_stat_replication while the loop holds WAL the quorum has
// not reached, and signals the loop each time the quorum position moves
// or the setting changes. It returns when ctx ends.
func (w *quorumWatch) run(ctx context.Context) {
	defer w.src.close()
	gq := w.m.gateQuorum()
	// prev is the quorum position of the previous poll. The loop is
	// woken whenever a poll's is higher: a loop that computed its reply
	// from an older poll, and so waits, sees the rise (it drains the
	// eventfd before it reads w.senders).
	var prev pglogrepl.LSN
	tick := time.NewTimer(time.Hour)
	tick.Stop()
	defer tick.Stop()
	for {
		var wait <-chan time.Time
		if need := pglogrepl.LSN(w.need.Load()); gq.q > 0 && need != 0 {
			if qp, _ := gq.position(w.walSenders()); qp < need {
				senders, err := w.src.list(ctx)
				switch {
				case ctx.Err() != nil:
					return
				case err != nil:
					w.down(err)
					tick.Reset(gateQuorumRetry)
				default:
					w.senders.Store(&senders)
					qp, streaming := gq.position(senders)
					w.note(gq, streaming)
					if qp > prev {
						w.signal()
					}
					prev = qp
					if streaming < gq.q {
						tick.Reset(gateQuorumSlowPoll)
					} else {
						tick.Reset(w.interval())
					}
				}
				wait = tick.C
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-gq.changed:
			gq = w.m.gateQuorum()
			prev = 0
			w.state = "" // the next poll logs its state under the new setting
			w.signal()   // the loop recomputes with the new setting
		case <-w.needed:
		case <-wait:
		}
	}
}

// sqlWalSenders lists walsenders on a superuser connection to the local
// server, made at the first call and again after an error.
type sqlWalSenders struct {
	m    *Manager
	conn *pgx.Conn
}

func (s *sqlWalSenders) list(ctx context.Context) ([]walSender, error) {
	if s.conn == nil {
		c, err := s.m.pollerConnect(ctx)
		if err != nil {
			return nil, err
		}
		s.conn = c
	}
	qctx, cancel := context.WithTimeout(ctx, gateSetup)
	defer cancel()
	senders, err := listWalSenders(qctx, s.conn)
	if err != nil {
		s.close()
	}
	return senders, err
}

func (s *sqlWalSenders) close() {
	if s.conn != nil {
		_ = s.conn.Close(context.Background())
		s.conn = nil
	}
}

// pollerConnect is connect for the poller, whose blocked query the end
// of ctx (its gate session's) interrupts at once, even on a server that
// does not answer: it is closed then anyway.
func (m *Manager) pollerConnect(ctx context.Context) (*pgx.Conn, error) {
	cc, err := pgx.ParseConfig("")
	if err != nil {
		return nil, err
	}
	m.socketConfig(&cc.Config)
	cc.Database = "postgres"
	cc.RuntimeParams["application_name"] = "raftgres"
	cc.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: pc.Conn()}
	}
	sctx, cancel := context.WithTimeout(ctx, gateSetup)
	defer cancel()
	var conn *pgx.Conn
	err = m.tryLocalPasswords(func(pw string) { cc.Password = pw }, func() error {
		var err error
		conn, err = pgx.ConnectConfig(sctx, cc)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("connect to postgres of %s: %w", m.member, err)
	}
	return conn, nil
}

func listWalSenders(ctx context.Context, conn *pgx.Conn) ([]walSender, error) {
	rows, err := conn.Query(ctx, walSendersSQL)
	if err != nil {
		return nil, fmt.Errorf("list walsenders: %w", err)
	}
	defer rows.Close()
	var out []walSender
	for rows.Next() {
		var s walSender
		var flush string
		if err := rows.Scan(&s.name, &s.state, &flush); err != nil {
			return nil, fmt.Errorf("list walsenders: %w", err)
		}
		f, err := ParseLSN(flush)
		if err != nil {
			return nil, fmt.Errorf("list walsenders: %w", err)
		}
		s.flush = pglogrepl.LSN(f)
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list walsenders: %w", err)
	}
	return out, nil
}

// down logs a poller failure, once until a poll succeeds.
func (w *quorumWatch) down(err error) {
	if w.state == "failing" {
		return
	}
	w.state = "failing"
	w.logger.Warn("cannot read the standbys' positions: commits wait", "error", err)
}

// note logs, once per change, whether enough named standbys stream.
func (w *quorumWatch) note(gq *gateQuorum, streaming int) {
	state := "quorum reachable"
	if streaming < gq.q {
		state = "quorum unreachable"
	}
	if w.state == state {
		return
	}
	w.state = state
	if streaming < gq.q {
		w.logger.Warn("commits wait: too few named standbys stream", "quorum", gq.q, "streaming", streaming, "names", gq.list())
		return
	}
	w.logger.Info("quorum reachable", "quorum", gq.q, "streaming", streaming)
}
