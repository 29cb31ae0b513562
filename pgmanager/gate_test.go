package pgmanager

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"raftgres/internal/boottime"
	"raftgres/internal/testutil"
)

func xlogData(start uint64, n int) []byte {
	b := make([]byte, 25+n)
	b[0] = 'w'
	binary.BigEndian.PutUint64(b[1:], start)
	binary.BigEndian.PutUint64(b[9:], start+uint64(n))
	return b
}

// xlogDataUpTo is an XLogData message from a walsender that means to send
// up to walEnd.
func xlogDataUpTo(start uint64, n int, walEnd uint64) []byte {
	b := xlogData(start, n)
	binary.BigEndian.PutUint64(b[9:], walEnd)
	return b
}

func keepalive(end uint64, replyRequested bool) []byte {
	b := make([]byte, 18)
	b[0] = 'k'
	binary.BigEndian.PutUint64(b[1:], end)
	if replyRequested {
		b[17] = 1
	}
	return b
}

func TestGateStreamHandle(t *testing.T) {
	t.Parallel()
	type step struct {
		data     []byte
		reply    bool
		received pglogrepl.LSN
		err      bool
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"xlogdata is acknowledged up to its end", []step{
			{data: xlogData(1000, 100), reply: true, received: 1100},
			{data: xlogData(1100, 0), reply: true, received: 1100},
			{data: xlogData(1100, 8192), reply: true, received: 9292},
		}},
		{"one reply when the walsender's batch ends", []step{
			{data: xlogDataUpTo(1000, 100, 1300), reply: false, received: 1100},
			{data: xlogDataUpTo(1100, 100, 1300), reply: false, received: 1200},
			{data: xlogDataUpTo(1200, 100, 1300), reply: true, received: 1300},
		}},
		{"resent older wal never moves back", []step{
			{data: xlogData(900, 50), reply: true, received: 1000},
		}},
		{"keepalives are answered on request and move nothing", []step{
			{data: keepalive(1000, false), reply: false, received: 1000},
			{data: keepalive(1000, true), reply: true, received: 1000},
			{data: keepalive(5000, false), reply: false, received: 1000},
		}},
		{"unknown message type is ignored", []step{{data: []byte{'x', 1, 2}, received: 1000}}},
		{"empty payload", []step{{data: nil, err: true, received: 1000}}},
		{"short xlogdata", []step{{data: []byte{'w', 1, 2, 3}, err: true, received: 1000}}},
		{"short keepalive", []step{{data: []byte{'k', 1}, err: true, received: 1000}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := gateStream{received: 1000}
			for i, st := range tc.steps {
				reply, err := s.handle(st.data)
				if (err != nil) != st.err || (err != nil && !errors.Is(err, errGateMessage)) {
					t.Fatalf("step %d: error %v, want error %v", i, err, st.err)
				}
				if reply != st.reply || s.received != st.received {
					t.Fatalf("step %d: reply %v received %s, want %v %s", i, reply, s.received, st.reply, st.received)
				}
			}
		})
	}
}

