package api

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"raftgres/raftstore"
)

var patchSeeds = []string{
	`{}`,
	`{"ttl": 5}`,
	`{"ttl": 0.5}`,
	`{"ttl": "5s", "loop_wait": "500ms", "retry_timeout": 1.5}`,
	`{"ttl": null}`,
	`{"ttl": -1}`,
	`{"ttl": 1e300}`,
	`{"ttl": "abc"}`,
	`{"ttl": {"a": 1}}`,
	`{"maximum_lag_on_failover": 1.5}`,
	`{"maximum_lag_on_failover": 0}`,
	`{"synchronous_mode": true, "synchronous_mode_strict": true}`,
	`{"synchronous_mode_strict": true}`,
	`{"pause": true, "version": 42}`,
	`{"postgresql": {"parameters": {"work_mem": "64MB", "max_connections": 200, "fsync": false, "x": null}}}`,
	`{"postgresql": {"parameters": {}}}`,
	`{"postgresql": {"parameters": {"a": [1]}}}`,
	`{"postgresql": {"pg_hba": ["host all all 0.0.0.0/0 md5"], "use_slots": false}}`,
	`{"postgresql": {"pg_hba": []}}`,
	`{"postgresql": {"pg_hba": [null]}}`,
	`{"postgresql": null}`,
	`{"postgresql": 1}`,
	`{"nope": 1}`,
	`[]`,
	`null`,
	`"x"`,
	`{"ttl": 5} {}`,
	`{`,
	``,
}

func FuzzPatchConfig(f *testing.F) {
	for _, s := range patchSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cur := raftstore.DefaultClusterConfig()
		next, err := PatchConfig(cur, data)
		if err != nil {
			if diff := cmp.Diff(raftstore.DefaultClusterConfig(), next); diff != "" {
				t.Fatalf("a refused patch returned a changed config (-cur +returned):\n%s", diff)
			}
			return
		}
		if err := next.Validate(); err != nil {
			t.Fatalf("accepted %q into an invalid config: %v", data, err)
		}
		if next.Version != cur.Version {
			t.Fatalf("patch changed the version: %d", next.Version)
		}
		// The result, shown as /config shows it and patched back in whole,
		// is a fixed point.
		doc, err := json.Marshal(DocOf(next))
		if err != nil {
			t.Fatal(err)
		}
		again, err := PatchConfig(next, doc)
		if err != nil {
			t.Fatalf("re-applying %s (from %q): %v", doc, data, err)
		}
		if diff := cmp.Diff(next, again, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("re-applying %s (from %q) changed the config (-first +again):\n%s", doc, data, diff)
		}
		// So is an empty patch.
		same, err := PatchConfig(next, []byte(`{}`))
		if err != nil {
			t.Fatalf("empty patch over %s: %v", doc, err)
		}
		if diff := cmp.Diff(next, same, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("empty patch over %s (from %q) changed the config (-first +again):\n%s", doc, data, diff)
		}
	})
}

func FuzzAdminBodies(f *testing.F) {
	for _, s := range patchSeeds {
		f.Add([]byte(s))
	}
	for _, s := range []string{
		`{"candidate":"n1"}`,
		`{"candidate":"ghost","leader":"n1"}`,
		`{"scheduled_at":"2999-01-01T00:00:00Z"}`,
		`{"candidate":"n1","scheduled_at":"yesterday"}`,
		`{"restart_pending":true,"role":"replica"}`,
		`{"force":true}`,
	} {
		f.Add([]byte(s))
	}
	base := newAdminServer(f)
	routes := []struct{ method, path string }{
		{"POST", "/switchover"},
		{"POST", "/failover"},
		{"POST", "/restart"},
		{"PATCH", "/config"},
		{"PUT", "/config"},
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, rt := range routes {
			req, err := http.NewRequest(rt.method, base+rt.path, bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			req.SetBasicAuth(adminUser, adminPass)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", rt.method, rt.path, err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode >= 500 {
				t.Errorf("%s %s with %q: status %d: %s", rt.method, rt.path, data, resp.StatusCode, body)
			}
			if !json.Valid(body) {
				t.Errorf("%s %s with %q: body is not JSON: %q", rt.method, rt.path, data, body)
			}
		}
	})
}

// TestPatchConfigDurationStrings checks that a duration written as a string
// ("300ms") means what the same duration written in seconds means: same
// range check (0 to 86400 s), same millisecond rounding. Otherwise a config
// accepted once does not survive its own /config document: every later
// PATCH merges onto a base that no longer decodes or that decodes to a
// different value.
func TestPatchConfigDurationStrings(t *testing.T) {
	tests := []struct {
		name      string
		str, secs string // the same patch, as a duration string and in seconds
		wantErr   bool
	}{
		{name: "whole seconds", str: `{"ttl": "5s"}`, secs: `{"ttl": 5}`},
		{name: "milliseconds", str: `{"loop_wait": "500ms"}`, secs: `{"loop_wait": 0.5}`},
		{name: "seconds as a string", str: `{"ttl": "4.5"}`, secs: `{"ttl": 4.5}`},
		{name: "negative", str: `{"retry_timeout": "-1s"}`, secs: `{"retry_timeout": -1}`, wantErr: true},
		{name: "over 86400s", str: `{"ttl": "48h"}`, secs: `{"ttl": 172800}`, wantErr: true},
		{name: "sub-millisecond ttl", str: `{"ttl": "5s1ns"}`, secs: `{"ttl": 5.000000001}`},
		{name: "sub-millisecond loop_wait", str: `{"loop_wait": "10.5ms"}`, secs: `{"loop_wait": 0.0105}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cur := raftstore.DefaultClusterConfig()
			fromSecs, errSecs := PatchConfig(cur, []byte(tc.secs))
			if (errSecs != nil) != tc.wantErr {
				t.Fatalf("%s: error %v, want error %v", tc.secs, errSecs, tc.wantErr)
			}
			fromStr, errStr := PatchConfig(cur, []byte(tc.str))
			if (errStr != nil) != tc.wantErr {
				t.Errorf("%s: error %v, want error %v (as %s)", tc.str, errStr, tc.wantErr, tc.secs)
			}
			if diff := cmp.Diff(fromSecs, fromStr); diff != "" {
				t.Errorf("%s and %s differ (-secs +string):\n%s", tc.secs, tc.str, diff)
			}
			if errStr != nil {
				return
			}
			// A later, unrelated patch must still apply.
			if _, err := PatchConfig(fromStr, []byte(`{"maximum_lag_on_failover": 0}`)); err != nil {
				t.Errorf("after %s, an unrelated patch is refused: %v", tc.str, err)
			}
		})
	}
}

// FuzzParseAllowEntry: parsing never panics, and an accepted entry is a
// valid masked network without a zone whose own address it admits.
func FuzzParseAllowEntry(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "10.0.0.7/24", "::1", "::ffff:10.0.0.0/104", "fe80::1%eth0", "::/0", "a.b", "1.2.3.4/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := parseAllowEntry(s)
		if err != nil {
			return
		}
		if !p.IsValid() || p != p.Masked() || p.Addr().Zone() != "" || p.Addr().Is4In6() {
			t.Fatalf("parse %q: %v is not a masked, unzoned, unmapped network", s, p)
		}
		if !allowed(p.Addr(), allowRule{nets: []netip.Prefix{p}}, nil) {
			t.Fatalf("parse %q: %v does not admit its own address", s, p)
		}
	})
}
