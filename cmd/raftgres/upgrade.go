package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"raftgres/api"
	"raftgres/raftstore"
)

func upgradeCheckCommand() *cli.Command {
	return &cli.Command{
		Name:  "upgrade-check",
		Usage: "say whether the cluster can take the next step of a rolling upgrade to this binary's release",
		Description: "Run it with the new binary, from any host, before each step. It reads the cluster and\n" +
			"compares every member's agent (the release and protocol it registered with, GET /cluster)\n" +
			"with this binary's. It names the next member to upgrade, replicas first; the primary's host\n" +
			"comes last, after a switchover to a streaming replica. It refuses (exit 1, with every\n" +
			"reason) while the cluster is not healthy enough to lose one member for a restart: no running\n" +
			"primary, a member not running or not streaming, a pending switchover, maintenance mode, or\n" +
			"a member already on a newer protocol than this binary. Exit 0: the step it prints may be\n" +
			"taken, or every member already runs this release.",
		Flags: append(adminFlags(),
			&cli.StringFlag{Name: "format", Value: "text", Usage: "text or json"},
		),
		Action: func(c *cli.Context) error {
			if f := c.String("format"); f != "text" && f != "json" {
				return cli.Exit("upgrade-check: --format must be text or json, got "+f, 2)
			}
			client, probe, note, err := readClient(c)
			if err != nil {
				return err
			}
			if note != "" {
				fmt.Fprintln(c.App.ErrWriter, note)
			}
			if probe == nil {
				ctx, cancel := context.WithTimeout(c.Context, 10*time.Second)
				defer cancel()
				view, err := client.ClusterView(ctx)
				if err != nil {
					return cli.Exit("upgrade-check: cannot read the cluster: "+err.Error(), 1)
				}
				probe = &view
			}
			target := raftstore.AgentVersion{Version: version, Protocol: raftstore.Protocol}
			plan := planUpgrade(*probe, streamingReplicas(c.Context, client, *probe), target)
			if c.String("format") == "json" {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				_ = enc.Encode(plan)
			} else {
				plan.render(c.App.Writer)
			}
			if len(plan.Blockers) > 0 {
				return cli.Exit("", 1)
			}
			return nil
		},
	}
}

// upgradePlan is upgrade-check's answer.
type upgradePlan struct {
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
	Step *upgradeStep `json:"step,omitempty"`
	Done bool         `json:"done,omitempty"`
}

// upgradeStep is the next step of a rolling upgrade.
type upgradeStep struct {
	Action    string `json:"action"`
	Member    string `json:"member"`
	Candidate string `json:"candidate,omitempty"`
}

// planUpgrade decides the next step of a rolling upgrade to target from
// the cluster view and which replicas stream from the primary.
func planUpgrade(view api.ClusterView, streaming map[string]bool, target raftstore.AgentVersion) upgradePlan {
	p := upgradePlan{Target: target, Members: map[string]raftstore.AgentVersion{}, Upgraded: []string{}}
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
	h := checkHealth(view, streaming)
	p.Blockers = append(p.Blockers, h.blockers...)
	primary, replicas := h.primary, h.replicas
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
			p.Step = &upgradeStep{Action: "upgrade", Member: next}
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
		p.Step = &upgradeStep{Action: "switchover", Member: primary, Candidate: candidates[0]}
		p.Next = fmt.Sprintf("switch over first (raftgres switchover --candidate %s), then upgrade %s the same way once it streams as a replica",
			candidates[0], primary)
	}
	return p
}

// clusterHealth is whether the cluster can lose one member for a restart:
// its running primary, its replicas streaming from it (sorted), and every
// reason it cannot.
type clusterHealth struct {
	primary  string
	replicas []string
	blockers []string
}

// checkHealth reads it from the view and which replicas stream from the
// primary.
func checkHealth(view api.ClusterView, streaming map[string]bool) clusterHealth {
	var h clusterHealth
	for _, m := range view.Members {
		switch {
		case m.State == api.StateUnreachable:
			h.blockers = append(h.blockers, m.Name+"'s agent does not report: bring it back first (a member down and one restarting could cost the quorum)")
		case m.State != raftstore.StateRunning:
			h.blockers = append(h.blockers, fmt.Sprintf("%s's PostgreSQL is %s, not running", m.Name, m.State))
		case m.Role == api.ClusterLeader:
			h.primary = m.Name
		case !streaming[m.Name]:
			h.blockers = append(h.blockers, m.Name+" is not streaming from the primary")
		default:
			h.replicas = append(h.replicas, m.Name)
		}
	}
	if h.primary == "" {
		h.blockers = append(h.blockers, "no running primary")
	}
	if view.Pause {
		h.blockers = append(h.blockers, "the cluster is paused (maintenance mode): resume it, a switchover is needed")
	}
	if s := view.ScheduledSwitchover; s != nil {
		h.blockers = append(h.blockers, fmt.Sprintf("a %s is pending: let it finish or cancel it", s.Kind))
	}
	slices.Sort(h.replicas)
	return h
}

func orUnknown(v string) string {
	if v == "" {
		return "an unknown release"
	}
	return v
}

func (p upgradePlan) render(w io.Writer) {
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
