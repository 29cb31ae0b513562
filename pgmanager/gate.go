package pgmanager

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgproto3"
	"golang.org/x/sys/unix"

	"raftgres/internal/boottime"
)

// The commit gate (docs/design.md, "Commit gate"): the agent is itself a
// synchronous "standby" of its own PostgreSQL, a physical replication
// client named GateName on the local socket, listed in the primary's
// synchronous_standby_names. It acknowledges WAL only while the lease is
// valid, checked on the lease clock (internal/boottime) right before each
// reply, so a frozen, wedged or partitioned agent cannot let its
// PostgreSQL acknowledge a commit after the lease end.

// GateName is the application_name of the commit gate's replication client.
const GateName = "raftgres_fence"

// IsGateName reports whether PostgreSQL would take name, as an
// application_name or in synchronous_standby_names, for GateName: it
// compares standby names case-insensitively (pg_strcasecmp, ASCII
// letters). strings.EqualFold folds a few more (Unicode) letters, which
// only refuses or terminates a little more than needed.
func IsGateName(name string) bool { return strings.EqualFold(name, GateName) }

// GateMargin is how long before the lease end the gate stops replying:
// a reply sent at the last moment may be read by a walsender that stalls
// (CPU starvation, a stopped postmaster) and then releases commits after a
// new holder is elected. It must equal raftstore.FenceBudget/2 (pgmanager
// may not import raftstore; cmd/raftgres's tests check the two agree).
const GateMargin = 250 * time.Millisecond

const (
	// gateRetry is the pause between connection attempts while there is
	// no lease, no running primary, or a failed attempt.
	gateRetry = 50 * time.Millisecond
	// gateWake bounds a blocking read: the gate then rechecks the lease
	// and, if it holds, sends an unsolicited status (ctx's end interrupts
	// a read at once).
	gateWake = time.Second
	// gateFirstWake is the first read bound on a new connection; it
	// doubles up to gateWake. A walsender ignores acknowledgements until
	// it has switched from catchup to streaming, which it does just after
	// it starts and without telling the client: the commits that waited
	// while the gate was away are released by one of these early statuses
	// (measured: 1 ms after the start suffices on an idle server).
	gateFirstWake = 10 * time.Millisecond
	// gateSetup bounds connecting, IDENTIFY_SYSTEM and START_REPLICATION.
	gateSetup = 5 * time.Second
)

// GateConnected reports whether the commit gate is streaming from the
// local server (and so may acknowledge commits while the lease holds).
func (m *Manager) GateConnected() bool { return m.gateUp.Load() }

