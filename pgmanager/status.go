package pgmanager

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Streaming is the state PostgreSQL shows for a replication connection
// that streams WAL: pg_stat_replication.state on the primary,
// pg_stat_wal_receiver.status on the standby.
const Streaming = "streaming"

// Replica is one row of pg_stat_replication.
type Replica struct {
	ApplicationName string
	State           string
	SyncState       string
	SentLSN         uint64
	FlushLSN        uint64
	ReplayLSN       uint64
}

// Status is what the supervisor observes of the local PostgreSQL.
type Status struct {
	Running bool
	// Foreign means the running postmaster was not started by this
	// Manager (a DBA's pg_ctl, a previous agent's child): it is queried,
	// stopped and fenced all the same, but Exited does not report it.
	Foreign    bool
	InRecovery bool
	Timeline   uint32
	// CurrentLSN is pg_current_wal_flush_lsn() on a primary.
	CurrentLSN uint64
	// ReceivedLSN / ReplayedLSN are a standby's.
	ReceivedLSN uint64
	// ReplayExhausted: the standby's startup process waits for WAL after
	// every source failed (wait event RecoveryRetrieveRetryInterval): it
	// has replayed all the WAL it has, so ReplayedLSN is its end.
	ReplayExhausted bool
	ReplayedLSN     uint64
	PendingRestart  bool
	SystemID        string
	Version         string
	// WalReceiver is pg_stat_wal_receiver's status on a standby ("" if none).
	WalReceiver     string
	WalReceiverFrom string
	// UpstreamAddr is "host:port" from a standby's primary_conninfo: the
	// upstream it is configured to follow, whether or not it streams ("" if
	// none or unparseable).
	UpstreamAddr string
	// CheckpointTimeline is pg_control's latest checkpoint's timeline
	// (Timeline may be further on a standby: the one it receives).
	CheckpointTimeline uint32
	// UpstreamHost and UpstreamPort are primary_conninfo's host (one, or
	// several separated by commas) and port, as written ("" if none).
	UpstreamHost, UpstreamPort string
	// SourceLSN is the end of WAL the upstream last said it had
	// (pg_stat_wal_receiver.latest_end_lsn, or what was flushed from it
	// when further: it had at least that), SourceAt when it sent that;
	// zero without a walreceiver.
	SourceLSN uint64
	SourceAt  time.Time
	// PostmasterStart is pg_postmaster_start_time().
	PostmasterStart time.Time
	// ReplayPaused and LastReplayAt (pg_last_xact_replay_timestamp) are a
	// standby's.
	ReplayPaused bool
	LastReplayAt time.Time
	// SyncStandbyNames is current_setting('synchronous_standby_names'), on
	// a primary and a standby alike.
	SyncStandbyNames string
	// Replicas are pg_stat_replication's rows but the commit gate's.
	Replicas []Replica
	// Gate is the commit gate's row of pg_stat_replication (nil if absent).
	Gate  *Replica
	Error string
	// StreamFailing is set, with Error, on a standby that refuses
	// connections because it has not reached a consistent state, while
	// its walreceiver keeps failing in a way that does not heal (the WAL
	// or timeline history it needs is gone from its upstream): it will
	// never become consistent by waiting. InRecovery is then true too.
	// A standby merely replaying a long backlog is not StreamFailing.
	StreamFailing bool
	// WalReceiverDiverged is set on a running standby (this manager's
	// child) whose upstream has refused its position for divergedAfter:
	// the upstream's history forked before it (divergedFailures).
	WalReceiverDiverged bool
}

// connect opens a superuser connection through the Unix socket.
func (m *Manager) connect(ctx context.Context) (*pgx.Conn, error) {
	return m.connectTo(ctx, "postgres")
}

