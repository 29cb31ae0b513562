package failover

import (
	"context"
	"slices"
	"strings"
	"time"

	"raftgres/pgmanager"
	"raftgres/raftstore"
)

// Quorum commit (synchronous_mode: quorum, docs/design.md "Quorum
// commit"). PostgreSQL's setting names the commit gate alone; the gate
// confirms WAL only under the lease and once q of a set of standbys have
// flushed it (Postgres.SetGateQuorum). The holder keeps three things in
// an order that makes the record in Raft always true:
//
//   - the record (Sync.Standbys, Sync.Quorum = S, q): every commit
//     acknowledged in this tenure is on q of S;
//   - the gate's rule (A, a): every commit it confirms is on a of A;
//   - the setting: "raftgres_fence".
//
// A record (S, q) implies (S', q') when q' ≤ q − |S \ S'|. Before the
// gate takes a new rule D = (A, a), the record is widened to
// (S ∪ A, min(q, a)), implied both by the old record and by D; once the
// gate uses D and a of A have flushed the WAL written before
// (since), the record is narrowed to D itself. A record of no standby
// (the primary alone) is always true.

// quorumRule is a commit gate rule: confirm once Quorum of Names flushed.
type quorumRule struct {
	q     int
	names []string
}

func (r quorumRule) equal(o quorumRule) bool { return r.q == o.q && slices.Equal(r.names, o.names) }

// recordRule is what a record proves as a quorum rule: a record without
// Quorum (one standby, or outside quorum mode) has every standby holding
// every commit.
func recordRule(s raftstore.SyncState) quorumRule {
	q := s.Quorum
	if q == 0 {
		q = len(s.Standbys)
	}
	return quorumRule{q: q, names: slices.Clone(s.Standbys)}
}

