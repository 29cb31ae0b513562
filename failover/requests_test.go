package failover

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"raftgres/pgmanager"
)

// TestRewindRequest: raftgres rewind MEMBER stops the member, rewinds it
// from the current primary and starts it as its standby; it refuses on
// the primary and without one; a failed rewind leaves it stopped unless
// --reinit-on-failure, which reclones (never when the source was simply
// unreachable).
func TestRewindRequest(t *testing.T) {
	t.Parallel()
	running := pgmanager.Status{Running: true, InRecovery: true, Timeline: 1}
	failed := fmt.Errorf("%w: pg_rewind: could not find common ancestor", pgmanager.ErrRewindFailed)
	unreachable := fmt.Errorf("%w: connection refused", pgmanager.ErrRewindSourceUnavailable)
	for _, tc := range []struct {
		name      string
		me        string
		holder    string
		rewindErr error
		reinit    bool
		want      []string // pg events in order
		refused   bool
		fails     bool
	}{
		{"rewinds and streams", "pg2", "pg1", nil, false, []string{"pg Stop fast", "pg Rewind", "pg Start standby=true"}, false, false},
		{"refused on the primary", "pg1", "pg1", nil, false, nil, true, false},
		{"refused without a primary", "pg2", "", nil, false, nil, true, false},
		{"failed rewind stays stopped", "pg2", "pg1", failed, false, []string{"pg Stop fast", "pg Rewind"}, false, true},
		{"failed rewind reclones when asked", "pg2", "pg1", failed, true, []string{"pg Stop fast", "pg Rewind", "pg Reclone", "pg Start standby=true"}, false, false},
		{"unreachable source never reclones", "pg2", "pg1", unreachable, true, []string{"pg Stop fast", "pg Rewind"}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, tc.me, testState(tc.holder, "pg1", "pg2"), running)
			r.pg.rewindErr = tc.rewindErr
			err := r.sup.serve(context.Background(), Request{Kind: RequestRewind, ReinitOnFailure: tc.reinit})
			switch {
			case tc.refused:
				if !errors.Is(err, ErrRequestRefused) {
					t.Fatalf("err %v, want a refusal", err)
				}
			case tc.fails:
				if err == nil || errors.Is(err, ErrRequestRefused) {
					t.Fatalf("err %v, want a failure", err)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
			}
			var got []string
			for _, e := range r.ev.all() {
				if strings.HasPrefix(e, "pg ") && !strings.HasPrefix(e, "pg Status") {
					got = append(got, e)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("events %q, want %q", got, tc.want)
			}
		})
	}
}
