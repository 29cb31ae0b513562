package pgmanager

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"raftgres/internal/boottime"
	"raftgres/internal/testutil"
)

// These tests run a real fence keeper (this test binary, see init in
// fencekeeper_test.go) against a dummy process group; no PostgreSQL.

// maxLate bounds how late after its deadline the keeper may kill: well
// under FenceBudget (500 ms), with room for a loaded test machine.
const maxLate = 250 * time.Millisecond

// testKeeperCmd runs this test binary as a fence keeper.
func testKeeperCmd() *exec.Cmd {
	c := exec.Command(os.Args[0], "-test.run=^$")
	c.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "PGMANAGER_FENCE_AGENT=")
	}), "PGMANAGER_FENCE_KEEPER=1")
	return c
}

// logBuf is a concurrency-safe log sink that can wait for a line.
type logBuf struct{ testutil.SyncBuffer }

// waitLog polls until the log holds want.
func (b *logBuf) wait(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	testutil.WaitFor(t, timeout, fmt.Sprintf("log line %q", want), func() (bool, error) {
		return strings.Contains(b.String(), want), nil
	})
}

var lateRE = regexp.MustCompile(`lease ended at \S+ \((\S+) late\)`)

// keeperLateness reads the lateness the keeper logged for its n-th fire.
func keeperLateness(t *testing.T, log string) []time.Duration {
	t.Helper()
	var ds []time.Duration
	for _, m := range lateRE.FindAllStringSubmatch(log, -1) {
		d, err := time.ParseDuration(m[1])
		if err != nil {
			t.Fatalf("keeper lateness %q: %v", m[1], err)
		}
		ds = append(ds, d)
	}
	return ds
}

func newTestKeeper(t *testing.T) (*keeperClient, *logBuf) {
	t.Helper()
	buf := &logBuf{}
	logger := hclog.New(&hclog.LoggerOptions{Name: "fence-keeper", Level: hclog.Info, Output: io.MultiWriter(buf, testWriter{t})})
	k := newKeeperClient(testKeeperCmd, logger)
	t.Cleanup(k.close)
	return k, buf
}

// dummyGroup stands in for a postmaster: a leader of its own process
// group with two children, one in its group and one that made itself a
// session leader (as every PostgreSQL child does).
type dummyGroup struct {
	pgid  int
	start uint64
	pids  []int      // the leader and its children
	died  chan int64 // CLOCK_BOOTTIME when the leader was reaped
}

