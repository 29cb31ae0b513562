package raftstore

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"
)

// Audit export files (`raftgres snapshot export`).
//
// Format raftgres-snapshot/2, written by this version, is one JSON object
// laid out exactly like this (one key per line, in this order):
//
//	{
//	  "format": "raftgres-snapshot/2",
//	  "signature": {"algorithm":"ed25519","key_id":"SHA256:…","value":"…"},
//	  "sha256": "<hex SHA-256 of the body bytes>",
//	  "body": {
//	    "scope": "demo",
//	    "exported_by": "pg2",
//	    "exported_at": "…",
//	    "raft_index": 42,
//	    "raft_term": 3,
//	    …
//	  }
//	}
//
// The "signature" line is there only when the exporting agent has
// raft.audit_key_file. The body is the ExportBody as json.MarshalIndent
// writes it (prefix and indent two spaces), and it is checked as the exact
// bytes in the file, never re-encoded, so a file stays verifiable by later
// versions whatever they add to ExportBody. The digest and the signature
// cover those bytes, from the body's opening brace to its closing one:
//
//	sha256    = SHA-256(body)
//	signature = Ed25519(key, "raftgres-snapshot/2 signature\n" + "key_id: " + key_id + "\n" + body)
//
// raft_index (the last Raft entry whose effect the body shows) and
// raft_term (the exporting member's Raft term) are body fields, so they
// are signed. key_id is KeyID of the public key; it is signed too, and lets
// verify say which key signed a file it refuses. A verifier accepts a file
// only if it is byte for byte this layout, so any edit outside the body
// (whitespace, a duplicated key, a reordered line) is refused as malformed,
// and any edit inside it breaks the digest or the signature.
//
// raftgres-snapshot/1 (before signatures: {format, sha256, body} with the
// digest over the body's compact re-encoding) is still read, as unsigned.

const (
	// ExportFormat names the audit export format this version writes.
	ExportFormat = "raftgres-snapshot/2"
	// ExportFormatV1 is the older, digest-only format, still verified.
	ExportFormatV1 = "raftgres-snapshot/1"
	// MaxExportSize bounds an export file (the API client reads no more).
	MaxExportSize = 64 << 20

	signAlgorithm = "ed25519"
	signContext   = ExportFormat + " signature\n"
)

