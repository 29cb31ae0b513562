package pgmanager

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// connCloseTimeout bounds the goodbye message of a dropped connection.
const connCloseTimeout = time.Second

// session is the superuser connection kept open between the loop's status
// reads: a new connection each cycle costs PostgreSQL a backend fork and
// the agent a SCRAM exchange (4096 PBKDF2 rounds), which made up most of
// an idle agent's CPU. Only idempotent reads and slot upkeep use it.
type session struct {
	mu   sync.Mutex
	conn *pgx.Conn
}

// withSession runs fn on the kept connection, opening it when needed. A
// kept connection that fails (the server restarted since) is dropped and
// fn runs once more on a fresh one; fn must therefore be safe to repeat.
// A connection left in an unknown state (an error or a cancelled query)
// is never reused.
func (m *Manager) withSession(ctx context.Context, fn func(*pgx.Conn) error) error {
	s := &m.sess
	s.mu.Lock()
	defer s.mu.Unlock()
	for attempt := 0; ; attempt++ {
		reused := s.conn != nil && !s.conn.IsClosed()
		if !reused {
			s.close()
			conn, err := m.connect(ctx)
			if err != nil {
				return err
			}
			s.conn = conn
		}
		err := fn(s.conn)
		if err == nil {
			return nil
		}
		s.close()
		if !reused || attempt > 0 || ctx.Err() != nil {
			return err
		}
	}
}

// closeSession drops the kept connection (before a stop: a smart shutdown
// would wait for it).
func (m *Manager) closeSession() {
	m.sess.mu.Lock()
	defer m.sess.mu.Unlock()
	m.sess.close()
}

// close closes the connection; the caller holds mu.
func (s *session) close() {
	if s.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), connCloseTimeout)
		_ = s.conn.Close(ctx)
		cancel()
		s.conn = nil
	}
}
