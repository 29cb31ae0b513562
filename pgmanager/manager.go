package pgmanager

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"raftgres/internal/boottime"
	"raftgres/internal/conf"
	"raftgres/internal/fsutil"
)

// LoggerName is this package's sub-logger name.
const LoggerName = "pgmanager"

// Options are per-process knobs that are not configuration.
type Options struct {
	// Scope is the cluster name (cluster_name in postgresql.conf).
	Scope string
	// RunAs, when set, runs every PostgreSQL process as this OS user. Only
	// tests running as root need it; the agent itself refuses root.
	RunAs *syscall.Credential
	// StopStep bounds each step of the stop escalation (default 30s).
	StopStep time.Duration
	// StartTimeout bounds waiting for a started postgres to accept
	// connections (default 60s).
	StartTimeout time.Duration
	// Archive, when set, turns WAL archiving on with these commands
	// (the backup package's pgBackRest commands).
	Archive *Archive
	// Restore restores a data directory from the backup repository
	// (create_replica_methods pgbackrest, bootstrap.method pgbackrest).
	Restore Restorer
	// FenceKeeper, when set, returns a fresh command that runs the fence
	// keeper (RunFenceKeeper; the agent: SelfFenceKeeper). FenceAt needs
	// it; without it FenceAt only logs.
	FenceKeeper func() *exec.Cmd
}

// Archive is WAL archiving: archive_command on a primary, restore_command
// for a standby or a recovery to fetch WAL from the archive.
type Archive struct {
	Command        string
	RestoreCommand string
}

// Manager drives one local PostgreSQL data directory. It is the only code
// in raftgres that touches PostgreSQL.
type Manager struct {
	cfg     Config
	member  string
	scope   string
	logger  hclog.Logger
	runAs   *syscall.Credential
	archive *Archive
	restore Restorer
	step    time.Duration
	start   time.Duration
	// keeper is the fence keeper process's client (nil without
	// Options.FenceKeeper); noKeeper warns once that there is none.
	keeper   *keeperClient
	noKeeper sync.Once

	// mu serialises Start (held while it waits for readiness). Nothing
	// that must answer at once (Running, Status, Fence, Stop, Callback)
	// takes it.
	mu       sync.Mutex
	cbMu     sync.Mutex
	cbCancel context.CancelFunc // the running callback, if any; under cbMu
	// child is the postmaster this Manager started last (nil before any).
	child atomic.Pointer[postmaster]
	// gateUp: the commit gate streams (see RunGate).
	gateUp atomic.Bool
	// gateQ is the commit gate's quorum (SetGateQuorum; nil: none yet).
	gateQ atomic.Pointer[gateQuorum]
	// gateQPoll, when not 0, replaces gateQuorumPoll (tests measure it).
	gateQPoll time.Duration
	// sess is the kept superuser connection of Status and EnsureSlots.
	sess session
	// tlsHintAt is when noteTLSLine last explained a walreceiver's TLS
	// failure (unix nanoseconds).
	tlsHintAt atomic.Int64

	// credMu guards the passwords set at runtime (credentials.go) and the
	// pgpass file they are written to.
	credMu sync.Mutex
	// override holds SetPassword's passwords, which replace the config
	// file's; staged the StagePassword ones.
	override map[Role]conf.Secret
	staged   map[Role]conf.Secret
	// localPW is the superuser password the local server accepted last
	// (nil before the first connection).
	localPW *string
}

// New validates cfg and returns a Manager for member. It starts nothing.
func New(cfg Config, member string, logger hclog.Logger, opts Options) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("postgresql config: %w", err)
	}
	if cfg.UsesRepository() && opts.Restore == nil {
		return nil, errors.New("postgresql config: create_replica_methods or bootstrap.method use pgbackrest, but no backup repository is configured (the backup: section)")
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	m := &Manager{cfg: cfg, member: member, scope: opts.Scope, logger: logger.Named(LoggerName),
		runAs: opts.RunAs, archive: opts.Archive, restore: opts.Restore, step: opts.StopStep, start: opts.StartTimeout}
	if m.step == 0 {
		m.step = 30 * time.Second
	}
	if m.start == 0 {
		m.start = 60 * time.Second
	}
	if opts.FenceKeeper != nil {
		m.keeper = newKeeperClient(opts.FenceKeeper, m.logger.Named("fence-keeper"))
	}
	return m, nil
}

// Config returns the manager's configuration.
func (m *Manager) Config() Config { return m.cfg }

// pgpassPath is the 0600 password file used by every libpq client raftgres
// starts (pg_basebackup, pg_rewind, walreceiver through passfile=). It sits
// beside the data directory so clones and rewinds never copy it.
func (m *Manager) pgpassPath() string { return PgpassPath(m.cfg.DataDir) }

