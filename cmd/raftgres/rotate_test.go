package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"raftgres/pgmanager"
)

// runApp runs the CLI with args and stdin, returning stdout, stderr and
// the error.
// newSecret is a new password that passes the password rule.
const newSecret = "Rot4ted-pw"

func runAppStdin(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	app := newApp()
	var out, errOut bytes.Buffer
	app.Reader, app.Writer, app.ErrWriter = strings.NewReader(stdin), &out, &errOut
	app.ExitErrHandler = func(*cli.Context, error) {} // no os.Exit
	err := app.Run(hoistFlags(app, append([]string{"raftgres"}, args...)))
	return out.String(), errOut.String(), err
}

func TestRotatePasswordNeverFromArgv(t *testing.T) {
	out, _, err := runAppStdin(t, "", "rotate-password", "--help")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "never taken from the\n   command line") || !strings.Contains(out, "--password-file FILE") {
		t.Fatalf("--help does not say the password never comes from the command line:\n%s", out)
	}
	for _, args := range [][]string{
		{"rotate-password", "replication", "--password", newSecret, "--api", "127.0.0.1:1"},
		{"rotate-password", "replication", "--password=" + newSecret, "--api", "127.0.0.1:1"},
		{"rotate-password", "replication", "-p", newSecret, "--api", "127.0.0.1:1"},
	} {
		_, _, err := runAppStdin(t, "", args...)
		if err == nil || !strings.Contains(err.Error(), "flag provided but not defined") {
			t.Errorf("%v: %v, want an unknown flag", args, err)
		}
	}
	_, _, err = runAppStdin(t, "", "rotate-password", "replication", newSecret, "--api", "127.0.0.1:1")
	if err == nil || !strings.Contains(err.Error(), "never an argument") {
		t.Fatalf("a password as a second argument: %v", err)
	}
	if strings.Contains(err.Error(), newSecret) {
		t.Fatalf("the error repeats the argument: %v", err)
	}
}

func TestRotatePasswordReadsStdin(t *testing.T) {
	for _, tc := range []struct {
		name, stdin, want string
	}{
		{"empty", "", "no password on standard input"},
		{"empty line", "\n", "no password on standard input"},
		{"control character", "a\x07b\n", "printable ASCII"},
		{"non-ascii", "pässwort\n", "printable ASCII"},
		{"trailing space", "secret \n", "space"},
		{"too long", strings.Repeat("x", 2000), "longer than"},
		{"bad role", "", "unknown role"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			role := "replication"
			if tc.name == "bad role" {
				role = "app_user"
			}
			_, _, err := runAppStdin(t, tc.stdin, "rotate-password", role, "--api", "127.0.0.1:1")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	// A good line gets past reading: the next failure is the cluster.
	_, _, err := runAppStdin(t, newSecret+"\r\nignored\n", "rotate-password", "replication", "--api", "127.0.0.1:1")
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("a good password on stdin: %v", err)
	}
}

func TestReadSecretFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content, want, errWant string
		mode                         os.FileMode
		warn                         bool
	}{
		{name: "one line", content: newSecret + "\n", want: newSecret},
		{name: "no newline", content: newSecret, want: newSecret},
		{name: "crlf", content: newSecret + "\r\n", want: newSecret},
		{name: "empty lines after", content: newSecret + "\n\n", want: newSecret},
		{name: "inner spaces and symbols", content: `a b:c\d'e"f#g` + "\n", want: `a b:c\d'e"f#g`},
		{name: "empty", content: "", errWant: "first line is empty"},
		{name: "empty first line", content: "\n" + newSecret + "\n", errWant: "more than one line"},
		{name: "two lines", content: newSecret + "\nsecond\n", errWant: "more than one line"},
		{name: "tab", content: "a\tb\n", errWant: "printable ASCII"},
		{name: "utf-8", content: "pässwort\n", errWant: "printable ASCII"},
		{name: "leading space", content: " " + newSecret + "\n", errWant: "space"},
		{name: "too long", content: strings.Repeat("x", 1025), errWant: "longer than"},
		{name: "readable by others", content: newSecret + "\n", want: newSecret, mode: 0o644, warn: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			mode := tc.mode
			if mode == 0 {
				mode = 0o600
			}
			if err := os.WriteFile(path, []byte(tc.content), mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			var warn bytes.Buffer
			got, err := readSecretFile(path, &warn)
			if tc.errWant != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errWant) {
					t.Fatalf("error %v, want %q", err, tc.errWant)
				}
				if strings.Contains(err.Error(), strings.TrimSpace(tc.content)) && strings.TrimSpace(tc.content) != "" {
					t.Fatalf("the error shows the file's content: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Reveal() != tc.want {
				t.Fatalf("read %q, want %q", got.Reveal(), tc.want)
			}
			if (warn.Len() > 0) != tc.warn {
				t.Fatalf("warning %q, want one: %v", warn.String(), tc.warn)
			}
		})
	}
	if _, err := readSecretFile(filepath.Join(dir, "missing"), &bytes.Buffer{}); err == nil {
		t.Fatal("a missing file was read")
	}
}

// openPty returns a pseudo-terminal pair (master, slave).
func openPty(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { _ = master.Close() })
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetUint32(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Skipf("pty number: %v", err)
	}
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("open pty slave: %v", err)
	}
	t.Cleanup(func() { _ = slave.Close() })
	return master, slave
}

// typist records the prompts and types on the first one.
type typist struct {
	b     bytes.Buffer
	type_ func()
}

func (p *typist) Write(b []byte) (int, error) {
	if p.b.Len() == 0 {
		defer p.type_()
	}
	return p.b.Write(b)
}

func TestReadSecretTerminal(t *testing.T) {
	for _, tc := range []struct {
		name, typed, want, errWant string
	}{
		{"same twice", newSecret + "\n" + newSecret + "\n", newSecret, ""},
		{"differ", newSecret + "\nother\n", "", "differ"},
		{"bad", "a\x01b\n", "", "printable ASCII"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			master, slave := openPty(t)
			// Type once the first prompt shows: echo is off by then.
			prompt := &typist{type_: func() {
				if _, err := master.WriteString(tc.typed); err != nil {
					t.Error(err)
				}
			}}
			got, err := readSecretTerminal(slave, prompt, pgmanager.RoleReplication)
			if tc.errWant != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errWant) {
					t.Fatalf("error %v, want %q", err, tc.errWant)
				}
			} else if err != nil || got.Reveal() != tc.want {
				t.Fatalf("read %q, %v", got.Reveal(), err)
			}
			if !strings.Contains(prompt.b.String(), "not echoed") || strings.Contains(prompt.b.String(), newSecret) {
				t.Fatalf("prompt %q", prompt.b.String())
			}
			tio, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
			if err != nil || tio.Lflag&unix.ECHO == 0 {
				t.Fatalf("echo not restored (%v)", err)
			}
			// Nothing typed was echoed back to the terminal.
			fd := int(master.Fd())
			if err := unix.SetNonblock(fd, true); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 256)
			n, _ := unix.Read(fd, buf)
			if n > 0 && strings.Contains(string(buf[:n]), newSecret) {
				t.Fatalf("the terminal echoed the password: %q", buf[:n])
			}
		})
	}
	if _, err := readSecretTerminal(os.NewFile(^uintptr(0), "none"), &bytes.Buffer{}, pgmanager.RoleReplication); err != errNotTerminal {
		t.Fatalf("not a terminal: %v", err)
	}
}
