// Package patroni converts a Patroni 3 or 4 configuration file (patroni.yml)
// into a raftgres config file, naming each key it does not carry over.
// raftgres convert-patroni checks the result with config.Check.
package patroni

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"raftgres/config"
	"raftgres/pgmanager"
	"raftgres/raftstore"
)

// Options are convert-patroni's flags, already checked.
type Options struct {
	Source   string           // the Patroni file's name, for the header and messages
	Member   string           // this member's name; "" takes Patroni's name
	RaftAddr string           // raft.listen
	Peers    []raftstore.Peer // raft.bootstrap_peers
	DataDir  string           // the top-level data_dir (raftgres's own state)
	Token    string           // raft.token
}

// Unconverted is a Patroni key convert-patroni did not carry over. It names
// the key, never its value (passwords).
type Unconverted struct {
	Line int    // in the Patroni file
	Path string // the Patroni key
	Why  string
}

// Format is the key as a compiler prints a warning: SOURCE:LINE: KEY: why.
func (u Unconverted) Format(source string) string {
	return fmt.Sprintf("%s:%d: %s: not converted: %s", source, u.Line, u.Path, u.Why)
}

// Conversion is a raftgres config made from a patroni.yml.
type Conversion struct {
	YAML    []byte
	Skipped []Unconverted // in file order
	// From maps a raftgres key path to the line of the Patroni key it was
	// made from (keys set from flags have none).
	From map[string]int
}

// Check loads the converted config with config.Check and returns its
// problems (none: it loads). Each is placed at the line of the Patroni key
// it was made from, or of the key that was not converted and left it
// missing; a problem with Line 0 is about a key the options set, in the
// converted config.
func (c *Conversion) Check() []*config.LineError {
	problems := config.Check("converted config", c.YAML, 0o600).Problems
	from := maps.Clone(c.From)
	if from == nil {
		from = map[string]int{}
	}
	for _, u := range c.Skipped { // a key missing because it was not converted
		if _, ok := from[u.Path]; !ok {
			from[u.Path] = u.Line
		}
	}
	out := make([]*config.LineError, len(problems))
	for i, p := range problems {
		out[i] = &config.LineError{Line: config.LineOf(p.Path, from), Path: p.Path, Msg: p.Msg}
	}
	return out
}

// patroniKey is one key of the Patroni file being converted.
type patroniKey struct {
	path []string
	line int
	val  *yaml.Node
}

func (k patroniKey) String() string { return strings.Join(k.path, ".") }

// A patroniRule converts one Patroni key (or says why not).
type patroniRule func(c *patroniConverter, k patroniKey)

type patroniConverter struct {
	rules   map[string]patroniRule
	out     *yaml.Node // the raftgres config: a mapping
	from    map[string]int
	skipped []Unconverted
	// Read before the walk: the custom bootstrap method and the replica
	// methods, whose sections are named after them.
	bootstrapMethod string
	replicaMethods  map[string]bool
	// Keys Patroni lets override one another, settled after the walk.
	overrides map[string]patroniKey
}

// Reasons shared by several keys.
const (
	whyOwnStore      = "raftgres keeps its own Raft store (see raft:)"
	whyCustomBoot    = "custom bootstrap commands are not supported; bootstrap.method pgbackrest restores from the backup: section"
	whyCustomReplica = "custom replica commands are not supported: raftgres clones with pg_basebackup, or restores with " +
		"create_replica_methods: [pgbackrest] from the backup: section"
	whyRecovery   = "raftgres writes the recovery settings itself"
	whyReclone    = "raftgres reclones a member whose pg_rewind fails"
	whyIdent      = "pg_ident.conf is not managed by raftgres"
	whyNoCallback = "no such callback here"
	whyLibpqOpts  = "raftgres's own connections take no TLS or other libpq options"
	whyClientCert = "the REST API does not check client certificates: peers authenticate with raft.token or raft.tls, " +
		"admins with restapi.authentication"
	whyAllowlist = "the REST API has no address allowlist: use a firewall"
	whyLogging   = "raftgres logs to stderr (the journal under systemd)"
	whyUnknown   = "no such setting in raftgres"
)

