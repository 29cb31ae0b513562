package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"raftgres/api"
)

const demoToken = "demo-token"

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run a local 3-member cluster on 127.0.0.1 until Ctrl-C",
		Description: "Starts three agents on 127.0.0.1 (Raft ports from --raft-port, API ports from\n" +
			"--api-port) with their data in --dir (a new temporary directory by default), waits\n" +
			"until they elect a leader, prints the cluster and what to try, and stops them all\n" +
			"on Ctrl-C. Run as root, the agents run as the postgres user. Nothing is deleted\n" +
			"unless --cleanup is given.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Usage: "directory for the members' data and logs (default: a new temporary one)"},
			&cli.IntFlag{Name: "raft-port", Value: 7101, Usage: "first Raft `PORT` (three consecutive ports)"},
			&cli.IntFlag{Name: "api-port", Value: 8108, Usage: "first REST API `PORT` (three consecutive ports)"},
			&cli.BoolFlag{Name: "cleanup", Usage: "remove the demo directory when stopping"},
		},
		Action: runDemo,
	}
}

type demoMember struct {
	name, config, log string
	raftPort, apiPort int
	cmd               *exec.Cmd
}

func runDemo(c *cli.Context) error {
	out := c.App.Writer
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	exe, err := os.Executable()
	if err != nil {
		return cli.Exit("demo: find own binary: "+err.Error(), 1)
	}
	cred, err := demoCredential()
	if err != nil {
		return cli.Exit("demo: "+err.Error(), 1)
	}
	dir, err := demoDir(c.String("dir"), cred)
	if err != nil {
		return cli.Exit("demo: "+err.Error(), 1)
	}
	members, err := writeDemoConfigs(dir, c.Int("raft-port"), c.Int("api-port"), cred)
	if err != nil {
		return cli.Exit("demo: "+err.Error(), 1)
	}
	defer stopDemo(out, members)
	for _, m := range members {
		if err := startDemoMember(exe, m, cred); err != nil {
			return cli.Exit("demo: "+err.Error(), 1)
		}
	}
	fmt.Fprintf(out, "demo: 3 agents starting, data and logs in %s\n", dir)
	client := api.NewClient(fmt.Sprintf("127.0.0.1:%d", members[0].apiPort), api.ClientOptions{Token: demoToken, Timeout: 2 * time.Second})
	if err := waitDemoReady(ctx, client); err != nil {
		return cli.Exit(fmt.Sprintf("demo: cluster not ready: %v (see the logs in %s)", err, dir), 1)
	}
	printDemo(ctx, out, client, members, dir)
	<-ctx.Done()
	fmt.Fprintln(out, "\ndemo: stopping the agents")
	if c.Bool("cleanup") {
		defer func() {
			if err := os.RemoveAll(dir); err == nil {
				fmt.Fprintf(out, "demo: removed %s\n", dir)
			}
		}()
	} else {
		fmt.Fprintf(out, "demo: data kept in %s (remove it with rm -rf, or pass --cleanup next time)\n", dir)
	}
	return nil
}