// connectTo is connect to database db.
func (m *Manager) connectTo(ctx context.Context, db string) (*pgx.Conn, error) {
	cc, err := pgx.ParseConfig("")
	if err != nil {
		return nil, err
	}
	m.socketConfig(&cc.Config)
	cc.Database = db
	cc.RuntimeParams["application_name"] = "raftgres"
	// raftgres's own statements (roles at init, slots, CHECKPOINT) never
	// wait for a synchronous standby or the commit gate.
	cc.RuntimeParams["synchronous_commit"] = "local"
	var conn *pgx.Conn
	err = m.tryLocalPasswords(func(pw string) { cc.Password = pw }, func() error {
		var err error
		conn, err = pgx.ConnectConfig(ctx, cc)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("connect to postgres of %s: %w", m.member, err)
	}
	return conn, nil
}

// socketConfig points cc at the local server's Unix socket as the
// superuser: no TLS (pointless on a local socket, and libpq does not try
// it either), no fallback hosts. The socket is where postmaster.pid says
// the running server listens: a server started before raftgres (by
// Patroni, or by hand, before its agent restarts it) has its own socket
// directory and maybe port.
func (m *Manager) socketConfig(cc *pgconn.Config) {
	_, port, _ := net.SplitHostPort(m.cfg.Listen)
	p, _ := strconv.Atoi(port)
	cc.Host, cc.Port = m.socketDir(), uint16(p)
	if data, err := os.ReadFile(filepath.Join(m.cfg.DataDir, "postmaster.pid")); err == nil {
		if dir, port, ok := pidFileSocket(data); ok {
			cc.Host, cc.Port = dir, port
		}
	}
	cc.User = m.cfg.Superuser.Username
	cc.Password = m.localPasswords()[0] // callers dial through tryLocalPasswords
	cc.ConnectTimeout = 3 * time.Second
	cc.TLSConfig = nil
	cc.Fallbacks = nil
}

// waitReady polls until postgres accepts connections, the process exits,
// or the start timeout passes.
func (m *Manager) waitReady(ctx context.Context, p *postmaster) error {
	ctx, cancel := context.WithTimeout(ctx, m.start)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		conn, err := m.connect(ctx)
		if err == nil {
			_ = conn.Close(context.Background())
			return nil
		}
		last = err
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "28") {
			return fmt.Errorf("postgres is up but refuses raftgres's superuser credentials: %w", err)
		}
		if m.IsStandbyConfigured() {
			if err := p.cannotStream(time.Now()); err != nil {
				return err
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("postgres exited during start-up: %v", p.err)
		case <-ctx.Done():
			return fmt.Errorf("postgres not accepting connections after %s: %w", m.start, last)
		case <-tick.C:
		}
	}
}

// Status queries the local PostgreSQL, this manager's child or a foreign
// postmaster. A stopped server gives Running false and no error. On an
// error the Status holds only Running, Foreign and Error: never read a
// role from it.
func (m *Manager) Status(ctx context.Context) (Status, error) {
	st := Status{Running: true}
	if m.ownChild() == nil {
		if _, ok := m.foreignPID(); !ok {
			return Status{}, nil
		}
		st.Foreign = true
	}
	err := m.query(ctx, &st)
	if err != nil {
		// Nothing half-read: a failed query says nothing about the role,
		// except for a standby still in recovery whose walreceiver cannot
		// stream (StreamFailing).
		out := Status{Running: true, Foreign: st.Foreign, Error: err.Error()}
		var pgErr *pgconn.PgError
		if p := m.ownChild(); p != nil && p.streamFailing(time.Now()) && m.IsStandbyConfigured() &&
			errors.As(err, &pgErr) && pgErr.Code == cannotConnectNow {
			out.InRecovery, out.StreamFailing = true, true
		}
		return out, err
	}
	if p := m.ownChild(); p != nil && st.InRecovery {
		st.WalReceiverDiverged = p.divergedAt(time.Now())
	}
	return st, nil
}

// query fills st from the running server, on the kept session.
func (m *Manager) query(ctx context.Context, st *Status) error {
	return m.withSession(ctx, func(conn *pgx.Conn) error { return m.queryOn(ctx, conn, st) })
}

