package agent

import (
	"os"

	"github.com/hashicorp/go-hclog"

	"raftgres/failover"
	"raftgres/internal/vip"
)

// prepareVIP runs first in an agent with a vip: section, before anything
// that may start a child: a non-root agent must have CAP_NET_ADMIN and
// CAP_NET_RAW (from the unit's AmbientCapabilities=), and its ambient set
// is cleared in every thread so that PostgreSQL, hooks, archive_command
// and pg_basebackup inherit none (the fence keeper gets CAP_NET_ADMIN
// explicitly). The agent refuses to start when either fails. Then a VIP
// left on this host (a crash, a kill -9) is removed: this member holds no
// lease yet.
func prepareVIP(v vip.Config, logger hclog.Logger) error {
	logger = vipLogger(v, logger)
	if os.Geteuid() != 0 {
		caps, err := vip.ReadCaps()
		if err != nil {
			return err
		}
		if err := vip.CheckCaps(caps); err != nil {
			return err
		}
	}
	if err := vip.ClearAmbient(); err != nil {
		return err
	}
	held, err := vip.Held(v)
	if err != nil {
		logger.Warn("cannot tell whether the vip is on this host", "error", err)
	}
	if err := vip.Remove(v); err != nil {
		logger.Error("cannot remove a stale vip at start", "error", err)
	} else if held {
		logger.Warn("vip removed", "reason", "stale at agent start (this member holds no lease yet)")
	}
	return nil
}

// removeVIPAtStop removes the VIP when the agent stops (the supervisor
// has removed it already when it stopped PostgreSQL; this also covers an
// agent that fails before or beside it).
func removeVIPAtStop(v vip.Config, logger hclog.Logger) {
	logger = vipLogger(v, logger)
	if held, _ := vip.Held(v); !held {
		return
	}
	if err := vip.Remove(v); err != nil {
		logger.Error("cannot remove the vip at agent stop", "error", err)
		return
	}
	logger.Info("vip removed", "reason", "agent stopped")
}

// vipLogger is the VIP's sub-logger, naming the address.
func vipLogger(v vip.Config, logger hclog.Logger) hclog.Logger {
	return logger.Named(failover.VIPLoggerName).With("vip", v.String())
}

// vipAddr is failover.VIP on this host's interface.
type vipAddr struct{ cfg vip.Config }

func (a vipAddr) Add() error {
	_, err := vip.Add(a.cfg, vip.DefaultAnnounce)
	return err
}

func (a vipAddr) Remove() error { return vip.Remove(a.cfg) }

var _ failover.VIP = vipAddr{}
