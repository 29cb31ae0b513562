package failover

import (
	"context"
	"testing"
)

// TestLocalCarriesTheLiveLease: Local's lease end is the lease the commit
// gate acknowledges under, not the one copied at the last cycle's end. A
// renewal acknowledged at the start of a cycle (or during a long action)
// shows at once; a lease forgotten or reset shows as none at once.
func TestLocalCarriesTheLiveLease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRig(t, "pg1", testState("pg1", "pg1", "pg2"), runningPrimary)
	r.sup.cycle(ctx) // renews, looks, publishes
	published := r.sup.Local().LeaseUntil
	if published.IsZero() || !published.Equal(r.sup.lease.End()) {
		t.Fatalf("published lease end %s, lease end %s", published, r.sup.lease.End())
	}
	// A renewal between two publications, as at the start of a cycle
	// whose remaining steps outlast the previous lease end.
	r.clock.Advance(r.sup.renewInterval(r.store.State()))
	r.sup.renew(ctx, r.store.State())
	if got, want := r.sup.Local().LeaseUntil, r.sup.lease.End(); !want.After(published) || !got.Equal(want) {
		t.Fatalf("after a renewal Local's lease end is %s, want the renewed %s (published %s)", got, want, published)
	}
	v := r.sup.Local()
	if !v.LeaseValid(published.Add(1)) {
		t.Errorf("lease not valid just after the published end although it was renewed")
	}
	r.sup.lease.forget()
	if got := r.sup.Local().LeaseUntil; !got.IsZero() {
		t.Errorf("a forgotten lease still shows in Local: %s", got)
	}
}
