package pgmanager

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// InitdbArgs builds initdb's argv (no password: that goes in pwfile).
func InitdbArgs(dataDir, superuser, pwfile string, opts []InitdbOption) []string {
	args := []string{"-D", dataDir, "--username=" + superuser}
	if pwfile != "" {
		args = append(args, "--pwfile="+pwfile, "--auth-local=scram-sha-256", "--auth-host=scram-sha-256")
	}
	for _, o := range opts {
		if o.Value == "" {
			args = append(args, "--"+o.Name)
		} else {
			args = append(args, "--"+o.Name+"="+o.Value)
		}
	}
	return args
}

// Init creates a new cluster with initdb, or from the backup repository
// (bootstrap.method pgbackrest), starts it as a primary with the managed
// config for d, and creates or updates the replication and rewind roles
// and bootstrap.users. It returns the system identifier. On failure the data
// directory is removed, so no half-initialised cluster is left behind.
func (m *Manager) Init(ctx context.Context, d Desired) (sysid string, err error) {
	if m.HasDataDir() {
		return "", fmt.Errorf("initdb for %s: %s already holds a cluster", m.member, m.cfg.DataDir)
	}
	if err := m.ensureEmptyDir(m.cfg.DataDir); err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			_ = m.Stop(context.Background(), StopImmediate)
			_ = os.RemoveAll(m.cfg.DataDir)
		}
	}()
	if m.cfg.BootstrapMethod == BootstrapPgBackRest {
		if err := m.initFromBackup(ctx, d); err != nil {
			return "", err
		}
	} else if err := m.initdb(ctx, d); err != nil {
		return "", err
	}
	if err := m.createRoles(ctx); err != nil {
		return "", err
	}
	st, err := m.Status(ctx)
	if err != nil {
		return "", err
	}
	m.logger.Info("cluster initialised", "system_id", st.SystemID)
	return st.SystemID, nil
}

// initdb creates the data directory with initdb and starts it as a
// primary with the managed config for d.
func (m *Manager) initdb(ctx context.Context, d Desired) error {
	pwfile := ""
	if su := m.creds(RoleSuperuser); su.Password.IsSet() {
		pwfile = filepath.Clean(m.cfg.DataDir) + ".pwfile"
		if _, err := m.writeFile(pwfile, []byte(su.Password.Reveal()+"\n"), 0o600); err != nil {
			return err
		}
		defer os.Remove(pwfile)
	}
	if err := m.run(ctx, command{bin: "initdb", args: InitdbArgs(m.cfg.DataDir, m.cfg.Superuser.Username, pwfile, m.cfg.Initdb)}); err != nil {
		return fmt.Errorf("initdb for %s: %w", m.member, err)
	}
	base := filepath.Join(m.cfg.DataDir, baseConfFile)
	if err := os.Rename(filepath.Join(m.cfg.DataDir, confFile), base); err != nil {
		return fmt.Errorf("initdb for %s: keep initdb's config as %s: %w", m.member, baseConfFile, err)
	}
	return m.Start(ctx, d)
}

// ensureEmptyDir creates dir (0700, owned by RunAs) or checks it is empty.
func (m *Manager) ensureEmptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
		return m.chown(dir)
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("%s is not empty", dir)
	}
	return nil
}

// rewindGrants are exactly the functions pg_rewind needs (PostgreSQL docs).
var rewindGrants = []string{
	"pg_catalog.pg_ls_dir(text, boolean, boolean)",
	"pg_catalog.pg_stat_file(text, boolean)",
	"pg_catalog.pg_read_binary_file(text)",
	"pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
}

// createRoles creates or updates the replication and rewind roles and
// bootstrap.users. Passwords travel as bind parameters through a DO block
// of format(), never in logged SQL text.
func (m *Manager) createRoles(ctx context.Context) error {
	conn, err := m.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if err := ensureRole(ctx, conn, m.creds(RoleReplication), "LOGIN REPLICATION"); err != nil {
		return fmt.Errorf("create replication role on %s: %w", m.member, err)
	}
	if m.cfg.Rewind.Username != "" && m.cfg.Rewind.Username != m.cfg.Superuser.Username {
		if err := ensureRole(ctx, conn, m.creds(RoleRewind), "LOGIN"); err != nil {
			return fmt.Errorf("create rewind role on %s: %w", m.member, err)
		}
		for _, fn := range rewindGrants {
			sql := fmt.Sprintf("GRANT EXECUTE ON FUNCTION %s TO %s", fn, pgx.Identifier{m.cfg.Rewind.Username}.Sanitize())
			if _, err := conn.Exec(ctx, sql); err != nil {
				return fmt.Errorf("grant %s to rewind role on %s: %w", fn, m.member, err)
			}
		}
	}
	for name, u := range m.cfg.Users {
		opts := strings.ToUpper(strings.Join(u.Options, " "))
		if err := ensureRole(ctx, conn, Credentials{Username: name, Password: u.Password}, opts); err != nil {
			return fmt.Errorf("create user %s on %s: %w", name, m.member, err)
		}
	}
	return nil
}

