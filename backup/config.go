// Package backup drives pgBackRest for the cluster: it owns the backup:
// section of the config, writes pgBackRest's own config file (mode 0600,
// with the repository options passed through), and runs pgBackRest's
// stanza-create, check, backup and info commands. PostgreSQL's
// archive_command and restore_command call pgBackRest with that file.
package backup

import (
	"errors"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"raftgres/internal/conf"
)

// Config is the backup: section. Backups are off when Stanza is empty.
type Config struct {
	// Stanza names the cluster in the repository.
	Stanza string
	// RepoPath is repo1-path: a local or mounted directory (for an object
	// store, set its options in Options and RepoPath to the path inside it).
	RepoPath string
	// Options are more pgBackRest options for the [global] section, passed
	// through as written (repo1-s3-bucket, repo1-retention-full, ...).
	Options map[string]string
	// Bin is the pgbackrest executable.
	Bin string
	// ConfigFile is where raftgres writes pgBackRest's config (0600).
	ConfigFile string
	// LogPath, LockPath and SpoolPath are pgBackRest's working directories.
	LogPath string
	// Server is pgBackRest's TLS server on this host (off when Listen is
	// empty). It lets a backup run on another member's host read this
	// member's PostgreSQL: backups from a replica need it on every member.
	Server ServerConfig
}

// ServerConfig is backup.server: where pgBackRest's TLS server listens
// (a host the other members reach) and its certificate. The same
// certificate is this host's client certificate towards the other
// members' servers, which accept the cluster's member names as client
// CNs: issue each member's certificate with its name as CN, for both
// server and client authentication.
type ServerConfig struct {
	Listen   string
	CAFile   string
	CertFile string
	KeyFile  string
}

// Enabled reports whether the TLS server runs.
func (s ServerConfig) Enabled() bool { return s.Listen != "" }

// DefaultConfig is the section's defaults; ConfigFile and LogPath default
// beside the PostgreSQL data directory (Defaults).
func DefaultConfig() Config {
	return Config{Bin: "/usr/bin/pgbackrest"}
}

// Enabled reports whether backups are configured.
func (c Config) Enabled() bool { return c.Stanza != "" }

// Defaults fills the paths that depend on the data directory: the config
// file and pgBackRest's log, lock and spool directories go next to it.
func (c Config) Defaults(dataDir string) Config {
	base := filepath.Clean(dataDir) + ".pgbackrest"
	if c.ConfigFile == "" {
		c.ConfigFile = filepath.Join(base, "pgbackrest.conf")
	}
	if c.LogPath == "" {
		c.LogPath = filepath.Join(base, "log")
	}
	return c
}

var (
	stanzaRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	optionRe = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
	// pgIndexRe are the pgN-* options: raftgres describes the members.
	pgIndexRe = regexp.MustCompile(`^pg[0-9]+-`)
)

// owned are the options raftgres sets itself: the repository path, where
// PostgreSQL is, and the working directories.
var owned = []string{"stanza", "config", "repo1-path", "log-path", "lock-path", "spool-path",
	"pg1-path", "pg1-port", "pg1-socket-path", "pg1-user", "pg1-host", "backup-standby",
	"tls-server-address", "tls-server-port", "tls-server-auth", "tls-server-ca-file", "tls-server-cert-file", "tls-server-key-file"}

// SecretOption reports whether a pgBackRest option holds a secret (an
// object store key, an encryption passphrase): a config file that sets one
// must not be readable by others.
func SecretOption(name string) bool {
	for _, w := range []string{"key", "secret", "pass", "token"} {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}

// Validate checks the section statically; paths are relative to backup:.
func (c Config) Validate() error {
	if !c.Enabled() {
		if c.RepoPath != "" || len(c.Options) > 0 {
			return conf.Errorf("stanza", "is required when backup: is set")
		}
		return nil
	}
	var errs []error
	if !stanzaRe.MatchString(c.Stanza) {
		errs = append(errs, conf.Errorf("stanza", "must be 1-63 letters, digits, '_', '.' or '-', got %q", c.Stanza))
	}
	if c.RepoPath == "" || !filepath.IsAbs(c.RepoPath) {
		errs = append(errs, conf.Errorf("repo_path", "must be an absolute path, got %q", c.RepoPath))
	}
	if c.Bin == "" || !filepath.IsAbs(c.Bin) {
		errs = append(errs, conf.Errorf("bin", "must be an absolute path, got %q", c.Bin))
	}
	for _, p := range []struct{ key, v string }{{"config_file", c.ConfigFile}, {"log_path", c.LogPath}} {
		if p.v != "" && !filepath.IsAbs(p.v) {
			errs = append(errs, conf.Errorf(p.key, "must be an absolute path, got %q", p.v))
		}
	}
	if sv := c.Server; sv.Enabled() {
		if err := conf.CheckHostPort(sv.Listen, false); err != nil {
			errs = append(errs, &conf.FieldError{Path: "server.listen", Err: err})
		}
		for _, p := range []struct{ key, v string }{{"ca_file", sv.CAFile}, {"cert_file", sv.CertFile}, {"key_file", sv.KeyFile}} {
			if p.v == "" || !filepath.IsAbs(p.v) {
				errs = append(errs, conf.Errorf("server."+p.key, "must be an absolute path, got %q", p.v))
			}
		}
	} else if c.Server != (ServerConfig{}) {
		errs = append(errs, conf.Errorf("server.listen", "is required when backup.server is set"))
	}
	for k, v := range c.Options {
		switch {
		case !optionRe.MatchString(k):
			errs = append(errs, conf.Errorf("options."+k, "is not a pgBackRest option name"))
		case slices.Contains(owned, k) || pgIndexRe.MatchString(k):
			errs = append(errs, conf.Errorf("options."+k, "is set by raftgres (use repo_path, or the postgresql: section)"))
		case strings.ContainsAny(v, "\n\r"):
			errs = append(errs, conf.Errorf("options."+k, "must be one line"))
		}
	}
	return errors.Join(errs...)
}
