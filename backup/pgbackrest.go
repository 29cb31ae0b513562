package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"raftgres/internal/fsutil"
)

// Target is the local PostgreSQL pgBackRest works on.
type Target struct {
	DataDir   string
	Port      string
	SocketDir string
	User      string
	// PassFile, when set, is the libpq password file pgBackRest's
	// connections read (PGPASSFILE): no secret on a command line, in the
	// environment or in pgBackRest's config.
	PassFile string
}

// PgBackRest runs pgBackRest with the config file it writes.
type PgBackRest struct {
	cfg    Config
	target Target
	logger hclog.Logger
	// clients are the client CNs the TLS server accepts (member names).
	clients []string
	// RunAs, when set, runs pgBackRest as this OS user (tests as root).
	RunAs *syscall.Credential
}

// New returns a runner for cfg (with Defaults applied) and target.
func New(cfg Config, target Target, logger hclog.Logger) *PgBackRest {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &PgBackRest{cfg: cfg.Defaults(target.DataDir), target: target, logger: logger.Named("pgbackrest")}
}

// Stanza is the configured stanza.
func (p *PgBackRest) Stanza() string { return p.cfg.Stanza }

// ArchiveCommand is PostgreSQL's archive_command.
func (p *PgBackRest) ArchiveCommand() string {
	return p.command("archive-push", `"%p"`)
}

// RestoreCommand is PostgreSQL's restore_command.
func (p *PgBackRest) RestoreCommand() string {
	return p.command("archive-get", "%f", `"%p"`)
}

func (p *PgBackRest) command(args ...string) string {
	return strings.Join(append([]string{shellQuote(p.cfg.Bin), "--config=" + shellQuote(p.cfg.ConfigFile),
		"--stanza=" + shellQuote(p.cfg.Stanza)}, args...), " ")
}

// shellQuote quotes s for /bin/sh when it holds anything but safe characters.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-=") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Render is pgBackRest's config file.
func (p *PgBackRest) Render() string { return p.render(false) }

// RenderServer is the TLS server's config file: Render's with the
// server's address, certificate and the client CNs it accepts. Only the
// agent writes it; commands run by hand never touch it.
func (p *PgBackRest) RenderServer() string { return p.render(true) }

func (p *PgBackRest) render(server bool) string {
	var b strings.Builder
	b.WriteString("# Managed by raftgres: edits are overwritten. Configure the backup: section.\n[global]\n")
	base := filepath.Dir(p.cfg.ConfigFile)
	global := map[string]string{
		"repo1-path": p.cfg.RepoPath, "log-path": p.cfg.LogPath,
		"lock-path": filepath.Join(base, "lock"), "spool-path": filepath.Join(base, "spool"),
		"log-level-console": "warn", "log-level-file": "info", "start-fast": "y",
	}
	maps.Copy(global, p.cfg.Options)
	if sv := p.cfg.Server; server && sv.Enabled() {
		host, port, _ := net.SplitHostPort(sv.Listen)
		maps.Copy(global, map[string]string{"tls-server-address": host, "tls-server-port": port,
			"tls-server-ca-file": sv.CAFile, "tls-server-cert-file": sv.CertFile, "tls-server-key-file": sv.KeyFile})
	}
	for _, k := range slices.Sorted(maps.Keys(global)) {
		fmt.Fprintf(&b, "%s=%s\n", k, global[k])
	}
	if server {
		for _, cn := range p.clients {
			fmt.Fprintf(&b, "tls-server-auth=%s=%s\n", cn, p.cfg.Stanza)
		}
	}
	fmt.Fprintf(&b, "\n[%s]\npg1-path=%s\npg1-port=%s\npg1-socket-path=%s\npg1-user=%s\n", p.cfg.Stanza,
		p.target.DataDir, p.target.Port, p.target.SocketDir, p.target.User)
	return b.String()
}

// SetClients sets the client CNs the TLS server accepts (the member
// names, sorted) and reports whether they changed; RunServer writes them
// into the server's config.
func (p *PgBackRest) SetClients(names []string) bool {
	names = slices.Sorted(slices.Values(names))
	if slices.Equal(names, p.clients) {
		return false
	}
	p.clients = names
	return true
}

// WriteConfig writes pgBackRest's config file (0600, atomically) and
// creates its working directories (0700).
func (p *PgBackRest) WriteConfig() error {
	base := filepath.Dir(p.cfg.ConfigFile)
	for _, d := range []string{base, p.cfg.LogPath, filepath.Join(base, "lock"), filepath.Join(base, "spool")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create pgbackrest directory %s: %w", d, err)
		}
	}
	return writeAtomic(p.cfg.ConfigFile, p.Render())
}

// serverConfigFile is the TLS server's config file, beside the other.
func (p *PgBackRest) serverConfigFile() string {
	return filepath.Join(filepath.Dir(p.cfg.ConfigFile), "pgbackrest-server.conf")
}

