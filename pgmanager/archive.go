package pgmanager

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ArchiveStats is pg_stat_archiver: how far WAL archiving got and how
// often it failed since the statistics were last reset. Times are zero
// when nothing was archived (or failed) yet.
type ArchiveStats struct {
	ArchivedCount    int64     `json:"archived_count"`
	LastArchivedWAL  string    `json:"last_archived_wal,omitempty"`
	LastArchivedTime time.Time `json:"last_archived_time,omitzero"`
	FailedCount      int64     `json:"failed_count"`
	LastFailedWAL    string    `json:"last_failed_wal,omitempty"`
	LastFailedTime   time.Time `json:"last_failed_time,omitzero"`
}

// ArchiveStats reads pg_stat_archiver on the kept session. It is asked for
// by a metrics scrape, never by the supervisor's loop.
func (m *Manager) ArchiveStats(ctx context.Context) (ArchiveStats, error) {
	var s ArchiveStats
	if !m.Running() {
		return s, fmt.Errorf("read pg_stat_archiver: %w", errNotRunning)
	}
	var archived, failed *time.Time
	err := m.withSession(ctx, func(conn *pgx.Conn) error {
		return conn.QueryRow(ctx, `SELECT archived_count, coalesce(last_archived_wal, ''), last_archived_time,
			failed_count, coalesce(last_failed_wal, ''), last_failed_time FROM pg_stat_archiver`).
			Scan(&s.ArchivedCount, &s.LastArchivedWAL, &archived, &s.FailedCount, &s.LastFailedWAL, &failed)
	})
	if err != nil {
		return ArchiveStats{}, fmt.Errorf("read pg_stat_archiver: %w", err)
	}
	if archived != nil {
		s.LastArchivedTime = archived.UTC()
	}
	if failed != nil {
		s.LastFailedTime = failed.UTC()
	}
	return s, nil
}
