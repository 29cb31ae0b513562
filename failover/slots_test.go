package failover

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"raftgres/pgmanager"
	"raftgres/raftstore"
)

func TestSlotMembers(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	st := raftstore.NewState()
	add := func(name string, registered, reported time.Time) {
		st.Members[name] = &raftstore.Member{Name: name, Registered: registered, Status: raftstore.MemberStatus{ReportedAt: reported}}
	}
	add("me", now.Add(-time.Hour), now)
	add("fresh", now.Add(-time.Hour), now.Add(-time.Second))
	add("down-29m", now.Add(-time.Hour), now.Add(-29*time.Minute))
	add("down-31m", now.Add(-time.Hour), now.Add(-31*time.Minute))
	add("joined-never-reported", now.Add(-time.Minute), time.Time{})
	add("registered-long-ago-never-reported", now.Add(-2*time.Hour), time.Time{})
	add("no-times", time.Time{}, time.Time{})
	for _, tc := range []struct {
		ttl          time.Duration
		keep, absent []string
	}{
		{0, []string{"down-29m", "fresh", "joined-never-reported", "no-times"}, []string{"down-31m", "registered-long-ago-never-reported"}},
		{10 * time.Second, []string{"fresh", "no-times"}, []string{"down-29m", "down-31m", "joined-never-reported", "registered-long-ago-never-reported"}},
		{3 * time.Hour, []string{"down-29m", "down-31m", "fresh", "joined-never-reported", "no-times", "registered-long-ago-never-reported"}, nil},
	} {
		st.Config.MemberSlotsTTL = tc.ttl
		keep, absent := slotMembers(st, "me", now)
		if !slices.Equal(keep, tc.keep) || !slices.Equal(absent, tc.absent) {
			t.Errorf("member_slots_ttl %s: keep %v absent %v, want %v and %v", tc.ttl, keep, absent, tc.keep, tc.absent)
		}
	}
}

// TestPrimaryDropsTheSlotOfAMemberAbsentPastMemberSlotsTTL: the primary's
// supervisor keeps the slots of members that report, and leaves out (so
// pgmanager drops it once inactive) the slot of one that has not reported
// for member_slots_ttl, saying so in its log once.
func TestPrimaryDropsTheSlotOfAMemberAbsentPastMemberSlotsTTL(t *testing.T) {
	st := testState("pg1", "pg1", "pg2", "pg3")
	st.Config.MemberSlotsTTL = time.Minute
	st.Config.PostgreSQL.UseSlots = true
	r := newRig(t, "pg1", st, runningPrimary)
	now := r.clock.Now()
	r.store.edit(func(s *raftstore.State) {
		s.Members["pg2"].Status.ReportedAt = now.Add(-time.Second)
		s.Members["pg3"].Status.ReportedAt = now.Add(-2 * time.Minute)
	})
	r.renew()
	r.sup.cycle(context.Background())
	r.pg.mu.Lock()
	slots := slices.Clone(r.pg.slots)
	r.pg.mu.Unlock()
	if !slices.Equal(slots, []string{pgmanager.SlotName("pg2")}) {
		t.Fatalf("slots wanted %v, want pg2's only", slots)
	}
	r.sup.cycle(context.Background())
	if n := strings.Count(r.logs.String(), "absent longer than member_slots_ttl"); n != 1 {
		t.Fatalf("the absence was logged %d times, want once:\n%s", n, r.logs.String())
	}
}

// TestNewMemberGetsItsSlotAtOnce: a member that registers (or leaves)
// changes what wakes a supervisor's loop (relevant), so the primary makes
// its slot at once, not at its next steady look up to ttl/2 later; its
// standby cannot stream before the slot exists. Status reports still do
// not wake it.
func TestNewMemberGetsItsSlotAtOnce(t *testing.T) {
	st := testState("pg1", "pg1", "pg2")
	before := relevant(st)
	reported := st.Clone()
	reported.Members["pg2"].Status.ReportedAt = reported.Members["pg2"].Status.ReportedAt.Add(time.Second)
	if relevant(reported) != before {
		t.Fatal("a status report wakes the loop")
	}
	joined := st.Clone()
	joined.Members["pg3"] = &raftstore.Member{Name: "pg3", Tags: raftstore.DefaultTags()}
	if relevant(joined) == before {
		t.Fatal("a new member does not wake the loop")
	}
	left := st.Clone()
	delete(left.Members, "pg2")
	if relevant(left) == before {
		t.Fatal("a member's leave does not wake the loop")
	}
}

