package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"time"

	"raftgres/api"
	"raftgres/backup"
	"raftgres/pgmanager"
)

// PeerClientOptions authenticate this node to its peers' APIs: the cluster
// token, and with raft.tls the peer certificate and cluster CA.
func (c *Agent) PeerClientOptions() (api.ClientOptions, error) {
	// Peers answer within milliseconds on a LAN; a partitioned one must not
	// hold a caller for long (callers with a deadline get it anyway).
	opts := api.ClientOptions{Token: c.API.Token.Reveal(), Timeout: 5 * time.Second}
	p := c.API.PeerTLS
	if p.CAFile == "" && p.CertFile == "" {
		return opts, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if p.CAFile != "" {
		pem, err := os.ReadFile(p.CAFile)
		if err != nil {
			return opts, fmt.Errorf("read peer ca %s: %w", p.CAFile, err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return opts, fmt.Errorf("peer ca %s holds no PEM certificate", p.CAFile)
		}
	}
	if p.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(p.CertFile, p.KeyFile)
		if err != nil {
			return opts, fmt.Errorf("load peer certificate %s: %w", p.CertFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	opts.TLS = tc
	return opts, nil
}

// BackupTarget is the PostgreSQL that this member's pgBackRest backs up
// and restores: its data directory, port, socket directory, superuser and
// pgpass file.
func (c *Agent) BackupTarget() backup.Target {
	_, port, _ := net.SplitHostPort(c.Postgres.Listen)
	return backup.Target{DataDir: c.Postgres.DataDir, Port: port, SocketDir: pgmanager.SocketDir(c.Postgres.DataDir),
		User: c.Postgres.Superuser.Username, PassFile: pgmanager.PgpassPath(c.Postgres.DataDir)}
}
