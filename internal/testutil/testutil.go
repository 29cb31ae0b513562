// Package testutil holds the helpers that the tests of several packages
// share: free ports, polling until a condition holds, a log buffer safe
// for concurrent writers, and a test certificate authority. Only tests
// import it.
package testutil

import (
	"bytes"
	"net"
	"sync"
	"testing"
	"time"
)

var (
	portsMu   sync.Mutex
	portsUsed = map[int]bool{}
)

// FreePort returns a port free on 127.0.0.1 that this test process has not
// handed out before: ports are chosen before the servers bind them, so two
// calls must never return the same one.
func FreePort(t testing.TB) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
		if !portsUsed[p] {
			portsUsed[p] = true
			return p
		}
	}
}

// PollInterval is how often WaitFor tries its condition.
const PollInterval = 50 * time.Millisecond

// WaitFor polls cond every PollInterval until it holds, and fails the test
// naming what it waited for (and cond's last error) once timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	WaitEvery(t, timeout, PollInterval, what, cond)
}

// WaitEvery is WaitFor polling every interval.
func WaitEvery(t testing.TB, timeout, interval time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			if last != nil {
				t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, last)
			}
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(interval) // polling interval, not synchronisation
	}
}

// SyncBuffer collects output (logs) from several goroutines.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String is everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