func withPermanentSlots(st *raftstore.State) {
	st.Config.PostgreSQL.UseSlots = true
	st.Config.PostgreSQL.Parameters = map[string]string{"wal_level": "logical"}
	st.Config.Slots = map[string]raftstore.PermanentSlot{
		"cdc":    {Type: raftstore.SlotLogical, Database: "app", Plugin: "test_decoding"},
		"barman": {Type: raftstore.SlotPhysical},
		"pg2":    {Type: raftstore.SlotPhysical}, // a member's slot's name
	}
	for _, m := range st.Members {
		m.Agent.Protocol = raftstore.Protocol
	}
}

// TestPrimaryKeepsPermanentSlotsAndReportsThem: the primary makes the
// permanent slots beside the members' (one named as a member's slot is
// left out, said once), and its report carries their positions for the
// replicas to follow.
func TestPrimaryKeepsPermanentSlotsAndReportsThem(t *testing.T) {
	st := testState("pg1", "pg1", "pg2")
	withPermanentSlots(&st)
	r := newRig(t, "pg1", st, runningPrimary)
	r.pg.slotLSN = 0x3000000
	r.renew()
	r.sup.cycle(context.Background())
	r.pg.mu.Lock()
	slots := slices.Clone(r.pg.slots)
	r.pg.mu.Unlock()
	if want := []string{"pg2", "barman", "cdc"}; !slices.Equal(slots, want) {
		t.Fatalf("slots wanted %v, want %v", slots, want)
	}
	got := r.store.State().Members["pg1"].Slots
	want := []raftstore.SlotPosition{{Name: "barman", Type: raftstore.SlotPhysical, LSN: 0x3000000}, {Name: "cdc", Type: raftstore.SlotLogical, LSN: 0x3000000}}
	if !slices.Equal(got, want) {
		t.Fatalf("reported slots %v, want %v", got, want)
	}
	r.sup.cycle(context.Background())
	if n := strings.Count(r.logs.String(), "named as a member's replication slot"); n != 1 {
		t.Fatalf("the clash was logged %d times, want once", n)
	}
}

// TestStandbyRestartsToLoadCopiedSlots: a streaming standby copies the
// permanent logical slots from the primary and restarts so PostgreSQL
// loads them, once; then it follows the primary's reported positions
// (never past what it replayed) and reports its own. Paused, it does not
// restart.
func TestStandbyRestartsToLoadCopiedSlots(t *testing.T) {
	for _, paused := range []bool{false, true} {
		st := testState("pg1", "pg1", "pg2")
		withPermanentSlots(&st)
		st.Config.Pause = paused
		st.Members["pg1"].Slots = []raftstore.SlotPosition{{Name: "cdc", Type: raftstore.SlotLogical, LSN: 0x2000000}, {Name: "barman", Type: raftstore.SlotPhysical, LSN: 0x4000000}}
		r := newRig(t, "pg2", st, runningReplica)
		r.sup.cycle(context.Background())
		wantRestarts := 1
		if paused {
			wantRestarts = 0
		}
		if n := r.ev.count("pg Restart"); n != wantRestarts {
			t.Fatalf("paused %v: %d restarts after the copy, want %d:\n%s", paused, n, wantRestarts, strings.Join(r.ev.all(), "\n"))
		}
		r.clock.Advance(time.Minute) // the next look, and a report due
		r.sup.cycle(context.Background())
		if n := r.ev.count("pg Restart"); n != wantRestarts {
			t.Fatalf("paused %v: restarted again once the slots were loaded", paused)
		}
		got := r.store.State().Members["pg2"].Slots
		want := []raftstore.SlotPosition{{Name: "barman", Type: raftstore.SlotPhysical, LSN: 0x3000000}, {Name: "cdc", Type: raftstore.SlotLogical, LSN: 0x2000000}}
		if !slices.Equal(got, want) {
			t.Fatalf("paused %v: standby reported slots %v, want %v", paused, got, want)
		}
	}
}
