package raftstore

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"raftgres/internal/conf"
)

// Peer is one voter named in raft.bootstrap_peers ("pg1=127.0.0.1:7001").
type Peer struct {
	ID      string `json:"id"`
	Address string `json:"address"`
}

// TLSConfig turns on mutual TLS between Raft peers when all three files are
// set: every peer presents a certificate signed by the cluster CA and refuses
// one that is not.
type TLSConfig struct {
	CAFile   string
	CertFile string
	KeyFile  string
}

// Enabled reports whether mutual TLS is configured.
func (t TLSConfig) Enabled() bool { return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" }

// Validate checks that the three files come together.
func (t TLSConfig) Validate() error {
	if !t.Enabled() {
		return nil
	}
	var errs []error
	if t.CAFile == "" {
		errs = append(errs, conf.Errorf("ca_file", "is required when tls is set"))
	}
	if t.CertFile == "" {
		errs = append(errs, conf.Errorf("cert_file", "is required when tls is set"))
	}
	if t.KeyFile == "" {
		errs = append(errs, conf.Errorf("key_file", "is required when tls is set"))
	}
	return errors.Join(errs...)
}

// Config is the raft: section plus the timing knobs the binary sets.
type Config struct {
	// NodeID is the Raft server ID: the member name.
	NodeID string
	// Dir holds the bbolt log/stable store and the snapshots.
	Dir string
	// Listen is the TCP address Raft binds; Advertise is the one peers dial
	// (defaults to Listen).
	Listen    string
	Advertise string
	// BootstrapPeers are the voters of a brand-new cluster. Ignored once the
	// node has Raft state.
	BootstrapPeers []Peer
	TLS            TLSConfig
	// AuditKeyFile is raft.audit_key_file: a PEM PKCS#8 Ed25519 private
	// key (mode 0600) that signs the audit exports this member serves.
	// Empty: exports are unsigned.
	AuditKeyFile string

	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	SnapshotThreshold  uint64
	SnapshotInterval   time.Duration
	TrailingLogs       uint64
	SnapshotRetain     int
	// ApplyTimeout bounds a command when the caller's context has no deadline.
	ApplyTimeout time.Duration
}

// DefaultConfig returns timings tuned for a LAN (hashicorp/raft's own
// defaults, 1s, are for a WAN): a lost Raft leader is replaced in about
// one second, at most two (WorstLeaderChange), inside the default lease.
func DefaultConfig() Config {
	return Config{
		HeartbeatTimeout:   500 * time.Millisecond,
		ElectionTimeout:    500 * time.Millisecond,
		LeaderLeaseTimeout: 500 * time.Millisecond, // = heartbeat: a saturated host caused a needless election every ~2 min with 250ms (BenchmarkRaftSoak)
		// Idle followers hear from the leader every CommitTimeout (an
		// AppendEntries that only carries the commit index), besides
		// heartbeats every HeartbeatTimeout/10: 20ms made that most of an
		// idle cluster's CPU, 100ms still a sixth of the Raft leader's
		// RPCs. Nothing waits on it: commands that wake supervisors are
		// followed by a barrier (Store.Apply), which carries their commit
		// index at once, and the holder's renewals (every RenewInterval)
		// carry everyone else's.
		CommitTimeout:     time.Second,
		SnapshotThreshold: 1024,
		SnapshotInterval:  30 * time.Second,
		TrailingLogs:      1024,
		SnapshotRetain:    2,
		ApplyTimeout:      10 * time.Second,
	}
}

// WorstLeaderChange bounds a Raft leader change without split votes: a
// follower notices the silence within 2·HeartbeatTimeout (Raft randomises
// the timeout between one and two) and wins its election within
// 2·ElectionTimeout.
func (c Config) WorstLeaderChange() time.Duration {
	return 2*c.HeartbeatTimeout + 2*c.ElectionTimeout
}

// HeartbeatRPCTimeout is the I/O deadline of one heartbeat to a peer:
// half the heartbeat timeout, so that a peer that stopped answering is
// seen failing well before a follower would start an election.
func (c Config) HeartbeatRPCTimeout() time.Duration {
	return max(c.HeartbeatTimeout/2, 20*time.Millisecond)
}

// HeartbeatSpacing is the least time between two heartbeats to one
// peer: 3/10 of the heartbeat timeout (150ms at the default), so that a
// follower, which starts an election after one to two heartbeat timeouts
// of silence, still hears at least three in its shortest timeout.
// hashicorp/raft sends one every HeartbeatTimeout/10 to /5 (75ms on
// average at 500ms), which is twice the traffic for no gain on a LAN:
// idle, heartbeats were the largest share of the Raft leader's CPU.
func (c Config) HeartbeatSpacing() time.Duration {
	return c.HeartbeatTimeout * 3 / 10
}

// AdvertiseAddr is Advertise, or Listen when Advertise is empty.
func (c Config) AdvertiseAddr() string {
	if c.Advertise != "" {
		return c.Advertise
	}
	return c.Listen
}

// Validate checks the section. Paths in errors are relative to raft:.
func (c Config) Validate() error {
	var errs []error
	if c.NodeID == "" {
		errs = append(errs, conf.Errorf("node_id", "is required"))
	}
	if c.Dir == "" {
		errs = append(errs, conf.Errorf("dir", "is required"))
	}
	if err := CheckHostPort(c.Listen, true); err != nil {
		errs = append(errs, &conf.FieldError{Path: "listen", Err: err})
	}
	if c.Advertise != "" {
		if err := CheckHostPort(c.Advertise, false); err != nil {
			errs = append(errs, &conf.FieldError{Path: "advertise", Err: err})
		}
	} else if h, _, err := net.SplitHostPort(c.Listen); err == nil && (h == "" || net.ParseIP(h).IsUnspecified()) {
		errs = append(errs, conf.Errorf("advertise", "is required when listen (%s) has no specific host", c.Listen))
	}
	seenID := map[string]int{}
	seenAddr := map[string]int{}
	for i, p := range c.BootstrapPeers {
		path := fmt.Sprintf("bootstrap_peers[%d]", i)
		if p.ID == "" {
			errs = append(errs, conf.Errorf(path, "must be name=host:port"))
			continue
		}
		if err := CheckHostPort(p.Address, false); err != nil {
			errs = append(errs, &conf.FieldError{Path: path, Err: err})
		}
		if j, ok := seenID[p.ID]; ok {
			errs = append(errs, conf.Errorf(path, "member %q already listed at bootstrap_peers[%d]", p.ID, j))
		}
		if j, ok := seenAddr[p.Address]; ok {
			errs = append(errs, conf.Errorf(path, "address %s already listed at bootstrap_peers[%d]", p.Address, j))
		}
		seenID[p.ID], seenAddr[p.Address] = i, i
	}
	if len(c.BootstrapPeers) > 0 {
		if i, ok := seenID[c.NodeID]; !ok {
			errs = append(errs, conf.Errorf("bootstrap_peers", "must list this member (%s)", c.NodeID))
		} else if c.BootstrapPeers[i].Address != c.AdvertiseAddr() {
			errs = append(errs, conf.Errorf(fmt.Sprintf("bootstrap_peers[%d]", i),
				"address %s of this member differs from its advertise address %s", c.BootstrapPeers[i].Address, c.AdvertiseAddr()))
		}
	}
	if err := c.TLS.Validate(); err != nil {
		errs = append(errs, conf.Prefix("tls", err))
	}
	if c.AuditKeyFile != "" && !filepath.IsAbs(c.AuditKeyFile) {
		errs = append(errs, conf.Errorf("audit_key_file", "must be an absolute path, got %q", c.AuditKeyFile))
	}
	if c.HeartbeatTimeout <= 0 || c.ElectionTimeout < c.HeartbeatTimeout {
		errs = append(errs, conf.Errorf("election_timeout", "must be at least the heartbeat timeout"))
	}
	if c.LeaderLeaseTimeout <= 0 || c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		errs = append(errs, conf.Errorf("leader_lease_timeout", "must be positive and at most the heartbeat timeout"))
	}
	if c.SnapshotRetain < 1 {
		errs = append(errs, conf.Errorf("snapshot_retain", "must be at least 1"))
	}
	return errors.Join(errs...)
}

// CheckHostPort validates a host:port (see conf.CheckHostPort).
func CheckHostPort(addr string, allowAny bool) error { return conf.CheckHostPort(addr, allowAny) }
