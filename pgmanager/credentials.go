package pgmanager

import (
	"context"
	"crypto/md5"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"raftgres/internal/conf"
)

// Role names one of the three credentials of postgresql.authentication.
type Role string

// The roles whose password raftgres holds.
const (
	RoleSuperuser   Role = "superuser"
	RoleReplication Role = "replication"
	RoleRewind      Role = "rewind"
)

// Roles lists the roles in the order they are reported.
func Roles() []Role { return []Role{RoleSuperuser, RoleReplication, RoleRewind} }

// ParseRole reads "superuser", "replication" or "rewind".
func ParseRole(s string) (Role, error) {
	for _, r := range Roles() {
		if s == string(r) {
			return r, nil
		}
	}
	return "", fmt.Errorf("unknown role %q: want superuser, replication or rewind", s)
}

// CheckNewPassword is the rule for a password given at runtime (a
// rotation): non-empty and printable ASCII, as the config file's
// passwords (checkPassword), without a space at either end (which a YAML
// config file would drop when the operator copies it there).
func CheckNewPassword(p conf.Secret) error {
	if !p.IsSet() {
		return errors.New("the password is empty")
	}
	if checkPassword(p) != nil {
		return errors.New("the password must be printable ASCII (no control, line-break or non-ASCII characters)")
	}
	if strings.TrimSpace(p.Reveal()) != p.Reveal() {
		return errors.New("the password starts or ends with a space (a copy-paste slip?)")
	}
	return nil
}

// configCreds is the role's credentials as the config file has them.
func (m *Manager) configCreds(r Role) Credentials {
	switch r {
	case RoleSuperuser:
		return m.cfg.Superuser
	case RoleReplication:
		return m.cfg.Replication
	default:
		return m.cfg.Rewind
	}
}

// creds is the role's credentials in use: the config file's, with the
// password replaced by SetPassword's when one is set.
func (m *Manager) creds(r Role) Credentials {
	m.credMu.Lock()
	defer m.credMu.Unlock()
	return m.credsLocked(r)
}

func (m *Manager) credsLocked(r Role) Credentials {
	c := m.configCreds(r)
	if p, ok := m.override[r]; ok {
		c.Password = p
	}
	return c
}

// Rotatable says why the password of r cannot be changed at runtime, or
// nil: the role must be one raftgres logs in as with a password.
func (m *Manager) Rotatable(r Role) error {
	switch r {
	case RoleSuperuser:
		if !m.cfg.Superuser.Password.IsSet() {
			return errors.New("postgresql.authentication.superuser has no password: the agent logs in by peer " +
				"authentication; set a password in the config file (and restart the agent) first")
		}
	case RoleReplication:
	case RoleRewind:
		if m.cfg.Rewind.Username == "" || m.cfg.Rewind.Username == m.cfg.Superuser.Username {
			return errors.New("no separate rewind role is configured (pg_rewind logs in as the superuser): rotate the superuser's password")
		}
	default:
		return fmt.Errorf("unknown role %q", r)
	}
	return nil
}

// Password returns the password in use for r.
func (m *Manager) Password(r Role) conf.Secret { return m.creds(r).Password }

// SetPassword makes p the password raftgres uses for r from now on: the
// pgpass file (pg_basebackup, pg_rewind, the walreceiver's next
// connection, pgBackRest) is rewritten at once, and for the superuser the
// agent's next local connections use it. Connections already open are not
// affected. The role itself is not changed in PostgreSQL (AlterPassword).
func (m *Manager) SetPassword(r Role, p conf.Secret) error {
	if err := m.Rotatable(r); err != nil {
		return err
	}
	if err := CheckNewPassword(p); err != nil {
		return err
	}
	m.credMu.Lock()
	defer m.credMu.Unlock()
	if m.override == nil {
		m.override = map[Role]conf.Secret{}
	}
	if p == m.configCreds(r).Password {
		delete(m.override, r)
	} else {
		m.override[r] = p
	}
	if m.staged[r] == p {
		delete(m.staged, r)
	}
	if r == RoleSuperuser {
		m.localPW = nil // try the new password first from now on
	}
	if _, err := os.Stat(filepath.Dir(m.pgpassPath())); err != nil {
		return nil // no data directory's parent yet: Configure writes the file
	}
	if err := m.writePgpassLocked(); err != nil {
		return fmt.Errorf("set the %s password: %w", r, err)
	}
	return nil
}

// StagePassword tells the manager that p may become r's password (a
// rotation under way): the agent's local superuser connections try it when
// the password in use is refused, so a server that has replayed the change
// before SetPassword ran stays reachable. An empty p forgets it.
func (m *Manager) StagePassword(r Role, p conf.Secret) {
	m.credMu.Lock()
	defer m.credMu.Unlock()
	if m.staged == nil {
		m.staged = map[Role]conf.Secret{}
	}
	if p.IsSet() {
		m.staged[r] = p
	} else {
		delete(m.staged, r)
	}
}

