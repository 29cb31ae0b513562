package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"raftgres/api"
	"raftgres/config"
	"raftgres/raftstore"
)

// join makes this node a voter of the cluster reached through raft.join:
// added as a nonvoter, it waits until its FSM has applied the index of its
// own addition, then asks to be promoted. Each step is idempotent, so a
// restarted agent simply resumes.
func (a *agent) join(ctx context.Context) error {
	if a.isVoter() {
		a.logger.Debug("already a voter, not joining")
		return nil
	}
	req := raftstore.JoinRequest{ID: a.cfg.Name, RaftAddr: a.cfg.Raft.AdvertiseAddr()}
	var resp api.JoinResponse
	err := retry(ctx, a.logger, "join cluster as nonvoter", func() error {
		var err error
		resp, err = a.joinAny(ctx, req)
		return err
	})
	if err != nil || ctx.Err() != nil {
		return err
	}
	a.logger.Info("added to the cluster as nonvoter, catching up", "raft_index", resp.Index, "leader", resp.LeaderID)
	if err := a.store.WaitApplied(ctx, resp.Index); err != nil {
		return nil // ctx ended
	}
	return retry(ctx, a.logger, "promote to voter", func() error {
		req.Voter, req.AppliedIndex = true, a.store.AppliedIndex()
		r, err := a.joinAny(ctx, req)
		if err == nil {
			a.logger.Info("promoted to voter", "raft_index", r.Index)
		}
		return err
	})
}

func (a *agent) isVoter() bool {
	st, err := a.store.Status()
	if err != nil {
		return false
	}
	for _, s := range st.Servers {
		if s.ID == a.cfg.Name && s.Suffrage == "Voter" {
			return true
		}
	}
	return false
}

// joinAny tries each raft.join address in turn; the client follows a
// follower's "not leader" answer to the leader.
func (a *agent) joinAny(ctx context.Context, req raftstore.JoinRequest) (api.JoinResponse, error) {
	var errs []error
	for _, target := range a.cfg.Join {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		resp, err := api.NewClient(target, a.peer).Join(cctx, req)
		cancel()
		if err == nil {
			return resp, nil
		}
		if !transient(err) {
			return resp, fmt.Errorf("join through %s refused: %w", target, err)
		}
		errs = append(errs, fmt.Errorf("join through %s: %w", target, err))
	}
	return api.JoinResponse{}, errors.Join(errs...)
}

func joinCommand() *cli.Command {
	return &cli.Command{
		Name:      "join",
		Usage:     "ask the cluster to add this host (from its config) as a nonvoter",
		ArgsUsage: " ",
		Description: "Sends a join request for the member described by -c FILE (name and raft address) to\n" +
			"--api URL, or to the addresses in raft.join. The member is added as a nonvoter; its agent,\n" +
			"once started, catches up and promotes itself to voter. An agent with raft.join set does\n" +
			"this by itself, so this command is only needed to pre-register a host.",
		Flags: []cli.Flag{configFlag(true), apiFlag(), tokenFlag()},
		Action: func(c *cli.Context) error {
			cfg, err := config.Load(c.String("config"))
			if err != nil {
				return cli.Exit(err.Error(), 2)
			}
			targets := cfg.Join
			if u := c.String("api"); u != "" {
				targets = []string{u}
			}
			if len(targets) == 0 {
				return cli.Exit("join: no target: set raft.join in the config or pass --api URL", 2)
			}
			opts, err := peerClientOptions(cfg)
			if err != nil {
				return cli.Exit(err.Error(), 2)
			}
			if t := c.String("token"); t != "" {
				opts.Token = t
			}
			req := raftstore.JoinRequest{ID: cfg.Name, RaftAddr: cfg.Raft.AdvertiseAddr()}
			var errs []error
			for _, t := range targets {
				resp, err := api.NewClient(t, opts).Join(c.Context, req)
				if err == nil {
					fmt.Fprintf(c.App.Writer, "%s added as nonvoter at raft index %d (leader %s); start its agent to finish joining\n",
						cfg.Name, resp.Index, resp.LeaderID)
					return nil
				}
				errs = append(errs, fmt.Errorf("%s: %w", t, err))
			}
			return cli.Exit("join failed: "+errors.Join(errs...).Error(), 1)
		},
	}
}
