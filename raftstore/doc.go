// Package raftstore is raftgres's replicated store: an embedded hashicorp/raft
// peer with a bbolt log and stable store (raft-boltdb/v2 behind a log cache),
// file snapshots, an optional mutual TLS transport, and the FSM whose State
// holds the cluster configuration, its members and the leader key.
//
// Commands are a type byte plus JSON (codec.go). Proposers validate them
// (Encode, and Decode for commands from peers); the FSM only decodes a
// committed entry and applies it deterministically (apply.go: no clock, no
// I/O, no validation rules; times come from the proposer). Compare-and-set
// failures are normal results carried in ApplyResult.Err; Commit folds them
// into the error. History keeps the newest MaxHistory events and a snapshot
// is never written larger than Restore reads (MaxSnapshotSize). Membership
// changes go through the leader: a joining node is a nonvoter until it has
// caught up, and the leader key holder cannot leave (switch over first).
package raftstore
