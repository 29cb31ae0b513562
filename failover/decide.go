package failover

import (
	"fmt"
	"slices"
	"strconv"

	"raftgres/pgmanager"
	"raftgres/raftstore"
)

// Observation is everything Decide looks at: a plain value the supervisor
// assembles each loop from the FSM, the local PostgreSQL and its own
// monotonic clock.
type Observation struct {
	// Member is this node's name; Tags its tags.
	Member string
	Tags   raftstore.Tags
	// State is a copy of the replicated state.
	State raftstore.State
	// PG is the latest status of the local PostgreSQL.
	PG pgmanager.Status
	// HasData reports a data directory; DataSystemID is its system
	// identifier from pg_control ("" when unknown).
	HasData      bool
	DataSystemID string
	// Standby reports standby.signal in the data directory; Upstream is the
	// member it was last configured to follow.
	Standby  bool
	Upstream string
	// LeaseValid is the holder's own fencing rule: the last acknowledged
	// renewal was sent less than ttl − margin ago (monotonic clock).
	LeaseValid bool
	// RewindFailed is set after pg_rewind failed against the current
	// primary: the data must be recloned.
	RewindFailed bool
	// Crashes counts unexpected PostgreSQL exits since it last ran healthy;
	// past MaxCrashes the holder releases the key.
	Crashes    int
	MaxCrashes int
	// SwitchoverDue is set when State.Failover asks this holder for a
	// switchover whose scheduled time (wall clock) has come.
	SwitchoverDue bool
	// HandedOver is set after this member shut down cleanly and handed the
	// key over: it can follow the new primary without pg_rewind.
	HandedOver bool
	// StandbyStartFailed is set when starting as a standby of the current
	// primary failed, or a running standby has not streamed from it for
	// two ttls (e.g. its timeline forked before our WAL ends).
	StandbyStartFailed bool
	// Data is how far a stopped data directory's WAL goes, from pg_control
	// (ControlPosition); zero when unknown. A running PostgreSQL's
	// position is taken from PG instead.
	Data Position
	// Voters are the members of the Raft configuration, when known:
	// adoption waits until each has registered and reported, so that a
	// stale data directory whose agent started first does not win the
	// bootstrap key before the newest one is even seen. Nil: only the
	// registered members are compared.
	Voters []string
	// PrimaryOverdue is set when the key's holder, another member, has
	// not reported itself a running primary for ttl since this member
	// first saw it hold the key, or its reports went stale (this host's
	// clock): it may never come up or back, and a stopped member then
	// starts read-only so that it can be elected (a replaced primary is
	// electable while the new holder never renewed, and anyone in
	// asynchronous mode, but only as a running replica).
	PrimaryOverdue bool
}

// ActRecordInit records the local system identifier in the FSM (the
// bootstrapper, after a restart between initdb and recording it).
const ActRecordInit ActionKind = "record_init"

// Decide maps an observation to a plan. It is pure: no clock, no I/O.
// Safety rules come first: a writable PostgreSQL that does not hold a valid
// lease is stopped; a data directory of another system is never touched; a
// standby is promoted only when the leader key names this member.
func Decide(o Observation) Plan {
	st, me := o.State, o.Member
	holder := st.Leader.Holder
	if o.HasData && st.Initialize != "" && o.DataSystemID != "" && o.DataSystemID != st.Initialize {
		return plan(fmt.Sprintf("data directory belongs to system %s, the cluster is %s: not touching it",
			o.DataSystemID, st.Initialize), Action{Kind: ActRefuse})
	}
	if o.PG.Running && o.PG.Error != "" && !streamFailed(o) {
		// A failed status query says nothing about the role: never act on
		// it. A writable server without the lease cannot acknowledge a
		// commit anyway (the commit gate), and the fencer still runs.
		return noop("postgres status unknown: " + o.PG.Error)
	}
	if p, ok := fence(o); ok {
		return p
	}
	if st.Config.Pause {
		return noop("cluster paused: no automatic action")
	}
	if st.Initialize == "" {
		return decideUninitialized(o)
	}
	if !o.HasData {
		return decideNoData(o)
	}
	switch holder {
	case me:
		return decideHolder(o)
	case "":
		return decideNoPrimary(o)
	}
	if st.Config.IsStandbyCluster() {
		// demote-cluster discarded this site's own history on purpose:
		// its timelines may number higher than the source's.
		return decideFollower(o, holder)
	}
	return keepNewerData(o, holder, decideFollower(o, holder))
}

