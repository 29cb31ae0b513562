package pgmanager

import (
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"strconv"
	"strings"
)

// Managed files in the data directory.
const (
	confFile     = "postgresql.conf"      // written by raftgres, includes baseConfFile
	baseConfFile = "postgresql.base.conf" // what initdb wrote, kept as is
	autoConfFile = "postgresql.auto.conf"
	hbaFile      = "pg_hba.conf"
	standbySig   = "standby.signal"
	recoverySig  = "recovery.signal"
)

// recoveryParams are settings raftgres owns: they are stripped from
// postgresql.auto.conf at every configure (pg_basebackup -R and ALTER
// SYSTEM write them there, and auto.conf is read last), and user
// parameters cannot set them.
var recoveryParams = map[string]bool{
	"primary_conninfo": true, "primary_slot_name": true, "recovery_target_timeline": true,
	"restore_command": true, "recovery_target": true, "recovery_target_lsn": true,
	"recovery_target_name": true, "recovery_target_time": true, "recovery_target_xid": true,
	"recovery_target_action": true, "recovery_target_inclusive": true, "standby_mode": true,
	"promote_trigger_file": true, "archive_cleanup_command": true, "recovery_end_command": true,
	"recovery_min_apply_delay": true,
	// Rendered in the managed postgresql.conf from Desired.SyncStandbyNames
	// (the commit gate and the supervisor's sync standby); an ALTER SYSTEM
	// copy, inherited through pg_basebackup or left by a user, would
	// override it because auto.conf is read last.
	"synchronous_standby_names": true,
}

// RecoveryParameter reports whether name is one of the replication and
// recovery settings raftgres owns (user parameters cannot set them).
func RecoveryParameter(name string) bool { return recoveryParams[strings.ToLower(name)] }

// Upstream is the member a standby streams from, or a standby cluster's
// source.
type Upstream struct {
	Name string // member name (for logs)
	// Host is a host, or for a standby cluster's source several separated
	// by commas (libpq picks the one that accepts writes).
	Host string
	Port int
	// Cascade streams from a server that is itself a standby (a standby
	// cluster's standby leader): any server will do, where a primary's
	// standbys insist on one that accepts writes.
	Cascade bool
}

// Addr is host:port (hosts,…:port for several hosts).
func (u Upstream) Addr() string {
	if strings.Contains(u.Host, ",") {
		return u.Host + ":" + strconv.Itoa(u.Port)
	}
	return net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
}

// pickHost adds, for a source of several hosts, target_session_attrs to
// a connection's keywords: libpq then connects to the one that accepts
// writes (pg_basebackup and pg_rewind copy from the source's primary).
func (u *Upstream) pickHost(kv map[string]string) map[string]string {
	if strings.Contains(u.Host, ",") {
		kv["target_session_attrs"] = u.sessionAttrs()
	}
	return kv
}

// sessionAttrs is target_session_attrs for streaming from u.
func (u Upstream) sessionAttrs() string {
	if u.Cascade {
		return "any"
	}
	return "read-write"
}

