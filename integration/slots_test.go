package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestAbsentMemberLosesItsSlot: a replica stopped while 300 MB are
// written loses its replication slot after member_slots_ttl, so the
// primary's pg_wal does not keep those 300 MB for it; started again, the
// member finds the WAL it needs gone, is cloned again and streams.
func TestAbsentMemberLosesItsSlot(t *testing.T) {
	requireIntegration(t)
	c := newPGClusterDCS(t, 3, nil, "{ttl: 3, loop_wait: 300ms, retry_timeout: 1, member_slots_ttl: 10s, "+
		"postgresql: {use_slots: true, parameters: {max_wal_size: 128MB, min_wal_size: 32MB, wal_keep_size: 64MB}}}")
	primary := c.waitPrimary(120*time.Second, c.nodes...)
	c.waitStreaming(primary)
	var away *Node
	for _, n := range c.nodes {
		if n != primary {
			away = n
			break
		}
	}
	ctx := ctxT(t, 8*time.Minute)
	// A member named pgN has the slot pgN (pgmanager.SlotName).
	slotOf := func(name string) (bool, error) {
		var k int
		err := pgQueryRow(ctx, primary, fmt.Sprintf("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s'", name), &k)
		return k == 1, err
	}
	if ok, err := slotOf(away.Name); err != nil || !ok {
		t.Fatalf("%s has no slot on %s before the test (%v)", away.Name, primary.Name, err)
	}
	away.Stop()
	start := time.Now()
	waitFor(t, 60*time.Second, away.Name+"'s slot dropped", func() (bool, error) {
		ok, err := slotOf(away.Name)
		return !ok, err
	})
	t.Logf("%s's slot dropped %s after its agent stopped", away.Name, time.Since(start).Round(100*time.Millisecond))
	if !strings.Contains(primary.Log(), "absent longer than member_slots_ttl") {
		t.Errorf("%s's log does not say why the slot went", primary.Name)
	}
	if err := pgExec(ctx, primary, "CREATE TABLE filler AS SELECT g AS id, repeat('x', 1000) AS pad FROM generate_series(1, 300000) g"); err != nil {
		t.Fatal(err)
	}
	if err := pgExec(ctx, primary, "CHECKPOINT"); err != nil {
		t.Fatal(err)
	}
	var walBytes int64
	if err := pgQueryRow(ctx, primary, "SELECT sum(size) FROM pg_ls_waldir()", &walBytes); err != nil {
		t.Fatal(err)
	}
	t.Logf("pg_wal on %s after writing 300 MB: %d MB", primary.Name, walBytes>>20)
	if walBytes > 250<<20 {
		t.Fatalf("pg_wal holds %d MB after 300 MB were written with %s's slot gone: WAL is still kept for it", walBytes>>20, away.Name)
	}
	away.Start()
	c.waitStreaming(primary)
	var want, got int
	if err := pgQueryRow(ctx, primary, "SELECT count(*) FROM filler", &want); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, away.Name+" has the rows written while it was away", func() (bool, error) {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		err := pgQueryRow(cctx, away, "SELECT count(*) FROM filler", &got)
		return err == nil && got == want, nil
	})
	if ok, err := slotOf(away.Name); err != nil || !ok {
		t.Fatalf("%s streams again but has no slot (%v)", away.Name, err)
	}
}
