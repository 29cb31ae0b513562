package pgmanager

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"raftgres/internal/vip"
)

// SelfFenceKeeper is the agent's Options.FenceKeeper: this very binary
// (/proc/self/exe: the running executable even when an upgrade replaced
// the file on disk, so agent and keeper always speak the same protocol)
// run as `raftgres fence-keeper`, with an empty environment (it needs
// none, and the agent's may hold secrets).
func SelfFenceKeeper() *exec.Cmd {
	c := exec.Command("/proc/self/exe", FenceKeeperCommand)
	c.Args[0] = "raftgres"
	c.Env = []string{}
	return c
}

// SelfFenceKeeperWithVIP is SelfFenceKeeper that also removes v when it
// fires. A non-root agent (its ambient set cleared at start, so no other
// child inherits a capability: internal/vip) starts it with CAP_NET_ADMIN
// raised in its ambient set, which removing an address needs.
func SelfFenceKeeperWithVIP(v vip.Config) func() *exec.Cmd {
	return func() *exec.Cmd {
		c := SelfFenceKeeper()
		c.Args = append(c.Args, "--"+FenceKeeperVIPFlag, v.Address.String(), "--"+FenceKeeperVIPInterfaceFlag, v.Interface)
		if os.Geteuid() != 0 {
			c.SysProcAttr = &syscall.SysProcAttr{AmbientCaps: []uintptr{unix.CAP_NET_ADMIN}}
		}
		return c
	}
}

// keeperWriteTimeout bounds a write to the keeper's pipe: a keeper that
// does not read for that long is wedged and replaced.
const keeperWriteTimeout = 100 * time.Millisecond

// keeperRestartDelay is how long after an unexpected exit the keeper is
// started again.
const keeperRestartDelay = time.Second

// keeperClient runs the fence keeper and keeps it told of the current
// state (fencekeeper.go). Every method returns within about
// keeperWriteTimeout plus a fork and exec.
type keeperClient struct {
	newCmd func() *exec.Cmd
	logger hclog.Logger

	mu    sync.Mutex
	state fenceState
	proc  *keeperProc // the running keeper; nil when none
}

type keeperProc struct {
	cmd  *exec.Cmd
	w    *os.File // its stdin
	done chan struct{}
}

func newKeeperClient(newCmd func() *exec.Cmd, logger hclog.Logger) *keeperClient {
	return &keeperClient{newCmd: newCmd, logger: logger}
}

// setDeadline arms (ns > 0) or disarms (0) the keeper.
func (k *keeperClient) setDeadline(ns int64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.state.Deadline == ns && k.proc != nil {
		return
	}
	k.state.Deadline = ns
	k.sendLocked()
}

// setTarget names the running postmaster (pid 0: none).
func (k *keeperClient) setTarget(pid int, start uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.state.Pid, k.state.Start = pid, start
	k.sendLocked()
}

// clearTarget forgets the postmaster pid, if it is still the target.
func (k *keeperClient) clearTarget(pid int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.state.Pid != pid {
		return
	}
	k.state.Pid, k.state.Start = 0, 0
	k.sendLocked()
}

// sendLocked tells the keeper the current state, starting it when none
// runs and replacing one that died or stopped reading. Nothing is started
// while there is nothing to tell (no postmaster, disarmed).
func (k *keeperClient) sendLocked() {
	if p := k.proc; p != nil {
		select {
		case <-p.done:
			k.proc = nil
		default:
			err := k.write(p, k.state)
			if err == nil {
				return
			}
			k.logger.Error("fence keeper does not read its pipe: replacing it", "pid", p.cmd.Process.Pid, "error", err)
			_ = p.cmd.Process.Kill()
			k.proc = nil
		}
	}
	if k.state == (fenceState{}) {
		return
	}
	if err := k.startLocked(); err != nil {
		k.logger.Error("cannot start the fence keeper: nothing will stop postgres at the lease's end if this agent freezes", "error", err)
	}
}

func (k *keeperClient) write(p *keeperProc, s fenceState) error {
	if err := p.w.SetWriteDeadline(time.Now().Add(keeperWriteTimeout)); err != nil {
		return err
	}
	_, err := p.w.WriteString(s.line())
	return err
}

// startLocked starts a keeper in its own process group (a SIGSTOP of the
// agent's group does not stop it; no parent-death signal: it must
// outlive the agent) and sends it the state.
func (k *keeperClient) startLocked() error {
	cmd := k.newCmd()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	er, ew, err := os.Pipe()
	if err != nil {
		_ = r.Close()
		_ = w.Close()
		return err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = r, nil, ew
	cmd.ExtraFiles = []*os.File{os.Stderr} // fd 3: where it logs once the agent is gone
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, fenceLogFDEnv+"=3")
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	err = cmd.Start()
	_ = r.Close()
	_ = ew.Close()
	if err != nil {
		_ = w.Close()
		_ = er.Close()
		return err
	}
	p := &keeperProc{cmd: cmd, w: w, done: make(chan struct{})}
	k.proc = p
	go forwardKeeperLog(er, k.logger)
	go func() {
		err := cmd.Wait()
		_ = w.Close()
		close(p.done)
		k.exited(p, err)
	}()
	if err := k.write(p, k.state); err != nil {
		return fmt.Errorf("first write: %w", err)
	}
	return nil
}

// exited restarts a keeper that exited while it was still needed.
func (k *keeperClient) exited(p *keeperProc, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.proc != p {
		return // replaced on purpose
	}
	k.proc = nil
	if k.state == (fenceState{}) {
		return
	}
	k.logger.Error("fence keeper exited: starting another", "pid", p.cmd.Process.Pid, "error", errOrNil(err), "in", keeperRestartDelay)
	time.AfterFunc(keeperRestartDelay, func() {
		k.mu.Lock()
		defer k.mu.Unlock()
		if k.proc == nil {
			k.sendLocked()
		}
	})
}

func errOrNil(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// forwardKeeperLog copies the keeper's "LEVEL message" lines to logger.
func forwardKeeperLog(r *os.File, logger hclog.Logger) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		level, msg, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			level, msg = "INFO", sc.Text()
		}
		switch level {
		case "ERROR":
			logger.Error(msg)
		case "WARN":
			logger.Warn(msg)
		default:
			logger.Info(msg)
		}
	}
}

// close disarms and stops the keeper (tests; the agent leaves its keeper
// to exit by itself when its pipe ends).
func (k *keeperClient) close() {
	k.mu.Lock()
	p := k.proc
	k.state = fenceState{}
	k.proc = nil
	k.mu.Unlock()
	if p == nil {
		return
	}
	_ = k.write(p, fenceState{})
	_ = p.w.Close() // disarmed keeper: exits at the end of its pipe
	select {
	case <-p.done:
	case <-time.After(2 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// errNoKeeper is logged by FenceAt when no keeper is configured.
var errNoKeeper = errors.New("no fence keeper configured (Options.FenceKeeper)")