// widenRecord is the record implied both by the current one and by the
// rule the gate is about to take: (S ∪ A, min(q, a)); the primary alone
// when that proves nothing.
func widenRecord(cur, next quorumRule) quorumRule {
	q := min(cur.q, next.q)
	if q == 0 {
		return quorumRule{}
	}
	names := slices.Clone(cur.names)
	for _, n := range next.names {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return quorumRule{q: q, names: names}
}

// quorumFlushed is the LSN that q of names have flushed, per PostgreSQL's
// pg_stat_replication (0 when fewer than q stream).
func quorumFlushed(pgst pgmanager.Status, r quorumRule) uint64 {
	if r.q == 0 {
		return ^uint64(0)
	}
	best := map[string]uint64{}
	for _, rep := range pgst.Replicas {
		if rep.State == pgmanager.Streaming && slices.Contains(r.names, rep.ApplicationName) {
			best[rep.ApplicationName] = max(best[rep.ApplicationName], rep.FlushLSN)
		}
	}
	var flushes []uint64
	for _, f := range best {
		flushes = append(flushes, f)
	}
	if len(flushes) < r.q {
		return 0
	}
	slices.Sort(flushes)
	return flushes[len(flushes)-r.q]
}

// quorumWant is the rule the gate should use now: the streaming, fresh
// standbys that may be promoted (not nosync, not nofailover), and
// k = synchronous_node_count of them; fewer when fewer stream, unless
// strict.
func quorumWant(st raftstore.State, me string, pgst pgmanager.Status, fresh map[string]bool) quorumRule {
	var names []string
	for _, r := range pgst.Replicas {
		m, ok := st.Members[r.ApplicationName]
		if !ok || r.State != pgmanager.Streaming || !fresh[r.ApplicationName] || m.Tags.NoSync || m.Tags.NoFailover ||
			r.ApplicationName == me || slices.Contains(names, r.ApplicationName) {
			continue
		}
		names = append(names, r.ApplicationName)
	}
	slices.Sort(names)
	q := st.Config.NodeCount()
	if !st.Config.SynchronousModeStrict {
		q = min(q, len(names))
	}
	if q == 0 {
		names = nil
	}
	return quorumRule{q: q, names: names}
}

// quorumKeepThroughBlip keeps in the rule the recorded standbys that
// stopped streaming less than SyncBlip ago, with the count they made: as
// in synchronous mode (keepThroughBlip), narrowing on every blip left the
// record proving nothing while the standbys soon streamed again, and a
// holder cut off then left nobody electable. Commits may wait for them
// during the blip, as for any synchronous standby.
func (s *Supervisor) quorumKeepThroughBlip(st raftstore.State, pgst pgmanager.Status, fresh map[string]bool,
	record, want quorumRule) quorumRule {
	intent := &s.curTerm().sync
	now := s.clock.Now()
	if intent.okAt == nil {
		intent.okAt = map[string]time.Time{}
	}
	for _, r := range pgst.Replicas {
		if r.State == pgmanager.Streaming && fresh[r.ApplicationName] {
			intent.okAt[r.ApplicationName] = now
		}
	}
	out := quorumRule{q: want.q, names: slices.Clone(want.names)}
	for _, n := range record.names {
		if at, ok := intent.okAt[n]; ok && now.Sub(at) < SyncBlip(st.Config) && !slices.Contains(out.names, n) {
			out.names = append(out.names, n)
		}
	}
	if len(out.names) == len(want.names) {
		return want
	}
	slices.Sort(out.names)
	out.q = st.Config.NodeCount()
	if !st.Config.SynchronousModeStrict {
		out.q = min(out.q, len(out.names))
	}
	return out
}

// gateRule is the rule the commit gate must hold on this holder: in
// synchronous mode without a record of this primary, confirm nothing; in
// quorum mode the term's, which starts as what the record proves for this
// primary (an agent restarted mid-term keeps its protection); outside it,
// the record's while a quorum record of this primary stands (until the
// synchronous path replaced it), else none.
func (s *Supervisor) gateRule(st raftstore.State) quorumRule {
	if st.Config.SynchronousMode && st.Sync.Primary != s.cfg.Member {
		// No record of this primary yet (a new cluster, synchronous mode
		// just turned on): anyone may be elected, so nothing may be
		// confirmed until the record names this primary (manageSync
		// writes it first; TestSimSweep seed 22577).
		return quorumRule{q: 1}
	}
	own := st.Sync.Primary == s.cfg.Member && st.Sync.Quorum > 0
	if !st.Config.QuorumCommit() {
		s.termAt(st.Leader.Epoch).sync.gateSet = false // back in quorum mode, start from the record again
		if own {
			return recordRule(st.Sync)
		}
		return quorumRule{}
	}
	t := s.termAt(st.Leader.Epoch)
	if !t.sync.gateSet {
		t.sync.gate, t.sync.gateSet = quorumRule{}, true
		if own {
			t.sync.gate = recordRule(st.Sync)
		}
		if st.Config.SynchronousModeStrict && t.sync.gate.q == 0 {
			t.sync.gate.q = st.Config.NodeCount() // nothing is confirmed until standbys are counted
		}
	}
	return t.sync.gate
}

// pushGate hands the gate its rule when it changed.
func (s *Supervisor) pushGate(r quorumRule) {
	if s.gatePushed != nil && s.gatePushed.equal(r) {
		return
	}
	s.pg.SetGateQuorum(r.q, slices.Clone(r.names)) // pgmanager logs the change
	s.gatePushed = &r
}

// manageQuorum is manageSync for quorum mode (see the top of this file).
func (s *Supervisor) manageQuorum(ctx context.Context, st raftstore.State, pgst pgmanager.Status) {
	me := s.cfg.Member
	t := s.termAt(st.Leader.Epoch)
	s.pushGate(s.gateRule(st)) // sets the term's rule from the record the first time
	intent := &t.sync
	prev := st.Sync
	switch {
	case st.Sync.Primary != me:
		// The record is not this holder's: the primary alone, the one
		// record true of any primary.
		next, err := s.applySync(ctx, raftstore.SetSync{Primary: me, Epoch: st.Leader.Epoch, Prev: &prev})
		if err != nil {
			s.logger.Warn("record sync primary", "error", err)
			return
		}
		prev = next
		s.pushGate(s.gateRule(s.store.State()))
	case intent.uncertain:
		next, err := s.applySync(ctx, raftstore.SetSync{Primary: me, Standbys: prev.Standbys, Quorum: prev.Quorum,
			Epoch: st.Leader.Epoch, Prev: &prev})
		if err != nil {
			s.logger.Warn("confirm the synchronous record after an unknown outcome", "error", err)
			return
		}
		prev = next
	}
	record := recordRule(prev)
	fresh := s.freshMembers(st)
	want := quorumWant(st, me, pgst, fresh)
	want = s.quorumKeepThroughBlip(st, pgst, fresh, record, want)
	// 1. Widen the record so that the next rule implies it.
	if w := widenRecord(record, want); !w.equal(record) {
		next, err := s.applySync(ctx, raftstore.SetSync{Primary: me, Standbys: w.names, Quorum: w.q,
			Epoch: st.Leader.Epoch, Prev: &prev})
		if err != nil {
			s.logger.Warn("widen the quorum record", "error", err)
			return
		}
		s.logger.Info("quorum record widened", "quorum", w.q, "standbys", strings.Join(w.names, ","))
		prev, record = next, w
	}
	// 2. The gate takes the rule; WAL confirmed before is read next cycle.
	if !intent.gate.equal(want) {
		intent.gate, intent.quorumSince = want, nil
		s.pushGate(want)
		return
	}
	// 3. The setting names the gate alone (the gate counts the standbys
	// now, so a FIRST setting of synchronous mode may go).
	names := GateStandbyNames(nil, false)
	intent.names = names
	if pgst.SyncStandbyNames != names {
		intent.quorumSince = nil
		s.setSyncNames(ctx, st, pgst, names)
		return
	}
	// 4. Narrow the record to the rule once it covers what was confirmed
	// before the rule (this status was read after the gate took it and
	// the setting was in effect).
	if record.equal(want) {
		return
	}
	if intent.quorumSince == nil {
		since := pgst.CurrentLSN
		intent.quorumSince = &since
		return
	}
	if got := quorumFlushed(pgst, want); got < *intent.quorumSince {
		return
	}
	rec := raftstore.SetSync{Primary: me, Standbys: want.names, Quorum: want.q, Epoch: st.Leader.Epoch, Prev: &prev}
	if _, err := s.applySync(ctx, rec); err != nil {
		s.logger.Warn("record the quorum", "error", err)
		return
	}
	s.logger.Info("quorum recorded", "quorum", want.q, "standbys", strings.Join(want.names, ","),
		"covers", pgmanager.FormatLSN(*intent.quorumSince))
}

// leaseOver is the key state whose lease this member, not its holder,
// has seen end by now: released, or first seen at least LeaseTTL ago on
// this host's clock (a renewal applied by then lets the holder's lease
// run no longer: the coordinator's countdown, leaseCountdown, argues the
// same). Positions read after it count for an election in quorum mode
// (raftstore.State.QuorumReady). Nil when it has not ended, or when not
// in quorum mode.
func (s *Supervisor) leaseOver(st raftstore.State, now time.Time) *raftstore.KeyRef {
	s.seeKey(st, now)
	ref := st.Leader.Ref()
	if !st.Config.QuorumCommit() || st.Leader.Holder == s.cfg.Member || st.Leader.Epoch == 0 {
		return nil
	}
	if p, _ := st.MinProtocol(st.MemberNames()); p < 2 {
		return nil
	}
	if st.Leader.Holder == "" || now.Sub(s.keySeen.at) >= st.LeaseTTL() {
		return &ref
	}
	return nil
}

// seeKey notes when this member first saw the key's current state (a
// renewal, an acquire, a release): the loop calls it every round, and
// waitNext at every change of the store, so that a renewal applied while
// the loop waits is dated when it was applied, not at the next round.
func (s *Supervisor) seeKey(st raftstore.State, now time.Time) {
	if ref := st.Leader.Ref(); s.keySeen.ref != ref {
		s.keySeen.ref, s.keySeen.at = ref, now
	}
}

// untilLeaseOver is how long until leaseOver can turn true with no new
// renewal (the loop wakes then to report at once); zero when it does not
// apply.
func (s *Supervisor) untilLeaseOver(st raftstore.State, now time.Time) time.Duration {
	if !st.Config.QuorumCommit() || st.Leader.Holder == "" || st.Leader.Holder == s.cfg.Member ||
		s.keySeen.ref != st.Leader.Ref() || !slices.Contains(st.Sync.Standbys, s.cfg.Member) {
		return 0
	}
	return s.keySeen.at.Add(st.LeaseTTL()).Sub(now)
}
