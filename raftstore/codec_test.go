package raftstore

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func sampleCommands() []Command {
	return []Command{
		Bootstrap{Config: DefaultClusterConfig(), Actor: "pg1", At: t0},
		SetConfig{Config: DefaultClusterConfig(), PrevVersion: 3, Actor: "cli", At: t0},
		SetPause{Pause: true, Actor: "cli", At: t0},
		Initialize{SystemID: "7311111111111111111", Actor: "pg1", At: t0},
		RegisterMember{Name: "pg1", APIAddr: "http://127.0.0.1:8008", PGAddr: "127.0.0.1:5432", RaftAddr: "127.0.0.1:7001",
			Tags: Tags{NoSync: true, FailoverPriority: 2}, At: t0},
		ReportStatus{Name: "pg1", Status: MemberStatus{Role: "replica", State: "running", Timeline: 3, ReceivedLSN: 1 << 40, ReportedAt: t0}},
		RemoveMember{Name: "pg3", Actor: "cli", Reason: "left", At: t0},
		SetLeader{Holder: "pg2", PrevEpoch: 7, PrevRev: 99, Reason: "failover", Actor: "pg1", At: t0},
		SetLeader{Holder: "pg3", PrevEpoch: 8, PrevRev: 120, Reason: "lease expired", Cause: CauseFailover,
			Choice: "only eligible member", Actor: "pg1", At: t0},
		RenewLeader{Holder: "pg2", Epoch: 8, At: t0},
		SetSync{Primary: "pg2", Standbys: []string{"pg1"}, Epoch: 8},
		SetFailover{Request: &FailoverRequest{Kind: "switchover", From: "pg2", To: "pg1", ScheduledAt: t0.Add(time.Hour), RequestedAt: t0}, At: t0},
		SetFailover{Actor: "pg1", Reason: "done", At: t0},
	}
}

func TestCodecRoundTrip(t *testing.T) {
	t.Parallel()
	for _, c := range sampleCommands() {
		t.Run(c.Type().String(), func(t *testing.T) {
			b, err := Encode(c)
			if err != nil {
				t.Fatal(err)
			}
			if CommandType(b[0]) != c.Type() {
				t.Fatalf("type byte %d, want %d", b[0], c.Type())
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(c, got); diff != "" {
				t.Fatalf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrInvalidCommand},
		{"zero type", []byte{0, '{', '}'}, ErrUnknownCommand},
		{"unknown type", []byte{0x7e, '{', '}'}, ErrUnknownCommand},
		{"unknown type with skip flag", []byte{0xfe, '{', '}'}, ErrUnknownCommand},
		{"unknown field", append([]byte{byte(CmdRenewLeader)}, `{"holder":"a","epoch":1,"extra":1}`...), ErrInvalidCommand},
		{"trailing garbage", append([]byte{byte(CmdRenewLeader)}, `{"holder":"a","epoch":1} {}`...), ErrInvalidCommand},
		{"not json", append([]byte{byte(CmdRenewLeader)}, `holder`...), ErrInvalidCommand},
		{"oversize", append([]byte{byte(CmdRenewLeader)}, bytes.Repeat([]byte(" "), MaxCommandSize)...), ErrInvalidCommand},
		{"bad member name", append([]byte{byte(CmdRegisterMember)}, `{"name":"a b","api_addr":"x"}`...), ErrInvalidCommand},
		{"renew epoch 0", append([]byte{byte(CmdRenewLeader)}, `{"holder":"a","epoch":0}`...), ErrInvalidCommand},
		{"bad failover kind", append([]byte{byte(CmdSetFailover)}, `{"request":{"kind":"coup","to":"a"}}`...), ErrInvalidCommand},
		{"non-numeric system id", append([]byte{byte(CmdInitialize)}, `{"system_id":"12a"}`...), ErrInvalidCommand},
		{"bad config", append([]byte{byte(CmdSetConfig)}, `{"config":{"ttl":1}}`...), ErrInvalidCommand},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := Decode(tc.data); !errors.Is(err, tc.want) {
				t.Fatalf("Decode: %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := Encode(RegisterMember{Name: ""}); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("Encode of an invalid command: %v", err)
	}
}

func FuzzDecodeCommand(f *testing.F) {
	for _, c := range sampleCommands() {
		b, err := Encode(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Decode(data)
		if err != nil {
			return
		}
		b, err := Encode(c)
		if err != nil {
			t.Fatalf("decoded %T does not re-encode: %v", c, err)
		}
		c2, err := Decode(b)
		if err != nil {
			t.Fatalf("re-encoded %T does not decode: %v", c, err)
		}
		if diff := cmp.Diff(c, c2); diff != "" {
			t.Fatalf("decode/encode/decode changed the command:\n%s", diff)
		}
	})
}
