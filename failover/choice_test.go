package failover

import (
	"maps"
	"strings"
	"testing"

	"raftgres/raftstore"
)

func TestElectExplainsChoice(t *testing.T) {
	t.Parallel()
	base := func() raftstore.State {
		st := state("pg1", "pg1", "pg2", "pg3")
		st.Members["pg1"].Status.WrittenLSN = 0x3000060
		st.Members["pg2"].Status.ReceivedLSN = 0x3000000
		st.Members["pg3"].Status.ReceivedLSN = 0x3000060
		return st
	}
	fresh := map[string]bool{"pg1": true, "pg2": true, "pg3": true}
	long := strings.Repeat("x", 125) // + "pgN": the longest member name
	for _, tc := range []struct {
		name       string
		mod        func(*raftstore.State, *ElectionInput)
		want       string
		wantChoice string
	}{
		{"highest lsn", nil, "pg3", "highest LSN 0/3000060 of 2 eligible (next: pg2 at 0/3000000)"},
		{"only eligible", func(s *raftstore.State, in *ElectionInput) { s.Members["pg2"].Tags.NoFailover = true },
			"pg3", "only eligible member, at 0/3000060"},
		{"requested candidate", func(s *raftstore.State, in *ElectionInput) { in.Candidate = "pg2" },
			"pg2", "requested candidate, at 0/3000000"},
		{"priority", func(s *raftstore.State, in *ElectionInput) {
			s.Members["pg2"].Status.ReceivedLSN = 0x3000060
			s.Members["pg2"].Tags.FailoverPriority = 5
		}, "pg2", "LSN tie at 0/3000060, highest failover_priority 5 of 2 eligible (next: pg3, priority 1)"},
		{"name", func(s *raftstore.State, in *ElectionInput) { s.Members["pg2"].Status.ReceivedLSN = 0x3000060 },
			"pg2", "LSN and failover_priority tie at 0/3000060 among 2 eligible, first by name (next: pg3)"},
		{"longest names fit a SetLeader", func(s *raftstore.State, in *ElectionInput) {
			for _, n := range []string{"pg2", "pg3"} {
				m := s.Members[n]
				m.Name = long + n
				m.Status.ReceivedLSN = 1<<64 - 1
				m.Tags.FailoverPriority = 1 << 62
				delete(s.Members, n)
				s.Members[m.Name] = m
				in.Fresh[m.Name] = true
			}
			s.Members[long+"pg3"].Tags.FailoverPriority--
		}, long + "pg2", "LSN tie at FFFFFFFF/FFFFFFFF, highest failover_priority 4611686018427387904 of 2 eligible " +
			"(next: " + long + "pg3, priority 4611686018427387903)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st, in := base(), ElectionInput{Fresh: maps.Clone(fresh), Reason: "test", Actor: "pg1"}
			if tc.mod != nil {
				tc.mod(&st, &in)
			}
			cmd, ok := Elect(st, in)
			if !ok || cmd.Holder != tc.want {
				t.Fatalf("elected %q (%v), want %q (ranking %+v)", cmd.Holder, ok, tc.want, RankCandidates(st, in))
			}
			if cmd.Choice != tc.wantChoice {
				t.Errorf("choice\n got %q\nwant %q", cmd.Choice, tc.wantChoice)
			}
			if err := cmd.Validate(); err != nil {
				t.Errorf("the elected command does not validate: %v", err)
			}
		})
	}
}
