package failover

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"raftgres/pgmanager"
	"raftgres/raftstore"
)

// standbyState is a standby cluster of pg1..pg3 whose key holder reports
// itself the standby leader.
func standbyState(holder string) raftstore.State {
	st := state(holder, "pg1", "pg2", "pg3")
	st.Config.StandbyCluster = &raftstore.StandbyCluster{Host: "10.0.1.1,10.0.1.2", Port: 5432, PrimarySlotName: "dr"}
	if h, ok := st.Members[holder]; ok {
		h.Status.Role = raftstore.RoleStandbyLeader
	}
	return st
}

// TestDecideStandbyCluster: the standby leader replicates from the source
// and is never promoted; a primary of a demoted cluster is rewound onto
// the source; replicas cascade from the standby leader; promote-cluster
// (standby_cluster removed) promotes the holder.
func TestDecideStandbyCluster(t *testing.T) {
	t.Parallel()
	src := func(o *Observation) { o.Upstream = SourceCluster }
	tests := []struct {
		name string
		o    Observation
		want []ActionKind
		to   string // the first action's Primary or From
	}{
		{"standby leader streaming", obs("pg1", standbyState("pg1"), replicaPG, src), []ActionKind{}, ""},
		{"standby leader stopped starts as a standby of the source", obs("pg1", standbyState("pg1"), stoppedPG,
			func(o *Observation) { o.Standby = true }), []ActionKind{ActStartStandby}, SourceCluster},
		{"standby leader following nobody repoints", obs("pg1", standbyState("pg1"), replicaPG),
			[]ActionKind{ActFollow}, SourceCluster},
		{"source refuses its position: rewind", obs("pg1", standbyState("pg1"), pgmanager.Status{Running: true, InRecovery: true,
			SystemID: sysid, WalReceiverDiverged: true}, src), []ActionKind{ActFollow}, SourceCluster},
		{"demoted primary is rewound onto the source", obs("pg1", standbyState("pg1"), primaryPG), []ActionKind{ActFollow}, SourceCluster},
		{"stopped former primary is rewound", obs("pg1", standbyState("pg1"), stoppedPG, func(o *Observation) { o.Standby = false }),
			[]ActionKind{ActFollow}, SourceCluster},
		{"rewind failed: reclone from the source", obs("pg1", standbyState("pg1"), stoppedPG,
			func(o *Observation) { o.RewindFailed = true }), []ActionKind{ActReclone}, SourceCluster},
		{"no lease: no start", obs("pg1", standbyState("pg1"), stoppedPG,
			func(o *Observation) { o.Standby, o.LeaseValid = true, false }), []ActionKind{}, ""},
		{"replica follows the standby leader", obs("pg2", standbyState("pg1"), stoppedPG,
			func(o *Observation) { o.Standby = true }), []ActionKind{ActStartStandby}, "pg1"},
		{"replica of the source's old stream repoints to the standby leader", obs("pg2", standbyState("pg1"), replicaPG,
			src), []ActionKind{ActFollow}, "pg1"},
		{"replica waits for a standby leader still a plain replica", obs("pg2", func() raftstore.State {
			st := standbyState("pg1")
			st.Members["pg1"].Status.Role = raftstore.RoleReplica
			return st
		}(), stoppedPG, func(o *Observation) { o.Standby = true }), []ActionKind{}, ""},
		{"bootstrap: the winner copies the source", obs("pg1", func() raftstore.State {
			st := standbyState("pg1")
			st.Initialize = ""
			return st
		}(), stoppedPG, func(o *Observation) { o.HasData = false }), []ActionKind{ActClone}, SourceCluster},
		{"bootstrap: the copy starts and is recorded", obs("pg1", func() raftstore.State {
			st := standbyState("pg1")
			st.Initialize = ""
			return st
		}(), stoppedPG, func(o *Observation) { o.Standby = true }), []ActionKind{ActStartStandby, ActRecordInit}, SourceCluster},
		{"switchover of the standby leader", obs("pg1", standbyState("pg1"), replicaPG, src,
			func(o *Observation) { o.SwitchoverDue = true }), []ActionKind{ActHandOver}, ""},
		{"migration: a standby data directory is adopted", obs("pg1", func() raftstore.State {
			st := standbyState("")
			st.Initialize = ""
			for _, m := range st.Members {
				m.Status.ReportedAt, m.Status.Timeline, m.Status.ReplayedLSN = reportedAt, 5, 50
			}
			return st
		}(), replicaPG, func(o *Observation) { o.PG.Timeline, o.PG.ReceivedLSN = 5, 100 }), []ActionKind{ActAcquireBootstrap}, ""},
		{"promote-cluster: the holder promotes", obs("pg1", state("pg1", "pg1", "pg2"), replicaPG, src),
			[]ActionKind{ActPromote}, ""},
	}
	for _, tc := range tests {
		p := Decide(tc.o)
		if got := kinds(p); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v (%s), want %v", tc.name, got, p.Reason, tc.want)
			continue
		}
		if len(p.Actions) > 0 && tc.to != "" {
			if a := p.Actions[0]; a.Primary != tc.to && a.From != tc.to {
				t.Errorf("%s: %+v, want it to name %s", tc.name, a, tc.to)
			}
		}
	}
}

