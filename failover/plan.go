package failover

import (
	"fmt"
	"strings"
)

// ActionKind names one step of a Plan.
type ActionKind string

// Actions the supervisor knows how to execute.
const (
	// ActAcquireBootstrap races for the leader key of an uninitialised
	// cluster; the winner runs initdb.
	ActAcquireBootstrap ActionKind = "acquire_bootstrap"
	// ActInit runs initdb and starts the new cluster as primary, then
	// records its system identifier in the FSM.
	ActInit ActionKind = "init"
	// ActClone copies a data directory from From with pg_basebackup.
	ActClone ActionKind = "clone"
	// ActStartPrimary starts PostgreSQL as a primary (holder only).
	ActStartPrimary ActionKind = "start_primary"
	// ActStartStandby starts PostgreSQL as a standby of Primary.
	ActStartStandby ActionKind = "start_standby"
	// ActPromote promotes the local standby (holder only).
	ActPromote ActionKind = "promote"
	// ActDemote stops a PostgreSQL that must not accept writes.
	ActDemote ActionKind = "demote"
	// ActFollow repoints the local PostgreSQL at Primary, rewinding first
	// when Rewind is set.
	ActFollow ActionKind = "follow"
	// ActReclone wipes the local data directory and clones from From.
	ActReclone ActionKind = "reclone"
	// ActRefuse reports a condition that must not be acted on (a foreign
	// system identifier) and touches nothing.
	ActRefuse ActionKind = "refuse"
	// ActRelease gives the leader key up (PostgreSQL cannot serve).
	ActRelease ActionKind = "release"
	// ActHandOver is the holder's side of a switchover: clean shutdown,
	// wait until Primary (the candidate, or "" to choose) has received the
	// shutdown checkpoint, then hand the leader key over.
	ActHandOver ActionKind = "hand_over"
)

// Action is one typed step.
type Action struct {
	Kind    ActionKind
	From    string // clone/reclone source member
	Primary string // follow / start_standby target member
	Rewind  bool   // follow: run pg_rewind first
	Mode    string // demote: "fast" (clean, switchover) or "immediate" (fencing); release: "immediate" (a hard failover), else fast
}

func (a Action) String() string {
	var b strings.Builder
	b.WriteString(string(a.Kind))
	if a.From != "" {
		fmt.Fprintf(&b, " from=%s", a.From)
	}
	if a.Primary != "" {
		fmt.Fprintf(&b, " primary=%s", a.Primary)
	}
	if a.Rewind {
		b.WriteString(" rewind")
	}
	if a.Mode != "" {
		fmt.Fprintf(&b, " mode=%s", a.Mode)
	}
	return b.String()
}

// Plan is what Decide wants done, in order, and why.
type Plan struct {
	Actions []Action
	Reason  string
}

// Noop reports whether the plan does nothing.
func (p Plan) Noop() bool { return len(p.Actions) == 0 }

// Has reports whether the plan contains an action of kind k.
func (p Plan) Has(k ActionKind) bool {
	for _, a := range p.Actions {
		if a.Kind == k {
			return true
		}
	}
	return false
}

// Steps lists the actions ("noop" when none).
func (p Plan) Steps() string {
	if p.Noop() {
		return "noop"
	}
	parts := make([]string, len(p.Actions))
	for i, a := range p.Actions {
		parts[i] = a.String()
	}
	return strings.Join(parts, ", ")
}

func (p Plan) String() string { return p.Steps() + ": " + p.Reason }

func plan(reason string, actions ...Action) Plan { return Plan{Actions: actions, Reason: reason} }

func noop(reason string) Plan { return Plan{Reason: reason} }
