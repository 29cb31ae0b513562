package raftstore

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// A key pair written by `openssl genpkey -algorithm ed25519` and `openssl
// pkey -pubout`, and the fingerprint `openssl pkey -pubin -outform DER |
// openssl dgst -sha256 -binary | base64` gives for it (README, KeyID).
const (
	opensslKey = `-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIMDx28n5bFW4lhk/cAyyArKsXdKQlinzwwXu6tibWo1Z
-----END PRIVATE KEY-----
`
	opensslPub = `-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAgB3nCAGc/noNnEOXY+Gs0WhzRqLC6lTCa0/qOzIyDTY=
-----END PUBLIC KEY-----
`
	opensslKeyID = "SHA256:s2Afn5ippel6tqGuwoarGU5HiH9BPLYIoOOW0lQSK2U"
)

func testKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

func pubOf(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

func testExportBody(t testing.TB) ExportBody {
	t.Helper()
	return ExportBody{Scope: "demo", ExportedBy: "pg1", ExportedAt: t0, RaftIndex: 42, RaftTerm: 3,
		Voters:  []Server{{ID: "pg1", Address: "127.0.0.1:7001", Suffrage: "Voter"}},
		Config:  DefaultClusterConfig(),
		Members: map[string]*Member{"pg1": {Name: "pg1", APIAddr: "http://pg1:8008", Tags: DefaultTags()}},
		History: []Event{{Index: 1, At: t0, Kind: EventBootstrap, Actor: "pg1"}}}
}

func mustEncode(t testing.TB, body ExportBody, key ed25519.PrivateKey) []byte {
	t.Helper()
	b, err := EncodeExport(body, key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// reDigest recomputes the body digest of a format 2 file after an edit,
// as a forger would.
func reDigest(t testing.TB, b []byte) []byte {
	t.Helper()
	i := bytes.Index(b, []byte("\n  \"body\": "))
	if i < 0 {
		t.Fatal("no body line")
	}
	body := b[i+len("\n  \"body\": ") : len(b)-len("\n}\n")]
	sum := sha256.Sum256(body)
	j := bytes.Index(b, []byte(`"sha256": "`)) + len(`"sha256": "`)
	out := append([]byte{}, b...)
	copy(out[j:], hex.EncodeToString(sum[:]))
	return out
}

func replace(b []byte, old, new string) []byte {
	if !bytes.Contains(b, []byte(old)) {
		panic("replace: " + old + " not found")
	}
	return bytes.Replace(b, []byte(old), []byte(new), 1)
}

func TestExportSignVerify(t *testing.T) {
	t.Parallel()
	keyA, keyB := testKey(1), testKey(2)
	idA, idB := KeyID(pubOf(keyA)), KeyID(pubOf(keyB))
	body := testExportBody(t)
	signed := mustEncode(t, body, keyA)
	unsigned := mustEncode(t, body, nil)
	v1, err := encodeV1(body)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(signed, []byte(`"raft_index": 42`)) || !bytes.Contains(signed, []byte(`"raft_term": 3`)) {
		t.Fatalf("index and term are not in the signed body:\n%s", signed)
	}
	// The signature line removed, the rest untouched: a downgrade.
	stripped := regexpReplace(signed, `  "signature": {[^\n]*},\n`, "")

	for _, tc := range []struct {
		name     string
		file     []byte
		pub      ed25519.PublicKey
		want     error  // nil: accepted
		wantMsg  string // in the error, or "" for any
		verified bool
		keyID    string
	}{
		{name: "signed, right key", file: signed, pub: pubOf(keyA), verified: true, keyID: idA},
		{name: "signed, no key given", file: signed, keyID: idA},
		{name: "unsigned, no key given", file: unsigned},
		{name: "unsigned, key given", file: unsigned, pub: pubOf(keyA), want: ErrExportUnsigned, wantMsg: "no signature"},
		{name: "signature stripped, key given", file: stripped, pub: pubOf(keyA), want: ErrExportUnsigned},
		{name: "format 1, no key given", file: v1},
		{name: "format 1, key given", file: v1, pub: pubOf(keyA), want: ErrExportUnsigned, wantMsg: ExportFormatV1},
		{name: "wrong key", file: signed, pub: pubOf(keyB), want: ErrExportWrongKey,
			wantMsg: "signed by key " + idA + ", not by " + idB},
		{name: "body edited, digest stale", file: replace(signed, `"scope": "demo"`, `"scope": "dema"`), pub: pubOf(keyA),
			want: ErrExportModified, wantMsg: "digest"},
		{name: "body edited, digest recomputed", file: reDigest(t, replace(signed, `"scope": "demo"`, `"scope": "dema"`)),
			pub: pubOf(keyA), want: ErrExportModified, wantMsg: "signature by key " + idA + " does not match"},
		{name: "raft index edited, digest recomputed", file: reDigest(t, replace(signed, `"raft_index": 42`, `"raft_index": 43`)),
			pub: pubOf(keyA), want: ErrExportModified},
		{name: "raft term edited, digest recomputed", file: reDigest(t, replace(signed, `"raft_term": 3`, `"raft_term": 4`)),
			pub: pubOf(keyA), want: ErrExportModified},
		// Without a key, a recomputed digest passes: that is why exports are signed.
		{name: "body edited, digest recomputed, no key", file: reDigest(t, replace(signed, `"scope": "demo"`, `"scope": "dema"`)),
			keyID: idA},
		{name: "unsigned body edited, digest recomputed, no key", file: reDigest(t, replace(unsigned, `"scope": "demo"`, `"scope": "dema"`))},
		{name: "key id swapped for another key's", file: replace(signed, idA, idB), pub: pubOf(keyB), want: ErrExportModified},
		{name: "key id swapped, checked with the signer's key", file: replace(signed, idA, idB), pub: pubOf(keyA),
			want: ErrExportWrongKey, wantMsg: "signed by key " + idB},
		{name: "format 1 body edited", file: replace(v1, `"scope": "demo"`, `"scope": "dema"`), want: ErrExportModified},
		{name: "whitespace outside the body", file: replace(signed, `"format": `, `"format":  `), want: ErrExportMalformed,
			wantMsg: "edited outside the body"},
		{name: "duplicate key", file: replace(signed, `  "sha256"`, `  "format": "raftgres-snapshot/2",`+"\n"+`  "sha256"`),
			want: ErrExportMalformed},
		{name: "unknown key", file: replace(signed, `  "sha256"`, `  "x": 1,`+"\n"+`  "sha256"`), want: ErrExportMalformed, wantMsg: "unknown field"},
		{name: "long unknown key", file: replace(signed, `  "sha256"`, `  "`+strings.Repeat("k", 5000)+`": 1,`+"\n"+`  "sha256"`),
			want: ErrExportMalformed, wantMsg: "unknown field"},
		{name: "trailing data", file: append(append([]byte{}, signed...), "{}\n"...), want: ErrExportMalformed},
		{name: "unknown format", file: replace(signed, ExportFormat, "raftgres-snapshot/9"), want: ErrExportMalformed, wantMsg: "unknown format"},
		{name: "bad algorithm", file: replace(signed, `"algorithm":"ed25519"`, `"algorithm":"rsa"`), pub: pubOf(keyA),
			want: ErrExportMalformed, wantMsg: "algorithm"},
		{name: "signature not base64", file: replace(signed, `"value":"`, `"value":"*`), pub: pubOf(keyA), want: ErrExportMalformed},
		{name: "empty", file: nil, want: ErrExportMalformed, wantMsg: "empty"},
		{name: "not json", file: []byte("hello\n"), want: ErrExportMalformed, wantMsg: "not a raftgres snapshot export"},
		{name: "json, not an export", file: []byte("{}\n"), want: ErrExportMalformed, wantMsg: `no "format"`},
		{name: "body not an object", file: []byte("{\n  \"format\": \"raftgres-snapshot/2\",\n  \"sha256\": \"" +
			strings.Repeat("0", 64) + "\",\n  \"body\": 1\n}\n"), want: ErrExportMalformed, wantMsg: "not an object"},
		{name: "too large", file: make([]byte, MaxExportSize+1), want: ErrExportMalformed, wantMsg: "more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := VerifyExport(tc.file, tc.pub)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if e.Verified != tc.verified || e.KeyID != tc.keyID || e.Body.RaftIndex != 42 || e.Body.RaftTerm != 3 {
					t.Fatalf("got verified=%v key=%q index=%d term=%d, want verified=%v key=%q index 42 term 3",
						e.Verified, e.KeyID, e.Body.RaftIndex, e.Body.RaftTerm, tc.verified, tc.keyID)
				}
				return
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("got %v, want %v mentioning %q", err, tc.want, tc.wantMsg)
			}
			if len(err.Error()) > 400 {
				t.Fatalf("error of %d bytes: it quotes the file at length", len(err.Error()))
			}
		})
	}

	t.Run("body round trip", func(t *testing.T) {
		e, err := VerifyExport(signed, pubOf(keyA))
		if err != nil {
			t.Fatal(err)
		}
		again := mustEncode(t, e.Body, keyA)
		if !bytes.Equal(again, signed) {
			t.Fatalf("re-encoding the verified body differs:\n%s\n%s", again, signed)
		}
	})
	t.Run("truncated", func(t *testing.T) {
		for _, file := range [][]byte{signed, unsigned} {
			for _, n := range []int{1, 2, 20, len(file) / 4, len(file) / 2, len(file) - 40, len(file) - 2, len(file) - 1} {
				_, err := VerifyExport(file[:n], pubOf(keyA))
				if !errors.Is(err, ErrExportMalformed) || !strings.Contains(err.Error(), "truncated") {
					t.Errorf("cut to %d of %d bytes: %v, want a truncated-file error", n, len(file), err)
				}
			}
		}
	})
	t.Run("every byte flip", func(t *testing.T) {
		for i := range signed {
			m := append([]byte{}, signed...)
			m[i] ^= 0x01
			_, err := VerifyExport(m, pubOf(keyA))
			if err == nil {
				t.Fatalf("flipping byte %d (%q) went unnoticed", i, signed[i])
			}
			if !anyExportError(err) {
				t.Fatalf("flipping byte %d: unclassified error %v", i, err)
			}
		}
	})
}

