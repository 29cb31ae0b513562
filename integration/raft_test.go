package integration

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
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
	if code != 0 || !strings.Contains(stdout, "digest ok, unsigned") || !strings.Contains(stdout, "scope itest") {
		t.Fatalf("verify of a fresh export: exit %d: %s %s", code, stdout, stderr)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	e, err := raftstore.VerifyExport(data, nil)
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
		{"truncated", func(b []byte) []byte { return b[:len(b)-20] }, "truncated or malformed export: truncated"},
		{"value changed", func(b []byte) []byte {
			return []byte(strings.Replace(string(b), `"scope": "itest"`, `"scope": "other"`, 1))
		}, "export body modified"},
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

// TestSignedSnapshotExport: agents with raft.audit_key_file sign
// the exports they serve; `snapshot verify --pubkey` accepts one with the
// right public key and refuses, exit 1 with the reason, a modified body, a
// file checked against another key and a truncated copy. An agent whose
// key is readable by its group refuses to start.
func TestSignedSnapshotExport(t *testing.T) {
	requireIntegration(t)
	keys := baseDir(t)
	prefix, otherPrefix := filepath.Join(keys, "audit"), filepath.Join(keys, "other")
	// The agents' user makes the key, so it owns it (mode 0600).
	if stdout, stderr, code := runCLIAsAgent(t, "snapshot", "keygen", "--out", prefix); code != 0 {
		t.Fatalf("keygen: exit %d: %s %s", code, stdout, stderr)
	}
	if _, stderr, code := runCLI(t, "snapshot", "keygen", "--out", otherPrefix); code != 0 {
		t.Fatalf("keygen other: exit %d: %s", code, stderr)
	}
	keyID, otherID := pubKeyID(t, prefix+".pub"), pubKeyID(t, otherPrefix+".pub")

	c := startCluster(t, 3, func(_ *Node, all []*Node) NodeOptions {
		return NodeOptions{Peers: all, Raft: "audit_key_file: " + prefix + ".key"}
	})
	leader := c.waitStable(c.nodes, 3)
	follower := c.follower(leader, c.nodes)
	out := filepath.Join(c.base, "signed.json")
	stdout, stderr, code := runCLI(t, "snapshot", "export", "--out", out, "--api", follower.APIURL(), "--token", testToken)
	if code != 0 || !strings.Contains(stdout, "signed by key "+keyID) {
		t.Fatalf("export: exit %d: %s %s", code, stdout, stderr)
	}
	stdout, stderr, code = runCLI(t, "snapshot", "verify", "--pubkey", prefix+".pub", out)
	want := "ok, signature verified: signed by key " + keyID + "; scope itest, raft index "
	if code != 0 || !strings.Contains(stdout, want) || !strings.Contains(stdout, "exported by "+follower.Name) {
		t.Fatalf("verify with the right key: exit %d: %s %s (want %q)", code, stdout, stderr, want)
	}
	t.Logf("verify: %s", stdout)
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := raftstore.ParseAuditPublicKey(mustRead(t, prefix+".pub"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := raftstore.VerifyExport(data, pub)
	if err != nil || !e.Verified || e.Body.RaftIndex == 0 || e.Body.RaftTerm == 0 || len(e.Body.Voters) != 3 {
		t.Fatalf("export: %+v (%v)", e, err)
	}
	st, err := status(follower)
	if err != nil || e.Body.RaftIndex > st.AppliedIndex || e.Body.RaftTerm > st.Term {
		t.Fatalf("signed index %d term %d, the follower is at %d term %d (%v)", e.Body.RaftIndex, e.Body.RaftTerm, st.AppliedIndex, st.Term, err)
	}
	if !strings.Contains(stdout, fmt.Sprintf("raft index %d, term %d", e.Body.RaftIndex, e.Body.RaftTerm)) {
		t.Fatalf("verify does not print the signed index and term: %s", stdout)
	}

	by := `"exported_by": "` + follower.Name + `"`
	for _, tc := range []struct {
		name   string
		file   []byte
		pubkey string
		want   string
	}{
		{"one byte flipped in the body", flipIn(t, data, by), prefix + ".pub",
			"export body modified: the body does not match its SHA-256 digest"},
		{"one byte flipped, digest recomputed", redigest(t, flipIn(t, data, by)), prefix + ".pub",
			"export body modified: the signature by key " + keyID + " does not match the body"},
		{"another key", data, otherPrefix + ".pub",
			"export signed by another key: signed by key " + keyID + ", not by " + otherID},
		{"truncated", data[:len(data)*2/3], prefix + ".pub", "truncated or malformed export: truncated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := filepath.Join(c.base, "bad.json")
			if err := os.WriteFile(bad, tc.file, 0o600); err != nil {
				t.Fatal(err)
			}
			stdout, stderr, code := runCLI(t, "snapshot", "verify", "--pubkey", tc.pubkey, bad)
			if code != 1 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stdout %q stderr %q (want exit 1 mentioning %q)", code, stdout, stderr, tc.want)
			}
			t.Logf("verify: %s", stderr)
		})
	}

	t.Run("group-readable key refused", func(t *testing.T) {
		loose := filepath.Join(keys, "loose")
		if _, stderr, code := runCLIAsAgent(t, "snapshot", "keygen", "--out", loose); code != 0 {
			t.Fatalf("keygen: %s", stderr)
		}
		if err := os.Chmod(loose+".key", 0o640); err != nil {
			t.Fatal(err)
		}
		n := newNode(t, c.base, "pg9")
		n.WriteConfig(NodeOptions{Join: []*Node{leader}, Raft: "audit_key_file: " + loose + ".key"})
		n.Start()
		waitFor(t, 20*time.Second, "the agent with a group-readable key to exit", func() (bool, error) {
			_, exited := n.Exited()
			return exited, nil
		})
		want := "audit key " + loose + ".key is readable by group or others (mode 0640): run chmod 600"
		if log := n.Log(); !strings.Contains(log, want) || strings.Contains(log, string(mustRead(t, loose+".key")[30:60])) {
			t.Fatalf("agent log does not say %q (or leaks the key):\n%s", want, log)
		}
	})
}

func pubKeyID(t *testing.T, path string) string {
	t.Helper()
	pub, err := raftstore.ParseAuditPublicKey(mustRead(t, path))
	if err != nil {
		t.Fatal(err)
	}
	return raftstore.KeyID(pub)
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// flipIn flips the low bit of the last byte of the first occurrence of s
// (a digit or letter inside a JSON string).
func flipIn(t *testing.T, b []byte, s string) []byte {
	t.Helper()
	i := strings.Index(string(b), s)
	if i < 0 {
		t.Fatalf("%q not in the export", s)
	}
	out := append([]byte{}, b...)
	out[i+len(s)-2] ^= 0x01
	return out
}

// redigest recomputes the body's SHA-256 in a format 2 export, as someone
// who edits the file would.
func redigest(t *testing.T, b []byte) []byte {
	t.Helper()
	s := string(b)
	i := strings.Index(s, "\n  \"body\": ")
	j := strings.Index(s, `"sha256": "`)
	if i < 0 || j < 0 {
		t.Fatal("not a format 2 export")
	}
	sum := sha256.Sum256([]byte(s[i+len("\n  \"body\": ") : len(s)-len("\n}\n")]))
	j += len(`"sha256": "`)
	return []byte(s[:j] + hex.EncodeToString(sum[:]) + s[j+64:])
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
	if n := strings.Count(out.String(), "| Leader  | running |"); n != 1 {
		t.Fatalf("demo shows %d running leaders, want 1:\n%s", n, out.String())
	}
	if n := strings.Count(out.String(), "| Replica | running |"); n != 2 {
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