// fence stops a PostgreSQL that accepts writes without the right to: the
// key names someone else (paused or not), or the key is ours but the lease
// is not confirmed. Pause stops automatic actions, not safety: a paused
// holder that cannot renew stops too, so a resume on the other side of a
// partition cannot create a second writer
// (TestPausedHolderWithFailingRenewalsIsFenced).
func fence(o Observation) (Plan, bool) {
	if !o.PG.Running || o.PG.InRecovery {
		return Plan{}, false
	}
	holder := o.State.Leader.Holder
	switch {
	case holder != o.Member && holder != "":
		return plan("writable but the leader key is held by "+holder, Action{Kind: ActDemote, Mode: "immediate"}), true
	case holder == "" && o.State.Initialize == "" && o.HasData:
		// Adoption (decideUninitialized): a primary that ran before raftgres
		// (Patroni paused and stopped, or by hand) keeps running while
		// its member takes the bootstrap key; once anyone holds it, the
		// case above fences every other writer.
		return Plan{}, false
	case holder == "" && !o.State.Config.Pause:
		return plan("writable but nobody holds the leader key", Action{Kind: ActDemote, Mode: "immediate"}), true
	case holder == o.Member && !o.LeaseValid:
		return plan("lease not confirmed within ttl - margin", Action{Kind: ActDemote, Mode: "immediate"}), true
	}
	return Plan{}, false
}

func decideUninitialized(o Observation) Plan {
	holder := o.State.Leader.Holder
	switch {
	case o.HasData && holder == o.Member && !o.LeaseValid:
		return noop("initialised here: waiting for a confirmed renewal")
	case o.HasData && holder == o.Member && o.State.Config.IsStandbyCluster():
		return decideStandbyBootstrap(o)
	case o.HasData && holder == o.Member:
		if name, theirs := newerPeer(o); name != "" {
			// A more advanced data directory reported after this one took
			// the key: give the key up before this system is recorded
			// and the newer one is made to follow (and rewound).
			return plan(fmt.Sprintf("adopting: %s's data directory is more advanced (%s; this one: %s): "+
				"giving the bootstrap key up", name, theirs, localPosition(o)), Action{Kind: ActRelease})
		}
		var acts []Action
		if !o.PG.Running {
			acts = append(acts, Action{Kind: ActStartPrimary})
		}
		return plan("initialised here but not yet recorded", append(acts, Action{Kind: ActRecordInit})...)
	case o.HasData && holder != "":
		return noop("data directory exists: waiting for " + holder + " to record the cluster it adopts")
	case o.HasData && (o.PG.Running && o.PG.InRecovery || !o.PG.Running && o.Standby) && !o.State.Config.IsStandbyCluster():
		// (In a standby cluster every data directory is a standby: the
		// most advanced one is adopted as the standby leader's, below.)
		return noop("adopting: this data directory is a standby; waiting for the primary's member to take the bootstrap key")
	case o.HasData && o.Tags.NoFailover:
		return noop("adopting: nofailover: waiting for another member to take the bootstrap key")
	case o.HasData:
		// A data directory that is a primary (running writable, or stopped
		// without standby.signal): adopt it if it is the most advanced
		// of those that reported (TestDecideAdoption): a stale former primary stopped
		// without standby.signal must not win the key against the live
		// one, which would then be rewound onto the older timeline. The
		// member that takes the key records its system identifier; the
		// others then follow it (same system) or are refused (another
		// system).
		if p, ok := adoptionCheck(o); ok {
			return p
		}
		what := "primary"
		if o.State.Config.IsStandbyCluster() {
			what = "standby cluster's"
		}
		return plan("adopting the existing "+what+" data directory (the most advanced reported)", Action{Kind: ActAcquireBootstrap})
	case holder == o.Member && !o.LeaseValid:
		return noop("won the bootstrap race: waiting for a confirmed renewal")
	case holder == o.Member && o.State.Config.IsStandbyCluster():
		return decideStandbyBootstrap(o)
	case holder == o.Member:
		return plan("won the bootstrap race", Action{Kind: ActInit})
	case holder != "":
		return noop("waiting for " + holder + " to initialise the cluster")
	case o.Tags.NoFailover:
		return noop("nofailover: waiting for another member to bootstrap")
	}
	return plan("cluster not initialised", Action{Kind: ActAcquireBootstrap})
}

