// Package config is the agent's config file: its schema (File), the strict
// decoder that names the key and line of every problem, Check and Load,
// and the conversion of the file into each package's own Config (Agent).
package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"raftgres/api"
	"raftgres/backup"
	"raftgres/failover"
	"raftgres/internal/conf"
	"raftgres/internal/vip"
	"raftgres/pgmanager"
	"raftgres/raftstore"
)

// Agent is the loaded, validated config file, converted into each
// package's own Config.
type Agent struct {
	Path    string
	Scope   string
	Name    string
	DataDir string
	Raft    raftstore.Config
	// Join lists API addresses of existing members (raft.join).
	Join        []string
	Cluster     raftstore.ClusterConfig
	API         api.Config
	Postgres    pgmanager.Config
	HasPostgres bool
	Tags        raftstore.Tags
	Watchdog    failover.WatchdogConfig
	Backup      backup.Config
	Log         Log

	// VIP is the virtual address this member holds while primary under a
	// valid lease (zero: none).
	VIP vip.Config

	// Notes are keys accepted for Patroni's sake that have no effect here
	// (postgresql.pgpass, use_unix_socket), and how a member missing from
	// its bootstrap_peers joins: check-config prints them and the agent
	// logs them once.
	Notes []*LineError
	// joinNote says that this member joins through its bootstrap_peers.
	joinNote error
}

// joinThroughPeers turns the config of a member that is not in its own
// raft.bootstrap_peers (a member's config copied to a new host, its name
// and addresses changed: the runbook's way of adding a host) into a join
// of the existing cluster through those peers' APIs: the peers' hosts
// with this host's REST API port and scheme (raft.join, when set, wins).
// The agent then joins as a nonvoter and becomes a voter once caught up.
func (c *Agent) joinThroughPeers() {
	peers := c.Raft.BootstrapPeers
	if len(peers) == 0 || slices.ContainsFunc(peers, func(p raftstore.Peer) bool { return p.ID == c.Name }) {
		return
	}
	if len(c.Join) == 0 {
		base := c.API.BaseURL()
		scheme, hostport, _ := strings.Cut(base, "://")
		_, port, err := net.SplitHostPort(hostport)
		if err != nil {
			return // restapi's own validation reports it
		}
		for _, p := range peers {
			if host, _, err := net.SplitHostPort(p.Address); err == nil {
				if u := scheme + "://" + net.JoinHostPort(host, port); !slices.Contains(c.Join, u) {
					c.Join = append(c.Join, u)
				}
			}
		}
	}
	c.Raft.BootstrapPeers = nil
	c.joinNote = conf.Errorf("^raft.bootstrap_peers", "this member (%s) is not listed: it joins the existing cluster "+
		"through %s, as a nonvoter first", c.Name, strings.Join(c.Join, ", "))
}

// Report is everything the loader found in one file.
type Report struct {
	// Config is the converted config, nil when there are problems.
	Config *Agent
	// Problems are every reason to refuse the file, in file order.
	Problems []*LineError
	// Notes are keys accepted but ignored, in file order.
	Notes []*LineError
}

// Load reads, checks and converts the config file at path.
func Load(path string) (*Agent, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(path, data, fi.Mode())
	if err != nil {
		return nil, err
	}
	// The files a config names are checked at load too when a bad one
	// would otherwise only show later, in the running agent.
	if c.Raft.AuditKeyFile != "" {
		if _, err := raftstore.LoadAuditKey(c.Raft.AuditKeyFile); err != nil {
			return nil, fmt.Errorf("config %s: raft.audit_key_file: %w", path, err)
		}
	}
	return c, nil
}

var nameRe = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)

// ValidName reports whether s is a valid scope or member name: 1 to 128
// letters, digits, '.', '_' or '-'.
func ValidName(s string) bool { return nameRe.MatchString(s) }

// Parse is the pure core of Load (see Check): the
// converted config, or every problem in one error.
func Parse(path string, data []byte, mode fs.FileMode) (*Agent, error) {
	r := Check(path, data, mode)
	if len(r.Problems) > 0 {
		return nil, configError(path, r.Problems)
	}
	return r.Config, nil
}