// RunGate runs the commit gate until ctx ends (returns nil then). Whenever
// boottime.Now() is before leaseEnd() − GateMargin (leaseEnd is a time on
// the boot clock, internal/boottime) and the local postmaster runs and is not
// in recovery, it keeps one physical replication connection to it and
// acknowledges the WAL it receives (write = flush = apply = end of WAL
// received, starting from the server's WAL end when it connected) once
// the XLogData messages already received reach the end of what the
// walsender is sending, on keepalives that ask for a reply, and when a
// read times out (see gateWake, gateFirstWake). Before its first reply on
// a connection it terminates every other walsender that PostgreSQL would
// take for it (evictNamesakes). It checks the lease immediately before
// each reply, on the boot clock and GateMargin before the lease end; once
// the lease has ended it never replies on that connection again and
// closes it, and it connects again only when leaseEnd() is in the future
// again. leaseEnd must be safe to call from this goroutine at any time.
//
// leaseChanged, when not nil, returns a channel closed at the lease's next
// change: without a valid lease the gate then sleeps until one comes
// instead of polling (a member that holds no lease wakes for nothing).
func (m *Manager) RunGate(ctx context.Context, leaseEnd func() time.Time, leaseChanged func() <-chan struct{}) error {
	g := &gate{m: m, leaseEnd: leaseEnd, logger: m.logger.Named("gate")}
	defer m.gateUp.Store(false)
	tick := time.NewTicker(gateRetry)
	defer tick.Stop()
	for {
		if ctx.Err() != nil {
			return nil
		}
		g.session(ctx)
		var changed <-chan struct{}
		if leaseChanged != nil {
			changed = leaseChanged() // before the check: no change is missed
		}
		if changed != nil && !g.leaseValid() {
			select {
			case <-ctx.Done():
				return nil
			case <-changed:
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// gate is one RunGate's state; only its goroutine touches it.
type gate struct {
	m        *Manager
	leaseEnd func() time.Time
	logger   hclog.Logger
	// state is the last logged state ("connected" or why not), so each
	// change is logged once.
	state string
}

// gateDown says why the gate is not connected: a stable kind for the
// once-per-change log, and the detail.
type gateDown struct {
	kind string
	err  error
}

// until is the last instant (exclusive, on the boot clock) at which the
// gate may reply: GateMargin before the lease end.
func (g *gate) until() time.Time { return g.leaseEnd().Add(-GateMargin) }

func (g *gate) leaseValid() bool { return boottime.Now().Before(g.until()) }

// session makes one connection attempt and, when it streams, serves it
// until it ends; it logs state changes.
func (g *gate) session(ctx context.Context) {
	if !g.leaseValid() {
		g.down(gateDown{kind: "no valid lease"})
		return
	}
	if !g.m.Running() {
		g.down(gateDown{kind: "postgres not running"})
		return
	}
	conn, start, why := g.open(ctx)
	if conn == nil {
		if ctx.Err() == nil { // a stopping gate has nothing to report
			g.down(why)
		}
		return
	}
	c, err := takeOver(conn)
	if err != nil {
		g.down(gateDown{kind: "connection lost", err: err})
		return
	}
	qw, err := newQuorumWatch(g.m, g.logger.Named("quorum"))
	if err != nil {
		c.close()
		g.down(gateDown{kind: "quorum setup failed", err: err})
		return
	}
	c.wake = qw.wake
	// The poller lives as long as this connection.
	qctx, qcancel := context.WithCancel(ctx)
	qdone := make(chan struct{})
	go func() { defer close(qdone); qw.run(qctx) }()
	stop := context.AfterFunc(ctx, c.shutdown) // a blocked read returns
	g.m.gateUp.Store(true)
	g.state = "connected"
	g.logger.Info("commit gate connected", "lsn", start.String())
	why = g.stream(ctx, c, start, qw)
	g.m.gateUp.Store(false)
	stop()
	c.close()
	qcancel()
	<-qdone
	qw.close()
	g.down(why)
}

// closeConn closes a replication connection without waiting long for a
// server that does not answer.
func closeConn(conn *pgconn.PgConn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// down logs why the gate is not (or no longer) connected, once per kind.
func (g *gate) down(why gateDown) {
	if why.kind == g.state {
		return
	}
	msg := "commit gate not connected"
	if g.state == "connected" {
		msg = "commit gate disconnected"
	}
	g.state = why.kind
	if why.err != nil {
		g.logger.Info(msg, "reason", why.kind, "error", why.err)
	} else {
		g.logger.Info(msg, "reason", why.kind)
	}
}

// gateConfig is the replication connection's configuration: the local
// socket as the superuser, application_name GateName, physical
// replication mode.
func (m *Manager) gateConfig() (*pgconn.Config, error) {
	cc, err := pgconn.ParseConfig("")
	if err != nil {
		return nil, fmt.Errorf("commit gate config: %w", err)
	}
	m.socketConfig(cc)
	cc.Database = ""
	cc.RuntimeParams = map[string]string{"application_name": GateName, "replication": "true"}
	// An expired read context only sets a deadline on the socket; pgconn
	// keeps the connection after a timed-out read (it closes it on any
	// other read error), so an idle gate keeps its one walsender. Said
	// here rather than left to the default.
	cc.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: pc.Conn()}
	}
	return cc, nil
}

// open connects, checks the server is a primary, and starts streaming at
// its current WAL end.
func (g *gate) open(ctx context.Context) (*pgconn.PgConn, pglogrepl.LSN, gateDown) {
	cc, err := g.m.gateConfig()
	if err != nil {
		return nil, 0, gateDown{kind: "config", err: err}
	}
	sctx, cancel := context.WithTimeout(ctx, gateSetup)
	defer cancel()
	var conn *pgconn.PgConn
	err = g.m.tryLocalPasswords(func(pw string) { cc.Password = pw }, func() error {
		var err error
		conn, err = pgconn.ConnectConfig(sctx, cc)
		return err
	})
	if err != nil {
		return nil, 0, gateDown{kind: "connect failed", err: err}
	}
	fail := func(why gateDown) (*pgconn.PgConn, pglogrepl.LSN, gateDown) {
		closeConn(conn)
		return nil, 0, why
	}
	switch hs := conn.ParameterStatus("in_hot_standby"); hs {
	case "off":
	case "on":
		return fail(gateDown{kind: "postgres in recovery"})
	default:
		return fail(gateDown{kind: "in_hot_standby not reported", err: fmt.Errorf("in_hot_standby=%q: PostgreSQL 14 or later needed", hs)})
	}
	sys, err := pglogrepl.IdentifySystem(sctx, conn)
	if err != nil {
		return fail(gateDown{kind: "identify system failed", err: err})
	}
	// Nothing left in pgconn's background reader: the stream is taken
	// over from pgconn later (takeOver).
	if err := conn.SyncConn(sctx); err != nil {
		return fail(gateDown{kind: "identify system failed", err: err})
	}
	if err := startPhysical(sctx, conn, sys.XLogPos, sys.Timeline); err != nil {
		return fail(gateDown{kind: "start replication failed", err: err})
	}
	// Before its first reply: no other walsender may pass for the gate.
	if err := g.evictNamesakes(sctx, conn.PID()); err != nil {
		return fail(gateDown{kind: "another walsender has the gate's name", err: err})
	}
	return conn, sys.XLogPos, gateDown{}
}

// gateEvictPoll is the interval at which evictNamesakes looks again for
// walsenders it has terminated.
const gateEvictPoll = 10 * time.Millisecond

// evictNamesakes terminates every walsender but the gate's own (backend
// pid self) whose application_name PostgreSQL takes for GateName, and
// waits until none is left (until ctx ends: an error then). PostgreSQL
// matches standby names case-insensitively and fills FIRST n from the
// lowest priority, so such a walsender (the gate's previous connection,
// not yet gone, or a client named RAFTGRES_FENCE) counts as the gate: if
// it replies, commits are acknowledged without this gate and its lease.
func (g *gate) evictNamesakes(ctx context.Context, self uint32) error {
	conn, err := g.m.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	tick := time.NewTicker(gateEvictPoll)
	defer tick.Stop()
	terminated := map[int32]bool{}
	for {
		rows, err := conn.Query(ctx, "SELECT pid, coalesce(application_name, '') FROM pg_stat_activity WHERE backend_type = 'walsender' AND pid <> $1", int64(self))
		if err != nil {
			return fmt.Errorf("list walsenders: %w", err)
		}
		var left []int32
		var names []string
		for rows.Next() {
			var pid int32
			var name string
			if err := rows.Scan(&pid, &name); err != nil {
				rows.Close()
				return fmt.Errorf("list walsenders: %w", err)
			}
			if IsGateName(name) {
				left, names = append(left, pid), append(names, name)
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("list walsenders: %w", err)
		}
		if len(left) == 0 {
			return nil
		}
		for i, pid := range left {
			if terminated[pid] {
				continue
			}
			g.logger.Warn("terminating another walsender with the commit gate's name", "pid", pid, "application_name", names[i])
			if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
				return fmt.Errorf("terminate walsender %d (%q): %w", pid, names[i], err)
			}
			terminated[pid] = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("walsenders %v named %q still running after pg_terminate_backend: %w", left, names, ctx.Err())
		case <-tick.C:
		}
	}
}

// startReplicationSQL is the walsender command that streams from pos on
// timeline tli without a slot (the gate needs no WAL kept for it).
func startReplicationSQL(pos pglogrepl.LSN, tli int32) string {
	return fmt.Sprintf("START_REPLICATION PHYSICAL %s TIMELINE %d", pos, tli)
}

// startPhysical sends START_REPLICATION and waits for the copy-both mode.
// (pglogrepl.StartReplication always names a slot.)
func startPhysical(ctx context.Context, conn *pgconn.PgConn, pos pglogrepl.LSN, tli int32) error {
	conn.Frontend().SendQuery(&pgproto3.Query{String: startReplicationSQL(pos, tli)})
	if err := conn.Frontend().Flush(); err != nil {
		return fmt.Errorf("send START_REPLICATION: %w", err)
	}
	for {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			return fmt.Errorf("start replication: %w", err)
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyBothResponse:
			return nil
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("start replication: %w", pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.NoticeResponse, *pgproto3.ParameterStatus:
		default:
			return fmt.Errorf("start replication: unexpected %T", msg)
		}
	}
}

// stream serves one replication connection until the lease ends, ctx
// ends, or the connection fails; it returns why it stopped.
//
// Replies are batched: the gate acknowledges when the walsender has sent
// all it meant to send (gateStream.handle) and nothing more is already
// read, so a burst of messages gets one reply, sent after the last. The
// lease is read on the boot clock right before each reply, and whenever a
// read window ends (not per message): a lease end that moves earlier is
// seen by the next reply or window, which is no later than the window's
// length (at most gateWake) past it; a reply never is.
//
// With a quorum (SetGateQuorum) each reply confirms no further than q of
// the named standbys flushed (confirm); while it holds WAL it could not
// confirm, a read also ends when qw's poller sees the quorum move.
func (g *gate) stream(ctx context.Context, c *gateConn, start pglogrepl.LSN, qw *quorumWatch) gateDown {
	st := gateStream{received: start}
	// Acknowledge the start position at once: commits that waited while
	// the gate was away are released, if not by this reply then by the
	// early timed-out reads' (gateFirstWake).
	if err := g.confirm(c, &st, qw, true); err != nil {
		return replyFailed(err)
	}
	var w readWindow
	pending := false // a reply is due once nothing more is read
	for {
		if ctx.Err() != nil {
			return gateDown{kind: "stopping"}
		}
		if !c.buffered() {
			// The next read may block: it waits at most the window's
			// length, which ends no later than the lease allows.
			if now := time.Now(); w.expired(now) {
				left := g.until().Sub(boottime.Now())
				if left <= 0 {
					return gateDown{kind: "no valid lease"}
				}
				if err := c.setReadTimeout(w.renew(now, left)); err != nil {
					return gateDown{kind: "connection lost", err: err}
				}
			}
		}
		typ, body, err := c.next()
		if err != nil {
			switch {
			case ctx.Err() != nil:
				return gateDown{kind: "stopping"}
			case errors.Is(err, errReadTimeout):
				// Idle for the window's length: say we are still
				// here, if the lease holds.
				w.expire()
				pending = false
				if err := g.confirm(c, &st, qw, true); err != nil {
					return replyFailed(err)
				}
				continue
			case errors.Is(err, errQuorumWake):
				// The quorum position may have moved: confirm
				// what it now covers, if anything.
				if err := g.confirm(c, &st, qw, false); err != nil {
					return replyFailed(err)
				}
				continue
			case errors.Is(err, errGateMessage):
				return gateDown{kind: "protocol error", err: err}
			}
			return gateDown{kind: "connection lost", err: err}
		}
		switch typ {
		case 'd': // CopyData
			replyNow, err := st.handle(body)
			if err != nil {
				return gateDown{kind: "protocol error", err: err}
			}
			pending = pending || replyNow
			if pending && !c.buffered() {
				pending = false
				if err := g.confirm(c, &st, qw, true); err != nil {
					return replyFailed(err)
				}
			}
		case 'E': // ErrorResponse
			var msg pgproto3.ErrorResponse
			if err := msg.Decode(body); err != nil {
				return gateDown{kind: "protocol error", err: fmt.Errorf("%w: %w", errGateMessage, err)}
			}
			return gateDown{kind: "server error", err: pgconn.ErrorResponseToPgError(&msg)}
		case 'c': // CopyDone
			return gateDown{kind: "server ended streaming"}
		}
	}
}

// readWindow paces the gate's blocking reads. Each read waits at most the
// current window's length, which starts at gateFirstWake, doubles with
// each new window up to gateWake, and never exceeds the time left to
// reply (the lease, less GateMargin). Its end is on the monotonic clock.
type readWindow struct {
	end  time.Time
	step time.Duration
}

// expired reports whether a read at now needs a new window.
func (w *readWindow) expired(now time.Time) bool { return w.end.IsZero() || !now.Before(w.end) }

// expire ends the window (a read waited its whole length).
func (w *readWindow) expire() { w.end = time.Time{} }

// renew starts the next window at now, with left to the end of the time
// the gate may reply, and returns its length.
func (w *readWindow) renew(now time.Time, left time.Duration) time.Duration {
	w.step = min(max(2*w.step, gateFirstWake), gateWake)
	d := min(w.step, left)
	w.end = now.Add(d)
	return d
}

// errLeaseEnded: the gate did not reply because the lease has ended.
var errLeaseEnded = errors.New("lease ended")

// reply acknowledges pos as written, flushed and applied, if and only if
// the lease is still valid, less GateMargin, at this instant
// (errLeaseEnded otherwise).
func (g *gate) reply(c *gateConn, pos pglogrepl.LSN) error {
	now := boottime.Now()
	if !now.Before(g.until()) {
		return errLeaseEnded
	}
	return c.sendStatus(pos, now)
}

// confirm replies with the position the gate may confirm now (received,
// or under a quorum gateQuorum.replyPosition), read with the current
// quorum setting, unless always is false and it would confirm nothing
// new. It then tells the poller what it could not confirm, and makes the
// next blocking read also end at the poller's signal while that is
// anything.
func (g *gate) confirm(c *gateConn, st *gateStream, qw *quorumWatch, always bool) error {
	pos := st.received
	if gq := g.m.gateQuorum(); gq.q > 0 {
		pos = gq.replyPosition(st.received, st.replied, qw.walSenders())
	}
	if always || pos > st.replied {
		if err := g.reply(c, pos); err != nil {
			return err
		}
		st.replied = pos
	}
	var need pglogrepl.LSN
	if st.replied < st.received {
		need = st.received
	}
	qw.want(need)
	c.watch = need != 0
	return nil
}

// replyFailed turns a failed reply into the reason the stream ends.
func replyFailed(err error) gateDown {
	if errors.Is(err, errLeaseEnded) {
		return gateDown{kind: "no valid lease"}
	}
	return gateDown{kind: "connection lost", err: err}
}

// gateStream is the protocol state of one streaming connection.
type gateStream struct {
	// received is the end of the WAL received so far (or the start).
	received pglogrepl.LSN
	// replied is the position the last reply confirmed (0 before it).
	replied pglogrepl.LSN
}

// errGateMessage marks a CopyData payload the gate cannot parse.
var errGateMessage = errors.New("malformed replication message")

// handle takes one CopyData payload from the walsender and reports
// whether to acknowledge now: after an XLogData that reaches the end of
// what the walsender is sending, and on a keepalive that asks for a reply.
func (s *gateStream) handle(data []byte) (bool, error) {
	if len(data) == 0 {
		return false, errGateMessage
	}
	switch data[0] {
	case pglogrepl.XLogDataByteID:
		x, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return false, fmt.Errorf("%w: %w", errGateMessage, err)
		}
		end := x.WALStart + pglogrepl.LSN(len(x.WALData))
		if end > s.received {
			s.received = end
		}
		// ServerWALEnd is how far the walsender means to send now: short of
		// it, the next message is already on its way, and one reply after
		// it serves every commit in between (less CPU on a busy primary).
		return end >= x.ServerWALEnd, nil
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		k, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return false, fmt.Errorf("%w: %w", errGateMessage, err)
		}
		return k.ReplyRequested, nil
	}
	return false, nil // a message type of a later protocol: nothing to acknowledge
}

// gateConn is the gate's end of a streaming replication connection, taken
// over from pgconn once streaming has started: a blocking socket, outside
// Go's network poller, that only the gate's goroutine reads and writes.
// A message is then one read(2) whose waiter the kernel wakes directly,
// and a reply one write(2) of a reused buffer: no context watcher, no
// allocation, no hand-off between threads (the gate's cost, TestGateCost).
type gateConn struct {
	fd      int
	buf     []byte // read buffer: buf[r:w] is read and not yet consumed
	r, w    int
	timeout time.Duration // the socket's receive timeout (SO_RCVTIMEO)
	out     [gateStatusLen]byte
	// wake is the quorum poller's eventfd (-1: none). While watch is
	// set, a read first waits for the socket or wake (errQuorumWake).
	wake  int
	watch bool

	mu     sync.Mutex // orders shutdown against close
	closed bool
}

const (
	// gateStatusLen is a Standby Status Update in a CopyData message:
	// 'd', length, 'r', three LSNs, the client's time, reply-requested.
	gateStatusLen = 1 + 4 + 1 + 3*8 + 8 + 1
	// gateReadBuf is the read buffer's size: one read takes all a
	// walsender has sent (it sends at most 128 kB of WAL per message).
	gateReadBuf = 256 << 10
	// gateMaxMessage bounds a message from the walsender.
	gateMaxMessage = 64 << 20
)

// errReadTimeout: a read waited the whole receive timeout.
var errReadTimeout = errors.New("read timed out")

// takeOver takes the streaming connection from pgconn (conn is unusable
// afterwards): the messages pgconn has read but not returned stay first in
// the new buffer, and the socket is a duplicate descriptor in blocking
// mode, the original being closed (which takes it out of Go's poller).
func takeOver(conn *pgconn.PgConn) (*gateConn, error) {
	hc, err := conn.Hijack()
	if err != nil {
		closeConn(conn)
		return nil, fmt.Errorf("take over the replication connection: %w", err)
	}
	defer hc.Conn.Close()
	var pre []byte
	for hc.Frontend.ReadBufferLen() > 0 {
		_ = hc.Conn.SetReadDeadline(time.Now().Add(gateSetup)) // only to finish a message begun
		msg, err := hc.Frontend.Receive()
		if err != nil {
			return nil, fmt.Errorf("take over the replication connection: %w", err)
		}
		if pre, err = msg.Encode(pre); err != nil {
			return nil, fmt.Errorf("take over the replication connection: %w", err)
		}
	}
	sc, ok := hc.Conn.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("take over the replication connection: %T has no file descriptor", hc.Conn)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("take over the replication connection: %w", err)
	}
	fd := -1
	var dupErr error
	if err := raw.Control(func(f uintptr) { fd, dupErr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || dupErr != nil {
		return nil, fmt.Errorf("take over the replication connection: dup: %w", errors.Join(err, dupErr))
	}
	c := &gateConn{fd: fd, wake: -1, buf: make([]byte, max(gateReadBuf, 2*len(pre)))}
	c.w = copy(c.buf, pre)
	tv := unix.NsecToTimeval(gateWake.Nanoseconds()) // a reply never waits longer for socket space
	if err := errors.Join(unix.SetNonblock(fd, false), unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)); err != nil {
		c.close()
		return nil, fmt.Errorf("take over the replication connection: %w", err)
	}
	return c, nil
}

// buffered reports whether bytes read are not yet consumed (the next
// message, or its beginning, is already here).
func (c *gateConn) buffered() bool { return c.w > c.r }

// next returns the next message's type and body (valid until the next
// call): errReadTimeout if none came within the receive timeout,
// errQuorumWake if watch is set and the poller signalled first, io.EOF
// once the connection is closed or shut down.
func (c *gateConn) next() (byte, []byte, error) {
	for {
		need := 5
		if n := c.w - c.r; n >= 5 {
			size := int(binary.BigEndian.Uint32(c.buf[c.r+1:]))
			if size < 4 || size > gateMaxMessage {
				return 0, nil, fmt.Errorf("%w: message length %d", errGateMessage, size)
			}
			if need = 1 + size; n >= need {
				typ, body := c.buf[c.r], c.buf[c.r+5:c.r+need]
				c.r += need
				return typ, body, nil
			}
		}
		if c.r == c.w {
			c.r, c.w = 0, 0
		}
		if c.r+need > len(c.buf) || len(c.buf)-c.w < 16<<10 { // make room
			buf := c.buf
			if need > len(buf) {
				buf = make([]byte, need+gateReadBuf)
			}
			c.w = copy(buf, c.buf[c.r:c.w])
			c.r, c.buf = 0, buf
		}
		if c.watch && c.wake >= 0 {
			if err := c.waitReadable(); err != nil {
				return 0, nil, err
			}
		}
		k, err := unix.Read(c.fd, c.buf[c.w:])
		switch {
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			return 0, nil, errReadTimeout
		case err != nil:
			return 0, nil, fmt.Errorf("read: %w", err)
		case k == 0:
			return 0, nil, io.EOF
		default:
			c.w += k
		}
	}
}

// errQuorumWake: the quorum poller signalled before the socket had data.
var errQuorumWake = errors.New("quorum position may have moved")

// waitReadable waits, at most the receive timeout, until the socket has
// data (or is closed: the read says which) or the wake eventfd is
// signalled (drained, then errQuorumWake). The socket comes first: a
// signal left meanwhile is seen by the next wait.
func (c *gateConn) waitReadable() error {
	fds := [2]unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLIN}, {Fd: int32(c.wake), Events: unix.POLLIN}}
	ts := unix.NsecToTimespec(max(c.timeout, time.Millisecond).Nanoseconds())
	for {
		n, err := unix.Ppoll(fds[:], &ts, nil)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return fmt.Errorf("poll: %w", err)
		case n == 0:
			return errReadTimeout
		case fds[0].Revents != 0:
			return nil
		case fds[1].Revents != 0:
			var b [8]byte
			_, _ = unix.Read(c.wake, b[:]) // before the loop reads the poll's result
			return errQuorumWake
		}
	}
}