func TestStartReplicationSQL(t *testing.T) {
	t.Parallel()
	if got, want := startReplicationSQL(0x16_B374D848, 3), "START_REPLICATION PHYSICAL 16/B374D848 TIMELINE 3"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestGateConfig(t *testing.T) {
	t.Parallel()
	m := testManager(t)
	cc, err := m.gateConfig()
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(map[string]string{"application_name": GateName, "replication": "true"}, cc.RuntimeParams); d != "" {
		t.Fatalf("runtime params (-want +got):\n%s", d)
	}
	if cc.Host != "/data/pg.run" || cc.Port != 5433 || cc.User != "postgres" || cc.TLSConfig != nil || len(cc.Fallbacks) != 0 {
		t.Fatalf("gate connects to %s:%d as %s (tls %v, %d fallbacks)", cc.Host, cc.Port, cc.User, cc.TLSConfig != nil, len(cc.Fallbacks))
	}
	if !strings.Contains(m.RenderHBA().Text, "local replication postgres scram-sha-256\n") {
		t.Fatal("pg_hba.conf lacks the gate's local replication line")
	}
}

func TestReadWindow(t *testing.T) {
	t.Parallel()
	now := time.Now()
	var w readWindow
	if !w.expired(now) {
		t.Fatal("a new window is not expired")
	}
	if d := w.renew(now, time.Hour); d != gateFirstWake || !w.end.Equal(now.Add(gateFirstWake)) {
		t.Fatalf("first window %s ending %v after now, want %s", d, w.end.Sub(now), gateFirstWake)
	}
	if w.expired(now.Add(gateFirstWake/2)) || !w.expired(now.Add(gateFirstWake)) {
		t.Fatal("the window expires at its end, not before")
	}
	// Windows double up to gateWake, and never outlast the lease.
	at, last := now, time.Duration(0)
	for range 20 {
		at = at.Add(last)
		last = w.renew(at, time.Hour)
	}
	if last != gateWake {
		t.Fatalf("windows grow to %s, want %s", last, gateWake)
	}
	if d := w.renew(at, gateFirstWake/3); d != gateFirstWake/3 || !w.end.Equal(at.Add(gateFirstWake/3)) {
		t.Fatalf("a window %s with %s of lease left", d, gateFirstWake/3)
	}
	w.expire()
	if !w.expired(at) {
		t.Fatal("expire() did not end the window")
	}
}

func TestSplitGate(t *testing.T) {
	t.Parallel()
	rows := []Replica{{ApplicationName: "pg2"}, {ApplicationName: GateName, SyncState: "sync"}, {ApplicationName: "pg3"}}
	reps, gate := splitGate(rows)
	if d := cmp.Diff([]Replica{{ApplicationName: "pg2"}, {ApplicationName: "pg3"}}, reps); d != "" || gate == nil || gate.SyncState != "sync" {
		t.Fatalf("replicas (-want +got):\n%s\ngate %+v", d, gate)
	}
	if reps, gate := splitGate(rows[:1]); len(reps) != 1 || gate != nil {
		t.Fatalf("no gate row: %v %v", reps, gate)
	}
}

// TestRunGateWithoutPostgres: no postmaster, no connection attempt; ctx
// ends the gate with nil.
func TestRunGateWithoutPostgres(t *testing.T) {
	t.Parallel()
	m, err := New(Config{Listen: "127.0.0.1:5432", DataDir: t.TempDir(), BinDir: pgBin,
		Superuser: Credentials{Username: "postgres"}, Replication: Credentials{Username: "r"}}, "pg1", nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := m.RunGate(ctx, func() time.Time { return boottime.Now().Add(time.Hour) }, nil); err != nil {
		t.Fatalf("RunGate: %v", err)
	}
	if m.GateConnected() {
		t.Fatal("gate connected to nothing")
	}
}

// lease is a lease end (on the boot clock) a test moves.
type lease struct{ end atomic.Pointer[time.Time] }

func newLease(end time.Time) *lease {
	l := &lease{}
	l.set(end)
	return l
}

func (l *lease) set(end time.Time) { l.end.Store(&end) }
func (l *lease) get() time.Time    { return *l.end.Load() }

// runGate runs m's gate until the test ends.
func runGate(t *testing.T, m *Manager, l *lease) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.RunGate(ctx, l.get, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RunGate returned %v", err)
		}
		if m.GateConnected() {
			t.Error("GateConnected after RunGate returned")
		}
	})
}

// clientConn is an application's connection: synchronous_commit on, unlike
// raftgres's own.
func clientConn(ctx context.Context, t *testing.T, m *Manager) *pgx.Conn {
	t.Helper()
	cc, err := pgx.ParseConfig("")
	if err != nil {
		t.Fatal(err)
	}
	m.socketConfig(&cc.Config)
	cc.Database = "postgres"
	cc.RuntimeParams["application_name"] = "client"
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func gatePID(ctx context.Context, t *testing.T, m *Manager) int {
	t.Helper()
	conn, err := m.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var pid int
	if err := conn.QueryRow(ctx, "SELECT coalesce(max(pid), 0) FROM pg_stat_replication WHERE application_name = $1", GateName).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	return pid
}

var gateOnly = Desired{SyncStandbyNames: `"` + GateName + `"`}

// TestGateLetsCommitsThrough: with the gate in synchronous_standby_names,
// commits wait until the gate runs under a valid lease, then go through at
// once; the gate is reported as Status.Gate, never among the replicas; an
// idle gate keeps its one connection.
func TestGateLetsCommitsThrough(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 3*time.Minute)
	p, _ := newPrimaryAndReplicaWith(t, e, gateOnly)
	client := clientConn(ctx, t, p)
	// Without the gate a commit waits.
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	_, err := client.Exec(wctx, "INSERT INTO t VALUES (1001)")
	cancel()
	if err == nil {
		t.Fatal("a commit returned with no gate running")
	}
	client = clientConn(ctx, t, p)
	runGate(t, p, newLease(boottime.Now().Add(time.Hour)))
	testutil.WaitFor(t, 10*time.Second, "gate connected", func() (bool, error) { return p.GateConnected(), nil })
	for i := range 20 {
		start := time.Now()
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := client.Exec(cctx, "INSERT INTO t VALUES ($1)", 2000+i)
		cancel()
		if err != nil {
			t.Fatalf("commit %d with the gate running: %v", i, err)
		}
		if took := time.Since(start); took > time.Second {
			t.Fatalf("commit %d took %s", i, took)
		}
	}
	st, err := p.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Gate == nil || st.Gate.SyncState != "sync" || st.Gate.State != "streaming" {
		t.Fatalf("Status.Gate = %+v, want a streaming sync standby", st.Gate)
	}
	if len(st.Replicas) != 1 || st.Replicas[0].ApplicationName != "pg2" {
		t.Fatalf("Status.Replicas = %+v, want only pg2", st.Replicas)
	}
	if st.SyncStandbyNames != gateOnly.SyncStandbyNames {
		t.Fatalf("synchronous_standby_names %q", st.SyncStandbyNames)
	}
	// Idle for several read deadlines: the same connection stays.
	pid := gatePID(ctx, t, p)
	time.Sleep(3*gateWake + gateWake/2) // idle on purpose
	if now := gatePID(ctx, t, p); now != pid || !p.GateConnected() {
		t.Fatalf("idle gate reconnected: walsender pid %d, then %d", pid, now)
	}
	if _, err := client.Exec(ctx, "INSERT INTO t VALUES (3000)"); err != nil {
		t.Fatal(err)
	}
}