func decideNoData(o Observation) Plan {
	if o.State.Leader.Holder == o.Member {
		return plan("holding the leader key without a data directory", Action{Kind: ActRelease})
	}
	src := CloneSource(o.State, o.Member)
	if src == "" {
		return noop("no data directory and no running member to clone from")
	}
	up := o.State.Leader.Holder
	if up == "" {
		up = src
	}
	return plan("no data directory", Action{Kind: ActClone, From: src}, Action{Kind: ActStartStandby, Primary: up})
}

func decideHolder(o Observation) Plan {
	if f := o.State.Failover; f != nil && f.Hard && f.From == o.Member {
		// A drill of a crash: no shutdown checkpoint, no hand-over; the
		// election decides without this member.
		return plan("hard failover requested (drill)", Action{Kind: ActRelease, Mode: "immediate"})
	}
	if o.Tags.NoFailover && (o.Standby || o.PG.InRecovery) {
		return plan("nofailover: never promoted", Action{Kind: ActRelease})
	}
	if (!o.PG.Running || o.PG.InRecovery) && o.MaxCrashes > 0 && o.Crashes >= o.MaxCrashes {
		return plan(fmt.Sprintf("postgres crashed or failed to start or promote %d times", o.Crashes), Action{Kind: ActRelease})
	}
	if o.State.Config.IsStandbyCluster() {
		return decideStandbyLeader(o)
	}
	if !o.PG.Running {
		if !o.LeaseValid {
			return noop("holding the key, waiting for a confirmed renewal before starting")
		}
		if o.Standby {
			return plan("leader key is mine", Action{Kind: ActStartStandby}, Action{Kind: ActPromote})
		}
		return plan("leader key is mine", Action{Kind: ActStartPrimary})
	}
	if o.PG.InRecovery {
		if !o.LeaseValid {
			return noop("holding the key, waiting for a confirmed renewal before promoting")
		}
		return plan("leader key is mine", Action{Kind: ActPromote})
	}
	if o.SwitchoverDue {
		to := ""
		if f := o.State.Failover; f != nil {
			to = f.To
		}
		return plan("switchover requested", Action{Kind: ActHandOver, Primary: to})
	}
	return noop("primary with a valid lease")
}

func decideNoPrimary(o Observation) Plan {
	if !o.PG.Running {
		return plan("no primary: starting read-only to be a candidate", Action{Kind: ActStartStandby})
	}
	return noop("no primary: waiting for an election")
}

// keepNewerData refuses a follower's plan that would rewind or reclone a
// data directory on a newer timeline than the primary's (a stale data
// directory adopted before this one was seen): newer data is never
// destroyed to follow an older timeline (TestDecideInvariants,
// TestDecideAdoption). Starting or repointing a standby
// is left alone (PostgreSQL refuses to follow an older timeline, and
// touches nothing); so is a plan while either timeline is unknown. A
// primary's reported timeline is its latest checkpoint's, which may lag
// a promotion until the next checkpoint: a rewind may then wait, never
// run wrongly.
func keepNewerData(o Observation, primary string, p Plan) Plan {
	destroys := false
	for _, a := range p.Actions {
		destroys = destroys || a.Kind == ActReclone || a.Kind == ActFollow && a.Rewind
	}
	m, ok := o.State.Members[primary]
	if !destroys || !ok {
		return p
	}
	mine, theirs := localPosition(o), reportedPosition(m.Status)
	if mine.Timeline == 0 || theirs.Timeline == 0 || mine.Timeline <= theirs.Timeline {
		return p
	}
	return plan(fmt.Sprintf("this data directory (%s) is on a newer timeline than the primary %s's (%s): "+
		"not rewinding or recloning it (%s); to discard it: raftgres reinit %s; to keep it, stop every agent and "+
		"make it the only primary data directory (move %s's aside), then start them again",
		mine, primary, theirs, p.Steps(), o.Member, primary), Action{Kind: ActRefuse})
}

