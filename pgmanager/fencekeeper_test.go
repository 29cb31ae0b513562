package pgmanager

import (
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"raftgres/internal/testutil"
	"raftgres/internal/vip"
)

// With PGMANAGER_FENCE_KEEPER=1 the test binary is a fence keeper (the
// agent's `raftgres fence-keeper`); init runs before TestMain.
func init() {
	if os.Getenv("PGMANAGER_FENCE_KEEPER") == "1" {
		os.Exit(FenceKeeperMain(vip.Config{}))
	}
}

func TestParseFenceLine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		line string
		want fenceState
		err  string // substring; "" for success
	}{
		{name: "armed", line: "fence 4242 123456 987654321", want: fenceState{Pid: 4242, Start: 123456, Deadline: 987654321}},
		{name: "disarmed", line: "fence 4242 123456 0", want: fenceState{Pid: 4242, Start: 123456}},
		{name: "no postmaster, armed", line: "fence 0 0 5", want: fenceState{Deadline: 5}},
		{name: "nothing", line: "fence 0 0 0", want: fenceState{}},
		{name: "largest values", line: "fence 4194304 18446744073709551615 9223372036854775807",
			want: fenceState{Pid: 4194304, Start: math.MaxUint64, Deadline: math.MaxInt64}},
		{name: "pid 1", line: "fence 1 5 5", err: "pid 1"},
		{name: "pid too large", line: "fence 4194305 5 5", err: "out of range"},
		{name: "deadline overflows int64", line: "fence 2 5 9223372036854775808", err: "out of range"},
		{name: "start overflows uint64", line: "fence 2 18446744073709551616 5", err: "out of range"},
		{name: "negative deadline", line: "fence 2 5 -1", err: "not a number"},
		{name: "plus sign", line: "fence 2 5 +1", err: "not a number"},
		{name: "leading zero", line: "fence 02 5 1", err: "leading zero"},
		{name: "start without pid", line: "fence 0 5 1", err: "without a pid"},
		{name: "pid without start", line: "fence 7 0 1", err: "without its start"},
		{name: "two spaces", line: "fence 2  5 1", err: "want"},
		{name: "trailing space", line: "fence 2 5 1 ", err: "want"},
		{name: "carriage return", line: "fence 2 5 1\r", err: "not a number"},
		{name: "tab", line: "fence\t2 5 1", err: "want"},
		{name: "other verb", line: "Fence 2 5 1", err: "want"},
		{name: "missing field", line: "fence 2 5", err: "want"},
		{name: "empty", line: "", err: "want"},
		{name: "too long", line: "fence 2 5 " + strings.Repeat("1", 80), err: "bytes"},
		{name: "hex", line: "fence 0x2 5 1", err: "leading zero"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseFenceLine([]byte(tc.line))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("parseFenceLine(%q) = %+v, %v; want an error with %q", tc.line, got, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseFenceLine(%q): %v", tc.line, err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("parseFenceLine(%q) (-want +got):\n%s", tc.line, diff)
			}
			if enc := got.line(); enc != tc.line+"\n" {
				t.Fatalf("encoding gives %q, want %q", enc, tc.line+"\n")
			}
		})
	}
}

// FuzzParseFenceLine: the decoder never panics, accepts only what the
// encoder writes (so that two agents can never disagree on a line), and
// never yields pid 1 or a negative pid or deadline.
func FuzzParseFenceLine(f *testing.F) {
	for _, s := range []string{"fence 4242 123456 987654321", "fence 0 0 0", "fence 1 1 1", "fence 2 5 -1",
		"fence 4194304 18446744073709551615 9223372036854775807", "fence 02 5 1", "fence 2  5 1", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		s, err := parseFenceLine(line)
		if err != nil {
			return
		}
		if enc := s.line(); enc != string(line)+"\n" {
			t.Fatalf("accepted %q but encodes it as %q", line, enc)
		}
		if s.Pid < 0 || s.Pid == 1 || s.Pid > maxPid || s.Deadline < 0 || (s.Pid == 0) != (s.Start == 0) {
			t.Fatalf("accepted %q as %+v", line, s)
		}
	})
}