// TestGateStopsAtLeaseEnd: a commit started before the lease end with the
// gate connected returns; one started after it does not (it waits for
// synchronous replication) until the lease is valid again.
func TestGateStopsAtLeaseEnd(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 3*time.Minute)
	p := e.initPrimaryWith(t, ctx, "pg1", gateOnly)
	if err := p.Exec(ctx, "CREATE TABLE t (id int primary key)"); err != nil {
		t.Fatal(err)
	}
	l := newLease(boottime.Now().Add(time.Hour))
	runGate(t, p, l)
	testutil.WaitFor(t, 10*time.Second, "gate connected", func() (bool, error) { return p.GateConnected(), nil })
	end := boottime.Now().Add(2 * time.Second)
	l.set(end)
	client := clientConn(ctx, t, p)
	if _, err := client.Exec(ctx, "INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	if !boottime.Now().Before(end.Add(-GateMargin)) {
		t.Fatal("test too slow: the commit before the lease end ran past it")
	}
	testutil.WaitFor(t, 10*time.Second, "gate to disconnect at the lease end", func() (bool, error) {
		return !p.GateConnected() && !boottime.Now().Before(end.Add(-GateMargin)), nil
	})
	// After the end: the commit waits.
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := client.Exec(cctx, "INSERT INTO t VALUES (2)")
		done <- err
	}()
	select {
	case err := <-done:
		cancel()
		t.Fatalf("a commit after the lease end returned (%v)", err)
	case <-time.After(2 * time.Second):
	}
	conn, err := p.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var waiting int
	err = conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'").Scan(&waiting)
	conn.Close(context.Background())
	if err != nil || waiting != 1 {
		t.Fatalf("backends waiting for synchronous replication: %d (%v), want 1", waiting, err)
	}
	if p.GateConnected() || gatePID(ctx, t, p) != 0 {
		t.Fatal("the gate came back without a lease")
	}
	cancel()
	if err := <-done; err == nil {
		t.Fatal("cancelled commit reported success")
	}
	// A commit that waits when the lease becomes valid again is released
	// as soon as the gate reconnects, and new ones go through.
	client = clientConn(ctx, t, p)
	go func() {
		_, err := client.Exec(ctx, "INSERT INTO t VALUES (3)")
		done <- err
	}()
	testutil.WaitFor(t, 10*time.Second, "the commit to wait for the gate", func() (bool, error) {
		var n int
		err := p.Exec(ctx, "DO $$BEGIN IF (SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep') = 0 THEN RAISE 'none'; END IF; END$$")
		return err == nil, fmt.Errorf("%d waiting: %w", n, err)
	})
	l.set(boottime.Now().Add(time.Hour))
	testutil.WaitFor(t, 10*time.Second, "gate reconnected", func() (bool, error) { return p.GateConnected(), nil })
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("waiting commit: %v", err)
		}
	case <-time.After(500 * time.Millisecond): // well before the first gateWake
		t.Fatal("a commit that waited while the gate was away is still waiting after it reconnected")
	}
	cctx, cancel = context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := client.Exec(cctx, "INSERT INTO t VALUES (4)"); err != nil {
		t.Fatal(err)
	}
}

