package ops

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"raftgres/api"
	"raftgres/raftstore"
)

// UpgradePlan is upgrade-check's answer.
type UpgradePlan struct {
	Target raftstore.AgentVersion `json:"target"`
	// Members lists every member's agent; Upgraded, those on Target.
	Members  map[string]raftstore.AgentVersion `json:"members"`
	Upgraded []string                          `json:"upgraded"`
	// Blockers say why no step may be taken now; Next is the step when
	// there are none ("" once every member runs Target).
	Blockers []string `json:"blockers,omitempty"`
	Next     string   `json:"next,omitempty"`
	// Step is Next for scripts: Action "upgrade" (Member) or
	// "switchover" (to Candidate, before upgrading Member).
	Step *UpgradeStep `json:"step,omitempty"`
	Done bool         `json:"done,omitempty"`
}

// UpgradeStep is the next step of a rolling upgrade.
type UpgradeStep struct {
	Action    string `json:"action"`
	Member    string `json:"member"`
	Candidate string `json:"candidate,omitempty"`
}

// PlanUpgrade decides the next step of a rolling upgrade to target from
// the cluster view and which replicas stream from the primary.
func PlanUpgrade(view api.ClusterView, streaming map[string]bool, target raftstore.AgentVersion) UpgradePlan {
	p := UpgradePlan{Target: target, Members: map[string]raftstore.AgentVersion{}, Upgraded: []string{}}
	var pending []string
	for _, m := range view.Members {
		p.Members[m.Name] = m.Agent
		switch {
		case m.Agent.Protocol > target.Protocol:
			p.Blockers = append(p.Blockers, fmt.Sprintf("%s runs %s (protocol %d), newer than this binary's %s (protocol %d): run upgrade-check with the newest binary",
				m.Name, orUnknown(m.Agent.Version), m.Agent.Protocol, orUnknown(target.Version), target.Protocol))
		case m.Agent.Version == target.Version && m.Agent.Protocol == target.Protocol:
			p.Upgraded = append(p.Upgraded, m.Name)
		default:
			pending = append(pending, m.Name)
		}
	}
	h := CheckHealth(view, streaming)
	p.Blockers = append(p.Blockers, h.Blockers...)
	primary, replicas := h.Primary, h.Replicas
	slices.Sort(pending)
	slices.Sort(p.Upgraded)
	switch {
	case len(p.Blockers) > 0:
	case len(pending) == 0:
		p.Done = true
	default:
		next := pending[0]
		for _, n := range pending {
			if n != primary {
				next = n
				break
			}
		}
		if next != primary {
			p.Step = &UpgradeStep{Action: "upgrade", Member: next}
			p.Next = fmt.Sprintf("upgrade %s: install the new binary on its host and restart its agent (systemctl restart raftgres); "+
				"wait until `raftgres list` shows it streaming, then run upgrade-check again", next)
			break
		}
		var candidates []string
		for _, r := range replicas {
			if slices.Contains(p.Upgraded, r) {
				candidates = append(candidates, r)
			}
		}
		if len(candidates) == 0 {
			candidates = replicas
		}
		if len(candidates) == 0 {
			p.Blockers = append(p.Blockers, "the primary "+primary+" is the only member left to upgrade and no replica streams to switch over to")
			break
		}
		p.Step = &UpgradeStep{Action: "switchover", Member: primary, Candidate: candidates[0]}
		p.Next = fmt.Sprintf("switch over first (raftgres switchover --candidate %s), then upgrade %s the same way once it streams as a replica",
			candidates[0], primary)
	}
	return p
}

func orUnknown(v string) string {
	if v == "" {
		return "an unknown release"
	}
	return v
}

// Render writes the plan for a person.
func (p UpgradePlan) Render(w io.Writer) {
	names := make([]string, 0, len(p.Members))
	for n := range p.Members {
		names = append(names, n)
	}
	slices.Sort(names)
	fmt.Fprintf(w, "target: %s (protocol %d)\n", orUnknown(p.Target.Version), p.Target.Protocol)
	for _, n := range names {
		a := p.Members[n]
		mark := " "
		if slices.Contains(p.Upgraded, n) {
			mark = "*"
		}
		fmt.Fprintf(w, "%s %-12s %s (protocol %d)\n", mark, n, orUnknown(a.Version), a.Protocol)
	}
	switch {
	case len(p.Blockers) > 0:
		fmt.Fprintf(w, "not now:\n  - %s\n", strings.Join(p.Blockers, "\n  - "))
	case p.Done:
		fmt.Fprintln(w, "every member runs the target release: the upgrade is done")
	default:
		fmt.Fprintln(w, "next: "+p.Next)
	}
}
