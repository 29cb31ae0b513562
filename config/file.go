package config

import (
	"cmp"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"raftgres/internal/conf"
	"raftgres/raftstore"
)

// File is the config file as written (docs/configuration.md). Pointers
// mark keys whose absence means "use the default"; omitempty lets a File
// built in Go (the demo, the tests) marshal into a file that loads.
type File struct {
	Scope      string    `yaml:"scope,omitempty"`
	Name       string    `yaml:"name,omitempty"`
	DataDir    string    `yaml:"data_dir,omitempty"`
	Raft       Raft      `yaml:"raft,omitempty"`
	RestAPI    RestAPI   `yaml:"restapi,omitempty"`
	PostgreSQL *Postgres `yaml:"postgresql,omitempty"`
	Bootstrap  Bootstrap `yaml:"bootstrap,omitempty"`
	Tags       Tags      `yaml:"tags,omitempty"`
	Watchdog   Watchdog  `yaml:"watchdog,omitempty"`
	VIP        *VIP      `yaml:"vip,omitempty"`
	Backup     *Backup   `yaml:"backup,omitempty"`
	Log        Log       `yaml:"log,omitempty"`
}

// Backup is the backup: section (pgBackRest).
type Backup struct {
	Stanza     string            `yaml:"stanza,omitempty"`
	RepoPath   string            `yaml:"repo_path,omitempty"`
	Options    map[string]string `yaml:"options,omitempty"`
	Bin        string            `yaml:"bin,omitempty"`
	ConfigFile string            `yaml:"config_file,omitempty"`
	LogPath    string            `yaml:"log_path,omitempty"`
	Server     *BackupServer     `yaml:"server,omitempty"`
}

// BackupServer is backup.server: pgBackRest's TLS server on this host.
type BackupServer struct {
	Listen   string `yaml:"listen,omitempty"`
	CAFile   string `yaml:"ca_file,omitempty"`
	CertFile string `yaml:"cert_file,omitempty"`
	KeyFile  string `yaml:"key_file,omitempty"`
}

// VIP is the vip: section: a virtual address only the lease holder holds.
type VIP struct {
	Address   string `yaml:"address,omitempty"`
	Interface string `yaml:"interface,omitempty"`
}

// Watchdog is the watchdog: section (mode off|automatic|required).
type Watchdog struct {
	Mode   string `yaml:"mode,omitempty"`
	Device string `yaml:"device,omitempty"`
}

type Raft struct {
	Listen         string      `yaml:"listen,omitempty"`
	Advertise      string      `yaml:"advertise,omitempty"`
	BootstrapPeers []string    `yaml:"bootstrap_peers,omitempty"`
	Join           []string    `yaml:"join,omitempty"`
	Token          conf.Secret `yaml:"token,omitempty"`
	TLS            *TLS        `yaml:"tls,omitempty"`
	// AuditKeyFile signs audit exports (PEM PKCS#8 Ed25519, mode 0600).
	AuditKeyFile string `yaml:"audit_key_file,omitempty"`
	// Raft timings (LAN defaults: raftstore.DefaultConfig).
	HeartbeatTimeout   *conf.Duration `yaml:"heartbeat_timeout,omitempty"`
	ElectionTimeout    *conf.Duration `yaml:"election_timeout,omitempty"`
	LeaderLeaseTimeout *conf.Duration `yaml:"leader_lease_timeout,omitempty"`
	CommitTimeout      *conf.Duration `yaml:"commit_timeout,omitempty"`
}

type TLS struct {
	CAFile   string `yaml:"ca_file,omitempty"`
	CertFile string `yaml:"cert_file,omitempty"`
	KeyFile  string `yaml:"key_file,omitempty"`
}

type CertKey struct {
	CertFile string `yaml:"cert_file,omitempty"`
	KeyFile  string `yaml:"key_file,omitempty"`
}

type Auth struct {
	Username string      `yaml:"username,omitempty"`
	Password conf.Secret `yaml:"password,omitempty"`
}

type RestAPI struct {
	Listen         string   `yaml:"listen,omitempty"`
	ConnectAddress string   `yaml:"connect_address,omitempty"`
	Authentication *Auth    `yaml:"authentication,omitempty"`
	TLS            *CertKey `yaml:"tls,omitempty"`
	// Allowlist: IP addresses and CIDR networks that may call the API.
	Allowlist               []string `yaml:"allowlist,omitempty"`
	AllowlistIncludeMembers bool     `yaml:"allowlist_include_members,omitempty"`
	// CertFile and KeyFile are Patroni's spelling of tls.cert_file and
	// tls.key_file.
	CertFile string `yaml:"certfile,omitempty"`
	KeyFile  string `yaml:"keyfile,omitempty"`
}

