package pgmanager

import (
	"context"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Callback events (postgresql.callbacks), as in Patroni.
const (
	OnStart      = "on_start"
	OnStop       = "on_stop"
	OnRoleChange = "on_role_change"
)

// callbackTimeout bounds one callback run.
const callbackTimeout = time.Minute

// Callback runs the command configured for event as
// `COMMAND... event role scope` (Patroni's arguments; the command is split
// on spaces, no shell) in the background, so a slow script never holds up
// a failover. A callback still running from an earlier event is killed
// first: only the latest state matters. Output goes to the log.
func (m *Manager) Callback(event, role string) {
	command := map[string]string{
		OnStart: m.cfg.Callbacks.OnStart, OnStop: m.cfg.Callbacks.OnStop, OnRoleChange: m.cfg.Callbacks.OnRoleChange,
	}[event]
	argv := strings.Fields(command)
	if len(argv) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), callbackTimeout)
	m.cbMu.Lock()
	if m.cbCancel != nil {
		m.cbCancel()
	}
	m.cbCancel = cancel
	m.cbMu.Unlock()
	cmd := exec.CommandContext(ctx, argv[0], append(argv[1:], event, role, m.scope)...)
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = waitDelay
	cmd.Env = m.envWithPath("/usr/local/bin:/usr/bin:/bin")
	cmd.SysProcAttr = m.sysProcAttr(false)
	tail := &tailWriter{max: 20}
	lw := m.lineLogger("callback", tail)
	cmd.Stdout, cmd.Stderr = lw, lw
	logger := m.logger.With("event", event, "role", role, "command", argv[0])
	if err := cmd.Start(); err != nil {
		cancel()
		logger.Error("callback did not start", "error", err)
		return
	}
	logger.Info("callback started")
	go func() {
		defer cancel()
		err := cmd.Wait()
		lw.flush()
		switch {
		case ctx.Err() == context.DeadlineExceeded:
			logger.Warn("callback killed after its timeout", "timeout", callbackTimeout)
		case ctx.Err() != nil:
			logger.Info("callback killed: a newer event came")
		case err != nil:
			logger.Warn("callback failed", "error", err, "output", tail.String())
		default:
			logger.Debug("callback done")
		}
	}()
}
