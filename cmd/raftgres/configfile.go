package main

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
)

// The config file as written (DESIGN.md "Config file"). Pointers mark keys
// whose absence means "use the default".
type fileConfig struct {
	Scope      string        `yaml:"scope"`
	Name       string        `yaml:"name"`
	DataDir    string        `yaml:"data_dir"`
	Raft       fileRaft      `yaml:"raft"`
	RestAPI    fileRestAPI   `yaml:"restapi"`
	PostgreSQL *filePostgres `yaml:"postgresql"`
	Bootstrap  fileBootstrap `yaml:"bootstrap"`
	Tags       fileTags      `yaml:"tags"`
	Watchdog   fileWatchdog  `yaml:"watchdog"`
	Backup     *fileBackup   `yaml:"backup"`
	Log        fileLog       `yaml:"log"`
}

// fileBackup is the backup: section (pgBackRest).
type fileBackup struct {
	Stanza     string            `yaml:"stanza"`
	RepoPath   string            `yaml:"repo_path"`
	Options    map[string]string `yaml:"options"`
	Bin        string            `yaml:"bin"`
	ConfigFile string            `yaml:"config_file"`
	LogPath    string            `yaml:"log_path"`
	Server     *fileBackupServer `yaml:"server"`
}

// fileBackupServer is backup.server: pgBackRest's TLS server on this host.
type fileBackupServer struct {
	Listen   string `yaml:"listen"`
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// fileWatchdog is the watchdog: section (mode off|automatic|required).
type fileWatchdog struct {
	Mode   string `yaml:"mode"`
	Device string `yaml:"device"`
}

type fileRaft struct {
	Listen         string      `yaml:"listen"`
	Advertise      string      `yaml:"advertise"`
	BootstrapPeers []string    `yaml:"bootstrap_peers"`
	Join           []string    `yaml:"join"`
	Token          conf.Secret `yaml:"token"`
	TLS            *fileTLS    `yaml:"tls"`
	// AuditKeyFile signs audit exports (PEM PKCS#8 Ed25519, mode 0600).
	AuditKeyFile string `yaml:"audit_key_file"`
	// Raft timings (LAN defaults: raftstore.DefaultConfig).
	HeartbeatTimeout   *conf.Duration `yaml:"heartbeat_timeout"`
	ElectionTimeout    *conf.Duration `yaml:"election_timeout"`
	LeaderLeaseTimeout *conf.Duration `yaml:"leader_lease_timeout"`
	CommitTimeout      *conf.Duration `yaml:"commit_timeout"`
}

type fileTLS struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

type fileCertKey struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

type fileAuth struct {
	Username string      `yaml:"username"`
	Password conf.Secret `yaml:"password"`
}

type fileRestAPI struct {
	Listen         string       `yaml:"listen"`
	ConnectAddress string       `yaml:"connect_address"`
	Authentication *fileAuth    `yaml:"authentication"`
	TLS            *fileCertKey `yaml:"tls"`
	// Allowlist: IP addresses and CIDR networks that may call the API.
	Allowlist               []string `yaml:"allowlist"`
	AllowlistIncludeMembers bool     `yaml:"allowlist_include_members"`
	// CertFile and KeyFile are Patroni's spelling of tls.cert_file and
	// tls.key_file.
	CertFile string `yaml:"certfile"`
	KeyFile  string `yaml:"keyfile"`
}

type filePostgres struct {
	Listen         string            `yaml:"listen"`
	ConnectAddress string            `yaml:"connect_address"`
	DataDir        string            `yaml:"data_dir"`
	BinDir         string            `yaml:"bin_dir"`
	Authentication filePGAuth        `yaml:"authentication"`
	Parameters     map[string]scalar `yaml:"parameters"`
	Callbacks      fileCallbacks     `yaml:"callbacks"`
	// CreateReplicaMethods: pgbackrest, basebackup (tried in order).
	CreateReplicaMethods []string `yaml:"create_replica_methods"`
	// SSL: PostgreSQL serves TLS, and members connect to each other with
	// sslmode=verify-full.
	SSL *fileTLS `yaml:"ssl"`
	// Keys Patroni users have. PgHba is Patroni's per-host pg_hba, used
	// as bootstrap.pg_hba; the others are accepted and ignored (a note):
	// raftgres writes its own pgpass beside the data directory and always
	// connects locally through its own socket directory.
	PgHba             []string `yaml:"pg_hba"`
	Pgpass            string   `yaml:"pgpass"`
	UseUnixSocket     *bool    `yaml:"use_unix_socket"`
	UseUnixSocketRepl *bool    `yaml:"use_unix_socket_repl"`
}

type filePGAuth struct {
	Superuser   *fileAuth `yaml:"superuser"`
	Replication *fileAuth `yaml:"replication"`
	Rewind      *fileAuth `yaml:"rewind"`
}

type fileCallbacks struct {
	OnStart      string `yaml:"on_start"`
	OnStop       string `yaml:"on_stop"`
	OnRoleChange string `yaml:"on_role_change"`
}

type fileBootstrap struct {
	// Method is initdb (default) or pgbackrest (restore from backup:).
	Method     string              `yaml:"method"`
	PgBackRest *fileRestoreTarget  `yaml:"pgbackrest"`
	DCS        fileDCS             `yaml:"dcs"`
	Initdb     []initdbEntry       `yaml:"initdb"`
	PgHba      []string            `yaml:"pg_hba"`
	Users      map[string]fileUser `yaml:"users"`
}

// fileRestoreTarget is bootstrap.pgbackrest: where a cluster created from
// the backup repository stops recovering (none: the end of the archive).
type fileRestoreTarget struct {
	TargetTime string `yaml:"target_time"`
	TargetLSN  string `yaml:"target_lsn"`
	TargetName string `yaml:"target_name"`
	Set        string `yaml:"set"`
}

type fileDCS struct {
	TTL                   *conf.Duration `yaml:"ttl"`
	LoopWait              *conf.Duration `yaml:"loop_wait"`
	RetryTimeout          *conf.Duration `yaml:"retry_timeout"`
	DetectionWindow       *conf.Duration `yaml:"detection_window"`
	MaximumLagOnFailover  *int64         `yaml:"maximum_lag_on_failover"`
	SynchronousMode       *bool          `yaml:"synchronous_mode"`
	SynchronousModeStrict *bool          `yaml:"synchronous_mode_strict"`
	PostgreSQL            fileDCSPG      `yaml:"postgresql"`
}

type fileDCSPG struct {
	UsePgRewind *bool             `yaml:"use_pg_rewind"`
	UseSlots    *bool             `yaml:"use_slots"`
	Parameters  map[string]scalar `yaml:"parameters"`
}

type fileUser struct {
	Password conf.Secret `yaml:"password"`
	Options  []string    `yaml:"options"`
}

type fileTags struct {
	NoFailover       bool `yaml:"nofailover"`
	NoLoadBalance    bool `yaml:"noloadbalance"`
	CloneFrom        bool `yaml:"clonefrom"`
	NoSync           bool `yaml:"nosync"`
	FailoverPriority *int `yaml:"failover_priority"`
}

type fileLog struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// scalar is a YAML scalar kept as its text (PostgreSQL parameters: 100,
// on, '64MB' all become strings).
type scalar string

func (s *scalar) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("must be a single value")
	}
	*s = scalar(n.Value)
	return nil
}

