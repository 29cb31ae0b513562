package testutil

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"testing"
	"time"
)

func TestFreePortNeverRepeats(t *testing.T) {
	seen := map[int]bool{}
	for range 20 {
		p := FreePort(t)
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
}

func TestWaitEvery(t *testing.T) {
	n := 0
	WaitEvery(t, time.Second, time.Millisecond, "three tries", func() (bool, error) {
		n++
		return n == 3, fmt.Errorf("try %d", n)
	})
	if n != 3 {
		t.Fatalf("%d tries, want 3", n)
	}
}

func TestCAIssues(t *testing.T) {
	dir := t.TempDir()
	ca := NewCA(t, dir, "ca", nil)
	cert, key := ca.Issue(t, "pg1", CertOpts{IPs: []string{"127.0.0.1"}, DNS: []string{"localhost"}})
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "localhost"}); err != nil {
		t.Fatalf("issued certificate does not verify: %v", err)
	}
	if fi, _ := os.Stat(key); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v, want 0600", fi.Mode().Perm())
	}
}
