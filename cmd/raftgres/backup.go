package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/urfave/cli/v2"

	"raftgres/api"
	"raftgres/backup"
	"raftgres/config"
	"raftgres/raftstore"
)

// localBackups loads -c FILE for the offline backup commands, which run
// pgBackRest on this host as the agent's user.
func localBackups(c *cli.Context, what string) (*config.Agent, *backup.PgBackRest, error) {
	if os.Geteuid() == 0 {
		return nil, nil, cli.Exit(what+" must not run as root: pgBackRest reads the data directory as the agent's user; "+
			"run it as that user, e.g. sudo -u postgres raftgres "+what+" -c "+c.String("config"), 2)
	}
	cfg, err := config.Load(c.String("config"))
	if err != nil {
		return nil, nil, cli.Exit(err.Error(), 2)
	}
	if !cfg.Backup.Enabled() || !cfg.HasPostgres {
		return nil, nil, cli.Exit(what+": no backup: section in "+c.String("config"), 2)
	}
	br := backup.New(cfg.Backup, cfg.BackupTarget(), nil)
	// The file is a function of the config: writing it here too keeps a
	// command run before the agent, or after an edit, consistent.
	if err := br.WriteConfig(); err != nil {
		return nil, nil, cli.Exit(what+": "+err.Error(), 1)
	}
	return cfg, br, nil
}

// backupFrom says where a backup reads: the primary, and the standby
// whose files it copies ("" to copy the primary's).
type backupFrom struct {
	Primary, Standby string
}

// planBackup picks the members a backup reads for --from (replica or
// primary), as seen in view, from the host of member me: a replica copies
// from this host's member when it is a running replica, else from the
// running replica with the least lag.
func planBackup(view api.ClusterView, me, from string) (backupFrom, error) {
	var out backupFrom
	var best *api.ClusterMember
	for i, m := range view.Members {
		switch {
		case m.Role == api.ClusterLeader && m.State == raftstore.StateRunning:
			out.Primary = m.Name
		case (m.Role == api.ClusterReplica || api.Synchronous(m.Role)) && m.State == raftstore.StateRunning && m.Lag != nil:
			if best == nil || best.Name != me && (m.Name == me || *m.Lag < *best.Lag) {
				best = &view.Members[i]
			}
		}
	}
	if out.Primary == "" {
		return out, errors.New("no running primary: a backup needs one (it starts and stops the backup)")
	}
	switch from {
	case "primary":
		return out, nil
	case "replica":
		if best == nil {
			return out, errors.New("no running replica to copy from; take this backup from the primary with --from primary")
		}
		out.Standby = best.Name
		return out, nil
	}
	return out, fmt.Errorf("--from must be replica or primary, got %q", from)
}

// backupSources turns plan into pgBackRest sources: this host's member
// is read locally, the others through their pgBackRest TLS servers,
// whose endpoints their APIs give.
func backupSources(ctx context.Context, cfg *config.Agent, client *api.Client, view api.ClusterView, plan backupFrom) ([]backup.Source, error) {
	urls := map[string]string{}
	for _, m := range view.Members {
		urls[m.Name] = m.APIURL
	}
	var out []backup.Source
	for _, name := range []string{plan.Primary, plan.Standby} {
		if name == "" {
			continue
		}
		if name == cfg.Name {
			out = append(out, backup.Source{})
			continue
		}
		var e backup.Endpoint
		if err := client.With(urls[name]).BackupEndpoint(ctx, &e); err != nil {
			return nil, fmt.Errorf("ask %s how to reach its PostgreSQL: %w", name, err)
		}
		out = append(out, backup.Source{Remote: &e})
	}
	return out, nil
}