// patroniRules maps Patroni key paths ("*" matches any one key) to what
// becomes of them. Anything else is reported as not converted.
func patroniRules() map[string]patroniRule {
	r := map[string]patroniRule{
		"scope":     same,
		"name":      same,
		"namespace": skip("raftgres has no namespace: each cluster has its own Raft store"),
		"ctl":       skip("the raftgres CLI takes -c FILE (this config) or --api URL instead"),
		"citus":     skip("Citus is not supported"),

		"restapi":                           walk,
		"restapi.listen":                    same,
		"restapi.connect_address":           same,
		"restapi.authentication":            walk,
		"restapi.authentication.username":   same,
		"restapi.authentication.password":   same,
		"restapi.certfile":                  to("restapi.tls.cert_file"),
		"restapi.keyfile":                   to("restapi.tls.key_file"),
		"restapi.keyfile_password":          skip("encrypted private keys are not supported: give the agent an unencrypted key file (mode 0600)"),
		"restapi.cafile":                    skip(whyClientCert),
		"restapi.verify_client":             skip(whyClientCert),
		"restapi.allowlist":                 skip(whyAllowlist),
		"restapi.allowlist_include_members": skip(whyAllowlist),

		"bootstrap":                                                            walk,
		"bootstrap.method":                                                     bootstrapMethod,
		"bootstrap.initdb":                                                     initdb,
		"bootstrap.pg_hba":                                                     override,
		"bootstrap.users":                                                      walk,
		"bootstrap.users.*":                                                    walk,
		"bootstrap.users.*.password":                                           same,
		"bootstrap.users.*.options":                                            list,
		"bootstrap.post_init":                                                  skip("no post-bootstrap script here: raftgres creates bootstrap.users itself; run other setup once by hand"),
		"bootstrap.post_bootstrap":                                             skip("no post-bootstrap script here: raftgres creates bootstrap.users itself; run other setup once by hand"),
		"bootstrap.dcs":                                                        walk,
		"bootstrap.dcs.ttl":                                                    same,
		"bootstrap.dcs.loop_wait":                                              same,
		"bootstrap.dcs.retry_timeout":                                          same,
		"bootstrap.dcs.maximum_lag_on_failover":                                same,
		"bootstrap.dcs.synchronous_mode":                                       syncMode,
		"bootstrap.dcs.synchronous_mode_strict":                                boolean,
		"bootstrap.dcs.synchronous_node_count":                                 override,
		"bootstrap.dcs.failsafe_mode":                                          skip("failsafe mode is not supported: a primary cut off from the Raft majority stops at its lease's end"),
		"bootstrap.dcs.standby_cluster":                                        walk,
		"bootstrap.dcs.standby_cluster.host":                                   same,
		"bootstrap.dcs.standby_cluster.port":                                   same,
		"bootstrap.dcs.standby_cluster.primary_slot_name":                      same,
		"bootstrap.dcs.standby_cluster.create_replica_methods":                 list,
		"bootstrap.dcs.standby_cluster.restore_command":                        same,
		"bootstrap.dcs.standby_cluster.*":                                      skip("a standby cluster has host, port, primary_slot_name, create_replica_methods and restore_command here"),
		"bootstrap.dcs.member_slots_ttl":                                       patroniDuration,
		"bootstrap.dcs.slots":                                                  walk,
		"bootstrap.dcs.slots.*":                                                walk,
		"bootstrap.dcs.slots.*.type":                                           same,
		"bootstrap.dcs.slots.*.database":                                       same,
		"bootstrap.dcs.slots.*.plugin":                                         same,
		"bootstrap.dcs.slots.*.*":                                              skip("a permanent slot has type, database and plugin here"),
		"bootstrap.dcs.ignore_slots":                                           ignoreSlots,
		"bootstrap.dcs.postgresql":                                             walk,
		"bootstrap.dcs.postgresql.use_pg_rewind":                               override,
		"bootstrap.dcs.postgresql.use_slots":                                   boolean,
		"bootstrap.dcs.postgresql.parameters":                                  walk,
		"bootstrap.dcs.postgresql.parameters.*":                                parameter,
		"bootstrap.dcs.postgresql.pg_hba":                                      override,
		"bootstrap.dcs.postgresql.pg_ident":                                    skip(whyIdent),
		"bootstrap.dcs.postgresql.recovery_conf":                               skip(whyRecovery),
		"bootstrap.dcs.postgresql.remove_data_directory_on_rewind_failure":     skip(whyReclone),
		"bootstrap.dcs.postgresql.remove_data_directory_on_diverged_timelines": skip(whyReclone),

		"postgresql":                                             walk,
		"postgresql.listen":                                      pgListen,
		"postgresql.connect_address":                             same,
		"postgresql.data_dir":                                    same,
		"postgresql.bin_dir":                                     same,
		"postgresql.authentication":                              walk,
		"postgresql.parameters":                                  walk,
		"postgresql.parameters.*":                                parameter,
		"postgresql.pg_hba":                                      override,
		"postgresql.use_pg_rewind":                               override,
		"postgresql.callbacks":                                   walk,
		"postgresql.callbacks.on_start":                          same,
		"postgresql.callbacks.on_stop":                           same,
		"postgresql.callbacks.on_role_change":                    same,
		"postgresql.callbacks.*":                                 skip(whyNoCallback),
		"postgresql.create_replica_methods":                      replicaMethods,
		"postgresql.basebackup":                                  skip("raftgres runs pg_basebackup with its own options"),
		"postgresql.pgpass":                                      skip("raftgres writes its own 0600 pgpass beside the data directory"),
		"postgresql.use_unix_socket":                             skip("raftgres always uses its own socket directory for local connections"),
		"postgresql.use_unix_socket_repl":                        skip("raftgres always uses its own socket directory for local connections"),
		"postgresql.config_dir":                                  skip("raftgres writes postgresql.conf and pg_hba.conf in the data directory"),
		"postgresql.custom_conf":                                 skip("raftgres writes postgresql.conf itself: move its settings to postgresql.parameters"),
		"postgresql.proxy_address":                               skip("raftgres does not advertise a connection pooler"),
		"postgresql.pg_ident":                                    skip(whyIdent),
		"postgresql.recovery_conf":                               skip(whyRecovery),
		"postgresql.use_slots":                                   skip("Patroni ignores it here too: use_slots is cluster-wide (bootstrap.dcs.postgresql.use_slots)"),
		"postgresql.pre_promote":                                 same,
		"postgresql.before_stop":                                 same,
		"postgresql.remove_data_directory_on_rewind_failure":     skip(whyReclone),
		"postgresql.remove_data_directory_on_diverged_timelines": skip(whyReclone),

		"tags":                   walk,
		"tags.nofailover":        boolean,
		"tags.noloadbalance":     boolean,
		"tags.clonefrom":         boolean,
		"tags.nosync":            boolean,
		"tags.failover_priority": same,
		"tags.replicatefrom":     skip("cascading replication is not supported"),
		"tags.*":                 skip("no such tag here"),

		"watchdog":               walk,
		"watchdog.mode":          watchdogMode,
		"watchdog.device":        same,
		"watchdog.safety_margin": skip("raftgres derives the watchdog timeout from bootstrap.dcs.ttl"),

		"log":        walk,
		"log.level":  patroniLogLevel,
		"log.format": skip("raftgres's log.format is text or json, not a Python format string"),
		"log.*":      skip(whyLogging),
	}
	for _, dcs := range []string{"etcd", "etcd3", "consul", "zookeeper", "kubernetes", "exhibitor", "raft"} {
		r[dcs] = skip(whyOwnStore)
	}
	for _, role := range []string{"superuser", "replication", "rewind"} {
		p := "postgresql.authentication." + role
		r[p], r[p+".username"], r[p+".password"], r[p+".*"] = walk, same, same, skip(whyLibpqOpts)
	}
	return r
}