func startDummyGroup(t *testing.T) *dummyGroup {
	t.Helper()
	cmd := exec.Command("sh", "-c", "setsid sleep 60 & sleep 60 & exec sleep 60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g := &dummyGroup{pgid: cmd.Process.Pid, died: make(chan int64, 1)}
	t.Cleanup(func() {
		for _, pid := range g.pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		_ = syscall.Kill(-g.pgid, syscall.SIGKILL)
	})
	go func() {
		_ = cmd.Wait()
		g.died <- boottime.Raw()
	}()
	st, err := readProcStat("/proc", g.pgid)
	if err != nil {
		t.Fatal(err)
	}
	g.start = st.Start
	testutil.WaitFor(t, 5*time.Second, "the dummy's two children, one in its own session", func() (bool, error) {
		kids := childrenOf("/proc", g.pgid)
		g.pids = []int{g.pgid}
		own := 0
		for _, c := range kids {
			g.pids = append(g.pids, c.pid)
			if c.pgrp == c.pid {
				own++
			}
		}
		return len(kids) == 2 && own == 1, fmt.Errorf("children %v", kids)
	})
	return g
}

func (g *dummyGroup) alive() []int {
	return slices.DeleteFunc(slices.Clone(g.pids), func(pid int) bool { return !processAlive(pid) })
}

// killedAt waits for the leader to die and every process of the dummy
// to be gone, and returns the leader's time of death.
func (g *dummyGroup) killedAt(t *testing.T, timeout time.Duration) int64 {
	t.Helper()
	var at int64
	select {
	case at = <-g.died:
	case <-time.After(timeout):
		t.Fatalf("dummy postmaster %d not killed within %s", g.pgid, timeout)
	}
	testutil.WaitFor(t, 5*time.Second, "every process of the dummy gone", func() (bool, error) {
		left := g.alive()
		return len(left) == 0, fmt.Errorf("left: %v", left)
	})
	return at
}

// aliveUntil checks that the dummy lives at least until boot-clock time
// until.
func (g *dummyGroup) aliveUntil(t *testing.T, until int64) {
	t.Helper()
	for boottime.Raw() < until {
		select {
		case at := <-g.died:
			t.Fatalf("dummy postmaster %d killed %s before it should have been", g.pgid, time.Duration(until-at))
		case <-time.After(10 * time.Millisecond): // polling interval
		}
	}
	if left := g.alive(); len(left) != len(g.pids) {
		t.Fatalf("dummy has %v alive, want all of %v", left, g.pids)
	}
}

func checkLate(t *testing.T, deadline, at int64) time.Duration {
	t.Helper()
	late := time.Duration(at - deadline)
	if late < 0 || late > maxLate {
		t.Fatalf("killed %s after the deadline, want within [0, %s]", late, maxLate)
	}
	return late
}

func TestFenceKeeperKillsAtDeadline(t *testing.T) {
	k, log := newTestKeeper(t)
	g := startDummyGroup(t)
	k.setTarget(g.pgid, g.start)
	log.wait(t, fmt.Sprintf("postgres runs as pid %d", g.pgid), 10*time.Second)
	deadline := boottime.Raw() + int64(300*time.Millisecond)
	k.setDeadline(deadline)
	late := checkLate(t, deadline, g.killedAt(t, 5*time.Second))
	log.wait(t, fmt.Sprintf("killed postmaster %d and its 2 processes", g.pgid), 5*time.Second)
	t.Logf("group reaped %s after the deadline; keeper's own lateness %v", late, keeperLateness(t, log.String()))
}

func TestFenceKeeperPostponed(t *testing.T) {
	k, log := newTestKeeper(t)
	g := startDummyGroup(t)
	k.setTarget(g.pgid, g.start)
	log.wait(t, fmt.Sprintf("postgres runs as pid %d", g.pgid), 10*time.Second)
	first := boottime.Raw() + int64(300*time.Millisecond)
	k.setDeadline(first)
	second := first + int64(500*time.Millisecond)
	k.setDeadline(second) // a renewal
	g.aliveUntil(t, first+int64(maxLate))
	late := checkLate(t, second, g.killedAt(t, 5*time.Second))
	t.Logf("killed %s after the postponed deadline", late)
}

func TestFenceKeeperDisarmed(t *testing.T) {
	k, log := newTestKeeper(t)
	g := startDummyGroup(t)
	k.setTarget(g.pgid, g.start)
	log.wait(t, fmt.Sprintf("postgres runs as pid %d", g.pgid), 10*time.Second)
	deadline := boottime.Raw() + int64(300*time.Millisecond)
	k.setDeadline(deadline)
	k.setDeadline(0)
	log.wait(t, "disarmed", 5*time.Second)
	g.aliveUntil(t, deadline+int64(2*maxLate))
}

// TestFenceKeeperPipeClosed: the agent dies (its end of the pipe closes)
// while armed: the keeper still kills at the deadline, then exits.
func TestFenceKeeperPipeClosed(t *testing.T) {
	k, log := newTestKeeper(t)
	g := startDummyGroup(t)
	k.setTarget(g.pgid, g.start)
	log.wait(t, fmt.Sprintf("postgres runs as pid %d", g.pgid), 10*time.Second)
	deadline := boottime.Raw() + int64(400*time.Millisecond)
	k.setDeadline(deadline)
	k.mu.Lock()
	p := k.proc
	k.proc = nil // as if the agent were gone: nothing restarts it
	k.mu.Unlock()
	_ = p.w.Close()
	log.wait(t, "keeping the lease end", 5*time.Second)
	late := checkLate(t, deadline, g.killedAt(t, 5*time.Second))
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		t.Fatal("keeper still runs after firing with its pipe closed")
	}
	t.Logf("killed %s after the deadline with the agent's pipe closed", late)
}

// TestFenceKeeperPipeClosedDisarmed: a disarmed keeper exits when the
// pipe closes.
func TestFenceKeeperPipeClosedDisarmed(t *testing.T) {
	k, log := newTestKeeper(t)
	g := startDummyGroup(t)
	k.setTarget(g.pgid, g.start)
	log.wait(t, fmt.Sprintf("postgres runs as pid %d", g.pgid), 10*time.Second)
	k.mu.Lock()
	p := k.proc
	k.proc = nil
	k.mu.Unlock()
	_ = p.w.Close()
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		t.Fatal("disarmed keeper still runs after its pipe closed")
	}
	if left := g.alive(); len(left) != len(g.pids) {
		t.Fatalf("dummy has %v alive, want all of %v", left, g.pids)
	}
}

// TestFenceKeeperRecycledPid: a pid whose start time is not the one the
// keeper was told is another process: it is not killed.
func TestFenceKeeperRecycledPid(t *testing.T) {
	k, log := newTestKeeper(t)
	g := startDummyGroup(t)
	k.setTarget(g.pgid, g.start+1)
	log.wait(t, fmt.Sprintf("postgres runs as pid %d", g.pgid), 10*time.Second)
	deadline := boottime.Raw() + int64(200*time.Millisecond)
	k.setDeadline(deadline)
	log.wait(t, "is another process now", 5*time.Second)
	g.aliveUntil(t, deadline+int64(maxLate))
}

