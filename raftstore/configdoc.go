package raftstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"raftgres/internal/conf"
)

// ConfigDoc is the dynamic configuration as people write it, in
// patroni.yml's terms: the config file's bootstrap.dcs (YAML) and the REST
// API's /config (JSON). Durations are seconds (a number, or a string such
// as "300ms"); PostgreSQL parameters are strings, numbers or booleans. A
// key left out takes its default (Config). Pause and Version exist only
// in /config (Version is read only).
type ConfigDoc struct {
	TTL                   *conf.Duration `yaml:"ttl,omitempty" json:"ttl,omitempty"`
	LoopWait              *conf.Duration `yaml:"loop_wait,omitempty" json:"loop_wait,omitempty"`
	RetryTimeout          *conf.Duration `yaml:"retry_timeout,omitempty" json:"retry_timeout,omitempty"`
	DetectionWindow       *conf.Duration `yaml:"detection_window,omitempty" json:"detection_window,omitempty"`
	MaximumLagOnFailover  *int64         `yaml:"maximum_lag_on_failover,omitempty" json:"maximum_lag_on_failover,omitempty"`
	SynchronousMode       *SyncMode      `yaml:"synchronous_mode,omitempty" json:"synchronous_mode,omitempty"`
	SynchronousNodeCount  *int           `yaml:"synchronous_node_count,omitempty" json:"synchronous_node_count,omitempty"`
	SynchronousModeStrict *bool          `yaml:"synchronous_mode_strict,omitempty" json:"synchronous_mode_strict,omitempty"`
	Pause                 *bool          `yaml:"-" json:"pause,omitempty"`
	PostgreSQL            *PGConfigDoc   `yaml:"postgresql,omitempty" json:"postgresql,omitempty"`
	Version               *uint64        `yaml:"-" json:"version,omitempty"`
	MemberSlotsTTL        *conf.Duration `yaml:"member_slots_ttl,omitempty" json:"member_slots_ttl,omitempty"`
	// Slots and IgnoreSlots are as in Patroni: permanent slots by name,
	// and the slots raftgres leaves alone.
	Slots       map[string]PermanentSlot `yaml:"slots,omitempty" json:"slots,omitempty"`
	IgnoreSlots []SlotMatch              `yaml:"ignore_slots,omitempty" json:"ignore_slots,omitempty"`
	// StandbyCluster is standby_cluster (standbycluster.go). In a /config
	// patch, null removes it.
	StandbyCluster *StandbyCluster `yaml:"standby_cluster,omitempty" json:"standby_cluster,omitempty"`
}

// SyncMode is synchronous_mode as written, as in Patroni 4: a boolean
// (on, off, true, false, yes, no), or quorum. It reads and writes back as
// a boolean unless it is quorum.
type SyncMode string

// The values of SyncMode.
const (
	SyncOff    SyncMode = "off"
	SyncOn     SyncMode = "on"
	SyncQuorum SyncMode = "quorum"
)

// SyncModeOf is the document's synchronous_mode for c.
func SyncModeOf(c ClusterConfig) SyncMode {
	switch {
	case c.QuorumCommit():
		return SyncQuorum
	case c.SynchronousMode:
		return SyncOn
	}
	return SyncOff
}

func parseSyncMode(v string) (SyncMode, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "on", "true", "yes", "1":
		return SyncOn, nil
	case "off", "false", "no", "0":
		return SyncOff, nil
	case "quorum":
		return SyncQuorum, nil
	}
	return "", fmt.Errorf("synchronous_mode %q: use on, off or quorum", v)
}

// UnmarshalYAML takes a boolean or quorum.
func (m *SyncMode) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("synchronous_mode must be on, off or quorum")
	}
	v, err := parseSyncMode(n.Value)
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// MarshalYAML writes a boolean, or quorum.
func (m SyncMode) MarshalYAML() (any, error) {
	if m == SyncQuorum {
		return string(m), nil
	}
	return m == SyncOn, nil
}

// UnmarshalJSON takes a boolean or a string (on, off, quorum).
func (m *SyncMode) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch x := v.(type) {
	case bool:
		*m = SyncOff
		if x {
			*m = SyncOn
		}
		return nil
	case string:
		p, err := parseSyncMode(x)
		if err != nil {
			return err
		}
		*m = p
		return nil
	}
	return fmt.Errorf("synchronous_mode %s: use true, false or \"quorum\"", b)
}

// MarshalJSON writes a boolean, or "quorum".
func (m SyncMode) MarshalJSON() ([]byte, error) {
	if m == SyncQuorum {
		return json.Marshal(string(m))
	}
	return json.Marshal(m == SyncOn)
}

