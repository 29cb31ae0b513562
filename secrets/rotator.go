package secrets

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"raftgres/api"
	"raftgres/internal/conf"
	"raftgres/pgmanager"
)

// rotatorCheckEvery is how often the agent looks whether a staged password
// has reached its PostgreSQL's catalog (a rotation whose last step never
// arrived here).
const rotatorCheckEvery = 2 * time.Second

// CredentialStore is what the Rotator needs from pgmanager.Manager.
type CredentialStore interface {
	Rotatable(r pgmanager.Role) error
	Password(r pgmanager.Role) conf.Secret
	SetPassword(r pgmanager.Role, p conf.Secret) error
	StagePassword(r pgmanager.Role, p conf.Secret)
	AlterPassword(ctx context.Context, r pgmanager.Role, p conf.Secret) error
	PasswordMatches(ctx context.Context, r pgmanager.Role, p conf.Secret) (bool, error)
}

// Rotator carries out this member's steps of raftgres rotate-password (the
// api's SecretRotator) and keeps the override file in the agent's
// data_dir. Steps run one at a time.
type Rotator struct {
	member string
	pg     CredentialStore
	// configured is the config file's password of each role.
	configured map[pgmanager.Role]conf.Secret
	logger     hclog.Logger

	mu sync.Mutex
	ov *secretOverrides
}

