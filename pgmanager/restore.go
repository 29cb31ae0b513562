package pgmanager

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"raftgres/internal/conf"
)

// Replica creation methods (postgresql.create_replica_methods).
const (
	// MethodPgBackRest restores the newest backup from the repository
	// (Options.Restore); the standby then fetches the WAL since from the
	// archive and streams the rest.
	MethodPgBackRest = "pgbackrest"
	// MethodBasebackup copies the upstream with pg_basebackup.
	MethodBasebackup = "basebackup"
)

// Bootstrap methods (bootstrap.method).
const (
	BootstrapInitdb     = "initdb"
	BootstrapPgBackRest = "pgbackrest"
)

// RecoveryTarget is where a cluster restored from the repository stops
// replaying WAL and is promoted. At most one of Time, LSN and Name is set;
// none means the end of the archive.
type RecoveryTarget struct {
	// Time is recovery_target_time; it must carry a UTC offset.
	Time string
	// LSN is recovery_target_lsn.
	LSN string
	// Name is recovery_target_name: a restore point made with
	// pg_create_restore_point().
	Name string
	// Set is the backup set (pgBackRest label) to restore; empty: the
	// newest, or for Time the newest that ended before it.
	Set string
}

// IsZero reports whether no target is set (the end of the archive).
func (t RecoveryTarget) IsZero() bool { return t.Time == "" && t.LSN == "" && t.Name == "" }

// String describes the target for logs.
func (t RecoveryTarget) String() string {
	switch {
	case t.Time != "":
		return "time " + t.Time
	case t.LSN != "":
		return "lsn " + t.LSN
	case t.Name != "":
		return "restore point " + t.Name
	}
	return "the end of the WAL archive"
}

// RestoreRequest is what a Restorer restores.
type RestoreRequest struct {
	// Standby restores the newest backup for a standby (no target).
	Standby bool
	// Target is where a new cluster's recovery stops (not Standby).
	Target RecoveryTarget
}

// Restorer writes a data directory restored from the backup repository
// into dir, an empty directory.
type Restorer func(ctx context.Context, dir string, r RestoreRequest) error

var (
	lsnRe   = regexp.MustCompile(`^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$`)
	labelRe = regexp.MustCompile(`^[0-9]{8}-[0-9]{6}F(_[0-9]{8}-[0-9]{6}[DI])?$`)
)

// timeLayouts are the recovery_target_time spellings accepted: each with
// an explicit UTC offset, so the target never depends on a server's
// TimeZone setting.
var timeLayouts = []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999Z07"}

// ParseTargetTime parses a recovery target time.
func ParseTargetTime(s string) (time.Time, error) {
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("must be a time with a UTC offset such as 2026-11-29 01:02:03+00 or 2026-11-29T01:02:03Z, got %q", s)
}

// FormatTargetTime spells t the way PostgreSQL and pgBackRest both read:
// "2006-01-02 15:04:05.999999+00".
func FormatTargetTime(t time.Time) string {
	return t.UTC().Format("2006-01-02 15:04:05.999999") + "+00"
}

// validateMethods checks create_replica_methods, bootstrap.method and
// bootstrap.pgbackrest.
func (c Config) validateMethods() []error {
	var errs []error
	add := func(path, format string, args ...any) { errs = append(errs, conf.Errorf(path, format, args...)) }
	if c.ReplicaMethods != nil && len(c.ReplicaMethods) == 0 {
		add("create_replica_methods", "must list at least one of %s, %s", MethodPgBackRest, MethodBasebackup)
	}
	for i, m := range c.ReplicaMethods {
		switch {
		case m != MethodPgBackRest && m != MethodBasebackup:
			add(fmt.Sprintf("create_replica_methods[%d]", i), "must be %s or %s, got %q", MethodPgBackRest, MethodBasebackup, m)
		case slicesIndex(c.ReplicaMethods, m) != i:
			add(fmt.Sprintf("create_replica_methods[%d]", i), "%s is listed twice", m)
		}
	}
	if c.BootstrapMethod != "" && c.BootstrapMethod != BootstrapInitdb && c.BootstrapMethod != BootstrapPgBackRest {
		add("^bootstrap.method", "must be %s or %s, got %q", BootstrapInitdb, BootstrapPgBackRest, c.BootstrapMethod)
	}
	t := c.RecoveryTarget
	if t != (RecoveryTarget{}) && c.BootstrapMethod != BootstrapPgBackRest {
		add("^bootstrap.pgbackrest", "is used only with bootstrap.method: %s", BootstrapPgBackRest)
	}
	n := 0
	for _, v := range []string{t.Time, t.LSN, t.Name} {
		if v != "" {
			n++
		}
	}
	if n > 1 {
		add("^bootstrap.pgbackrest", "set at most one of target_time, target_lsn and target_name")
	}
	if t.Time != "" {
		if _, err := ParseTargetTime(t.Time); err != nil {
			errs = append(errs, &conf.FieldError{Path: "^bootstrap.pgbackrest.target_time", Err: err})
		}
	}
	if t.LSN != "" && !lsnRe.MatchString(t.LSN) {
		add("^bootstrap.pgbackrest.target_lsn", "must be an LSN such as 0/3000060, got %q", t.LSN)
	}
	if t.Name != "" && (len(t.Name) > 63 || strings.ContainsAny(t.Name, "\n\r\x00")) {
		add("^bootstrap.pgbackrest.target_name", "must be a restore point name of at most 63 bytes on one line")
	}
	if t.Set != "" && !labelRe.MatchString(t.Set) {
		add("^bootstrap.pgbackrest.set", "must be a pgBackRest backup label such as 20261129-010203F, got %q", t.Set)
	}
	return errs
}

