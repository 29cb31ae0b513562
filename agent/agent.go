// Package agent is one raftgres member: Run builds and wires every
// component from the loaded config and runs them until the member stops.
package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sync/errgroup"

	"raftgres/api"
	"raftgres/config"
	"raftgres/failover"
	"raftgres/internal/conf"
	"raftgres/internal/watchdog"
	"raftgres/pgmanager"
	"raftgres/raftstore"
	"raftgres/secrets"
)

// Run builds every component of this member from cfg (the Raft store, the
// REST API, the coordinator and, with a postgresql: section, PostgreSQL's
// manager, its supervisor, the password rotator and pgBackRest), joins or
// registers, and runs them and the side loops until ctx ends, this member
// is removed from the cluster, or one of them fails. version is what the
// API reports.
func Run(ctx context.Context, cfg *config.Agent, logger hclog.Logger, version string) error {
	if cfg.VIP.Enabled() {
		if err := prepareVIP(cfg.VIP, logger); err != nil {
			return err
		}
		defer removeVIPAtStop(cfg.VIP, logger)
	}
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
	peerOpts, err := cfg.PeerClientOptions()
	if err != nil {
		return err
	}
	proposer := api.NewProposer(store, peerOpts, logger)
	a := &member{cfg: cfg, store: store, proposer: proposer, peer: peerOpts, logger: logger, version: version}
	br := pgBackRest(cfg, logger)
	apiOpts := []api.Option{api.WithVersion(version)}
	var rot *secrets.Rotator
	if cfg.HasPostgres {
		pgOpts := pgmanager.Options{Scope: cfg.Scope, FenceKeeper: pgmanager.SelfFenceKeeper}
		if cfg.VIP.Enabled() {
			pgOpts.FenceKeeper = pgmanager.SelfFenceKeeperWithVIP(cfg.VIP)
		}
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
		rot, err = secrets.NewRotator(cfg.Name, cfg.DataDir, pg, map[pgmanager.Role]conf.Secret{
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
		if cfg.VIP.Enabled() {
			a.sup.SetVIP(vipAddr{cfg.VIP}, vipLogger(cfg.VIP, logger))
		}
		apiOpts = append(apiOpts, api.WithMember(a.sup), api.WithArchiveSource(pg))
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
		stanza := &stanzaCreator{store: store, member: cfg.Name, br: br, logger: logger}
		g.Go(func() error { return stanza.Run(gctx) })
		if br.ServerEnabled() {
			backups := &backupServer{store: store, br: br, logger: logger}
			g.Go(func() error { return backups.Run(gctx) })
		}
	}
	members := &membersRecorder{store: store, path: MembersFile(cfg.DataDir), logger: logger}
	g.Go(func() error { return members.Run(gctx) })
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

type member struct {
	cfg      *config.Agent
	store    *raftstore.Store
	proposer *api.Proposer
	peer     api.ClientOptions
	logger   hclog.Logger
	sup      *failover.Supervisor // nil without a postgresql: section
	version  string               // this binary's release, registered with the member
}

// joinAndRegister joins an existing cluster when raft.join is set and this
// node is not yet a voter, then records this member in the FSM.
func (a *member) joinAndRegister(ctx context.Context) error {
	if len(a.cfg.Join) > 0 {
		if err := a.join(ctx); err != nil {
			return err
		}
	}
	reg := raftstore.RegisterMember{
		Name: a.cfg.Name, APIAddr: a.cfg.API.BaseURL(), RaftAddr: a.cfg.Raft.AdvertiseAddr(), Tags: a.cfg.Tags,
		Agent: raftstore.AgentVersion{Version: a.version, Protocol: raftstore.Protocol},
	}
	if a.cfg.HasPostgres {
		reg.PGAddr = cmp.Or(a.cfg.Postgres.ConnectAddress, a.cfg.Postgres.Listen)
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
	_ failover.Postgres       = (*pgmanager.Manager)(nil)
	_ failover.LeaderStore    = (*raftstore.Store)(nil)
	_ failover.Proposer       = (*api.Proposer)(nil)
	_ api.Member              = (*failover.Supervisor)(nil)
	_ raftstore.Applier       = (*api.Proposer)(nil)
	_ raftstore.Applier       = (*api.Client)(nil)
	_ secrets.CredentialStore = (*pgmanager.Manager)(nil)
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
