package failover

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"raftgres/pgmanager"
	"raftgres/raftstore"
)

// SyncStandbyNames renders synchronous_standby_names for standbys
// ("" when none).
func SyncStandbyNames(standbys []string) string {
	if len(standbys) == 0 {
		return ""
	}
	q := make([]string, len(standbys))
	for i, s := range standbys {
		q[i] = `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
	}
	return fmt.Sprintf("FIRST %d (%s)", len(standbys), strings.Join(q, ", "))
}

// chooseSync picks the synchronous standby: the current one while it
// streams, else the first streaming member (by name) not tagged nosync or
// nofailover (a synchronous copy that can never be promoted protects
// nothing: only Sync members may be elected). Only members in fresh (whose
// status reached the Raft store within ttl) count: a standby cut off by a
// partition still looks "streaming" in pg_stat_replication until
// wal_sender_timeout, and waiting on it would stall every commit.
func chooseSync(st raftstore.State, me string, pgst pgmanager.Status, fresh map[string]bool) []string {
	streamingOK := map[string]bool{}
	for _, r := range pgst.Replicas {
		if m, ok := st.Members[r.ApplicationName]; ok && r.State == "streaming" && fresh[r.ApplicationName] &&
			!m.Tags.NoSync && !m.Tags.NoFailover && r.ApplicationName != me {
			streamingOK[r.ApplicationName] = true
		}
	}
	if st.Sync.Primary == me {
		for _, s := range st.Sync.Standbys {
			if streamingOK[s] {
				return []string{s}
			}
		}
	}
	var names []string
	for n := range streamingOK {
		names = append(names, n)
	}
	slices.Sort(names)
	if len(names) == 0 {
		return nil
	}
	return names[:1]
}

// manageSync keeps synchronous replication and the FSM's Sync set in the
// safe order: a standby is added to synchronous_standby_names first and
// recorded in Sync only once PostgreSQL reports it as sync; one is removed
// from Sync first and from the setting after. In strict mode the setting
// is never emptied, so writes wait rather than go unprotected.
func (s *Supervisor) manageSync(ctx context.Context, st raftstore.State, pgst pgmanager.Status) {
	me := s.cfg.Member
	if !st.Config.SynchronousMode {
		if s.syncNames != "" {
			d, _ := s.desired(st, "", false)
			if err := s.pg.SetSynchronousStandbyNames(ctx, d); err == nil {
				s.syncNames = ""
			}
		}
		if st.Sync.Primary == me || len(st.Sync.Standbys) > 0 {
			_ = s.apply(ctx, raftstore.SetSync{Epoch: st.Leader.Epoch})
		}
		return
	}
	want := chooseSync(st, me, pgst, s.freshMembers(st))
	recorded := st.Sync.Standbys
	if st.Sync.Primary != me {
		recorded = nil
	}
	// Narrow first: drop from Sync whatever is no longer wanted.
	if !slices.Equal(recorded, want) && len(recorded) > 0 {
		keep := slices.DeleteFunc(slices.Clone(recorded), func(n string) bool { return !slices.Contains(want, n) })
		if !slices.Equal(keep, recorded) {
			if err := s.apply(ctx, raftstore.SetSync{Primary: me, Standbys: keep, Epoch: st.Leader.Epoch}); err != nil {
				s.logger.Warn("narrow sync set", "error", err)
				return
			}
			recorded = keep
		}
	}
	names := SyncStandbyNames(want)
	if names == "" && st.Config.SynchronousModeStrict {
		names = s.syncNames // strict: keep waiting on the last standby
	}
	if names != s.syncNames {
		d, _ := s.desired(st, "", false)
		d.SyncStandbyNames = names
		if err := s.pg.SetSynchronousStandbyNames(ctx, d); err != nil {
			s.logger.Warn("set synchronous_standby_names", "value", names, "error", err)
			return
		}
		s.logger.Info("synchronous_standby_names set", "value", names)
		s.syncNames = names
	}
	// Widen last: record a standby only once PostgreSQL confirms it.
	if len(want) == 1 && !slices.Contains(recorded, want[0]) && syncConfirmed(pgst, want[0]) {
		if err := s.apply(ctx, raftstore.SetSync{Primary: me, Standbys: want, Epoch: st.Leader.Epoch}); err != nil {
			s.logger.Warn("record sync standby", "member", want[0], "error", err)
			return
		}
		s.logger.Info("synchronous standby recorded", "member", want[0])
	}
}

func syncConfirmed(pgst pgmanager.Status, member string) bool {
	for _, r := range pgst.Replicas {
		if r.ApplicationName == member && r.SyncState == "sync" {
			return true
		}
	}
	return false
}

// freshMembers returns the members whose reported status changed within
// ttl on this host's clock.
func (s *Supervisor) freshMembers(st raftstore.State) map[string]bool {
	now := time.Now()
	s.seen.observe(st, now)
	return s.seen.fresh(now, st.Config.TTL)
}
