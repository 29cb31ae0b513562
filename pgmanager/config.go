package pgmanager

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"raftgres/internal/conf"
)

// Credentials are a role name and its password.
type Credentials struct {
	Username string
	Password conf.Secret
}

// Callbacks are commands run on PostgreSQL events (postgresql.callbacks).
type Callbacks struct {
	OnStart      string
	OnStop       string
	OnRoleChange string
}

// Hooks are the synchronous scripts postgresql.pre_promote and
// postgresql.before_stop, each bounded by its timeout.
type Hooks struct {
	PrePromote        string
	PrePromoteTimeout time.Duration
	BeforeStop        string
	BeforeStopTimeout time.Duration
}

// User is one entry of bootstrap.users.
type User struct {
	Password conf.Secret
	Options  []string
}

// InitdbOption is one bootstrap.initdb entry: {encoding: UTF8} is
// {encoding UTF8}; a bare "data-checksums" has an empty Value.
type InitdbOption struct {
	Name  string
	Value string
}

// Config is the postgresql: section plus bootstrap.initdb, bootstrap.pg_hba
// and bootstrap.users.
type Config struct {
	Listen         string
	ConnectAddress string
	DataDir        string
	BinDir         string
	Superuser      Credentials
	Replication    Credentials
	Rewind         Credentials
	Parameters     map[string]string
	Callbacks      Callbacks
	Hooks          Hooks
	Initdb         []InitdbOption
	PgHba          []string
	Users          map[string]User
	// ReplicaMethods are postgresql.create_replica_methods: how a new or
	// recloned member gets its data directory, tried in order until one
	// works (MethodPgBackRest, MethodBasebackup); nil is basebackup.
	ReplicaMethods []string
	// BootstrapMethod is bootstrap.method: how the first member creates
	// the cluster (BootstrapInitdb, the default, or BootstrapPgBackRest), and
	// RecoveryTarget (bootstrap.pgbackrest) where a restore stops.
	BootstrapMethod string
	RecoveryTarget  RecoveryTarget
	// SSL is postgresql.ssl (nil: off). When set, PostgreSQL serves TLS
	// with these files and every connection raftgres makes to another
	// member verifies it (sslmode=verify-full), see tls.go.
	SSL *SSL
}

// SSL is postgresql.ssl: this member's certificate and key (the server's,
// and the client's towards other members) and the CA that signed every
// member's certificate. All three are absolute paths.
type SSL struct {
	CertFile string
	KeyFile  string
	CAFile   string
}

// DefaultConfig returns the defaults of the section.
func DefaultConfig() Config {
	return Config{
		BinDir:          "/usr/lib/postgresql/15/bin",
		Superuser:       Credentials{Username: "postgres"},
		Replication:     Credentials{Username: "replicator"},
		Rewind:          Credentials{Username: "rewind_user"},
		Initdb:          []InitdbOption{{Name: "encoding", Value: "UTF8"}, {Name: "data-checksums"}},
		ReplicaMethods:  []string{MethodBasebackup},
		BootstrapMethod: BootstrapInitdb,
	}
}

