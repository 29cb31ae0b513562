package failover

// The simulator's PostgreSQL: a WAL of unique records per data directory
// (a standby's WAL is a prefix of its upstream's; a promotion appends a
// timeline switch, so an old primary that wrote more has diverged), running
// or stopped, primary or standby, synchronous_standby_names with FIRST n /
// ANY n and case-insensitive names, walsenders with flush positions, the
// commit gate (replies only while the holder's lease is valid), client
// commits (acknowledged when the synchronous rule holds; a cancelled wait
// is acknowledged anyway: "committed locally"), promote, pg_rewind, clone.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"raftgres/pgmanager"
)

const simSysID = "7000000000000000042"

func simLSN(n int) uint64 { return 0x3000000 + uint64(n)*simRecordBytes }

// simRecordBytes is the WAL one simulated record takes.
const simRecordBytes = 0x100

type simCommit struct {
	id       uint64
	pos      int // records up to and including it: simLSN(pos+1)
	issued   time.Time
	deadline time.Time // the client cancels its wait here
}

// simAck is one commit acknowledged to a client.
type simAck struct {
	id     uint64
	member string
	at     time.Time
	epoch  uint64
	full   bool // the synchronous rule held; false: a cancelled wait ("committed locally")
	// waived: acknowledged before a recover --allow-data-loss, which
	// cleared the record of who holds it; the durability checks skip it.
	waived bool
}

// simWritable is a member's PostgreSQL becoming writable.
type simWritable struct {
	member string
	epoch  uint64
	at     time.Time
}

type simPG struct {
	m *simMember

	hasData  bool
	wal      []uint64
	timeline uint32
	running  bool
	recovery bool // in recovery (standby)
	signal   bool // standby.signal
	upstream string
	ssn      string
	sysid    string

	ssnParsed, ssnMethod string
	ssnNum               int
	ssnNames             []string

	streaming bool // its walreceiver streams from upstream
	// streamed: the walreceiver streamed since the server started (a
	// standby shows a received position only then).
	streamed  bool
	gateFlush uint64
	// gateQ of gateNames must have flushed what the gate confirms
	// (SetGateQuorum; 0: the lease alone).
	gateQ     int
	gateNames []string
	pending   []simCommit
	epoch     uint64 // epoch under which it became writable
	keeperAt  time.Time
	exited    chan struct{}
	// ckpt is how many records the latest checkpoint covers, unclean
	// whether the last stop wrote none (pg_control's cluster state).
	ckpt    int
	unclean bool
}

func (w *simWorld) newRecord(p *simPG) uint64 {
	w.nextRecord++
	id := w.nextRecord
	w.recPos[id] = len(p.wal)
	p.wal = append(p.wal, id)
	return id
}

// has reports whether wal holds record id.
func (w *simWorld) has(wal []uint64, id uint64) bool {
	pos, ok := w.recPos[id]
	return ok && pos < len(wal) && wal[pos] == id
}

// isPrefix reports whether a is a prefix of b (records are unique and each
// is made once at one position, so comparing the last one suffices).
func isPrefix(a, b []uint64) bool {
	return len(a) <= len(b) && (len(a) == 0 || b[len(a)-1] == a[len(a)-1])
}

func commonPrefix(a, b []uint64) int {
	n := min(len(a), len(b))
	for n > 0 && a[n-1] != b[n-1] {
		n--
	}
	return n
}

// ---------------------------------------------------------------- Postgres interface

func (p *simPG) lock() func() {
	p.m.w.mu.Lock()
	return p.m.w.mu.Unlock
}

