package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"

	"raftgres/api"
	"raftgres/failover"
	"raftgres/internal/conf"
	"raftgres/internal/watchdog"
	"raftgres/pgmanager"
	"raftgres/raftstore"
)

func agentCommand() *cli.Command {
	return &cli.Command{
		Name:  "agent",
		Usage: "run the raftgres agent of this host (Raft peer, REST API, PostgreSQL supervisor)",
		Description: "Runs this host's Raft peer and REST API until SIGINT or SIGTERM and, when the config\n" +
			"has a postgresql: section, supervises the local PostgreSQL (initdb or clone, streaming,\n" +
			"promotion, fencing, pg_rewind) as a child process.\n\n" +
			"A brand-new cluster starts from raft.bootstrap_peers (the same list on every host); a host\n" +
			"joining an existing cluster lists any member's API address in raft.join and is added as a\n" +
			"nonvoter, then promoted to voter once it has caught up. The agent refuses to run as root:\n" +
			"run it as the postgres user (see examples/ for a systemd unit).",
		Flags: []cli.Flag{configFlag(true)},
		Action: func(c *cli.Context) error {
			if os.Geteuid() == 0 {
				return cli.Exit("the agent must not run as root: PostgreSQL refuses root and so does raftgres; "+
					"run it as the postgres user, e.g. sudo -u postgres raftgres agent -c "+c.String("config"), 1)
			}
			cfg, err := loadConfig(c.String("config"))
			if err != nil {
				return cli.Exit(err.Error(), 2)
			}
			if cfg.HasPostgres {
				// PostgreSQL and the libpq tools run as this user and refuse a
				// key file that others can read: say so before starting.
				if err := cfg.Postgres.CheckSSLFiles(os.Geteuid()); err != nil {
					return cli.Exit(fmt.Sprintf("config %s: %v", cfg.Path, err), 2)
				}
			}
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			logger := newLogger(cfg.Log, os.Stderr).With("node", cfg.Name)
			for _, n := range cfg.Notes {
				logger.Info("config note", "key", n.path, "line", n.line, "note", n.msg)
			}
			if err := runAgent(ctx, cfg, logger); err != nil {
				logger.Error("agent stopped", "error", err)
				return cli.Exit("", 1)
			}
			return nil
		},
	}
}

// runAgent wires the store and the API and runs them until ctx ends, this
// member is removed from the cluster, or one of them fails.
func runAgent(ctx context.Context, cfg *agentConfig, logger hclog.Logger) error {
	store, err := raftstore.New(cfg.Raft, logger)
	if err != nil {
		return err
	}
	if err := store.Open(); err != nil {
		return err
	}
	defer func() {
		if err := store.Close(); err != nil {
			logger.Warn("close raft store", "error", err)
		}
	}()
	peerOpts, err := peerClientOptions(cfg)
	if err != nil {
		return err
	}
	proposer := api.NewProposer(store, peerOpts, logger)
	a := &agent{cfg: cfg, store: store, proposer: proposer, peer: peerOpts, logger: logger}
	br := pgBackRest(cfg, logger)
	apiOpts := []api.Option{api.WithVersion(version)}
	var rot *rotator
	if cfg.HasPostgres {
		pgOpts := pgmanager.Options{Scope: cfg.Scope, FenceKeeper: pgmanager.SelfFenceKeeper}
		if br != nil {
			if err := br.WriteConfig(); err != nil {
				return err
			}
			pgOpts.Archive = &pgmanager.Archive{Command: br.ArchiveCommand(), RestoreCommand: br.RestoreCommand()}
			pgOpts.Restore = restorer(br)
		}
		pg, err := pgmanager.New(cfg.Postgres, cfg.Name, logger, pgOpts)
		if err != nil {
			return err
		}
		rot, err = newRotator(cfg.Name, cfg.DataDir, pg, map[pgmanager.Role]conf.Secret{
			pgmanager.RoleSuperuser:   cfg.Postgres.Superuser.Password,
			pgmanager.RoleReplication: cfg.Postgres.Replication.Password,
			pgmanager.RoleRewind:      cfg.Postgres.Rewind.Password,
		}, logger)
		if err != nil {
			return err
		}
		apiOpts = append(apiOpts, api.WithSecretRotator(rot.Rotate))
		wd := watchdog.New(cfg.Watchdog.Device)
		if cfg.Tags, err = cfg.Watchdog.MemberTags(cfg.Tags, wd); err != nil {
			logger.Error("this member will never be promoted", "device", cfg.Watchdog.Device, "error", err)
		}
		a.sup = failover.NewSupervisor(failover.Config{Member: cfg.Name, Tags: cfg.Tags, Watchdog: cfg.Watchdog, WatchdogDevice: wd},
			pg, store, proposer, logger)
		apiOpts = append(apiOpts, api.WithMember(a.sup))
		if br != nil && br.ServerEnabled() {
			apiOpts = append(apiOpts, api.WithBackupEndpoint(br.Endpoint(cfg.Name)))
		}
	}
	server, err := api.New(cfg.API, cfg.Scope, store, proposer, logger, apiOpts...)
	if err != nil {
		return err
	}
	coordinator := failover.NewCoordinator(cfg.Name, cfg.Cluster, store, logger)
	coordinator.SetProbe(proposer.Probe)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return server.Run(gctx) })
	g.Go(func() error { return coordinator.Run(gctx) })
	g.Go(func() error {
		if err := a.joinAndRegister(gctx); err != nil || !cfg.HasPostgres || gctx.Err() != nil {
			return err
		}
		err := a.sup.Run(gctx)
		exitIfStuck(logger, stuckShutdownGrace)
		return err
	})
	if rot != nil {
		g.Go(func() error { return rot.Run(gctx) })
	}
	if br != nil {
		g.Go(func() error {
			runStanzaCreate(gctx, store, cfg.Name, br, logger)
			return nil
		})
		if br.ServerEnabled() {
			g.Go(func() error {
				runBackupServer(gctx, store, br, logger)
				return nil
			})
		}
	}
	g.Go(func() error {
		recordMembers(gctx, store, membersFile(cfg.DataDir), logger)
		return nil
	})
	g.Go(func() error {
		select {
		case <-store.Removed():
			logger.Info("this member was removed from the cluster: stopping the agent")
			return errRemoved
		case <-gctx.Done():
			return nil
		}
	})
	err = g.Wait()
	if errors.Is(err, errRemoved) {
		return nil
	}
	return err
}