// streamFailed is the one case where a failed status query is acted on:
// a configured standby of another member that refuses connections
// because it is not yet consistent, while its walreceiver keeps failing
// in a way that does not heal (pgmanager.Status.StreamFailing), and that
// the supervisor has already found not streaming for long
// (StandbyStartFailed) or beyond pg_rewind's help (RewindFailed). Left
// alone it would wait for ever; decideFollower rewinds or reclones it.
func streamFailed(o Observation) bool {
	return o.PG.StreamFailing && o.PG.InRecovery && o.Standby && (o.StandbyStartFailed || o.RewindFailed) &&
		o.State.Leader.Holder != "" && o.State.Leader.Holder != o.Member
}

func decideFollower(o Observation, primary string) Plan {
	if m, ok := o.State.Members[primary]; !ok || !leads(o.State, m.Status) {
		// Rewinding against (or streaming from) a member that has not
		// finished promoting would compare against the old timeline.
		if !o.PG.Running && o.PrimaryOverdue {
			return plan(primary+" has not come up as primary within ttl: starting read-only to be a candidate",
				Action{Kind: ActStartStandby})
		}
		return noop("waiting for " + primary + " to report itself a running primary")
	}
	if !o.PG.Running && o.PrimaryOverdue {
		// Its report went stale: following it (a rewind, a clone or a
		// standby start against it) may never work; read-only, this
		// member can be elected if it is gone (the simulator's F4).
		return plan(primary+" has not reported for 2·ttl: starting read-only to be a candidate",
			Action{Kind: ActStartStandby})
	}
	switch {
	case o.RewindFailed:
		return plan("pg_rewind cannot bring this member onto "+primary+"'s timeline", Action{Kind: ActReclone, From: primary})
	case o.PG.Running && o.PG.InRecovery && o.StandbyStartFailed:
		return plan("not streaming from "+primary+": checking for divergence",
			Action{Kind: ActFollow, Primary: primary, Rewind: o.State.Config.PostgreSQL.UsePgRewind})
	case !o.PG.Running && !o.Standby && o.HandedOver:
		return plan("handed over cleanly: following "+primary, Action{Kind: ActFollow, Primary: primary})
	case !o.PG.Running && !o.Standby:
		return plan("former primary must follow "+primary,
			Action{Kind: ActFollow, Primary: primary, Rewind: o.State.Config.PostgreSQL.UsePgRewind})
	case !o.PG.Running && o.StandbyStartFailed && !o.State.Config.PostgreSQL.UsePgRewind:
		return plan("could not start as a standby of "+primary+" and pg_rewind is off", Action{Kind: ActReclone, From: primary})
	case !o.PG.Running && o.StandbyStartFailed:
		return plan("could not start as a standby of "+primary+": checking for divergence",
			Action{Kind: ActFollow, Primary: primary, Rewind: true})
	case !o.PG.Running:
		return plan("replica of "+primary, Action{Kind: ActStartStandby, Primary: primary})
	case o.Upstream != primary:
		// Repoint without a restart (primary_conninfo reloads). A replica
		// that received WAL the new primary never had cannot stream from
		// it; after two ttls without streaming it is checked with pg_rewind
		// (StandbyStartFailed above).
		return plan(fmt.Sprintf("following %q, primary is %s", o.Upstream, primary),
			Action{Kind: ActFollow, Primary: primary})
	}
	return noop("streaming from " + primary)
}

// CloneSource picks the member to clone from: a running member tagged
// clonefrom first, then a running replica, then the primary; ties by name.
func CloneSource(st raftstore.State, me string) string {
	type cand struct {
		name string
		rank int
	}
	var cs []cand
	for _, name := range st.MemberNames() {
		m := st.Members[name]
		if name == me || m.Status.State != raftstore.StateRunning {
			continue
		}
		rank := 2
		switch {
		case m.Tags.CloneFrom:
			rank = 0
		case name != st.Leader.Holder && m.Status.Role == raftstore.RoleReplica:
			rank = 1
		}
		cs = append(cs, cand{name, rank})
	}
	if len(cs) == 0 {
		return ""
	}
	slices.SortStableFunc(cs, func(a, b cand) int { return a.rank - b.rank })
	return cs[0].name
}

