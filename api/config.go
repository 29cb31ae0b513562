package api

import (
	"errors"
	"fmt"

	"raftgres/internal/conf"
)

// TLSConfig is restapi.tls: the certificate the API serves HTTPS with.
type TLSConfig struct {
	CertFile string
	KeyFile  string
}

// PeerTLS comes from raft.tls: the CA that signs peer client certificates
// (accepted on internal endpoints) and the certificate this node presents
// when it calls a peer.
type PeerTLS struct {
	CAFile   string
	CertFile string
	KeyFile  string
}

// Config is the restapi: section, plus the cluster token and peer TLS that
// the binary takes from raft:.
type Config struct {
	Listen         string
	ConnectAddress string
	Username       string
	Password       conf.Secret
	TLS            TLSConfig
	// Allowlist (restapi.allowlist) holds the IP addresses and CIDR
	// networks allowed to call any endpoint; with AllowlistIncludeMembers
	// (restapi.allowlist_include_members) the members' hosts are allowed
	// too. Both unset: everyone is.
	Allowlist               []string
	AllowlistIncludeMembers bool
	Token                   conf.Secret
	PeerTLS                 PeerTLS
}

// DefaultConfig is an empty section (listen is required).
func DefaultConfig() Config { return Config{} }

// Validate checks the section; paths are relative to restapi:.
func (c Config) Validate() error {
	var errs []error
	if err := conf.CheckHostPort(c.Listen, true); err != nil {
		errs = append(errs, &conf.FieldError{Path: "listen", Err: err})
	}
	if c.ConnectAddress != "" {
		if err := conf.CheckHostPort(c.ConnectAddress, false); err != nil {
			errs = append(errs, &conf.FieldError{Path: "connect_address", Err: err})
		}
	} else if err := conf.CheckHostPort(c.Listen, false); err == nil {
		// Listen has a concrete host: it doubles as the connect address.
	} else if c.Listen != "" {
		errs = append(errs, conf.Errorf("connect_address", "is required when listen (%s) has no specific host", c.Listen))
	}
	if (c.Username == "") != !c.Password.IsSet() {
		errs = append(errs, conf.Errorf("authentication", "needs both username and password"))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, conf.Errorf("tls", "needs both cert_file and key_file"))
	}
	for i, e := range c.Allowlist {
		if _, err := parseAllowEntry(e); err != nil {
			errs = append(errs, &conf.FieldError{Path: fmt.Sprintf("allowlist[%d]", i), Err: err})
		}
	}
	return errors.Join(errs...)
}

// Connect is the address peers and clients use.
func (c Config) Connect() string {
	if c.ConnectAddress != "" {
		return c.ConnectAddress
	}
	return c.Listen
}

// BaseURL is this member's API base URL.
func (c Config) BaseURL() string {
	if c.TLS.CertFile != "" {
		return "https://" + c.Connect()
	}
	return "http://" + c.Connect()
}