// PgpassPath is the password file of the data directory dataDir (0600,
// every raftgres credential): other libpq clients of the agent's user
// (pgBackRest) read it through PGPASSFILE.
func PgpassPath(dataDir string) string { return filepath.Clean(dataDir) + ".pgpass" }

// writePgpass writes the password file with the passwords in use; entries
// match any host and port.
func (m *Manager) writePgpass() error {
	m.credMu.Lock()
	defer m.credMu.Unlock()
	return m.writePgpassLocked()
}

// writePgpassLocked is writePgpass for a caller holding credMu.
func (m *Manager) writePgpassLocked() error {
	_, err := m.writeFile(m.pgpassPath(), []byte(m.renderPgpass()), 0o600)
	return err
}

// renderPgpass is the password file's content; the caller holds credMu.
func (m *Manager) renderPgpass() string {
	var b strings.Builder
	esc := strings.NewReplacer(`\`, `\\`, `:`, `\:`)
	for _, r := range []Role{RoleReplication, RoleRewind, RoleSuperuser} {
		c := m.credsLocked(r)
		if c.Username != "" && c.Password.IsSet() {
			fmt.Fprintf(&b, "*:*:*:%s:%s\n", esc.Replace(c.Username), esc.Replace(c.Password.Reveal()))
		}
	}
	return b.String()
}

// writeFile writes data to path (atomically, fsutil.WriteFile) only when the content
// differs, owned by RunAs when set. It reports whether it wrote.
func (m *Manager) writeFile(path string, data []byte, mode os.FileMode) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	if err := fsutil.WriteFileWith(path, data, mode, m.chown); err != nil {
		return false, err
	}
	return true, nil
}

func (m *Manager) chown(path string) error {
	if m.runAs == nil {
		return nil
	}
	if err := os.Lchown(path, int(m.runAs.Uid), int(m.runAs.Gid)); err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	return nil
}

// ConfigChange reports which managed files a Configure call rewrote.
type ConfigChange struct {
	Files []string
}

// Changed reports whether anything was written.
func (c ConfigChange) Changed() bool { return len(c.Files) > 0 }

// Configure writes the managed files for d (postgresql.conf, pg_hba.conf,
// the pgpass file, standby.signal when a standby, and a postgresql.auto.conf
// without recovery settings), each only when its content changed.
func (m *Manager) Configure(d Desired) (ConfigChange, error) {
	var ch ConfigChange
	if _, err := os.Stat(filepath.Join(m.cfg.DataDir, "PG_VERSION")); err != nil {
		return ch, fmt.Errorf("configure %s: no data directory at %s: %w", m.member, m.cfg.DataDir, err)
	}
	if err := m.writePgpass(); err != nil {
		return ch, err
	}
	if err := os.MkdirAll(m.socketDir(), 0o700); err != nil {
		return ch, fmt.Errorf("create socket dir %s: %w", m.socketDir(), err)
	}
	if err := m.chown(m.socketDir()); err != nil {
		return ch, err
	}
	files := []struct {
		name string
		data string
	}{
		{confFile, m.RenderManagedConf(d).Text},
		{hbaFile, m.RenderHBA().Text},
	}
	for _, f := range files {
		wrote, err := m.writeFile(filepath.Join(m.cfg.DataDir, f.name), []byte(f.data), 0o600)
		if err != nil {
			return ch, fmt.Errorf("configure %s: %w", m.member, err)
		}
		if wrote {
			ch.Files = append(ch.Files, f.name)
		}
	}
	if stripped, err := m.sanitizeAutoConf(); err != nil {
		return ch, err
	} else if stripped {
		ch.Files = append(ch.Files, autoConfFile)
	}
	if err := m.setSignals(d); err != nil {
		return ch, err
	}
	if ch.Changed() {
		m.logger.Info("managed config written", "files", strings.Join(ch.Files, ","), "standby", d.IsStandby())
		if m.cfg.SSL != nil {
			var ignored []string
			for k := range d.ClusterParams {
				if sslParams[k] {
					ignored = append(ignored, k)
				}
			}
			if len(ignored) > 0 {
				slices.Sort(ignored)
				m.logger.Warn("cluster parameters ignored: postgresql.ssl sets them", "parameters", strings.Join(ignored, ","))
			}
		}
	}
	return ch, nil
}

// sanitizeAutoConf removes from postgresql.auto.conf the recovery settings
// and, with postgresql.ssl, the TLS settings it owns.
func (m *Manager) sanitizeAutoConf() (bool, error) {
	path := filepath.Join(m.cfg.DataDir, autoConfFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	owned := func(name string) bool { return recoveryParams[name] || m.cfg.SSL != nil && sslParams[name] }
	out, removed := stripSettings(string(data), owned)
	if !removed {
		return false, nil
	}
	_, err = m.writeFile(path, []byte(out), 0o600)
	return err == nil, err
}

// StripRecoverySettings drops lines that set a recovery parameter.
func StripRecoverySettings(conf string) (string, bool) {
	return stripSettings(conf, func(name string) bool { return recoveryParams[name] })
}

// stripSettings drops lines that set a parameter drop names (lowercase).
func stripSettings(conf string, drop func(name string) bool) (string, bool) {
	var b strings.Builder
	removed := false
	for _, line := range strings.SplitAfter(conf, "\n") {
		name, _, ok := strings.Cut(strings.TrimSpace(line), "=")
		if ok && drop(strings.ToLower(strings.TrimSpace(name))) {
			removed = true
			continue
		}
		b.WriteString(line)
	}
	return b.String(), removed
}

// setSignals makes standby.signal exist exactly for a standby and
// recovery.signal exactly for a targeted recovery (d.Recovery).
func (m *Manager) setSignals(d Desired) error {
	for _, f := range []struct {
		name string
		want bool
	}{{standbySig, d.IsStandby()}, {recoverySig, d.Recovery != nil && !d.IsStandby()}} {
		path := filepath.Join(m.cfg.DataDir, f.name)
		if !f.want {
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remove %s: %w", path, err)
			}
			continue
		}
		if _, err := m.writeFile(path, nil, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// IsStandbyConfigured reports whether standby.signal exists.
func (m *Manager) IsStandbyConfigured() bool {
	_, err := os.Stat(filepath.Join(m.cfg.DataDir, standbySig))
	return err == nil
}

// HasDataDir reports whether the data directory holds a cluster.
func (m *Manager) HasDataDir() bool {
	_, err := os.Stat(filepath.Join(m.cfg.DataDir, "PG_VERSION"))
	return err == nil
}

// ownChild returns this Manager's postmaster child while it runs.
func (m *Manager) ownChild() *postmaster {
	if p := m.child.Load(); p != nil && !p.exited() {
		return p
	}
	return nil
}

// Running reports whether a postmaster runs on the data directory: this
// manager's child, or a foreign one (see foreignPID).
func (m *Manager) Running() bool {
	if m.ownChild() != nil {
		return true
	}
	_, ok := m.foreignPID()
	return ok
}

// Exited returns a channel closed when the running postgres child exits;
// nil (never ready) when none runs or the running postmaster is foreign,
// so a waiter does not spin on the closed channel of a process that is
// already gone.
func (m *Manager) Exited() <-chan struct{} {
	if p := m.ownChild(); p != nil {
		return p.done
	}
	return nil
}

// Start writes the managed config for d and starts postgres as a child,
// waiting until it accepts connections.
func (m *Manager) Start(ctx context.Context, d Desired) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p := m.ownChild(); p != nil {
		return fmt.Errorf("start postgres for %s: already running (pid %d)", m.member, p.pid())
	}
	if pid, ok := m.foreignPID(); ok {
		return fmt.Errorf("start postgres for %s: a postmaster not started by this agent runs on %s (pid %d); stop it first",
			m.member, m.cfg.DataDir, pid)
	}
	m.waitPrevious(ctx)
	if _, err := m.Configure(d); err != nil {
		return err
	}
	if d.Standby != nil || d.Replica {
		// A standby acknowledges no commit: an ended lease's deadline
		// must not kill it (the keeper applies a deadline to whatever
		// postmaster runs when it comes). A holder arms the keeper again
		// with its next lease before promoting.
		m.FenceAt(time.Time{})
	}
	if err := m.checkSSLKey(); err != nil {
		return fmt.Errorf("start postgres for %s: %w", m.member, err)
	}
	p, err := m.startPostmaster()
	if err != nil {
		return err
	}
	if err := m.waitReady(ctx, p); err != nil {
		_ = p.stop(context.Background(), StopImmediate, m.step, m.logger, nil)
		return fmt.Errorf("start postgres for %s: %w", m.member, err)
	}
	return nil
}

// Stop shuts postgres down with mode, escalating after each step timeout,
// whether it is this manager's child or a foreign postmaster. Stopping a
// stopped server is not an error.
func (m *Manager) Stop(ctx context.Context, mode StopMode) error {
	if mode == StopSmart {
		m.closeSession() // a smart shutdown waits for every client, ours too
	}
	if p := m.ownChild(); p != nil {
		m.logger.Info("stopping postgres", "mode", mode.String(), "pid", p.pid())
		if err := p.stop(ctx, mode, m.step, m.logger, m.shutdownCheckpointed); err != nil {
			return fmt.Errorf("stop postgres of %s: %w", m.member, err)
		}
		m.logger.Info("postgres stopped", "mode", mode.String())
		return nil
	}
	pid, ok := m.foreignPID()
	if !ok {
		return nil
	}
	m.logger.Info("stopping a postmaster this agent did not start", "mode", mode.String(), "pid", pid)
	if err := m.stopForeign(ctx, pid, mode); err != nil {
		return fmt.Errorf("stop postgres of %s: %w", m.member, err)
	}
	m.logger.Info("postgres stopped", "mode", mode.String(), "pid", pid)
	return nil
}

// shutdownCheckpointed reports whether the control file says the cluster
// is shut down: a fast shutdown has written its shutdown checkpoint.
func (m *Manager) shutdownCheckpointed() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cd, err := m.ControlData(ctx)
	return err == nil && cd["Database cluster state"] == "shut down"
}

// fenceWait bounds how long Fence waits for the killed processes to be
// gone (raftstore.FenceBudget, which pgmanager may not import).
const fenceWait = 500 * time.Millisecond

// Fence kills the running postmaster and every process it started at
// once (killPostmaster: SIGKILL, with no gentler step first, so that a
// stopped or D-state postmaster does not leave backends that can still
// acknowledge a commit), whether it is this manager's child or foreign,
// then waits up to fenceWait for them to be gone. It takes no lock that
// Start, Stop, Promote or Rewind hold, so a fencing timer can call it
// while they run. It reports whether it signalled a postmaster; it does
// not prevent a later Start.
func (m *Manager) Fence() bool {
	pm, leader := 0, false
	if p := m.ownChild(); p != nil {
		pm, leader = p.pid(), true // started with Setpgid
	} else if fp, ok := m.foreignPID(); ok {
		// A foreign postmaster leads its own group only if it was started
		// that way (by an earlier agent); pg_ctl's does not.
		g, err := syscall.Getpgid(fp)
		pm, leader = fp, err == nil && g == fp
	}
	if pm == 0 {
		return false
	}
	killed := append(killPostmaster("/proc", pm, leader), pm)
	deadline := time.Now().Add(fenceWait)
	left := slices.DeleteFunc(slices.Clone(killed), func(pid int) bool { return !processAlive(pid) })
	for len(left) > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // polling the kernel: nothing to wait on
		left = slices.DeleteFunc(left, func(pid int) bool { return !processAlive(pid) })
	}
	if len(left) > 0 {
		m.logger.Error("fenced: postgres sent SIGKILL but some of its processes are still there", "pid", pm,
			"killed", len(killed), "left", fmt.Sprint(left), "waited", fenceWait)
	} else {
		m.logger.Warn("fenced: postgres killed (SIGKILL)", "pid", pm, "processes", len(killed))
	}
	return true
}

// FenceAt arms the fence keeper: when the boot clock (CLOCK_BOOTTIME)
// reaches until, a time from boottime.Now() (the lease's end), the keeper
// process SIGKILLs the postmaster and every process it started
// (killPostmaster), whatever this agent is doing then (stopped, wedged or
// dead). A later call moves the deadline;
// the zero time disarms. The deadline holds for whatever postmaster runs
// when it comes, including one this Manager starts later (the keeper
// learns each new postmaster's pid). Start disarms it before starting a
// standby; a primary is started only under a lease whose end the
// supervisor handed over first.
//
// It never blocks for long: a keeper that died is started again and told
// the current state; one that does not read its pipe within 100 ms is
// killed and replaced. Without Options.FenceKeeper it only logs, once.
func (m *Manager) FenceAt(until time.Time) {
	if m.keeper == nil {
		if !until.IsZero() {
			m.noKeeper.Do(func() {
				m.logger.Warn("FenceAt: the lease end is not enforced outside the agent", "error", errNoKeeper)
			})
		}
		return
	}
	var ns int64
	if !until.IsZero() {
		// 0 disarms: a lease end at or before boot (never in practice)
		// stays armed, as already passed.
		ns = max(boottime.Nanos(until), 1)
	}
	m.keeper.setDeadline(ns)
}

// Restart stops (fast) and starts again with d.
func (m *Manager) Restart(ctx context.Context, d Desired) error {
	if err := m.Stop(ctx, StopFast); err != nil {
		return err
	}
	return m.Start(ctx, d)
}

// Reload rewrites the managed config for d and signals postgres to reread
// it. It returns what changed.
func (m *Manager) Reload(ctx context.Context, d Desired) (ConfigChange, error) {
	ch, err := m.Configure(d)
	if err != nil {
		return ch, err
	}
	if err := m.signalPostmaster(syscall.SIGHUP); err != nil {
		return ch, fmt.Errorf("reload postgres of %s: %w", m.member, err)
	}
	return ch, nil
}

// signalPostmaster sends sig to the running postmaster, child or foreign.
func (m *Manager) signalPostmaster(sig syscall.Signal) error {
	if p := m.ownChild(); p != nil {
		return p.cmd.Process.Signal(sig)
	}
	if pid, ok := m.foreignPID(); ok {
		return syscall.Kill(pid, sig)
	}
	return errNotRunning
}
