package pgmanager

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pglogrepl"
	"golang.org/x/sys/unix"

	"raftgres/internal/boottime"
)

func TestNewGateQuorum(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		q     int
		names []string
		wantQ int
		want  []string
	}{
		{"default", 0, nil, 0, []string{}},
		{"negative is none", -1, []string{"s1"}, 0, []string{"s1"}},
		{"each name once, sorted", 2, []string{"s2", "s1", "s2"}, 2, []string{"s1", "s2"}},
		{"never the gate, nor empty", 1, []string{GateName, "RAFTGRES_FENCE", "", "s1"}, 1, []string{"s1"}},
		{"more than named is kept (commits wait)", 3, []string{"s1", "s2"}, 3, []string{"s1", "s2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			gq := newGateQuorum(tc.q, tc.names)
			if gq.q != tc.wantQ {
				t.Fatalf("q = %d, want %d", gq.q, tc.wantQ)
			}
			if d := cmp.Diff(tc.want, gq.list()); d != "" {
				t.Fatalf("names (-want +got):\n%s", d)
			}
		})
	}
}

func TestGateQuorumPosition(t *testing.T) {
	t.Parallel()
	s := func(name, state string, flush pglogrepl.LSN) walSender {
		return walSender{name: name, state: state, flush: flush}
	}
	for _, tc := range []struct {
		name      string
		q         int
		names     []string
		senders   []walSender
		want      pglogrepl.LSN
		streaming int
	}{
		{"no quorum asks nothing", 0, nil, []walSender{s("s1", "streaming", 100)}, 0, 0},
		{"1 of 2: the highest", 1, []string{"s1", "s2"},
			[]walSender{s("s1", "streaming", 100), s("s2", "streaming", 300)}, 300, 2},
		{"2 of 2: the lowest", 2, []string{"s1", "s2"},
			[]walSender{s("s1", "streaming", 100), s("s2", "streaming", 300)}, 100, 2},
		{"2 of 3: the second highest", 2, []string{"s1", "s2", "s3"},
			[]walSender{s("s3", "streaming", 200), s("s1", "streaming", 100), s("s2", "streaming", 300)}, 200, 3},
		{"fewer streaming than q: nothing", 2, []string{"s1", "s2"},
			[]walSender{s("s1", "streaming", 100)}, 0, 1},
		{"q above the names: nothing", 3, []string{"s1", "s2"},
			[]walSender{s("s1", "streaming", 100), s("s2", "streaming", 300)}, 0, 2},
		{"only streaming counts", 1, []string{"s1", "s2"},
			[]walSender{s("s1", "catchup", 500), s("s2", "startup", 600), s("s1", "stopping", 700), s("s2", "streaming", 50)}, 50, 1},
		{"a name counts once, at its highest", 2, []string{"s1", "s2"},
			[]walSender{s("s1", "streaming", 100), s("s1", "streaming", 400), s("s1", "streaming", 200)}, 0, 1},
		{"a name's highest flush", 1, []string{"s1"},
			[]walSender{s("s1", "streaming", 100), s("s1", "streaming", 400), s("s1", "catchup", 900)}, 400, 1},
		{"names match exactly", 1, []string{"s1"},
			[]walSender{s("S1", "streaming", 900), s("s1 ", "streaming", 900), s("s10", "streaming", 900), s("s1", "streaming", 10)}, 10, 1},
		{"unnamed walsenders never count", 2, []string{"s1", "s2"},
			[]walSender{s("s1", "streaming", 100), s("pg3", "streaming", 900), s("", "streaming", 900)}, 0, 1},
		{"the gate never counts", 1, []string{"s1"},
			[]walSender{s(GateName, "streaming", 900), s("s1", "streaming", 10)}, 10, 1},
		{"no walsenders", 1, []string{"s1"}, nil, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, streaming := newGateQuorum(tc.q, tc.names).position(tc.senders)
			if got != tc.want || streaming != tc.streaming {
				t.Fatalf("position = %s with %d streaming, want %s with %d", got, streaming, tc.want, tc.streaming)
			}
		})
	}
}

