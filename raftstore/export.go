package raftstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// ExportFormat names the audit export format and its version.
const ExportFormat = "raftgres-snapshot/1"

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

// Export is the file written by `raftgres snapshot export`: the body and a
// SHA-256 digest over the body's canonical (compact JSON) encoding.
type Export struct {
	Format string     `json:"format"`
	SHA256 string     `json:"sha256"`
	Body   ExportBody `json:"body"`
}

// Export builds an audit export of the applied state. now is the export
// time; scope the cluster name.
func (s *Store) Export(scope string, now time.Time) ([]byte, error) {
	st, err := s.Status()
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	state := s.State()
	body := ExportBody{
		Scope: scope, ExportedBy: s.cfg.NodeID, ExportedAt: now.UTC(),
		RaftIndex: st.AppliedIndex, RaftTerm: st.Term, Voters: []Server{},
		Config: state.Config, Initialize: state.Initialize, Leader: state.Leader,
		Members: state.Members, Sync: state.Sync, Failover: state.Failover, History: state.History,
	}
	for _, srv := range st.Servers {
		if srv.Suffrage == "Voter" {
			body.Voters = append(body.Voters, srv)
		}
	}
	return EncodeExport(body)
}

// EncodeExport renders body with its digest in the canonical file form.
func EncodeExport(body ExportBody) ([]byte, error) {
	canon, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode export body: %w", err)
	}
	sum := sha256.Sum256(canon)
	out, err := json.MarshalIndent(Export{Format: ExportFormat, SHA256: hex.EncodeToString(sum[:]), Body: body}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode export: %w", err)
	}
	return append(out, '\n'), nil
}

// VerifyExport checks an export file: its format, its digest, and that the
// file is byte for byte what EncodeExport writes (so any edit, even to
// whitespace or key spelling, is caught). It returns the decoded export.
func VerifyExport(b []byte) (Export, error) {
	var e Export
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return Export{}, fmt.Errorf("not a raftgres snapshot export: %w", err)
	}
	if e.Format != ExportFormat {
		return Export{}, fmt.Errorf("format %q is not %q", e.Format, ExportFormat)
	}
	canon, err := json.Marshal(e.Body)
	if err != nil {
		return Export{}, fmt.Errorf("re-encode body: %w", err)
	}
	sum := sha256.Sum256(canon)
	if got := hex.EncodeToString(sum[:]); got != e.SHA256 {
		return Export{}, fmt.Errorf("digest mismatch: file says %s, body hashes to %s: the body was modified", e.SHA256, got)
	}
	want, err := EncodeExport(e.Body)
	if err != nil {
		return Export{}, err
	}
	if !bytes.Equal(want, b) {
		return Export{}, errors.New("file is not in the canonical form written by export: it was modified after export")
	}
	return e, nil
}