func ensureRole(ctx context.Context, conn *pgx.Conn, c Credentials, options string) error {
	ident := pgx.Identifier{c.Username}.Sanitize()
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", c.Username).Scan(&exists); err != nil {
		return err
	}
	verb := "CREATE"
	if exists {
		verb = "ALTER"
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf("%s ROLE %s %s", verb, ident, options)); err != nil {
		return err
	}
	if !c.Password.IsSet() {
		return nil
	}
	// Send a SCRAM verifier computed here, never the password itself, so
	// no server log (log_statement=all included) can show it.
	v, err := scramVerifier(c.Password.Reveal())
	if err != nil {
		return err
	}
	_, err = conn.Exec(ctx, fmt.Sprintf("ALTER ROLE %s PASSWORD %s", ident, quoteLiteral(v)))
	return err
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// Promote ends recovery with pg_promote(wait) and then CHECKPOINTs, so a
// later pg_rewind against this server sees the new timeline.
func (m *Manager) Promote(ctx context.Context) error {
	conn, err := m.connect(ctx)
	if err != nil {
		return fmt.Errorf("promote %s: %w", m.member, err)
	}
	defer conn.Close(context.Background())
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_promote(true, 60)").Scan(&ok); err != nil {
		return fmt.Errorf("promote %s: %w", m.member, err)
	}
	if !ok {
		return fmt.Errorf("promote %s: pg_promote did not finish within 60s", m.member)
	}
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("checkpoint after promoting %s: %w", m.member, err)
	}
	if err := m.setSignals(Desired{}); err != nil {
		return err
	}
	m.logger.Info("promoted to primary")
	return nil
}

// Checkpoint runs CHECKPOINT: on a standby, a restartpoint at the last
// checkpoint record it replayed, so that pg_control (and a pg_rewind
// that reads it from this server) shows the timeline it replays on.
func (m *Manager) Checkpoint(ctx context.Context) error {
	conn, err := m.connect(ctx)
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", m.member, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("checkpoint %s: %w", m.member, err)
	}
	return nil
}

// Follow makes this member a standby of d.Standby. A running standby only
// rereads its config (PostgreSQL 13+ applies primary_conninfo and
// primary_slot_name on reload: the walreceiver restarts, the server does
// not), and Follow waits until the server reports the new primary_conninfo.
// A running primary is stopped (fast) and started as a standby; a stopped
// server is started as one.
func (m *Manager) Follow(ctx context.Context, d Desired) error {
	if d.Standby == nil {
		return fmt.Errorf("follow for %s: no upstream given", m.member)
	}
	m.logger.Info("following new primary", "primary", d.Standby.Name, "address", d.Standby.Addr())
	if !m.Running() {
		return m.Start(ctx, d)
	}
	conn, err := m.connect(ctx)
	if err != nil {
		return fmt.Errorf("follow for %s: %w", m.member, err)
	}
	defer conn.Close(context.Background())
	var standby bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&standby); err != nil {
		return fmt.Errorf("follow for %s: role: %w", m.member, err)
	}
	if !standby {
		return m.Restart(ctx, d)
	}
	if _, err := m.Reload(ctx, d); err != nil {
		return fmt.Errorf("follow for %s: %w", m.member, err)
	}
	if err := waitSetting(ctx, conn, "primary_conninfo", m.replicationConninfo(*d.Standby)); err != nil {
		return fmt.Errorf("follow for %s: %w", m.member, err)
	}
	return nil
}

// waitSetting polls current_setting(name) on conn until it is want (after
// a reload, which the server applies asynchronously) or ctx ends.
func waitSetting(ctx context.Context, conn *pgx.Conn, name, want string) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var got string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&got); err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		if got == want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("confirm %s=%q (have %q): %w", name, want, got, ctx.Err())
		case <-tick.C:
		}
	}
}

