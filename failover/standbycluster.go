package failover

import (
	"context"
	"errors"
	"fmt"

	"raftgres/pgmanager"
	"raftgres/raftstore"
)

// SourceCluster names a standby cluster's source in plans (Action.From,
// Action.Primary) and as the local standby's upstream: no member name
// can be it (config.ValidName). See docs/operations/standby-cluster.md.
const SourceCluster = "@source"

// decideStandbyLeader is decideHolder in a standby cluster: the holder,
// the standby leader, replicates from the source and is never promoted.
// A primary (the cluster was just demoted) is stopped and rewound onto
// the source, or recloned from it; a standby whose walreceiver the source
// refuses (its WAL went past the point where the source's timeline
// forked) is rewound the same way.
func decideStandbyLeader(o Observation) Plan {
	src := o.State.Config.StandbyCluster.Source()
	// pg_rewind needs a server to copy from: from the archive alone,
	// only a new copy will do.
	rewind := o.State.Config.PostgreSQL.UsePgRewind && o.State.Config.StandbyCluster.Host != ""
	onto := func(why string) Plan {
		if !rewind {
			return plan(why+" (no pg_rewind: use_pg_rewind is off, or no host to rewind from): recloning from the source cluster",
				Action{Kind: ActReclone, From: SourceCluster})
		}
		return plan(why+": rewinding onto the source cluster", Action{Kind: ActFollow, Primary: SourceCluster, Rewind: true})
	}
	switch {
	case o.RewindFailed:
		return plan("pg_rewind cannot bring this member onto the source cluster "+src+"'s timeline",
			Action{Kind: ActReclone, From: SourceCluster})
	case o.PG.Running && !o.PG.InRecovery:
		return onto("standby cluster: this primary becomes the standby leader of " + src)
	case !o.PG.Running && !o.LeaseValid:
		return noop("standby leader: waiting for a confirmed renewal before starting")
	case !o.PG.Running && !o.Standby:
		return onto("standby cluster: a former primary's data directory must follow " + src)
	case !o.PG.Running && o.StandbyStartFailed:
		return onto("could not start as a standby of " + src)
	case !o.PG.Running:
		return plan("standby leader: replicating from "+src, Action{Kind: ActStartStandby, Primary: SourceCluster})
	case o.PG.WalReceiverDiverged:
		return onto("the source cluster " + src + " refuses this standby's position")
	case o.SwitchoverDue:
		to := ""
		if f := o.State.Failover; f != nil {
			to = f.To
		}
		return plan("switchover of the standby leader requested", Action{Kind: ActHandOver, Primary: to})
	case o.Upstream != SourceCluster:
		return plan(fmt.Sprintf("standby leader following %q: repointing to %s", o.Upstream, src),
			Action{Kind: ActFollow, Primary: SourceCluster})
	}
	return noop("standby leader replicating from " + src)
}

// decideStandbyBootstrap is the bootstrap race's winner in a standby
// cluster: the first data directory is a copy of the source, not initdb.
func decideStandbyBootstrap(o Observation) Plan {
	if o.PG.Running && !o.PG.InRecovery {
		// An adopted primary data directory: onto the source first.
		return decideStandbyLeader(o)
	}
	if !o.HasData {
		return plan("won the bootstrap race of a standby cluster: copying the source cluster "+
			o.State.Config.StandbyCluster.Source(), Action{Kind: ActClone, From: SourceCluster})
	}
	var acts []Action
	if !o.PG.Running {
		acts = append(acts, Action{Kind: ActStartStandby, Primary: SourceCluster})
	}
	return plan("a copy of the source cluster (made or adopted here) not yet recorded", append(acts, Action{Kind: ActRecordInit})...)
}

// leads reports whether a member's report shows it running as the
// cluster's leader: a primary, or in a standby cluster a standby leader.
func leads(st raftstore.State, ms raftstore.MemberStatus) bool {
	if ms.State != raftstore.StateRunning {
		return false
	}
	return ms.Role == raftstore.RolePrimary || st.Config.IsStandbyCluster() && ms.Role == raftstore.RoleStandbyLeader
}

