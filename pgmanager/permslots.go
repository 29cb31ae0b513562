package pgmanager

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"raftgres/internal/fsutil"
)

// Slot types, as pg_replication_slots names them.
const (
	SlotPhysical = "physical"
	SlotLogical  = "logical"
)

// Slot is a replication slot raftgres keeps: a member's physical slot on
// the primary, or a permanent slot of the cluster's config.
type Slot struct {
	Name     string
	Type     string // SlotPhysical or SlotLogical
	Database string // logical only
	Plugin   string // logical only
}

// SlotState is a slot as pg_replication_slots shows it. LSN is where a
// consumer resumes: a logical slot's confirmed_flush_lsn, a physical
// slot's restart_lsn (0 when unset).
type SlotState struct {
	Slot
	Active bool
	LSN    uint64
	// Restart is the slot's restart_lsn (0 when unset).
	Restart uint64
}

func (s Slot) same(o SlotState) bool {
	return s.Type == o.Type && (s.Type == SlotPhysical || (s.Database == o.Database && s.Plugin == o.Plugin))
}

// Slots lists the replication slots of this server.
func (m *Manager) Slots(ctx context.Context) ([]SlotState, error) {
	var out []SlotState
	err := m.withSession(ctx, func(conn *pgx.Conn) error {
		var err error
		out, err = listSlots(ctx, conn)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list slots on %s: %w", m.member, err)
	}
	return out, nil
}

func listSlots(ctx context.Context, conn *pgx.Conn) ([]SlotState, error) {
	rows, err := conn.Query(ctx, `SELECT slot_name, slot_type, COALESCE(database, ''), COALESCE(plugin, ''), active,
		COALESCE(CASE slot_type WHEN 'logical' THEN confirmed_flush_lsn ELSE restart_lsn END::text, '0/0'),
		COALESCE(restart_lsn::text, '0/0')
		FROM pg_replication_slots ORDER BY slot_name`)
	if err != nil {
		return nil, err
	}
	var out []SlotState
	for rows.Next() {
		var s SlotState
		var lsn, restart string
		if err := rows.Scan(&s.Name, &s.Type, &s.Database, &s.Plugin, &s.Active, &lsn, &restart); err != nil {
			rows.Close()
			return nil, err
		}
		var err1, err2 error
		s.LSN, err1 = ParseLSN(lsn)
		s.Restart, err2 = ParseLSN(restart)
		if err := errors.Join(err1, err2); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, s)
	}
	rows.Close()
	return out, rows.Err()
}

// EnsureSlots makes the slots of want on this primary that are missing,
// and drops the inactive physical slots that are neither wanted nor kept
// (keep: ignore_slots), so that a slot of a member that left or was
// absent too long holds no WAL. A logical slot it does not want is left
// alone: a consumer's position is not raftgres's to throw away. It
// returns the slots of this server afterwards.
func (m *Manager) EnsureSlots(ctx context.Context, want []Slot, keep func(SlotState) bool) ([]SlotState, error) {
	var have []SlotState
	var created, dropped []string
	err := m.withSession(ctx, func(conn *pgx.Conn) error {
		var err error
		if have, err = listSlots(ctx, conn); err != nil {
			return fmt.Errorf("list slots: %w", err)
		}
		for _, s := range want {
			if slices.ContainsFunc(have, func(h SlotState) bool { return h.Name == s.Name }) {
				continue
			}
			if err := m.createSlot(ctx, conn, s); err != nil {
				return err
			}
			created = append(created, s.Name)
		}
		for _, h := range have {
			if h.Type != SlotPhysical || h.Active || keep(h) || slices.ContainsFunc(want, func(s Slot) bool { return s.Name == h.Name }) {
				continue
			}
			if _, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", h.Name); err != nil {
				return fmt.Errorf("drop slot %s: %w", h.Name, err)
			}
			dropped = append(dropped, h.Name)
		}
		if len(created)+len(dropped) > 0 {
			have, err = listSlots(ctx, conn)
		}
		return err
	})
	if len(created)+len(dropped) > 0 {
		m.logger.Info("replication slots changed", "created", strings.Join(created, ","), "dropped", strings.Join(dropped, ","))
	}
	if err != nil {
		return nil, fmt.Errorf("replication slots on %s: %w", m.member, err)
	}
	return have, nil
}

