package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"raftgres/api"
	"raftgres/raftstore"
)

// writableWait bounds how long promote-cluster waits for a writable
// primary after the config change.
const writableWait = 2 * time.Minute

func promoteClusterCommand() *cli.Command {
	return &cli.Command{
		Name:  "promote-cluster",
		Usage: "make a standby cluster writable: its standby leader becomes the primary",
		Description: "Removes standby_cluster from the dynamic configuration. The standby leader stops\n" +
			"replicating from the source cluster and is promoted (a new timeline); its replicas\n" +
			"follow it. Whatever the source wrote after the standby leader's last received WAL is\n" +
			"not in this cluster: the confirmation shows the source's last known position and how\n" +
			"far behind it the standby leader had replayed. Waits until a member is a writable\n" +
			"primary and prints how long that took. On a cluster that is not a standby cluster it\n" +
			"says so and does nothing (safe to re-run).",
		Flags: append(adminFlags(), forceFlag()),
		Action: func(c *cli.Context) error {
			client, err := clientOrExit(c)
			if err != nil {
				return err
			}
			view, err := client.ClusterView(c.Context)
			if err != nil {
				return cli.Exit("promote-cluster: read the cluster: "+err.Error(), 1)
			}
			sc := view.StandbyCluster
			if sc == nil {
				if p := writablePrimary(view); p != "" {
					fmt.Fprintf(c.App.Writer, "%s is not a standby cluster (primary: %s): nothing to do\n", view.Scope, p)
				} else {
					fmt.Fprintf(c.App.Writer, "%s is not a standby cluster: nothing to do\n", view.Scope)
				}
				return nil
			}
			fmt.Fprint(c.App.Writer, describeStandby(view.Scope, sc, time.Now()))
			if err := confirm(c, "Promote "+view.Scope+": stop following the source and accept writes?"); err != nil {
				return err
			}
			start := time.Now()
			if _, err := client.PatchConfig(c.Context, []byte(`{"standby_cluster":null}`)); err != nil {
				return cli.Exit("promote-cluster: "+err.Error(), 1)
			}
			fmt.Fprintf(c.App.Writer, "standby_cluster removed: waiting for a writable primary\n")
			name, err := waitWritable(c.Context, client, writableWait)
			if err != nil {
				return cli.Exit("promote-cluster: "+err.Error()+" (the cluster is no longer a standby cluster; "+
					"raftgres list shows what its members are doing)", 1)
			}
			fmt.Fprintf(c.App.Writer, "%s is writable: %s is the primary (%.1f s after the config change)\n",
				view.Scope, name, time.Since(start).Seconds())
			return nil
		},
	}
}

// describeStandby is the confirmation's account of where a standby
// cluster stands against its source.
func describeStandby(scope string, sc *api.StandbyClusterView, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s is a standby cluster of %s\n", scope, sc.Source)
	leader := sc.StandbyLeader
	if leader == "" {
		leader = "(none: no member holds the leader key now)"
	}
	fmt.Fprintf(&b, "  standby leader:                 %s\n", leader)
	if sc.SourceLSN == "" {
		b.WriteString("  source's last known position:   unknown (the standby leader has not streamed from it)\n")
	} else {
		fmt.Fprintf(&b, "  source's last known position:   %s, sent %s (%s ago)\n", sc.SourceLSN,
			sc.SourceAt.UTC().Format(time.RFC3339), now.Sub(sc.SourceAt).Round(time.Second))
	}
	replayed := sc.ReplayedLSN
	if replayed == "" {
		replayed = "unknown"
	}
	fmt.Fprintf(&b, "  standby leader replayed to:     %s\n", replayed)
	if sc.Behind != nil {
		fmt.Fprintf(&b, "  behind the source by:           %d bytes\n", *sc.Behind)
	}
	b.WriteString("Writes the source made after that position are not in this cluster.\n")
	b.WriteString("If the source still accepts writes, both clusters will: stop it, or run demote-cluster there, first.\n")
	return b.String()
}

// writablePrimary names the running leader of view ("" when none).
func writablePrimary(view api.ClusterView) string {
	for _, m := range view.Members {
		if m.Role == api.ClusterLeader && m.State == raftstore.StateRunning {
			return m.Name
		}
	}
	return ""
}