func (p *simPG) Status(context.Context) (pgmanager.Status, error) {
	defer p.lock()()
	w := p.m.w
	if !p.running {
		return pgmanager.Status{}, nil
	}
	st := pgmanager.Status{Running: true, InRecovery: p.recovery, SystemID: p.sysid, Timeline: p.timeline,
		SyncStandbyNames: p.ssn, Version: "15"}
	if p.recovery {
		st.ReplayedLSN = simLSN(len(p.wal))
		if p.streamed {
			st.ReceivedLSN = simLSN(len(p.wal))
		}
		st.ReplayExhausted = !p.streaming // replay is instant here
		if p.streaming {
			st.WalReceiver = "streaming"
		}
		if u, ok := w.by[p.upstream]; ok {
			st.UpstreamAddr = simPGAddr(u.i)
		}
		return st, nil
	}
	st.CurrentLSN = simLSN(len(p.wal))
	for _, ws := range w.walsenders(p) {
		r := pgmanager.Replica{ApplicationName: ws.name, State: "streaming", SyncState: ws.syncState,
			SentLSN: ws.flush, FlushLSN: ws.flush, ReplayLSN: ws.flush}
		if ws.gate {
			g := r
			st.Gate = &g
			continue
		}
		st.Replicas = append(st.Replicas, r)
	}
	return st, nil
}

func simPGAddr(i int) string { return fmt.Sprintf("10.0.0.%d:5432", i+1) }

func (p *simPG) Running() bool {
	defer p.lock()()
	return p.running
}

func (p *simPG) Exited() <-chan struct{} { return simNever }

func (p *simPG) HasDataDir() bool {
	defer p.lock()()
	return p.hasData
}

func (p *simPG) IsStandbyConfigured() bool {
	defer p.lock()()
	return p.signal
}

func (p *simPG) SystemID(context.Context) (string, error) {
	defer p.lock()()
	if !p.hasData {
		return "", errors.New("sim: no data directory")
	}
	return p.sysid, nil
}

func (p *simPG) Init(context.Context, pgmanager.Desired) (string, error) {
	return "", errors.New("sim: initdb is not simulated")
}

// configure takes d's settings (mu held).
func (p *simPG) configure(d pgmanager.Desired) {
	p.ssn = d.SyncStandbyNames
	if d.Standby != nil {
		p.upstream = d.Standby.Name
	} else if d.IsStandby() {
		p.upstream = ""
	}
}

func (p *simPG) Start(_ context.Context, d pgmanager.Desired) error {
	defer p.lock()()
	w := p.m.w
	if !p.hasData {
		return errors.New("sim: no data directory")
	}
	if p.m.suspended {
		return errors.New("sim: host suspended")
	}
	if p.running {
		return nil
	}
	p.configure(d)
	if d.IsStandby() {
		p.signal = true
		p.keeperAt = time.Time{} // a standby acknowledges nothing: the keeper is disarmed
	}
	p.running, p.recovery, p.streaming, p.streamed = true, p.signal, false, false
	p.ckpt = len(p.wal) // the end-of-recovery checkpoint (or the shutdown one it started from)
	w.tracef(p.m.name, "pg: started %s (tl %d, lsn %d, upstream %q, ssn %s)", p.role(), p.timeline, len(p.wal), p.upstream, p.ssn)
	if !p.recovery {
		w.becameWritable(p)
	}
	return nil
}

func (p *simPG) role() string {
	if p.recovery {
		return "standby"
	}
	return "primary"
}

// stopLocked stops the server (mu held). A fast stop of a primary writes a
// shutdown checkpoint, which the walsenders flush to the standbys
// streaming from it.
func (p *simPG) stopLocked(how string) {
	w := p.m.w
	if !p.running {
		return
	}
	if how == "fast" && !p.recovery {
		w.newRecord(p)
		for _, s := range w.mem {
			if s.pg.running && s.pg.recovery && s.pg.streaming && s.pg.upstream == p.m.name && !s.stalled && !s.suspended {
				s.pg.wal = slices.Clone(p.wal)
			}
		}
	}
	// A clean stop's shutdown checkpoint (a standby's restartpoint) is
	// the latest; an immediate stop leaves an older one behind.
	p.unclean = how != "fast"
	if !p.unclean {
		p.ckpt = len(p.wal)
	}
	for _, c := range p.pending {
		w.tracef(p.m.name, "pg: commit %d not acknowledged (server stopped)", c.id)
	}
	p.pending = nil
	p.running, p.streaming = false, false
	w.tracef(p.m.name, "pg: stopped (%s, lsn %d)", how, len(p.wal))
}

