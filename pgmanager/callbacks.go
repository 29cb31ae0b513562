package pgmanager

import (
	"context"
	"fmt"
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

// Hooks run synchronously (postgresql.pre_promote, postgresql.before_stop),
// as in Patroni.
const (
	PrePromote = "pre_promote"
	BeforeStop = "before_stop"
)

// DefaultHookTimeout bounds a hook whose timeout is not configured.
const DefaultHookTimeout = 10 * time.Second

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
	logger := m.logger.With("event", event, "role", role, "command", argv[0])
	cmd, tail, lw := m.script(ctx, "callback", append(argv, event, role, m.scope))
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

// Hook runs the command configured for hook (PrePromote, BeforeStop) and
// waits for it, for at most its timeout (and ctx). As in Patroni it gets
// no arguments; the command is split on spaces, no shell. No command
// configured is success.
func (m *Manager) Hook(ctx context.Context, hook string) error {
	command, timeout := m.cfg.Hooks.PrePromote, m.cfg.Hooks.PrePromoteTimeout
	if hook == BeforeStop {
		command, timeout = m.cfg.Hooks.BeforeStop, m.cfg.Hooks.BeforeStopTimeout
	}
	argv := strings.Fields(command)
	if len(argv) == 0 {
		return nil
	}
	if timeout <= 0 {
		timeout = DefaultHookTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd, tail, lw := m.script(ctx, hook, argv)
	logger := m.logger.With("hook", hook, "command", argv[0])
	logger.Info("hook started")
	err := cmd.Run()
	lw.flush()
	switch {
	case err == nil:
		logger.Info("hook done")
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("run %s %s: killed after %s (%w): %w", hook, argv[0], timeout, ctx.Err(), err)
	}
	return fmt.Errorf("run %s %s: %w (output: %s)", hook, argv[0], err, tail.String())
}

// script prepares argv as a callback or hook: its own process group,
// killed whole when ctx ends, the agent's user, output to the log.
func (m *Manager) script(ctx context.Context, tag string, argv []string) (*exec.Cmd, *tailWriter, *lineWriter) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = waitDelay
	cmd.Env = m.envWithPath("/usr/local/bin:/usr/bin:/bin")
	cmd.SysProcAttr = m.sysProcAttr(false)
	tail := &tailWriter{max: 20}
	lw := m.lineLogger(tag, tail)
	cmd.Stdout, cmd.Stderr = lw, lw
	return cmd, tail, lw
}
