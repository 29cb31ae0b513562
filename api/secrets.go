package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"raftgres/internal/conf"
)

// The steps of a password rotation (raftgres rotate-password), in order.
// Each is idempotent.
const (
	// RotateCheck changes nothing: can this member take part?
	RotateCheck = "check"
	// RotateStage stores the new password on the member (its override
	// file) without using it yet.
	RotateStage = "stage"
	// RotateApply, on the primary only, changes the role's password in
	// PostgreSQL and then activates it there.
	RotateApply = "apply"
	// RotateActivate makes the member use the staged password (pgpass,
	// the agent's own connections).
	RotateActivate = "activate"
)

// RotatePhases lists the steps in order.
func RotatePhases() []string { return []string{RotateCheck, RotateStage, RotateApply, RotateActivate} }

// RotateRoles are the roles whose password can be rotated.
func RotateRoles() []string { return []string{"superuser", "replication", "rewind"} }

// The states of a member for the password of a rotation (RotateStatus).
const (
	// RotateStateOld: the member uses another password and has not
	// staged this one.
	RotateStateOld = "old"
	// RotateStateStaged: stored, not in use yet.
	RotateStateStaged = "staged"
	// RotateStateActive: in use (pgpass and the agent's connections).
	RotateStateActive = "active"
)

// RotateRequest is the body of POST /secrets/rotate. The password is a
// conf.Secret, so printing a request never shows it; only its JSON form
// carries the value.
type RotateRequest struct {
	Role     string
	Phase    string
	Password conf.Secret
}

// rotateWire is RotateRequest on the wire.
type rotateWire struct {
	Role     string `json:"role"`
	Phase    string `json:"phase"`
	Password string `json:"password"`
}

// MarshalJSON sends the password itself (over the internal API only).
func (r RotateRequest) MarshalJSON() ([]byte, error) {
	return json.Marshal(rotateWire{Role: r.Role, Phase: r.Phase, Password: r.Password.Reveal()})
}

// UnmarshalJSON reads the wire form.
func (r *RotateRequest) UnmarshalJSON(b []byte) error {
	var w rotateWire
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return err
	}
	*r = RotateRequest{Role: w.Role, Phase: w.Phase, Password: conf.Secret(w.Password)}
	return nil
}

// validate checks the request's shape; the password's content is the
// rotator's to judge.
func (r RotateRequest) validate() error {
	if !slices.Contains(RotateRoles(), r.Role) {
		return fmt.Errorf("%w: role must be one of %s, got %q", ErrBadRequest, strings.Join(RotateRoles(), ", "), r.Role)
	}
	if !slices.Contains(RotatePhases(), r.Phase) {
		return fmt.Errorf("%w: phase must be one of %s, got %q", ErrBadRequest, strings.Join(RotatePhases(), ", "), r.Phase)
	}
	if !r.Password.IsSet() {
		return fmt.Errorf("%w: no password", ErrBadRequest)
	}
	return nil
}

// RotateStatus is a member's answer to a rotation step.
type RotateStatus struct {
	Member string `json:"member"`
	Role   string `json:"role"`
	// State is RotateStateOld, RotateStateStaged or RotateStateActive,
	// for the password of the request.
	State string `json:"state"`
	// Note says more (e.g. "the config file holds this password").
	Note string `json:"note,omitempty"`
}

// SecretRotator carries out one rotation step on this member. Its errors
// map to HTTP answers as the package's sentinels say (ErrBadRequest for a
// password it refuses, ErrPrecondition for a step out of order); they
// must never contain the password.
type SecretRotator func(ctx context.Context, req RotateRequest) (RotateStatus, error)

// WithSecretRotator serves POST /secrets/rotate (raftgres rotate-password)
// with f; without it (no postgresql: section) the endpoint answers 404.
func WithSecretRotator(f SecretRotator) Option { return func(s *Server) { s.rotator = f } }

func (s *Server) handleRotate(w http.ResponseWriter, r *http.Request) {
	var req RotateRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		writeError(w, err, "")
		return
	}
	if err := req.validate(); err != nil {
		writeError(w, err, "")
		return
	}
	if s.rotator == nil {
		writeError(w, fmt.Errorf("%w: member %s runs no PostgreSQL (no postgresql: section)", ErrNotFound, s.store.ID()), "")
		return
	}
	if req.Phase == RotateApply {
		if v := s.view(); !v.holdsValidLease() {
			writeError(w, fmt.Errorf("%w: %s is not the primary with a valid lease: the role's password is changed on the primary only",
				ErrPrecondition, v.name), "")
			return
		}
	}
	s.logger.Info("password rotation step", "role", req.Role, "phase", req.Phase, "remote", r.RemoteAddr)
	st, err := s.rotator(r.Context(), req)
	if err != nil {
		s.logger.Warn("password rotation step failed", "role", req.Role, "phase", req.Phase, "error", err)
		writeError(w, err, "")
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// RotateSecret runs one rotation step on this member (an internal
// endpoint: it needs the cluster token or a peer certificate).
func (c *Client) RotateSecret(ctx context.Context, req RotateRequest) (RotateStatus, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return RotateStatus{}, fmt.Errorf("encode rotation request: %w", err)
	}
	var out RotateStatus
	err = c.do(ctx, http.MethodPost, rotatePath, body, "", &out)
	return out, err
}

// rotatePath is the rotation endpoint.
const rotatePath = "/secrets/rotate"