// localPasswords are the superuser passwords the local server may expect,
// the one it accepted last first: the one in use, a staged one, and the
// config file's (a standby that has not replayed a change yet).
func (m *Manager) localPasswords() []string {
	m.credMu.Lock()
	defer m.credMu.Unlock()
	var out []string
	add := func(p string) {
		for _, q := range out {
			if q == p {
				return
			}
		}
		out = append(out, p)
	}
	if m.localPW != nil {
		add(*m.localPW)
	}
	add(m.credsLocked(RoleSuperuser).Password.Reveal())
	if p, ok := m.staged[RoleSuperuser]; ok {
		add(p.Reveal())
	}
	add(m.cfg.Superuser.Password.Reveal())
	return out
}

// tryLocalPasswords runs dial with each of localPasswords (set installs
// one in the connection config) until the server does not refuse the
// password, and remembers the one it accepted.
func (m *Manager) tryLocalPasswords(set func(string), dial func() error) error {
	var err error
	for _, pw := range m.localPasswords() {
		set(pw)
		if err = dial(); err == nil {
			m.credMu.Lock()
			m.localPW = &pw
			m.credMu.Unlock()
			return nil
		}
		if !isPasswordRefused(err) {
			return err
		}
	}
	return err
}

// isPasswordRefused reports a failed password authentication (28P01).
func isPasswordRefused(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "28P01"
}

// AlterPassword sets r's password in PostgreSQL to p, on a primary: it
// sends a SCRAM verifier computed here, never the password, so no server
// log shows it; standbys get the change through WAL. It does not change
// the password raftgres uses (SetPassword).
func (m *Manager) AlterPassword(ctx context.Context, r Role, p conf.Secret) error {
	if err := m.Rotatable(r); err != nil {
		return err
	}
	if err := CheckNewPassword(p); err != nil {
		return err
	}
	conn, err := m.connect(ctx)
	if err != nil {
		return fmt.Errorf("change the %s password: %w", r, err)
	}
	defer conn.Close(context.Background())
	var standby bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&standby); err != nil {
		return fmt.Errorf("change the %s password: %w", r, err)
	}
	if standby {
		return fmt.Errorf("change the %s password on %s: %w", r, m.member, ErrNotPrimary)
	}
	v, err := scramVerifier(p.Reveal())
	if err != nil {
		return err
	}
	ident := pgx.Identifier{m.configCreds(r).Username}.Sanitize()
	if _, err := conn.Exec(ctx, fmt.Sprintf("ALTER ROLE %s PASSWORD %s", ident, quoteLiteral(v))); err != nil {
		return fmt.Errorf("change the %s password on %s: %w", r, m.member, err)
	}
	m.logger.Info("role password changed in postgres", "role", string(r), "username", m.configCreds(r).Username)
	return nil
}

// PasswordMatches reports whether p is r's password in the local
// server's catalog (pg_authid, on a standby as far as it has replayed).
func (m *Manager) PasswordMatches(ctx context.Context, r Role, p conf.Secret) (bool, error) {
	user := m.configCreds(r).Username
	var stored *string
	err := m.withSession(ctx, func(conn *pgx.Conn) error {
		stored = nil
		err := conn.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", user).Scan(&stored)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	})
	if err != nil {
		return false, fmt.Errorf("read the %s password verifier: %w", r, err)
	}
	return stored != nil && verifierMatches(*stored, user, p.Reveal()), nil
}

// verifierMatches reports whether password matches a pg_authid verifier:
// SCRAM-SHA-256 (as scramVerifier builds it) or md5.
func verifierMatches(stored, user, password string) bool {
	if h, ok := strings.CutPrefix(stored, "md5"); ok && len(h) == 32 {
		sum := md5.Sum([]byte(password + user))
		return subtle.ConstantTimeCompare([]byte(hex.EncodeToString(sum[:])), []byte(h)) == 1
	}
	rest, ok := strings.CutPrefix(stored, "SCRAM-SHA-256$")
	if !ok {
		return false
	}
	params, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return false
	}
	iterStr, saltB64, ok := strings.Cut(params, ":")
	if !ok {
		return false
	}
	iter, err := strconv.Atoi(iterStr)
	if err != nil || iter < 1 || iter > 1<<24 {
		return false
	}
	salt, err := base64.StdEncoding.DecodeString(saltB64)
	if err != nil {
		return false
	}
	want, err := scramVerifierWithSalt(password, salt, iter)
	if err != nil {
		return false
	}
	_, wantKeys, _ := strings.Cut(strings.TrimPrefix(want, "SCRAM-SHA-256$"), "$")
	return subtle.ConstantTimeCompare([]byte(wantKeys), []byte(keys)) == 1
}