// outputOrder is the order of keys in the written config, by section.
var outputOrder = map[string][]string{
	"":                       {"scope", "name", "data_dir", "raft", "restapi", "postgresql", "bootstrap", "tags", "watchdog", "log"},
	"raft":                   {"listen", "advertise", "bootstrap_peers", "token"},
	"restapi":                {"listen", "connect_address", "authentication", "tls"},
	"restapi.authentication": {"username", "password"},
	"restapi.tls":            {"cert_file", "key_file"},
	"postgresql": {"listen", "connect_address", "data_dir", "bin_dir", "authentication", "parameters", "callbacks", "pre_promote",
		"before_stop", "create_replica_methods"},
	"postgresql.authentication": {"superuser", "replication", "rewind"},
	"postgresql.callbacks":      {"on_start", "on_stop", "on_role_change"},
	"bootstrap":                 {"dcs", "initdb", "pg_hba", "users"},
	"bootstrap.dcs": {"ttl", "loop_wait", "retry_timeout", "maximum_lag_on_failover", "synchronous_mode", "synchronous_mode_strict",
		"member_slots_ttl", "postgresql", "slots", "ignore_slots"},
	"bootstrap.dcs.postgresql": {"use_pg_rewind", "use_slots", "parameters"},
	"tags":                     {"nofailover", "noloadbalance", "clonefrom", "nosync", "failover_priority"},
	"watchdog":                 {"mode", "device"},
}

