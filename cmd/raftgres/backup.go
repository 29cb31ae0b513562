package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/urfave/cli/v2"

	"raftgres/backup"
	"raftgres/pgmanager"
	"raftgres/raftstore"
)

// pgBackRest returns the pgBackRest runner of this member's config (nil
// when backup: is not set).
func pgBackRest(cfg *agentConfig, logger hclog.Logger) *backup.PgBackRest {
	if !cfg.Backup.Enabled() || !cfg.HasPostgres {
		return nil
	}
	_, port, _ := net.SplitHostPort(cfg.Postgres.Listen)
	return backup.New(cfg.Backup, backup.Target{DataDir: cfg.Postgres.DataDir, Port: port,
		SocketDir: pgmanager.SocketDir(cfg.Postgres.DataDir), User: cfg.Postgres.Superuser.Username,
		PassFile: pgmanager.PgpassPath(cfg.Postgres.DataDir)}, logger)
}

// restorer lets PostgreSQL's manager restore from the repository.
func restorer(br *backup.PgBackRest) pgmanager.Restorer {
	return func(ctx context.Context, dir string, r pgmanager.RestoreRequest) error {
		return br.Restore(ctx, dir, backup.RestoreOptions{Standby: r.Standby, TargetTime: r.Target.Time,
			TargetLSN: r.Target.LSN, TargetName: r.Target.Name, Set: r.Target.Set})
	}
}

// stanzaRetry is how often the primary retries a failed stanza-create.
const stanzaRetry = 10 * time.Second

// runStanzaCreate creates the pgBackRest stanza once this member is a
// running primary holding the leader key (at bootstrap, and on the first
// primary after backups are configured); pgBackRest's stanza-create is a
// no-op on a stanza that matches. It runs beside the supervisor, never
// in its loop: a slow repository must not delay a renewal.
func runStanzaCreate(ctx context.Context, store *raftstore.Store, member string, br *backup.PgBackRest, logger hclog.Logger) {
	logger = logger.Named("backup")
	lastErr := ""
	for {
		changes := store.Changes()
		st := store.State()
		m, ok := st.Members[member]
		if st.Leader.Holder == member && ok && m.Status.Role == "primary" && m.Status.State == "running" {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			err := br.StanzaCreate(cctx)
			cancel()
			if err == nil {
				logger.Info("pgbackrest stanza ready", "stanza", br.Stanza())
				return
			}
			if ctx.Err() != nil {
				return
			}
			if err.Error() != lastErr {
				logger.Error("pgbackrest stanza-create failed: backups and WAL archiving do not work", "stanza", br.Stanza(), "error", err)
				lastErr = err.Error()
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(stanzaRetry):
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-changes:
		}
	}
}

// localBackups loads -c FILE for the offline backup commands, which run
// pgBackRest on this host as the agent's user.
func localBackups(c *cli.Context, what string) (*agentConfig, *backup.PgBackRest, error) {
	if os.Geteuid() == 0 {
		return nil, nil, cli.Exit(what+" must not run as root: pgBackRest reads the data directory as the agent's user; "+
			"run it as that user, e.g. sudo -u postgres raftgres "+what+" -c "+c.String("config"), 2)
	}
	cfg, err := loadConfig(c.String("config"))
	if err != nil {
		return nil, nil, cli.Exit(err.Error(), 2)
	}
	br := pgBackRest(cfg, nil)
	if br == nil {
		return nil, nil, cli.Exit(what+": no backup: section in "+c.String("config"), 2)
	}
	// The file is a function of the config: writing it here too keeps a
	// command run before the agent, or after an edit, consistent.
	if err := br.WriteConfig(); err != nil {
		return nil, nil, cli.Exit(what+": "+err.Error(), 1)
	}
	return cfg, br, nil
}

func backupCommand() *cli.Command {
	return &cli.Command{
		Name:  "backup",
		Usage: "take a pgBackRest backup of the primary (run on the primary's host)",
		Description: "Runs pgBackRest on this host, as the agent's user, with the config the agent wrote from the\n" +
			"backup: section, against the local PostgreSQL, which must be the primary (pgBackRest backs up a\n" +
			"standby only with access to the primary's host, which raftgres does not set up yet). Prints\n" +
			"pgBackRest's progress; on failure exits 1 with pgBackRest's message.\n" +
			"  raftgres backup -c FILE [--type full|diff|incr]   (default incr: full if there is none)\n" +
			"  raftgres backup check -c FILE                      the repository and WAL archiving work",
		// -c is checked in Action: a required flag here would be required
		// of "backup check" too, before its own -c is parsed.
		Flags: []cli.Flag{configFlag(false),
			&cli.StringFlag{Name: "type", Value: "incr", Usage: "backup `TYPE`: full, diff or incr"}},
		Action: func(c *cli.Context) error {
			if c.String("config") == "" {
				return cli.Exit("backup: -c FILE (the agent's config) is required", 2)
			}
			if !slices.Contains(backup.BackupTypes, c.String("type")) {
				return cli.Exit(fmt.Sprintf("backup: --type must be full, diff or incr, got %q", c.String("type")), 2)
			}
			_, br, err := localBackups(c, "backup")
			if err != nil {
				return err
			}
			start := time.Now()
			if err := br.Backup(c.Context, c.String("type"), c.App.Writer); err != nil {
				return cli.Exit("backup: "+err.Error(), 1)
			}
			fmt.Fprintf(c.App.Writer, "backup (%s) done in %s\n", c.String("type"), time.Since(start).Round(time.Second))
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
	fmt.Fprintf(w, "+ Stanza: %s (%s), WAL archived: %s .. %s\n", in.Name, in.Status, valueOr(in.WALMin, "none"), valueOr(in.WALMax, "none"))
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
