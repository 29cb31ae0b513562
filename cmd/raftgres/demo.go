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
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"raftgres/api"
	"raftgres/config"
	"raftgres/raftstore"
)

const (
	demoToken    = "demo-token"
	demoPassword = "demo-super"
	demoAdmin    = "demo-admin" // restapi password of user admin
)

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
			&cli.IntFlag{Name: "pg-port", Value: 5441, Usage: "first PostgreSQL `PORT` (three consecutive ports)"},
			&cli.StringFlag{Name: "bin-dir", Value: "/usr/lib/postgresql/15/bin", Usage: "PostgreSQL 15 binaries `DIR`"},
			&cli.BoolFlag{Name: "cleanup", Usage: "remove the demo directory when stopping"},
		},
		Action: runDemo,
	}
}

type demoMember struct {
	name, config, log         string
	raftPort, apiPort, pgPort int
	cmd                       *exec.Cmd
	done                      chan struct{} // closed once the agent exited
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
	if _, err := os.Stat(filepath.Join(c.String("bin-dir"), "postgres")); err != nil {
		return cli.Exit("demo: PostgreSQL 15 not found in "+c.String("bin-dir")+" (apt-get install postgresql-15, or --bin-dir)", 1)
	}
	members, err := writeDemoConfigs(dir, c.Int("raft-port"), c.Int("api-port"), c.Int("pg-port"), c.String("bin-dir"), cred)
	if err != nil {
		return cli.Exit("demo: "+err.Error(), 1)
	}
	defer stopDemo(out, members)
	for _, m := range members {
		if err := startDemoMember(exe, m, cred); err != nil {
			return cli.Exit("demo: "+err.Error(), 1)
		}
	}
	fmt.Fprintf(out, "demo: 3 agents starting (initdb, clone, streaming), data and logs in %s\n", dir)
	client := api.NewClient(fmt.Sprintf("127.0.0.1:%d", members[0].apiPort),
		api.ClientOptions{Token: demoToken, Username: "admin", Password: demoAdmin, Timeout: 2 * time.Second})
	if err := waitDemoReady(ctx, client); err != nil {
		return cli.Exit(fmt.Sprintf("demo: cluster not ready: %v (see the logs in %s)", err, dir), 1)
	}
	printDemo(ctx, out, client, members, dir)
	<-ctx.Done()
	fmt.Fprintln(out, "\ndemo: stopping the agents")
	stopDemo(out, members)
	if c.Bool("cleanup") {
		if err := os.RemoveAll(dir); err != nil {
			return cli.Exit(fmt.Sprintf("demo: remove %s: %v", dir, err), 1)
		}
		fmt.Fprintf(out, "demo: removed %s\n", dir)
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

func writeDemoConfigs(dir string, raftPort, apiPort, pgPort int, binDir string, cred *syscall.Credential) ([]*demoMember, error) {
	var members []*demoMember
	var peers []string
	for i := range 3 {
		m := &demoMember{name: fmt.Sprintf("pg%d", i+1), raftPort: raftPort + i, apiPort: apiPort + i, pgPort: pgPort + i}
		for _, p := range []int{m.raftPort, m.apiPort, m.pgPort} {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				return nil, fmt.Errorf("port %d is busy (choose others with --raft-port/--api-port/--pg-port): %w", p, err)
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
		cfg, err := config.Marshal(demoConfig(m, data, peers, binDir))
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(m.config, cfg, 0o600); err != nil {
			return nil, err
		}
		if err := chownTo(m.config, cred); err != nil {
			return nil, err
		}
	}
	return members, nil
}

// demoConfig is member m's config: a three-member cluster on 127.0.0.1.
func demoConfig(m *demoMember, dataDir string, peers []string, binDir string) *config.File {
	return &config.File{
		Scope: "demo", Name: m.name, DataDir: dataDir,
		Raft: config.Raft{Listen: fmt.Sprintf("127.0.0.1:%d", m.raftPort), BootstrapPeers: peers, Token: demoToken},
		RestAPI: config.RestAPI{Listen: fmt.Sprintf("127.0.0.1:%d", m.apiPort),
			Authentication: &config.Auth{Username: "admin", Password: demoAdmin}},
		PostgreSQL: &config.Postgres{
			Listen: fmt.Sprintf("127.0.0.1:%d", m.pgPort), DataDir: dataDir + "/pgdata", BinDir: binDir,
			Authentication: config.PGAuth{
				Superuser:   &config.Auth{Username: "postgres", Password: demoPassword},
				Replication: &config.Auth{Username: "replicator", Password: "demo-repl"},
				Rewind:      &config.Auth{Username: "rewind_user", Password: "demo-rewind"},
			},
			Parameters: map[string]raftstore.Param{"shared_buffers": "32MB", "max_connections": "50"},
		},
		Bootstrap: config.Bootstrap{PgHba: []string{
			"host replication replicator 127.0.0.1/32 scram-sha-256",
			"host all all 127.0.0.1/32 scram-sha-256",
		}},
		Log: config.Log{Level: "info"},
	}
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
	m.done = make(chan struct{})
	go func() { _ = m.cmd.Wait(); _ = logf.Close(); close(m.done) }()
	return nil
}

func waitDemoReady(ctx context.Context, client *api.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := client.Cluster(ctx)
		if err == nil && st.Initialize != "" && len(st.Members) == 3 {
			running := 0
			for _, m := range st.Members {
				if m.Status.State == raftstore.StateRunning {
					running++
				}
			}
			if running == 3 && st.Members[st.Leader.Holder] != nil && st.Members[st.Leader.Holder].Status.Role == raftstore.RolePrimary {
				return nil
			}
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
	fmt.Fprintln(out)
	view, err := client.ClusterView(ctx)
	if err != nil {
		fmt.Fprintf(out, "demo: read the cluster: %v\n", err)
	} else if err := renderList(out, patroniView(view, nil), "", nil); err != nil {
		fmt.Fprintf(out, "demo: %v\n", err)
	}
	api0, pgPort, primaryPID := client.Base(), members[0].pgPort, 0
	for _, m := range members {
		for _, vm := range view.Members {
			if vm.Name == m.name && vm.Role == api.ClusterLeader {
				pgPort, primaryPID = m.pgPort, m.cmd.Process.Pid
			}
		}
	}
	fmt.Fprintf(out, `
Try, in another shell (admin commands use user admin, password %[7]s):
  psql "host=127.0.0.1 port=%[5]d user=postgres password=%[6]s"     (the primary)
  %[3]s list --api %[1]s -W
  RAFTGRES_PASSWORD=%[7]s %[3]s switchover --api %[1]s --username admin --force
  curl -s %[1]s/patroni ; curl -s %[1]s/metrics | grep ^patroni_
  %[3]s check --api %[1]s; echo "exit $?"
  %[3]s history --api %[1]s
  kill -9 %[8]d     (the primary's agent: a replica takes over about 3s later)
Logs: %[4]s/pg*.log.
Press Ctrl-C to stop (data stays in %[4]s).
`, api0, demoToken, os.Args[0], dir, pgPort, demoPassword, demoAdmin, primaryPID)
}

func stopDemo(out io.Writer, members []*demoMember) {
	for _, m := range members {
		if m.done != nil {
			_ = m.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.After(30 * time.Second)
	for _, m := range members {
		if m.done == nil {
			continue
		}
		select {
		case <-m.done:
		case <-deadline:
			fmt.Fprintf(out, "demo: %s did not stop within 30s, killing it\n", m.name)
			_ = m.cmd.Process.Kill()
			<-m.done
		}
	}
}
