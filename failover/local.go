package failover

import (
	"time"

	"raftgres/pgmanager"
	"raftgres/raftstore"
)

// Local is the supervisor's latest view of its own member, published at the
// end of every cycle for the API's health endpoints and metrics.
type Local struct {
	Member string
	// PG is the last observed PostgreSQL status.
	PG pgmanager.Status
	// HasData is whether a data directory exists.
	HasData bool
	// LeaseUntil is when this holder's lease ends (monotonic clock); zero
	// unless this member holds the key with an acknowledged renewal at Epoch.
	LeaseUntil time.Time
	Epoch      uint64
	// Upstream is the member the local standby follows.
	Upstream string
	// ObservedAt is when the cycle that produced this view ended.
	ObservedAt time.Time
	// VIP is whether a VIP is configured and held now (read live, not
	// at the cycle's end: the fencer removes it between cycles).
	VIP VIPState
}

// LeaseValid reports whether this member's lease is valid at now.
func (l Local) LeaseValid(now time.Time) bool {
	return !l.LeaseUntil.IsZero() && now.Before(l.LeaseUntil)
}

// Local returns the latest published view (zero before the first cycle)
// with the lease as it is now: renewals are acknowledged at a cycle's
// start and during long actions, while the view is published at the
// cycle's end, so a copied lease end would lag the lease the commit gate
// acknowledges under by up to a cycle, and a slow cycle would make a
// healthy holder's /primary and patroni_primary drop for a moment. The
// lease only shortens the published one when it was forgotten or moved on
// to another epoch, so the view never claims a lease the gate does not
// hold.
func (s *Supervisor) Local() Local {
	l := s.local.Load()
	if l == nil {
		return Local{Member: s.cfg.Member, VIP: s.vip.state()}
	}
	out := *l
	out.VIP = s.vip.state()
	if !out.LeaseUntil.IsZero() {
		out.LeaseUntil = time.Time{}
		if _, until, epoch, _ := s.lease.snapshot(); epoch == out.Epoch {
			out.LeaseUntil = until
		}
	}
	return out
}

func (s *Supervisor) publish(st raftstore.State, pgst pgmanager.Status) {
	now := s.clock.Now()
	l := &Local{Member: s.cfg.Member, PG: pgst, HasData: s.pg.HasDataDir(), Upstream: s.standby.upstream, ObservedAt: now}
	if _, until, epoch, _ := s.lease.snapshot(); st.Leader.Holder == s.cfg.Member && epoch == st.Leader.Epoch && !until.IsZero() {
		l.LeaseUntil, l.Epoch = until, epoch
	}
	s.local.Store(l)
}

// Streaming is the walreceiver status of a standby that streams WAL
// (pgmanager.Streaming), for those that read Local.PG.
const Streaming = pgmanager.Streaming

// ArchiveStats is PostgreSQL's WAL archiving statistics (pg_stat_archiver),
// named here for api, which sees pgmanager's types through failover. The
// supervisor never reads them: the agent hands pgmanager.Manager to api.
type ArchiveStats = pgmanager.ArchiveStats