// ParseUpstream builds an Upstream from a member name and "host:port".
func ParseUpstream(name, addr string) (Upstream, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return Upstream{}, fmt.Errorf("postgres address %q of %s: %w", addr, name, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 {
		return Upstream{}, fmt.Errorf("postgres address %q of %s: bad port", addr, name)
	}
	return Upstream{Name: name, Host: h, Port: port}, nil
}

// Desired is everything the managed postgresql.conf is built from besides
// the static Config.
type Desired struct {
	// ClusterParams are the cluster-wide parameters from the replicated
	// config; local Config.Parameters override them.
	ClusterParams map[string]string
	// Standby, when set, makes this a standby of that upstream.
	Standby *Upstream
	// Replica makes this a standby even without an upstream (read-only,
	// waiting for a primary to be chosen).
	Replica bool
	// Slot is the primary_slot_name to use as a standby ("" for none).
	Slot string
	// SyncStandbyNames is synchronous_standby_names, rendered on every
	// member (a standby ignores it, so one can carry the commit gate's
	// setting before its promotion). Empty means no synchronous standby.
	SyncStandbyNames string
	// ReplicaMethods, when set, replace postgresql.create_replica_methods
	// for a clone (a standby cluster's own).
	ReplicaMethods []string
	// RestoreCommand, when set, is the restore_command of a standby
	// cluster's standby leader (its source's archive): it replaces the
	// backup repository's.
	RestoreCommand string
	// Recovery, when set, makes this a targeted recovery from the WAL
	// archive (recovery.signal) that promotes itself at the target: a
	// cluster created from the backup repository, before it is opened.
	Recovery *RecoveryTarget
}

// IsStandby reports whether d describes a standby.
func (d Desired) IsStandby() bool { return d.Standby != nil || d.Replica }

// enforcedDefaults are the minimums raftgres needs for replication and
// pg_rewind; a user may raise but not remove them.
var enforcedDefaults = map[string]string{
	"wal_level":             "replica",
	"hot_standby":           "on",
	"wal_log_hints":         "on",
	"max_wal_senders":       "10",
	"max_replication_slots": "10",
	"wal_keep_size":         "128MB",
	"hot_standby_feedback":  "on",
	// A slot holds at most this much WAL (PostgreSQL's default is
	// unbounded): past it the slot is invalidated and its standby catches
	// up from the WAL archive or is cloned again, rather than the
	// primary's disk filling for a standby that fell far behind.
	"max_slot_wal_keep_size": "8GB",
	// Standbys retry a lost or failed upstream connection after this long
	// (default 5s): they stream again within a second of a primary restart
	// or crash, so the async-mode loss window stays inside the lease.
	"wal_retrieve_retry_interval": "500ms",
}

// BuildSettings returns the settings of the managed postgresql.conf: the
// enforced defaults, overridden by cluster then local parameters, then the
// settings raftgres owns (addresses, files, recovery,
// synchronous_standby_names, and with postgresql.ssl the TLS files) on top.
func (m *Manager) BuildSettings(d Desired) map[string]string {
	s := maps.Clone(enforcedDefaults)
	maps.Copy(s, d.ClusterParams)
	maps.Copy(s, m.cfg.Parameters)
	for k := range recoveryParams {
		delete(s, k)
	}
	if s["wal_level"] == "minimal" {
		s["wal_level"] = "replica"
	}
	host, port, _ := net.SplitHostPort(m.cfg.Listen)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "*"
	}
	s["listen_addresses"] = host
	s["port"] = port
	s["hba_file"] = filepath.Join(m.cfg.DataDir, hbaFile)
	s["unix_socket_directories"] = m.socketDir()
	s["synchronous_standby_names"] = d.SyncStandbyNames
	maps.Copy(s, m.cfg.sslSettings())
	if m.scope != "" {
		s["cluster_name"] = m.scope
	}
	if a := m.archive; a != nil {
		// Every member archives once it is primary (archive_mode on is
		// inert on a standby) and fetches missing WAL from the archive.
		s["archive_mode"], s["archive_command"], s["restore_command"] = "on", a.Command, a.RestoreCommand
	}
	if d.RestoreCommand != "" {
		s["restore_command"] = d.RestoreCommand
	}
	if t := d.Recovery; t != nil {
		for k, v := range map[string]string{"recovery_target_time": t.Time, "recovery_target_lsn": t.LSN, "recovery_target_name": t.Name} {
			if v != "" {
				s[k], s["recovery_target_action"] = v, "promote"
			}
		}
	}
	if d.Standby != nil {
		s["primary_conninfo"] = m.replicationConninfo(*d.Standby)
		s["recovery_target_timeline"] = "latest"
		if d.Slot != "" {
			s["primary_slot_name"] = d.Slot
		}
	}
	return s
}

// RenderManagedConf renders the managed postgresql.conf.
func (m *Manager) RenderManagedConf(d Desired) Rendered {
	header := "Managed by raftgres for member " + m.member + ": edits are overwritten.\n" +
		"Put local settings in postgresql.parameters of the raftgres config."
	r := RenderConf(header, m.BuildSettings(d))
	return rendered("include_if_exists = " + QuoteConfValue(baseConfFile) + "\n" + r.Text)
}

// RenderHBA renders pg_hba.conf: local superuser access for raftgres
// itself first, then the configured lines.
func (m *Manager) RenderHBA() Rendered {
	var b strings.Builder
	b.WriteString("# Managed by raftgres: edits are overwritten. Configure bootstrap.pg_hba.\n")
	method := "peer"
	if m.cfg.Superuser.Password.IsSet() {
		method = "scram-sha-256"
	}
	fmt.Fprintf(&b, "local all %s %s\n", m.cfg.Superuser.Username, method)
	fmt.Fprintf(&b, "local replication %s %s\n", m.cfg.Superuser.Username, method)
	for _, l := range m.cfg.PgHba {
		b.WriteString(strings.TrimSpace(l))
		b.WriteByte('\n')
	}
	return rendered(b.String())
}

// socketDir is where postgres puts its Unix socket: a 0700 directory beside
// the data directory, so only the postgres OS user can connect through it,
// no root-owned run directory is needed, and pg_basebackup never meets the
// socket file.
func (m *Manager) socketDir() string { return SocketDir(m.cfg.DataDir) }

// SocketDir is the Unix socket directory of the data directory dataDir.
func SocketDir(dataDir string) string { return filepath.Clean(dataDir) + ".run" }

// SlotName turns a member name into a valid physical replication slot name
// (lowercase letters, digits and underscores, at most 63 bytes).
func SlotName(member string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(member) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	s := b.String()
	if len(s) > 63 {
		s = s[:63]
	}
	return s
}

// replicationConninfo is primary_conninfo for upstream: the password comes
// from the 0600 pgpass file, never the conninfo itself; TLS is preferred,
// and with postgresql.ssl required and verified (peerConninfo).
func (m *Manager) replicationConninfo(u Upstream) string {
	return m.peerConninfo(map[string]string{
		"host": u.Host, "port": strconv.Itoa(u.Port), "user": m.cfg.Replication.Username,
		"application_name": m.member, "passfile": m.pgpassPath(), "sslmode": "prefer",
		"connect_timeout": "3", "target_session_attrs": u.sessionAttrs(),
	})
}