// TestStandbyLeaderDesired: the standby leader's settings stream from the
// source through the configured slot with its restore_command; a member
// of a standby cluster cascades from the standby leader (any server, not
// only one that accepts writes).
func TestStandbyLeaderDesired(t *testing.T) {
	t.Parallel()
	st := standbyState("pg1")
	st.Config.StandbyCluster.RestoreCommand = "cp /arch/%f %p"
	st.Config.PostgreSQL.UseSlots = true
	st.Members["pg1"].PGAddr = "10.0.2.1:5432"
	sup := NewSupervisor(Config{Member: "pg2"}, nil, nil, nil, nil)
	d, err := sup.desired(st, SourceCluster, true)
	if err != nil {
		t.Fatal(err)
	}
	if d.Standby == nil || d.Standby.Host != "10.0.1.1,10.0.1.2" || d.Standby.Port != 5432 || d.Standby.Cascade ||
		d.Slot != "dr" || d.RestoreCommand != "cp /arch/%f %p" || !d.Replica {
		t.Fatalf("source desired: %+v standby %+v", d, d.Standby)
	}
	d, err = sup.desired(st, "pg1", true)
	if err != nil {
		t.Fatal(err)
	}
	if d.Standby == nil || !d.Standby.Cascade || d.Slot != "pg2" || d.RestoreCommand != "" {
		t.Fatalf("cascade desired: %+v standby %+v", d, d.Standby)
	}
	st.Config.StandbyCluster = nil
	if _, err := sup.desired(st, SourceCluster, true); err == nil {
		t.Fatal("following the source of a cluster that is no longer a standby cluster: no error")
	}
}

// TestReadUpstreamKnowsTheSource: a running standby leader whose
// primary_conninfo names the source's hosts and port follows the source;
// one naming other hosts, or a member that is not the holder, does not.
func TestReadUpstreamKnowsTheSource(t *testing.T) {
	t.Parallel()
	st := standbyState("pg1")
	for _, tc := range []struct {
		name, me, host, port, want string
	}{
		{"source", "pg1", "10.0.1.1,10.0.1.2", "5432", SourceCluster},
		{"other hosts", "pg1", "10.0.1.1", "5432", ""},
		{"other port", "pg1", "10.0.1.1,10.0.1.2", "5433", ""},
		{"not the holder", "pg2", "10.0.1.1,10.0.1.2", "5432", ""},
	} {
		sup := NewSupervisor(Config{Member: tc.me}, nil, nil, nil, nil)
		sup.readUpstream(st, pgmanager.Status{Running: true, InRecovery: true, UpstreamHost: tc.host, UpstreamPort: tc.port})
		if sup.standby.upstream != tc.want {
			t.Errorf("%s: upstream %q, want %q", tc.name, sup.standby.upstream, tc.want)
		}
	}
}

// TestDemotedSiteFollowsAnOlderTimelineNumber: after demote-cluster a
// replica on a higher timeline number than its standby leader's (its
// site failed over while cut off) is rewound all the same; outside a
// standby cluster that is refused (keepNewerData).
func TestDemotedSiteFollowsAnOlderTimelineNumber(t *testing.T) {
	t.Parallel()
	st := standbyState("pg1")
	st.Members["pg1"].Status.Timeline = 4
	o := obs("pg2", st, stoppedPG, func(o *Observation) { o.Standby, o.Data = false, Position{Timeline: 5, LSN: 100} })
	if p := Decide(o); !p.Has(ActFollow) || !p.Actions[0].Rewind {
		t.Fatalf("standby cluster: %s, want a rewind onto pg1", p)
	}
	o.State.Config.StandbyCluster = nil
	o.State.Members["pg1"].Status.Role = raftstore.RolePrimary
	if p := Decide(o); !p.Has(ActRefuse) {
		t.Fatalf("primary cluster: %s, want a refusal", p)
	}
}