// waitWritable polls the cluster until its leader reports itself a
// running primary.
func waitWritable(ctx context.Context, client *api.Client, limit time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if view, err := client.ClusterView(ctx); err == nil && view.StandbyCluster == nil {
			for _, m := range view.Members {
				if m.Role == api.ClusterLeader && m.State == raftstore.StateRunning && m.Reported == raftstore.RolePrimary {
					return m.Name, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no writable primary within %s", limit)
		case <-tick.C:
		}
	}
}

func demoteClusterCommand() *cli.Command {
	return &cli.Command{
		Name:  "demote-cluster",
		Usage: "make this cluster a standby cluster of another (its writes since they diverged are lost)",
		Description: "Sets standby_cluster in the dynamic configuration. The primary stops accepting\n" +
			"writes, is rewound onto the source with pg_rewind (or cloned again from it when\n" +
			"pg_rewind cannot, or use_pg_rewind is off) and becomes the standby leader, replicating\n" +
			"from the source; the other members follow it. Whatever this cluster wrote that the\n" +
			"source does not have is discarded. --host takes one host or several separated by\n" +
			"commas (the standby leader streams from the one that accepts writes). The replication\n" +
			"user and password, and the rewind user's, must be valid on the source. Re-running it\n" +
			"with the same settings does nothing; with others, it re-points the standby leader.",
		Flags: append(adminFlags(), forceFlag(),
			&cli.StringFlag{Name: "host", Usage: "source cluster `HOST`s (comma-separated)"},
			&cli.IntFlag{Name: "port", Value: 5432, Usage: "source cluster PostgreSQL `PORT`"},
			&cli.StringFlag{Name: "primary-slot-name", Usage: "replication `SLOT` on the source (a permanent slot there)"},
			&cli.StringFlag{Name: "restore-command", Usage: "`COMMAND` fetching WAL from the source's archive"},
			&cli.StringSliceFlag{Name: "create-replica-methods", Usage: "`METHOD`s to copy the source: basebackup, pgbackrest"},
		),
		Action: func(c *cli.Context) error {
			want := raftstore.StandbyCluster{Host: c.String("host"), Port: c.Int("port"),
				PrimarySlotName: c.String("primary-slot-name"), RestoreCommand: c.String("restore-command"),
				CreateReplicaMethods: c.StringSlice("create-replica-methods")}
			if want.Host == "" && want.RestoreCommand == "" {
				return cli.Exit("demote-cluster: --host (or --restore-command) is required: where to replicate from", 2)
			}
			if err := want.Validate(); err != nil {
				return cli.Exit("demote-cluster: "+err.Error(), 2)
			}
			client, err := clientOrExit(c)
			if err != nil {
				return err
			}
			doc, err := client.Config(c.Context)
			if err != nil {
				return cli.Exit("demote-cluster: read the config: "+err.Error(), 1)
			}
			if cur := doc.StandbyCluster; cur != nil && cur.Equal(want) {
				fmt.Fprintf(c.App.Writer, "already a standby cluster of %s: nothing to do\n", cur.Source())
				return nil
			}
			q := "Demote this cluster to a standby of " + want.Source() + "? Its primary stops accepting writes, " +
				"and what it wrote that the source lacks is discarded."
			if doc.StandbyCluster != nil {
				q = "Re-point this standby cluster from " + doc.StandbyCluster.Source() + " to " + want.Source() + "?"
			}
			if err := confirm(c, q); err != nil {
				return err
			}
			body, err := json.Marshal(map[string]any{"standby_cluster": demotePatch(want)})
			if err != nil {
				return cli.Exit("demote-cluster: "+err.Error(), 1)
			}
			if _, err := client.PatchConfig(c.Context, body); err != nil {
				return cli.Exit("demote-cluster: "+err.Error(), 1)
			}
			fmt.Fprintf(c.App.Writer, "standby_cluster set: the cluster now follows %s "+
				"(raftgres list shows its Standby Leader once it replicates)\n", want.Source())
			return nil
		},
	}
}

// demotePatch is standby_cluster as a merge patch: every key, the unset
// ones null, so nothing of an earlier setting survives.
func demotePatch(sc raftstore.StandbyCluster) map[string]any {
	orNull := func(v any, set bool) any {
		if set {
			return v
		}
		return nil
	}
	return map[string]any{
		"host": orNull(sc.Host, sc.Host != ""), "port": orNull(sc.Port, sc.Port != 0),
		"primary_slot_name":      orNull(sc.PrimarySlotName, sc.PrimarySlotName != ""),
		"restore_command":        orNull(sc.RestoreCommand, sc.RestoreCommand != ""),
		"create_replica_methods": orNull(sc.CreateReplicaMethods, len(sc.CreateReplicaMethods) > 0),
	}
}

// standbyNote is list's line on a standby cluster ("" for none).
func standbyNote(sc *api.StandbyClusterView) string {
	if sc == nil {
		return ""
	}
	line := " Standby cluster of " + sc.Source
	switch {
	case sc.SourceLSN == "":
		line += ": source position unknown"
	case sc.Behind != nil:
		line += fmt.Sprintf(": source at %s (sent %s), standby leader %d bytes behind", sc.SourceLSN,
			sc.SourceAt.UTC().Format(time.RFC3339), *sc.Behind)
	default:
		line += fmt.Sprintf(": source at %s (sent %s)", sc.SourceLSN, sc.SourceAt.UTC().Format(time.RFC3339))
	}
	return line
}
