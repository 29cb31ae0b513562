package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/urfave/cli/v2"

	"raftgres/api"
	"raftgres/backup"
	"raftgres/config"
	"raftgres/pgmanager"
	"raftgres/raftstore"
)

// pgBackRest returns the pgBackRest runner of this member's config (nil
// when backup: is not set).
func pgBackRest(cfg *config.Agent, logger hclog.Logger) *backup.PgBackRest {
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

// serverRetry is how long a failed pgBackRest TLS server waits before
// it is started again.
const serverRetry = 5 * time.Second

// runBackupServer runs pgBackRest's TLS server while the agent runs. It
// accepts the cluster's member names as client CNs, so it is restarted
// when the members change, and after it fails.
func runBackupServer(ctx context.Context, store *raftstore.Store, br *backup.PgBackRest, logger hclog.Logger) {
	logger = logger.Named("backup")
	for ctx.Err() == nil {
		changes := store.Changes()
		names := store.State().MemberNames()
		if len(names) == 0 {
			select { // not registered yet: no client to accept
			case <-ctx.Done():
			case <-changes:
			}
			continue
		}
		br.SetClients(names)
		if err := serveBackups(ctx, store, br, names, logger); err != nil {
			logger.Error("pgbackrest TLS server stopped: backups from other members' hosts cannot read this PostgreSQL",
				"error", err, "retry_in", serverRetry)
			select {
			case <-ctx.Done():
			case <-time.After(serverRetry):
			}
		}
	}
}

// serveBackups runs the TLS server until ctx ends (nil), the members
// differ from names (nil, after stopping it) or it fails (its error).
func serveBackups(ctx context.Context, store *raftstore.Store, br *backup.PgBackRest, names []string, logger hclog.Logger) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- br.RunServer(sctx) }()
	for {
		changes := store.Changes()
		if now := store.State().MemberNames(); !slices.Equal(now, names) {
			logger.Info("members changed: restarting the pgbackrest TLS server", "members", strings.Join(now, ","))
			cancel()
			<-done
			return nil
		}
		select {
		case <-ctx.Done():
			cancel()
			return <-done
		case err := <-done:
			return err
		case <-changes:
		}
	}
}

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
		case m.Role == "leader" && m.State == "running":
			out.Primary = m.Name
		case (m.Role == "replica" || m.Role == "sync_standby") && m.State == "running" && m.Lag != nil:
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
			opts, err := peerClientOptions(cfg)
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
