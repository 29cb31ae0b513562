package pgmanager

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"raftgres/internal/boottime"
	"raftgres/internal/testutil"
)

// startReplicationClient connects to m's local socket as a physical
// replication client named name and starts streaming from the current
// position; the connection is closed at the test's end.
func startReplicationClient(ctx context.Context, t *testing.T, m *Manager, name string) (*pgconn.PgConn, pglogrepl.IdentifySystemResult) {
	t.Helper()
	cc, err := m.gateConfig()
	if err != nil {
		t.Fatal(err)
	}
	cc.RuntimeParams["application_name"] = name
	var conn *pgconn.PgConn
	err = m.tryLocalPasswords(func(pw string) { cc.Password = pw }, func() error {
		var err error
		conn, err = pgconn.ConnectConfig(ctx, cc)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeConn(conn) })
	sys, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if err := startPhysical(ctx, conn, sys.XLogPos, sys.Timeline); err != nil {
		t.Fatal(err)
	}
	return conn, sys
}

// impostor is a replication client of m named name that acknowledges all
// the WAL it receives, whatever any lease: what a second walsender with
// the gate's name could do.
type impostor struct {
	conn *pgconn.PgConn
	pid  uint32
	done chan error // the read loop's end
}

func startImpostor(ctx context.Context, t *testing.T, m *Manager, name string) *impostor {
	t.Helper()
	conn, sys := startReplicationClient(ctx, t, m, name)
	im := &impostor{conn: conn, pid: conn.PID(), done: make(chan error, 1)}
	go func() {
		s := gateStream{received: sys.XLogPos}
		for {
			msg, err := conn.ReceiveMessage(context.Background())
			if err != nil {
				im.done <- err
				return
			}
			cd, ok := msg.(*pgproto3.CopyData)
			if !ok {
				continue
			}
			if _, err := s.handle(cd.Data); err != nil {
				im.done <- err
				return
			}
			pos := s.received
			if err := pglogrepl.SendStandbyStatusUpdate(context.Background(), conn, pglogrepl.StandbyStatusUpdate{
				WALWritePosition: pos, WALFlushPosition: pos, WALApplyPosition: pos}); err != nil {
				im.done <- err
				return
			}
		}
	}()
	return im
}

// walsenderAlive reports whether pid is a walsender of m.
func walsenderAlive(ctx context.Context, t *testing.T, m *Manager, pid uint32) bool {
	t.Helper()
	conn, err := m.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender' AND pid = $1", int64(pid)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// TestGateEvictsNamesakes on a real server: another
// walsender whose name PostgreSQL takes for the gate's (the gate's
// lingering previous connection, a client named RAFTGRES_FENCE) would
// acknowledge commits in the gate's place whatever the lease. The gate
// terminates it before its first reply, so commits again need the gate's
// own reply: none goes through once the gate's lease has ended.
func TestGateEvictsNamesakes(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 3*time.Minute)
	p := e.initPrimaryWith(t, ctx, "pg1", gateOnly)
	if err := p.Exec(ctx, "CREATE TABLE t (id int primary key)"); err != nil {
		t.Fatal(err)
	}
	client := clientConn(ctx, t, p)
	for i, name := range []string{"RAFTGRES_FENCE", GateName, "Raftgres_Fence"} {
		t.Logf("impostor %q", name)
		im := startImpostor(ctx, t, p, name)
		// The impostor alone lets commits through: the threat is real.
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := client.Exec(cctx, "INSERT INTO t VALUES ($1)", 10*i)
		cancel()
		if err != nil {
			t.Fatalf("commit acknowledged by the impostor %q alone: %v", name, err)
		}
		// The gate evicts it before it replies.
		l := newLease(boottime.Now().Add(time.Hour))
		gctx, stop := context.WithCancel(ctx)
		gateDone := make(chan error, 1)
		go func() { gateDone <- p.RunGate(gctx, l.get, nil) }()
		testutil.WaitFor(t, 10*time.Second, "gate connected", func() (bool, error) { return p.GateConnected(), nil })
		if walsenderAlive(ctx, t, p, im.pid) {
			t.Fatalf("impostor %q (walsender %d) still runs once the gate is connected", name, im.pid)
		}
		select {
		case err := <-im.done:
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "57P01" { // admin_shutdown: terminated
				t.Logf("impostor's connection ended with %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("impostor %q still reads its connection", name)
		}
		cctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		_, err = client.Exec(cctx, "INSERT INTO t VALUES ($1)", 10*i+1)
		cancel()
		if err != nil {
			t.Fatalf("commit with the gate: %v", err)
		}
		// The gate's lease ends: nobody acknowledges any more.
		l.set(boottime.Now())
		testutil.WaitFor(t, 10*time.Second, "gate disconnected", func() (bool, error) { return !p.GateConnected(), nil })
		cctx, cancel = context.WithTimeout(ctx, time.Second)
		_, err = client.Exec(cctx, "INSERT INTO t VALUES ($1)", 10*i+2)
		cancel()
		if err == nil {
			t.Fatalf("a commit was acknowledged after the gate's lease ended (impostor %q)", name)
		}
		stop()
		if err := <-gateDone; err != nil {
			t.Fatal(err)
		}
		client = clientConn(ctx, t, p) // the cancelled commit left the session in doubt
	}
}

// TestGateWaitsForStoppedNamesake: a walsender with the gate's name that
// cannot be terminated (stopped: it acts on SIGTERM only once continued)
// keeps the gate from replying at all; once it is gone the gate connects
// and releases the commit that waited.
func TestGateWaitsForStoppedNamesake(t *testing.T) {
	e := requirePG(t)
	ctx := ctxT(t, 3*time.Minute)
	p := e.initPrimaryWith(t, ctx, "pg1", gateOnly)
	if err := p.Exec(ctx, "CREATE TABLE t (id int primary key)"); err != nil {
		t.Fatal(err)
	}
	im := startImpostor(ctx, t, p, "RAFTGRES_FENCE")
	if err := syscall.Kill(int(im.pid), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	cont := func() { _ = syscall.Kill(int(im.pid), syscall.SIGCONT) }
	t.Cleanup(cont)
	client := clientConn(ctx, t, p)
	done := make(chan error, 1)
	go func() {
		_, err := client.Exec(ctx, "INSERT INTO t VALUES (1)")
		done <- err
	}()
	runGate(t, p, newLease(boottime.Now().Add(time.Hour)))
	// Longer than one connection attempt's bound (gateSetup): the gate
	// gives up on the namesake, retries, and never streams meanwhile.
	deadline := time.Now().Add(gateSetup + time.Second)
	for time.Now().Before(deadline) {
		if p.GateConnected() {
			t.Fatal("the gate streams while another walsender with its name runs")
		}
		select {
		case err := <-done:
			t.Fatalf("a commit returned while the only walsender with the gate's name was stopped (%v)", err)
		case <-time.After(20 * time.Millisecond): // polling interval
		}
	}
	if !walsenderAlive(ctx, t, p, im.pid) {
		t.Fatal("the stopped walsender is gone: the test proves nothing")
	}
	cont() // the pending SIGTERM ends it
	testutil.WaitFor(t, 20*time.Second, "gate connected once the namesake is gone", func() (bool, error) { return p.GateConnected(), nil })
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("waiting commit: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the commit still waits with the gate connected")
	}
}
