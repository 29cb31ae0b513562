package failover

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"raftgres/pgmanager"
	"raftgres/raftstore"
)

// GateStandbyNames renders synchronous_standby_names for a primary: the
// commit gate always comes first, then the synchronous standbys. With no
// standby in strict mode, any standby ("*") must confirm, so writes wait
// rather than go unprotected.
//
//	GateStandbyNames(nil, false)   = "raftgres_fence"
//	GateStandbyNames([B], _)       = FIRST 2 ("raftgres_fence", "B")
//	GateStandbyNames(nil, true)    = FIRST 2 ("raftgres_fence", *)
func GateStandbyNames(standbys []string, strict bool) string {
	q := []string{quoteStandby(pgmanager.GateName)}
	for _, s := range standbys {
		q = append(q, quoteStandby(s))
	}
	if len(standbys) == 0 && strict {
		q = append(q, "*")
	}
	if len(q) == 1 {
		return q[0]
	}
	return fmt.Sprintf("FIRST %d (%s)", len(q), strings.Join(q, ", "))
}

func quoteStandby(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// syncState is the holder's synchronous replication intent for one
// term (holderTerm). PostgreSQL's setting is read back every cycle and
// compared with names; nothing about PostgreSQL is cached here.
type syncState struct {
	// names is what synchronous_standby_names must be on this primary.
	names string
	// since holds, for a standby named in names but not yet recorded in
	// Sync, the primary's flush LSN read once the setting naming it was
	// in effect: every commit acknowledged before is at or below it.
	since map[string]uint64
	// okAt is when each standby was last seen streaming and fresh: a
	// recorded standby that stops for less than SyncBlip stays recorded
	// and in the setting (see keepThroughBlip).
	okAt map[string]time.Time
	// uncertain is set when a SetSync's outcome is unknown (see
	// applySync).
	uncertain bool
	// gate is the commit gate's quorum rule in quorum mode (quorum.go),
	// set from the record once per term (gateSet); quorumSince the
	// primary's WAL position read once the gate used it.
	gate        quorumRule
	gateSet     bool
	quorumSince *uint64
}

// SyncBlip is how long a recorded synchronous standby may stop streaming
// before the holder narrows it out: ttl/2. Narrowing on every blip left
// the record empty while PostgreSQL soon waited for the standby again, and
// a holder cut off then could never record it back: nobody was electable
// though every acknowledged commit was on that standby. Commits wait for
// the standby during a blip, as they would for any synchronous standby.
func SyncBlip(c raftstore.ClusterConfig) time.Duration { return c.TTL / 2 }

// keepThroughBlip adds to want the recorded standbys that stopped
// streaming less than SyncBlip ago, when want holds none of the recorded
// ones (the holder keeps one synchronous standby).
func keepThroughBlip(want, recorded []string, okAt map[string]time.Time, now time.Time, blip time.Duration) []string {
	for _, r := range recorded {
		if slices.Contains(want, r) {
			return want
		}
	}
	for _, r := range recorded {
		if at, ok := okAt[r]; ok && now.Sub(at) < blip {
			return []string{r}
		}
	}
	return want
}

// syncNames is the synchronous_standby_names value this member renders
// into its managed config: the holder's current intent; for a new tenure,
// the standbys the FSM records for this primary (so a restart never runs
// without them); on any other member the gate alone (a standby ignores
// it, and carries it into a promotion).
func (s *Supervisor) syncNames(st raftstore.State) string {
	if st.Leader.Holder != s.cfg.Member {
		return GateStandbyNames(nil, false)
	}
	if t := s.curTerm(); t.epoch == st.Leader.Epoch && t.sync.names != "" {
		return t.sync.names
	}
	if !st.Config.SynchronousMode {
		return GateStandbyNames(nil, false)
	}
	var recorded []string
	if st.Sync.Primary == s.cfg.Member {
		recorded = st.Sync.Standbys
	}
	return GateStandbyNames(recorded, st.Config.SynchronousModeStrict)
}

// chooseSync picks the synchronous standby: the current one while it
// streams, else the first streaming member (by name) not tagged nosync or
// nofailover (a synchronous copy that can never be promoted protects
// nothing: only Sync members may be elected). Only members in fresh (whose
// status reached the Raft store within StaleAfter, 2·ttl) count: a
// standby cut off by a partition still looks "streaming" in
// pg_stat_replication until wal_sender_timeout, and waiting on it would
// stall every commit for longer.
func chooseSync(st raftstore.State, me string, pgst pgmanager.Status, fresh map[string]bool) []string {
	streamingOK := map[string]bool{}
	for _, r := range pgst.Replicas {
		if m, ok := st.Members[r.ApplicationName]; ok && r.State == pgmanager.Streaming && fresh[r.ApplicationName] &&
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

// manageSync keeps synchronous replication, the commit gate and the FSM's
// Sync set in the safe order on the holder's primary:
//   - a standby is removed from Sync first and from the setting after;
//   - it is added to the setting first, and recorded in Sync only once
//     PostgreSQL reports it as sync AND its flush LSN covers everything
//     the primary had acknowledged before the setting named it
//     (TestNewSyncStandbyRecordedOnlyWhenItsFlushCoversEarlierCommits);
//   - the setting is compared with current_setting every cycle and
//     written again whenever it differs: a reload, a restart or an
//     operator's ALTER SYSTEM cannot silently turn it off
//     (TestReloadOnSyncPrimaryKeepsSynchronousStandbyNames);
//   - in strict mode it never drops to the gate alone
//     (TestStrictModeHolderStartsAndPromotesWithAStandbyRequired).
func (s *Supervisor) manageSync(ctx context.Context, st raftstore.State, pgst pgmanager.Status) {
	if st.Config.QuorumCommit() {
		s.manageQuorum(ctx, st, pgst)
		return
	}
	s.manageFirst(ctx, st, pgst)
	// A quorum record replaced: the gate stops counting its standbys.
	s.pushGate(s.gateRule(s.store.State()))
}

// manageFirst is manageSync outside quorum mode.
func (s *Supervisor) manageFirst(ctx context.Context, st raftstore.State, pgst pgmanager.Status) {
	me := s.cfg.Member
	if t := s.termAt(st.Leader.Epoch); t.sync.names == "" {
		t.sync.names = s.syncNames(st) // a new term: what the FSM records for this primary
	}
	intent := &s.term.sync
	var want []string
	recorded := st.Sync.Standbys
	if st.Sync.Primary != me {
		recorded = nil
	}
	// Every SetSync compare-and-sets on the record this cycle read, and
	// apply returns once the local store shows it: a lost reply retried,
	// or a stale view, can never restore an older record
	// (TestApplyWaitsForTheLocalStoreOnlyWhereItActs; the simulator's
	// mutation review3-sync-not-atomic).
	prev := st.Sync
	if st.Sync.Primary == me && st.Sync.Quorum > 0 {
		// A record of quorum mode, which just ended: the gate still
		// counts its standbys, and the synchronous setting may name
		// none of them yet. Record the primary alone (always true), and
		// the gate may stop counting; a standby is then recorded as in
		// synchronous mode.
		if _, err := s.applySync(ctx, raftstore.SetSync{Primary: me, Epoch: st.Leader.Epoch, Prev: &prev}); err != nil {
			s.logger.Warn("leave the quorum record", "error", err)
		}
		return
	}
	if !st.Config.SynchronousMode {
		if !st.Sync.NoRecord() {
			if _, err := s.applySync(ctx, raftstore.SetSync{Epoch: st.Leader.Epoch, Prev: &prev}); err != nil {
				s.logger.Warn("clear sync set", "error", err)
				return
			}
		}
		recorded = nil
	} else {
		if st.Sync.Primary != me {
			// The record is not this holder's (synchronous mode just
			// turned on, or a state from before the record was reset at
			// every election): record that this primary has no
			// synchronous standby yet, so nobody else counts as holding
			// its commits.
			next, err := s.applySync(ctx, raftstore.SetSync{Primary: me, Epoch: st.Leader.Epoch, Prev: &prev})
			if err != nil {
				s.logger.Warn("record sync primary", "error", err)
				return
			}
			prev = next
		} else if intent.uncertain {
			// A SetSync of this tenure has an unknown outcome: it may
			// still commit. Re-record what this view shows (a new Rev):
			// once that commits, the earlier one never can, and only then
			// may the setting drop a standby (TestSimSweep's regression
			// schedules: F2).
			next, err := s.applySync(ctx, raftstore.SetSync{Primary: me, Standbys: st.Sync.Standbys, Epoch: st.Leader.Epoch, Prev: &prev})
			if err != nil {
				s.logger.Warn("confirm the synchronous record after an unknown outcome", "error", err)
				return
			}
			s.logger.Info("synchronous record confirmed after an unknown outcome", "standbys", strings.Join(next.Standbys, ","))
			prev = next
		}
		fresh := s.freshMembers(st)
		want = chooseSync(st, me, pgst, fresh)
		now := s.clock.Now()
		if intent.okAt == nil {
			intent.okAt = map[string]time.Time{}
		}
		for _, r := range pgst.Replicas {
			if r.State == pgmanager.Streaming && fresh[r.ApplicationName] {
				intent.okAt[r.ApplicationName] = now
			}
		}
		if kept := keepThroughBlip(want, recorded, intent.okAt, now, SyncBlip(st.Config)); !slices.Equal(kept, want) {
			s.logger.Debug("synchronous standby kept through a blip", "member", kept[0], "was_wanted", strings.Join(want, ","))
			want = kept
		}
	}
	// Narrow first: drop from Sync whatever is no longer wanted.
	if len(recorded) > 0 && !slices.Equal(recorded, want) {
		keep := slices.DeleteFunc(slices.Clone(recorded), func(n string) bool { return !slices.Contains(want, n) })
		if !slices.Equal(keep, recorded) {
			next, err := s.applySync(ctx, raftstore.SetSync{Primary: me, Standbys: keep, Epoch: st.Leader.Epoch, Prev: &prev})
			if err != nil {
				s.logger.Warn("narrow sync set", "error", err)
				return
			}
			s.logger.Info("synchronous standby set narrowed", "standbys", strings.Join(keep, ","))
			recorded = keep
			prev = next
		}
	}
	names := GateStandbyNames(want, st.Config.SynchronousMode && st.Config.SynchronousModeStrict)
	if names != intent.names {
		intent.names, intent.since = names, nil
	}
	if pgst.SyncStandbyNames != names {
		// Whatever ran meanwhile was acknowledged without the standby: the
		// LSN it must cover is read again once the setting is back.
		intent.since = nil
		s.setSyncNames(ctx, st, pgst, names)
		return // the flush LSN that covers earlier commits is read next cycle
	}
	// Widen last: record a standby once PostgreSQL confirms it and it
	// holds every commit acknowledged before the setting named it.
	if len(want) != 1 || slices.Contains(recorded, want[0]) {
		return
	}
	cand := want[0]
	if intent.since == nil {
		intent.since = map[string]uint64{}
	}
	since, ok := intent.since[cand]
	if !ok {
		// This status was read with the setting in effect for new
		// backends. The walsenders apply it when they handle the reload:
		// the candidate's shows "sync" only once its own walsender has
		// (its sync_standby_priority is set by itself), and the gate's
		// walsender was signalled at the same moment. Only then does
		// every commit after this LSN wait for the candidate
		// (TestSyncSinceIsReadOnlyOnceTheWalsendersApplyTheSetting).
		if _, confirmed := syncConfirmed(pgst, cand); confirmed {
			intent.since[cand] = pgst.CurrentLSN
		}
		return
	}
	flush, confirmed := syncConfirmed(pgst, cand)
	if !confirmed || flush < since {
		return
	}
	if _, err := s.applySync(ctx, raftstore.SetSync{Primary: me, Standbys: want, Epoch: st.Leader.Epoch, Prev: &prev}); err != nil {
		s.logger.Warn("record sync standby", "member", cand, "error", err)
		return
	}
	s.logger.Info("synchronous standby recorded", "member", cand, "flush_lsn", pgmanager.FormatLSN(flush),
		"covers", pgmanager.FormatLSN(since))
}

// setSyncNames writes names as synchronous_standby_names (the managed
// config, reloaded), bounded by the lease; the next status shows it.
func (s *Supervisor) setSyncNames(ctx context.Context, st raftstore.State, pgst pgmanager.Status, names string) {
	d, err := s.desired(st, "", false)
	if err != nil {
		s.logger.Warn("set synchronous_standby_names", "value", names, "error", err)
		return
	}
	sctx, cancel := s.leaseBound(ctx, st, max(st.Config.RetryTimeout, FenceBudget))
	err = s.pg.SetSynchronousStandbyNames(sctx, d)
	cancel()
	if err != nil {
		s.logger.Warn("set synchronous_standby_names", "value", names, "had", pgst.SyncStandbyNames, "error", err)
		return
	}
	s.logger.Info("synchronous_standby_names set", "value", names, "had", pgst.SyncStandbyNames)
}

// applySync commits a SetSync and returns the record the local store then
// shows. An error other than a refused compare-and-set leaves the outcome
// unknown (a lost reply: the entry may still commit, even later than a
// newer one): the record must then be confirmed before the setting drops
// a standby (manageSync).
func (s *Supervisor) applySync(ctx context.Context, cmd raftstore.SetSync) (raftstore.SyncState, error) {
	err := s.apply(ctx, cmd)
	if err != nil {
		if !errors.Is(err, raftstore.ErrSyncMismatch) && !errors.Is(err, raftstore.ErrEpochMismatch) {
			s.term.sync.uncertain = true
		}
		return raftstore.SyncState{}, err
	}
	s.term.sync.uncertain = false
	return s.store.State().Sync, nil
}

// syncConfirmed returns member's flush LSN and whether PostgreSQL reports
// it as a synchronous standby.
func syncConfirmed(pgst pgmanager.Status, member string) (uint64, bool) {
	for _, r := range pgst.Replicas {
		if r.ApplicationName == member && r.SyncState == "sync" {
			return r.FlushLSN, true
		}
	}
	return 0, false
}

// freshMembers returns the members whose reported status changed within
// StaleAfter on this host's clock.
func (s *Supervisor) freshMembers(st raftstore.State) map[string]bool {
	now := s.clock.Now()
	s.reporter.seen.observe(st, now)
	return s.reporter.seen.fresh(now, st.Config.StaleAfter())
}