// FuzzFenceDecoder: the stream decoder gives back exactly the lines
// written, however the pipe cuts them, and on arbitrary bytes never
// panics and yields only states whose lines were in the input, in order.
func FuzzFenceDecoder(f *testing.F) {
	f.Add([]byte("fence 4242 123456 987654321\nfence 0 0 0\n"), uint8(5))
	f.Add([]byte("fence 2 5 1\nfence 2 5 x\nfence 3 5 1\n"), uint8(1))
	f.Add([]byte(strings.Repeat("1", 100)), uint8(7))
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		n := int(chunk%16) + 1
		var d fenceDecoder
		var got []fenceState
		var err error
		for i := 0; i < len(in) && err == nil; i += n {
			var s []fenceState
			s, err = d.feed(in[i:min(i+n, len(in))])
			got = append(got, s...)
		}
		var want strings.Builder
		for _, s := range got {
			want.WriteString(s.line())
		}
		if !strings.HasPrefix(string(in), want.String()) {
			t.Fatalf("decoded %q from %q", want.String(), in)
		}
		if err == nil && strings.Count(string(in), "\n") != len(got) {
			t.Fatalf("%d lines decoded from %q without an error", len(got), in)
		}
	})
}

func TestFenceDecoderChunks(t *testing.T) {
	t.Parallel()
	lines := "fence 4242 123456 987654321\nfence 4242 123456 0\nfence 0 0 0\n"
	for n := 1; n <= len(lines); n++ {
		var d fenceDecoder
		var got []fenceState
		for i := 0; i < len(lines); i += n {
			s, err := d.feed([]byte(lines[i:min(i+n, len(lines))]))
			if err != nil {
				t.Fatalf("chunks of %d: %v", n, err)
			}
			got = append(got, s...)
		}
		want := []fenceState{{Pid: 4242, Start: 123456, Deadline: 987654321}, {Pid: 4242, Start: 123456}, {}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("chunks of %d (-want +got):\n%s", n, diff)
		}
	}
	var d fenceDecoder
	if _, err := d.feed([]byte(strings.Repeat("1", maxFenceLine+1))); err == nil {
		t.Fatal("a line without end was accepted")
	}
}

func TestKeeperNext(t *testing.T) {
	t.Parallel()
	pg := fenceState{Pid: 100, Start: 7}
	armed := func(d int64) fenceState { s := pg; s.Deadline = d; return s }
	for _, tc := range []struct {
		name   string
		s      fenceState
		now    int64
		closed bool
		want   keeperAction
	}{
		{name: "disarmed waits", s: pg, now: 1000, want: keeperWait},
		{name: "before the deadline", s: armed(1000), now: 999, want: keeperWait},
		{name: "at the deadline", s: armed(1000), now: 1000, want: keeperFire},
		{name: "after the deadline", s: armed(1000), now: 5000, want: keeperFire},
		{name: "pipe closed while armed keeps waiting", s: armed(1000), now: 10, closed: true, want: keeperWait},
		{name: "pipe closed, deadline reached", s: armed(1000), now: 1000, closed: true, want: keeperFire},
		{name: "pipe closed while disarmed exits", s: pg, now: 10, closed: true, want: keeperExit},
		{name: "armed without a postmaster still fires", s: fenceState{Deadline: 5}, now: 5, want: keeperFire},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := keeperNext(tc.s, tc.now, tc.closed); got != tc.want {
				t.Fatalf("keeperNext(%+v, %d, %v) = %d, want %d", tc.s, tc.now, tc.closed, got, tc.want)
			}
		})
	}
}