type Postgres struct {
	Listen         string                     `yaml:"listen,omitempty"`
	ConnectAddress string                     `yaml:"connect_address,omitempty"`
	DataDir        string                     `yaml:"data_dir,omitempty"`
	BinDir         string                     `yaml:"bin_dir,omitempty"`
	Authentication PGAuth                     `yaml:"authentication,omitempty"`
	Parameters     map[string]raftstore.Param `yaml:"parameters,omitempty"`
	Callbacks      Callbacks                  `yaml:"callbacks,omitempty"`
	// PrePromote runs after this member took the leader key and before
	// PostgreSQL is promoted: failing, it aborts the promotion.
	// BeforeStop runs before a planned stop; its failure is only logged.
	PrePromote        string         `yaml:"pre_promote,omitempty"`
	PrePromoteTimeout *conf.Duration `yaml:"pre_promote_timeout,omitempty"`
	BeforeStop        string         `yaml:"before_stop,omitempty"`
	BeforeStopTimeout *conf.Duration `yaml:"before_stop_timeout,omitempty"`
	// CreateReplicaMethods: pgbackrest, basebackup (tried in order).
	CreateReplicaMethods []string `yaml:"create_replica_methods,omitempty"`
	// SSL: PostgreSQL serves TLS, and members connect to each other with
	// sslmode=verify-full.
	SSL *TLS `yaml:"ssl,omitempty"`
	// Keys Patroni users have. PgHba is Patroni's per-host pg_hba, used
	// as bootstrap.pg_hba; the others are accepted and ignored (a note):
	// raftgres writes its own pgpass beside the data directory and always
	// connects locally through its own socket directory.
	PgHba             []string `yaml:"pg_hba,omitempty"`
	Pgpass            string   `yaml:"pgpass,omitempty"`
	UseUnixSocket     *bool    `yaml:"use_unix_socket,omitempty"`
	UseUnixSocketRepl *bool    `yaml:"use_unix_socket_repl,omitempty"`
}

type PGAuth struct {
	Superuser   *Auth `yaml:"superuser,omitempty"`
	Replication *Auth `yaml:"replication,omitempty"`
	Rewind      *Auth `yaml:"rewind,omitempty"`
}

type Callbacks struct {
	OnStart      string `yaml:"on_start,omitempty"`
	OnStop       string `yaml:"on_stop,omitempty"`
	OnRoleChange string `yaml:"on_role_change,omitempty"`
}

type Bootstrap struct {
	// Method is initdb (default) or pgbackrest (restore from backup:).
	Method     string              `yaml:"method,omitempty"`
	PgBackRest *RestoreTarget      `yaml:"pgbackrest,omitempty"`
	DCS        raftstore.ConfigDoc `yaml:"dcs,omitempty"`
	Initdb     []InitdbEntry       `yaml:"initdb,omitempty"`
	PgHba      []string            `yaml:"pg_hba,omitempty"`
	Users      map[string]User     `yaml:"users,omitempty"`
}

// RestoreTarget is bootstrap.pgbackrest: where a cluster created from
// the backup repository stops recovering (none: the end of the archive).
type RestoreTarget struct {
	TargetTime string `yaml:"target_time,omitempty"`
	TargetLSN  string `yaml:"target_lsn,omitempty"`
	TargetName string `yaml:"target_name,omitempty"`
	Set        string `yaml:"set,omitempty"`
}

type User struct {
	Password conf.Secret `yaml:"password,omitempty"`
	Options  []string    `yaml:"options,omitempty"`
}

type Tags struct {
	NoFailover       bool `yaml:"nofailover,omitempty"`
	NoLoadBalance    bool `yaml:"noloadbalance,omitempty"`
	CloneFrom        bool `yaml:"clonefrom,omitempty"`
	NoSync           bool `yaml:"nosync,omitempty"`
	FailoverPriority *int `yaml:"failover_priority,omitempty"`
}

type Log struct {
	Level  string `yaml:"level,omitempty"`
	Format string `yaml:"format,omitempty"`
}

// InitdbEntry is one bootstrap.initdb item: "data-checksums" or
// {encoding: UTF8}.
type InitdbEntry struct{ Name, Value string }

// MarshalYAML writes the entry back in the form it is read in.
func (e InitdbEntry) MarshalYAML() (any, error) {
	if e.Value == "" {
		return e.Name, nil
	}
	return map[string]string{e.Name: e.Value}, nil
}