// initdbEntry is one bootstrap.initdb item: "data-checksums" or
// {encoding: UTF8}.
type initdbEntry struct{ Name, Value string }

func (e *initdbEntry) UnmarshalYAML(n *yaml.Node) error {
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
	errs  []*lineError
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

func (d *decoder) fail(path string, line int, format string, args ...any) {
	d.errs = append(d.errs, &lineError{line: line, path: path, msg: fmt.Sprintf(format, args...)})
}

// lineError is one problem in the file.
type lineError struct {
	line int
	path string
	msg  string
}

func (e *lineError) Error() string {
	var b strings.Builder
	if e.line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.line)
	}
	if e.path != "" {
		b.WriteString(e.path + ": ")
	}
	return b.String() + e.msg
}

// located is the problem as compilers print one: FILE:LINE: PATH: MSG.
func (e *lineError) located(file string) string {
	var b strings.Builder
	b.WriteString(file)
	if e.line > 0 {
		fmt.Fprintf(&b, ":%d", e.line)
	}
	b.WriteString(": ")
	if e.path != "" {
		b.WriteString(e.path + ": ")
	}
	return b.String() + e.msg
}

// sortLineErrors orders problems as they appear in the file (file-level
// ones, without a line, first).
func sortLineErrors(errs []*lineError) {
	slices.SortStableFunc(errs, func(a, b *lineError) int {
		return cmp.Or(cmp.Compare(a.line, b.line), cmp.Compare(a.path, b.path), cmp.Compare(a.msg, b.msg))
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
		fields[strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]] = i
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

// yamlSyntaxError turns a YAML parser error ("yaml: line 3: mapping values
// are not allowed in this context") into a problem with its line.
func yamlSyntaxError(err error) *lineError {
	msg := strings.TrimSpace(err.Error())
	if m := yamlLineRe.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &lineError{line: line, msg: m[2]}
	}
	return &lineError{msg: strings.TrimPrefix(msg, "yaml: ")}
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