// demoCredential is the postgres user when running as root (the agent
// refuses root), else nil (run as the current user).
func demoCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, the agents need the postgres OS user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func demoDir(dir string, cred *syscall.Credential) (string, error) {
	var err error
	if dir == "" {
		dir, err = os.MkdirTemp("", "raftgres-demo-")
	} else {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		return "", fmt.Errorf("create demo dir: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	return dir, chownTo(dir, cred)
}

func chownTo(path string, cred *syscall.Credential) error {
	if cred == nil {
		return nil
	}
	return os.Chown(path, int(cred.Uid), int(cred.Gid))
}

func writeDemoConfigs(dir string, raftPort, apiPort int, cred *syscall.Credential) ([]*demoMember, error) {
	var members []*demoMember
	var peers []string
	for i := range 3 {
		m := &demoMember{name: fmt.Sprintf("pg%d", i+1), raftPort: raftPort + i, apiPort: apiPort + i}
		for _, p := range []int{m.raftPort, m.apiPort} {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				return nil, fmt.Errorf("port %d is busy (choose others with --raft-port/--api-port): %w", p, err)
			}
			_ = ln.Close()
		}
		m.config, m.log = filepath.Join(dir, m.name+".yml"), filepath.Join(dir, m.name+".log")
		peers = append(peers, fmt.Sprintf("%s=127.0.0.1:%d", m.name, m.raftPort))
		members = append(members, m)
	}
	for _, m := range members {
		data := filepath.Join(dir, m.name)
		if err := os.MkdirAll(data, 0o700); err != nil {
			return nil, err
		}
		if err := chownTo(data, cred); err != nil {
			return nil, err
		}
		cfg := fmt.Sprintf(`scope: demo
name: %s
data_dir: %s
raft:
  listen: 127.0.0.1:%d
  bootstrap_peers: [%s]
  token: %s
restapi:
  listen: 127.0.0.1:%d
bootstrap:
  dcs: {ttl: 10, loop_wait: 1, retry_timeout: 3}
log: {level: info}
`, m.name, data, m.raftPort, strings.Join(peers, ", "), demoToken, m.apiPort)
		if err := os.WriteFile(m.config, []byte(cfg), 0o600); err != nil {
			return nil, err
		}
		if err := chownTo(m.config, cred); err != nil {
			return nil, err
		}
	}
	return members, nil
}

func startDemoMember(exe string, m *demoMember, cred *syscall.Credential) error {
	logf, err := os.OpenFile(m.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	m.cmd = exec.Command(exe, "agent", "-c", m.config)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM, Credential: cred}
	if err := m.cmd.Start(); err != nil {
		_ = logf.Close()
		return fmt.Errorf("start %s: %w", m.name, err)
	}
	go func() { _ = m.cmd.Wait(); _ = logf.Close() }()
	return nil
}

func waitDemoReady(ctx context.Context, client *api.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := client.Cluster(ctx)
		if err == nil && st.Bootstrap && len(st.Members) == 3 {
			return nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = ctx.Err()
			}
			return err
		case <-tick.C:
		}
	}
}

func printDemo(ctx context.Context, out io.Writer, client *api.Client, members []*demoMember, dir string) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nMember\tRaft\tAPI\tRaft state")
	for _, m := range members {
		state := "?"
		c := api.NewClient(fmt.Sprintf("127.0.0.1:%d", m.apiPort), api.ClientOptions{Token: demoToken, Timeout: 2 * time.Second})
		if st, err := c.RaftStatus(ctx); err == nil {
			state = st.State
		}
		fmt.Fprintf(tw, "%s\t127.0.0.1:%d\thttp://127.0.0.1:%d\t%s\n", m.name, m.raftPort, m.apiPort, state)
	}
	_ = tw.Flush()
	api0 := client.Base()
	fmt.Fprintf(out, `
Try, in another shell:
  curl -s %[1]s/cluster
  curl -s -H 'Authorization: Bearer %[2]s' %[1]s/raft/status
  %[3]s snapshot export --out /tmp/demo-snapshot.json --api %[1]s --token %[2]s
  %[3]s snapshot verify /tmp/demo-snapshot.json
  kill -9 <pid of the leader's agent>   (then watch a new leader: curl ... /raft/status)
Logs: %[4]s/pg*.log. PostgreSQL management arrives with the supervisor (see README).
Press Ctrl-C to stop.
`, api0, demoToken, os.Args[0], dir)
}

func stopDemo(out io.Writer, members []*demoMember) {
	for _, m := range members {
		if m.cmd != nil && m.cmd.Process != nil {
			_ = m.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, m := range members {
		if m.cmd == nil || m.cmd.Process == nil {
			continue
		}
		for syscall.Kill(m.cmd.Process.Pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond) // polling for exit of a child reaped elsewhere
		}
		if syscall.Kill(m.cmd.Process.Pid, 0) == nil {
			fmt.Fprintf(out, "demo: %s did not stop, killing it\n", m.name)
			_ = m.cmd.Process.Kill()
		}
	}
}