func (p *simPG) Stop(_ context.Context, mode pgmanager.StopMode) error {
	defer p.lock()()
	how := "immediate"
	if mode == pgmanager.StopFast {
		how = "fast"
		if w := p.m.w; p.running && !p.recovery && w.rng3.Float64() < w.cfg.pUnclean {
			// pgmanager's step timeout ran out before the shutdown
			// checkpoint: it escalated to an immediate stop.
			w.tracef(p.m.name, "pg: fast stop escalated to immediate before its shutdown checkpoint")
			how = "immediate"
		}
	}
	p.stopLocked(how)
	return nil
}

func (p *simPG) Restart(ctx context.Context, d pgmanager.Desired) error {
	if err := p.Stop(ctx, pgmanager.StopFast); err != nil {
		return err
	}
	return p.Start(ctx, d)
}

func (p *simPG) Reload(_ context.Context, d pgmanager.Desired) (pgmanager.ConfigChange, error) {
	defer p.lock()()
	if !p.running {
		return pgmanager.ConfigChange{}, errors.New("sim: not running")
	}
	p.configure(d)
	return pgmanager.ConfigChange{}, nil
}

func (p *simPG) Promote(context.Context) error {
	defer p.lock()()
	w := p.m.w
	if !p.running || !p.recovery {
		return errors.New("sim: promote: not a running standby")
	}
	w.nextTL++
	p.timeline = w.nextTL
	p.recovery, p.signal, p.streaming, p.upstream = false, false, false, ""
	w.newRecord(p) // the timeline switch
	w.tracef(p.m.name, "pg: promoted (tl %d, lsn %d, ssn %s)", p.timeline, len(p.wal), p.ssn)
	w.becameWritable(p)
	return nil
}

func (p *simPG) Follow(_ context.Context, d pgmanager.Desired) error {
	defer p.lock()()
	if !p.running {
		return errors.New("sim: not running")
	}
	p.configure(d)
	p.streaming = false
	p.m.w.tracef(p.m.name, "pg: follows %q", p.upstream)
	return nil
}

// source is the member a pg_rewind or clone copies from (mu held).
func (p *simPG) source(d pgmanager.Desired) (*simPG, error) {
	w := p.m.w
	if d.Standby == nil {
		return nil, errors.New("sim: no source")
	}
	src, ok := w.by[d.Standby.Name]
	if !ok || !src.pg.running || src.suspended || !w.bidir(p.m, src, linkPG) {
		return nil, fmt.Errorf("sim: source %s unavailable", d.Standby.Name)
	}
	return src.pg, nil
}

func (p *simPG) Rewind(_ context.Context, d pgmanager.Desired) error {
	defer p.lock()()
	w := p.m.w
	if p.running {
		return errors.New("sim: pg_rewind: server running")
	}
	src, err := p.source(d)
	if err != nil {
		return err
	}
	p.configure(d)
	p.signal = true
	if isPrefix(p.wal, src.wal) {
		w.tracef(p.m.name, "pg: pg_rewind from %s: no rewind required", src.m.name)
		return nil
	}
	n := commonPrefix(p.wal, src.wal)
	w.dropping(p, n, "pg_rewind")
	p.wal = slices.Clone(p.wal[:n])
	p.ckpt = n
	p.timeline = src.timeline
	w.tracef(p.m.name, "pg: rewound onto %s at lsn %d", src.m.name, n)
	return nil
}

