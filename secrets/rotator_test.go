package secrets

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"

	"raftgres/api"
	"raftgres/internal/conf"
	"raftgres/pgmanager"
)

const newSecret = "Rot4ted-pw"

func TestOverridesFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	o, err := loadOverrides(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.roles) != 0 {
		t.Fatalf("no file, entries %v", o.roles)
	}
	tricky := []string{"yes", "123", "a: b", "#x", "'q'", `"dq"`, `back\slash`, "null", "~", "- dash", "{x}"}
	for i, pw := range tricky {
		role := pgmanager.Roles()[i%3]
		o.set(role, secretEntry{Password: pw, Staged: pw + "!"})
		if err := o.save(); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(secretsPath(dir))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("mode %04o, want 0600", fi.Mode().Perm())
		}
		back, err := loadOverrides(dir)
		if err != nil {
			t.Fatalf("%q: %v", pw, err)
		}
		if got := back.get(role); got != (secretEntry{Password: pw, Staged: pw + "!"}) {
			t.Fatalf("%q came back as %+v", pw, got)
		}
	}
	for _, r := range pgmanager.Roles() {
		o.set(r, secretEntry{})
	}
	if err := o.save(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(secretsPath(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("an empty override file was kept: %v", err)
	}
}

func TestOverridesFileRefusals(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, content, want string
		mode                os.FileMode
	}{
		{"readable by others", "replication: {password: " + newSecret + "}\n", "chmod 600", 0o644},
		{"unknown role", "app_user: {password: " + newSecret + "}\n", "unknown role", 0o600},
		{"unknown key", "replication: {passwd: " + newSecret + "}\n", "unknown key", 0o600},
		{"plain value", "replication: " + newSecret + "\n", "want a mapping", 0o600},
		{"list value", "replication: {password: [" + newSecret + "]}\n", "want strings", 0o600},
		{"bad password", "replication: {password: \"" + newSecret + "\\u00e9\"}\n", "printable ASCII", 0o600},
		{"not yaml", "replication: {password: " + newSecret + "\n", "not valid YAML", 0o600},
		{"not a mapping", "- " + newSecret + "\n", "mapping of role names", 0o600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if err := os.WriteFile(secretsPath(dir), []byte(tc.content), tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(secretsPath(dir), tc.mode); err != nil {
				t.Fatal(err)
			}
			_, err := loadOverrides(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), newSecret) {
				t.Fatalf("the error shows the password: %v", err)
			}
		})
	}
}

// fakeCreds is a CredentialStore without PostgreSQL.
type fakeCreds struct {
	mu        sync.Mutex
	inUse     map[pgmanager.Role]conf.Secret
	staged    map[pgmanager.Role]conf.Secret
	altered   []conf.Secret
	catalog   map[pgmanager.Role]conf.Secret // PasswordMatches
	alterErr  error
	rotateErr error
}

func newFakeCreds(configured map[pgmanager.Role]conf.Secret) *fakeCreds {
	f := &fakeCreds{inUse: map[pgmanager.Role]conf.Secret{}, staged: map[pgmanager.Role]conf.Secret{},
		catalog: map[pgmanager.Role]conf.Secret{}}
	for r, p := range configured {
		f.inUse[r], f.catalog[r] = p, p
	}
	return f
}

func (f *fakeCreds) Rotatable(pgmanager.Role) error { return f.rotateErr }
func (f *fakeCreds) Password(r pgmanager.Role) conf.Secret {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.inUse[r]
}
func (f *fakeCreds) SetPassword(r pgmanager.Role, p conf.Secret) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inUse[r] = p
	return nil
}
func (f *fakeCreds) StagePassword(r pgmanager.Role, p conf.Secret) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.staged[r] = p
}
func (f *fakeCreds) AlterPassword(_ context.Context, r pgmanager.Role, p conf.Secret) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.alterErr != nil {
		return f.alterErr
	}
	f.altered = append(f.altered, p)
	f.catalog[r] = p
	return nil
}
func (f *fakeCreds) PasswordMatches(_ context.Context, r pgmanager.Role, p conf.Secret) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.catalog[r] == p, nil
}

func configured() map[pgmanager.Role]conf.Secret {
	return map[pgmanager.Role]conf.Secret{pgmanager.RoleSuperuser: "super-old", pgmanager.RoleReplication: "repl-old",
		pgmanager.RoleRewind: "rewind-old"}
}

func testRotator(t *testing.T, dir string, pg CredentialStore) (*Rotator, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	r, err := NewRotator("pg1", dir, pg, configured(), hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Trace}))
	if err != nil {
		t.Fatal(err)
	}
	return r, &logs
}

func rotate(t *testing.T, r *Rotator, phase string, pw conf.Secret) (api.RotateStatus, error) {
	t.Helper()
	return r.Rotate(context.Background(), api.RotateRequest{Role: "replication", Phase: phase, Password: pw})
}

