package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"raftgres/internal/conf"
	"raftgres/raftstore"
)

// ConfigDoc is the dynamic configuration as /config shows and takes it,
// in patroni.yml's terms: durations in seconds (a number, or a string
// such as "300ms": conf.Duration's JSON), PostgreSQL parameters as
// strings, numbers or booleans.
type ConfigDoc struct {
	TTL                   *conf.Duration `json:"ttl,omitempty"`
	LoopWait              *conf.Duration `json:"loop_wait,omitempty"`
	RetryTimeout          *conf.Duration `json:"retry_timeout,omitempty"`
	DetectionWindow       *conf.Duration `json:"detection_window,omitempty"`
	MaximumLagOnFailover  *int64         `json:"maximum_lag_on_failover,omitempty"`
	SynchronousMode       *bool          `json:"synchronous_mode,omitempty"`
	SynchronousModeStrict *bool          `json:"synchronous_mode_strict,omitempty"`
	Pause                 *bool          `json:"pause,omitempty"`
	PostgreSQL            *PGConfigDoc   `json:"postgresql,omitempty"`
	Version               *uint64        `json:"version,omitempty"` // read only
}

// PGConfigDoc is the postgresql: part of ConfigDoc.
type PGConfigDoc struct {
	UsePgRewind *bool            `json:"use_pg_rewind,omitempty"`
	UseSlots    *bool            `json:"use_slots,omitempty"`
	Parameters  map[string]Param `json:"parameters,omitempty"`
	PgHba       []string         `json:"pg_hba,omitempty"`
}

// Param is a PostgreSQL parameter value: JSON string, number or boolean.
type Param string

// UnmarshalJSON takes a string, a number or a boolean (on/off).
func (p *Param) UnmarshalJSON(b []byte) error {
	var v any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return err
	}
	switch x := v.(type) {
	case string:
		*p = Param(x)
	case json.Number:
		*p = Param(x.String())
	case bool:
		*p = "off"
		if x {
			*p = "on"
		}
	default:
		return fmt.Errorf("parameter value %s is not a string, number or boolean", b)
	}
	return nil
}

// DocOf is c as /config shows it.
func DocOf(c raftstore.ClusterConfig) ConfigDoc {
	ttl, lw, rt, dw := conf.Duration(c.TTL), conf.Duration(c.LoopWait), conf.Duration(c.RetryTimeout), conf.Duration(c.Detection())
	lag, sm, sms, pause, ver := c.MaximumLagOnFailover, c.SynchronousMode, c.SynchronousModeStrict, c.Pause, c.Version
	rw, slots := c.PostgreSQL.UsePgRewind, c.PostgreSQL.UseSlots
	pg := &PGConfigDoc{UsePgRewind: &rw, UseSlots: &slots, PgHba: slices.Clone(c.PostgreSQL.PgHba)}
	if len(c.PostgreSQL.Parameters) > 0 {
		pg.Parameters = map[string]Param{}
		for k, v := range c.PostgreSQL.Parameters {
			pg.Parameters[k] = Param(v)
		}
	}
	return ConfigDoc{TTL: &ttl, LoopWait: &lw, RetryTimeout: &rt, DetectionWindow: &dw, MaximumLagOnFailover: &lag,
		SynchronousMode: &sm, SynchronousModeStrict: &sms, Pause: &pause, PostgreSQL: pg, Version: &ver}
}

// configFromDoc builds a ClusterConfig: keys the document leaves out take
// their defaults (PUT semantics).
func configFromDoc(d ConfigDoc) raftstore.ClusterConfig {
	c := raftstore.DefaultClusterConfig()
	set := func(dst *time.Duration, s *conf.Duration) {
		if s != nil {
			*dst = time.Duration(*s)
		}
	}
	set(&c.TTL, d.TTL)
	set(&c.LoopWait, d.LoopWait)
	set(&c.RetryTimeout, d.RetryTimeout)
	set(&c.DetectionWindow, d.DetectionWindow)
	if d.MaximumLagOnFailover != nil {
		c.MaximumLagOnFailover = *d.MaximumLagOnFailover
	}
	if d.SynchronousMode != nil {
		c.SynchronousMode = *d.SynchronousMode
	}
	if d.SynchronousModeStrict != nil {
		c.SynchronousModeStrict = *d.SynchronousModeStrict
	}
	if d.Pause != nil {
		c.Pause = *d.Pause
	}
	if p := d.PostgreSQL; p != nil {
		if p.UsePgRewind != nil {
			c.PostgreSQL.UsePgRewind = *p.UsePgRewind
		}
		if p.UseSlots != nil {
			c.PostgreSQL.UseSlots = *p.UseSlots
		}
		if len(p.Parameters) > 0 {
			c.PostgreSQL.Parameters = map[string]string{}
			for k, v := range p.Parameters {
				c.PostgreSQL.Parameters[k] = string(v)
			}
		}
		c.PostgreSQL.PgHba = slices.Clone(p.PgHba)
	}
	return c
}

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
	c := configFromDoc(d)
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