var (
	keyIDRe  = regexp.MustCompile(`^SHA256:[A-Za-z0-9+/]{43}$`)
	sha256Re = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// ExportBody is the audited content of a snapshot export.
type ExportBody struct {
	Scope      string             `json:"scope"`
	ExportedBy string             `json:"exported_by"`
	ExportedAt time.Time          `json:"exported_at"`
	RaftIndex  uint64             `json:"raft_index"`
	RaftTerm   uint64             `json:"raft_term"`
	Voters     []Server           `json:"voters"`
	Config     ClusterConfig      `json:"config"`
	Initialize string             `json:"initialize,omitempty"`
	Leader     LeaderKey          `json:"leader"`
	Members    map[string]*Member `json:"members"`
	Sync       SyncState          `json:"sync"`
	Failover   *FailoverRequest   `json:"failover,omitempty"`
	History    []Event            `json:"history"`
}

// Export is a decoded, checked export file.
type Export struct {
	Format string
	SHA256 string
	// KeyID names the key that signed the file ("" when unsigned).
	KeyID string
	// Verified is true when the signature was checked against a public
	// key (VerifyExport with a key) and matched.
	Verified bool
	Body     ExportBody
}

// Signed reports whether the file carries a signature.
func (e Export) Signed() bool { return e.KeyID != "" }

// envelope is the file's top level.
type envelope struct {
	Format    string          `json:"format"`
	Signature *signatureField `json:"signature,omitempty"`
	SHA256    string          `json:"sha256"`
	Body      json.RawMessage `json:"body"`
}

type signatureField struct {
	Algorithm string `json:"algorithm"`
	KeyID     string `json:"key_id"`
	Value     string `json:"value"`
}

// Export builds an audit export of the applied state, signed when the
// store has raft.audit_key_file. now is the export time; scope the cluster
// name.
func (s *Store) Export(scope string, now time.Time) ([]byte, error) {
	st, err := s.Status()
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	// The state and the index it was taken at, read together.
	state, applied := s.fsm.stateAndIndex()
	body := ExportBody{
		Scope: scope, ExportedBy: s.cfg.NodeID, ExportedAt: now.UTC(),
		RaftIndex: s.extendApplied(applied), RaftTerm: st.Term, Voters: []Server{},
		Config: state.Config, Initialize: state.Initialize, Leader: state.Leader,
		Members: state.Members, Sync: state.Sync, Failover: state.Failover, History: state.History,
	}
	for _, srv := range st.Servers {
		if srv.Suffrage == "Voter" {
			body.Voters = append(body.Voters, srv)
		}
	}
	return EncodeExport(body, s.signingKey())
}

// EncodeExport renders body in the file form, signed with key unless key
// is nil.
func EncodeExport(body ExportBody, key ed25519.PrivateKey) ([]byte, error) {
	raw, err := json.MarshalIndent(body, "  ", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode export body: %w", err)
	}
	sum := sha256.Sum256(raw)
	env := envelope{Format: ExportFormat, SHA256: hex.EncodeToString(sum[:]), Body: raw}
	if key != nil {
		if len(key) != ed25519.PrivateKeySize {
			return nil, errors.New("encode export: audit key has the wrong size")
		}
		kid := KeyID(key.Public().(ed25519.PublicKey))
		env.Signature = &signatureField{Algorithm: signAlgorithm, KeyID: kid,
			Value: base64.StdEncoding.EncodeToString(ed25519.Sign(key, signedMessage(kid, raw)))}
	}
	out, err := layout(env)
	if err != nil {
		return nil, fmt.Errorf("encode export: %w", err)
	}
	if len(out) > MaxExportSize {
		return nil, fmt.Errorf("encode export: %d bytes, more than the %d a verifier reads", len(out), MaxExportSize)
	}
	return out, nil
}

// signedMessage is what the signature covers (see the format above).
func signedMessage(keyID string, body []byte) []byte {
	m := make([]byte, 0, len(signContext)+len("key_id: \n")+len(keyID)+len(body))
	m = append(m, signContext...)
	m = append(m, "key_id: "...)
	m = append(m, keyID...)
	m = append(m, '\n')
	return append(m, body...)
}

// layout writes env in the one byte layout a file may have.
func layout(env envelope) ([]byte, error) {
	var b bytes.Buffer
	str := func(s string) error {
		q, err := json.Marshal(s)
		b.Write(q)
		return err
	}
	b.WriteString("{\n  \"format\": ")
	if err := str(env.Format); err != nil {
		return nil, err
	}
	b.WriteString(",\n")
	if env.Signature != nil {
		sig, err := json.Marshal(env.Signature)
		if err != nil {
			return nil, err
		}
		b.WriteString("  \"signature\": ")
		b.Write(sig)
		b.WriteString(",\n")
	}
	b.WriteString("  \"sha256\": ")
	if err := str(env.SHA256); err != nil {
		return nil, err
	}
	b.WriteString(",\n  \"body\": ")
	b.Write(env.Body)
	b.WriteString("\n}\n")
	return b.Bytes(), nil
}

// VerifyExport checks an export file. With pub nil it checks the layout
// and the digest, and reports a signature without checking it (KeyID set,
// Verified false): that proves only that nobody edited the file without
// also recomputing the digest. With pub it also requires a signature by
// pub. Errors are *ExportError, one of ErrExportMalformed,
// ErrExportModified, ErrExportWrongKey and ErrExportUnsigned. b is
// untrusted: it may be anything, of any size.
func VerifyExport(b []byte, pub ed25519.PublicKey) (Export, error) {
	if pub != nil && len(pub) != ed25519.PublicKeySize {
		return Export{}, errors.New("verify export: the public key has the wrong size")
	}
	env, err := decodeEnvelope(b)
	if err != nil {
		return Export{}, err
	}
	if env.Format == ExportFormatV1 {
		e, err := verifyV1(b)
		if err == nil && pub != nil {
			return Export{}, exportErrorf(ErrExportUnsigned, "format %s has no signature (written before raftgres signed exports)", ExportFormatV1)
		}
		return e, err
	}
	e := Export{Format: env.Format, SHA256: env.SHA256}
	var sig []byte
	if env.Signature != nil {
		e.KeyID = env.Signature.KeyID
		sig, _ = base64.StdEncoding.DecodeString(env.Signature.Value) // checked by decodeEnvelope
	}
	if sum := sha256.Sum256(env.Body); hex.EncodeToString(sum[:]) != env.SHA256 {
		return Export{}, exportErrorf(ErrExportModified, "the body does not match its SHA-256 digest: it was changed after export")
	}
	if pub != nil {
		if err := checkSignature(env.Body, e.KeyID, sig, pub); err != nil {
			return Export{}, err
		}
		e.Verified = true
	}
	if e.Body, err = decodeBody(env.Body); err != nil {
		return Export{}, err
	}
	return e, nil
}

func checkSignature(body []byte, keyID string, sig []byte, pub ed25519.PublicKey) error {
	want := KeyID(pub)
	if keyID == "" {
		return exportErrorf(ErrExportUnsigned, "the file carries no signature (the agent that exported it has no raft.audit_key_file)")
	}
	if ed25519.Verify(pub, signedMessage(keyID, body), sig) {
		if keyID != want {
			// Unreachable with EncodeExport: the signed key id is the signer's.
			return exportErrorf(ErrExportMalformed, "the file names key %s but was signed by %s", keyID, want)
		}
		return nil
	}
	if keyID != want {
		return exportErrorf(ErrExportWrongKey, "signed by key %s, not by %s (the public key given)", keyID, want)
	}
	return exportErrorf(ErrExportModified, "the signature by key %s does not match the body: it was changed after signing", keyID)
}

// decodeEnvelope decodes and checks the top level: size, JSON, known
// format, well-formed fields and, for format 2, the exact layout.
func decodeEnvelope(b []byte) (envelope, error) {
	if len(b) > MaxExportSize {
		return envelope{}, exportErrorf(ErrExportMalformed, "%d bytes, more than the %d an export may have", len(b), MaxExportSize)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return envelope{}, exportErrorf(ErrExportMalformed, "the file is empty")
	}
	var env envelope
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return envelope{}, exportErrorf(ErrExportMalformed, "truncated: the file ends after %d bytes, inside its JSON", len(b))
		}
		return envelope{}, exportErrorf(ErrExportMalformed, "not a raftgres snapshot export: %s", clip(err))
	}
	switch env.Format {
	case ExportFormat:
	case ExportFormatV1:
		return env, nil // verifyV1 checks the rest
	case "":
		return envelope{}, exportErrorf(ErrExportMalformed, "not a raftgres snapshot export: no \"format\"")
	default:
		return envelope{}, exportErrorf(ErrExportMalformed, "unknown format %.40q: this raftgres reads %s and %s", env.Format, ExportFormat, ExportFormatV1)
	}
	if !sha256Re.MatchString(env.SHA256) {
		return envelope{}, exportErrorf(ErrExportMalformed, "\"sha256\" is not 64 lowercase hex digits")
	}
	if len(env.Body) == 0 || env.Body[0] != '{' {
		return envelope{}, exportErrorf(ErrExportMalformed, "\"body\" is missing or not an object")
	}
	if s := env.Signature; s != nil {
		if s.Algorithm != signAlgorithm {
			return envelope{}, exportErrorf(ErrExportMalformed, "signature algorithm %.40q is not %s", s.Algorithm, signAlgorithm)
		}
		if !keyIDRe.MatchString(s.KeyID) {
			return envelope{}, exportErrorf(ErrExportMalformed, "signature key_id is not SHA256:<43 base64 characters>")
		}
		if sig, err := base64.StdEncoding.Strict().DecodeString(s.Value); err != nil || len(sig) != ed25519.SignatureSize {
			return envelope{}, exportErrorf(ErrExportMalformed, "signature value is not the base64 of %d bytes", ed25519.SignatureSize)
		}
	}
	want, err := layout(env)
	if err != nil {
		return envelope{}, exportErrorf(ErrExportMalformed, "re-encode: %v", err)
	}
	if !bytes.Equal(want, b) {
		if len(b) < len(want) && bytes.HasPrefix(want, b) {
			return envelope{}, exportErrorf(ErrExportMalformed, "truncated: the file ends after %d of its %d bytes", len(b), len(want))
		}
		return envelope{}, exportErrorf(ErrExportMalformed, "not laid out as export writes it (%s): it was edited outside the body", firstDifference(want, b))
	}
	return env, nil
}