func TestGateQuorumReplyPosition(t *testing.T) {
	t.Parallel()
	two := []walSender{{"s1", "streaming", 500}, {"s2", "streaming", 300}}
	for _, tc := range []struct {
		name              string
		q                 int
		received, replied pglogrepl.LSN
		senders           []walSender
		want              pglogrepl.LSN
	}{
		{"no quorum: all received", 0, 1000, 900, nil, 1000},
		{"the quorum is behind: its position", 1, 1000, 100, two, 500},
		{"the quorum is ahead: all received", 1, 400, 100, two, 400},
		{"2 of 2: the lower", 2, 1000, 100, two, 300},
		{"never back", 2, 1000, 700, two, 700},
		{"quorum unreachable: what was confirmed", 3, 1000, 700, two, 700},
		{"nothing known yet on a new connection", 1, 1000, 0, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			gq := newGateQuorum(tc.q, []string{"s1", "s2", "s3"})
			if got := gq.replyPosition(tc.received, tc.replied, tc.senders); got != tc.want {
				t.Fatalf("replyPosition = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestSetGateQuorum(t *testing.T) {
	t.Parallel()
	m := testManager(t)
	if got := m.GateQuorum(); got.Q != 0 || len(got.Names) != 0 {
		t.Fatalf("default quorum %+v, want none", got)
	}
	first := m.gateQuorum()
	if m.gateQuorum() != first {
		t.Fatal("the default setting is made anew at each read")
	}
	m.SetGateQuorum(1, []string{"s2", "s1"})
	select {
	case <-first.changed:
	default:
		t.Fatal("the replaced setting's changed channel is open")
	}
	if d := cmp.Diff(GateQuorum{Q: 1, Names: []string{"s1", "s2"}}, m.GateQuorum()); d != "" {
		t.Fatalf("GateQuorum (-want +got):\n%s", d)
	}
	// The same setting again changes nothing.
	cur := m.gateQuorum()
	m.SetGateQuorum(1, []string{"s1", "s2", "s1", GateName})
	if m.gateQuorum() != cur {
		t.Fatal("setting the same quorum replaced it")
	}
	select {
	case <-cur.changed:
		t.Fatal("setting the same quorum signalled a change")
	default:
	}
	// Concurrent settings: each replaced one is closed exactly once (a
	// second close would panic), and the last one stays open.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() { m.SetGateQuorum(i%3, []string{"s1"}) })
	}
	wg.Wait()
	select {
	case <-m.gateQuorum().changed:
		t.Fatal("the current setting's changed channel is closed")
	default:
	}
}

// quorumHarness runs the gate's stream loop on a socket pair against a
// fake walsender, with a quorum watch whose poller the test plays.
type quorumHarness struct {
	t        *testing.T
	m        *Manager
	qw       *quorumWatch
	peer     *os.File
	statuses chan pglogrepl.LSN
	last     pglogrepl.LSN
}

func newQuorumHarness(t *testing.T, start pglogrepl.LSN) *quorumHarness {
	t.Helper()
	m := testManager(t)
	c, peer := socketPair(t)
	qw, err := newQuorumWatch(m, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	c.wake = qw.wake
	g := &gate{m: m, leaseEnd: func() time.Time { return boottime.Now().Add(time.Hour) }, logger: hclog.NewNullLogger()}
	h := &quorumHarness{t: t, m: m, qw: qw, peer: peer, statuses: make(chan pglogrepl.LSN, 1000)}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan gateDown, 1)
	go func() { stopped <- g.stream(ctx, c, start, qw) }()
	go h.readStatuses()
	t.Cleanup(func() {
		cancel()
		c.shutdown()
		<-stopped
		qw.close()
	})
	return h
}

// readStatuses passes each status update's flush position on.
func (h *quorumHarness) readStatuses() {
	defer close(h.statuses)
	b := make([]byte, gateStatusLen)
	for {
		if _, err := io.ReadFull(h.peer, b); err != nil {
			return
		}
		write, flush, apply := binary.BigEndian.Uint64(b[6:]), binary.BigEndian.Uint64(b[14:]), binary.BigEndian.Uint64(b[22:])
		if b[0] != 'd' || b[5] != 'r' || write != flush || flush != apply {
			h.t.Errorf("bad status update %x", b)
		}
		h.statuses <- pglogrepl.LSN(flush)
	}
}

// send writes an XLogData of n bytes at start, the end of what the
// walsender means to send.
func (h *quorumHarness) send(start uint64, n int) {
	h.t.Helper()
	if _, err := h.peer.Write(copyData(xlogData(start, n))); err != nil {
		h.t.Fatal(err)
	}
}

// poll plays the poller: the standbys' positions, then a signal.
func (h *quorumHarness) poll(senders ...walSender) {
	h.qw.senders.Store(&senders)
	h.qw.signal()
}

// expect waits for a status confirming want; none before it may confirm
// more, or less than the one before it.
func (h *quorumHarness) expect(want pglogrepl.LSN) {
	h.t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case got, ok := <-h.statuses:
			if !ok {
				h.t.Fatalf("connection ended waiting for %s", want)
			}
			if got < h.last || got > want {
				h.t.Fatalf("status %s after %s, waiting for %s", got, h.last, want)
			}
			h.last = got
			if got == want {
				return
			}
		case <-timeout:
			h.t.Fatalf("no status confirming %s (last %s)", want, h.last)
		}
	}
}

// hold checks that for d no status confirms more than the last one.
func (h *quorumHarness) hold(d time.Duration) {
	h.t.Helper()
	timeout := time.After(d)
	for {
		select {
		case got := <-h.statuses:
			if got != h.last {
				h.t.Fatalf("status %s, want %s held", got, h.last)
			}
		case <-timeout:
			return
		}
	}
}

// needs reports what the loop told the poller it could not confirm.
func (h *quorumHarness) needs() pglogrepl.LSN { return pglogrepl.LSN(h.qw.need.Load()) }

// TestGateQuorumStream: the stream loop confirms no further than the
// quorum the poller last saw, wakes when it signals, never goes back, and
// follows SetGateQuorum both ways.
func TestGateQuorumStream(t *testing.T) {
	t.Parallel()
	s := func(name string, flush pglogrepl.LSN) walSender {
		return walSender{name: name, state: "streaming", flush: flush}
	}
	h := newQuorumHarness(t, 1000)
	h.expect(1000) // no quorum: the start, at once
	h.m.SetGateQuorum(1, []string{"s1", "s2"})
	h.send(1000, 100)
	h.hold(50 * time.Millisecond) // nothing known of the standbys
	if h.needs() != 1100 {
		t.Fatalf("the loop needs %s, want 1100", h.needs())
	}
	h.poll(s("s1", 1050))
	h.expect(1050)
	h.poll(s("s1", 1050), s("s2", 1200)) // ahead of the gate: what it received
	h.expect(1100)
	h.hold(50 * time.Millisecond)
	if h.needs() != 0 {
		t.Fatalf("the loop needs %s with all confirmed", h.needs())
	}

	h.m.SetGateQuorum(2, []string{"s1", "s2"})
	h.send(1100, 100)
	h.hold(50 * time.Millisecond) // 2 of 2 is at 1050: never back
	h.poll(s("s1", 1300), s("s2", 1150), s("s2", 1000), s("S2", 9999), s(GateName, 9999), walSender{"s2", "catchup", 9999})
	h.expect(1150)
	h.poll(s("s1", 1300)) // s2 gone: 1 of 2 cannot make 2
	h.send(1200, 100)
	h.hold(50 * time.Millisecond)

	h.m.SetGateQuorum(0, nil) // no poller here: the loop wakes at its next read window at most
	h.poll(s("s1", 1300))     // (the poller signals on a change)
	h.expect(1300)
	h.send(1300, 10) // the gate alone again
	h.expect(1310)
	if h.needs() != 0 {
		t.Fatalf("the loop needs %s without a quorum", h.needs())
	}
}

// fakeWalSenders is a walSenderSource the test scripts.
type fakeWalSenders struct {
	mu      sync.Mutex
	senders []walSender
	err     error
	calls   int
	closed  bool
}

func (f *fakeWalSenders) list(context.Context) ([]walSender, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return append([]walSender(nil), f.senders...), f.err
}

func (f *fakeWalSenders) close() { f.mu.Lock(); f.closed = true; f.mu.Unlock() }

func (f *fakeWalSenders) set(err error, senders ...walSender) {
	f.mu.Lock()
	f.senders, f.err = senders, err
	f.mu.Unlock()
}

func (f *fakeWalSenders) count() int { f.mu.Lock(); defer f.mu.Unlock(); return f.calls }

// TestQuorumWatchRun: the poller polls only while the loop needs a
// position the quorum has not reached, signals each rise, retries after
// an error, signals a new setting, and closes its source when it ends.
func TestQuorumWatchRun(t *testing.T) {
	t.Parallel()
	m := testManager(t)
	qw, err := newQuorumWatch(m, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer qw.close()
	src := &fakeWalSenders{}
	qw.src = src
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); qw.run(ctx) }()

	signalled := func(within time.Duration) bool {
		t.Helper()
		fds := []unix.PollFd{{Fd: int32(qw.wake), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(within/time.Millisecond))
		if err != nil && !errors.Is(err, unix.EINTR) {
			t.Fatal(err)
		}
		if n == 1 {
			var b [8]byte
			_, _ = unix.Read(qw.wake, b[:])
		}
		return n == 1
	}
	idle := func(what string) {
		t.Helper()
		before := src.count()
		time.Sleep(30 * gateQuorumPoll) // idle on purpose
		if n := src.count() - before; n > 1 {
			t.Fatalf("%s: %d polls", what, n)
		}
	}

	qw.want(1000) // no quorum: nothing to poll for
	idle("no quorum")
	m.SetGateQuorum(1, []string{"s1"})
	if !signalled(time.Second) {
		t.Fatal("a new setting was not signalled")
	}
	src.set(nil, walSender{"s1", "streaming", 500})
	if !signalled(time.Second) {
		t.Fatal("the first position was not signalled")
	}
	if signalled(20 * gateQuorumPoll) {
		t.Fatal("signalled with no rise")
	}
	if src.count() < 3 {
		t.Fatalf("%d polls while the loop waits", src.count())
	}
	src.set(nil, walSender{"s1", "streaming", 1000})
	if !signalled(time.Second) {
		t.Fatal("the quorum reaching the need was not signalled")
	}
	idle("the need reached")
	if got, _ := m.gateQuorum().position(qw.walSenders()); got != 1000 {
		t.Fatalf("the loop would read %s", got)
	}

	// An error: retried, then a rise is signalled.
	src.set(errors.New("boom"))
	qw.want(2000)
	before := src.count()
	time.Sleep(3 * gateQuorumRetry / 2) // idle on purpose
	if n := src.count() - before; n < 1 || n > 3 {
		t.Fatalf("%d polls failing in %s", n, 3*gateQuorumRetry/2)
	}
	src.set(nil, walSender{"s1", "streaming", 1500})
	if !signalled(time.Second) {
		t.Fatal("a rise after errors was not signalled")
	}
	qw.want(0)
	idle("nothing needed")

	cancel()
	<-done
	src.mu.Lock()
	defer src.mu.Unlock()
	if !src.closed {
		t.Fatal("the poller's source was not closed")
	}
}

// TestGateConnWake: while watching, a read ends at the poller's signal
// (errQuorumWake, the signal drained), the socket's data coming first;
// it times out as a plain read does; not watching, a signal is ignored.
func TestGateConnWake(t *testing.T) {
	t.Parallel()
	c, peer := socketPair(t)
	qw, err := newQuorumWatch(testManager(t), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(qw.close)
	c.wake = qw.wake
	if err := c.setReadTimeout(50 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	c.watch = true
	if _, _, err := c.next(); !errors.Is(err, errReadTimeout) {
		t.Fatalf("idle watched read: %v, want errReadTimeout", err)
	}
	qw.signal()
	if _, _, err := c.next(); !errors.Is(err, errQuorumWake) {
		t.Fatalf("signalled read: %v, want errQuorumWake", err)
	}
	if _, _, err := c.next(); !errors.Is(err, errReadTimeout) {
		t.Fatalf("read after the signal was taken: %v, want errReadTimeout", err)
	}
	// Data and a signal: the data first, then the signal.
	qw.signal()
	if _, err := peer.Write(copyData(keepalive(5, true))); err != nil {
		t.Fatal(err)
	}
	if typ, body, err := c.next(); err != nil || typ != 'd' || len(body) != 18 {
		t.Fatalf("read with data and a signal: %q %d bytes (%v)", typ, len(body), err)
	}
	if _, _, err := c.next(); !errors.Is(err, errQuorumWake) {
		t.Fatalf("read after the data: %v, want errQuorumWake", err)
	}
	// Not watching: a signal is left for later.
	c.watch = false
	qw.signal()
	if _, _, err := c.next(); !errors.Is(err, errReadTimeout) {
		t.Fatalf("unwatched read: %v, want errReadTimeout", err)
	}
	// A message split around a signal is read whole.
	c.watch = true
	msg := copyData(xlogData(1000, 10))
	if _, err := peer.Write(msg[:7]); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(20 * time.Millisecond) // the rest after the signal was taken
		_, _ = peer.Write(msg[7:])
	}()
	if _, _, err := c.next(); !errors.Is(err, errQuorumWake) {
		t.Fatalf("read of a split message with a signal waiting: %v, want errQuorumWake", err)
	}
	if typ, body, err := c.next(); err != nil || typ != 'd' || len(body) != len(msg)-5 {
		t.Fatalf("split message: %q %d bytes (%v)", typ, len(body), err)
	}
}
