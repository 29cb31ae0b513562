package raftstore

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMinProtocol(t *testing.T) {
	st := NewState()
	st.Members["a"] = &Member{Name: "a", Agent: AgentVersion{Version: "v0.2.0", Protocol: 2}}
	st.Members["b"] = &Member{Name: "b", Agent: AgentVersion{Version: "v0.1.0", Protocol: 1}}
	st.Members["c"] = &Member{Name: "c", Agent: AgentVersion{Version: "v0.1.0", Protocol: 1}}
	st.Members["old"] = &Member{Name: "old"}
	for _, tc := range []struct {
		voters []string
		want   int
		by     []string
	}{
		{[]string{"a"}, 2, []string{"a"}},
		{[]string{"a", "b", "c"}, 1, []string{"b", "c"}},
		{[]string{"c", "a"}, 1, []string{"c"}},
		{[]string{"a", "old"}, 0, []string{"old"}},
		{[]string{"a", "gone"}, 0, []string{"gone"}},
		{nil, 0, nil},
	} {
		got, by := st.MinProtocol(tc.voters)
		if got != tc.want || !slices.Equal(by, tc.by) {
			t.Errorf("MinProtocol(%v) = %d, %v; want %d, %v", tc.voters, got, by, tc.want, tc.by)
		}
	}
}

// TestEveryCommandOfThisReleaseNeedsNoMoreThanItsProtocol: a command is
// never refused on a cluster of this release, and none needs more than
// Protocol (a release cannot ask for what it does not speak).
func TestEveryCommandOfThisReleaseNeedsNoMoreThanItsProtocol(t *testing.T) {
	st := NewState()
	st.Members["a"] = &Member{Name: "a", Agent: AgentVersion{Protocol: Protocol}}
	for typ := CommandType(0); typ < 0xff; typ++ {
		c := newCommand(typ)
		if c == nil {
			continue
		}
		cmd := deref(c)
		if need := commandProtocol(cmd); need > Protocol || need < 1 {
			t.Errorf("%s needs protocol %d; this release speaks %d", typ, need, Protocol)
		}
		if err := CheckProtocol(st, []string{"a"}, cmd); errors.Is(err, ErrNeedsUpgrade) {
			t.Errorf("%s refused on a cluster of this release: %v", typ, err)
		}
	}
}

func TestCheckProtocolGatesMemberSlotsTTL(t *testing.T) {
	st := NewState()
	st.Members["a"] = &Member{Name: "a", Agent: AgentVersion{Protocol: 2}}
	st.Members["b"] = &Member{Name: "b", Agent: AgentVersion{Version: "v0.1.0", Protocol: 1}}
	withTTL := SetConfig{Config: DefaultClusterConfig()}
	withTTL.Config.MemberSlotsTTL = time.Minute
	if err := CheckProtocol(st, []string{"a", "b"}, withTTL); !errors.Is(err, ErrNeedsUpgrade) || !strings.Contains(err.Error(), "b at 1") {
		t.Fatalf("member_slots_ttl with a voter at protocol 1: %v, want ErrNeedsUpgrade naming b", err)
	}
	if err := CheckProtocol(st, []string{"a", "b"}, SetConfig{Config: DefaultClusterConfig()}); err != nil {
		t.Fatalf("a config without member_slots_ttl: %v", err)
	}
	if err := CheckProtocol(st, []string{"a"}, withTTL); err != nil {
		t.Fatalf("member_slots_ttl with every voter at protocol 2: %v", err)
	}
}

// TestStoreRefusesWhatAVoterCannotApply: the store checks the protocol
// against the Raft configuration's voters before proposing.
func TestStoreRefusesWhatAVoterCannotApply(t *testing.T) {
	t.Parallel()
	s := newTestStore(t, "n1", true)
	waitLeader(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	register := func(p int) {
		if _, err := Commit(ctx, s, RegisterMember{Name: "n1", APIAddr: "http://n1", Tags: DefaultTags(), At: time.Now().UTC(),
			Agent: AgentVersion{Version: "test", Protocol: p}}); err != nil {
			t.Fatal(err)
		}
	}
	set := func() error {
		c := DefaultClusterConfig()
		c.MemberSlotsTTL = time.Minute
		_, err := Commit(ctx, s, SetConfig{Config: c, PrevVersion: s.State().Config.Version, At: time.Now().UTC()})
		return err
	}
	register(1)
	if err := set(); !errors.Is(err, ErrNeedsUpgrade) {
		t.Fatalf("member_slots_ttl while the voter registered protocol 1: %v", err)
	}
	register(2)
	if err := set(); err != nil {
		t.Fatalf("member_slots_ttl once the voter registered protocol 2: %v", err)
	}
	if got := s.State().Config.SlotsTTL(); got != time.Minute {
		t.Fatalf("SlotsTTL = %s", got)
	}
}
