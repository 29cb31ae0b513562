package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"raftgres/raftstore"
)

func TestSnapshotExportVerify(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.waitStable(c.nodes, 3)
	follower := c.follower(leader, c.nodes)
	_, v := setConfig(t, leader)
	waitConfigVersion(t, []*Node{follower}, v)
	out := filepath.Join(c.base, "snap.json")
	if _, stderr, code := runCLI(t, "snapshot", "export", "--out", out, "--api", follower.APIURL(), "--token", testToken); code != 0 {
		t.Fatalf("export: exit %d: %s", code, stderr)
	}
	stdout, stderr, code := runCLI(t, "snapshot", "verify", out)
	if code != 0 || !strings.Contains(stdout, "ok (scope itest") {
		t.Fatalf("verify of a fresh export: exit %d: %s %s", code, stdout, stderr)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	e, err := raftstore.VerifyExport(data)
	if err != nil || len(e.Body.Voters) != 3 || len(e.Body.Members) != 3 || e.Body.RaftIndex == 0 || e.Body.Config.Version < 2 {
		t.Fatalf("export body: %+v (%v)", e.Body, err)
	}
	for _, tc := range []struct {
		name string
		edit func([]byte) []byte
		want string
	}{
		{"one byte flipped mid-file", func(b []byte) []byte {
			b = append([]byte{}, b...)
			b[len(b)/2] ^= 0x01
			return b
		}, "snapshot verify"},
		{"truncated", func(b []byte) []byte { return b[:len(b)-20] }, "not a raftgres snapshot export"},
		{"value changed", func(b []byte) []byte {
			return []byte(strings.Replace(string(b), `"scope": "itest"`, `"scope": "other"`, 1))
		}, "digest mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := filepath.Join(c.base, "bad.json")
			if err := os.WriteFile(bad, tc.edit(data), 0o600); err != nil {
				t.Fatal(err)
			}
			_, stderr, code := runCLI(t, "snapshot", "verify", bad)
			if code != 1 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("verify of a modified file: exit %d, stderr %q (want exit 1 mentioning %q)", code, stderr, tc.want)
			}
		})
	}
}

func TestForeignCAPeerCannotJoin(t *testing.T) {
	requireIntegration(t)
	base := baseDir(t)
	caA, caB := newCA(t, base, "cluster-ca"), newCA(t, base, "rogue-ca")
	c := newCluster(t, 3, caA)
	leader := c.waitStable(c.nodes, 3)
	rogue := newNode(t, c.base, "pg9")
	rogue.WriteConfig(NodeOptions{Join: []*Node{c.follower(leader, c.nodes)}, TLS: caB})
	rogue.Start()
	waitFor(t, 30*time.Second, "the rogue agent to give up", func() (bool, error) {
		_, exited := rogue.Exited()
		return exited, nil
	})
	if err, _ := rogue.Exited(); err == nil {
		t.Fatal("rogue agent exited 0")
	}
	if log := rogue.Log(); !strings.Contains(log, "certificate") {
		t.Fatalf("rogue agent's log does not say why (certificate):\n%s", log)
	}
	for _, n := range c.nodes {
		st, err := status(n)
		if err != nil || len(st.Servers) != 3 {
			t.Fatalf("%s servers after the rogue join: %+v (%v)", n.Name, st.Servers, err)
		}
	}
	// The cluster itself still works over mutual TLS.
	_, v := setConfig(t, c.follower(leader, c.nodes))
	waitConfigVersion(t, c.nodes, v)
}