// overrideOrder lists, for keys Patroni lets override one another, the
// Patroni keys from the strongest to the weakest and the raftgres key they
// become: Patroni's local postgresql: section wins over the dynamic one
// (bootstrap.dcs), and a postgresql.pg_hba replaces what bootstrap.pg_hba
// added after initdb.
var overrideOrder = []struct {
	from  []string
	to    string
	value func(*yaml.Node) *yaml.Node // the value to write, nil if invalid
	bad   string                      // why an invalid value is not converted
}{
	{[]string{"postgresql.pg_hba", "bootstrap.dcs.postgresql.pg_hba", "bootstrap.pg_hba"}, "bootstrap.pg_hba",
		scalarList, "must be a list of pg_hba.conf lines"},
	{[]string{"postgresql.use_pg_rewind", "bootstrap.dcs.postgresql.use_pg_rewind"}, "bootstrap.dcs.postgresql.use_pg_rewind",
		boolValue, "must be true or false"},
}

// convertPatroni converts a Patroni 3 YAML config into a raftgres config.
// An error means the input or the options cannot be converted at all; keys
// that cannot be converted are listed in Skipped. The result is not yet
// validated (see runConvertPatroni).
func Convert(src []byte, opts Options) (*Conversion, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, fmt.Errorf("%s: %s", opts.Source, config.YAMLSyntaxError(err))
	}
	if len(doc.Content) == 0 || resolveAlias(doc.Content[0]).Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s: not a Patroni config (a YAML mapping of keys)", opts.Source)
	}
	root := resolveAlias(doc.Content[0])
	c := &patroniConverter{rules: patroniRules(), out: &yaml.Node{Kind: yaml.MappingNode}, from: map[string]int{},
		replicaMethods: map[string]bool{}, overrides: map[string]patroniKey{}}
	c.preRead(root)
	c.walk(nil, root)
	c.settleOverrides()
	c.settleNodeCount()

	member := opts.Member
	if member == "" {
		n := lookupNode(root, "name")
		if n == nil || n.Kind != yaml.ScalarNode || n.Value == "" {
			return nil, fmt.Errorf("%s has no name: pass --member NAME", opts.Source)
		}
		member = n.Value
	} else {
		c.set([]string{"name"}, str(member), 0)
	}
	i := slices.IndexFunc(opts.Peers, func(p raftstore.Peer) bool { return p.ID == member })
	if i < 0 {
		return nil, fmt.Errorf("--peers must include this member (%s)", member)
	}
	c.set([]string{"data_dir"}, str(opts.DataDir), 0)
	c.set([]string{"raft", "listen"}, str(opts.RaftAddr), 0)
	if a := opts.Peers[i].Address; a != opts.RaftAddr {
		c.set([]string{"raft", "advertise"}, str(a), 0) // what the peers dial
	}
	peers := &yaml.Node{Kind: yaml.SequenceNode}
	for _, p := range opts.Peers {
		peers.Content = append(peers.Content, str(p.ID+"="+p.Address))
	}
	c.set([]string{"raft", "bootstrap_peers"}, peers, 0)
	c.set([]string{"raft", "token"}, str(opts.Token), 0)
	sortMapping(c.out, "")

	var b bytes.Buffer
	fmt.Fprintf(&b, "# raftgres config of member %s, converted from %s by raftgres convert-patroni.\n",
		oneLine(member), oneLine(opts.Source))
	b.WriteString("# It holds passwords and the cluster token: install it with mode 0600 (chmod 600),\n" +
		"# readable by the agent's user only. Every host of the cluster needs the same raft.token.\n" +
		"# Check it with: raftgres check-config -c FILE\n")
	var body bytes.Buffer
	enc := yaml.NewEncoder(&body)
	enc.SetIndent(2)
	if err := enc.Encode(c.out); err != nil {
		return nil, fmt.Errorf("write the converted config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("write the converted config: %w", err)
	}
	// A blank line before each section, for the eye.
	for i, line := range strings.SplitAfter(body.String(), "\n") {
		if i > 0 && strings.HasSuffix(line, ":\n") && line[0] != ' ' && line[0] != '-' {
			b.WriteByte('\n')
		}
		b.WriteString(line)
	}
	slices.SortStableFunc(c.skipped, func(a, b Unconverted) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Path, b.Path))
	})
	return &Conversion{YAML: b.Bytes(), Skipped: c.skipped, From: c.from}, nil
}

