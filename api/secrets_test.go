package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"raftgres/failover"
	"raftgres/internal/conf"
	"raftgres/internal/testutil"
	"raftgres/raftstore"
)

const rotateSecret = "n3w-Secret"

func TestRotateRequestNeverPrints(t *testing.T) {
	t.Parallel()
	req := RotateRequest{Role: "replication", Phase: RotateStage, Password: rotateSecret}
	for _, format := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
		if got := fmt.Sprintf(format, req); strings.Contains(got, rotateSecret) {
			t.Errorf("%s prints the password: %s", format, got)
		}
	}
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var back RotateRequest
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back != req {
		t.Fatalf("JSON round trip: %v", back)
	}
	if err := json.Unmarshal([]byte(`{"role":"replication","phase":"stage","password":"x","extra":1}`), &back); err == nil {
		t.Fatal("an unknown field was accepted")
	}
}

// recordingRotator records the requests it gets and answers with err.
type recordingRotator struct {
	err error

	mu  sync.Mutex
	got []RotateRequest
}

func (r *recordingRotator) rotate(_ context.Context, req RotateRequest) (RotateStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, req)
	if r.err != nil {
		return RotateStatus{}, r.err
	}
	return RotateStatus{Member: "n1", Role: req.Role, State: RotateStateStaged}, nil
}

func (r *recordingRotator) calls() []RotateRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]RotateRequest(nil), r.got...)
}

// rotateServer serves an API over st with opts, logging into logs.
func rotateServer(t *testing.T, st *fakeStore, logs *testutil.SyncBuffer, opts ...Option) string {
	t.Helper()
	logger := hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Trace})
	srv, err := New(adminConfig(), "test", st, NewProposer(st, ClientOptions{Token: testToken}, logger), logger, opts...)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return hs.URL
}

func TestRotateEndpoint(t *testing.T) {
	st := startStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := raftstore.Commit(ctx, st, raftstore.RegisterMember{Name: "n1", APIAddr: "http://127.0.0.1:1",
		Tags: raftstore.DefaultTags(), At: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	if _, err := raftstore.Commit(ctx, st, raftstore.SetLeader{Holder: "n1", Reason: "test", Actor: "test", At: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	epoch := st.State().Leader.Epoch
	primary := failover.Local{Member: "n1", HasData: true, ObservedAt: time.Now(), Epoch: epoch,
		LeaseUntil: time.Now().Add(time.Hour)}
	primary.PG.Running = true
	replica := failover.Local{Member: "n1", HasData: true, ObservedAt: time.Now()}
	replica.PG.Running, replica.PG.InRecovery = true, true
	body := func(role, phase, pw string) string {
		return fmt.Sprintf(`{"role":%q,"phase":%q,"password":%q}`, role, phase, pw)
	}
	tests := []struct {
		name      string
		token     string
		local     *failover.Local // nil: no rotator (raft-only)
		rotErr    error
		body      string
		want      int
		code      string
		wantCalls int
	}{
		{name: "no token", local: &replica, body: body("replication", "stage", rotateSecret), want: 401, code: "unauthorized"},
		{name: "wrong token", token: "nope", local: &replica, body: body("replication", "stage", rotateSecret), want: 401, code: "unauthorized"},
		{name: "malformed", token: testToken, local: &replica, body: `{"role":`, want: 400, code: "bad_request"},
		{name: "unknown field", token: testToken, local: &replica, body: `{"role":"replication","phase":"stage","password":"x","to":"pg2"}`,
			want: 400, code: "bad_request"},
		{name: "unknown role", token: testToken, local: &replica, body: body("app", "stage", rotateSecret), want: 400, code: "bad_request"},
		{name: "unknown phase", token: testToken, local: &replica, body: body("replication", "now", rotateSecret), want: 400, code: "bad_request"},
		{name: "no password", token: testToken, local: &replica, body: body("replication", "stage", ""), want: 400, code: "bad_request"},
		{name: "raft-only member", token: testToken, body: body("replication", "stage", rotateSecret), want: 404, code: "not_found"},
		{name: "stage", token: testToken, local: &replica, body: body("replication", "stage", rotateSecret), want: 200, wantCalls: 1},
		{name: "refused by the rotator", token: testToken, local: &replica, rotErr: fmt.Errorf("%w: the password is empty", ErrBadRequest),
			body: body("replication", "stage", rotateSecret), want: 400, code: "bad_request", wantCalls: 1},
		{name: "rotator failed", token: testToken, local: &replica, rotErr: errors.New("disk full"),
			body: body("replication", "activate", rotateSecret), want: 500, code: "internal", wantCalls: 1},
		{name: "apply on a replica", token: testToken, local: &replica, body: body("superuser", "apply", rotateSecret),
			want: 412, code: "precondition_failed"},
		{name: "apply on the leased primary", token: testToken, local: &primary, body: body("superuser", "apply", rotateSecret),
			want: 200, wantCalls: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs testutil.SyncBuffer
			rot := &recordingRotator{err: tc.rotErr}
			var opts []Option
			if tc.local != nil {
				opts = append(opts, WithMember(&fakeMember{local: *tc.local}), WithSecretRotator(rot.rotate))
			}
			base := rotateServer(t, st, &logs, opts...)
			req, err := http.NewRequest("POST", base+"/secrets/rotate", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var raw bytes.Buffer
			_, _ = raw.ReadFrom(resp.Body)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.want, raw.String())
			}
			if tc.want != 200 {
				var w wireError
				if err := json.Unmarshal(raw.Bytes(), &w); err != nil || w.Code != tc.code {
					t.Errorf("error body %s, want code %q", raw.String(), tc.code)
				}
			}
			calls := rot.calls()
			if len(calls) != tc.wantCalls {
				t.Fatalf("%d calls to the rotator, want %d", len(calls), tc.wantCalls)
			}
			if len(calls) > 0 && calls[0].Password != rotateSecret {
				t.Errorf("the rotator got another password")
			}
			for what, text := range map[string]string{"log": logs.String(), "answer": raw.String()} {
				if strings.Contains(text, rotateSecret) {
					t.Errorf("the password is in the %s:\n%s", what, text)
				}
			}
		})
	}
}

func TestClientRotateSecret(t *testing.T) {
	st := startStore(t)
	rot := &recordingRotator{}
	var logs testutil.SyncBuffer
	base := rotateServer(t, st, &logs, WithSecretRotator(rot.rotate))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req := RotateRequest{Role: "rewind", Phase: RotateCheck, Password: conf.Secret(rotateSecret)}
	got, err := NewClient(base, ClientOptions{Token: testToken}).RotateSecret(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != RotateStateStaged || got.Role != "rewind" {
		t.Fatalf("answer %+v", got)
	}
	if calls := rot.calls(); len(calls) != 1 || calls[0] != req {
		t.Fatalf("rotator calls %v", calls)
	}
	_, err = NewClient(base, ClientOptions{}).RotateSecret(ctx, req)
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("without the token: %v, want unauthorized", err)
	}
	if strings.Contains(err.Error(), rotateSecret) {
		t.Fatalf("the error shows the password: %v", err)
	}
}