// PGConfigDoc is the postgresql: part of ConfigDoc. The config file has
// its pg_hba lines in bootstrap.pg_hba, not here.
type PGConfigDoc struct {
	UsePgRewind *bool            `yaml:"use_pg_rewind,omitempty" json:"use_pg_rewind,omitempty"`
	UseSlots    *bool            `yaml:"use_slots,omitempty" json:"use_slots,omitempty"`
	Parameters  map[string]Param `yaml:"parameters,omitempty" json:"parameters,omitempty"`
	PgHba       []string         `yaml:"-" json:"pg_hba,omitempty"`
}

// Param is a PostgreSQL parameter value, kept as its text: a YAML scalar
// (100, on, '64MB'), or a JSON string, number or boolean (on/off).
type Param string

// UnmarshalYAML takes any scalar.
func (p *Param) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("must be a single value")
	}
	*p = Param(n.Value)
	return nil
}

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

// DocOf is c as a document with every key set (what /config shows).
func DocOf(c ClusterConfig) ConfigDoc {
	ttl, lw, rt, dw := conf.Duration(c.TTL), conf.Duration(c.LoopWait), conf.Duration(c.RetryTimeout), conf.Duration(c.Detection())
	lag, sm, sms, pause, ver := c.MaximumLagOnFailover, SyncModeOf(c), c.SynchronousModeStrict, c.Pause, c.Version
	rw, slots := c.PostgreSQL.UsePgRewind, c.PostgreSQL.UseSlots
	pg := &PGConfigDoc{UsePgRewind: &rw, UseSlots: &slots, PgHba: slices.Clone(c.PostgreSQL.PgHba)}
	if len(c.PostgreSQL.Parameters) > 0 {
		pg.Parameters = map[string]Param{}
		for k, v := range c.PostgreSQL.Parameters {
			pg.Parameters[k] = Param(v)
		}
	}
	d := ConfigDoc{TTL: &ttl, LoopWait: &lw, RetryTimeout: &rt, DetectionWindow: &dw, MaximumLagOnFailover: &lag,
		SynchronousMode: &sm, SynchronousModeStrict: &sms, Pause: &pause, PostgreSQL: pg, Version: &ver}
	// member_slots_ttl shows only when set: a document read back and
	// written again must not set it, which needs every voter on protocol 2.
	if c.MemberSlotsTTL > 0 {
		st := conf.Duration(c.MemberSlotsTTL)
		d.MemberSlotsTTL = &st
	}
	// synchronous_node_count likewise (protocol 2).
	if c.SynchronousNodeCount != 0 {
		n := c.SynchronousNodeCount
		d.SynchronousNodeCount = &n
	}
	d.Slots, d.IgnoreSlots = maps.Clone(c.Slots), slices.Clone(c.IgnoreSlots)
	d.StandbyCluster = c.Clone().StandbyCluster
	return d
}

// Config is the ClusterConfig the document describes: keys it leaves out
// take their defaults (DefaultClusterConfig). Version is not taken over.
func (d ConfigDoc) Config() ClusterConfig {
	c := DefaultClusterConfig()
	for dst, src := range map[*time.Duration]*conf.Duration{&c.TTL: d.TTL, &c.LoopWait: d.LoopWait,
		&c.RetryTimeout: d.RetryTimeout, &c.DetectionWindow: d.DetectionWindow, &c.MemberSlotsTTL: d.MemberSlotsTTL} {
		if src != nil {
			*dst = src.D()
		}
	}
	setIf(&c.MaximumLagOnFailover, d.MaximumLagOnFailover)
	if m := d.SynchronousMode; m != nil {
		c.SynchronousMode, c.SynchronousQuorum = *m != SyncOff, *m == SyncQuorum
	}
	setIf(&c.SynchronousNodeCount, d.SynchronousNodeCount)
	setIf(&c.SynchronousModeStrict, d.SynchronousModeStrict)
	setIf(&c.Pause, d.Pause)
	if p := d.PostgreSQL; p != nil {
		setIf(&c.PostgreSQL.UsePgRewind, p.UsePgRewind)
		setIf(&c.PostgreSQL.UseSlots, p.UseSlots)
		if len(p.Parameters) > 0 {
			c.PostgreSQL.Parameters = map[string]string{}
			for k, v := range p.Parameters {
				c.PostgreSQL.Parameters[k] = string(v)
			}
		}
		c.PostgreSQL.PgHba = slices.Clone(p.PgHba)
	}
	if len(d.Slots) > 0 {
		c.Slots = maps.Clone(d.Slots)
	}
	if len(d.IgnoreSlots) > 0 {
		c.IgnoreSlots = slices.Clone(d.IgnoreSlots)
	}
	if d.StandbyCluster != nil {
		c.StandbyCluster = d.StandbyCluster
		c = c.Clone()
	}
	return c
}

func setIf[T any](dst, src *T) {
	if src != nil {
		*dst = *src
	}
}
