package integration

import (
	"debug/elf"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"raftgres/config"
)

// The files make package puts down, as the tests check them.
const (
	pkgBinary   = "/usr/bin/raftgres"
	pkgUnit     = "/usr/lib/systemd/system/raftgres.service"
	pkgConfDir  = "/etc/raftgres"
	pkgConfig   = "/etc/raftgres/raftgres.yml"
	pkgStateDir = "/var/lib/raftgres"
)

// exampleConfig is the config the packages install, packaging/raftgres.yml.
func exampleConfig(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "packaging", "raftgres.yml"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// fillExample replaces the example config's placeholders as the install
// guide (docs/install.md) does for pg1 of three hosts.
func fillExample(t testing.TB, example string) string {
	t.Helper()
	filled := strings.NewReplacer(
		"<cluster-name>", "main", "<this-member>", "pg1", "<this-address>", "10.0.0.11",
		"<member1>", "pg1", "<address1>", "10.0.0.11",
		"<member2>", "pg2", "<address2>", "10.0.0.12",
		"<member3>", "pg3", "<address3>", "10.0.0.13",
		"<cluster-token>", "3f6c0e0d9b1a", "<api-password>", "api-pw",
		"<superuser-password>", "super-pw", "<replication-password>", "repl-pw", "<rewind-password>", "rewind-pw",
		"<members-network>", "10.0.0.0/24", "<clients-network>", "10.0.0.0/16",
	).Replace(example)
	if i := strings.Index(filled, "<"); i >= 0 {
		t.Fatalf("a placeholder is left after filling the example: %q", filled[i:min(len(filled), i+40)])
	}
	return filled
}

// TestPackageExampleConfig: the packaged config refuses to load until its
// placeholders are filled (the agent cannot start on it by accident), and
// loads once they are.
func TestPackageExampleConfig(t *testing.T) {
	example := exampleConfig(t)
	if r := config.Check(pkgConfig, []byte(example), 0o600); len(r.Problems) == 0 {
		t.Fatal("the example with its placeholders passes the check; it must not")
	}
	r := config.Check(pkgConfig, []byte(fillExample(t, example)), 0o600)
	if len(r.Problems) > 0 {
		t.Fatalf("the filled example has problems: %v", r.Problems)
	}
	if r.Config.Name != "pg1" || r.Config.DataDir != pkgStateDir || !r.Config.HasPostgres {
		t.Fatalf("filled example: name %q, data_dir %q, postgres %v", r.Config.Name, r.Config.DataDir, r.Config.HasPostgres)
	}
	if len(r.Notes) > 0 {
		t.Errorf("the filled example has notes: %v", r.Notes)
	}
}

// TestPackagePostinstallCreatesOnlyWhatIsMissing runs the install script
// with stand-ins for the system commands: the postgres group and user are
// created only when absent, and nothing is chowned that is not root's.
func TestPackagePostinstallCreatesOnlyWhatIsMissing(t *testing.T) {
	for _, tc := range []struct {
		name      string
		userFound bool
		owner     string // what stat says of /etc/raftgres and its config
		want      []string
		wantNot   []string
	}{
		{name: "fresh host", userFound: false, owner: "0",
			want: []string{"groupadd --system postgres", "useradd --system --gid postgres", "chown postgres:postgres /etc/raftgres"}},
		{name: "postgres exists, files as unpacked", userFound: true, owner: "0",
			want: []string{"chown postgres:postgres /etc/raftgres", "chmod 0750 /etc/raftgres"}, wantNot: []string{"groupadd", "useradd"}},
		{name: "administrator chose the owner", userFound: true, owner: "101",
			wantNot: []string{"groupadd", "useradd", "chown", "chmod"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stubs := t.TempDir()
			calls := filepath.Join(stubs, "calls")
			getent := "exit 2"
			if tc.userFound {
				getent = "exit 0"
			}
			for name, body := range map[string]string{
				"getent": getent, "groupadd": "", "useradd": "", "install": "", "chown": "", "chmod": "",
				"systemctl": "", "stat": "echo " + tc.owner,
			} {
				script := "#!/bin/sh\necho \"" + name + " $*\" >> " + calls + "\n" + body + "\n"
				if err := os.WriteFile(filepath.Join(stubs, name), []byte(script), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			cmd := exec.Command("sh", filepath.Join("..", "packaging", "postinstall.sh"), "configure")
			cmd.Env = []string{"PATH=" + stubs}
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("postinstall: %v\n%s", err, out)
			}
			b, _ := os.ReadFile(calls)
			log := string(b)
			for _, w := range tc.want {
				if !strings.Contains(log, w) {
					t.Errorf("no %q in the commands run:\n%s", w, log)
				}
			}
			for _, w := range tc.wantNot {
				if strings.Contains(log, "\n"+w) || strings.HasPrefix(log, w) {
					t.Errorf("%q run, it must not be:\n%s", w, log)
				}
			}
		})
	}
}

// TestPackageDeb builds the packages (make package), installs the .deb
// with dpkg, runs a 3-member cluster on the installed binary, and checks
// dpkg's remove, upgrade and purge: the config an administrator changed
// survives a remove and an upgrade; a purge deletes what the package put
// down and keeps the Raft state and anything else the package did not
// create. Needs root and dpkg, and a host without raftgres installed: it
// leaves the host as it found it.
func TestPackageDeb(t *testing.T) {
	requireIntegration(t)
	if os.Geteuid() != 0 {
		t.Skip("installs a .deb: needs root")
	}
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("installs a .deb: needs dpkg")
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f", "${db:Status-Status}", "raftgres").Output(); err == nil &&
		string(out) != "not-installed" {
		t.Skipf("raftgres is already on this host (dpkg: %s); this test installs and purges it", out)
	}
	for _, p := range []string{pkgBinary, pkgUnit, pkgConfDir, pkgStateDir} {
		if _, err := os.Lstat(p); err == nil {
			t.Skipf("%s exists on this host; this test would install over it and purge it", p)
		}
	}
	start := time.Now()
	dist := t.TempDir()
	mustRun(t, "..", "make", "-s", "package", "DIST="+dist)
	debs, _ := filepath.Glob(filepath.Join(dist, "*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make package made %d .deb files: %v", len(debs), debs)
	}
	deb := debs[0]
	version := checkDist(t, dist)
	t.Logf("make package: %s", time.Since(start).Round(time.Millisecond))

	t.Cleanup(func() { // whatever happened, the host goes back to how it was
		_ = exec.Command("dpkg", "--purge", "raftgres").Run()
		_ = os.RemoveAll(pkgConfDir)
		_ = os.RemoveAll(pkgStateDir)
	})
	mustRun(t, "", "dpkg", "-i", deb)
	checkOwner(t, pkgConfDir, 0o750, true)
	checkOwner(t, pkgConfig, 0o600, true)
	checkOwner(t, pkgStateDir, 0o700, true)
	checkOwner(t, pkgBinary, 0o755, false)
	if out := strings.TrimSpace(mustRun(t, "", pkgBinary, "version")); !strings.Contains(out, version) {
		t.Errorf("raftgres version: %q, want the Makefile's %s", out, version)
	}
	unit, err := os.ReadFile(pkgUnit)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"ExecStart=/usr/bin/raftgres agent -c /etc/raftgres/raftgres.yml", "User=postgres",
		"Restart=on-failure", "KillMode=mixed", "TimeoutStopSec=60", "ProtectSystem=strict"} {
		if !slices.Contains(strings.Split(string(unit), "\n"), line) {
			t.Errorf("the installed unit has no line %q", line)
		}
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Log("systemd-analyze not found: the unit is not verified")
	} else {
		if out := mustRun(t, "", "systemd-analyze", "verify", pkgUnit); out != "" {
			t.Logf("systemd-analyze verify: %s", out)
		}
	}

	// The shipped config refuses to load until filled; filled, it passes.
	if _, stderr, code := runBinAsAgent(t, pkgBinary, "check-config", "-c", pkgConfig); code != 1 {
		t.Fatalf("check-config of the unfilled config: exit %d, want 1\n%s", code, stderr)
	}
	filled := fillExample(t, exampleConfig(t))
	if err := os.WriteFile(pkgConfig, []byte(filled), 0o600); err != nil {
		t.Fatal(err)
	}
	if stdout, stderr, code := runBinAsAgent(t, pkgBinary, "check-config", "-c", pkgConfig); code != 0 {
		t.Fatalf("check-config of the filled config: exit %d\n%s%s", code, stdout, stderr)
	}

	runInstalledCluster(t)

	// Remove: the binary and the unit go, the changed config stays.
	mustRun(t, "", "dpkg", "-r", "raftgres")
	for _, p := range []string{pkgBinary, pkgUnit} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after dpkg -r: %v, want it gone", p, err)
		}
	}
	if b, err := os.ReadFile(pkgConfig); err != nil || string(b) != filled {
		t.Fatalf("the changed config after dpkg -r: %v (changed content kept: %v)", err, string(b) == filled)
	}
	// Reinstalled, the package keeps the changed config.
	mustRun(t, "", "dpkg", "-i", deb)
	if b, err := os.ReadFile(pkgConfig); err != nil || string(b) != filled {
		t.Fatalf("the changed config after reinstalling: %v (changed content kept: %v)", err, string(b) == filled)
	}

	// Raft state and an administrator's certificate, as a member has.
	adminFile := filepath.Join(pkgConfDir, "ca.pem")
	stateFile := filepath.Join(pkgStateDir, "raft", "raft.db")
	for _, p := range []string{adminFile, stateFile} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("kept\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// An upgrade replaces the binary and keeps the config, its owner and
	// the state.
	newer := t.TempDir()
	mustRun(t, "..", "make", "-s", "package", "DIST="+newer, "VERSION=v99.0.0")
	mustRun(t, "", "dpkg", "-i", filepath.Join(newer, "raftgres_99.0.0-1_"+runtime.GOARCH+".deb"))
	if out := mustRun(t, "", pkgBinary, "version"); !strings.Contains(out, "v99.0.0") {
		t.Errorf("raftgres version after the upgrade: %q", out)
	}
	if b, err := os.ReadFile(pkgConfig); err != nil || string(b) != filled {
		t.Fatalf("the changed config after the upgrade: %v (changed content kept: %v)", err, string(b) == filled)
	}
	checkOwner(t, pkgConfig, 0o600, true)
	for _, p := range []string{adminFile, stateFile} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s after the upgrade: %v", p, err)
		}
	}

	// Purge: the Raft state and the administrator's certificate stay,
	// with their directories; the package's files go.
	out := mustRun(t, "", "dpkg", "--purge", "raftgres")
	if !strings.Contains(out, "kept /var/lib/raftgres") {
		t.Errorf("purge did not say it kept the Raft state:\n%s", out)
	}
	for _, p := range []string{pkgBinary, pkgUnit, pkgConfig} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after dpkg --purge: %v, want it gone", p, err)
		}
	}
	for _, p := range []string{adminFile, stateFile} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s after dpkg --purge: %v, want it kept", p, err)
		}
	}
	if err := exec.Command("id", "postgres").Run(); err != nil {
		t.Errorf("the postgres user after purge: %v", err)
	}
	for _, p := range []string{adminFile, stateFile, filepath.Dir(stateFile), pkgConfDir, pkgStateDir} {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}

	// Purge right after install leaves nothing of the package behind.
	mustRun(t, "", "dpkg", "-i", deb)
	checkOwner(t, pkgConfig, 0o600, true)
	checkOwner(t, pkgStateDir, 0o700, true)
	mustRun(t, "", "dpkg", "--purge", "raftgres")
	for _, p := range []string{pkgBinary, pkgUnit, pkgConfDir, pkgStateDir} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after install and purge: %v, want it gone", p, err)
		}
	}
	t.Logf("package test: %s", time.Since(start).Round(time.Millisecond))
}

