// Package secrets is password rotation without downtime: the override file
// in the agent's data_dir (secrets.yml), each member's Rotator (the api's
// SecretRotator) and Rotate, which drives the steps on every member.
package secrets

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"go.yaml.in/yaml/v3"

	"raftgres/internal/conf"
	"raftgres/internal/fsutil"
	"raftgres/pgmanager"
)

// FileName is the password override file in the agent's data_dir,
// written by raftgres rotate-password.
const FileName = "secrets.yml"

// secretsHeader opens the override file.
const secretsHeader = `# Written by raftgres rotate-password: PostgreSQL passwords that replace the
# config file's (postgresql.authentication). "password" is in use; "staged" is
# a rotation under way. Once the config file holds the same password, the agent
# removes the entry when it starts. Keep this file 0600.
`

// secretEntry is one role's entry. Plain strings, not conf.Secret: this is
// the one place the values are written out.
type secretEntry struct {
	Password string `yaml:"password,omitempty"`
	Staged   string `yaml:"staged,omitempty"`
}

// secretOverrides is the override file's content.
type secretOverrides struct {
	path  string
	roles map[pgmanager.Role]secretEntry
}

func secretsPath(dataDir string) string { return filepath.Join(dataDir, FileName) }

// loadOverrides reads the override file of dataDir (none: empty). A file
// that group or others can read, an unknown role or key, or a password
// that breaks the password rule is an error naming the file, never the
// value.
func loadOverrides(dataDir string) (*secretOverrides, error) {
	o := &secretOverrides{path: secretsPath(dataDir), roles: map[pgmanager.Role]secretEntry{}}
	f, err := os.Open(o.path)
	if errors.Is(err, os.ErrNotExist) {
		return o, nil
	}
	if err != nil {
		return nil, fmt.Errorf("password overrides: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("password overrides: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("password overrides %s are readable by group or others (mode %04o): run chmod 600 %s",
			o.path, fi.Mode().Perm(), o.path)
	}
	data, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("password overrides: %w", err)
	}
	raw, err := parseOverrides(data)
	if err != nil {
		return nil, fmt.Errorf("password overrides %s: %w", o.path, err)
	}
	for r, e := range raw {
		for what, v := range map[string]string{"password": e.Password, "staged": e.Staged} {
			if v == "" {
				continue
			}
			if err := pgmanager.CheckNewPassword(conf.Secret(v)); err != nil {
				return nil, fmt.Errorf("password overrides %s: %s.%s: %w", o.path, r, what, err)
			}
		}
		if e != (secretEntry{}) {
			o.roles[r] = e
		}
	}
	return o, nil
}

// parseOverrides reads the file's YAML by hand, so that no error can quote
// a value (yaml's own type errors do): role: {password: …, staged: …}.
func parseOverrides(data []byte) (map[pgmanager.Role]secretEntry, error) {
	out := map[pgmanager.Role]secretEntry{}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, errors.New("not valid YAML")
	}
	if len(doc.Content) == 0 {
		return out, nil
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: want a mapping of role names", top.Line)
	}
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		r, err := pgmanager.ParseRole(k.Value)
		if err != nil || k.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("line %d: unknown role (want superuser, replication or rewind)", k.Line)
		}
		if _, dup := out[r]; dup {
			return nil, fmt.Errorf("line %d: %s appears twice", k.Line, r)
		}
		if v.Kind != yaml.MappingNode {
			return nil, fmt.Errorf("line %d: %s: want a mapping with password and staged", v.Line, r)
		}
		var e secretEntry
		for j := 0; j+1 < len(v.Content); j += 2 {
			fk, fv := v.Content[j], v.Content[j+1]
			if fv.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("line %d: %s: want strings", fv.Line, r)
			}
			switch fk.Value {
			case "password":
				e.Password = fv.Value
			case "staged":
				e.Staged = fv.Value
			default:
				return nil, fmt.Errorf("line %d: %s: unknown key (want password or staged)", fk.Line, r)
			}
		}
		out[r] = e
	}
	return out, nil
}

// get returns role r's entry (zero if none).
func (o *secretOverrides) get(r pgmanager.Role) secretEntry { return o.roles[r] }

// set replaces role r's entry (a zero entry removes it).
func (o *secretOverrides) set(r pgmanager.Role, e secretEntry) {
	if e == (secretEntry{}) {
		delete(o.roles, r)
		return
	}
	o.roles[r] = e
}

// save writes the file (0600, synced, renamed into place), or removes it
// when no entry is left.
func (o *secretOverrides) save() error {
	if len(o.roles) == 0 {
		if err := os.Remove(o.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove password overrides: %w", err)
		}
		return fsutil.SyncDir(filepath.Dir(o.path))
	}
	var names []string
	for r := range o.roles {
		names = append(names, string(r))
	}
	slices.Sort(names)
	doc := &yaml.Node{Kind: yaml.MappingNode}
	for _, n := range names {
		var v yaml.Node
		if err := v.Encode(o.roles[pgmanager.Role(n)]); err != nil {
			return fmt.Errorf("encode password overrides: %w", err)
		}
		doc.Content = append(doc.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: n}, &v)
	}
	body, err := yaml.Marshal(doc)
	if err != nil {
		return fmt.Errorf("encode password overrides: %w", err)
	}
	return fsutil.WriteFile(o.path, append([]byte(secretsHeader), body...), 0o600)
}