func (m *Manager) queryOn(ctx context.Context, conn *pgx.Conn, st *Status) error {
	var sysid int64
	var ver string
	err := conn.QueryRow(ctx, `SELECT pg_is_in_recovery(), (SELECT system_identifier FROM pg_control_system()),
		current_setting('server_version'), (SELECT timeline_id FROM pg_control_checkpoint()), pg_postmaster_start_time(),
		current_setting('synchronous_standby_names')`).
		Scan(&st.InRecovery, &sysid, &ver, &st.Timeline, &st.PostmasterStart, &st.SyncStandbyNames)
	if err != nil {
		return fmt.Errorf("status of %s: %w", m.member, err)
	}
	st.CheckpointTimeline = st.Timeline
	st.SystemID, st.Version = strconv.FormatUint(uint64(sysid), 10), ver
	if err := m.lsnStatus(ctx, conn, st); err != nil {
		return err
	}
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_settings WHERE pending_restart)`).Scan(&st.PendingRestart); err != nil {
		return fmt.Errorf("pending restart of %s: %w", m.member, err)
	}
	all, err := replicas(ctx, conn)
	if err != nil {
		return fmt.Errorf("replication status of %s: %w", m.member, err)
	}
	st.Replicas, st.Gate = splitGate(all)
	return nil
}

func (m *Manager) lsnStatus(ctx context.Context, conn *pgx.Conn, st *Status) error {
	if !st.InRecovery {
		var cur, walfile string
		if err := conn.QueryRow(ctx, `SELECT pg_current_wal_flush_lsn()::text, pg_walfile_name(pg_current_wal_lsn())`).
			Scan(&cur, &walfile); err != nil {
			return fmt.Errorf("current lsn of %s: %w", m.member, err)
		}
		st.CurrentLSN, _ = ParseLSN(cur)
		if len(walfile) >= 8 {
			if tli, err := strconv.ParseUint(walfile[:8], 16, 32); err == nil {
				st.Timeline = uint32(tli)
			}
		}
		return nil
	}
	var recv, replay, wrStatus, wrHost, srcLSN *string
	var tli *int32
	var replayAt, srcAt *time.Time
	var conninfo string
	err := conn.QueryRow(ctx, `SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
		(SELECT status FROM pg_stat_wal_receiver), (SELECT sender_host FROM pg_stat_wal_receiver),
		(SELECT received_tli FROM pg_stat_wal_receiver), pg_is_wal_replay_paused(), pg_last_xact_replay_timestamp(),
		current_setting('primary_conninfo'),
		EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'startup'
			AND wait_event = 'RecoveryRetrieveRetryInterval'),
		(SELECT GREATEST(latest_end_lsn, flushed_lsn)::text FROM pg_stat_wal_receiver),
		(SELECT COALESCE(latest_end_time, last_msg_send_time) FROM pg_stat_wal_receiver)`).
		Scan(&recv, &replay, &wrStatus, &wrHost, &tli, &st.ReplayPaused, &replayAt, &conninfo, &st.ReplayExhausted,
			&srcLSN, &srcAt)
	if err != nil {
		return fmt.Errorf("standby lsn of %s: %w", m.member, err)
	}
	st.UpstreamAddr = UpstreamAddr(conninfo)
	if kv, err := ParseConninfo(conninfo); err == nil {
		st.UpstreamHost, st.UpstreamPort = kv["host"], kv["port"]
	}
	if srcLSN != nil {
		st.SourceLSN, _ = ParseLSN(*srcLSN)
	}
	if srcAt != nil {
		st.SourceAt = srcAt.UTC()
	}
	if recv != nil {
		st.ReceivedLSN, _ = ParseLSN(*recv)
	}
	if replay != nil {
		st.ReplayedLSN, _ = ParseLSN(*replay)
	}
	if wrStatus != nil {
		st.WalReceiver = *wrStatus
	}
	if wrHost != nil {
		st.WalReceiverFrom = *wrHost
	}
	if replayAt != nil {
		st.LastReplayAt = *replayAt
	}
	if tli != nil && uint32(*tli) > st.Timeline {
		st.Timeline = uint32(*tli)
	}
	return nil
}

func replicas(ctx context.Context, conn *pgx.Conn) ([]Replica, error) {
	rows, err := conn.Query(ctx, `SELECT application_name, state, sync_state,
		COALESCE(sent_lsn::text, '0/0'), COALESCE(flush_lsn::text, '0/0'), COALESCE(replay_lsn::text, '0/0')
		FROM pg_stat_replication ORDER BY application_name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Replica
	for rows.Next() {
		var r Replica
		var sent, flush, replay string
		if err := rows.Scan(&r.ApplicationName, &r.State, &r.SyncState, &sent, &flush, &replay); err != nil {
			return nil, err
		}
		r.SentLSN, _ = ParseLSN(sent)
		r.FlushLSN, _ = ParseLSN(flush)
		r.ReplayLSN, _ = ParseLSN(replay)
		out = append(out, r)
	}
	return out, rows.Err()
}

// splitGate separates the commit gate's row from the real replicas.
func splitGate(all []Replica) ([]Replica, *Replica) {
	var out []Replica
	var gate *Replica
	for _, r := range all {
		if r.ApplicationName == GateName && gate == nil {
			g := r
			gate = &g
			continue
		}
		out = append(out, r)
	}
	return out, gate
}

// ParseLSN parses "16/B374D848".
func ParseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("lsn %q: missing /", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("lsn %q: %w", s, err)
	}
	return h<<32 | l, nil
}

// FormatLSN renders an LSN as PostgreSQL does.
func FormatLSN(l uint64) string { return fmt.Sprintf("%X/%X", l>>32, l&0xffffffff) }

// Exec runs one SQL statement as superuser (tests and admin actions).
func (m *Manager) Exec(ctx context.Context, sql string, args ...any) error {
	conn, err := m.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("exec on %s: %w", m.member, err)
	}
	return nil
}