func backupCommand() *cli.Command {
	return &cli.Command{
		Name:  "backup",
		Usage: "take a pgBackRest backup, copying a replica's files by default",
		Description: "Runs pgBackRest on this host, as the agent's user, with the config the agent wrote from the\n" +
			"backup: section. With --from replica (the default) the files are copied from a running replica\n" +
			"(this host's member when it is one, else the one with the least lag) while the primary only\n" +
			"starts and stops the backup; --from primary copies the primary's. Members on other hosts are\n" +
			"read through their pgBackRest TLS servers (backup.server on every member). Prints pgBackRest's\n" +
			"progress; on failure exits 1 with pgBackRest's message.\n" +
			"  raftgres backup -c FILE [--type full|diff|incr] [--from replica|primary]\n" +
			"  raftgres backup check -c FILE     the repository and WAL archiving work (on the primary's host)",
		// -c is checked in Action: a required flag here would be required
		// of "backup check" too, before its own -c is parsed.
		Flags: []cli.Flag{configFlag(false),
			&cli.StringFlag{Name: "type", Value: "incr", Usage: "backup `TYPE`: full, diff or incr (incr: full if there is none)"},
			&cli.StringFlag{Name: "from", Value: "replica", Usage: "copy the files of a `replica` or of the primary"}},
		Action: func(c *cli.Context) error {
			if c.String("config") == "" {
				return cli.Exit("backup: -c FILE (the agent's config) is required", 2)
			}
			if !slices.Contains(backup.BackupTypes, c.String("type")) {
				return cli.Exit(fmt.Sprintf("backup: --type must be full, diff or incr, got %q", c.String("type")), 2)
			}
			if f := c.String("from"); f != "replica" && f != "primary" {
				return cli.Exit(fmt.Sprintf("backup: --from must be replica or primary, got %q", f), 2)
			}
			cfg, br, err := localBackups(c, "backup")
			if err != nil {
				return err
			}
			opts, err := cfg.PeerClientOptions()
			if err != nil {
				return cli.Exit("backup: "+err.Error(), 2)
			}
			opts.Timeout = 10 * time.Second
			client := api.NewClient(cfg.API.BaseURL(), opts)
			view, err := client.ClusterView(c.Context)
			if err != nil {
				return cli.Exit("backup: read the cluster from this host's agent: "+err.Error(), 1)
			}
			plan, err := planBackup(view, cfg.Name, c.String("from"))
			if err != nil {
				return cli.Exit("backup: "+err.Error(), 1)
			}
			sources, err := backupSources(c.Context, cfg, client, view, plan)
			if err != nil {
				return cli.Exit("backup: "+err.Error(), 1)
			}
			copyFrom := cmp.Or(plan.Standby, plan.Primary)
			fmt.Fprintf(c.App.Writer, "backup (%s): copying %s's files, primary %s\n", c.String("type"), copyFrom, plan.Primary)
			start := time.Now()
			if err := br.BackupFrom(c.Context, c.String("type"), c.App.Writer, sources...); err != nil {
				return cli.Exit("backup: "+err.Error(), 1)
			}
			fmt.Fprintf(c.App.Writer, "backup (%s) from %s done in %s\n", c.String("type"), copyFrom, time.Since(start).Round(time.Second))
			return nil
		},
		Subcommands: []*cli.Command{{
			Name:  "check",
			Usage: "check that the repository and WAL archiving work (pgbackrest check, on the primary's host)",
			Flags: []cli.Flag{configFlag(true)},
			Action: func(c *cli.Context) error {
				_, br, err := localBackups(c, "backup check")
				if err != nil {
					return err
				}
				if err := br.Check(c.Context); err != nil {
					return cli.Exit("backup check: "+err.Error(), 1)
				}
				fmt.Fprintf(c.App.Writer, "stanza %s: repository and WAL archiving ok\n", br.Stanza())
				return nil
			},
		}},
	}
}

func backupsCommand() *cli.Command {
	return &cli.Command{
		Name:  "backups",
		Usage: "list the backups in the pgBackRest repository",
		Flags: []cli.Flag{configFlag(true), &cli.StringFlag{Name: "format", Value: "pretty", Usage: "pretty or json"}},
		Action: func(c *cli.Context) error {
			_, br, err := localBackups(c, "backups")
			if err != nil {
				return err
			}
			in, err := br.Info(c.Context)
			if err != nil {
				return cli.Exit("backups: "+err.Error(), 1)
			}
			if c.String("format") == "json" {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(in)
			}
			return renderBackups(c.App.Writer, in)
		},
	}
}

// renderBackups prints the repository's backups as a table.
func renderBackups(w io.Writer, in backup.Info) error {
	fmt.Fprintf(w, "+ Stanza: %s (%s), WAL archived: %s .. %s\n", in.Name, in.Status, cmp.Or(in.WALMin, "none"), cmp.Or(in.WALMax, "none"))
	t := newTable(w)
	t.Header("Label", "Type", "Start", "Stop", "Stop LSN", "Size", "Repo size", "Prior")
	for _, b := range in.Backups {
		if err := t.Append(b.Label, b.Type, b.Start.Format(time.RFC3339), b.Stop.Format(time.RFC3339), b.StopLSN,
			fmt.Sprint(b.Size), fmt.Sprint(b.RepoSize), b.Prior); err != nil {
			return err
		}
	}
	return t.Render()
}
