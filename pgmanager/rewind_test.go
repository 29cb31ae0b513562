package pgmanager

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"raftgres/internal/testutil"
)

func TestClassifyRewindFailure(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		lines []string
		want  error
	}{
		{"refused", []string{`pg_rewind: error: connection to server at "10.0.0.2", port 5432 failed: Connection refused`,
			"\tIs the server running on that host and accepting TCP/IP connections?"}, ErrRewindSourceUnavailable},
		{"bad password", []string{`pg_rewind: error: connection to server at "10.0.0.2", port 5432 failed: FATAL:  password authentication failed for user "rewind_user"`}, ErrRewindSourceUnavailable},
		{"not allowed", []string{`pg_rewind: error: could not connect to server: FATAL:  no pg_hba.conf entry for host "10.0.0.3"`}, ErrRewindSourceUnavailable},
		{"source starting", []string{"pg_rewind: error: connection to server failed: FATAL:  the database system is starting up"}, ErrRewindSourceUnavailable},
		{"certificate for another host", []string{`pg_rewind: error: connection to server at "10.0.0.2", port 5432 failed: ` +
			`server certificate for "pg9.example" does not match host name "10.0.0.2"`}, ErrRewindSourceUnavailable},
		{"unknown CA", []string{`pg_rewind: error: connection to server at "10.0.0.2", port 5432 failed: SSL error: certificate verify failed`},
			ErrRewindSourceUnavailable},
		{"source without TLS", []string{`pg_rewind: error: connection to server at "10.0.0.2", port 5432 failed: ` +
			`server does not support SSL, but SSL was required`}, ErrRewindSourceUnavailable},
		{"loose client key", []string{`pg_rewind: error: connection to server at "10.0.0.2", port 5432 failed: ` +
			`private key file "/etc/raftgres/pg1-key.pem" has group or world access`}, ErrRewindSourceUnavailable},
		{"different systems", []string{"pg_rewind: error: source and target clusters are from different systems"}, nil},
		{"wal gone", []string{"pg_rewind: servers diverged at WAL location 0/3000060 on timeline 1",
			`pg_rewind: error: could not open file "pg_wal/000000010000000000000002": No such file or directory`}, nil},
		{"source lost mid-rewind", []string{"pg_rewind: servers diverged at WAL location 0/3000060 on timeline 1",
			"pg_rewind: rewinding from last common checkpoint at 0/2000060 on timeline 1",
			"pg_rewind: error: error running query (SELECT path) in source server: server closed the connection unexpectedly"}, ErrRewindFailed},
		{"no output", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := classifyRewindFailure(tc.lines); !errors.Is(got, tc.want) || (tc.want == nil) != (got == nil) {
				t.Fatalf("classifyRewindFailure = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestRewindSourceUnavailable: a source that is down or refuses the
// rewind user's login gives ErrRewindSourceUnavailable and leaves the data
// directory exactly as it was; the same rewind then succeeds.
func TestRewindSourceUnavailable(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 3*time.Minute)
	p, r := newPrimaryAndReplica(t, e)
	if err := r.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Exec(ctx, "INSERT INTO t VALUES (7777)"); err != nil { // diverge
		t.Fatal(err)
	}
	if err := p.Stop(ctx, StopFast); err != nil {
		t.Fatal(err)
	}
	before, err := p.ControlData(ctx)
	if err != nil {
		t.Fatal(err)
	}
	down := Upstream{Name: "down", Host: "127.0.0.1", Port: testutil.FreePort(t)}
	err = p.Rewind(ctx, Desired{Standby: &down})
	if !errors.Is(err, ErrRewindSourceUnavailable) || errors.Is(err, ErrRewindFailed) {
		t.Fatalf("rewind from a source that is down: %v, want only ErrRewindSourceUnavailable", err)
	}
	good := upstreamOf(t, "pg2", r)
	p.cfg.Rewind.Password = "wrong"
	err = p.Rewind(ctx, Desired{Standby: good})
	if !errors.Is(err, ErrRewindSourceUnavailable) {
		t.Fatalf("rewind with a refused login: %v, want ErrRewindSourceUnavailable", err)
	}
	after, err := p.ControlData(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(before, after); d != "" {
		t.Fatalf("pg_control changed by failed rewinds (-before +after):\n%s", d)
	}
	p.cfg.Rewind.Password = "rewind-secret"
	d := Desired{Standby: good, Slot: SlotName("pg1")}
	if err := p.Rewind(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx, d); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "rewound pg1 drops its diverged row", func() (bool, error) { return p.count(ctx, t) == 100, nil })
}
