package raftstore

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
)

// maxKeyFile bounds a PEM key file read from disk: an Ed25519 key is about
// 120 bytes, so anything near this is not one.
const maxKeyFile = 64 << 10

// KeyID is the fingerprint of an audit public key, printed by verify and
// written into signed exports: "SHA256:" and the unpadded base64 of the
// SHA-256 of the key's PKIX DER form (the bytes inside its PEM block), so
//
//	openssl pkey -pubin -in KEY.pub -outform DER | openssl dgst -sha256 -binary | base64
//
// gives the same value (with one trailing '=').
func KeyID(pub ed25519.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		// Only for a key of the wrong length: no real key, no real id.
		return "SHA256:invalid"
	}
	sum := sha256.Sum256(der)
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// LoadAuditKey reads raft.audit_key_file: a PEM "PRIVATE KEY" block
// holding a PKCS#8 Ed25519 key, as `openssl genpkey -algorithm ed25519`
// and `raftgres snapshot keygen` write it. The file must be a regular file
// that neither group nor others can read. Errors name the file and never
// quote its content.
func LoadAuditKey(path string) (ed25519.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("audit key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("audit key %s is not a regular file", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("audit key %s is readable by group or others (mode %04o): run chmod 600 %s",
			path, fi.Mode().Perm(), path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("audit key: read %s: %w", path, err)
	}
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("audit key %s is larger than %d bytes: not a PEM Ed25519 key", path, maxKeyFile)
	}
	key, err := ParseAuditPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("audit key %s: %w", path, err)
	}
	return key, nil
}

// ParseAuditPrivateKey decodes a PEM PKCS#8 Ed25519 private key.
func ParseAuditPrivateKey(b []byte) (ed25519.PrivateKey, error) {
	block, err := onePEM(b)
	if err != nil {
		return nil, err
	}
	switch block.Type {
	case "PRIVATE KEY":
	case "ENCRYPTED PRIVATE KEY":
		return nil, errors.New("the key is encrypted: the agent needs it in clear (protect it with mode 0600 instead)")
	case "PUBLIC KEY":
		return nil, errors.New("this is a public key: raft.audit_key_file needs the private key")
	default:
		return nil, fmt.Errorf("PEM block is %q, not an Ed25519 \"PRIVATE KEY\" (PKCS#8)", block.Type)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, errors.New("not a PKCS#8 private key")
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("the key is %s, not Ed25519 (make one with: openssl genpkey -algorithm ed25519)", keyKind(k))
	}
	return key, nil
}

// ParseAuditPublicKey decodes a PEM PKIX Ed25519 public key, as `openssl
// pkey -pubout` and `raftgres snapshot keygen` write it.
func ParseAuditPublicKey(b []byte) (ed25519.PublicKey, error) {
	block, err := onePEM(b)
	if err != nil {
		return nil, err
	}
	switch block.Type {
	case "PUBLIC KEY":
	case "PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
		return nil, errors.New("this is a private key: give the public key (openssl pkey -in KEY -pubout)")
	default:
		return nil, fmt.Errorf("PEM block is %q, not an Ed25519 \"PUBLIC KEY\"", block.Type)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, errors.New("not a PKIX public key")
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("the key is %s, not Ed25519", keyKind(k))
	}
	return pub, nil
}

// MarshalAuditKeys renders a key pair as PEM: PKCS#8 for the private key,
// PKIX for the public one.
func MarshalAuditKeys(key ed25519.PrivateKey) (private, public []byte, err error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encode private key: %w", err)
	}
	pder, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, nil, fmt.Errorf("encode public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pder}), nil
}

// onePEM finds the first PEM block in b.
func onePEM(b []byte) (*pem.Block, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block found (want -----BEGIN ...----- lines)")
	}
	return block, nil
}

func keyKind(k any) string {
	switch k.(type) {
	case ed25519.PrivateKey, ed25519.PublicKey:
		return "Ed25519"
	default:
		return fmt.Sprintf("a %T key", k)
	}
}