// oneLine keeps a comment on its line: control characters become '?'.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// preRead finds the names that custom method sections are known by.
func (c *patroniConverter) preRead(root *yaml.Node) {
	if n := lookupNode(lookupNode(root, "bootstrap"), "method"); n != nil && n.Kind == yaml.ScalarNode {
		c.bootstrapMethod = n.Value
	}
	if n := lookupNode(lookupNode(root, "postgresql"), "create_replica_methods"); n != nil && n.Kind == yaml.SequenceNode {
		for _, m := range n.Content {
			c.replicaMethods[resolveAlias(m).Value] = true
		}
	}
}

// walk converts every key of the mapping n at path.
func (c *patroniConverter) walk(path []string, n *yaml.Node) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], resolveAlias(n.Content[i+1])
		k := patroniKey{path: append(slices.Clone(path), kn.Value), line: kn.Line, val: vn}
		if vn.Kind == yaml.ScalarNode && vn.Tag == "!!null" {
			continue // a key with no value: Patroni's default, and raftgres's
		}
		if r := c.lookup(k.path); r != nil {
			r(c, k)
		} else {
			c.fallback(k)
		}
	}
}

// lookup finds the rule for path: an exact one, else the pattern with
// the fewest wildcards.
func (c *patroniConverter) lookup(path []string) patroniRule {
	if r, ok := c.rules[strings.Join(path, ".")]; ok {
		return r
	}
	var best patroniRule
	bestStars := len(path) + 1
	for pat, r := range c.rules {
		segs := strings.Split(pat, ".")
		if len(segs) != len(path) {
			continue
		}
		stars, ok := 0, true
		for i, s := range segs {
			switch s {
			case "*":
				stars++
			case path[i]:
			default:
				ok = false
			}
		}
		if ok && stars < bestStars {
			best, bestStars = r, stars
		}
	}
	return best
}

// fallback handles keys no rule names: sections of custom methods, and
// settings raftgres does not have.
func (c *patroniConverter) fallback(k patroniKey) {
	isSection := func(parent string, named bool) bool {
		return len(k.path) == 2 && k.path[0] == parent && (named || lookupNode(k.val, "command") != nil)
	}
	switch {
	case isSection("bootstrap", k.path[len(k.path)-1] == c.bootstrapMethod):
		c.skip(k, whyCustomBoot)
	case isSection("postgresql", c.replicaMethods[k.path[len(k.path)-1]]):
		c.skip(k, whyCustomReplica)
	default:
		c.skip(k, whyUnknown)
	}
}

func (c *patroniConverter) skip(k patroniKey, why string) {
	c.skipped = append(c.skipped, Unconverted{Line: k.line, Path: k.String(), Why: why})
}

// set puts v at path in the output, creating the sections on the way, and
// records the Patroni line it came from.
func (c *patroniConverter) set(path []string, v *yaml.Node, line int) {
	m := c.out
	for i, key := range path {
		j := slices.IndexFunc(pairs(m), func(k *yaml.Node) bool { return k.Value == key })
		if i == len(path)-1 {
			if j >= 0 {
				m.Content[2*j+1] = v
			} else {
				m.Content = append(m.Content, str(key), v)
			}
			break
		}
		if j < 0 {
			m.Content = append(m.Content, str(key), &yaml.Node{Kind: yaml.MappingNode})
			j = len(m.Content)/2 - 1
		}
		m = m.Content[2*j+1]
	}
	p := strings.Join(path, ".")
	if line > 0 {
		c.from[p] = line
	} else {
		delete(c.from, p)
	}
}

// settleOverrides converts, of each group of keys Patroni lets override one
// another, the one in effect, and reports the others when they differ.
func (c *patroniConverter) settleOverrides() {
	for _, g := range overrideOrder {
		var won *patroniKey
		var wonVal *yaml.Node
		for _, p := range g.from {
			k, ok := c.overrides[p]
			if !ok {
				continue
			}
			v := g.value(k.val)
			switch {
			case v == nil:
				c.skip(k, g.bad)
			case won == nil:
				won, wonVal = &k, v
				c.set(strings.Split(g.to, "."), v, k.line)
			case !sameNode(v, wonVal):
				c.skip(k, fmt.Sprintf("%s (line %d) overrides it in Patroni and is converted instead", won, won.line))
			}
		}
	}
}