// Position is how far a data directory's WAL goes: a timeline and an LSN
// on it, each 0 when unknown. The LSN is a lower bound of the end of WAL
// (a stopped directory's latest checkpoint, a running server's flush or
// receive position).
type Position struct {
	Timeline uint32
	LSN      uint64
}

func (p Position) String() string {
	if p.Timeline == 0 {
		return "position unknown"
	}
	if p.LSN == 0 {
		return fmt.Sprintf("timeline %d, LSN unknown", p.Timeline)
	}
	return fmt.Sprintf("timeline %d, LSN %s", p.Timeline, pgmanager.FormatLSN(p.LSN))
}

// ControlPosition reads a stopped data directory's Position from
// pg_controldata's output (pgmanager.ParseControlData): the latest
// checkpoint's timeline and location, or, when a standby replayed onto a
// newer timeline than its latest restartpoint's, the minimum recovery
// ending point on that timeline. On one timeline the checkpoint is the
// measure every data directory shares: a standby's restartpoints are
// its primary's checkpoints, so it never looks ahead of its primary
// (the minimum recovery point, the end of a replayed record, would: past
// a clean shutdown's checkpoint, by that record's length). Zero when the
// fields are missing or unreadable (for instance in another lc_messages).
func ControlPosition(cd map[string]string) Position {
	read := func(tlKey, lsnKey string) Position {
		tl, err1 := strconv.ParseUint(cd[tlKey], 10, 32)
		lsn, err2 := pgmanager.ParseLSN(cd[lsnKey])
		if err1 != nil || err2 != nil || tl == 0 {
			return Position{}
		}
		return Position{Timeline: uint32(tl), LSN: lsn}
	}
	p := read("Latest checkpoint's TimeLineID", "Latest checkpoint location")
	if m := read("Min recovery ending loc's timeline", "Minimum recovery ending location"); m.Timeline > p.Timeline {
		return m
	}
	return p
}

// localPosition is this member's own position: the running server's, or
// the stopped data directory's (Observation.Data).
func localPosition(o Observation) Position {
	if !o.PG.Running || o.PG.Error != "" {
		return o.Data
	}
	if o.PG.InRecovery {
		return Position{Timeline: o.PG.Timeline, LSN: max(o.PG.ReceivedLSN, o.PG.ReplayedLSN)}
	}
	return Position{Timeline: o.PG.Timeline, LSN: o.PG.CurrentLSN}
}

// reportedPosition is a member's position as its last report gives it.
func reportedPosition(ms raftstore.MemberStatus) Position {
	return Position{Timeline: ms.Timeline, LSN: max(ms.WrittenLSN, ms.ReceivedLSN, ms.ReplayedLSN)}
}

// order is how two positions compare.
type order int

const (
	orderUnknown  order = iota // a timeline, or the LSNs on one timeline, unknown
	orderBehind                // the other is more advanced
	orderSame                  // same timeline and LSN
	orderAhead                 // more advanced than the other
	orderDiverged              // each holds WAL the other lacks
)

// compare orders a against b: the higher timeline first, then on one
// timeline the higher LSN. A higher timeline with a lower LSN than the
// other's (both known) means the other wrote past the point where the
// higher timeline forked from it (the fork is at or before the higher
// timeline's LSN): the histories diverged, and neither holds everything.
func compare(a, b Position) order {
	switch {
	case a.Timeline == 0 || b.Timeline == 0:
		return orderUnknown
	case a.Timeline != b.Timeline:
		hi, lo, ahead := a, b, orderAhead
		if b.Timeline > a.Timeline {
			hi, lo, ahead = b, a, orderBehind
		}
		if hi.LSN != 0 && lo.LSN > hi.LSN {
			return orderDiverged
		}
		return ahead
	case a.LSN == 0 || b.LSN == 0:
		return orderUnknown
	case a.LSN > b.LSN:
		return orderAhead
	case a.LSN < b.LSN:
		return orderBehind
	}
	return orderSame
}