// TestDemoteOntoAForeignSourceTouchesNothing: demote-cluster with a host
// of another system (or one that cannot be reached) stops the primary (the
// site takes no more writes) but neither rewinds nor reclones its data:
// the check runs before either.
func TestDemoteOntoAForeignSourceKeepsTheData(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		id   string
		err  error
		want error
	}{
		{"another system", "9999", nil, ErrForeignSource},
		{"unreachable", "", errors.New("connection refused"), nil},
	} {
		st := testState("pg1", "pg1", "pg2")
		st.Config.StandbyCluster = &raftstore.StandbyCluster{Host: "10.9.9.9"}
		r := newRig(t, "pg1", st, runningPrimary)
		r.pg.set(func(p *fakePostgres) { p.sourceID, p.sourceErr = tc.id, tc.err })
		err := r.sup.follow(context.Background(), st, Action{Kind: ActFollow, Primary: SourceCluster, Rewind: true})
		if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Fatalf("%s: follow: %v, want an error (%v)", tc.name, err, tc.want)
		}
		stopped := false
		for _, e := range r.ev.all() {
			stopped = stopped || strings.Contains(e, "Stop")
			if strings.Contains(e, "Rewind") {
				t.Fatalf("%s: rewound the primary: %s", tc.name, e)
			}
		}
		if !stopped {
			t.Fatalf("%s: the demoted primary still runs:\n%s", tc.name, strings.Join(r.ev.all(), "\n"))
		}
		err = r.sup.do(context.Background(), st, Action{Kind: ActReclone, From: SourceCluster}, "test")
		if err == nil {
			t.Fatalf("%s: reclone onto the source: no error", tc.name)
		}
		for _, e := range r.ev.all() {
			if strings.Contains(e, "Reclone") || strings.Contains(e, "Remove") {
				t.Fatalf("%s: recloned: %s", tc.name, e)
			}
		}
	}
	st := testState("pg1", "pg1")
	if err := sourceMatches(st, testSysID); err != nil {
		t.Fatalf("same system: %v", err)
	}
}

// TestStandbyLeaderRecloneAfterTwoRewinds: a standby leader the source
// still refuses after each of two rewinds is recloned, not rewound for
// ever.
func TestStandbyLeaderRecloneAfterTwoRewinds(t *testing.T) {
	t.Parallel()
	st := standbyState("pg1")
	sup := NewSupervisor(Config{Member: "pg1"}, nil, nil, nil, nil)
	diverged := pgmanager.Status{Running: true, InRecovery: true, WalReceiverDiverged: true}
	for i := range 2 {
		sup.standby.rewound = true // a follow with rewind succeeded
		sup.watchSource(st, diverged)
		if got := sup.standby.rewindFailed; got != (i == 1) {
			t.Fatalf("after rewind %d still refused: recloning %v", i+1, got)
		}
	}
	o := obs("pg1", st, diverged, func(o *Observation) { o.Upstream, o.RewindFailed = SourceCluster, true })
	if p := Decide(o); !p.Has(ActReclone) {
		t.Fatalf("%s, want a reclone", p)
	}
}

// TestStandbyLeaderRestartpointOnNewTimeline: the standby leader asks for
// a restartpoint while pg_control names an older timeline than the one it
// replays, and only then.
func TestStandbyLeaderRestartpointOnNewTimeline(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		checkpoint uint32
		want       bool
	}{
		{"pg_control on an older timeline", 1, true},
		{"pg_control on this timeline", 2, false},
		{"pg_control not read", 0, false},
	} {
		pgst := runningReplica
		pgst.CheckpointTimeline = tc.checkpoint
		r := newRig(t, "pg1", standbyState("pg1"), pgst)
		st, _ := r.pg.Status(context.Background())
		r.sup.report(context.Background(), st)
		if got := slices.Contains(r.ev.all(), "pg Checkpoint"); got != tc.want {
			t.Errorf("%s (timeline %d): checkpoint asked %v, want %v; events %v", tc.name, pgst.Timeline, got, tc.want, r.ev.all())
		}
	}
}