var (
	identRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]{0,62}$`)
	paramRe = regexp.MustCompile(`^[a-z_][a-z0-9_]*(\.[a-z0-9_]+)?$`)
)

// initdbOptions are the initdb options bootstrap.initdb may set, and
// whether each takes a value. --username, --pwfile and --auth are raftgres's.
var initdbOptions = map[string]bool{
	"encoding": true, "locale": true, "lc-collate": true, "lc-ctype": true, "lc-messages": true,
	"lc-monetary": true, "lc-numeric": true, "lc-time": true, "locale-provider": true, "icu-locale": true,
	"text-search-config": true, "waldir": true, "wal-segsize": true, "data-checksums": false,
	"no-locale": false, "allow-group-access": false,
}

// InitdbOptionAllowed reports whether bootstrap.initdb may set the initdb
// option name (raftgres passes --username, --pwfile and --auth itself).
func InitdbOptionAllowed(name string) bool {
	_, ok := initdbOptions[name]
	return ok
}

// Validate checks the section; paths are relative to postgresql: (the
// bootstrap parts use "^bootstrap." to mean a path from the top).
func (c Config) Validate() error {
	var errs []error
	add := func(path, format string, args ...any) { errs = append(errs, conf.Errorf(path, format, args...)) }
	if err := conf.CheckHostPort(c.Listen, true); err != nil {
		errs = append(errs, &conf.FieldError{Path: "listen", Err: err})
	}
	if c.ConnectAddress != "" {
		if err := conf.CheckHostPort(c.ConnectAddress, false); err != nil {
			errs = append(errs, &conf.FieldError{Path: "connect_address", Err: err})
		}
	} else if conf.CheckHostPort(c.Listen, false) != nil && c.Listen != "" {
		add("connect_address", "is required when listen (%s) has no specific host", c.Listen)
	}
	if c.DataDir == "" || !filepath.IsAbs(c.DataDir) {
		add("data_dir", "must be an absolute path, got %q", c.DataDir)
	}
	if c.BinDir == "" || !filepath.IsAbs(c.BinDir) {
		add("bin_dir", "must be an absolute path, got %q", c.BinDir)
	}
	for path, cr := range map[string]Credentials{"authentication.superuser": c.Superuser,
		"authentication.replication": c.Replication, "authentication.rewind": c.Rewind} {
		if cr.Username == "" && path == "authentication.rewind" {
			continue // pg_rewind then connects as the superuser
		}
		if !identRe.MatchString(cr.Username) {
			add(path+".username", "must be a plain role name, got %q", cr.Username)
		}
		if err := checkPassword(cr.Password); err != nil {
			errs = append(errs, &conf.FieldError{Path: path + ".password", Err: err})
		}
	}
	for k, v := range c.Parameters {
		if !paramRe.MatchString(k) {
			add("parameters."+k, "is not a PostgreSQL parameter name")
		}
		if strings.ContainsAny(v, "\n\r\x00") {
			add("parameters."+k, "must be one line")
		}
	}
	for i, o := range c.Initdb {
		takesValue, ok := initdbOptions[o.Name]
		switch {
		case !ok:
			add(fmt.Sprintf("^bootstrap.initdb[%d]", i), "initdb option %q is not allowed here", o.Name)
		case takesValue && o.Value == "":
			add(fmt.Sprintf("^bootstrap.initdb[%d]", i), "initdb option %q needs a value", o.Name)
		case !takesValue && o.Value != "":
			add(fmt.Sprintf("^bootstrap.initdb[%d]", i), "initdb option %q takes no value", o.Name)
		}
	}
	for i, l := range c.PgHba {
		if f := strings.Fields(l); len(f) < 3 || strings.ContainsAny(l, "\n\r") {
			add(fmt.Sprintf("^bootstrap.pg_hba[%d]", i), "is not a pg_hba.conf line: %q", l)
		}
	}
	errs = append(errs, c.validateMethods()...)
	errs = append(errs, c.validateSSL()...)
	for name, u := range c.Users {
		if !identRe.MatchString(name) {
			add("^bootstrap.users."+name, "must be a plain role name")
		}
		if err := checkPassword(u.Password); err != nil {
			errs = append(errs, &conf.FieldError{Path: "^bootstrap.users." + name + ".password", Err: err})
		}
	}
	return errors.Join(errs...)
}

// checkPassword refuses passwords raftgres cannot pass on safely: non-ASCII
// ones (PostgreSQL's SASLprep may change them, see scramVerifier) and ones
// with line breaks (pgpass files are line based).
func checkPassword(p conf.Secret) error {
	for _, r := range p.Reveal() {
		if r > 0x7e || r < 0x20 {
			return errors.New("must be printable ASCII")
		}
	}
	return nil
}

// HasPasswords reports whether the section holds any password.
func (c Config) HasPasswords() bool {
	if c.Superuser.Password.IsSet() || c.Replication.Password.IsSet() || c.Rewind.Password.IsSet() {
		return true
	}
	for _, u := range c.Users {
		if u.Password.IsSet() {
			return true
		}
	}
	return false
}
