package pgmanager

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
)

var historyFile = regexp.MustCompile(`^([0-9A-F]{8})\.history$`)

// fetchHistories copies into dataDir's pg_wal the timeline history files
// of every timeline before the clone's newest that it lacks, from src.
// pg_basebackup brings only the newest one; a standby that later follows
// this member across those timelines (after a pg_rewind, say) asks it for
// each of them and stops for good if one is missing ("could not receive
// timeline history file"). Files src does not have either are skipped.
func (m *Manager) fetchHistories(ctx context.Context, dataDir string, src *Upstream) error {
	walDir := filepath.Join(dataDir, "pg_wal")
	entries, err := os.ReadDir(walDir)
	if err != nil {
		return fmt.Errorf("read %s: %w", walDir, err)
	}
	have, newest := map[int64]bool{}, int64(1)
	for _, e := range entries {
		if mm := historyFile.FindStringSubmatch(e.Name()); mm != nil {
			tli, _ := strconv.ParseInt(mm[1], 16, 64)
			have[tli], newest = true, max(newest, tli)
		}
	}
	var missing []int64
	for tli := int64(2); tli < newest; tli++ {
		if !have[tli] {
			missing = append(missing, tli)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := m.replicationConn(cctx, src)
	if err != nil {
		return fmt.Errorf("timeline histories: %w", err)
	}
	defer conn.Close(context.Background())
	var fetched []string
	for _, tli := range missing {
		h, err := pglogrepl.TimelineHistory(cctx, conn, int32(tli))
		if err != nil {
			m.logger.Debug("timeline history not on the clone source", "source", src.Name, "timeline", tli, "error", err)
			continue
		}
		name := filepath.Join(walDir, fmt.Sprintf("%08X.history", tli))
		if err := os.WriteFile(name, h.Content, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
		if err := m.chown(name); err != nil {
			return err
		}
		fetched = append(fetched, filepath.Base(name))
	}
	if len(fetched) > 0 {
		m.logger.Info("timeline histories copied from the clone source", "source", src.Name, "files", fetched)
	}
	return nil
}

// replicationConn opens a physical replication connection to src as the
// replication user (for timeline histories and IDENTIFY_SYSTEM). Of
// several hosts, the first that answers: pgconn would check
// target_session_attrs with SQL, which a replication connection refuses,
// and any member of the source has its histories and system identifier.
func (m *Manager) replicationConn(ctx context.Context, src *Upstream) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(m.peerConninfo(map[string]string{
		"host": src.Host, "port": fmt.Sprint(src.Port), "user": m.cfg.Replication.Username,
		"application_name": m.member + "-clone", "connect_timeout": "5", "replication": "true",
	}))
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", src.Name, err)
	}
	cfg.Password = m.creds(RoleReplication).Password.Reveal()
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, m.withTLSHint(fmt.Errorf("connect to %s: %w", src.Name, err), *src)
	}
	return conn, nil
}

// UpstreamSystemID asks d.Standby for its system identifier
// (IDENTIFY_SYSTEM on a replication connection).
func (m *Manager) UpstreamSystemID(ctx context.Context, d Desired) (string, error) {
	if d.Standby == nil {
		return "", fmt.Errorf("system identifier for %s: no source given", m.member)
	}
	if err := m.writePgpass(); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := m.replicationConn(ctx, d.Standby)
	if err != nil {
		return "", fmt.Errorf("system identifier: %w", err)
	}
	defer conn.Close(context.Background())
	sys, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		return "", fmt.Errorf("system identifier of %s: %w", d.Standby.Name, err)
	}
	return sys.SystemID, nil
}
