package pgmanager

import (
	"context"
	"slices"
	"testing"
	"time"

	"raftgres/internal/testutil"
)

// TestPermanentSlotsFollowThePrimaryOnAStandby: on a real primary and
// standby, a permanent logical slot made on the primary is copied to the
// standby once it has replayed past the slot's position, loads at the
// standby's restart, follows the primary's confirmed position, is never
// ahead of it (a copy ahead is dropped and copied again), and goes once it
// is no longer wanted; a permanent physical slot is made on the standby
// and advanced.
func TestPermanentSlotsFollowThePrimaryOnAStandby(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 3*time.Minute)
	params := map[string]string{"wal_level": "logical"}
	p := e.initPrimaryWith(t, ctx, "pg1", Desired{ClusterParams: params})
	cdc := Slot{Name: "cdc", Type: SlotLogical, Database: "postgres", Plugin: "test_decoding"}
	keep := Slot{Name: "keep", Type: SlotPhysical}
	perm := []Slot{cdc, keep}
	if _, err := p.EnsureSlots(ctx, append(physical(SlotName("pg2")), perm...), keepNone); err != nil {
		t.Fatal(err)
	}
	if err := p.Exec(ctx, "CREATE TABLE t (id int primary key)"); err != nil {
		t.Fatal(err)
	}
	r := e.manager(t, "pg2", e.config(t, "pg2"))
	up := upstreamOf(t, "pg1", p)
	d := Desired{Standby: up, Slot: SlotName("pg2"), ClusterParams: params}
	if err := r.Clone(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx, d); err != nil {
		t.Fatal(err)
	}
	waitStreaming(t, p, "pg2")

	// consume inserts n rows and reads every change from the slot on the
	// primary; it returns the slot's confirmed position.
	consume := func(n int) uint64 {
		t.Helper()
		if err := p.Exec(ctx, "INSERT INTO t SELECT coalesce(max(id), 0) + g FROM t, generate_series(1, $1) g GROUP BY g", n); err != nil {
			t.Fatal(err)
		}
		if err := p.Exec(ctx, "SELECT count(*) FROM pg_logical_slot_get_changes('cdc', NULL, NULL)"); err != nil {
			t.Fatal(err)
		}
		have, err := p.Slots(ctx)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(have, func(s SlotState) bool { return s.Name == "cdc" })
		if i < 0 || have[i].LSN == 0 {
			t.Fatalf("no confirmed position for cdc on the primary: %v", have)
		}
		return have[i].LSN
	}
	replayedPast := func(lsn uint64) uint64 {
		t.Helper()
		var replayed uint64
		testutil.WaitFor(t, 30*time.Second, "pg2 replays past "+FormatLSN(lsn), func() (bool, error) {
			st, err := r.Status(ctx)
			replayed = st.ReplayedLSN
			return err == nil && replayed >= lsn, err
		})
		return replayed
	}
	sync := func(primaryLSN uint64) StandbySlots {
		t.Helper()
		st, err := r.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		res, err := r.SyncStandbySlots(ctx, perm, map[string]uint64{"cdc": primaryLSN}, *up, st.ReplayedLSN)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	slotLSN := func(res StandbySlots, name string) (uint64, bool) {
		i := slices.IndexFunc(res.Slots, func(s SlotState) bool { return s.Name == name })
		if i < 0 {
			return 0, false
		}
		return res.Slots[i].LSN, true
	}

	lsn1 := consume(10)
	replayedPast(lsn1)
	res := sync(lsn1)
	if !slices.Equal(res.Copied, []string{"cdc"}) {
		t.Fatalf("copied %v (waiting %v), want cdc", res.Copied, res.Waiting)
	}
	if _, ok := slotLSN(res, "keep"); !ok {
		t.Fatalf("the physical permanent slot is not on the standby: %v", res.Slots)
	}
	if err := r.Restart(ctx, d); err != nil {
		t.Fatal(err)
	}
	// Loaded, but not ready: its restart_lsn has no decoding snapshot
	// here until it advances past a running-transactions record.
	if res = sync(lsn1); len(res.Waiting) == 0 {
		t.Fatalf("a copy with no decoding snapshot here counts as ready: %v", res.Slots)
	}
	if _, ok := slotLSN(res, "cdc"); ok {
		t.Fatalf("a copy with no decoding snapshot here is reported: %v", res.Slots)
	}

	// It follows the primary's position, never past what it replayed,
	// and is ready once that took it past a checkpoint's record of the
	// running transactions.
	if err := p.Exec(ctx, "CHECKPOINT"); err != nil {
		t.Fatal(err)
	}
	lsn2 := consume(100)
	replayedPast(lsn2)
	res = sync(lsn2)
	if got, _ := slotLSN(res, "cdc"); got != lsn2 {
		t.Fatalf("cdc on the standby at %s (waiting %v), want the primary's %s", FormatLSN(got), res.Waiting, FormatLSN(lsn2))
	}

	// A copy ahead of the primary's position (its consumer went back
	// there, or this was the primary) is dropped and copied anew.
	res = sync(lsn1)
	if _, ok := slotLSN(res, "cdc"); ok || !slices.Equal(res.Copied, []string{"cdc"}) {
		t.Fatalf("a copy ahead of the primary: slots %v, copied %v; want it dropped and copied again", res.Slots, res.Copied)
	}
	if err := r.Restart(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := p.Exec(ctx, "CHECKPOINT"); err != nil {
		t.Fatal(err)
	}
	lsn3 := consume(10)
	replayedPast(lsn3)
	if got, _ := slotLSN(sync(lsn3), "cdc"); got != lsn3 {
		t.Fatalf("cdc copied again at %s, want %s once advanced", FormatLSN(got), FormatLSN(lsn3))
	}

	// Not wanted any more: the logical copy goes.
	st, _ := r.Status(ctx)
	if _, err := r.SyncStandbySlots(ctx, []Slot{keep}, nil, *up, st.ReplayedLSN); err != nil {
		t.Fatal(err)
	}
	have, err := r.Slots(context.Background())
	if err != nil || hasSlot(have, "cdc") || !hasSlot(have, "keep") {
		t.Fatalf("slots on the standby after cdc left slots: %v (%v)", have, err)
	}
}
