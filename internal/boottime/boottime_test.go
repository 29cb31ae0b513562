package boottime

import (
	"testing"
	"time"
)

func TestNowAdvancesAndRoundTrips(t *testing.T) {
	a := Now()
	deadline := time.Now().Add(5 * time.Second)
	for !Now().After(a) {
		if time.Now().After(deadline) {
			t.Fatal("boot clock did not advance")
		}
	}
	if d := Now().Sub(time.Now()); d > time.Second || d < -time.Second {
		t.Fatalf("boot-derived time is %s from the wall clock just after start", d)
	}
	if got := FromNanos(Nanos(a)); !got.Equal(a) {
		t.Fatalf("FromNanos(Nanos(%v)) = %v", a, got)
	}
	if n, raw := Nanos(Now()), Raw(); raw < n {
		t.Fatalf("Nanos(Now()) %d is after a later Raw() %d", n, raw)
	}
}
