package api

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns
// their paths and a pool that trusts the certificate.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "raftgres-api"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "api.pem"), filepath.Join(dir, "api-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestRunServesTLS: with restapi.tls the API speaks only HTTPS, admin
// endpoints still need their credentials, and a plain-HTTP client gets
// nothing useful.
func TestRunServesTLS(t *testing.T) {
	st := startStore(t)
	certFile, keyFile, pool := selfSigned(t)
	cfg := adminConfig()
	cfg.Listen = freePort(t)
	cfg.TLS = TLSConfig{CertFile: certFile, KeyFile: keyFile}
	logger := hclog.NewNullLogger()
	srv, err := New(cfg, "test", st, NewProposer(st, ClientOptions{Token: testToken}, logger), logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	base := "https://" + cfg.Listen
	var resp *http.Response
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err = client.Get(base + "/patroni")
		if err == nil || time.Now().After(deadline) {
			break
		}
		var opErr *net.OpError
		if !errors.As(err, &opErr) {
			break
		}
		time.Sleep(20 * time.Millisecond) // polling until the listener is up
	}
	if err != nil {
		t.Fatalf("GET /patroni over TLS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /patroni over TLS: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/pause", nil)
	if resp, err := client.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("POST /pause over TLS without credentials: %v %v", resp, err)
	}
	req, _ = http.NewRequest(http.MethodPost, base+"/pause", nil)
	req.SetBasicAuth(adminUser, adminPass)
	if resp, err := client.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /pause over TLS with credentials: %v %v", resp, err)
	}
	if resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://" + cfg.Listen + "/patroni"); err == nil && resp.StatusCode == http.StatusOK {
		t.Fatal("plain HTTP got a 200 from a TLS-only API")
	}
	bad := &http.Client{Timeout: 2 * time.Second}
	if _, err := bad.Get(base + "/patroni"); err == nil {
		t.Fatal("a client that does not trust the certificate connected")
	}
}
