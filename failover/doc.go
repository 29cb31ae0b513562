// Package failover is raftgres's HA brain: a pure Decide from observed state
// to a plan, the per-node supervisor loop that executes plans against the
// local PostgreSQL, and the coordinator that runs on the Raft leader (lease
// clock, elections, switchovers). It consumes raftstore and pgmanager only
// through the small interfaces it declares.
package failover
