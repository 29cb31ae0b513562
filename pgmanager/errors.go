package pgmanager

import "errors"

// ErrRewindFailed means pg_rewind could not bring the data directory onto
// the source's timeline (or stopped after it began to change it): the data
// must be recloned.
var ErrRewindFailed = errors.New("pg_rewind failed")

// ErrRewindSourceUnavailable means the rewind source could not be reached
// or refused the rewind user's login before pg_rewind changed anything:
// the data directory is intact, so retry (or pick another source) rather
// than reclone.
var ErrRewindSourceUnavailable = errors.New("rewind source unavailable")

// errNotRunning means no postmaster runs on the data directory.
var errNotRunning = errors.New("postgres is not running")

// ErrNotPrimary means an operation that needs a primary (a role's password
// change) met a server in recovery.
var ErrNotPrimary = errors.New("postgres is a standby, not the primary")