// sourceDesired is the PostgreSQL settings of the standby leader: a
// standby of the source cluster (or of its archive only), through the
// configured slot.
func sourceDesired(d pgmanager.Desired, sc *raftstore.StandbyCluster) pgmanager.Desired {
	d.Replica = true
	d.RestoreCommand = sc.RestoreCommand
	d.Slot = sc.PrimarySlotName
	d.ReplicaMethods = sc.Methods()
	if sc.Host != "" {
		d.Standby = &pgmanager.Upstream{Name: "source cluster " + sc.Source(), Host: sc.Host, Port: sc.SourcePort()}
	}
	return d
}

// ErrForeignSource refuses to rewind or reclone onto a standby cluster's
// source that is another system than the cluster's (a wrong
// standby_cluster.host): that would destroy the data for a copy that is
// then refused anyway.
var ErrForeignSource = errors.New("the source cluster is another system")

// checkSource, before a rewind onto or a new copy of the source of an
// initialised cluster, asks the source for its system identifier. It
// also means that nothing is stopped or removed while the source cannot
// be reached.
func (s *Supervisor) checkSource(ctx context.Context, st raftstore.State, d pgmanager.Desired) error {
	if st.Initialize == "" || d.Standby == nil {
		return nil
	}
	got, err := s.pg.UpstreamSystemID(ctx, d)
	if err != nil {
		return fmt.Errorf("reach the source cluster before rewinding or copying it: %w", err)
	}
	return sourceMatches(st, got)
}

// watchSource escalates a standby leader that the source still refuses
// after pg_rewind (as watchStreaming does for a replica): after two such
// rounds it is recloned, not rewound a third time.
func (s *Supervisor) watchSource(st raftstore.State, pgst pgmanager.Status) {
	if !st.Config.IsStandbyCluster() || st.Leader.Holder != s.cfg.Member {
		return
	}
	if pgst.WalReceiver == pgmanager.Streaming && s.standby.upstream == SourceCluster {
		s.standby.rewoundFails, s.standby.rewound = 0, false
		return
	}
	if !pgst.WalReceiverDiverged || !s.standby.rewound {
		return
	}
	s.standby.rewound = false // one count per rewind
	s.standby.rewoundFails++
	if s.standby.rewoundFails >= 2 {
		s.logger.Warn("the source still refuses this standby leader's position after pg_rewind: recloning",
			"tries", s.standby.rewoundFails)
		s.standby.rewindFailed = true
	}
}

// checkSourceOrStop is checkSource for an action that would replace the
// local data; when the source does not pass, a primary (the cluster was
// demoted) is stopped all the same: the site takes no more writes, and its
// data stays as it is until the source can be checked.
func (s *Supervisor) checkSourceOrStop(ctx context.Context, st raftstore.State, d pgmanager.Desired) error {
	err := s.checkSource(ctx, st, d)
	if err == nil || !s.pg.Running() || s.pg.IsStandbyConfigured() {
		return err
	}
	s.logger.Warn("standby cluster: stopping the primary; its data stays until the source can be checked", "error", err)
	if serr := s.pg.Stop(ctx, pgmanager.StopFast); serr != nil {
		return errors.Join(err, serr)
	}
	return err
}

// sourceMatches is checkSource's verdict on the source's system
// identifier got.
func sourceMatches(st raftstore.State, got string) error {
	if got == st.Initialize {
		return nil
	}
	src := "unset"
	if sc := st.Config.StandbyCluster; sc != nil {
		src = sc.Source()
	}
	return fmt.Errorf("%w (%s; this cluster is %s): not rewinding or recloning onto it; check standby_cluster.host "+
		"(%s)", ErrForeignSource, got, st.Initialize, src)
}