func TestAgentRefusesRootAndOpenPasswordFiles(t *testing.T) {
	requireIntegration(t)
	base := baseDir(t)
	n := newNode(t, base, "pg1")
	n.WriteConfig(NodeOptions{Peers: []*Node{n}})
	if os.Geteuid() == 0 {
		_, stderr, code := runCLI(t, "agent", "-c", n.Config)
		if code != 1 || !strings.Contains(stderr, "must not run as root") {
			t.Fatalf("agent as root: exit %d, stderr %q", code, stderr)
		}
	}
	if err := os.Chmod(n.Config, 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runCLI(t, "leave", "pg2", "-c", n.Config)
	if code == 0 || !strings.Contains(stderr, "chmod 600") {
		t.Fatalf("world-readable config with passwords: exit %d, stderr %q", code, stderr)
	}
}

// BenchmarkRaftLeaderFailover measures, over 5 runs, the time from kill -9
// of the Raft leader to the first command committed through a survivor,
// and the agents' idle RSS. Run with make bench.
func BenchmarkRaftLeaderFailover(b *testing.B) {
	if binPath == "" {
		b.Skip("set RAFTGRES_INTEGRATION=1 (make bench does)")
	}
	bt := b
	c := newCluster(bt, 3, nil)
	var times []time.Duration
	for run := 0; run < 5; run++ {
		leader := c.waitStable(c.nodes, 3)
		var survivor *Node
		for _, n := range c.nodes {
			if n != leader {
				survivor = n
				break
			}
		}
		// The leader's copy: a member restarted by the previous run may
		// still be replaying its log, and its state (config included) is
		// not there yet.
		st, err := leader.Client().Cluster(ctxT(bt, 5*time.Second))
		if err != nil {
			b.Fatal(err)
		}
		cfg := st.Config
		start := time.Now()
		leader.Kill9()
		for {
			cfg.MaximumLagOnFailover++
			res, err := survivor.Client().Apply(ctxT(bt, 2*time.Second),
				raftstore.SetConfig{Config: cfg, PrevVersion: cfg.Version, Actor: "bench", At: time.Now().UTC()})
			if err == nil && res.Err == nil {
				break
			}
			if time.Since(start) > 30*time.Second {
				b.Fatalf("no commit 30s after killing the leader: %v %v", err, res.Err)
			}
			time.Sleep(10 * time.Millisecond) // retry interval of the measuring client
		}
		times = append(times, time.Since(start))
		leader.Start()
	}
	c.waitStable(c.nodes, 3)
	time.Sleep(5 * time.Second) // let the agents idle before reading RSS
	var rss []int
	for _, n := range c.nodes {
		rss = append(rss, vmRSS(b, n.PID()))
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	sort.Ints(rss)
	b.ReportMetric(float64(times[len(times)/2].Milliseconds()), "ms-median")
	b.ReportMetric(float64(times[0].Milliseconds()), "ms-min")
	b.ReportMetric(float64(times[len(times)-1].Milliseconds()), "ms-max")
	b.ReportMetric(float64(rss[len(rss)/2]), "rss-kB")
	fmt.Printf("raft leader kill -9 -> first commit: min %s median %s max %s (5 runs); agent idle RSS median %d kB (%v)\n",
		times[0].Round(time.Millisecond), times[len(times)/2].Round(time.Millisecond), times[len(times)-1].Round(time.Millisecond),
		rss[len(rss)/2], rss)
}

func vmRSS(b *testing.B, pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.Fields(v)[0])
			return kb
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

func TestDemoStartsAndStops(t *testing.T) {
	requireIntegration(t)
	dir := filepath.Join(baseDir(t), "demo")
	// The demo takes three consecutive ports from each base; pick bases
	// whose neighbours are free and that do not overlap.
	var ports [3]int
	for {
		ports = [3]int{freePort(t), freePort(t), freePort(t)}
		ok := true
		for i, p := range ports {
			ok = ok && portsFree(p, 3)
			for _, q := range ports[i+1:] {
				ok = ok && abs(p-q) >= 3
			}
		}
		if ok {
			break
		}
	}
	cmd := exec.Command(binPath, "demo", "--dir", dir, "--raft-port", strconv.Itoa(ports[0]),
		"--api-port", strconv.Itoa(ports[1]), "--pg-port", strconv.Itoa(ports[2]))
	apiPort := ports[1]
	var out strings.Builder
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = io.MultiWriter(&out, pw), &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			t.Logf("[demo] %s", sc.Text())
			if strings.Contains(sc.Text(), "Press Ctrl-C") {
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(120 * time.Second):
		t.Fatalf("demo not ready after 120s:\n%s", out.String())
	}
	for _, want := range []string{"| pg1 ", "| pg2 ", "| pg3 ", "raftgres switchover", "raftgres list"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	if n := strings.Count(out.String(), "| leader  | running |"); n != 1 {
		t.Fatalf("demo shows %d running leaders, want 1:\n%s", n, out.String())
	}
	if n := strings.Count(out.String(), "| replica | running |"); n != 2 {
		t.Fatalf("demo shows %d running replicas, want 2:\n%s", n, out.String())
	}
	_ = cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("demo exit after Ctrl-C: %v\n%s", err, out.String())
	}
	_ = pw.Close()
	if _, err := os.Stat(filepath.Join(dir, "pg1.yml")); err != nil {
		t.Fatalf("demo removed its directory without --cleanup: %v", err)
	}
	waitFor(t, 10*time.Second, "demo agents gone", func() (bool, error) { return portsFree(apiPort, 3), nil })
}

func portsFree(base, n int) bool {
	for p := base; p < base+n; p++ {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			return false
		}
		_ = ln.Close()
	}
	return true
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
