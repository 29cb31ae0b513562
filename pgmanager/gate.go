package pgmanager

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgproto3"

	"raftgres/internal/boottime"
)

// The commit gate (DESIGN.md, "Commit gate"): the agent is itself a
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
	// gateWake bounds a blocking read: the gate then rechecks ctx and the
	// lease (a timed-out read leaves the connection open) and, if the
	// lease holds, sends an unsolicited status.
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
// received, starting from the server's WAL end when it connected) after
// every XLogData message, on keepalives that ask for a reply, and when a
// read times out (see gateWake, gateFirstWake). It checks the lease
// immediately before each reply, on the boot clock and GateMargin before
// the lease end; once the lease has ended it never replies
// on that connection again and closes it, and it connects again only when
// leaseEnd() is in the future again. leaseEnd must be safe to call from
// this goroutine at any time.
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
	g.m.gateUp.Store(true)
	g.state = "connected"
	g.logger.Info("commit gate connected", "lsn", start.String())
	why = g.stream(ctx, conn, start)
	g.m.gateUp.Store(false)
	closeConn(conn)
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
func (g *gate) stream(ctx context.Context, conn *pgconn.PgConn, start pglogrepl.LSN) gateDown {
	st := gateStream{received: start}
	// Acknowledge the start position at once: commits that waited while
	// the gate was away are released, if not by this reply then by the
	// early timed-out reads' (gateFirstWake).
	if err := g.reply(conn, st.received); err != nil {
		return replyFailed(err)
	}
	var w readWindow
	defer w.close()
	for {
		if ctx.Err() != nil {
			return gateDown{kind: "stopping"}
		}
		left := g.until().Sub(boottime.Now())
		if left <= 0 {
			return gateDown{kind: "no valid lease"}
		}
		// The socket's deadline is on the wall clock's monotonic
		// reading, the lease on the boot clock: only the duration left
		// crosses from one to the other.
		now := time.Now()
		wctx := w.at(ctx, now, now.Add(left))
		msg, err := conn.ReceiveMessage(wctx)
		if err != nil {
			switch {
			case ctx.Err() != nil:
				return gateDown{kind: "stopping"}
			case wctx.Err() != nil && !conn.IsClosed():
				// Idle: pgconn keeps the connection after a read
				// deadline. Say we are still here, if the lease holds.
				if err := g.reply(conn, st.received); err != nil {
					return replyFailed(err)
				}
				continue
			}
			return gateDown{kind: "connection lost", err: err}
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			replyNow, err := st.handle(msg.Data)
			if err != nil {
				return gateDown{kind: "protocol error", err: err}
			}
			if replyNow {
				if err := g.reply(conn, st.received); err != nil {
					return replyFailed(err)
				}
			}
		case *pgproto3.ErrorResponse:
			return gateDown{kind: "server error", err: pgconn.ErrorResponseToPgError(msg)}
		case *pgproto3.CopyDone:
			return gateDown{kind: "server ended streaming"}
		}
	}
}

// readWindow is the deadline of the gate's reads: one context serves many
// messages. Its length starts at gateFirstWake and doubles up to gateWake;
// it never ends later than the lease.
type readWindow struct {
	ctx    context.Context
	cancel context.CancelFunc
	end    time.Time
	step   time.Duration
}

// at returns the read context for a read at now when the gate may reply
// until leaseEnd (both on the monotonic clock: leaseEnd is now plus the
// time left, measured on the boot clock).
func (w *readWindow) at(parent context.Context, now, leaseEnd time.Time) context.Context {
	if w.ctx != nil && now.Before(w.end) && !leaseEnd.Before(w.end) {
		return w.ctx
	}
	w.close()
	w.step = min(max(2*w.step, gateFirstWake), gateWake)
	w.end = now.Add(w.step)
	if leaseEnd.Before(w.end) {
		w.end = leaseEnd
	}
	w.ctx, w.cancel = context.WithDeadline(parent, w.end)
	return w.ctx
}

func (w *readWindow) close() {
	if w.cancel != nil {
		w.cancel()
	}
}

// errLeaseEnded: the gate did not reply because the lease has ended.
var errLeaseEnded = errors.New("lease ended")

// reply acknowledges pos as written, flushed and applied, if and only if
// the lease is still valid, less GateMargin, at this instant
// (errLeaseEnded otherwise).
func (g *gate) reply(conn *pgconn.PgConn, pos pglogrepl.LSN) error {
	now := boottime.Now()
	if !now.Before(g.until()) {
		return errLeaseEnded
	}
	return pglogrepl.SendStandbyStatusUpdate(context.Background(), conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pos, WALFlushPosition: pos, WALApplyPosition: pos, ClientTime: now,
	})
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