func (p *simPG) Clone(_ context.Context, d pgmanager.Desired) error {
	defer p.lock()()
	w := p.m.w
	src, err := p.source(d)
	if err != nil {
		return err
	}
	if p.hasData {
		w.dropping(p, 0, "clone over")
	}
	p.configure(d)
	p.hasData, p.signal, p.sysid = true, true, simSysID
	p.wal, p.timeline = slices.Clone(src.wal), src.timeline
	p.ckpt, p.unclean = len(p.wal), false
	w.tracef(p.m.name, "pg: cloned from %s (lsn %d)", src.m.name, len(p.wal))
	return nil
}

func (p *simPG) Reclone(ctx context.Context, d pgmanager.Desired) error {
	p.m.w.mu.Lock()
	p.stopLocked("immediate")
	p.m.w.mu.Unlock()
	return p.Clone(ctx, d)
}

func (p *simPG) EnsureSlots(context.Context, []pgmanager.Slot, func(pgmanager.SlotState) bool) ([]pgmanager.SlotState, error) {
	return nil, nil
}

func (p *simPG) SyncStandbySlots(context.Context, []pgmanager.Slot, map[string]uint64, pgmanager.Upstream, uint64) (pgmanager.StandbySlots, error) {
	return pgmanager.StandbySlots{}, nil
}

// UpstreamSystemID: the simulator draws no standby clusters.
func (p *simPG) UpstreamSystemID(context.Context, pgmanager.Desired) (string, error) {
	return "", errors.New("sim: no standby cluster source")
}

func (p *simPG) Checkpoint(context.Context) error { return nil }

func (p *simPG) ControlData(context.Context) (map[string]string, error) {
	defer p.lock()()
	state := "shut down"
	switch {
	case p.running || p.unclean:
		state = "in production"
		if p.recovery {
			state = "in archive recovery"
		}
	case p.recovery:
		state = "shut down in recovery"
	}
	n := max(p.ckpt-1, 0)
	return map[string]string{"Latest checkpoint location": pgmanager.FormatLSN(simLSN(n)), "Database cluster state": state}, nil
}

func (p *simPG) SetSynchronousStandbyNames(_ context.Context, d pgmanager.Desired) error {
	defer p.lock()()
	if !p.running {
		return errors.New("sim: not running")
	}
	p.ssn = d.SyncStandbyNames
	p.m.w.tracef(p.m.name, "pg: synchronous_standby_names = %s", p.ssn)
	return nil
}

func (p *simPG) RunGate(ctx context.Context, _ func() time.Time, _ func() <-chan struct{}) error {
	<-ctx.Done()
	return nil
}

func (p *simPG) Fence() bool {
	defer p.lock()()
	return p.fenceLocked("fencer")
}

func (p *simPG) fenceLocked(by string) bool {
	was := p.running
	if was {
		w := p.m.w
		st := w.committed()
		if by != "parent-death signal" && st.Leader.Holder == p.m.name && w.now.Sub(p.m.disturbedAt) > 2*max(st.Config.TTL, st.Leader.TTL) {
			// Nothing kept the holder from renewing for two ttls.
			w.stats.needlessFences++
			w.tracef(p.m.name, "needless fence: the holder was undisturbed since %.3fs (ttl %s, its last renewal's %s)",
				max(p.m.disturbedAt.Sub(w.start), 0).Seconds(), st.Config.TTL, st.Leader.TTL)
			if simOn("fence") {
				w.violate("%s fenced by the %s though nothing kept it from renewing since %.3fs", p.m.name, by, max(p.m.disturbedAt.Sub(w.start), 0).Seconds())
			}
		}
		p.m.w.tracef(p.m.name, "pg: fenced by the %s", by)
		p.stopLocked("immediate")
		p.m.woken = true
	}
	return was
}

func (p *simPG) Callback(string, string) {}

// SetGateQuorum takes the gate's rule; its next reply uses it (pgTick).
func (p *simPG) SetGateQuorum(q int, names []string) {
	defer p.lock()()
	if q != p.gateQ || !slices.Equal(names, p.gateNames) {
		p.m.w.tracef(p.m.name, "gate quorum %d of %v", q, names)
	}
	p.gateQ, p.gateNames = q, slices.Clone(names)
}