// Check is the static check of a config file (check-config and every
// load): strict decoding, the password-permission rule, conversion and
// every section's validation. It reads no other file and no network: paths
// need not exist. All problems are reported together, each with its key
// path and line.
func Check(path string, data []byte, mode fs.FileMode) Report {
	var doc yaml.Node
	err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc)
	switch {
	case errors.Is(err, io.EOF) || err == nil && len(doc.Content) == 0:
		return Report{Problems: []*LineError{{Msg: "empty file"}}}
	case err != nil:
		return Report{Problems: []*LineError{YAMLSyntaxError(err)}}
	}
	d := &decoder{lines: map[string]int{}}
	var f File
	d.decode(doc.Content[0], reflect.ValueOf(&f).Elem(), "")
	problems := d.errs
	if f.hasSecrets() && mode.Perm()&0o077 != 0 {
		problems = append(problems, &LineError{Msg: fmt.Sprintf(
			"holds passwords but is readable by group or others (mode %04o): run chmod 600 %s", mode.Perm(), path)})
	}
	notes := annotate(f.notes(), d.lines)
	SortLineErrors(notes)
	if len(d.errs) > 0 {
		SortLineErrors(problems)
		return Report{Problems: problems, Notes: notes}
	}
	c, errs := f.convert(path)
	errs = append(errs, c.validate()...)
	problems = append(problems, annotate(errs, d.lines)...)
	SortLineErrors(problems)
	if len(problems) > 0 {
		return Report{Problems: problems, Notes: notes}
	}
	if c.joinNote != nil {
		notes = append(notes, annotate([]error{c.joinNote}, d.lines)...)
		SortLineErrors(notes)
	}
	c.Notes = notes
	return Report{Config: c, Notes: notes}
}

func configError(path string, errs []*LineError) error {
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	if len(msgs) == 1 {
		return fmt.Errorf("config %s: %s", path, msgs[0])
	}
	return fmt.Errorf("config %s: %d problems:\n  %s", path, len(msgs), strings.Join(msgs, "\n  "))
}