// writeAtomic writes a pgBackRest config file, mode 0600, atomically.
func writeAtomic(path, data string) error {
	if err := fsutil.WriteFile(path, []byte(data), 0o600); err != nil {
		return fmt.Errorf("write pgbackrest config: %w", err)
	}
	return nil
}

// Error is a failed pgBackRest command with its own message.
type Error struct {
	Command string
	Code    int
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("pgbackrest %s failed (exit %d): %s", e.Command, e.Code, e.Message)
}

// env is pgBackRest's environment: no console noise on stderr but
// errors, and libpq's password file.
func (p *PgBackRest) env() []string {
	env := append(os.Environ(), "PGBACKREST_LOG_LEVEL_STDERR=error")
	if p.target.PassFile != "" {
		env = append(env, "PGPASSFILE="+p.target.PassFile)
	}
	return env
}

// run runs one pgBackRest command; out, when set, receives its stdout as
// it comes. A failure returns *Error carrying pgBackRest's message.
func (p *PgBackRest) run(ctx context.Context, out io.Writer, command string, args ...string) ([]byte, error) {
	argv := append([]string{"--config=" + p.cfg.ConfigFile, "--stanza=" + p.cfg.Stanza}, args...)
	argv = append(argv, command)
	cmd := exec.CommandContext(ctx, p.cfg.Bin, argv...)
	cmd.Env = p.env()
	if p.RunAs != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.RunAs}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if out != nil {
		cmd.Stdout = io.MultiWriter(&stdout, out)
	}
	p.logger.Debug("running", "command", command, "args", args)
	err := cmd.Run()
	if err == nil {
		return stdout.Bytes(), nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		return stdout.Bytes(), &Error{Command: command, Code: ee.ExitCode(), Message: msg}
	}
	return stdout.Bytes(), fmt.Errorf("run pgbackrest %s: %w", command, err)
}

// StanzaCreate creates the stanza, or checks that the existing one
// belongs to this cluster (pgBackRest refuses a different system id).
func (p *PgBackRest) StanzaCreate(ctx context.Context) error {
	_, err := p.run(ctx, nil, "stanza-create")
	return err
}

// Check runs pgBackRest's check: the repository and WAL archiving work.
func (p *PgBackRest) Check(ctx context.Context) error {
	_, err := p.run(ctx, nil, "check")
	return err
}

// BackupTypes are the types Backup takes.
var BackupTypes = []string{"full", "diff", "incr"}

// Backup takes a backup of the local PostgreSQL (which must be the
// primary) and writes pgBackRest's progress lines to progress.
func (p *PgBackRest) Backup(ctx context.Context, typ string, progress io.Writer) error {
	return p.BackupFrom(ctx, typ, progress, Source{})
}

// Info lists the stanza's backups and WAL archive range.
func (p *PgBackRest) Info(ctx context.Context) (Info, error) {
	out, err := p.run(ctx, nil, "info", "--output=json")
	if err != nil {
		return Info{}, err
	}
	infos, err := ParseInfo(out)
	if err != nil {
		return Info{}, err
	}
	for _, in := range infos {
		if in.Name != p.cfg.Stanza {
			continue
		}
		// pgBackRest exits 0 whatever the stanza's state: 0 ok, 2 no
		// valid backup yet and 6 a backup or expire running are fine;
		// the others (missing stanza, database mismatch, ...) are not.
		if in.Code != 0 && in.Code != 2 && in.Code != 6 {
			return in, &Error{Command: "info", Code: in.Code, Message: "stanza " + in.Name + " in repository " + p.cfg.RepoPath + ": " + in.Status}
		}
		return in, nil
	}
	return Info{}, fmt.Errorf("pgbackrest info: no stanza %q in the repository", p.cfg.Stanza)
}

// RestoreOptions say what Restore restores.
type RestoreOptions struct {
	// Standby restores the newest backup for a standby.
	Standby bool
	// TargetTime, TargetLSN or TargetName (at most one) choose the backup
	// set for a point-in-time recovery: pgBackRest picks, for a time, the
	// newest set that ended before it. PostgreSQL's recovery settings are
	// the caller's (raftgres writes its own).
	TargetTime, TargetLSN, TargetName string
	// Set is the backup label to restore (default: as above).
	Set string
}

// Restore restores a backup of the stanza into dir, an empty directory
// (pgBackRest's pg1-path is overridden for this command), logging
// pgBackRest's progress.
func (p *PgBackRest) Restore(ctx context.Context, dir string, o RestoreOptions) error {
	args := []string{"--pg1-path=" + dir, "--log-level-console=info"}
	switch {
	case o.Standby:
		args = append(args, "--type=standby")
	case o.TargetTime != "":
		args = append(args, "--type=time", "--target="+o.TargetTime, "--target-action=promote")
	case o.TargetLSN != "":
		args = append(args, "--type=lsn", "--target="+o.TargetLSN, "--target-action=promote")
	case o.TargetName != "":
		args = append(args, "--type=name", "--target="+o.TargetName, "--target-action=promote")
	}
	if o.Set != "" {
		args = append(args, "--set="+o.Set)
	}
	w := &lineLogger{logger: p.logger}
	_, err := p.run(ctx, w, "restore", args...)
	w.flush()
	return err
}

