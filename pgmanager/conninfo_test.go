package pgmanager

import (
	"maps"
	"net"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseConninfo(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		want map[string]string
		bad  bool
	}{
		{name: "empty", in: "", want: map[string]string{}},
		{name: "plain", in: "host=10.0.0.2 port=5433 user=replicator",
			want: map[string]string{"host": "10.0.0.2", "port": "5433", "user": "replicator"}},
		{name: "quoted and spaced", in: ` host = 'a b'  application_name='o\'brien' passfile='C:\\x' `,
			want: map[string]string{"host": "a b", "application_name": "o'brien", "passfile": `C:\x`}},
		{name: "unquoted escape", in: `user=a\ b`, want: map[string]string{"user": "a b"}},
		{name: "empty quoted", in: "host='' port=1", want: map[string]string{"host": "", "port": "1"}},
		{name: "raftgres's own", in: Conninfo(map[string]string{"host": "h", "port": "5", "passfile": "/p f"}),
			want: map[string]string{"host": "h", "port": "5", "passfile": "/p f"}},
		{name: "uri", in: "postgresql://rep@[::1]:5444/db?application_name=x",
			want: map[string]string{"host": "::1", "port": "5444", "user": "rep", "dbname": "db", "application_name": "x"}},
		{name: "no equals", in: "host", bad: true},
		{name: "empty keyword", in: "=x", bad: true},
		{name: "unterminated", in: "host='abc", bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseConninfo(tc.in)
			if tc.bad {
				if err == nil {
					t.Fatalf("ParseConninfo(%q) = %v, want an error", tc.in, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Fatalf("ParseConninfo(%q) (-want +got):\n%s", tc.in, d)
			}
		})
	}
}

func TestUpstreamAddr(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"host=10.0.0.2 port=5433", "10.0.0.2:5433"},
		{"host=db.example", "db.example:5432"},
		{"host=::1 port=6000", "[::1]:6000"},
		{"host=name hostaddr=10.1.1.1 port=7", "10.1.1.1:7"},
		{"host=a,b port=1,2", ""},
		{"host=/var/run/postgresql", ""},
		{"port=5432", ""},
		{"host=h port=x", ""},
		{"host=h port=70000", ""},
		{"host='unterminated", ""},
		{"postgres://u@h:5999/d", "h:5999"},
		{"", ""},
	} {
		if got := UpstreamAddr(tc.in); got != tc.want {
			t.Errorf("UpstreamAddr(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzParseConninfo: any input parses or fails without panicking; what
// parses (key/value form) renders back through Conninfo to the same
// keywords; UpstreamAddr gives "" or a valid host:port.
func FuzzParseConninfo(f *testing.F) {
	for _, s := range []string{"", "host=a port=5", `a='\'' b=\\`, "k = 'v w'", "x", "=", "postgresql://u@h:1/d?a=b",
		"host='a,b'", "k='unterminated", "host=h\tport=1\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		kv, err := ParseConninfo(s)
		if addr := UpstreamAddr(s); addr != "" {
			if _, _, err := net.SplitHostPort(addr); err != nil {
				t.Fatalf("UpstreamAddr(%q) = %q: %v", s, addr, err)
			}
		}
		if err != nil || strings.HasPrefix(s, "postgres") {
			return
		}
		again, err := ParseConninfo(Conninfo(kv))
		if err != nil {
			t.Fatalf("rendered %q does not parse: %v", Conninfo(kv), err)
		}
		maps.DeleteFunc(kv, func(_, v string) bool { return v == "" }) // Conninfo skips empty values
		if d := cmp.Diff(kv, again); d != "" {
			t.Fatalf("round trip of %q (-first +second):\n%s", s, d)
		}
	})
}
