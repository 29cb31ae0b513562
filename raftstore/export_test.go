package raftstore

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	good := func() Config {
		c := DefaultConfig()
		c.NodeID, c.Dir, c.Listen = "pg1", "/d", "127.0.0.1:7001"
		c.BootstrapPeers = []Peer{{ID: "pg1", Address: "127.0.0.1:7001"}, {ID: "pg2", Address: "127.0.0.1:7002"}}
		return c
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"good", func(*Config) {}, ""},
		{"bad listen", func(c *Config) { c.Listen = "x" }, "listen: must be host:port"},
		{"any listen needs advertise", func(c *Config) { c.Listen = "0.0.0.0:7001" }, "advertise: is required"},
		{"advertise unspecified", func(c *Config) { c.Advertise = "0.0.0.0:7001" }, "advertise: needs a host"},
		{"duplicate id", func(c *Config) { c.BootstrapPeers[1].ID = "pg1" }, "already listed"},
		{"duplicate address", func(c *Config) { c.BootstrapPeers[1].Address = "127.0.0.1:7001" }, "already listed"},
		{"self missing", func(c *Config) { c.BootstrapPeers = c.BootstrapPeers[1:] }, "must list this member"},
		{"self address differs", func(c *Config) { c.BootstrapPeers[0].Address = "127.0.0.1:7009" }, "differs from its advertise"},
		{"partial tls", func(c *Config) { c.TLS.CAFile = "/ca" }, "tls.cert_file: is required"},
		{"audit key absolute", func(c *Config) { c.AuditKeyFile = "/etc/raftgres/audit.key" }, ""},
		{"audit key relative", func(c *Config) { c.AuditKeyFile = "audit.key" }, "audit_key_file: must be an absolute path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.mod(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	cc := DefaultClusterConfig()
	cc.LoopWait, cc.RetryTimeout = cc.TTL, cc.TTL
	if err := cc.Validate(); err == nil || !strings.Contains(err.Error(), "loop_wait + 2*retry_timeout") {
		t.Fatalf("ttl rule: %v", err)
	}
}

func TestClusterConfigTimingRules(t *testing.T) {
	cases := []struct {
		name           string
		ttl, lw, retry time.Duration
		want           string // substring of the error, "" for valid
	}{
		{"defaults", 3 * time.Second, 300 * time.Millisecond, time.Second, ""},
		{"patroni defaults", 30 * time.Second, 10 * time.Second, 10 * time.Second, ""},
		{"bench timing", 2 * time.Second, 200 * time.Millisecond, 500 * time.Millisecond, ""},
		{"margin too small to fence", 1200 * time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond, "safety margin"},
		{"renewal cannot land within the lease", 3 * time.Second, 1200 * time.Millisecond, 900 * time.Millisecond, "must not exceed the lease"},
		{"patroni rule", 3 * time.Second, 2 * time.Second, time.Second, "loop_wait + 2*retry_timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cc := DefaultClusterConfig()
			cc.TTL, cc.LoopWait, cc.RetryTimeout = tc.ttl, tc.lw, tc.retry
			err := cc.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("valid config refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
			if err == nil && tc.ttl/3 < MinMargin(tc.ttl) {
				t.Fatalf("accepted a ttl whose margin %s is under %s", tc.ttl/3, MinMargin(tc.ttl))
			}
		})
	}
}