// annotate turns FieldErrors into lineErrors, finding the line of the key
// (or of its nearest parent present in the file).
func annotate(errs []error, lines map[string]int) []*LineError {
	var out []*LineError
	for _, err := range errs {
		for _, e := range flatten(err) {
			var fe *conf.FieldError
			if !errors.As(e, &fe) {
				out = append(out, &LineError{Msg: e.Error()})
				continue
			}
			p := strings.TrimPrefix(fe.Path, "^")
			out = append(out, &LineError{Line: LineOf(p, lines), Path: p, Msg: fe.Err.Error()})
		}
	}
	return out
}

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// LineOf is the line of key path p in a file whose keys are at lines, or
// of its nearest parent found there; 0 if none is.
func LineOf(p string, lines map[string]int) int {
	for p != "" {
		if l, ok := lines[p]; ok {
			return l
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return 0
}

func (f *File) hasSecrets() bool {
	secrets := []conf.Secret{f.Raft.Token}
	if a := f.RestAPI.Authentication; a != nil {
		secrets = append(secrets, a.Password)
	}
	if pg := f.PostgreSQL; pg != nil {
		for _, a := range []*Auth{pg.Authentication.Superuser, pg.Authentication.Replication, pg.Authentication.Rewind} {
			if a != nil {
				secrets = append(secrets, a.Password)
			}
		}
	}
	for _, u := range f.Bootstrap.Users {
		secrets = append(secrets, u.Password)
	}
	if b := f.Backup; b != nil {
		for k, v := range b.Options {
			if backup.SecretOption(k) {
				secrets = append(secrets, conf.Secret(v))
			}
		}
	}
	return slices.ContainsFunc(secrets, conf.Secret.IsSet)
}

// convert builds each package's Config from the file. Errors here are
// about values that cannot even be converted (a malformed peer).
func (f *File) convert(path string) (*Agent, []error) {
	var errs []error
	c := &Agent{
		Path: path, Scope: f.Scope, Name: f.Name, DataDir: f.DataDir, Join: f.Raft.Join,
		Raft: raftstore.DefaultConfig(), Cluster: raftstore.DefaultClusterConfig(), API: api.DefaultConfig(),
		Postgres: pgmanager.DefaultConfig(), Tags: raftstore.DefaultTags(), Watchdog: failover.DefaultWatchdogConfig(),
		Log: Log{Level: logLevel(cmp.Or(f.Log.Level, "info")), Format: cmp.Or(f.Log.Format, "text")},
	}
	c.Raft.NodeID, c.Raft.Listen, c.Raft.Advertise = f.Name, f.Raft.Listen, f.Raft.Advertise
	c.Raft.AuditKeyFile = f.Raft.AuditKeyFile
	if f.DataDir != "" {
		c.Raft.Dir = filepath.Join(f.DataDir, "raft")
	}
	for i, p := range f.Raft.BootstrapPeers {
		id, addr, ok := strings.Cut(p, "=")
		if !ok || id == "" || addr == "" {
			errs = append(errs, conf.Errorf(fmt.Sprintf("^raft.bootstrap_peers[%d]", i), "must be name=host:port, got %q", p))
			continue
		}
		c.Raft.BootstrapPeers = append(c.Raft.BootstrapPeers, raftstore.Peer{ID: id, Address: addr})
	}
	for dst, src := range map[*time.Duration]*conf.Duration{&c.Raft.HeartbeatTimeout: f.Raft.HeartbeatTimeout,
		&c.Raft.ElectionTimeout: f.Raft.ElectionTimeout, &c.Raft.LeaderLeaseTimeout: f.Raft.LeaderLeaseTimeout,
		&c.Raft.CommitTimeout: f.Raft.CommitTimeout} {
		if src != nil {
			*dst = src.D()
		}
	}
	if t := f.Raft.TLS; t != nil {
		c.Raft.TLS = raftstore.TLSConfig{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile}
		c.API.PeerTLS = api.PeerTLS{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile}
	}
	errs = append(errs, f.convertAPI(c)...)
	c.joinThroughPeers()
	hba, err := f.pgHba()
	if err != nil {
		errs = append(errs, err)
	}
	f.convertDCS(c, hba)
	f.convertPostgres(c, hba)
	c.Tags.NoFailover, c.Tags.NoLoadBalance = f.Tags.NoFailover, f.Tags.NoLoadBalance
	c.Tags.CloneFrom, c.Tags.NoSync = f.Tags.CloneFrom, f.Tags.NoSync
	if f.Tags.FailoverPriority != nil {
		c.Tags.FailoverPriority = *f.Tags.FailoverPriority
	}
	c.Watchdog.Mode = cmp.Or(f.Watchdog.Mode, c.Watchdog.Mode)
	c.Watchdog.Device = cmp.Or(f.Watchdog.Device, c.Watchdog.Device)
	if v := f.VIP; v != nil {
		c.VIP.Interface = v.Interface
		if p, err := netip.ParsePrefix(v.Address); err == nil {
			c.VIP.Address = p
		} else if v.Address != "" {
			errs = append(errs, conf.Errorf("^vip.address", "must be an IPv4 address with its prefix length (10.0.0.10/24), got %q", v.Address))
		} else {
			errs = append(errs, conf.Errorf("^vip.address", "is required in vip:"))
		}
	}
	c.Backup = backup.DefaultConfig()
	if b := f.Backup; b != nil {
		c.Backup.Stanza, c.Backup.RepoPath, c.Backup.Options = b.Stanza, b.RepoPath, b.Options
		c.Backup.Bin = cmp.Or(b.Bin, c.Backup.Bin)
		c.Backup.ConfigFile, c.Backup.LogPath = b.ConfigFile, b.LogPath
		if sv := b.Server; sv != nil {
			c.Backup.Server = backup.ServerConfig{Listen: sv.Listen, CAFile: sv.CAFile, CertFile: sv.CertFile, KeyFile: sv.KeyFile}
		}
	}
	return c, errs
}

func (f *File) convertAPI(c *Agent) []error {
	r := f.RestAPI
	c.API.Listen, c.API.ConnectAddress, c.API.Token = r.Listen, r.ConnectAddress, f.Raft.Token
	c.API.Allowlist, c.API.AllowlistIncludeMembers = slices.Clone(r.Allowlist), r.AllowlistIncludeMembers
	if r.Authentication != nil {
		c.API.Username, c.API.Password = r.Authentication.Username, r.Authentication.Password
	}
	if r.TLS != nil {
		c.API.TLS = api.TLSConfig{CertFile: r.TLS.CertFile, KeyFile: r.TLS.KeyFile}
	}
	// Patroni's restapi.certfile and keyfile are tls.cert_file and key_file.
	var errs []error
	for _, a := range []struct {
		alias, canon string
		v            string
		dst          *string
	}{{"certfile", "cert_file", r.CertFile, &c.API.TLS.CertFile}, {"keyfile", "key_file", r.KeyFile, &c.API.TLS.KeyFile}} {
		switch {
		case a.v == "":
		case *a.dst == "":
			*a.dst = a.v
		case *a.dst != a.v:
			errs = append(errs, conf.Errorf("^restapi."+a.alias, "differs from restapi.tls.%s (the same setting): set only one", a.canon))
		}
	}
	return errs
}

// pgHba is bootstrap.pg_hba, or Patroni's postgresql.pg_hba in its place:
// raftgres has one list of pg_hba lines. Both set and different is an error.
func (f *File) pgHba() ([]string, error) {
	hba := f.Bootstrap.PgHba
	if f.PostgreSQL == nil || len(f.PostgreSQL.PgHba) == 0 {
		return hba, nil
	}
	if len(hba) == 0 {
		return f.PostgreSQL.PgHba, nil
	}
	if !slices.Equal(hba, f.PostgreSQL.PgHba) {
		return hba, conf.Errorf("^postgresql.pg_hba", "differs from bootstrap.pg_hba: raftgres has one list of pg_hba lines "+
			"(bootstrap.pg_hba; postgresql.pg_hba is accepted in its place): keep only one")
	}
	return hba, nil
}

// notes are the keys accepted for Patroni's sake that have no effect.
func (f *File) notes() []error {
	pg := f.PostgreSQL
	if pg == nil {
		return nil
	}
	var notes []error
	if pg.Pgpass != "" {
		where := ""
		if filepath.IsAbs(pg.DataDir) {
			where = " (" + pgmanager.PgpassPath(pg.DataDir) + ")"
		}
		notes = append(notes, conf.Errorf("^postgresql.pgpass",
			"ignored: raftgres writes its own 0600 pgpass file beside the data directory%s", where))
	}
	for key, v := range map[string]*bool{"use_unix_socket": pg.UseUnixSocket, "use_unix_socket_repl": pg.UseUnixSocketRepl} {
		if v != nil {
			where := ""
			if filepath.IsAbs(pg.DataDir) {
				where = " (" + pgmanager.SocketDir(pg.DataDir) + ")"
			}
			notes = append(notes, conf.Errorf("^postgresql."+key,
				"ignored: raftgres always connects locally through its own socket directory%s", where))
		}
	}
	return notes
}

// logLevel maps Patroni's level names (DEBUG, INFO, WARNING, ERROR,
// CRITICAL, any case) onto hclog's; other values are left for validate.
func logLevel(v string) string {
	switch l := strings.ToLower(v); l {
	case "warning":
		return "warn"
	case "critical":
		return "error"
	case "trace", "debug", "info", "warn", "error":
		return l
	}
	return v
}

func (f *File) convertDCS(c *Agent, hba []string) {
	c.Cluster = f.Bootstrap.DCS.Config()
	c.Cluster.PostgreSQL.PgHba = slices.Clone(hba)
}

func (f *File) convertPostgres(c *Agent, hba []string) {
	p := &c.Postgres
	p.PgHba = slices.Clone(hba)
	if len(f.Bootstrap.Initdb) > 0 {
		p.Initdb = nil
		for _, e := range f.Bootstrap.Initdb {
			p.Initdb = append(p.Initdb, pgmanager.InitdbOption{Name: e.Name, Value: e.Value})
		}
	}
	for name, u := range f.Bootstrap.Users {
		if p.Users == nil {
			p.Users = map[string]pgmanager.User{}
		}
		p.Users[name] = pgmanager.User{Password: u.Password, Options: u.Options}
	}
	p.BootstrapMethod = cmp.Or(f.Bootstrap.Method, p.BootstrapMethod)
	if t := f.Bootstrap.PgBackRest; t != nil {
		p.RecoveryTarget = pgmanager.RecoveryTarget{Time: t.TargetTime, LSN: t.TargetLSN, Name: t.TargetName, Set: t.Set}
	}
	pg := f.PostgreSQL
	if pg == nil {
		return
	}
	if pg.CreateReplicaMethods != nil {
		p.ReplicaMethods = slices.Clone(pg.CreateReplicaMethods)
	}
	c.HasPostgres = true
	p.Listen, p.ConnectAddress, p.DataDir = pg.Listen, pg.ConnectAddress, pg.DataDir
	if pg.BinDir != "" {
		p.BinDir = pg.BinDir
	}
	for dst, src := range map[*pgmanager.Credentials]*Auth{&p.Superuser: pg.Authentication.Superuser,
		&p.Replication: pg.Authentication.Replication, &p.Rewind: pg.Authentication.Rewind} {
		if src != nil {
			if src.Username != "" {
				dst.Username = src.Username
			}
			dst.Password = src.Password
		}
	}
	p.Parameters = scalars(pg.Parameters)
	if t := pg.SSL; t != nil {
		p.SSL = &pgmanager.SSL{CertFile: t.CertFile, KeyFile: t.KeyFile, CAFile: t.CAFile}
	}
	p.Callbacks = pgmanager.Callbacks{OnStart: pg.Callbacks.OnStart, OnStop: pg.Callbacks.OnStop, OnRoleChange: pg.Callbacks.OnRoleChange}
	p.Hooks = pgmanager.Hooks{PrePromote: pg.PrePromote, BeforeStop: pg.BeforeStop}
	if pg.PrePromoteTimeout != nil {
		p.Hooks.PrePromoteTimeout = pg.PrePromoteTimeout.D()
	}
	if pg.BeforeStopTimeout != nil {
		p.Hooks.BeforeStopTimeout = pg.BeforeStopTimeout.D()
	}
}

// checkNotGateName refuses a member name that PostgreSQL would take for
// the commit gate's (pgmanager.GateName, in any letter case): the member's
// walsender would then count as the gate in synchronous_standby_names and
// acknowledge commits whatever the lease.
func checkNotGateName(name string) error {
	if pgmanager.IsGateName(name) {
		return fmt.Errorf("%q is reserved: PostgreSQL would take a member of that name (in any letter case) "+
			"for the commit gate %q and let it acknowledge commits in the gate's place", name, pgmanager.GateName)
	}
	return nil
}

// validate runs every section's own validation, with section paths.
func (c *Agent) validate() []error {
	var errs []error
	check := func(prefix string, err error) {
		if err != nil {
			errs = append(errs, conf.Prefix(prefix, err))
		}
	}
	if !nameRe.MatchString(c.Scope) {
		check("scope", fmt.Errorf("is required: letters, digits, '.', '_' or '-', got %q", c.Scope))
	}
	if !nameRe.MatchString(c.Name) {
		check("name", fmt.Errorf("is required: letters, digits, '.', '_' or '-', got %q", c.Name))
	}
	if err := checkNotGateName(c.Name); err != nil {
		check("name", err)
	}
	for i, p := range c.Raft.BootstrapPeers {
		if err := checkNotGateName(p.ID); err != nil {
			errs = append(errs, conf.Errorf(fmt.Sprintf("^raft.bootstrap_peers[%d]", i), "%w", err))
		}
	}
	if !filepath.IsAbs(c.DataDir) {
		check("data_dir", fmt.Errorf("must be an absolute path, got %q", c.DataDir))
	}
	if err := c.Raft.Validate(); err != nil {
		for _, e := range flatten(err) {
			var fe *conf.FieldError
			if errors.As(e, &fe) && (fe.Path == "node_id" || fe.Path == "dir") {
				continue // reported as name / data_dir
			}
			check("raft", e)
		}
	}
	switch {
	case len(c.Raft.BootstrapPeers) == 0 && len(c.Join) == 0:
		check("raft", errors.New("set bootstrap_peers (a new cluster) or join (an existing one)"))
	case len(c.Raft.BootstrapPeers) > 0 && len(c.Join) > 0:
		check("raft.join", errors.New("set only one of bootstrap_peers (a new cluster) and join (an existing one)"))
	}
	for i, j := range c.Join {
		if err := conf.CheckHostPort(strings.TrimPrefix(strings.TrimPrefix(j, "http://"), "https://"), false); err != nil {
			check(fmt.Sprintf("raft.join[%d]", i), err)
		}
	}
	check("restapi", c.API.Validate())
	if !c.API.Token.IsSet() && (c.API.PeerTLS.CAFile == "" || c.API.TLS.CertFile == "") {
		check("raft.token", errors.New("is required unless raft.tls and restapi.tls are both set: peers must authenticate to each other"))
	}
	check("bootstrap.dcs", c.Cluster.Validate())
	if worst := c.Raft.WorstLeaderChange(); c.Cluster.TTL > 0 && worst > c.Cluster.TTL-c.Cluster.TTL/3 {
		check("raft", fmt.Errorf("a Raft leader change can take up to 2·heartbeat_timeout + 2·election_timeout = %s, "+
			"more than the lease (bootstrap.dcs.ttl − ttl/3 = %s): lower the Raft timeouts or raise ttl",
			worst, c.Cluster.TTL-c.Cluster.TTL/3))
	}
	if c.HasPostgres {
		check("postgresql", c.Postgres.Validate())
		checkHooks(c.Postgres.Hooks, c.Cluster.TTL, check)
	}
	check("tags", c.Tags.Validate())
	check("watchdog", c.Watchdog.Validate(c.Cluster.TTL))
	check("vip", c.VIP.Validate())
	if c.VIP.Enabled() && !c.HasPostgres {
		check("vip", errors.New("needs a postgresql: section"))
	}
	check("backup", c.Backup.Validate())
	if c.Backup.Enabled() && !c.HasPostgres {
		check("backup", errors.New("needs a postgresql: section"))
	}
	if c.HasPostgres && !c.Backup.Enabled() {
		if slices.Contains(c.Postgres.ReplicaMethods, pgmanager.MethodPgBackRest) {
			check("postgresql.create_replica_methods", errors.New("pgbackrest needs the backup: section (the repository to restore from)"))
		}
		if c.Postgres.BootstrapMethod == pgmanager.BootstrapPgBackRest {
			check("bootstrap.method", errors.New("pgbackrest needs the backup: section (the repository to restore from)"))
		}
	}
	if !hclogLevels[c.Log.Level] {
		check("log.level", fmt.Errorf("must be trace, debug, info, warn or error (or Patroni's DEBUG, INFO, WARNING, ERROR, CRITICAL), got %q",
			c.Log.Level))
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		check("log.format", fmt.Errorf("must be text or json, got %q", c.Log.Format))
	}
	return errs
}

// checkHooks refuses a negative hook timeout, and a pre_promote_timeout
// the lease (ttl − ttl/3) cannot cover: the hook runs under it. Zero is
// pgmanager.DefaultHookTimeout, which the supervisor cuts short at the
// lease's end.
func checkHooks(h pgmanager.Hooks, ttl time.Duration, check func(string, error)) {
	if h.PrePromoteTimeout < 0 {
		check("postgresql.pre_promote_timeout", fmt.Errorf("must be positive, got %s", h.PrePromoteTimeout))
	} else if lease := ttl - ttl/3; ttl > 0 && h.PrePromoteTimeout >= lease {
		check("postgresql.pre_promote_timeout", fmt.Errorf("%s is not shorter than the lease (bootstrap.dcs.ttl − ttl/3 = %s): "+
			"the promotion waits for the hook under that lease", h.PrePromoteTimeout, lease.Round(time.Millisecond)))
	}
	if h.BeforeStopTimeout < 0 {
		check("postgresql.before_stop_timeout", fmt.Errorf("must be positive, got %s", h.BeforeStopTimeout))
	}
}

var hclogLevels = map[string]bool{"trace": true, "debug": true, "info": true, "warn": true, "error": true}

func scalars(m map[string]raftstore.Param) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = string(v)
	}
	return out
}
