package raftstore

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"

	"raftgres/internal/conf"
)

// SlotType is a replication slot's kind, as pg_replication_slots names it.
type SlotType string

// The slot types.
const (
	SlotPhysical SlotType = "physical"
	SlotLogical  SlotType = "logical"
)

// PermanentSlot is a replication slot of the dynamic config's slots:
// (as in Patroni): it exists on the primary whoever that is, and, kept
// near the primary's position on every replica, survives a failover or a
// switchover. A logical slot names its database and output plugin.
type PermanentSlot struct {
	Type     SlotType `yaml:"type" json:"type"`
	Database string   `yaml:"database,omitempty" json:"database,omitempty"`
	Plugin   string   `yaml:"plugin,omitempty" json:"plugin,omitempty"`
}

// SlotMatch is an entry of ignore_slots: a slot that every field set here
// matches is not raftgres's to drop (one an operator made by hand, for a
// backup tool or an external standby). Name, Type, Database and Plugin
// are compared exactly; an empty field matches anything.
type SlotMatch struct {
	Name     string   `yaml:"name,omitempty" json:"name,omitempty"`
	Type     SlotType `yaml:"type,omitempty" json:"type,omitempty"`
	Database string   `yaml:"database,omitempty" json:"database,omitempty"`
	Plugin   string   `yaml:"plugin,omitempty" json:"plugin,omitempty"`
}

// Matches reports whether the slot described by the arguments matches m.
func (m SlotMatch) Matches(name string, typ SlotType, database, plugin string) bool {
	return (m.Name == "" || m.Name == name) && (m.Type == "" || m.Type == typ) &&
		(m.Database == "" || m.Database == database) && (m.Plugin == "" || m.Plugin == plugin)
}

// SlotPosition is where a replication slot stands on the member that
// reported it: a logical slot's confirmed_flush_lsn, a physical slot's
// restart_lsn.
type SlotPosition struct {
	Name string   `json:"name"`
	Type SlotType `json:"type"`
	LSN  uint64   `json:"lsn"`
}

// Ignored reports whether ignore_slots covers the slot.
func (c ClusterConfig) Ignored(name string, typ SlotType, database, plugin string) bool {
	return slices.ContainsFunc(c.IgnoreSlots, func(m SlotMatch) bool { return m.Matches(name, typ, database, plugin) })
}

// LogicalSlots reports whether slots: has a logical slot.
func (c ClusterConfig) LogicalSlots() bool {
	for _, s := range c.Slots {
		if s.Type == SlotLogical {
			return true
		}
	}
	return false
}

// slotNameRE is what PostgreSQL accepts as a slot name.
var slotNameRE = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// validateSlots checks slots: and ignore_slots. A logical slot needs
// wal_level: logical among the cluster's parameters (a restart of every
// member, which raftgres does not do behind the operator's back: list
// shows it pending, restart --rolling --pending does it).
func (c ClusterConfig) validateSlots() error {
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(c.Slots)) {
		s, key := c.Slots[name], "slots."+name
		if !slotNameRE.MatchString(name) {
			errs = append(errs, conf.Errorf(key, "a slot name is 1-63 lower-case letters, digits and underscores"))
		}
		switch s.Type {
		case SlotPhysical:
			if s.Database != "" || s.Plugin != "" {
				errs = append(errs, conf.Errorf(key, "a physical slot has no database or plugin"))
			}
		case SlotLogical:
			if s.Database == "" || s.Plugin == "" {
				errs = append(errs, conf.Errorf(key, "a logical slot needs its database and plugin"))
			}
			if c.PostgreSQL.Parameters["wal_level"] != "logical" {
				errs = append(errs, conf.Errorf(key, "a logical slot needs postgresql.parameters.wal_level: logical (a restart of every member: restart --rolling --pending)"))
			}
		default:
			errs = append(errs, conf.Errorf(key+".type", "must be physical or logical, got %q", s.Type))
		}
	}
	for i, m := range c.IgnoreSlots {
		key := fmt.Sprintf("ignore_slots[%d]", i)
		if m == (SlotMatch{}) {
			errs = append(errs, conf.Errorf(key, "matches every slot: name at least one of name, type, database, plugin"))
		}
		if m.Type != "" && m.Type != SlotPhysical && m.Type != SlotLogical {
			errs = append(errs, conf.Errorf(key+".type", "must be physical or logical, got %q", m.Type))
		}
	}
	return errors.Join(errs...)
}

// SlotLSN is the position the member last reported for its permanent slot
// name (false when its report had none).
func (m *Member) SlotLSN(name string) (uint64, bool) {
	for _, p := range m.Slots {
		if p.Name == name {
			return p.LSN, true
		}
	}
	return 0, false
}
