package pgmanager

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

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