// TestGateWaitsForPromotion: a standby carries the gate's setting and a
// lease before its promotion; the gate connects only once it is primary.
func TestGateWaitsForPromotion(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 3*time.Minute)
	p, r := newPrimaryAndReplicaWith(t, e, Desired{})
	d := Desired{Standby: upstreamOf(t, "pg1", p), Slot: SlotName("pg2"), SyncStandbyNames: gateOnly.SyncStandbyNames}
	if _, err := r.Reload(ctx, d); err != nil {
		t.Fatal(err)
	}
	runGate(t, r, newLease(boottime.Now().Add(time.Hour)))
	time.Sleep(time.Second) // the gate retries meanwhile
	if r.GateConnected() {
		t.Fatal("gate connected to a standby")
	}
	if err := r.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "gate connected after promotion", func() (bool, error) { return r.GateConnected(), nil })
	client := clientConn(ctx, t, r)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := client.Exec(cctx, "INSERT INTO t VALUES (5000)"); err != nil {
		t.Fatal(err)
	}
	if st, err := r.Status(ctx); err != nil || st.Gate == nil || len(st.Replicas) != 0 {
		t.Fatalf("promoted status: gate %+v replicas %+v (%v)", st.Gate, st.Replicas, err)
	}
}

// TestGateNoAckAfterLeaseEnd: writers commit continuously across the
// lease end; every acknowledged commit returned before the end (plus one
// loopback round trip of slack), and commits after it wait.
func TestGateNoAckAfterLeaseEnd(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 3*time.Minute)
	p := e.initPrimaryWith(t, ctx, "pg1", gateOnly)
	if err := p.Exec(ctx, "CREATE TABLE t (id bigserial primary key, w int)"); err != nil {
		t.Fatal(err)
	}
	l := newLease(boottime.Now().Add(time.Hour))
	runGate(t, p, l)
	testutil.WaitFor(t, 10*time.Second, "gate connected", func() (bool, error) { return p.GateConnected(), nil })
	const writers = 4
	conns := make([]*pgx.Conn, writers)
	for i := range conns {
		conns[i] = clientConn(ctx, t, p)
	}
	end := boottime.Now().Add(time.Second)
	l.set(end)
	wctx, cancel := context.WithCancel(ctx)
	type result struct {
		acked int
		last  time.Time
	}
	results := make(chan result, writers)
	for i, c := range conns {
		go func() {
			var r result
			for wctx.Err() == nil {
				if _, err := c.Exec(wctx, "INSERT INTO t (w) VALUES ($1)", i); err != nil {
					break
				}
				r.acked++
				r.last = boottime.Now()
			}
			results <- r
		}()
	}
	time.Sleep(end.Sub(boottime.Now()) + 2*time.Second) // writers run across the end
	cancel()
	total, last := 0, time.Time{}
	for range writers {
		r := <-results
		total += r.acked
		if r.last.After(last) {
			last = r.last
		}
	}
	if total == 0 {
		t.Fatal("no commit went through before the lease end")
	}
	// The gate's last reply left GateMargin before the end; the client
	// saw its commit one round trip (and a scheduling delay, well under
	// GateMargin) later at most.
	if late := last.Sub(end.Add(-GateMargin)); late > 100*time.Millisecond {
		t.Fatalf("a commit was acknowledged %s after the lease end less GateMargin (%s)", late, GateMargin)
	}
	t.Logf("%d commits acknowledged, the last seen by its client at lease end %+v", total, last.Sub(end))
}

// TestGateReplyMargin: the gate neither counts its lease as valid nor
// replies within GateMargin of the lease end (the reply is refused before
// the connection is touched: a nil one would panic), and does both before.
func TestGateReplyMargin(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		left  time.Duration // from now to the lease end
		valid bool
	}{
		{"ended", -time.Second, false},
		{"ends now", 0, false},
		{"within the margin", GateMargin / 2, false},
		{"just inside the margin", GateMargin - time.Millisecond, false},
		{"well before the margin", GateMargin + time.Minute, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			end := boottime.Now().Add(tc.left)
			g := &gate{leaseEnd: func() time.Time { return end }}
			if got := g.leaseValid(); got != tc.valid {
				t.Fatalf("leaseValid() = %v, want %v", got, tc.valid)
			}
			if !tc.valid {
				if err := g.reply(nil, 1000); !errors.Is(err, errLeaseEnded) {
					t.Fatalf("reply = %v, want errLeaseEnded", err)
				}
			}
		})
	}
}

// FuzzGateStreamHandle: any payload from the walsender is handled without
// a panic, and the acknowledged position never moves back.
func FuzzGateStreamHandle(f *testing.F) {
	for _, b := range [][]byte{xlogData(1000, 10), keepalive(5, true), keepalive(5, false), {}, {'w'}, {'k', 0}, {'x'}} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := gateStream{received: 1000}
		reply, err := s.handle(data)
		if s.received < 1000 {
			t.Fatalf("received moved back to %s", s.received)
		}
		if err != nil && (reply || !errors.Is(err, errGateMessage)) {
			t.Fatalf("error %v with reply %v", err, reply)
		}
	})
}