// TestKeeperScript replays lines, clock readings and the end of the pipe
// through the keeper's decisions, as its loop does.
func TestKeeperScript(t *testing.T) {
	t.Parallel()
	type step struct {
		now  int64
		line string // applied before deciding; "EOF" closes the pipe
		want keeperAction
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{name: "fires at the deadline once", steps: []step{
			{now: 0, line: "fence 100 7 1000", want: keeperWait},
			{now: 999, want: keeperWait},
			{now: 1000, want: keeperFire},
			{now: 1001, want: keeperWait},
		}},
		{name: "a later line moves the deadline", steps: []step{
			{now: 0, line: "fence 100 7 1000", want: keeperWait},
			{now: 900, line: "fence 100 7 2000", want: keeperWait},
			{now: 1500, want: keeperWait},
			{now: 2000, want: keeperFire},
		}},
		{name: "disarm prevents it", steps: []step{
			{now: 0, line: "fence 100 7 1000", want: keeperWait},
			{now: 900, line: "fence 100 7 0", want: keeperWait},
			{now: 5000, want: keeperWait},
		}},
		{name: "agent gone while armed: fire, then exit", steps: []step{
			{now: 0, line: "fence 100 7 1000", want: keeperWait},
			{now: 10, line: "EOF", want: keeperWait},
			{now: 1000, want: keeperFire},
			{now: 1001, want: keeperExit},
		}},
		{name: "agent gone while disarmed: exit at once", steps: []step{
			{now: 0, line: "fence 100 7 0", want: keeperWait},
			{now: 10, line: "EOF", want: keeperExit},
		}},
		{name: "a bad line ends the input but keeps the deadline", steps: []step{
			{now: 0, line: "fence 100 7 1000", want: keeperWait},
			{now: 10, line: "fence 100 7 0 junk", want: keeperWait},
			{now: 1000, want: keeperFire},
			{now: 1001, want: keeperExit},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s fenceState
			closed := false
			for i, st := range tc.steps {
				switch {
				case st.line == "EOF":
					closed = true
				case st.line != "" && !closed:
					ns, err := parseFenceLine([]byte(st.line))
					if err != nil {
						closed = true // as keeper.readInput
					} else {
						s = ns
					}
				}
				got := keeperNext(s, st.now, closed)
				if got != st.want {
					t.Fatalf("step %d (now %d, line %q): %d, want %d", i, st.now, st.line, got, st.want)
				}
				if got == keeperFire {
					s.Deadline = 0
				}
			}
		})
	}
}

func TestFenceVictim(t *testing.T) {
	t.Parallel()
	s := fenceState{Pid: 100, Start: 7, Deadline: 1}
	for _, tc := range []struct {
		name string
		s    fenceState
		st   procStat
		gone bool
		want fenceAction
		why  string
	}{
		{name: "the postmaster", s: s, st: procStat{State: 'S', Pgrp: 100, Start: 7}, want: fenceTree, why: "killed postmaster 100"},
		{name: "a stopped postmaster", s: s, st: procStat{State: 'T', Pgrp: 100, Start: 7}, want: fenceTree},
		{name: "a zombie postmaster (its agent is stopped)", s: s, st: procStat{State: 'Z', Pgrp: 100, Start: 7}, want: fenceTree},
		{name: "recycled pid", s: s, st: procStat{State: 'S', Pgrp: 100, Start: 8}, want: fenceNothing, why: "another process"},
		{name: "postmaster gone: what is left of its group", s: s, gone: true, want: fenceGroup, why: "already gone"},
		{name: "no postmaster", s: fenceState{Deadline: 1}, want: fenceNothing, why: "no postgres"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, why := fenceVictim(tc.s, tc.st, tc.gone)
			if got != tc.want || !strings.Contains(why, tc.why) {
				t.Fatalf("fenceVictim = %d, %q; want %d, %q", got, why, tc.want, tc.why)
			}
		})
	}
}

func TestParseProcStat(t *testing.T) {
	t.Parallel()
	// comm may hold spaces and parentheses.
	line := "4242 (postgres: a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10\n"
	got, err := parseProcStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if want := (procStat{State: 'S', Ppid: 1, Pgrp: 4242, Start: 987654}); got != want {
		t.Fatalf("parseProcStat = %+v, want %+v", got, want)
	}
	for _, bad := range []string{"", "4242 (x", "4242 (x) S 1 2", "4242 (x) S 1 x 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19"} {
		if _, err := parseProcStat([]byte(bad)); err == nil {
			t.Errorf("parseProcStat(%q) accepted", bad)
		}
	}
	// This process's own entry parses and leads nothing in particular.
	self, err := readProcStat("/proc", os.Getpid())
	if err != nil || self.Start == 0 || self.State == 0 {
		t.Fatalf("own /proc stat: %+v, %v", self, err)
	}
}

