package failover

import (
	"context"
	"errors"
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
}

// LeaseValid reports whether this member's lease is valid at now.
func (l Local) LeaseValid(now time.Time) bool {
	return !l.LeaseUntil.IsZero() && now.Before(l.LeaseUntil)
}

// Local returns the latest published view (zero before the first cycle).
func (s *Supervisor) Local() Local {
	if l := s.local.Load(); l != nil {
		return *l
	}
	return Local{Member: s.cfg.Member}
}

func (s *Supervisor) publish(st raftstore.State, pgst pgmanager.Status) {
	now := s.clock.Now()
	l := &Local{Member: s.cfg.Member, PG: pgst, HasData: s.pg.HasDataDir(), Upstream: s.standby.upstream, ObservedAt: now}
	if _, until, epoch, _ := s.lease.snapshot(); st.Leader.Holder == s.cfg.Member && epoch == st.Leader.Epoch && !until.IsZero() {
		l.LeaseUntil, l.Epoch = until, epoch
	}
	s.local.Store(l)
}

// ArchiveStats is PostgreSQL's WAL archiving statistics (pg_stat_archiver).
type ArchiveStats = pgmanager.ArchiveStats

// archiver is the part of pgmanager.Manager ArchiveStats uses.
type archiver interface {
	ArchiveStats(ctx context.Context) (pgmanager.ArchiveStats, error)
}

// ArchiveStats reads the local PostgreSQL's archiving statistics, for
// /metrics: a scrape asks, the supervisor's loop never does.
func (s *Supervisor) ArchiveStats(ctx context.Context) (ArchiveStats, error) {
	a, ok := s.pg.(archiver)
	if !ok {
		return ArchiveStats{}, errors.New("archive statistics: not available from this PostgreSQL adapter")
	}
	return a.ArchiveStats(ctx)
}