// createSlot makes s: a physical slot reserving WAL at once, a logical one
// in its database (where pg_create_logical_replication_slot must run).
func (m *Manager) createSlot(ctx context.Context, conn *pgx.Conn, s Slot) error {
	if s.Type == SlotPhysical {
		if _, err := conn.Exec(ctx, "SELECT pg_create_physical_replication_slot($1, true)", s.Name); err != nil {
			return fmt.Errorf("create slot %s: %w", s.Name, err)
		}
		return nil
	}
	// A state file copied here as a standby but never loaded (promoted
	// before the restart that loads it) would make the create fail.
	stale := filepath.Join(m.cfg.DataDir, "pg_replslot", s.Name)
	if _, err := os.Stat(stale); err == nil {
		m.logger.Warn("a copy of the logical slot was never loaded (promoted before the restart that loads it): the slot is made anew, "+
			"at the current position; its consumer misses the changes since its last confirmed position", "slot", s.Name)
		if err := os.RemoveAll(stale); err != nil {
			return fmt.Errorf("create logical slot %s: remove the unloaded copy: %w", s.Name, err)
		}
	}
	db, err := m.connectTo(ctx, s.Database)
	if err != nil {
		return fmt.Errorf("create logical slot %s: %w", s.Name, err)
	}
	defer db.Close(context.Background())
	if _, err := db.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, $2)", s.Name, s.Plugin); err != nil {
		return fmt.Errorf("create logical slot %s in database %s with plugin %s: %w", s.Name, s.Database, s.Plugin, err)
	}
	return nil
}

// StandbySlots is what SyncStandbySlots did.
type StandbySlots struct {
	// Slots are this standby's permanent slots afterwards.
	Slots []SlotState
	// Copied are the logical slots whose files were copied from the
	// primary: PostgreSQL loads them at its next start.
	Copied []string
	// Waiting says, per logical slot not yet copied, why.
	Waiting map[string]string
}