func TestPidFileShm(t *testing.T) {
	t.Parallel()
	data := "4242\n/data\n1700000000\n5432\n/run\n*\n  5432001    327691\nready   \n"
	if got, ok := pidFileShm([]byte(data)); !ok || got != (shmSegment{key: 5432001, id: 327691}) {
		t.Fatalf("pidFileShm = %+v, %v; want key 5432001, id 327691", got, ok)
	}
	for _, bad := range []string{"", "4242\n/data\n", "4242\n/data\n1\n2\n3\n4\n5432001\n", "1\n2\n3\n4\n5\n6\nx 5\n", "1\n2\n3\n4\n5\n6\n5 -1\n"} {
		if got, ok := pidFileShm([]byte(bad)); ok {
			t.Errorf("pidFileShm(%q) = %+v", bad, got)
		}
	}
	if n := (shmSegment{key: 1, id: 1 << 30}).attached(); n != 0 {
		t.Fatalf("a segment that does not exist has %d attached", n)
	}
}

func TestChildrenOf(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	stat := func(pid, ppid, pgrp, state string) {
		dir := filepath.Join(root, pid)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		line := pid + " (postgres) " + state + " " + ppid + " " + pgrp + " 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 555 0 0\n"
		if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(line), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stat("200", "1", "200", "T")   // the postmaster, stopped
	stat("201", "200", "201", "S") // a backend: its own group (setsid)
	stat("202", "200", "202", "D") // one in uninterruptible sleep
	stat("203", "200", "203", "Z") // a zombie: holds nothing
	stat("204", "300", "204", "S") // another parent's
	if err := os.MkdirAll(filepath.Join(root, "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	want := []child{{201, 201}, {202, 202}}
	if got := childrenOf(root, 200); !cmp.Equal(got, want, cmp.AllowUnexported(child{})) {
		t.Fatalf("childrenOf = %v, want %v", got, want)
	}
}

// The keeper removes the VIP whenever it fires, after the kill, and says
// so; a failed removal is an error line.
func TestFenceKeeperFireRemovesTheVIP(t *testing.T) {
	t.Parallel()
	for _, fail := range []bool{false, true} {
		var out testutil.SyncBuffer
		var calls int
		k := &keeper{log: newKeeperLog(&out, nil), procRoot: t.TempDir(), s: fenceState{Deadline: 5}, vip: "10.0.0.10/24 on eth0",
			removeVIP: func() error {
				calls++
				if fail {
					return os.ErrPermission
				}
				return nil
			}}
		k.fire(7)
		k.log.close(time.Second)
		if calls != 1 || k.s.armed() {
			t.Errorf("fail=%v: %d removals, armed %v; want 1 and disarmed", fail, calls, k.s.armed())
		}
		want := "INFO lease ended at"
		if fail {
			want = "ERROR lease ended at"
		}
		if got := out.String(); !strings.HasPrefix(got, want) || !strings.Contains(got, "vip 10.0.0.10/24 on eth0") {
			t.Errorf("fail=%v: logged %q", fail, got)
		}
	}
}

func TestSelfFenceKeeperWithVIPNamesIt(t *testing.T) {
	t.Parallel()
	v := vip.Config{Address: netip.MustParsePrefix("10.0.0.10/24"), Interface: "eth0"}
	c := SelfFenceKeeperWithVIP(v)()
	want := []string{"raftgres", FenceKeeperCommand, "--vip", "10.0.0.10/24", "--vip-interface", "eth0"}
	if diff := cmp.Diff(want, c.Args); diff != "" {
		t.Errorf("args (-want +got):\n%s", diff)
	}
	if os.Geteuid() != 0 && (c.SysProcAttr == nil || len(c.SysProcAttr.AmbientCaps) != 1) {
		t.Errorf("a non-root agent's keeper gets no ambient CAP_NET_ADMIN: %+v", c.SysProcAttr)
	}
}
