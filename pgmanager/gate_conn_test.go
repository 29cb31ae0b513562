package pgmanager

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"golang.org/x/sys/unix"
)

// socketPair is a gateConn and the walsender's end of its socket.
func socketPair(t *testing.T) (*gateConn, *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	c := &gateConn{fd: fds[0], buf: make([]byte, gateReadBuf)}
	peer := os.NewFile(uintptr(fds[1]), "walsender")
	t.Cleanup(func() { c.close(); _ = peer.Close() })
	return c, peer
}

func copyData(payload []byte) []byte {
	b := []byte{'d', 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(4+len(payload)))
	return append(b, payload...)
}

func TestGateConnReadsWholeMessages(t *testing.T) {
	t.Parallel()
	c, peer := socketPair(t)
	if err := c.setReadTimeout(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte{7}, 3*gateReadBuf) // larger than the buffer
	var stream []byte
	msgs := [][]byte{xlogData(1000, 10), keepalive(1010, true), big, xlogData(1010, 0)}
	for _, m := range msgs {
		stream = append(stream, copyData(m)...)
	}
	go func() {
		// In pieces: a header split, a body split, the rest at once.
		for _, cut := range [][2]int{{0, 3}, {3, 20}, {20, 40}, {40, len(stream)}} {
			if _, err := peer.Write(stream[cut[0]:cut[1]]); err != nil {
				return
			}
		}
	}()
	for i, want := range msgs {
		typ, body, err := c.next()
		if err != nil || typ != 'd' || !bytes.Equal(body, want) {
			t.Fatalf("message %d: %q %d bytes (%v), want 'd' %d bytes", i, typ, len(body), err, len(want))
		}
	}
	if c.buffered() {
		t.Fatal("bytes left over")
	}
}

func TestGateConnTimeoutAndShutdown(t *testing.T) {
	t.Parallel()
	c, _ := socketPair(t)
	if err := c.setReadTimeout(20 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, _, err := c.next(); !errors.Is(err, errReadTimeout) {
		t.Fatalf("idle read: %v, want errReadTimeout", err)
	}
	if took := time.Since(start); took < 20*time.Millisecond || took > 5*time.Second {
		t.Fatalf("idle read returned after %s", took)
	}
	if err := c.setReadTimeout(time.Hour); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, _, err := c.next(); done <- err }()
	c.shutdown()
	select {
	case err := <-done:
		if err != io.EOF {
			t.Fatalf("read after shutdown: %v, want io.EOF", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown did not end a blocked read")
	}
}

func TestGateConnMalformedLength(t *testing.T) {
	t.Parallel()
	c, peer := socketPair(t)
	if _, err := peer.Write([]byte{'d', 0, 0, 0, 2}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.next(); !errors.Is(err, errGateMessage) {
		t.Fatalf("length 2: %v, want errGateMessage", err)
	}
}

func TestGateConnSendStatus(t *testing.T) {
	t.Parallel()
	c, peer := socketPair(t)
	now := time.Date(2026, 12, 6, 12, 0, 0, 123456000, time.UTC)
	if err := c.sendStatus(0x16_B374D848, now); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, gateStatusLen)
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatal(err)
	}
	want := []byte{'d', 0, 0, 0, 38, 'r'}
	for range 3 {
		want = binary.BigEndian.AppendUint64(want, 0x16_B374D848)
	}
	want = binary.BigEndian.AppendUint64(want, uint64(now.Sub(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).Microseconds()))
	want = append(want, 0)
	if !bytes.Equal(got, want) {
		t.Fatalf("status update\n got %x\nwant %x", got, want)
	}
	if got[5] != pglogrepl.StandbyStatusUpdateByteID {
		t.Fatal("not a standby status update")
	}
}
