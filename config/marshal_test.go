package config

import (
	"bytes"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	"raftgres/internal/conf"
	"raftgres/raftstore"
)

// decodeFile reads a config file's text into a File the way Check does.
func decodeFile(t *testing.T, text string) *File {
	t.Helper()
	var doc yaml.Node
	if err := yaml.NewDecoder(strings.NewReader(text)).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	d := &decoder{lines: map[string]int{}}
	var f File
	d.decode(doc.Content[0], reflect.ValueOf(&f).Elem(), "")
	if len(d.errs) > 0 {
		t.Fatalf("decode: %v", d.errs)
	}
	return &f
}

func TestMarshalRoundTrip(t *testing.T) {
	withBackup := validConfig + "backup: {stanza: main, repo_path: /var/lib/pgbackrest, options: {repo1-retention-full: 2}}\n" +
		"vip: {address: 10.0.0.10/24, interface: eth0}\n"
	for _, text := range []string{validConfig, withBackup} {
		f := decodeFile(t, text)
		out, err := Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		back := decodeFile(t, string(out))
		if diff := cmp.Diff(f, back); diff != "" {
			t.Fatalf("the File changed on the way through Marshal (-before +after):\n%s\n%s", diff, out)
		}
		want, err := Parse("a.yml", []byte(text), 0o600)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Parse("a.yml", out, 0o600)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if diff := cmp.Diff(want, got, cmp.AllowUnexported(Agent{}), cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
			t.Fatalf("loads differently (-want +got):\n%s", diff)
		}
	}
}

func TestMarshalKeepsSecretsAndFalse(t *testing.T) {
	no, prio := raftstore.SyncOff, 0
	f := &File{Scope: "s", Raft: Raft{Token: conf.Secret("tok-en"), HeartbeatTimeout: ptr(conf.Duration(1500e6))},
		Bootstrap: Bootstrap{DCS: raftstore.ConfigDoc{SynchronousMode: &no}, Initdb: []InitdbEntry{{Name: "data-checksums"}, {Name: "encoding", Value: "UTF8"}}},
		Tags:      Tags{FailoverPriority: &prio}}
	out, err := Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"token: tok-en", "heartbeat_timeout: 1.5s", "synchronous_mode: false", "failover_priority: 0",
		"- data-checksums", "- encoding: UTF8"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	if bytes.Contains(out, []byte(conf.Redacted)) {
		t.Errorf("a secret was redacted:\n%s", out)
	}
}

func ptr[T any](v T) *T { return &v }
