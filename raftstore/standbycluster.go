package raftstore

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"raftgres/internal/conf"
)

// StandbyCluster is standby_cluster: this cluster is a standby of another
// one (a disaster-recovery site). Its leader-key holder, the standby
// leader, replicates from the source cluster (Host and Port, through
// PrimarySlotName) or from the WAL archive (RestoreCommand), and is never
// promoted while the key is set; the other members cascade from it. See
// docs/operations/standby-cluster.md.
type StandbyCluster struct {
	// Host is the source's address: one host, or several separated by
	// commas (libpq's multiple hosts: the standby leader streams from the
	// one that accepts writes, so it follows the source's failovers).
	Host string `yaml:"host,omitempty" json:"host,omitempty"`
	// Port is the source's PostgreSQL port, the same for every host (5432
	// when zero).
	Port int `yaml:"port,omitempty" json:"port,omitempty"`
	// PrimarySlotName is the replication slot on the source the standby
	// leader streams through ("" for none).
	PrimarySlotName string `yaml:"primary_slot_name,omitempty" json:"primary_slot_name,omitempty"`
	// CreateReplicaMethods is how the standby leader gets its data
	// directory: basebackup (from the source) and pgbackrest (from the
	// backup repository), in order; empty means basebackup when a host is
	// set, pgbackrest otherwise.
	CreateReplicaMethods []string `yaml:"create_replica_methods,omitempty" json:"create_replica_methods,omitempty"`
	// RestoreCommand fetches WAL from the source's archive when streaming
	// cannot (or, without a host, always).
	RestoreCommand string `yaml:"restore_command,omitempty" json:"restore_command,omitempty"`
}

// Replica creation methods a standby cluster may name (those of
// pgmanager, which this package does not import).
const (
	methodBasebackup = "basebackup"
	methodPgBackRest = "pgbackrest"
)

// SourcePort is Port, or 5432.
func (c StandbyCluster) SourcePort() int {
	if c.Port == 0 {
		return 5432
	}
	return c.Port
}

// Methods are the replica creation methods in force.
func (c StandbyCluster) Methods() []string {
	switch {
	case len(c.CreateReplicaMethods) > 0:
		return slices.Clone(c.CreateReplicaMethods)
	case c.Host != "":
		return []string{methodBasebackup}
	}
	return []string{methodPgBackRest}
}

// Source names the source as people read it: its hosts and port, or
// the archive.
func (c StandbyCluster) Source() string {
	if c.Host == "" {
		return "the WAL archive (restore_command)"
	}
	return c.Host + " port " + strconv.Itoa(c.SourcePort())
}

// Equal reports whether two settings are the same.
func (c StandbyCluster) Equal(o StandbyCluster) bool {
	return c.Host == o.Host && c.SourcePort() == o.SourcePort() && c.PrimarySlotName == o.PrimarySlotName &&
		slices.Equal(c.Methods(), o.Methods()) && c.RestoreCommand == o.RestoreCommand
}

// Validate checks the section; its errors name standby_cluster's keys.
func (c StandbyCluster) Validate() error {
	var errs []error
	if c.Host == "" && c.RestoreCommand == "" {
		errs = append(errs, conf.Errorf("host", "or restore_command is required: where the standby leader replicates from"))
	}
	for _, h := range strings.Split(c.Host, ",") {
		if c.Host != "" && (strings.TrimSpace(h) == "" || strings.ContainsAny(h, " '\\=")) {
			errs = append(errs, conf.Errorf("host", "%q is not a host name, an address or a comma-separated list of them", c.Host))
			break
		}
	}
	if c.Port < 0 || c.Port > 65535 {
		errs = append(errs, conf.Errorf("port", "must be between 1 and 65535, got %d", c.Port))
	}
	if s := c.PrimarySlotName; s != "" && !validSlotName(s) {
		errs = append(errs, conf.Errorf("primary_slot_name", "%q: a slot name is lowercase letters, digits and underscores, at most 63", s))
	}
	for i, m := range c.CreateReplicaMethods {
		switch {
		case m != methodBasebackup && m != methodPgBackRest:
			errs = append(errs, conf.Errorf(fmt.Sprintf("create_replica_methods[%d]", i), "%q: must be basebackup or pgbackrest", m))
		case m == methodBasebackup && c.Host == "":
			errs = append(errs, conf.Errorf(fmt.Sprintf("create_replica_methods[%d]", i), "basebackup needs host"))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return conf.Prefix("standby_cluster", errors.Join(errs...))
}

// validSlotName is PostgreSQL's rule for replication slot names.
func validSlotName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// IsStandbyCluster reports whether standby_cluster is set.
func (c ClusterConfig) IsStandbyCluster() bool { return c.StandbyCluster != nil }
