package agent

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

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
	return backup.New(cfg.Backup, cfg.BackupTarget(), logger)
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

// stanzaCreator creates the pgBackRest stanza once this member is a
// running primary holding the leader key (at bootstrap, and on the first
// primary after backups are configured); pgBackRest's stanza-create is a
// no-op on a stanza that matches. It runs beside the supervisor, never
// in its loop: a slow repository must not delay a renewal.
type stanzaCreator struct {
	store  stateWatcher
	member string
	br     *backup.PgBackRest
	logger hclog.Logger
}

// Run returns once the stanza is ready or ctx ends. A failed
// stanza-create is logged and retried, never returned: the rest of the
// agent runs on without backups.
func (s *stanzaCreator) Run(ctx context.Context) error {
	store, member, br, logger := s.store, s.member, s.br, s.logger.Named("backup")
	lastErr := ""
	for {
		changes := store.Changes()
		st := store.State()
		m, ok := st.Members[member]
		if st.Leader.Holder == member && ok && m.Status.Role == raftstore.RolePrimary && m.Status.State == raftstore.StateRunning {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			err := br.StanzaCreate(cctx)
			cancel()
			if err == nil {
				logger.Info("pgbackrest stanza ready", "stanza", br.Stanza())
				return nil
			}
			if ctx.Err() != nil {
				return nil
			}
			if err.Error() != lastErr {
				logger.Error("pgbackrest stanza-create failed: backups and WAL archiving do not work", "stanza", br.Stanza(), "error", err)
				lastErr = err.Error()
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(stanzaRetry):
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changes:
		}
	}
}

// serverRetry is how long a failed pgBackRest TLS server waits before
// it is started again.
const serverRetry = 5 * time.Second

// backupServer runs pgBackRest's TLS server while the agent runs. It
// accepts the cluster's member names as client CNs, so it is restarted
// when the members change, and after it fails.
type backupServer struct {
	store  stateWatcher
	br     *backup.PgBackRest
	logger hclog.Logger
}

// Run returns when ctx ends. A failed server is logged and started again
// after serverRetry.
func (s *backupServer) Run(ctx context.Context) error {
	store, br, logger := s.store, s.br, s.logger.Named("backup")
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
	return nil
}

// serveBackups runs the TLS server until ctx ends (nil), the members
// differ from names (nil, after stopping it) or it fails (its error).
func serveBackups(ctx context.Context, store stateWatcher, br *backup.PgBackRest, names []string, logger hclog.Logger) error {
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