// gateQuorumFlush is what the gate may confirm by its quorum rule: the
// position gateQ of gateNames streaming from p flushed (mu held).
func (w *simWorld) gateQuorumFlush(p *simPG) uint64 {
	if p.gateQ == 0 {
		return ^uint64(0)
	}
	var flushes []uint64
	for _, ws := range w.walsenders(p) {
		if !ws.gate && slices.Contains(p.gateNames, ws.name) {
			flushes = append(flushes, ws.flush)
		}
	}
	if len(flushes) < p.gateQ {
		return 0
	}
	slices.Sort(flushes)
	return flushes[len(flushes)-p.gateQ]
}

func (p *simPG) Hook(context.Context, string) error { return nil }

func (p *simPG) GateConnected() bool {
	defer p.lock()()
	return p.running && !p.recovery && p.m.alive
}

// FenceAt arms the fence keeper, a process apart from the agent: it kills
// PostgreSQL at until, even while the agent is frozen (keeperTick).
func (p *simPG) FenceAt(until time.Time) {
	defer p.lock()()
	if !until.Equal(p.keeperAt) {
		p.m.w.tracef(p.m.name, "fence keeper armed for %.3fs", until.Sub(p.m.w.start).Seconds())
	}
	p.keeperAt = until
}

// ---------------------------------------------------------------- synchronous replication

// parsed is parseSSN(p.ssn), cached.
func (p *simPG) parsed() (string, int, []string) {
	if p.ssnParsed != p.ssn || p.ssnNames == nil {
		p.ssnMethod, p.ssnNum, p.ssnNames = parseSSN(p.ssn)
		if p.ssnNames == nil {
			p.ssnNames = []string{}
		}
		p.ssnParsed = p.ssn
	}
	return p.ssnMethod, p.ssnNum, p.ssnNames
}

type simWalsender struct {
	name      string
	gate      bool
	flush     uint64
	prio      int
	syncState string
}

// parseSSN parses synchronous_standby_names: "a", "a, b" (FIRST 1),
// "FIRST n (…)", "ANY n (…)", "n (…)"; names may be quoted or "*".
func parseSSN(s string) (method string, num int, names []string) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", 0, nil
	}
	method, num = "FIRST", 1
	up := strings.ToUpper(s)
	rest := s
	switch {
	case strings.HasPrefix(up, "FIRST "):
		rest = strings.TrimSpace(s[6:])
	case strings.HasPrefix(up, "ANY "):
		method, rest = "ANY", strings.TrimSpace(s[4:])
	}
	if i := strings.Index(rest, "("); i >= 0 && strings.HasSuffix(rest, ")") {
		if n, err := strconv.Atoi(strings.TrimSpace(rest[:i])); err == nil {
			num = n
		}
		rest = rest[i+1 : len(rest)-1]
	}
	for _, part := range strings.Split(rest, ",") {
		part = strings.TrimSpace(part)
		if len(part) >= 2 && part[0] == '"' && part[len(part)-1] == '"' {
			part = strings.ReplaceAll(part[1:len(part)-1], `""`, `"`)
		}
		if part != "" {
			names = append(names, part)
		}
	}
	return method, num, names
}