// SyncStandbySlots keeps the permanent slots of want on this standby near
// the primary's positions (primaryLSN, by slot name, as the primary last
// reported them), so that a consumer resumes on this server, promoted,
// without missing a committed change:
//   - a physical slot is made here and advanced;
//   - a logical slot cannot be made on a PostgreSQL 15 standby: its state
//     file is copied from the primary src (pg_read_binary_file, with the
//     rewind credentials) once this standby has replayed past the slot's
//     confirmed position, and PostgreSQL loads it at its next start; after
//     that it is advanced with pg_replication_slot_advance;
//   - a copy ahead of the primary's position (a consumer there went back,
//     or this server was the primary before a rewind) is dropped and
//     copied again, so a resumed consumer never skips a change;
//   - a logical slot that is not wanted is dropped (a standby of this
//     release cannot have made one: it is a stale copy).
//
// Slots are only ever advanced to min(primary's position, replayed): a
// copy never claims what the consumer did not confirm.
func (m *Manager) SyncStandbySlots(ctx context.Context, want []Slot, primaryLSN map[string]uint64, src Upstream, replayed uint64) (StandbySlots, error) {
	var res StandbySlots
	var dropped []string
	err := m.withSession(ctx, func(conn *pgx.Conn) error {
		have, err := listSlots(ctx, conn)
		if err != nil {
			return fmt.Errorf("list slots: %w", err)
		}
		var missing []Slot
		for _, h := range have {
			i := slices.IndexFunc(want, func(s Slot) bool { return s.Name == h.Name })
			stale := h.Type == SlotLogical && (i < 0 || !want[i].same(h) || (primaryLSN[h.Name] > 0 && h.LSN > primaryLSN[h.Name]))
			if i >= 0 && !want[i].same(h) && h.Type == SlotPhysical {
				stale = true
			}
			if !stale || h.Active {
				continue
			}
			if _, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", h.Name); err != nil {
				return fmt.Errorf("drop slot %s: %w", h.Name, err)
			}
			dropped = append(dropped, h.Name)
		}
		if len(dropped) > 0 {
			if have, err = listSlots(ctx, conn); err != nil {
				return fmt.Errorf("list slots: %w", err)
			}
		}
		for _, s := range want {
			i := slices.IndexFunc(have, func(h SlotState) bool { return h.Name == s.Name })
			switch {
			case i < 0 && s.Type == SlotPhysical:
				if err := m.createSlot(ctx, conn, s); err != nil {
					return err
				}
			case i < 0:
				missing = append(missing, s)
				continue
			}
			target := min(primaryLSN[s.Name], replayed)
			if i < 0 || target <= have[i].LSN || have[i].Active {
				continue
			}
			if _, err := conn.Exec(ctx, "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)", s.Name, FormatLSN(target)); err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("advance slot %s to %s: %w", s.Name, FormatLSN(target), err)
				}
				// A copy that cannot move (the WAL it needs is gone here)
				// would hold a consumer back for ever: it goes, and is
				// copied again once that can work.
				m.logger.Warn("a permanent slot's copy cannot advance: dropped, to be copied again", "slot", s.Name, "to", FormatLSN(target), "error", err)
				if _, derr := conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", s.Name); derr != nil {
					return fmt.Errorf("drop slot %s that cannot advance: %w", s.Name, derr)
				}
			}
		}
		if len(missing) > 0 {
			oldest, err := oldestWAL(ctx, conn)
			if err != nil {
				return fmt.Errorf("oldest WAL kept here: %w", err)
			}
			res.Copied, res.Waiting, err = m.copyLogicalSlots(ctx, missing, src, replayed, oldest)
			if err != nil {
				return err
			}
		}
		have, err = listSlots(ctx, conn)
		for _, h := range have {
			if !slices.ContainsFunc(want, func(s Slot) bool { return s.Name == h.Name }) {
				continue
			}
			if h.Type == SlotLogical && !m.hasDecodingSnapshot(h.Restart) {
				if res.Waiting == nil {
					res.Waiting = map[string]string{}
				}
				res.Waiting[h.Name] = "loaded; not ready until it advances past a point with a decoding snapshot here (the primary's writes and its consumer move it)"
				continue
			}
			res.Slots = append(res.Slots, h)
		}
		return err
	})
	if len(dropped) > 0 {
		m.logger.Info("stale replication slots dropped on the standby", "slots", strings.Join(dropped, ","))
	}
	if len(res.Copied) > 0 {
		m.logger.Info("logical slots copied from the primary; PostgreSQL loads them at its next start",
			"slots", strings.Join(res.Copied, ","), "primary", src.Name)
	}
	if err != nil {
		return res, fmt.Errorf("permanent slots on standby %s: %w", m.member, err)
	}
	return res, nil
}

// hasDecodingSnapshot reports whether this server has the logical
// decoding snapshot serialized at lsn (pg_logical/snapshots). A copied
// slot's restart_lsn has none until the copy has been advanced past a
// running-transactions record here: decoding from it before that would
// first look for a consistent point and silently skip the transactions
// that commit before it, after the slot's confirmed position. Only a copy
// with its snapshot is ready (reported, and counted in list and /metrics).
func (m *Manager) hasDecodingSnapshot(lsn uint64) bool {
	if lsn == 0 {
		return false
	}
	name := fmt.Sprintf("%X-%X.snap", lsn>>32, lsn&0xffffffff)
	_, err := os.Stat(filepath.Join(m.cfg.DataDir, "pg_logical", "snapshots", name))
	return err == nil
}

// slotStateFileMax bounds what is read of a slot's state file (a few
// hundred bytes in PostgreSQL 15).
const slotStateFileMax = 64 << 10

// walKeepMargin is how far behind the replay position a copied slot's
// restart_lsn may be: the WAL between them must outlive the restart that
// loads the copy (a standby's restartpoint keeps wal_keep_size, at least
// 128MB here, enforcedDefaults; the slot holds it once loaded).
const walKeepMargin = 64 << 20

// oldestWAL is the start of the oldest WAL segment in pg_wal.
func oldestWAL(ctx context.Context, conn *pgx.Conn) (uint64, error) {
	var seg uint64
	var oldest string
	err := conn.QueryRow(ctx, `SELECT setting::bigint, COALESCE((SELECT min(substr(name, 9)) FROM pg_ls_waldir()
		WHERE name ~ '^[0-9A-F]{24}$'), '') FROM pg_settings WHERE name = 'wal_segment_size'`).Scan(&seg, &oldest)
	if err != nil || oldest == "" {
		return 0, err
	}
	return segmentStart(oldest, seg)
}

