// Package pgmanager drives the local PostgreSQL: initdb, start and stop
// (postgres runs as a direct child with a parent-death signal), promote,
// follow a new primary, pg_basebackup clones, pg_rewind, the managed
// configuration files, replication slots, users, and status queries
// through pgx. It is the only package that touches PostgreSQL and it
// imports nothing from the project but the shared config types.
//
// A postmaster this package did not start but that runs on the data
// directory (foreign.go) is seen, queried, stopped and fenced like its own
// child, and nothing that modifies the data directory runs while one
// lives. The commit gate (gate.go) is the agent's replication client that
// acknowledges the primary's commits only while its lease is valid.
//
// Builders are pure (render.go, settings.go: text plus a content hash);
// executors write only on change and run binaries under a context with a
// cancel signal and a wait delay. Passwords go through a 0600 pgpass file,
// never argv or logs.
package pgmanager
