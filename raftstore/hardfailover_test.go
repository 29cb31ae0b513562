package raftstore

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestHardFailoverRequest: a hard failover is only a failover from the
// current holder, now; anything else is refused, by Validate or at apply.
func TestHardFailoverRequest(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		req  FailoverRequest
		want error // nil: recorded
	}{
		{"from the holder", FailoverRequest{Kind: KindFailover, From: "a", Hard: true, RequestedAt: t0}, nil},
		{"from the holder to a candidate", FailoverRequest{Kind: KindFailover, From: "a", To: "b", Hard: true, RequestedAt: t0}, nil},
		{"a switchover", FailoverRequest{Kind: KindSwitchover, From: "a", Hard: true, RequestedAt: t0}, ErrInvalidCommand},
		{"without from", FailoverRequest{Kind: KindFailover, To: "b", Hard: true, RequestedAt: t0}, ErrInvalidCommand},
		{"scheduled", FailoverRequest{Kind: KindFailover, From: "a", Hard: true, ScheduledAt: t0.Add(time.Hour), RequestedAt: t0}, ErrInvalidCommand},
		{"from a replica", FailoverRequest{Kind: KindFailover, From: "b", Hard: true, RequestedAt: t0}, ErrNotHolder},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := syncCluster(t)
			req := tc.req
			cmd := SetFailover{Request: &req, CAS: true, Actor: "x", At: t0}
			err := cmd.Validate()
			if err == nil {
				err = a.apply(cmd).Err
			}
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			got := a.f.State().Failover
			if tc.want != nil {
				if got != nil {
					t.Fatalf("refused request recorded: %+v", *got)
				}
				return
			}
			if got == nil || !got.Hard {
				t.Fatalf("pending request %+v, want the hard one", got)
			}
			h := a.f.State().History
			if e := h[len(h)-1]; e.Kind != EventFailoverReq || !strings.HasPrefix(e.Reason, "hard failover") {
				t.Fatalf("history %+v, want a hard failover request", e)
			}
			// A clear compares Hard too: the soft twin is another request.
			soft := req
			soft.Hard = false
			if res := a.apply(SetFailover{CAS: true, Prev: &soft, Actor: "x", At: t0}); !errors.Is(res.Err, ErrFailoverPending) {
				t.Fatalf("clearing the soft twin: err %v, want ErrFailoverPending", res.Err)
			}
			a.mustApply(SetFailover{CAS: true, Prev: &req, Actor: "x", At: t0})
		})
	}
}

// TestCheckProtocolGatesHardFailover: a hard failover request needs
// protocol 2, and so does its clear (it names the request, which an
// agent of protocol 1 cannot decode); a soft one needs 1.
func TestCheckProtocolGatesHardFailover(t *testing.T) {
	st := NewState()
	st.Members["a"] = &Member{Name: "a", Agent: AgentVersion{Protocol: 2}}
	st.Members["b"] = &Member{Name: "b", Agent: AgentVersion{Version: "v0.1.0", Protocol: 1}}
	hard := &FailoverRequest{Kind: KindFailover, From: "a", Hard: true}
	soft := &FailoverRequest{Kind: KindFailover, From: "a", To: "b"}
	for _, tc := range []struct {
		name    string
		voters  []string
		cmd     SetFailover
		refused bool
	}{
		{"hard, a voter at 1", []string{"a", "b"}, SetFailover{Request: hard}, true},
		{"hard, every voter at 2", []string{"a"}, SetFailover{Request: hard}, false},
		{"soft, a voter at 1", []string{"a", "b"}, SetFailover{Request: soft}, false},
		{"clearing a hard one, a voter at 1", []string{"a", "b"}, SetFailover{CAS: true, Prev: hard}, true},
		{"clearing a soft one, a voter at 1", []string{"a", "b"}, SetFailover{CAS: true, Prev: soft}, false},
	} {
		err := CheckProtocol(st, tc.voters, tc.cmd)
		if got := errors.Is(err, ErrNeedsUpgrade); got != tc.refused {
			t.Errorf("%s: %v, want refused %v", tc.name, err, tc.refused)
		}
	}
}