// settleNodeCount converts synchronous_node_count with
// synchronous_mode: quorum (k of the standbys); otherwise raftgres keeps
// one synchronous standby, and a count above 1 is reported.
func (c *patroniConverter) settleNodeCount() {
	k, ok := c.overrides["bootstrap.dcs.synchronous_node_count"]
	if !ok {
		return
	}
	n, err := strconv.Atoi(strings.TrimSpace(k.val.Value))
	switch {
	case k.val.Kind != yaml.ScalarNode || err != nil || n < 1:
		c.skip(k, "must be a whole number of standbys, at least 1")
	case lookupPath(c.out, "bootstrap", "dcs", "synchronous_mode").Value == "quorum":
		c.set(k.path, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(n)}, k.line)
	case n > 1:
		c.skip(k, "with synchronous_mode: true raftgres keeps one synchronous standby; synchronous_mode: quorum waits for any k")
	}
}

// lookupPath is the value at path in mapping m, or an empty scalar.
func lookupPath(m *yaml.Node, path ...string) *yaml.Node {
	for _, key := range path {
		if m = lookupNode(m, key); m == nil {
			return &yaml.Node{Kind: yaml.ScalarNode}
		}
	}
	return m
}

// syncMode is synchronous_mode: a boolean, or quorum (Patroni 4).
func syncMode(c *patroniConverter, k patroniKey) {
	if k.val.Kind == yaml.ScalarNode && strings.EqualFold(strings.TrimSpace(k.val.Value), "quorum") {
		c.set(k.path, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "quorum"}, k.line)
		return
	}
	v := boolValue(k.val)
	if v == nil {
		c.skip(k, "must be true, false or quorum")
		return
	}
	c.set(k.path, v, k.line)
}

// The rules.

func same(c *patroniConverter, k patroniKey) { c.scalar(k, k.path) }

func to(dst string) patroniRule {
	return func(c *patroniConverter, k patroniKey) { c.scalar(k, strings.Split(dst, ".")) }
}

func (c *patroniConverter) scalar(k patroniKey, dst []string) {
	if k.val.Kind != yaml.ScalarNode {
		c.skip(k, "must be a single value")
		return
	}
	c.set(dst, copyScalar(k.val), k.line)
}

func skip(why string) patroniRule {
	return func(c *patroniConverter, k patroniKey) { c.skip(k, why) }
}

func walk(c *patroniConverter, k patroniKey) {
	if k.val.Kind != yaml.MappingNode {
		c.skip(k, "must be a mapping of keys")
		return
	}
	c.walk(k.path, k.val)
}

func boolean(c *patroniConverter, k patroniKey) {
	v := boolValue(k.val)
	if v == nil {
		c.skip(k, "must be true or false")
		return
	}
	c.set(k.path, v, k.line)
}

func list(c *patroniConverter, k patroniKey) {
	v := scalarList(k.val)
	if v == nil {
		c.skip(k, "must be a list of single values")
		return
	}
	v.Style = yaml.FlowStyle
	c.set(k.path, v, k.line)
}

func override(c *patroniConverter, k patroniKey) { c.overrides[k.String()] = k }

// patroniUnits are the time units Patroni takes after a number.
var patroniUnits = map[string]string{"ms": "ms", "s": "s", "min": "m", "h": "h", "d": "h"}

// patroniDuration converts Patroni's 1800, "1800", "30min", "1h" or
// "2d" into a raftgres duration.
func patroniDuration(c *patroniConverter, k patroniKey) {
	bad := func() { c.skip(k, "must be a number of seconds, or a number with ms, s, min, h or d") }
	if k.val.Kind != yaml.ScalarNode {
		bad()
		return
	}
	v := strings.TrimSpace(k.val.Value)
	i := strings.IndexFunc(v, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		c.set(k.path, str(v), k.line)
		return
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(v[:i]), 64)
	unit, ok := patroniUnits[strings.TrimSpace(v[i:])]
	if err != nil || !ok {
		bad()
		return
	}
	if strings.TrimSpace(v[i:]) == "d" {
		n *= 24
	}
	c.set(k.path, str(strconv.FormatFloat(n, 'f', -1, 64)+unit), k.line)
}

// ignoreSlots converts ignore_slots: a list of matches, each with any of
// name, type, database and plugin.
func ignoreSlots(c *patroniConverter, k patroniKey) {
	const why = "must be a list of {name, type, database, plugin} matches"
	if k.val.Kind != yaml.SequenceNode {
		c.skip(k, why)
		return
	}
	out := &yaml.Node{Kind: yaml.SequenceNode}
	for _, item := range k.val.Content {
		item = resolveAlias(item)
		if item.Kind != yaml.MappingNode {
			c.skip(k, why)
			return
		}
		m := &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle}
		for i := 0; i+1 < len(item.Content); i += 2 {
			key, v := item.Content[i].Value, resolveAlias(item.Content[i+1])
			if !slices.Contains([]string{"name", "type", "database", "plugin"}, key) || v.Kind != yaml.ScalarNode {
				c.skip(k, why)
				return
			}
			m.Content = append(m.Content, str(key), copyScalar(v))
		}
		out.Content = append(out.Content, m)
	}
	c.set(k.path, out, k.line)
}