// clip shortens a decoding error, which may quote the untrusted file
// (an unknown field's name), to a length fit for a terminal.
func clip(err error) string {
	const limit = 200
	if s := err.Error(); len(s) > limit {
		return strings.ToValidUTF8(s[:limit], "") + "…"
	}
	return err.Error()
}

// firstDifference says where got first differs from want, for an error.
func firstDifference(want, got []byte) string {
	n := min(len(want), len(got))
	for i := range n {
		if want[i] != got[i] {
			return fmt.Sprintf("first difference at byte %d, line %d", i, bytes.Count(got[:i], []byte("\n"))+1)
		}
	}
	return fmt.Sprintf("%d bytes where %d were expected", len(got), len(want))
}

// decodeBody decodes checked body bytes. Fields a later version adds are
// ignored (they were checked with the rest of the bytes); the ones verify
// reports must be there.
func decodeBody(raw []byte) (ExportBody, error) {
	var body ExportBody
	if err := json.Unmarshal(raw, &body); err != nil {
		return ExportBody{}, exportErrorf(ErrExportMalformed, "body: %s", clip(err))
	}
	var present struct {
		Scope      *string    `json:"scope"`
		ExportedAt *time.Time `json:"exported_at"`
		RaftIndex  *uint64    `json:"raft_index"`
		RaftTerm   *uint64    `json:"raft_term"`
	}
	if err := json.Unmarshal(raw, &present); err != nil {
		return ExportBody{}, exportErrorf(ErrExportMalformed, "body: %s", clip(err))
	}
	for name, missing := range map[string]bool{"scope": present.Scope == nil, "exported_at": present.ExportedAt == nil,
		"raft_index": present.RaftIndex == nil, "raft_term": present.RaftTerm == nil} {
		if missing {
			return ExportBody{}, exportErrorf(ErrExportMalformed, "body has no %q", name)
		}
	}
	return body, nil
}

