package raftstore

import (
	"errors"
	"slices"
	"testing"
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