// compareReported orders this member's position (mine) against another
// member's report. A stopped directory's position is its latest
// checkpoint, a running server's the end of its WAL: on one timeline a
// running server past this stopped directory's checkpoint does not show
// it is behind (a standby that received this primary's last records),
// so that is orderUnknown. Checkpoint against checkpoint compares: a
// standby's restartpoints are its primary's checkpoints.
func compareReported(o Observation, mine Position, ms raftstore.MemberStatus) order {
	theirs := reportedPosition(ms)
	rel := compare(mine, theirs)
	if rel == orderBehind && mine.Timeline == theirs.Timeline && ms.State == raftstore.StateRunning && !(o.PG.Running && o.PG.Error == "") {
		return orderUnknown
	}
	return rel
}

// chooseHint tells the operator how to choose which data directory is
// adopted when raftgres cannot.
const chooseHint = "to choose, stop the agents of the data directories that must not win and move those " +
	"directories aside (they are cloned afresh from the one adopted), or, to adopt a standby's data, " +
	"remove its standby.signal with its agent stopped; then start the agents again"

// adoptionCheck decides whether this member's primary data directory may
// take the bootstrap key: only when it is at least as advanced as every
// other member's data directory of the same system that has reported
// (and every Raft voter has). It returns a plan when it must not: a noop
// while a report is awaited, a refusal (logged, with how the operator
// chooses) when another directory is more advanced, when it cannot
// tell, or when the histories diverged.
func adoptionCheck(o Observation) (Plan, bool) {
	st, mine := o.State, localPosition(o)
	for _, name := range o.Voters {
		if _, ok := st.Members[name]; !ok && name != o.Member {
			return noop("adopting: waiting for " + name + " (a Raft voter) to register and report its data directory " +
				"before choosing which one to adopt (if its host is gone for good: raftgres leave " + name + ")"), true
		}
	}
	for _, name := range st.MemberNames() {
		m := st.Members[name]
		ms := m.Status
		switch {
		case name == o.Member || ms.Role == raftstore.RoleUninitialized:
			continue
		case ms.Role == "" && ms.ReportedAt.IsZero():
			return noop("adopting: waiting for " + name + "'s first report before choosing which data directory to adopt " +
				"(if its host is gone for good: raftgres leave " + name + ")"), true
		case ms.SystemID != "" && o.DataSystemID != "" && ms.SystemID != o.DataSystemID:
			continue // another system: never replicates with this one, whichever is adopted
		}
		theirs := reportedPosition(ms)
		why := ""
		switch compareReported(o, mine, ms) {
		case orderAhead, orderSame:
			continue
		case orderBehind:
			why = fmt.Sprintf("%s's data directory is more advanced (%s; this one: %s): not adopting this one, "+
				"which would rewind %s's newer data; if %s's data directory is a primary's, %s takes the key; "+
				"otherwise, %s", name, theirs, mine, name, name, name, chooseHint)
		case orderDiverged:
			why = fmt.Sprintf("this data directory (%s) and %s's (%s) diverged: each holds WAL the other lacks, "+
				"so adopting either loses the other's; %s", mine, name, theirs, chooseHint)
		default:
			why = fmt.Sprintf("cannot tell whether this data directory (%s) or %s's (%s) is the most advanced "+
				"(a stopped directory's position is its latest checkpoint; its WAL may go further): not adopting "+
				"either; %s", mine, name, theirs, chooseHint)
		}
		return plan("adopting: "+why, Action{Kind: ActRefuse}), true
	}
	return Plan{}, false
}

// newerPeer names a member whose data directory of this system is known
// to be more advanced than this member's ("" when none).
func newerPeer(o Observation) (string, Position) {
	st, mine := o.State, localPosition(o)
	for _, name := range st.MemberNames() {
		ms := st.Members[name].Status
		if name == o.Member || ms.Role == raftstore.RoleUninitialized || ms.SystemID != "" && o.DataSystemID != "" && ms.SystemID != o.DataSystemID {
			continue
		}
		if theirs := reportedPosition(ms); compareReported(o, mine, ms) == orderBehind {
			return name, theirs
		}
	}
	return "", Position{}
}
