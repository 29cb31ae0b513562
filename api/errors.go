package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"raftgres/failover"
	"raftgres/raftstore"
)

var (
	// ErrNoLeader means no Raft leader (or its API address) is known yet.
	ErrNoLeader = errors.New("no raft leader known")
	// ErrUnauthorized is a missing or wrong token/certificate.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrBadRequest is malformed input.
	ErrBadRequest = errors.New("bad request")
	// ErrNotFound is an unknown endpoint or object.
	ErrNotFound = errors.New("not found")
	// ErrNotAllowed is a client address that restapi.allowlist refuses.
	ErrNotAllowed = errors.New("client not allowed")
	// ErrForbidden is an endpoint that is disabled by configuration.
	ErrForbidden = errors.New("forbidden")
	// ErrPrecondition is a request the cluster's current state refuses.
	ErrPrecondition = errors.New("precondition failed")
	// ErrConflict is a request that clashes with a pending one.
	ErrConflict = errors.New("conflict")
	// ErrUnavailable is something the member cannot answer now
	// (PostgreSQL stopped or not answering).
	ErrUnavailable = errors.New("unavailable")
)

// errorCodes pairs each sentinel with its wire code so that errors.Is works
// on the far side of an HTTP hop. Order matters: the first match wins.
var errorCodes = []struct {
	err    error
	code   string
	status int
}{
	{raftstore.ErrNotLeader, "not_leader", http.StatusMisdirectedRequest},
	{ErrNoLeader, "no_leader", http.StatusServiceUnavailable},
	{raftstore.ErrLeadershipLost, "leadership_lost", http.StatusServiceUnavailable},
	{raftstore.ErrClosed, "closed", http.StatusServiceUnavailable},
	{raftstore.ErrEpochMismatch, "epoch_mismatch", http.StatusConflict},
	{raftstore.ErrNotHolder, "not_holder", http.StatusConflict},
	{raftstore.ErrNotElectable, "not_electable", http.StatusConflict},
	{raftstore.ErrSyncMismatch, "sync_mismatch", http.StatusConflict},
	{raftstore.ErrFailoverPending, "failover_pending", http.StatusConflict},
	{raftstore.ErrHolderLeave, "holder_leave", http.StatusConflict},
	{raftstore.ErrSyncLeave, "sync_leave", http.StatusConflict},
	{raftstore.ErrVersionMismatch, "version_mismatch", http.StatusConflict},
	{raftstore.ErrAlreadyInitialized, "already_initialized", http.StatusConflict},
	{raftstore.ErrAlreadyBootstrapped, "already_bootstrapped", http.StatusConflict},
	{raftstore.ErrUnknownMember, "unknown_member", http.StatusNotFound},
	{raftstore.ErrJoinRefused, "join_refused", http.StatusForbidden},
	{raftstore.ErrInvalidCommand, "invalid_command", http.StatusBadRequest},
	{raftstore.ErrUnknownCommand, "unknown_command", http.StatusBadRequest},
	{ErrUnauthorized, "unauthorized", http.StatusUnauthorized},
	{ErrBadRequest, "bad_request", http.StatusBadRequest},
	{ErrNotFound, "not_found", http.StatusNotFound},
	{ErrNotAllowed, "not_allowed", http.StatusForbidden},
	{ErrForbidden, "forbidden", http.StatusForbidden},
	{ErrPrecondition, "precondition_failed", http.StatusPreconditionFailed},
	{failover.ErrRequestRefused, "refused", http.StatusPreconditionFailed},
	{ErrConflict, "conflict", http.StatusConflict},
	{ErrUnavailable, "unavailable", http.StatusServiceUnavailable},
	{errRequestFailed, "request_failed", http.StatusInternalServerError},
	{context.DeadlineExceeded, "timeout", http.StatusGatewayTimeout},
}

// errorStatus maps an error to its HTTP status and wire code. This is the
// one place where errors become status codes.
func errorStatus(err error) (int, string) {
	for _, e := range errorCodes {
		if errors.Is(err, e.err) {
			return e.status, e.code
		}
	}
	return http.StatusInternalServerError, "internal"
}

// errorFromWire rebuilds an error whose sentinel survives errors.Is.
func errorFromWire(code, msg string) error {
	if code == "" && msg == "" {
		return nil
	}
	for _, e := range errorCodes {
		if e.code == code {
			if msg == e.err.Error() {
				return e.err
			}
			return &remoteError{sentinel: e.err, msg: msg}
		}
	}
	return errors.New(msg)
}

type remoteError struct {
	sentinel error
	msg      string
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

// wireError is the JSON body of every error answer.
type wireError struct {
	Error     string `json:"error"`
	Code      string `json:"code"`
	LeaderAPI string `json:"leader_api,omitempty"`
}

func wireOf(err error) (code, msg string) {
	if err == nil {
		return "", ""
	}
	_, code = errorStatus(err)
	return code, err.Error()
}

func statusError(status int, w wireError) error {
	if err := errorFromWire(w.Code, w.Error); err != nil {
		return err
	}
	return fmt.Errorf("http status %d", status)
}