// runInstalledCluster starts three members on the installed binary (with
// the harness's configs and free ports, not through systemd) and waits for
// a primary that two replicas stream from and replicate a write of.
func runInstalledCluster(t *testing.T) {
	saved := binPath
	binPath = pkgBinary
	defer func() { binPath = saved }()
	c := newPGCluster(t, 3)
	defer func() {
		for _, n := range c.nodes {
			n.Stop()
		}
	}()
	primary := c.waitPrimary(90*time.Second, c.nodes...)
	c.waitStreaming(primary)
	ctx := ctxT(t, time.Minute)
	if err := pgExec(ctx, primary, "CREATE TABLE probe (id int primary key); INSERT INTO probe VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		waitCount(t, n, 1)
		if exe, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(n.PID()), "exe")); err != nil || exe != pkgBinary {
			t.Errorf("%s runs %q (%v), want %s", n.Name, exe, err, pkgBinary)
		}
	}
}

// checkDist checks make package's other outputs: the .rpm (its file list
// where rpm is installed), the tarball's binary (static) and SHA256SUMS.
// It returns the version the tarball's name gives.
func checkDist(t *testing.T, dist string) string {
	t.Helper()
	rpms, _ := filepath.Glob(filepath.Join(dist, "*.rpm"))
	tars, _ := filepath.Glob(filepath.Join(dist, "*.tar.gz"))
	if len(rpms) != 1 || len(tars) != 1 {
		t.Fatalf("make package made %v and %v, want one .rpm and one .tar.gz", rpms, tars)
	}
	if _, err := exec.LookPath("rpm"); err != nil {
		t.Log("rpm not found: the .rpm's contents are not checked")
	} else {
		list := strings.Fields(mustRun(t, "", "rpm", "-qpl", rpms[0]))
		want := []string{pkgConfDir, pkgConfig, pkgBinary, pkgUnit}
		if !slices.Equal(list, want) {
			t.Errorf("rpm -qpl: %v, want %v", list, want)
		}
		if conf := strings.TrimSpace(mustRun(t, "", "rpm", "-qpc", rpms[0])); conf != pkgConfig {
			t.Errorf("rpm -qpc: %q, want %s", conf, pkgConfig)
		}
	}
	mustRun(t, dist, "sha256sum", "--check", "--strict", "SHA256SUMS")
	sums, _ := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	if n := strings.Count(string(sums), "\n"); n != 3 {
		t.Errorf("SHA256SUMS has %d lines, want 3 (deb, rpm, tarball)", n)
	}
	unpacked := t.TempDir()
	mustRun(t, "", "tar", "-xzf", tars[0], "-C", unpacked)
	bins, _ := filepath.Glob(filepath.Join(unpacked, "*", "raftgres"))
	if len(bins) != 1 {
		t.Fatalf("the tarball holds %v, want one raftgres binary", bins)
	}
	f, err := elf.Open(bins[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("the tarball's binary is dynamically linked")
		}
	}
	name := strings.TrimSuffix(filepath.Base(tars[0]), ".tar.gz")
	return strings.TrimSuffix(strings.TrimPrefix(name, "raftgres-"), "-linux-"+runtime.GOARCH)
}

// checkOwner checks path's mode and that its owner is postgres (or root).
func checkOwner(t *testing.T, path string, mode fs.FileMode, postgres bool) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Error(err)
		return
	}
	st := fi.Sys().(*syscall.Stat_t)
	wantUID := uint32(0)
	if postgres {
		wantUID = agentAs.Uid
	}
	if fi.Mode().Perm() != mode || st.Uid != wantUID {
		t.Errorf("%s: mode %04o owner %d, want %04o owner %d", path, fi.Mode().Perm(), st.Uid, mode, wantUID)
	}
}

// mustRun runs a command in dir (the test's own if empty) and returns its
// output; a failure fails the test.
func mustRun(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader("")
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// runBinAsAgent runs bin as the agents' user.
func runBinAsAgent(t *testing.T, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: agentAs}
	return runCLICmd(t, cmd)
}