// exportV1 is the raftgres-snapshot/1 file.
type exportV1 struct {
	Format string     `json:"format"`
	SHA256 string     `json:"sha256"`
	Body   ExportBody `json:"body"`
}

// encodeV1 writes a raftgres-snapshot/1 file (for tests of verifyV1).
func encodeV1(body ExportBody) ([]byte, error) {
	canon, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode export body: %w", err)
	}
	sum := sha256.Sum256(canon)
	out, err := json.MarshalIndent(exportV1{Format: ExportFormatV1, SHA256: hex.EncodeToString(sum[:]), Body: body}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode export: %w", err)
	}
	return append(out, '\n'), nil
}

// verifyV1 checks a raftgres-snapshot/1 file: its digest over the body's
// compact encoding, and that the file is byte for byte what that version
// wrote.
func verifyV1(b []byte) (Export, error) {
	var e exportV1
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return Export{}, exportErrorf(ErrExportMalformed, "not a %s export: %s", ExportFormatV1, clip(err))
	}
	canon, err := json.Marshal(e.Body)
	if err != nil {
		return Export{}, exportErrorf(ErrExportMalformed, "re-encode body: %v", err)
	}
	sum := sha256.Sum256(canon)
	if got := hex.EncodeToString(sum[:]); got != e.SHA256 {
		return Export{}, exportErrorf(ErrExportModified, "the body does not match its SHA-256 digest: it was changed after export")
	}
	want, err := encodeV1(e.Body)
	if err != nil {
		return Export{}, exportErrorf(ErrExportMalformed, "%v", err)
	}
	if !bytes.Equal(want, b) {
		return Export{}, exportErrorf(ErrExportMalformed, "not laid out as export writes it (%s): it was modified after export", firstDifference(want, b))
	}
	return Export{Format: ExportFormatV1, SHA256: e.SHA256, Body: e.Body}, nil
}
