package agent

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/hashicorp/go-hclog"

	"raftgres/api"
	"raftgres/raftstore"
)

func TestTransient(t *testing.T) {
	for _, err := range []error{raftstore.ErrJoinRefused, api.ErrUnauthorized, fmt.Errorf("join: %w", api.ErrBadRequest)} {
		if transient(err) {
			t.Errorf("%v: transient, want permanent", err)
		}
	}
	if !transient(errors.New("connection refused")) {
		t.Error("an unreachable peer is not transient")
	}
}

func TestRetry(t *testing.T) {
	calls := 0
	err := retry(context.Background(), hclog.NewNullLogger(), "register", func() error {
		if calls++; calls < 3 {
			return errors.New("no leader yet")
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("retry: %v after %d calls, want success after 3", err, calls)
	}
	err = retry(context.Background(), hclog.NewNullLogger(), "register", func() error { return api.ErrUnauthorized })
	if !errors.Is(err, api.ErrUnauthorized) || err.Error() != "register: "+api.ErrUnauthorized.Error() {
		t.Fatalf("retry of a permanent error: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := retry(ctx, hclog.NewNullLogger(), "register", func() error { return errors.New("down") }); err != nil {
		t.Fatalf("retry after ctx ended: %v, want nil", err)
	}
}
