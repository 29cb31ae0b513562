// Package raftstore is raftgres's replicated store: an embedded hashicorp/raft
// peer with a bbolt log and stable store (raft-boltdb/v2 behind a log cache),
// file snapshots, an optional mutual TLS transport, and the FSM whose State
// holds the cluster configuration, its members and the leader key.
//
// Commands are a type byte plus JSON (codec.go), applied deterministically
// (apply.go: no clock, no I/O; times come from the proposer). Compare-and-set
// failures are normal results carried in ApplyResult.Err. Membership changes
// go through the leader: a joining node is a nonvoter until it has caught up.
package raftstore