func TestRotatorSteps(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pg := newFakeCreds(configured())
	r, logs := testRotator(t, dir, pg)
	for _, phase := range []string{api.RotateApply, api.RotateActivate} {
		if _, err := rotate(t, r, phase, newSecret); !errors.Is(err, api.ErrPrecondition) {
			t.Fatalf("%s before stage: %v, want a precondition error", phase, err)
		}
	}
	if _, err := rotate(t, r, api.RotateStage, "bad\x01pw"); !errors.Is(err, api.ErrBadRequest) {
		t.Fatalf("a bad password: %v", err)
	}
	st, err := rotate(t, r, api.RotateCheck, newSecret)
	if err != nil || st.State != api.RotateStateOld {
		t.Fatalf("check: %+v, %v", st, err)
	}
	if _, err := os.Stat(secretsPath(dir)); err == nil {
		t.Fatal("check wrote the override file")
	}
	for range 2 { // idempotent
		st, err = rotate(t, r, api.RotateStage, newSecret)
		if err != nil || st.State != api.RotateStateStaged {
			t.Fatalf("stage: %+v, %v", st, err)
		}
	}
	if pg.Password(pgmanager.RoleReplication) != "repl-old" || pg.staged[pgmanager.RoleReplication] != newSecret {
		t.Fatal("stage changed the password in use, or did not stage it")
	}
	if o, _ := loadOverrides(dir); o.get(pgmanager.RoleReplication) != (secretEntry{Staged: newSecret}) {
		t.Fatalf("override file after stage: %+v", o.get(pgmanager.RoleReplication))
	}
	for range 2 {
		st, err = rotate(t, r, api.RotateApply, newSecret)
		if err != nil || st.State != api.RotateStateActive {
			t.Fatalf("apply: %+v, %v", st, err)
		}
	}
	if len(pg.altered) != 2 || pg.Password(pgmanager.RoleReplication) != newSecret {
		t.Fatalf("apply: altered %d times, in use changed: %v", len(pg.altered), pg.Password(pgmanager.RoleReplication) == newSecret)
	}
	st, err = rotate(t, r, api.RotateActivate, newSecret)
	if err != nil || st.State != api.RotateStateActive {
		t.Fatalf("activate again: %+v, %v", st, err)
	}
	if o, _ := loadOverrides(dir); o.get(pgmanager.RoleReplication) != (secretEntry{Password: newSecret}) {
		t.Fatalf("override file after activate: %+v", o.get(pgmanager.RoleReplication))
	}
	// An unfinished rotation to another password is forgotten when the
	// one in use is staged again.
	if _, err := rotate(t, r, api.RotateStage, "abandoned-pw"); err != nil {
		t.Fatal(err)
	}
	if st, err := rotate(t, r, api.RotateStage, newSecret); err != nil || st.State != api.RotateStateActive {
		t.Fatalf("stage of the password in use: %+v, %v", st, err)
	}
	if o, _ := loadOverrides(dir); o.get(pgmanager.RoleReplication) != (secretEntry{Password: newSecret}) ||
		pg.staged[pgmanager.RoleReplication] != "" {
		t.Fatalf("the abandoned staged password was kept: %+v", o.get(pgmanager.RoleReplication))
	}
	// Restarted agent: the override is loaded.
	pg2 := newFakeCreds(configured())
	_, logs2 := testRotator(t, dir, pg2)
	if pg2.Password(pgmanager.RoleReplication) != newSecret {
		t.Fatal("a restarted agent did not load the override")
	}
	if !strings.Contains(logs2.String(), "password overridden") || !strings.Contains(logs2.String(), "role=replication") {
		t.Fatalf("the override is not logged at start:\n%s", logs2.String())
	}
	for _, l := range []string{logs.String(), logs2.String()} {
		if strings.Contains(l, newSecret) {
			t.Fatalf("the password is in the log:\n%s", l)
		}
	}
}

func TestRotatorStartCleansUp(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	o, _ := loadOverrides(dir)
	o.set(pgmanager.RoleReplication, secretEntry{Password: "repl-old"})                     // the config caught up
	o.set(pgmanager.RoleSuperuser, secretEntry{Password: "super-new", Staged: "super-new"}) // staged = in use
	o.set(pgmanager.RoleRewind, secretEntry{Staged: "rewind-next"})                         // unfinished
	if err := o.save(); err != nil {
		t.Fatal(err)
	}
	pg := newFakeCreds(configured())
	_, logs := testRotator(t, dir, pg)
	back, err := loadOverrides(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[pgmanager.Role]secretEntry{pgmanager.RoleSuperuser: {Password: "super-new"},
		pgmanager.RoleRewind: {Staged: "rewind-next"}}
	if fmt.Sprint(back.roles) != fmt.Sprint(want) {
		t.Fatalf("override file after start: %v, want %v", back.roles, want)
	}
	if pg.Password(pgmanager.RoleSuperuser) != "super-new" || pg.Password(pgmanager.RoleReplication) != "repl-old" ||
		pg.staged[pgmanager.RoleRewind] != "rewind-next" {
		t.Fatal("start did not apply the overrides")
	}
	for _, want := range []string{"password override removed", "staged but not finished"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	for _, secret := range []string{"super-new", "rewind-next", "repl-old"} {
		if strings.Contains(logs.String(), secret) {
			t.Fatalf("a password is in the log:\n%s", logs.String())
		}
	}
}

func TestRotatorActivatesWhatTheCatalogHolds(t *testing.T) {
	t.Parallel()
	pg := newFakeCreds(configured())
	r, _ := testRotator(t, t.TempDir(), pg)
	if _, err := rotate(t, r, api.RotateStage, newSecret); err != nil {
		t.Fatal(err)
	}
	r.checkStaged(context.Background())
	if pg.Password(pgmanager.RoleReplication) != "repl-old" {
		t.Fatal("activated a staged password the catalog does not hold")
	}
	pg.mu.Lock()
	pg.catalog[pgmanager.RoleReplication] = newSecret // the primary changed the role; replayed here
	pg.mu.Unlock()
	r.checkStaged(context.Background())
	if pg.Password(pgmanager.RoleReplication) != newSecret {
		t.Fatal("a staged password the catalog holds was not activated")
	}
}
