package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"

	"raftgres/raftstore"
)

// ConfigDoc is the dynamic configuration as /config shows and takes it
// (raftstore.ConfigDoc's JSON form: the config file's bootstrap.dcs is
// the same document).
type ConfigDoc = raftstore.ConfigDoc

// PGConfigDoc is the postgresql: part of ConfigDoc.
type PGConfigDoc = raftstore.PGConfigDoc

// Param is a PostgreSQL parameter value: JSON string, number or boolean.
type Param = raftstore.Param

// DocOf is c as /config shows it.
func DocOf(c raftstore.ClusterConfig) ConfigDoc { return raftstore.DocOf(c) }

// decodeConfigDoc strictly decodes a whole document (PUT /config).
func decodeConfigDoc(b []byte) (raftstore.ClusterConfig, error) {
	var d ConfigDoc
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return raftstore.ClusterConfig{}, fmt.Errorf("%w: config: %w", ErrBadRequest, err)
	}
	if dec.More() {
		return raftstore.ClusterConfig{}, fmt.Errorf("%w: config: trailing data after json body", ErrBadRequest)
	}
	c := d.Config()
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("%w: config: %w", ErrBadRequest, err)
	}
	return c, nil
}

// PatchConfig applies a JSON merge patch (RFC 7386: null removes a key,
// objects merge, anything else replaces) to cur and validates the result.
// A removed top-level key goes back to its default.
func PatchConfig(cur raftstore.ClusterConfig, patch []byte) (raftstore.ClusterConfig, error) {
	var p any
	dec := json.NewDecoder(bytes.NewReader(patch))
	dec.UseNumber()
	if err := dec.Decode(&p); err != nil {
		return cur, fmt.Errorf("%w: malformed json: %w", ErrBadRequest, err)
	}
	if dec.More() {
		return cur, fmt.Errorf("%w: trailing data after json body", ErrBadRequest)
	}
	pm, ok := p.(map[string]any)
	if !ok {
		return cur, fmt.Errorf("%w: a config patch must be a JSON object", ErrBadRequest)
	}
	delete(pm, "version")
	base, err := json.Marshal(DocOf(cur))
	if err != nil {
		return cur, err
	}
	var doc any
	bdec := json.NewDecoder(bytes.NewReader(base))
	bdec.UseNumber()
	if err := bdec.Decode(&doc); err != nil {
		return cur, err
	}
	merged, err := json.Marshal(mergePatch(doc, pm))
	if err != nil {
		return cur, err
	}
	next, err := decodeConfigDoc(merged)
	if err != nil {
		return cur, err
	}
	next.Version = cur.Version
	return next, nil
}

func mergePatch(target any, patch any) any {
	pm, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	tm, ok := target.(map[string]any)
	if !ok {
		tm = map[string]any{}
	} else {
		tm = maps.Clone(tm)
	}
	for k, v := range pm {
		if v == nil {
			delete(tm, k)
			continue
		}
		tm[k] = mergePatch(tm[k], v)
	}
	return tm
}