func slicesIndex(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// replicaMethods are the create_replica_methods, basebackup when unset.
func (c Config) replicaMethods() []string {
	if c.ReplicaMethods == nil {
		return []string{MethodBasebackup}
	}
	return c.ReplicaMethods
}

// UsesRepository reports whether the config needs Options.Restore.
func (c Config) UsesRepository() bool {
	return c.BootstrapMethod == BootstrapPgBackRest || slicesIndex(c.ReplicaMethods, MethodPgBackRest) >= 0
}

// restoreInto runs the Restorer into tmp, emptied first; on failure tmp
// is removed.
func (m *Manager) restoreInto(ctx context.Context, tmp string, r RestoreRequest) error {
	if m.restore == nil {
		return errors.New("no backup repository is configured (the backup: section)")
	}
	_ = os.RemoveAll(tmp)
	if err := m.ensureEmptyDir(tmp); err != nil {
		return err
	}
	if err := m.restore(ctx, tmp, r); err != nil {
		_ = os.RemoveAll(tmp)
		return err
	}
	return nil
}

// initFromBackup creates the cluster from the backup repository: the
// restore is recovered up to m.cfg.RecoveryTarget with raftgres's own
// recovery settings, promoted by PostgreSQL at the target, then restarted
// with the plain config for d. Called by Init with an empty data
// directory; on error Init removes what was restored.
func (m *Manager) initFromBackup(ctx context.Context, d Desired) error {
	target := m.cfg.RecoveryTarget
	if target.Time != "" {
		t, err := ParseTargetTime(target.Time)
		if err != nil {
			return err
		}
		target.Time = FormatTargetTime(t)
	}
	tmp := filepath.Clean(m.cfg.DataDir) + ".restore-tmp"
	m.logger.Info("creating the cluster from the backup repository", "target", target.String(), "set", target.Set)
	start := time.Now()
	if err := m.restoreInto(ctx, tmp, RestoreRequest{Target: target}); err != nil {
		return fmt.Errorf("restore %s from the backup repository: %w", m.member, err)
	}
	_ = os.Remove(m.cfg.DataDir)
	if err := os.Rename(tmp, m.cfg.DataDir); err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("restore %s: move the restored directory into %s: %w", m.member, m.cfg.DataDir, err)
	}
	rd := d
	rd.Standby, rd.Replica, rd.Recovery = nil, false, &target
	if err := m.Start(ctx, rd); err != nil {
		if m.ownChild() == nil {
			// A short recovery can end (and fail) before the server
			// first accepted a connection: the same failure as below.
			return fmt.Errorf("recover %s to %s: postgres exited during recovery (%w): the target may lie beyond the archived WAL "+
				"or before the backup's end; see its log lines above", m.member, target, err)
		}
		return fmt.Errorf("recover %s to %s: %w", m.member, target, err)
	}
	if err := m.waitRecoveryEnd(ctx); err != nil {
		return fmt.Errorf("recover %s to %s: %w", m.member, target, err)
	}
	// The recovery settings are postmaster-level: restart without them
	// rather than leave a pending restart behind.
	if err := m.Restart(ctx, d); err != nil {
		return err
	}
	m.logger.Info("cluster restored from the backup repository and promoted", "target", target.String(),
		"took", time.Since(start).Round(time.Millisecond))
	return nil
}

// waitRecoveryEnd waits until the recovering server has reached its
// target and promoted itself, or has stopped (a target beyond the end of
// the archive ends recovery with a FATAL error: PostgreSQL's log lines
// above say which).
func (m *Manager) waitRecoveryEnd(ctx context.Context) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	logged := time.Now()
	for {
		p := m.ownChild()
		if p == nil {
			return errors.New("postgres stopped before the recovery target was reached (see its log lines above)")
		}
		var inRecovery bool
		err := m.withSession(ctx, func(conn *pgx.Conn) error {
			return conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery)
		})
		if err == nil && !inRecovery {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.done:
			return fmt.Errorf("postgres exited during recovery (%v): the target may lie beyond the archived WAL or before the backup's end; see its log lines above", p.err)
		case <-tick.C:
		}
		if time.Since(logged) > 10*time.Second {
			m.logger.Info("still recovering from the archive")
			logged = time.Now()
		}
	}
}
