package pgmanager

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"github.com/jackc/pgx/v5"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// EnsureSlots makes the physical replication slots on this (primary)
// server exactly want: missing ones are created (reserving WAL at once),
// slots not in want that are inactive are dropped. It returns what it did.
func (m *Manager) EnsureSlots(ctx context.Context, want []string) (created, dropped []string, err error) {
	err = m.withSession(ctx, func(conn *pgx.Conn) error {
		created, dropped, err = m.ensureSlotsOn(ctx, conn, want)
		return err
	})
	return created, dropped, err
}

func (m *Manager) ensureSlotsOn(ctx context.Context, conn *pgx.Conn, want []string) (created, dropped []string, err error) {
	rows, err := conn.Query(ctx, `SELECT slot_name, active FROM pg_replication_slots WHERE slot_type = 'physical'`)
	if err != nil {
		return nil, nil, fmt.Errorf("list slots on %s: %w", m.member, err)
	}
	have := map[string]bool{}
	for rows.Next() {
		var name string
		var active bool
		if err := rows.Scan(&name, &active); err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("list slots on %s: %w", m.member, err)
		}
		have[name] = active
	}
	rows.Close()
	for _, s := range want {
		if _, ok := have[s]; ok {
			continue
		}
		if _, err := conn.Exec(ctx, "SELECT pg_create_physical_replication_slot($1, true)", s); err != nil {
			return created, dropped, fmt.Errorf("create slot %s on %s: %w", s, m.member, err)
		}
		created = append(created, s)
	}
	for s, active := range have {
		if slices.Contains(want, s) || active {
			continue
		}
		if _, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", s); err != nil {
			return created, dropped, fmt.Errorf("drop slot %s on %s: %w", s, m.member, err)
		}
		dropped = append(dropped, s)
	}
	if len(created)+len(dropped) > 0 {
		m.logger.Info("replication slots changed", "created", strings.Join(created, ","), "dropped", strings.Join(dropped, ","))
	}
	return created, dropped, nil
}

// SetSynchronousStandbyNames makes synchronous_standby_names
// d.SyncStandbyNames: it writes the managed config for d, signals the
// postmaster to reload, and waits until the server reports the new value.
// The value lives in the managed postgresql.conf, so every later
// Configure, Reload or restart with the same d keeps it.
func (m *Manager) SetSynchronousStandbyNames(ctx context.Context, d Desired) error {
	if _, err := m.Configure(d); err != nil {
		return fmt.Errorf("set synchronous_standby_names on %s: %w", m.member, err)
	}
	if err := m.signalPostmaster(syscall.SIGHUP); err != nil {
		return fmt.Errorf("set synchronous_standby_names on %s: reload: %w", m.member, err)
	}
	conn, err := m.connect(ctx)
	if err != nil {
		return fmt.Errorf("set synchronous_standby_names on %s: %w", m.member, err)
	}
	defer conn.Close(context.Background())
	if err := waitSetting(ctx, conn, "synchronous_standby_names", d.SyncStandbyNames); err != nil {
		return fmt.Errorf("set synchronous_standby_names on %s: %w", m.member, err)
	}
	return nil
}

// ControlData runs pg_controldata on the (possibly stopped) data dir.
func (m *Manager) ControlData(ctx context.Context) (map[string]string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(m.cfg.BinDir, "pg_controldata"), "-D", m.cfg.DataDir)
	cmd.Env = m.baseEnv()
	cmd.SysProcAttr = m.sysProcAttr(false)
	cmd.WaitDelay = waitDelay
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("pg_controldata for %s: %w", m.member, err)
	}
	return ParseControlData(out), nil
}

// ParseControlData parses pg_controldata's "Key: value" lines.
func ParseControlData(out []byte) map[string]string {
	res := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok {
			res[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return res
}

// SystemID reads the database system identifier from pg_control, running
// or not.
func (m *Manager) SystemID(ctx context.Context) (string, error) {
	cd, err := m.ControlData(ctx)
	if err != nil {
		return "", err
	}
	id := cd["Database system identifier"]
	if id == "" {
		return "", fmt.Errorf("pg_controldata for %s: no system identifier", m.member)
	}
	return id, nil
}