func bootstrapMethod(c *patroniConverter, k patroniKey) {
	if k.val.Kind == yaml.ScalarNode && k.val.Value == "initdb" {
		return // raftgres's default too
	}
	c.skip(k, whyCustomBoot)
}

func initdb(c *patroniConverter, k patroniKey) {
	if k.val.Kind != yaml.SequenceNode {
		c.skip(k, "must be a list")
		return
	}
	out := &yaml.Node{Kind: yaml.SequenceNode}
	for i, item := range k.val.Content {
		item = resolveAlias(item)
		ik := patroniKey{path: []string{fmt.Sprintf("bootstrap.initdb[%d]", i)}, line: item.Line, val: item}
		var name string
		var v *yaml.Node
		switch {
		case item.Kind == yaml.ScalarNode:
			name, v = item.Value, copyScalar(item)
		case item.Kind == yaml.MappingNode && len(item.Content) == 2 && resolveAlias(item.Content[1]).Kind == yaml.ScalarNode:
			name = item.Content[0].Value
			v = &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle,
				Content: []*yaml.Node{str(name), copyScalar(resolveAlias(item.Content[1]))}}
		default:
			c.skip(ik, "must be an option name or a single {option: value}")
			continue
		}
		if !pgmanager.InitdbOptionAllowed(name) {
			c.skip(ik, "raftgres passes --username, --pwfile and --auth to initdb itself and allows only encoding, locale, "+
				"lc-*, locale-provider, icu-locale, text-search-config, waldir, wal-segsize, data-checksums, no-locale "+
				"and allow-group-access")
			continue
		}
		out.Content = append(out.Content, v)
	}
	if len(out.Content) > 0 {
		c.set(k.path, out, k.line)
	}
}

func replicaMethods(c *patroniConverter, k patroniKey) {
	if k.val.Kind != yaml.SequenceNode {
		c.skip(k, "must be a list")
		return
	}
	out := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
	for i, item := range k.val.Content {
		item = resolveAlias(item)
		ik := patroniKey{path: []string{fmt.Sprintf("%s[%d]", k, i)}, line: item.Line, val: item}
		switch item.Value {
		case pgmanager.MethodBasebackup:
			out.Content = append(out.Content, copyScalar(item))
		case pgmanager.MethodPgBackRest:
			c.skip(ik, "raftgres's pgbackrest method restores from its backup: section, which is not converted: "+
				"add one, then list pgbackrest here again")
		default:
			c.skip(ik, "no such method here: raftgres clones with basebackup, or restores with pgbackrest from the backup: section")
		}
	}
	if len(out.Content) > 0 {
		c.set(k.path, out, k.line)
	}
}

func pgListen(c *patroniConverter, k patroniKey) {
	if k.val.Kind != yaml.ScalarNode {
		c.skip(k, "must be a single value")
		return
	}
	v := copyScalar(k.val)
	if host, port, err := net.SplitHostPort(v.Value); err == nil {
		switch {
		case strings.Contains(host, ","):
			c.skip(k, "raftgres listens on one address: set postgresql.listen to one host:port, or 0.0.0.0:PORT for all")
			return
		case host == "*":
			v.Value, v.Style = net.JoinHostPort("0.0.0.0", port), 0 // all addresses
		}
	}
	c.set(k.path, v, k.line)
}

func watchdogMode(c *patroniConverter, k patroniKey) {
	v := ""
	if k.val.Kind == yaml.ScalarNode {
		v = strings.ToLower(k.val.Value)
	}
	if b, ok := patroniBool(k.val); ok && !b {
		v = "off"
	}
	if v != "off" && v != "automatic" && v != "required" {
		c.skip(k, "must be off, automatic or required")
		return
	}
	c.set(k.path, str(v), k.line)
}

