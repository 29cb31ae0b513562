package raftstore

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/hashicorp/raft"
)

// LoadTLS builds the mutual TLS configuration shared by the Raft transport:
// this node's certificate, and the cluster CA that every peer's certificate
// (server and client side) must chain to.
func LoadTLS(c TLSConfig) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("load raft tls certificate %s: %w", c.CertFile, err)
	}
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, fmt.Errorf("read raft tls ca %s: %w", c.CAFile, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("raft tls ca %s holds no PEM certificate", c.CAFile)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}, nil
}

// streamLayer is a raft.StreamLayer over TCP, optionally wrapped in mutual
// TLS. With TLS, the listener completes the handshake before handing a
// connection to raft, so a peer without a certificate from the cluster CA
// never reaches the Raft RPC code.
type streamLayer struct {
	net.Listener
	advertise net.Addr
	tls       *tls.Config
}

// newStreamLayer listens on listen, or uses ln when it is not nil.
func newStreamLayer(ln net.Listener, listen string, advertise net.Addr, tlsConf *tls.Config) (*streamLayer, error) {
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", listen); err != nil {
			return nil, fmt.Errorf("listen for raft on %s: %w", listen, err)
		}
	}
	if advertise == nil {
		advertise = ln.Addr()
	}
	return &streamLayer{Listener: ln, advertise: advertise, tls: tlsConf}, nil
}

// Accept returns the next connection whose TLS handshake (if any) succeeded.
// Failed handshakes are closed and skipped so one bad peer cannot stop the
// transport.
func (s *streamLayer) Accept() (net.Conn, error) {
	for {
		c, err := s.Listener.Accept()
		if err != nil || s.tls == nil {
			return c, err
		}
		tc := tls.Server(c, s.tls)
		_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tc.Handshake(); err != nil {
			_ = c.Close()
			continue
		}
		_ = tc.SetDeadline(time.Time{})
		return tc, nil
	}
}

// Addr is the advertised address.
func (s *streamLayer) Addr() net.Addr { return s.advertise }

// Dial opens a connection to a peer, verifying its certificate against the
// cluster CA when TLS is on.
func (s *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return dialPeer(string(addr), timeout, s.tls)
}

func dialPeer(addr string, timeout time.Duration, tlsConf *tls.Config) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if tlsConf == nil {
		return d.Dial("tcp", addr)
	}
	c := tlsConf.Clone()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		c.ServerName = host
	}
	conn, err := tls.DialWithDialer(d, "tcp", addr, c)
	if err != nil {
		return nil, fmt.Errorf("tls handshake with raft peer %s: %w", addr, err)
	}
	return conn, nil
}