var errRemoved = errors.New("removed from the cluster")

// stuckShutdownGrace is how long the rest of the agent (API, coordinator,
// Raft) may take to stop once the supervisor has stopped PostgreSQL and
// released the leader key.
const stuckShutdownGrace = 10 * time.Second

// exitIfStuck makes the process exit, after logging every goroutine's
// stack, if it is still running grace from now. Call it once PostgreSQL is
// stopped: nothing left to protect is worth a shutdown that never ends
// (a service manager would kill it anyway, without saying where it hung).
func exitIfStuck(logger hclog.Logger, grace time.Duration) {
	time.AfterFunc(grace, func() {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		logger.Error("shutdown stuck: exiting without waiting further", "after", grace, "goroutines", string(buf))
		os.Exit(1)
	})
}

type agent struct {
	cfg      *agentConfig
	store    *raftstore.Store
	proposer *api.Proposer
	peer     api.ClientOptions
	logger   hclog.Logger
	sup      *failover.Supervisor // nil without a postgresql: section
}

// joinAndRegister joins an existing cluster when raft.join is set and this
// node is not yet a voter, then records this member in the FSM.
func (a *agent) joinAndRegister(ctx context.Context) error {
	if len(a.cfg.Join) > 0 {
		if err := a.join(ctx); err != nil {
			return err
		}
	}
	reg := raftstore.RegisterMember{
		Name: a.cfg.Name, APIAddr: a.cfg.API.BaseURL(), RaftAddr: a.cfg.Raft.AdvertiseAddr(), Tags: a.cfg.Tags,
	}
	if a.cfg.HasPostgres {
		reg.PGAddr = valueOr(a.cfg.Postgres.ConnectAddress, a.cfg.Postgres.Listen)
	}
	return retry(ctx, a.logger, "register member", func() error {
		reg.At = time.Now().UTC()
		index, err := raftstore.Commit(ctx, a.proposer, reg)
		if err == nil {
			a.logger.Info("member registered", "raft_index", index, "api", reg.APIAddr)
		}
		return err
	})
}

// The adapters satisfy the interfaces failover declares.
var (
	_ failover.Postgres    = (*pgmanager.Manager)(nil)
	_ failover.LeaderStore = (*raftstore.Store)(nil)
	_ failover.Proposer    = (*api.Proposer)(nil)
	_ api.Member           = (*failover.Supervisor)(nil)
	_ raftstore.Applier    = (*api.Proposer)(nil)
	_ raftstore.Applier    = (*api.Client)(nil)
	_ credentialStore      = (*pgmanager.Manager)(nil)
)

// retry calls f until it succeeds, ctx ends, or f fails with an error that
// waiting cannot fix.
func retry(ctx context.Context, logger hclog.Logger, what string, f func() error) error {
	delay := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil {
			return nil
		}
		if !transient(err) {
			return fmt.Errorf("%s: %w", what, err)
		}
		if attempt%10 == 0 {
			logger.Info("still trying", "action", what, "attempt", attempt, "error", err)
		} else {
			logger.Debug("will retry", "action", what, "attempt", attempt, "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(delay*2, 2*time.Second)
	}
}

// transient reports whether err may go away by waiting (no leader yet,
// election, unreachable peer).
func transient(err error) bool {
	for _, perm := range []error{
		raftstore.ErrJoinRefused, raftstore.ErrInvalidCommand, raftstore.ErrUnknownCommand,
		api.ErrUnauthorized, api.ErrBadRequest, api.ErrNotFound,
	} {
		if errors.Is(err, perm) {
			return false
		}
	}
	return true
}