// TestFenceKeeperRestarted: a keeper that dies is replaced and told the
// current state.
func TestFenceKeeperRestarted(t *testing.T) {
	k, log := newTestKeeper(t)
	g := startDummyGroup(t)
	k.setTarget(g.pgid, g.start)
	log.wait(t, fmt.Sprintf("postgres runs as pid %d", g.pgid), 10*time.Second)
	deadline := boottime.Raw() + int64(3*time.Second)
	k.setDeadline(deadline)
	k.mu.Lock()
	first := k.proc
	k.mu.Unlock()
	_ = first.cmd.Process.Kill()
	<-first.done
	testutil.WaitFor(t, 5*time.Second, "a new keeper", func() (bool, error) {
		k.mu.Lock()
		defer k.mu.Unlock()
		return k.proc != nil && k.proc != first, nil
	})
	late := checkLate(t, deadline, g.killedAt(t, 10*time.Second))
	t.Logf("the replacement keeper killed %s after the deadline", late)
}

// With PGMANAGER_FENCE_AGENT="pid start delay-ns", the test binary is a
// stand-in agent: it starts a keeper, tells it to kill the group pid at
// now+delay, says READY and waits, so that the test can SIGSTOP it.
func init() {
	spec := os.Getenv("PGMANAGER_FENCE_AGENT")
	if spec == "" || os.Getenv("PGMANAGER_FENCE_KEEPER") == "1" {
		return
	}
	var pid int
	var start uint64
	var delay int64 // nanoseconds
	if _, err := fmt.Sscan(spec, &pid, &start, &delay); err != nil {
		fmt.Println("ERROR", err)
		os.Exit(2)
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "agent", Output: os.Stderr, Level: hclog.Info})
	k := newKeeperClient(testKeeperCmd, logger.Named("fence-keeper"))
	k.setTarget(pid, start)
	deadline := boottime.Raw() + delay
	k.setDeadline(deadline)
	fmt.Println("READY", deadline)
	select {}
}

// TestFenceKeeperAgentStopped: the agent, stopped with SIGSTOP to its
// whole process group right after arming, does not stop the keeper.
func TestFenceKeeperAgentStopped(t *testing.T) {
	g := startDummyGroup(t)
	agent := exec.Command(os.Args[0], "-test.run=^$")
	agent.Env = append(os.Environ(), fmt.Sprintf("PGMANAGER_FENCE_AGENT=%d %d %d", g.pgid, g.start, time.Second))
	agent.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	agent.Stderr = testWriter{t}
	agent.WaitDelay = 5 * time.Second
	out, err := agent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-agent.Process.Pid, syscall.SIGKILL)
		_ = syscall.Kill(-agent.Process.Pid, syscall.SIGCONT)
		_ = agent.Wait()
	})
	sc := bufio.NewScanner(out)
	var deadline int64
	for sc.Scan() {
		if s, ok := strings.CutPrefix(sc.Text(), "READY "); ok {
			deadline, _ = strconv.ParseInt(s, 10, 64)
			break
		}
	}
	if deadline == 0 {
		t.Fatal("stand-in agent did not get ready")
	}
	if err := syscall.Kill(-agent.Process.Pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "the stand-in agent stopped", func() (bool, error) {
		st, err := readProcStat("/proc", agent.Process.Pid)
		return err == nil && st.State == 'T', err
	})
	if boottime.Raw() >= deadline {
		t.Skip("the machine is too slow: the deadline passed before the agent was stopped")
	}
	late := checkLate(t, deadline, g.killedAt(t, 10*time.Second))
	t.Logf("killed %s after the deadline while the agent was stopped", late)
}

// TestFenceKeeperWedged: a keeper that stops reading (here: stopped) is
// replaced once its pipe is full, each call returns promptly, and the new
// keeper fires at the latest deadline.
func TestFenceKeeperWedged(t *testing.T) {
	k, log := newTestKeeper(t)
	g := startDummyGroup(t)
	k.setTarget(g.pgid, g.start)
	log.wait(t, fmt.Sprintf("postgres runs as pid %d", g.pgid), 10*time.Second)
	k.mu.Lock()
	first := k.proc
	k.mu.Unlock()
	if err := syscall.Kill(first.cmd.Process.Pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Each line is ~40 bytes: 4000 of them overflow a 64 KiB pipe.
	base := boottime.Raw() + int64(time.Hour)
	var slowest time.Duration
	for i := range 4000 {
		begin := time.Now()
		k.setDeadline(base + int64(i))
		slowest = max(slowest, time.Since(begin))
	}
	select {
	case <-first.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the stopped keeper was not replaced")
	}
	if limit := keeperWriteTimeout + time.Second; slowest > limit {
		t.Fatalf("a FenceAt took %s (limit %s)", slowest, limit)
	}
	t.Logf("slowest call %s", slowest)
	deadline := boottime.Raw() + int64(300*time.Millisecond)
	k.setDeadline(deadline)
	late := checkLate(t, deadline, g.killedAt(t, 5*time.Second))
	if !strings.Contains(log.String(), "does not read its pipe: replacing it") {
		t.Error("the replacement was not logged")
	}
	t.Logf("the replacement keeper killed %s after the deadline", late)
}
