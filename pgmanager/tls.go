package pgmanager

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"raftgres/internal/conf"
)

// sslParams are the settings postgresql.ssl owns while it is set: rendered
// from it into the managed postgresql.conf, refused in
// postgresql.parameters, overridden in the cluster parameters and stripped
// from postgresql.auto.conf (read last, it would win otherwise).
var sslParams = map[string]bool{"ssl": true, "ssl_cert_file": true, "ssl_key_file": true, "ssl_ca_file": true}

// validateSSL checks postgresql.ssl statically (the files themselves are
// checked by CheckSSLFiles).
func (c Config) validateSSL() []error {
	s := c.SSL
	if s == nil {
		return nil
	}
	var errs []error
	for _, f := range []struct{ key, v string }{{"cert_file", s.CertFile}, {"key_file", s.KeyFile}, {"ca_file", s.CAFile}} {
		switch {
		case f.v == "":
			errs = append(errs, conf.Errorf("ssl."+f.key, "is required when ssl is set"))
		case !filepath.IsAbs(f.v) || strings.ContainsAny(f.v, "\n\r\x00"):
			errs = append(errs, conf.Errorf("ssl."+f.key, "must be an absolute path, got %q", f.v))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(c.Parameters)) {
		if sslParams[k] {
			errs = append(errs, conf.Errorf("parameters."+k, "is set by raftgres from postgresql.ssl: remove it here"))
		}
	}
	return errs
}

// sslSettings are the server settings of postgresql.ssl (none when off).
func (c Config) sslSettings() map[string]string {
	s := c.SSL
	if s == nil {
		return nil
	}
	return map[string]string{"ssl": "on", "ssl_cert_file": s.CertFile, "ssl_key_file": s.KeyFile, "ssl_ca_file": s.CAFile}
}

// peerConninfo renders kv, a connection to another member's PostgreSQL.
// With postgresql.ssl it must be TLS, verified against ca_file with the
// host name checked (verify-full), and it presents this member's
// certificate, so pg_hba lines with clientcert= or the cert method work.
func (m *Manager) peerConninfo(kv map[string]string) string {
	if s := m.cfg.SSL; s != nil {
		kv["sslmode"], kv["sslrootcert"], kv["sslcert"], kv["sslkey"] = "verify-full", s.CAFile, s.CertFile, s.KeyFile
	}
	return Conninfo(kv)
}

// tlsTrouble are fragments of libpq and Go TLS errors meaning a
// certificate could not be used or verified.
var tlsTrouble = []string{"certificate", "x509:", "ssl error", "ssl syscall", "tls:", "private key", "sslcert", "sslkey"}

// tlsHint says, for a failed connection to member who at host (either may
// be empty) while postgresql.ssl is set, what is likely wrong; "" when msg
// does not look like a TLS problem.
func (m *Manager) tlsHint(msg, who, host string) string {
	s := m.cfg.SSL
	if s == nil {
		return ""
	}
	low := strings.ToLower(msg)
	if who == "" {
		who = "the upstream"
	}
	if strings.Contains(low, "does not support ssl") || strings.Contains(low, "refused tls") {
		return fmt.Sprintf("%s does not serve TLS: every member needs postgresql.ssl", who)
	}
	for _, f := range tlsTrouble {
		if strings.Contains(low, f) {
			name := "the host of its postgresql.connect_address"
			if host != "" {
				name = fmt.Sprintf("%q (%s)", host, name)
			}
			return fmt.Sprintf("postgresql.ssl is set: the certificate of %s must be signed by a CA in %s and carry %s "+
				"as an IP or DNS subject alternative name, and this member's own certificate and key must load", who, s.CAFile, name)
		}
	}
	return ""
}

// withTLSHint adds tlsHint to err for a connection to src.
func (m *Manager) withTLSHint(err error, src Upstream) error {
	if err == nil {
		return nil
	}
	if h := m.tlsHint(err.Error(), src.Name, src.Host); h != "" {
		return fmt.Errorf("%w (%s)", err, h)
	}
	return err
}

// tlsHintEvery is how often a walreceiver's TLS failure is explained in
// the log (PostgreSQL itself repeats it every wal_retrieve_retry_interval).
const tlsHintEvery = 30 * time.Second

// noteTLSLine watches the postmaster's log for a walreceiver that cannot
// connect to its upstream because of TLS and explains it.
func (m *Manager) noteTLSLine(line string) {
	if !strings.Contains(line, "could not connect to the primary server") {
		return
	}
	h := m.tlsHint(line, "", "")
	if h == "" {
		return
	}
	now := time.Now().UnixNano()
	last := m.tlsHintAt.Load()
	if last != 0 && now-last < int64(tlsHintEvery) || !m.tlsHintAt.CompareAndSwap(last, now) {
		return
	}
	m.logger.Warn("standby cannot connect to its upstream over TLS", "hint", h)
}

// sslUID is the user PostgreSQL and the libpq tools run as: the owner the
// key file must have (or root).
func (m *Manager) sslUID() int {
	if m.runAs != nil {
		return int(m.runAs.Uid)
	}
	return os.Geteuid()
}

// checkSSLKey is CheckSSLKey for this manager's PostgreSQL user.
func (m *Manager) checkSSLKey() error {
	if m.cfg.SSL == nil {
		return nil
	}
	return checkKeyFile(m.cfg.SSL.KeyFile, m.sslUID())
}

// checkKeyFile applies PostgreSQL's (and libpq's) rule for a private key
// file to path, for a server running as uid: owned by uid with no access
// for group or others (0600 or less), or owned by root and readable at
// most by the group (0640 or less). PostgreSQL refuses any other key at
// start, and libpq refuses it as a client key; this says so first, and
// how to fix it.
func checkKeyFile(path string, uid int) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("postgresql.ssl.key_file: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	mode := fi.Mode().Perm()
	switch owner := int(st.Uid); {
	case !fi.Mode().IsRegular():
		return fmt.Errorf("postgresql.ssl.key_file: %s is not a regular file", path)
	case owner != uid && owner != 0:
		return fmt.Errorf("postgresql.ssl.key_file: %s is owned by uid %d: PostgreSQL refuses a key not owned by its own user (uid %d) or root; run chown to that user",
			path, owner, uid)
	case owner == uid && mode&0o077 != 0:
		return fmt.Errorf("postgresql.ssl.key_file: %s is readable by group or others (mode %04o): PostgreSQL refuses such a key; run chmod 600 %s",
			path, mode, path)
	case owner == 0 && owner != uid && mode&0o037 != 0:
		return fmt.Errorf("postgresql.ssl.key_file: %s is owned by root with mode %04o: PostgreSQL accepts at most 0640 then (no access for others); run chmod 640 %s",
			path, mode, path)
	}
	return nil
}

// CheckSSLFiles checks postgresql.ssl's files before anything uses them,
// for PostgreSQL running as uid: the key as checkKeyFile does, the
// certificate and key as a pair, the certificate signed by a CA in
// ca_file and naming the host of connect_address (other members connect
// to that host with sslmode=verify-full, and Go's TLS, used by raftgres's
// own connections, ignores the common name: the host must be a subject
// alternative name). Nothing is checked when postgresql.ssl is not set.
func (c Config) CheckSSLFiles(uid int) error {
	s := c.SSL
	if s == nil {
		return nil
	}
	if err := checkKeyFile(s.KeyFile, uid); err != nil {
		return err
	}
	if _, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile); err != nil {
		return fmt.Errorf("postgresql.ssl: cert_file %s and key_file %s do not load as a pair: %w", s.CertFile, s.KeyFile, err)
	}
	leaf, inter, err := readCertChain(s.CertFile)
	if err != nil {
		return fmt.Errorf("postgresql.ssl.cert_file: %w", err)
	}
	caPEM, err := os.ReadFile(s.CAFile)
	if err != nil {
		return fmt.Errorf("postgresql.ssl.ca_file: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("postgresql.ssl.ca_file: %s holds no PEM certificate", s.CAFile)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("postgresql.ssl.cert_file: %s does not verify against ca_file %s (other members check it with that CA): %w",
			s.CertFile, s.CAFile, err)
	}
	addr := c.ConnectAddress
	if addr == "" {
		addr = c.Listen
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("postgresql.connect_address: %w", err)
	}
	if err := leaf.VerifyHostname(host); err != nil {
		return fmt.Errorf("postgresql.ssl.cert_file: %s does not carry %q, the host of postgresql.connect_address, as a subject alternative name "+
			"(it has DNS names %v and IP addresses %v): other members connect to that host with sslmode=verify-full and would refuse it",
			s.CertFile, host, leaf.DNSNames, leaf.IPAddresses)
	}
	return nil
}

// readCertChain reads a PEM file: the first certificate and a pool of the
// others (intermediates).
func readCertChain(path string) (*x509.Certificate, *x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var leaf *x509.Certificate
	inter := x509.NewCertPool()
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		if leaf == nil {
			leaf = c
		} else {
			inter.AddCert(c)
		}
	}
	if leaf == nil {
		return nil, nil, errors.New(path + " holds no PEM certificate")
	}
	return leaf, inter, nil
}