// NewRotator loads the override file of dataDir and applies it to pg: an
// entry equal to the config file's password is dropped (the operator has
// updated the config), the others replace the config's password.
func NewRotator(member, dataDir string, pg CredentialStore, configured map[pgmanager.Role]conf.Secret,
	logger hclog.Logger) (*Rotator, error) {
	ov, err := loadOverrides(dataDir)
	if err != nil {
		return nil, err
	}
	r := &Rotator{member: member, pg: pg, configured: configured, logger: logger.Named("rotate"), ov: ov}
	changed := false
	for _, role := range pgmanager.Roles() {
		e := ov.get(role)
		if e.Password != "" && conf.Secret(e.Password) == configured[role] {
			r.logger.Info("password override removed: the config file now holds the same password", "role", string(role))
			e.Password, changed = "", true
		}
		if e.Staged != "" && (conf.Secret(e.Staged) == configured[role] && e.Password == "" || e.Staged == e.Password) {
			e.Staged, changed = "", true
		}
		ov.set(role, e)
		if e.Password != "" {
			if err := pg.SetPassword(role, conf.Secret(e.Password)); err != nil {
				return nil, fmt.Errorf("password override of %s in %s: %w", role, ov.path, err)
			}
			r.logger.Info("password overridden by rotate-password (the config file holds an older one)",
				"role", string(role), "file", ov.path)
		}
		if e.Staged != "" {
			pg.StagePassword(role, conf.Secret(e.Staged))
			r.logger.Warn("a password rotation was staged but not finished here: the agent activates it once its "+
				"PostgreSQL shows the new password; or run raftgres rotate-password again", "role", string(role))
		}
	}
	if changed {
		if err := ov.save(); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// state is this member's state for password p of role.
func (r *Rotator) state(role pgmanager.Role, p conf.Secret) string {
	switch {
	case r.pg.Password(role) == p:
		return api.RotateStateActive
	case conf.Secret(r.ov.get(role).Staged) == p:
		return api.RotateStateStaged
	}
	return api.RotateStateOld
}

// Rotate is the api.SecretRotator.
func (r *Rotator) Rotate(ctx context.Context, req api.RotateRequest) (api.RotateStatus, error) {
	role, err := pgmanager.ParseRole(req.Role)
	if err != nil {
		return api.RotateStatus{}, fmt.Errorf("%w: %w", api.ErrBadRequest, err)
	}
	if err := r.pg.Rotatable(role); err != nil {
		return api.RotateStatus{}, fmt.Errorf("%w: %s on %s: %w", api.ErrPrecondition, role, r.member, err)
	}
	if err := pgmanager.CheckNewPassword(req.Password); err != nil {
		return api.RotateStatus{}, fmt.Errorf("%w: %w", api.ErrBadRequest, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := api.RotateStatus{Member: r.member, Role: req.Role}
	if req.Password == r.configured[role] {
		out.Note = "the config file holds this password"
	}
	st := r.state(role, req.Password)
	switch req.Phase {
	case api.RotateCheck:
	case api.RotateStage:
		switch {
		case st == api.RotateStateOld:
			if err := r.update(role, func(e *secretEntry) { e.Staged = req.Password.Reveal() }); err != nil {
				return out, err
			}
			r.pg.StagePassword(role, req.Password)
			r.logger.Info("new password staged", "role", string(role))
		case st == api.RotateStateActive && r.ov.get(role).Staged != "":
			// Already in use; forget an older, unfinished rotation.
			if err := r.update(role, func(e *secretEntry) { e.Staged = "" }); err != nil {
				return out, err
			}
			r.pg.StagePassword(role, "")
		}
	case api.RotateApply:
		if st == api.RotateStateOld {
			return out, fmt.Errorf("%w: the %s password is not staged on %s: run the whole rotation again", api.ErrPrecondition, role, r.member)
		}
		if err := r.pg.AlterPassword(ctx, role, req.Password); err != nil {
			if errors.Is(err, pgmanager.ErrNotPrimary) {
				err = fmt.Errorf("%w: %w", api.ErrPrecondition, err)
			}
			return out, err
		}
		if err := r.activate(role, req.Password, "changed in postgres"); err != nil {
			return out, err
		}
	case api.RotateActivate:
		if st == api.RotateStateOld {
			return out, fmt.Errorf("%w: the %s password is not staged on %s: run the whole rotation again", api.ErrPrecondition, role, r.member)
		}
		if err := r.activate(role, req.Password, "activated"); err != nil {
			return out, err
		}
	default:
		return out, fmt.Errorf("%w: unknown phase %q", api.ErrBadRequest, req.Phase)
	}
	out.State = r.state(role, req.Password)
	return out, nil
}

// activate makes p role's password in use: the override file first (so a
// restart keeps it), then pgmanager (pgpass). The caller holds mu.
func (r *Rotator) activate(role pgmanager.Role, p conf.Secret, how string) error {
	err := r.update(role, func(e *secretEntry) {
		e.Staged, e.Password = "", p.Reveal()
		if p == r.configured[role] {
			e.Password = "" // the config file's own password needs no override
		}
	})
	if err != nil {
		return err
	}
	if err := r.pg.SetPassword(role, p); err != nil {
		return err
	}
	r.logger.Info("new password in use", "role", string(role), "how", how)
	return nil
}

// update edits role's entry and saves the file, or leaves both as they
// were when the save fails. The caller holds mu.
func (r *Rotator) update(role pgmanager.Role, edit func(*secretEntry)) error {
	old := r.ov.get(role)
	e := old
	edit(&e)
	r.ov.set(role, e)
	if err := r.ov.save(); err != nil {
		r.ov.set(role, old)
		return fmt.Errorf("save password overrides on %s: %w", r.member, err)
	}
	return nil
}

// Run activates a staged password once the local PostgreSQL's catalog
// holds it (the primary changed the role, and the step that activates it
// here never came: the CLI was interrupted, or this member was briefly
// unreachable), until ctx ends.
func (r *Rotator) Run(ctx context.Context) error {
	tick := time.NewTicker(rotatorCheckEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		r.checkStaged(ctx)
	}
}

// checkStaged is one pass of Run.
func (r *Rotator) checkStaged(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, role := range pgmanager.Roles() {
		staged := conf.Secret(r.ov.get(role).Staged)
		if !staged.IsSet() {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ok, err := r.pg.PasswordMatches(cctx, role, staged)
		cancel()
		if err != nil {
			r.logger.Debug("cannot check a staged password", "role", string(role), "error", err)
			continue
		}
		if !ok {
			continue
		}
		if err := r.activate(role, staged, "found in the catalog"); err != nil {
			r.logger.Warn("activate a staged password", "role", string(role), "error", err)
		}
	}
}
