package pgmanager

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// rewindProbeTimeout bounds the login check before pg_rewind runs.
const rewindProbeTimeout = 5 * time.Second

// Rewind runs pg_rewind against d.Standby (a running primary) on this
// stopped data directory, then restores the managed config and
// standby.signal (pg_rewind copies the source's files and ignores the
// signal file). It first logs in to the source as the rewind user: a
// source that cannot be reached or refuses the login gives
// ErrRewindSourceUnavailable and nothing is touched. ErrRewindFailed means
// the data must be recloned. pg_rewind syncs the result to disk before it
// returns, so a crash after a rewind cannot leave a corrupt directory.
func (m *Manager) Rewind(ctx context.Context, d Desired) error {
	if d.Standby == nil {
		return fmt.Errorf("rewind for %s: no source given", m.member)
	}
	if m.Running() {
		return fmt.Errorf("rewind for %s: a postmaster runs on %s; stop it first", m.member, m.cfg.DataDir)
	}
	if err := m.writePgpass(); err != nil {
		return err
	}
	if left := m.waitOrphans(ctx, 5*time.Second); len(left) > 0 {
		// pg_rewind's crash recovery (postgres --single) refuses to run
		// beside them ("lock file postmaster.pid already exists").
		m.logger.Warn("backends of an earlier postmaster still run in the data directory; rewinding anyway", "pids", fmt.Sprint(left))
	}
	if err := m.checkSSLKey(); err != nil {
		return fmt.Errorf("rewind %s: %w", m.member, err)
	}
	src := d.Standby
	user, password := m.rewindCredentials()
	probe := m.peerConninfo(src.pickHost(map[string]string{
		"host": src.Host, "port": fmt.Sprint(src.Port), "user": user, "dbname": "postgres", "sslmode": "prefer",
		"application_name": "raftgres-rewind-probe",
	}))
	if err := probeSource(ctx, probe, password); err != nil {
		return m.withTLSHint(fmt.Errorf("%w: rewind %s from %s: %w", ErrRewindSourceUnavailable, m.member, src.Name, err), *src)
	}
	args := []string{"-D", m.cfg.DataDir, "--source-server=" + m.peerConninfo(src.pickHost(map[string]string{
		"host": src.Host, "port": fmt.Sprint(src.Port), "user": user, "dbname": "postgres", "connect_timeout": "5",
	})), "--config-file=" + filepath.Join(m.cfg.DataDir, confFile)}
	m.logger.Info("rewinding", "source", src.Name, "address", src.Addr(), "tls", m.cfg.SSL != nil)
	tail := &tailWriter{max: 200}
	err := m.run(ctx, command{bin: "pg_rewind", args: args, env: []string{"PGPASSFILE=" + m.pgpassPath()}, tail: tail})
	if err != nil {
		kind := classifyRewindFailure(tail.Lines())
		if kind == nil && ctx.Err() != nil {
			return fmt.Errorf("rewind %s from %s: %w", m.member, src.Name, err)
		}
		if kind == nil {
			kind = ErrRewindFailed
		}
		return m.withTLSHint(fmt.Errorf("%w: rewind %s from %s: %w", kind, m.member, src.Name, err), *src)
	}
	if _, err := m.Configure(d); err != nil {
		return err
	}
	return nil
}

// rewindCredentials is the role pg_rewind logs in as (the superuser when
// no rewind role is configured) and its password.
func (m *Manager) rewindCredentials() (string, string) {
	c := m.creds(RoleSuperuser)
	if m.cfg.Rewind.Username != "" {
		c = m.creds(RoleRewind)
	}
	return c.Username, c.Password.Reveal()
}

// probeSource logs in to the rewind source with conninfo, as pg_rewind
// will (TCP; sslmode prefer, or verify-full with postgresql.ssl).
func probeSource(ctx context.Context, conninfo, password string) error {
	cc, err := pgconn.ParseConfig(conninfo)
	if err != nil {
		return err
	}
	cc.Password = password
	cc.ConnectTimeout = rewindProbeTimeout
	ctx, cancel := context.WithTimeout(ctx, rewindProbeTimeout)
	defer cancel()
	conn, err := pgconn.ConnectConfig(ctx, cc)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

// rewindStarted is what pg_rewind prints once it has found what to copy,
// just before it starts changing the target. Until then a failure leaves
// the data directory as it was.
const rewindStarted = "rewinding from last common checkpoint"

// sourceTrouble are pg_rewind (libpq) messages meaning the source could
// not be reached or refused the login.
var sourceTrouble = []string{
	"could not connect to server", "connection to server", "server closed the connection unexpectedly",
	"password authentication failed", "no password supplied", "no pg_hba.conf entry",
	"the database system is starting up", "the database system is shutting down",
	"the database system is in recovery mode", "timeout expired", "connection refused",
	"too many connections", "terminating connection",
	// TLS (postgresql.ssl): libpq checks the certificates before it logs in.
	"ssl error", "server certificate", "root certificate", "private key file", "certificate present", "does not support ssl",
}

// classifyRewindFailure reads the output of a failed pg_rewind:
// ErrRewindFailed once it had begun to rewind, ErrRewindSourceUnavailable
// for a connection or login failure before that, nil when it cannot tell
// (the caller decides: a failure for another reason, such as clusters of
// different systems or missing WAL, means reclone).
func classifyRewindFailure(lines []string) error {
	unavailable := false
	for _, l := range lines {
		low := strings.ToLower(l)
		if strings.Contains(low, rewindStarted) {
			return ErrRewindFailed
		}
		for _, s := range sourceTrouble {
			if strings.Contains(low, s) {
				unavailable = true
			}
		}
	}
	if unavailable {
		return ErrRewindSourceUnavailable
	}
	return nil
}