// walsenders lists the connections streaming from p with the sync state
// PostgreSQL gives them (mu held).
func (w *simWorld) walsenders(p *simPG) []simWalsender {
	var out []simWalsender
	if p.m.alive {
		out = append(out, simWalsender{name: pgmanager.GateName, gate: true, flush: p.gateFlush})
	}
	for _, s := range w.mem {
		if s != p.m && s.pg.running && s.pg.recovery && s.pg.streaming && s.pg.upstream == p.m.name {
			out = append(out, simWalsender{name: s.name, flush: simLSN(len(s.pg.wal))})
		}
	}
	method, num, names := p.parsed()
	for i := range out {
		out[i].prio = -1
		out[i].syncState = "async"
		for j, n := range names {
			if n == "*" || strings.EqualFold(n, out[i].name) {
				out[i].prio = j
				break
			}
		}
	}
	switch method {
	case "FIRST":
		var cands []int
		for i := range out {
			if out[i].prio >= 0 {
				cands = append(cands, i)
				out[i].syncState = "potential"
			}
		}
		slices.SortStableFunc(cands, func(a, b int) int { return out[a].prio - out[b].prio })
		for k, i := range cands {
			if k < num {
				out[i].syncState = "sync"
			}
		}
	case "ANY":
		for i := range out {
			if out[i].prio >= 0 {
				out[i].syncState = "quorum"
			}
		}
	}
	return out
}

// acked reports whether a commit at lsn is released by the synchronous
// rule (mu held).
func (w *simWorld) ackRule(p *simPG, lsn uint64) bool {
	return ackRuleWS(p, w.walsenders(p), lsn)
}

func ackRuleWS(p *simPG, ws []simWalsender, lsn uint64) bool {
	method, num, _ := p.parsed()
	if method == "" || num <= 0 {
		return true
	}
	switch method {
	case "FIRST":
		n := 0
		for _, s := range ws {
			if s.syncState == "sync" {
				n++
				if s.flush < lsn {
					return false
				}
			}
		}
		return n >= num
	default:
		n := 0
		for _, s := range ws {
			if s.syncState == "quorum" && s.flush >= lsn {
				n++
			}
		}
		return n >= num
	}
}

// ---------------------------------------------------------------- the world's PostgreSQL tick

// pgTick streams WAL, lets the gates reply, releases and cancels commit
// waits and issues new commits (mu held).
func (w *simWorld) pgTick() {
	// Replication.
	for _, s := range w.mem {
		p := s.pg
		if !p.running || !p.recovery || s.suspended {
			continue
		}
		u, ok := w.by[p.upstream]
		was := p.streaming
		p.streaming = ok && u != s && u.pg.running && !u.suspended && w.bidir(s, u, linkPG) && isPrefix(p.wal, u.pg.wal)
		p.streamed = p.streamed || p.streaming
		if p.streaming && !s.stalled && len(p.wal) < len(u.pg.wal) {
			p.wal = slices.Clone(u.pg.wal)
		}
		if p.streaming != was {
			w.tracef(s.name, "pg: walreceiver streaming=%v from %q (lsn %d)", p.streaming, p.upstream, len(p.wal))
		}
	}
	// Gates, acknowledgements, cancels, new commits.
	for _, m := range w.mem {
		p := m.pg
		if !p.running || p.recovery || m.suspended {
			continue
		}
		if m.alive && !m.paused && m.sup != nil && w.now.Before(m.sup.lease.End().Add(-pgmanager.GateMargin)) {
			p.gateFlush = min(simLSN(len(p.wal)), w.gateQuorumFlush(p))
		}
		ws := w.walsenders(p)
		keep := p.pending[:0]
		for _, c := range p.pending {
			switch {
			case ackRuleWS(p, ws, simLSN(c.pos+1)):
				w.ack(m, c, true)
			case !w.now.Before(c.deadline):
				w.ack(m, c, false)
			default:
				keep = append(keep, c)
			}
		}
		p.pending = keep
		if w.rng.Float64() < w.cfg.pCommit {
			id := w.newRecord(p)
			w.stats.commits++
			c := simCommit{id: id, pos: len(p.wal) - 1, issued: w.now,
				deadline: w.now.Add(time.Duration(100+w.rng.Intn(1900)) * time.Millisecond)}
			if ackRuleWS(p, ws, simLSN(c.pos+1)) {
				w.ack(m, c, true)
			} else {
				p.pending = append(p.pending, c)
			}
		}
	}
}