func (e *InitdbEntry) UnmarshalYAML(n *yaml.Node) error {
	switch {
	case n.Kind == yaml.ScalarNode:
		e.Name = n.Value
		return nil
	case n.Kind == yaml.MappingNode && len(n.Content) == 2 && n.Content[1].Kind == yaml.ScalarNode:
		e.Name, e.Value = n.Content[0].Value, n.Content[1].Value
		return nil
	}
	return errors.New("must be an option name or a single {option: value}")
}

// decoder walks a YAML node tree into Go values, so every error (unknown
// key, wrong type) names its key path and line, and it records the line of
// every key for later validation messages.
type decoder struct {
	lines map[string]int
	errs  []*LineError
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

func (d *decoder) fail(path string, line int, format string, args ...any) {
	d.errs = append(d.errs, &LineError{Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// LineError is one problem in the file: its line (0: the whole file),
// its key path (may be empty) and what is wrong.
type LineError struct {
	Line int
	Path string
	Msg  string
}

func (e *LineError) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	return b.String() + e.Msg
}

// located is the problem as compilers print one: FILE:LINE: PATH: MSG.
func (e *LineError) Located(file string) string {
	var b strings.Builder
	b.WriteString(file)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	return b.String() + e.Msg
}

// SortLineErrors orders problems as they appear in the file (file-level
// ones, without a line, first).
func SortLineErrors(errs []*LineError) {
	slices.SortStableFunc(errs, func(a, b *LineError) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Path, b.Path), cmp.Compare(a.Msg, b.Msg))
	})
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // key present with no value: keep the default
	}
	if reflect.PointerTo(v.Type()).Implements(unmarshalerType) {
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.fail(path, n.Line, "%s", cleanYAMLError(err))
		}
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem(), path)
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Map:
		d.decodeMap(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(path, n.Line, "must be a list")
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	default:
		if n.Kind != yaml.ScalarNode {
			d.fail(path, n.Line, "must be a single value")
			return
		}
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.fail(path, n.Line, "%s", cleanYAMLError(err))
		}
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(path, n.Line, "must be a mapping of keys")
		return
	}
	t := v.Type()
	fields := map[string]int{}
	for i := range t.NumField() {
		if name := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]; name != "-" {
			fields[name] = i // "-": not a key of the file (raftstore.ConfigDoc's /config-only keys)
		}
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		p := join(path, k.Value)
		if d.duplicate(seen, k, p) {
			continue
		}
		idx, ok := fields[k.Value]
		if !ok {
			d.fail(p, k.Line, "unknown key%s", suggest(k.Value, fields))
			continue
		}
		d.decode(val, v.Field(idx), p)
	}
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(path, n.Line, "must be a mapping of keys")
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		p := join(path, k.Value)
		if d.duplicate(seen, k, p) {
			continue
		}
		elem := reflect.New(v.Type().Elem()).Elem()
		d.decode(val, elem, p)
		v.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), elem)
	}
}

// duplicate records key k's line and reports (and fails) a key already
// seen in the same mapping.
func (d *decoder) duplicate(seen map[string]int, k *yaml.Node, path string) bool {
	if k.Kind != yaml.ScalarNode {
		d.fail(path, k.Line, "keys must be plain names")
		return true
	}
	if first, ok := seen[k.Value]; ok {
		d.fail(path, k.Line, "key already defined at line %d", first)
		return true
	}
	seen[k.Value] = k.Line
	d.lines[path] = k.Line
	return false
}

// suggest names a known key close to an unknown one.
func suggest(key string, fields map[string]int) string {
	best, bestD := "", 3
	for f := range fields {
		if d := editDistance(key, f); d < bestD {
			best, bestD = f, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

var yamlLineRe = regexp.MustCompile(`^yaml: line ([0-9]+): (.*)$`)

// YAMLSyntaxError turns a YAML parser error ("yaml: line 3: mapping values
// are not allowed in this context") into a problem with its line.
func YAMLSyntaxError(err error) *LineError {
	msg := strings.TrimSpace(err.Error())
	if m := yamlLineRe.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &LineError{Line: line, Msg: m[2]}
	}
	return &LineError{Msg: strings.TrimPrefix(msg, "yaml: ")}
}

// cleanYAMLError drops yaml's "yaml: unmarshal errors:\n  line N: " wrapping.
func cleanYAMLError(err error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "yaml: unmarshal errors:\n")
	msg = strings.TrimSpace(msg)
	if strings.HasPrefix(msg, "line ") {
		if _, rest, ok := strings.Cut(msg, ": "); ok {
			msg = rest
		}
	}
	return msg
}