func anyExportError(err error) bool {
	for _, k := range []error{ErrExportMalformed, ErrExportModified, ErrExportWrongKey, ErrExportUnsigned} {
		if errors.Is(err, k) {
			return true
		}
	}
	return false
}

func TestAuditKeys(t *testing.T) {
	t.Parallel()
	t.Run("openssl key pair", func(t *testing.T) {
		key, err := ParseAuditPrivateKey([]byte(opensslKey))
		if err != nil {
			t.Fatal(err)
		}
		pub, err := ParseAuditPublicKey([]byte(opensslPub))
		if err != nil {
			t.Fatal(err)
		}
		if !pub.Equal(key.Public()) {
			t.Fatal("the public key is not the private key's")
		}
		if got := KeyID(pub); got != opensslKeyID {
			t.Fatalf("KeyID = %s, openssl says %s", got, opensslKeyID)
		}
		if _, err := VerifyExport(mustEncode(t, testExportBody(t), key), pub); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("marshal round trip", func(t *testing.T) {
		key := testKey(7)
		priv, pubPEM, err := MarshalAuditKeys(key)
		if err != nil {
			t.Fatal(err)
		}
		k2, err := ParseAuditPrivateKey(priv)
		if err != nil || !k2.Equal(key) {
			t.Fatalf("private key round trip: %v", err)
		}
		p2, err := ParseAuditPublicKey(pubPEM)
		if err != nil || !p2.Equal(key.Public()) {
			t.Fatalf("public key round trip: %v", err)
		}
	})

	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ecKey)
	ecPubDER, _ := x509.MarshalPKIXPublicKey(ecKey.Public())
	pemOf := func(typ string, der []byte) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
	}
	lines := strings.Split(opensslKey, "\n")
	for _, tc := range []struct {
		name, pem, want string
		public          bool
	}{
		{name: "empty", pem: "", want: "no PEM block"},
		{name: "garbage", pem: "not a key\n", want: "no PEM block"},
		{name: "no end line", pem: lines[0] + "\n" + lines[1] + "\n", want: "no PEM block"},
		{name: "bad base64", pem: lines[0] + "\n" + "!!!!" + lines[1][4:] + "\n" + lines[2] + "\n", want: "no PEM block"},
		{name: "corrupt DER", pem: pemOf("PRIVATE KEY", []byte{0x30, 0x03, 1, 2, 3}), want: "not a PKCS#8 private key"},
		{name: "public key as private", pem: opensslPub, want: "this is a public key"},
		{name: "encrypted", pem: pemOf("ENCRYPTED PRIVATE KEY", []byte{1}), want: "encrypted"},
		{name: "EC key", pem: pemOf("PRIVATE KEY", ecDER), want: "not Ed25519"},
		{name: "other block", pem: pemOf("CERTIFICATE", []byte{1}), want: `"CERTIFICATE"`},
		{name: "private key as public", pem: opensslKey, want: "this is a private key", public: true},
		{name: "EC public key", pem: pemOf("PUBLIC KEY", ecPubDER), want: "not Ed25519", public: true},
		{name: "corrupt public DER", pem: pemOf("PUBLIC KEY", []byte{0x30, 0x00}), want: "not a PKIX public key", public: true},
		{name: "public garbage", pem: "x", want: "no PEM block", public: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.public {
				_, err = ParseAuditPublicKey([]byte(tc.pem))
			} else {
				_, err = ParseAuditPrivateKey([]byte(tc.pem))
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestLoadAuditKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, data string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	secret := strings.Split(opensslKey, "\n")[1]
	for _, tc := range []struct {
		name, path, want string
	}{
		{"0600", write("ok.key", opensslKey, 0o600), ""},
		{"0400", write("ro.key", opensslKey, 0o400), ""},
		{"group readable", write("g.key", opensslKey, 0o640), "readable by group or others (mode 0640): run chmod 600"},
		{"world readable", write("o.key", opensslKey, 0o604), "mode 0604"},
		{"missing", filepath.Join(dir, "none.key"), "no such file"},
		{"directory", dir, "not a regular file"},
		{"public key", write("pub.key", opensslPub, 0o600), "this is a public key"},
		{"too large", write("big.key", strings.Repeat("x", maxKeyFile+1), 0o600), "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, err := LoadAuditKey(tc.path)
			if tc.want == "" {
				if err != nil || KeyID(pubOf(key)) != opensslKeyID {
					t.Fatalf("load: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), secret[20:40]) {
				t.Fatalf("error leaks key material: %v", err)
			}
		})
	}
}

// TestStoreExportSigned opens a one-voter store with raft.audit_key_file:
// its exports verify with the public key and carry the index and term the
// store was at. A store whose key is group readable does not open.
func TestStoreExportSigned(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "audit.key")
	if err := os.WriteFile(keyFile, []byte(opensslKey), 0o600); err != nil {
		t.Fatal(err)
	}
	pub, _ := ParseAuditPublicKey([]byte(opensslPub))
	open := func(name string) (*Store, error) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cfg := DefaultConfig()
		cfg.NodeID, cfg.Dir, cfg.Listen, cfg.AuditKeyFile = name, filepath.Join(dir, name), ln.Addr().String(), keyFile
		cfg.BootstrapPeers = []Peer{{ID: name, Address: cfg.Listen}}
		cfg.HeartbeatTimeout, cfg.ElectionTimeout = 200*time.Millisecond, 200*time.Millisecond
		cfg.LeaderLeaseTimeout, cfg.CommitTimeout = 200*time.Millisecond, 5*time.Millisecond
		s, err := New(cfg, testLogger(t, name))
		if err != nil {
			t.Fatal(err)
		}
		s.listener = ln
		if err := s.Open(); err != nil {
			_ = ln.Close()
			return nil, err
		}
		t.Cleanup(func() { _ = s.Close() })
		return s, nil
	}
	s, err := open("pg1")
	if err != nil {
		t.Fatal(err)
	}
	waitLeader(t, s)
	waitFor(t, 5*time.Second, "the bootstrap configuration to apply", func() bool { return s.AppliedIndex() > 0 })
	b, err := s.Export("demo", t0)
	if err != nil {
		t.Fatal(err)
	}
	e, err := VerifyExport(b, pub)
	if err != nil {
		t.Fatalf("verify: %v\n%s", err, b)
	}
	st, _ := s.Status()
	if !e.Verified || e.KeyID != opensslKeyID || e.Body.RaftIndex == 0 || e.Body.RaftIndex > st.AppliedIndex ||
		e.Body.RaftTerm != st.Term || e.Body.Scope != "demo" || len(e.Body.Voters) != 1 {
		t.Fatalf("export: %+v (status %+v)", e, st)
	}
	if err := os.Chmod(keyFile, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := open("pg2"); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("open with a group-readable key: %v", err)
	}
}

func regexpReplace(b []byte, expr, repl string) []byte {
	re := regexp.MustCompile(expr)
	if !re.Match(b) {
		panic("regexpReplace: " + expr + " not found")
	}
	return re.ReplaceAll(b, []byte(repl))
}

// FuzzVerifyExport feeds VerifyExport arbitrary files: it never panics,
// every refusal is one of the four kinds, and what it accepts as signed by
// the key really names that key and has the fields verify reports.
func FuzzVerifyExport(f *testing.F) {
	key := testKey(1)
	body := testExportBody(f)
	signed := mustEncode(f, body, key)
	f.Add(signed)
	f.Add(mustEncode(f, body, nil))
	f.Add(mustEncode(f, ExportBody{Scope: "x"}, key))
	if v1, err := encodeV1(body); err == nil {
		f.Add(v1)
	}
	f.Add(signed[:len(signed)/2])
	f.Add([]byte(`{"format":"raftgres-snapshot/2","sha256":"","body":{}}`))
	f.Add([]byte("{}"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, pub := range []ed25519.PublicKey{nil, pubOf(key)} {
			e, err := VerifyExport(data, pub)
			if err != nil {
				if !anyExportError(err) {
					t.Fatalf("unclassified error: %v", err)
				}
				continue
			}
			if pub != nil && (!e.Verified || e.KeyID != KeyID(pub)) {
				t.Fatalf("accepted with a key but verified=%v key=%q", e.Verified, e.KeyID)
			}
			if pub == nil && e.Verified {
				t.Fatal("verified without a key")
			}
		}
	})
}
