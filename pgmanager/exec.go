package pgmanager

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// waitDelay is how long a cancelled child gets after SIGINT before SIGKILL.
const waitDelay = 10 * time.Second

// command describes one run of a PostgreSQL tool.
type command struct {
	bin  string   // e.g. "pg_basebackup", resolved in BinDir
	args []string // never holds a password
	env  []string // extra environment (PGPASSFILE, PGAPPNAME…)
	dir  string
	tail *tailWriter // keeps the last output lines (default: 20)
}

// run executes cmd under ctx: SIGINT on cancel, SIGKILL after waitDelay;
// every output line goes to a sub-logger with cmd=<bin>. The error names
// the tool and carries the last lines of its output.
func (m *Manager) run(ctx context.Context, c command) error {
	path := filepath.Join(m.cfg.BinDir, c.bin)
	cmd := exec.CommandContext(ctx, path, c.args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = waitDelay
	cmd.Dir = c.dir
	cmd.Env = append(m.baseEnv(), c.env...)
	cmd.SysProcAttr = m.sysProcAttr(false)
	tail := c.tail
	if tail == nil {
		tail = &tailWriter{max: 20}
	}
	lw := m.lineLogger(c.bin, tail)
	cmd.Stdout, cmd.Stderr = lw, lw
	m.logger.Debug("running", "cmd", c.bin, "args", strings.Join(c.args, " "))
	err := cmd.Run()
	lw.flush()
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w (%v)", c.bin, ctx.Err(), err)
		}
		return fmt.Errorf("%s: %w: %s", c.bin, err, tail.String())
	}
	return nil
}

// baseEnv is a minimal environment for PostgreSQL tools: no inherited
// PG* variables can redirect them.
func (m *Manager) baseEnv() []string { return m.envWithPath(m.cfg.BinDir + ":/usr/bin:/bin") }

// envWithPath is baseEnv with another PATH.
func (m *Manager) envWithPath(path string) []string {
	env := []string{"LC_ALL=C.UTF-8", "LANG=C.UTF-8", "PATH=" + path}
	if home := os.Getenv("HOME"); home != "" {
		env = append(env, "HOME="+home)
	}
	return env
}

// sysProcAttr puts children in their own process group and, when this
// process runs as root (tests only: the agent refuses root), drops them to
// the configured OS user. postmaster children also get a parent-death
// signal.
func (m *Manager) sysProcAttr(postmaster bool) *syscall.SysProcAttr {
	// Children die with the agent: postgres with an immediate shutdown
	// (SIGQUIT), tools such as pg_basebackup with SIGTERM.
	a := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if postmaster {
		a.Pdeathsig = syscall.SIGQUIT
	}
	if m.runAs != nil {
		a.Credential = m.runAs
	}
	return a
}

// lineLogger returns a writer that logs each complete line.
func (m *Manager) lineLogger(bin string, tail *tailWriter) *lineWriter {
	return &lineWriter{logger: m.logger.Named(bin), tail: tail}
}

type lineWriter struct {
	mu     sync.Mutex
	logger hclog.Logger
	tail   *tailWriter
	buf    []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			break
		}
		w.emit(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

func (w *lineWriter) emit(line string) {
	line = strings.TrimRight(line, "\r")
	if line == "" {
		return
	}
	w.logger.Info(line)
	if w.tail != nil {
		w.tail.add(line)
	}
}

func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emit(string(w.buf))
		w.buf = nil
	}
}

// tailWriter keeps the last max lines.
type tailWriter struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func (t *tailWriter) add(l string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, l)
	if len(t.lines) > t.max {
		t.lines = t.lines[len(t.lines)-t.max:]
	}
}

// Lines returns a copy of the kept lines.
func (t *tailWriter) Lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.lines...)
}

func (t *tailWriter) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == 0 {
		return "(no output)"
	}
	return strings.Join(t.lines, " | ")
}

// streamLines copies r to a line logger until EOF, and hands every line
// to each of watch.
func streamLines(r io.Reader, logger hclog.Logger, watch ...func(string)) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			logger.Info(l)
			for _, w := range watch {
				w(l)
			}
		}
	}
}