// setReadTimeout makes the following reads wait at most d (at least 1ms).
func (c *gateConn) setReadTimeout(d time.Duration) error {
	d = max(d, time.Millisecond)
	if d == c.timeout {
		return nil
	}
	tv := unix.NsecToTimeval(d.Nanoseconds())
	if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("set receive timeout: %w", err)
	}
	c.timeout = d
	return nil
}

// pgEpochMicros is PostgreSQL's epoch (2000-01-01 UTC) in Unix microseconds.
const pgEpochMicros = 946_684_800_000_000

// sendStatus sends a Standby Status Update acknowledging pos as written,
// flushed and applied, stamped now.
func (c *gateConn) sendStatus(pos pglogrepl.LSN, now time.Time) error {
	b := c.out[:]
	b[0] = 'd'
	binary.BigEndian.PutUint32(b[1:], gateStatusLen-1)
	b[5] = pglogrepl.StandbyStatusUpdateByteID
	binary.BigEndian.PutUint64(b[6:], uint64(pos))
	binary.BigEndian.PutUint64(b[14:], uint64(pos))
	binary.BigEndian.PutUint64(b[22:], uint64(pos))
	binary.BigEndian.PutUint64(b[30:], uint64(now.UnixMicro()-pgEpochMicros))
	b[38] = 0
	for len(b) > 0 {
		k, err := unix.Write(c.fd, b)
		switch {
		case err == unix.EINTR:
		case err != nil:
			return fmt.Errorf("send status: %w", err)
		default:
			b = b[k:]
		}
	}
	return nil
}

// shutdown makes a blocked read return (io.EOF); safe from any goroutine.
func (c *gateConn) shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		_ = unix.Shutdown(c.fd, unix.SHUT_RDWR)
	}
}

// close closes the socket: the walsender sees the end of its connection.
func (c *gateConn) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		_ = unix.Close(c.fd)
	}
}