func patroniLogLevel(c *patroniConverter, k patroniKey) {
	var v string
	if k.val.Kind == yaml.ScalarNode {
		switch l := strings.ToLower(k.val.Value); l {
		case "debug", "info", "error":
			v = l
		case "warning", "warn":
			v = "warn"
		case "critical", "fatal":
			v = "error"
		}
	}
	if v == "" {
		c.skip(k, "must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
		return
	}
	c.set(k.path, str(v), k.line)
}

// ownedParameters are PostgreSQL settings raftgres sets itself, and why.
var ownedParameters = map[string]string{
	"listen_addresses":          "set by raftgres from postgresql.listen",
	"port":                      "set by raftgres from postgresql.listen",
	"hba_file":                  "set by raftgres: it manages pg_hba.conf in the data directory",
	"config_file":               "set by raftgres: it manages postgresql.conf in the data directory",
	"data_directory":            "set by raftgres from postgresql.data_dir",
	"unix_socket_directories":   "set by raftgres: it uses its own socket directory beside the data directory",
	"cluster_name":              "set by raftgres from scope",
	"synchronous_standby_names": "set by raftgres (synchronous mode and the commit gate)",
}

func parameter(c *patroniConverter, k patroniKey) {
	name := strings.ToLower(k.path[len(k.path)-1])
	if why, ok := ownedParameters[name]; ok {
		c.skip(k, why)
		return
	}
	if pgmanager.RecoveryParameter(name) {
		c.skip(k, "set by raftgres (replication and recovery)")
		return
	}
	c.scalar(k, k.path)
}

// YAML node helpers.

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// lookupNode is the value of key in mapping m, or nil.
func lookupNode(m *yaml.Node, key string) *yaml.Node {
	m = resolveAlias(m)
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return resolveAlias(m.Content[i+1])
		}
	}
	return nil
}

// pairs lists the keys of mapping m.
func pairs(m *yaml.Node) []*yaml.Node {
	keys := make([]*yaml.Node, 0, len(m.Content)/2)
	for i := 0; i+1 < len(m.Content); i += 2 {
		keys = append(keys, m.Content[i])
	}
	return keys
}

func str(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v} }

// boolValue is n as a boolean node, or nil if n is not a boolean.
func boolValue(n *yaml.Node) *yaml.Node {
	if b, ok := patroniBool(n); ok {
		return boolNode(b)
	}
	return nil
}

func boolNode(b bool) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: fmt.Sprint(b)}
}

// copyScalar copies a scalar's value, tag and quoting, not its comments.
func copyScalar(n *yaml.Node) *yaml.Node {
	style := n.Style & (yaml.SingleQuotedStyle | yaml.DoubleQuotedStyle | yaml.LiteralStyle | yaml.FoldedStyle)
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: n.ShortTag(), Value: n.Value, Style: style}
}

// scalarList copies a list of scalars, or returns nil if n is not one.
func scalarList(n *yaml.Node) *yaml.Node {
	if n.Kind != yaml.SequenceNode {
		return nil
	}
	out := &yaml.Node{Kind: yaml.SequenceNode}
	for _, item := range n.Content {
		item = resolveAlias(item)
		if item.Kind != yaml.ScalarNode {
			return nil
		}
		out.Content = append(out.Content, copyScalar(item))
	}
	return out
}

func sameNode(a, b *yaml.Node) bool {
	if a.Kind != b.Kind || a.Value != b.Value || len(a.Content) != len(b.Content) {
		return false
	}
	for i := range a.Content {
		if !sameNode(a.Content[i], b.Content[i]) {
			return false
		}
	}
	return true
}

// patroniBool reads a boolean as Patroni's YAML 1.1 parser does (true,
// yes, on and their opposites, in three cases).
func patroniBool(n *yaml.Node) (v, ok bool) {
	if n.Kind != yaml.ScalarNode {
		return false, false
	}
	switch n.Value {
	case "true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON":
		return true, true
	case "false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF":
		return false, true
	}
	return false, false
}

// sortMapping orders the keys of mapping m (at path) as outputOrder says,
// keeping the input order of keys it does not list, and recurses.
func sortMapping(m *yaml.Node, path string) {
	if m.Kind != yaml.MappingNode {
		return
	}
	order := outputOrder[path]
	rank := func(key string) int {
		if i := slices.Index(order, key); i >= 0 {
			return i
		}
		return len(order)
	}
	type pair struct{ k, v *yaml.Node }
	ps := make([]pair, 0, len(m.Content)/2)
	for i := 0; i+1 < len(m.Content); i += 2 {
		ps = append(ps, pair{m.Content[i], m.Content[i+1]})
	}
	slices.SortStableFunc(ps, func(a, b pair) int { return cmp.Compare(rank(a.k.Value), rank(b.k.Value)) })
	m.Content = m.Content[:0]
	for _, p := range ps {
		m.Content = append(m.Content, p.k, p.v)
		sortMapping(p.v, keyPath(path, p.k.Value))
	}
}

// keyPath is the dotted path of key under path.
func keyPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