// segmentStart is the LSN where the WAL segment named (after its
// timeline) hi/lo begins: hi is the LSN's upper 32 bits, lo the segment
// within them.
func segmentStart(name string, segSize uint64) (uint64, error) {
	if len(name) != 16 || segSize == 0 {
		return 0, fmt.Errorf("WAL segment %q", name)
	}
	hi, err1 := strconv.ParseUint(name[:8], 16, 32)
	lo, err2 := strconv.ParseUint(name[8:], 16, 32)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("WAL segment %q: %w", name, err)
	}
	return hi<<32 + lo*segSize, nil
}

// copyLogicalSlots copies the state files of the logical slots missing
// here from the primary src into pg_replslot, each once this standby has
// replayed past the slot's confirmed position (before that, the copy would
// claim changes this server may not have) and still has the WAL from the
// slot's restart_lsn on (oldest, with walKeepMargin): a copy needs it to
// decode, and a standby cannot fetch WAL it removed.
func (m *Manager) copyLogicalSlots(ctx context.Context, missing []Slot, src Upstream, replayed, oldest uint64) (copied []string, waiting map[string]string, err error) {
	user, password := m.rewindCredentials()
	cc, err := pgx.ParseConfig(m.peerConninfo(map[string]string{
		"host": src.Host, "port": fmt.Sprint(src.Port), "user": user, "dbname": "postgres", "sslmode": "prefer",
		"application_name": "raftgres-slot-copy", "connect_timeout": "5",
	}))
	if err != nil {
		return nil, nil, fmt.Errorf("copy logical slots from %s: %w", src.Name, err)
	}
	cc.Password = password
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, nil, m.withTLSHint(fmt.Errorf("copy logical slots: connect to the primary %s: %w", src.Name, err), src)
	}
	defer conn.Close(context.Background())
	waiting = map[string]string{}
	for _, s := range missing {
		var lsn, restart string
		var state []byte
		err := conn.QueryRow(ctx, `SELECT COALESCE(confirmed_flush_lsn::text, '0/0'), COALESCE(restart_lsn::text, '0/0'),
			pg_read_binary_file('pg_replslot/' || slot_name || '/state', 0, $4, false)
			FROM pg_replication_slots WHERE slot_name = $1 AND slot_type = 'logical' AND database = $2 AND plugin = $3`,
			s.Name, s.Database, s.Plugin, slotStateFileMax).Scan(&lsn, &restart, &state)
		if errors.Is(err, pgx.ErrNoRows) {
			waiting[s.Name] = "not on the primary yet"
			continue
		}
		if err != nil {
			return copied, waiting, fmt.Errorf("read slot %s on the primary %s: %w", s.Name, src.Name, err)
		}
		confirmed, err1 := ParseLSN(lsn)
		from, err2 := ParseLSN(restart)
		if err := errors.Join(err1, err2); err != nil {
			return copied, waiting, fmt.Errorf("read slot %s on the primary %s: %w", s.Name, src.Name, err)
		}
		switch {
		case confirmed == 0 || confirmed > replayed:
			waiting[s.Name] = "waiting to replay past the slot's confirmed position " + lsn
			continue
		case from < oldest || from+walKeepMargin < replayed:
			waiting[s.Name] = "the slot needs WAL from " + restart + " on, which this standby does not keep: waiting for its consumer to move it on"
			continue
		}
		if err := m.writeSlotState(s.Name, state); err != nil {
			return copied, waiting, err
		}
		copied = append(copied, s.Name)
	}
	return copied, waiting, nil
}

// writeSlotState puts a slot's state file into pg_replslot/name, durably.
func (m *Manager) writeSlotState(name string, state []byte) error {
	dir := filepath.Join(m.cfg.DataDir, "pg_replslot", name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("copy slot %s: %w", name, err)
	}
	if err := m.chown(dir); err != nil {
		return fmt.Errorf("copy slot %s: %w", name, err)
	}
	if err := fsutil.WriteFileWith(filepath.Join(dir, "state"), state, 0o600, m.chown); err != nil {
		return fmt.Errorf("copy slot %s: %w", name, err)
	}
	if err := fsutil.SyncDir(filepath.Dir(dir)); err != nil {
		return fmt.Errorf("copy slot %s: %w", name, err)
	}
	return nil
}