// Clone creates the data directory of a standby of d.Standby with the
// create_replica_methods in order (a restore from the backup repository,
// pg_basebackup from the upstream), falling back to the next when one
// fails. Each writes into a temporary directory that is renamed into
// place only on success, so a failed or killed clone leaves no half data
// directory. The clone is left stopped and configured as a standby of
// d.Standby.
func (m *Manager) Clone(ctx context.Context, d Desired) error {
	methods := m.cfg.replicaMethods()
	if len(d.ReplicaMethods) > 0 {
		methods = d.ReplicaMethods
	}
	if d.Standby == nil && slices.Contains(methods, MethodBasebackup) {
		return fmt.Errorf("clone for %s: no source given", m.member)
	}
	if m.Running() {
		return fmt.Errorf("clone for %s: a postmaster runs on %s", m.member, m.cfg.DataDir)
	}
	if m.HasDataDir() {
		return fmt.Errorf("clone for %s: %s already holds a cluster", m.member, m.cfg.DataDir)
	}
	if err := m.writePgpass(); err != nil {
		return err
	}
	tmp := filepath.Clean(m.cfg.DataDir) + ".clone-tmp"
	src, srcName := d.Standby, "the backup repository"
	if src != nil {
		srcName = src.Name
	}
	start := time.Now()
	var errs []error
	method := ""
	for i, meth := range methods {
		var err error
		switch meth {
		case MethodPgBackRest:
			m.logger.Info("creating the replica from the backup repository", "upstream", srcName)
			err = m.restoreInto(ctx, tmp, RestoreRequest{Standby: true})
		default:
			err = m.basebackup(ctx, tmp, src)
		}
		if err == nil {
			method = meth
			break
		}
		errs = append(errs, fmt.Errorf("%s: %w", meth, err))
		if ctx.Err() != nil {
			break
		}
		if i+1 < len(methods) {
			m.logger.Warn("replica creation method failed; trying the next", "method", meth,
				"next", methods[i+1], "error", err)
		}
	}
	if method == "" {
		return fmt.Errorf("clone %s from %s: %w", m.member, srcName, errors.Join(errs...))
	}
	_ = os.Remove(m.cfg.DataDir) // empty dir or nothing
	if err := os.Rename(tmp, m.cfg.DataDir); err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("clone %s: move clone into %s: %w", m.member, m.cfg.DataDir, err)
	}
	if _, err := m.Configure(d); err != nil {
		return err
	}
	m.logger.Info("clone finished", "method", method, "upstream", srcName, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// basebackup copies src into tmp (emptied first) with pg_basebackup.
func (m *Manager) basebackup(ctx context.Context, tmp string, src *Upstream) error {
	m.killLeftoverClones(tmp)
	_ = os.RemoveAll(tmp) // a previous, interrupted clone
	if err := m.ensureEmptyDir(tmp); err != nil {
		return err
	}
	if err := m.checkSSLKey(); err != nil {
		return err
	}
	if src == nil {
		return errors.New("pg_basebackup: no source given")
	}
	args := []string{"-D", tmp, "-X", "stream", "-c", "fast", "--no-password", "-d", m.peerConninfo(src.pickHost(map[string]string{
		"host": src.Host, "port": fmt.Sprint(src.Port), "user": m.cfg.Replication.Username,
		"application_name": m.member + "-clone", "connect_timeout": "5",
	}))}
	m.logger.Info("cloning with pg_basebackup", "source", src.Name, "address", src.Addr(), "tls", m.cfg.SSL != nil)
	if err := m.run(ctx, command{bin: "pg_basebackup", args: args, env: []string{"PGPASSFILE=" + m.pgpassPath()}}); err != nil {
		_ = os.RemoveAll(tmp)
		return m.withTLSHint(err, *src)
	}
	if err := m.fetchHistories(ctx, tmp, src); err != nil {
		// Not fatal: the clone is good; only a standby that later crosses
		// those timelines through this member would miss them.
		m.logger.Warn("could not copy older timeline histories from the clone source", "source", src.Name, "error", err)
	}
	return nil
}

// killLeftoverClones SIGKILLs what is left of an interrupted clone into
// tmp: pg_basebackup dies with a killed agent (parent-death signal), but
// its background WAL streamer, a forked child, goes on streaming into
// tmp/pg_wal for good, and would break the next clone into the same
// directory at its next segment switch. Only processes whose command line
// names tmp are touched.
func (m *Manager) killLeftoverClones(tmp string) {
	for _, pid := range processesNaming(tmp) {
		if pid == os.Getpid() {
			continue
		}
		m.logger.Warn("killing what is left of an interrupted clone", "pid", pid, "dir", tmp)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// processesNaming returns the pids of processes whose command line has an
// argument equal to arg.
func processesNaming(arg string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, a := range strings.Split(string(cmdline), "\x00") {
			if a == arg {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// RemoveDataDir deletes the data directory (before a reclone).
func (m *Manager) RemoveDataDir() error {
	if m.Running() {
		return fmt.Errorf("remove data dir of %s: a postmaster runs on %s", m.member, m.cfg.DataDir)
	}
	if err := os.RemoveAll(m.cfg.DataDir); err != nil {
		return fmt.Errorf("remove data dir of %s: %w", m.member, err)
	}
	m.logger.Warn("data directory removed", "data_dir", m.cfg.DataDir)
	return nil
}

// Reclone replaces a data directory that cannot be rewound: it is removed
// and cloned again from d.Standby (left stopped, configured as a standby).
func (m *Manager) Reclone(ctx context.Context, d Desired) error {
	if d.Standby == nil && len(d.ReplicaMethods) == 0 {
		return fmt.Errorf("reclone for %s: no source given", m.member)
	}
	if m.Running() {
		return fmt.Errorf("reclone for %s: a postmaster runs on %s", m.member, m.cfg.DataDir)
	}
	src := "the backup repository"
	if d.Standby != nil {
		src = d.Standby.Name
	}
	m.logger.Warn("recloning: the data directory cannot follow the new primary", "source", src)
	if err := m.RemoveDataDir(); err != nil {
		return err
	}
	return m.Clone(ctx, d)
}