// lineLogger logs pgBackRest's output one line at a time.
type lineLogger struct {
	logger hclog.Logger
	buf    []byte
}

func (l *lineLogger) Write(b []byte) (int, error) {
	l.buf = append(l.buf, b...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		if line := strings.TrimSpace(string(l.buf[:i])); line != "" {
			l.logger.Info(line)
		}
		l.buf = l.buf[i+1:]
	}
}

func (l *lineLogger) flush() {
	if line := strings.TrimSpace(string(l.buf)); line != "" {
		l.logger.Info(line)
	}
	l.buf = nil
}

// Endpoint is how pgBackRest on another member's host reaches this
// member's PostgreSQL: through this host's TLS server, which then
// connects to PostgreSQL on its Unix socket as User.
type Endpoint struct {
	Member     string `json:"member"`
	Server     string `json:"server"` // the TLS server's host:port
	PGPath     string `json:"pg_path"`
	PGPort     string `json:"pg_port"`
	SocketPath string `json:"socket_path"`
	User       string `json:"user"`
}

// Endpoint is this member's endpoint (Server empty when the TLS server
// is off).
func (p *PgBackRest) Endpoint(member string) Endpoint {
	return Endpoint{Member: member, Server: p.cfg.Server.Listen, PGPath: p.target.DataDir, PGPort: p.target.Port,
		SocketPath: p.target.SocketDir, User: p.target.User}
}

// ServerEnabled reports whether this host runs pgBackRest's TLS server.
func (p *PgBackRest) ServerEnabled() bool { return p.cfg.Server.Enabled() }

// RunServer runs pgBackRest's TLS server until ctx ends or the server
// exits (its error then). The server dies with the agent (parent-death
// signal).
func (p *PgBackRest) RunServer(ctx context.Context) error {
	if err := writeAtomic(p.serverConfigFile(), p.RenderServer()); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, p.cfg.Bin, "--config="+p.serverConfigFile(), "--log-level-console=warn", "server")
	cmd.Env = p.env()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM, Credential: p.RunAs}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	w := &lineLogger{logger: p.logger.Named("server")}
	cmd.Stdout, cmd.Stderr = w, w
	p.logger.Info("pgbackrest TLS server starting", "listen", p.cfg.Server.Listen, "clients", strings.Join(p.clients, ","))
	err := cmd.Run()
	w.flush()
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("pgbackrest TLS server on %s exited: %w", p.cfg.Server.Listen, err)
}

// Source is one PostgreSQL of a backup: this host's (Remote nil) or
// another member's, reached through its TLS server.
type Source struct {
	Remote *Endpoint
}

// BackupFrom takes a backup whose primary is sources[0]; with a second
// source the files are copied from that standby (pgBackRest's
// backup-standby: the primary only starts and stops the backup). Remote
// sources need this host's certificate (backup.server).
func (p *PgBackRest) BackupFrom(ctx context.Context, typ string, progress io.Writer, sources ...Source) error {
	if !slices.Contains(BackupTypes, typ) {
		return fmt.Errorf("backup type %q: want one of %s", typ, strings.Join(BackupTypes, ", "))
	}
	if len(sources) == 0 || len(sources) > 2 {
		return fmt.Errorf("backup: %d sources, want a primary and at most one standby", len(sources))
	}
	args := []string{"--type=" + typ, "--log-level-console=info"}
	if len(sources) == 2 {
		args = append(args, "--backup-standby")
	}
	for i, src := range sources {
		pg := fmt.Sprintf("--pg%d-", i+1)
		e := src.Remote
		if e == nil {
			args = append(args, pg+"path="+p.target.DataDir, pg+"port="+p.target.Port, pg+"socket-path="+p.target.SocketDir,
				pg+"user="+p.target.User)
			continue
		}
		if !p.cfg.Server.Enabled() {
			return fmt.Errorf("backup: reading %s's PostgreSQL needs pgBackRest's TLS server and this host's certificate (backup.server)", e.Member)
		}
		host, port, err := net.SplitHostPort(e.Server)
		if err != nil {
			return fmt.Errorf("backup: %s's pgBackRest TLS server %q: %w", e.Member, e.Server, err)
		}
		args = append(args, pg+"host="+host, pg+"host-type=tls", pg+"host-port="+port,
			pg+"host-ca-file="+p.cfg.Server.CAFile, pg+"host-cert-file="+p.cfg.Server.CertFile, pg+"host-key-file="+p.cfg.Server.KeyFile,
			pg+"path="+e.PGPath, pg+"port="+e.PGPort, pg+"socket-path="+e.SocketPath, pg+"user="+e.User)
	}
	_, err := p.run(ctx, progress, "backup", args...)
	return err
}
