package ops

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"raftgres/api"
)

// DrillTable is the table the drill's probe writes to: created if missing,
// dropped at the end.
const DrillTable = "raftgres_drill"

// probeInterval paces the probe's writes: the resolution of the write
// gaps it measures.
const probeInterval = 10 * time.Millisecond

// probeTimeout bounds one connection attempt or write: a write that
// waits longer (a primary fenced, a commit gate holding it) counts as not
// acknowledged.
const probeTimeout = time.Second

// ProbeAck is one acknowledged probe write: its id, when it was
// acknowledged and by which member.
type ProbeAck struct {
	ID     int64
	At     time.Time
	Member string
}

// probeTarget is a member's PostgreSQL address.
type probeTarget struct {
	name, host string
	port       int
}

// drillProbe writes sequenced rows to whichever member accepts writes,
// the primary of the last view first, and records every acknowledgement.
// A write that failed may have committed without its acknowledgement
// reaching the probe (a failover in between): its outcome is unknown, so
// its id is never retried and never counted.
type drillProbe struct {
	run  string // this drill's rows
	base string // the connection string without host and port

	mu      sync.Mutex
	targets []probeTarget
	acks    []ProbeAck

	next   int64
	cancel context.CancelFunc
	done   chan struct{}
}

func newDrillProbe(run, base string, view api.ClusterView) *drillProbe {
	p := &drillProbe{run: run, base: base}
	p.follow(view)
	return p
}

// follow points the probe at the view's members, its primary first.
func (p *drillProbe) follow(view api.ClusterView) {
	var ts []probeTarget
	for _, m := range view.Members {
		if m.Host == "" || m.Port == 0 {
			continue
		}
		t := probeTarget{name: m.Name, host: m.Host, port: m.Port}
		if m.Role == api.ClusterLeader {
			ts = slices.Insert(ts, 0, t)
		} else {
			ts = append(ts, t)
		}
	}
	p.mu.Lock()
	p.targets = ts
	p.mu.Unlock()
}

// TargetConnString is base (a libpq URL or key/value string, possibly
// empty: libpq's environment then fills in the rest) pointed at host and
// port.
func TargetConnString(base, host string, port int) (string, error) {
	if strings.HasPrefix(base, "postgres://") || strings.HasPrefix(base, "postgresql://") {
		u, err := url.Parse(base)
		if err != nil {
			return "", fmt.Errorf("parse the connection URL: %w", err)
		}
		u.Host = net.JoinHostPort(host, strconv.Itoa(port))
		return u.String(), nil
	}
	// Key/value: a keyword given twice takes its last value.
	return strings.TrimSpace(fmt.Sprintf("%s host='%s' port=%d", base, host, port)), nil
}

// connect opens a connection to t.
func (p *drillProbe) connect(ctx context.Context, t probeTarget) (*pgx.Conn, error) {
	s, err := TargetConnString(p.base, t.host, t.port)
	if err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig(s)
	if err != nil {
		return nil, fmt.Errorf("parse the connection string: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s (%s:%d): %w", t.name, t.host, t.port, err)
	}
	return conn, nil
}

// start runs the probe until stop.
func (p *drillProbe) start() {
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel, p.done = cancel, make(chan struct{})
	go p.loop(ctx)
}

func (p *drillProbe) stop() {
	if p.cancel != nil {
		p.cancel()
		<-p.done
	}
}

func (p *drillProbe) loop(ctx context.Context) {
	defer close(p.done)
	conns := map[string]*pgx.Conn{}
	defer func() {
		for _, c := range conns {
			_ = c.Close(context.Background())
		}
	}()
	insert := fmt.Sprintf("INSERT INTO %s (run, id, member) VALUES ($1, $2, $3)", DrillTable)
	for ctx.Err() == nil {
		p.mu.Lock()
		targets := slices.Clone(p.targets)
		p.mu.Unlock()
		for _, t := range targets {
			conn := conns[t.name]
			if conn == nil {
				c, err := p.connect(ctx, t)
				if err != nil {
					continue
				}
				conn, conns[t.name] = c, c
			}
			id := p.next
			p.next++
			wctx, cancel := context.WithTimeout(ctx, probeTimeout)
			_, err := conn.Exec(wctx, insert, p.run, id, t.name)
			cancel()
			if err != nil {
				_ = conn.Close(context.Background())
				delete(conns, t.name)
				continue
			}
			p.mu.Lock()
			p.acks = append(p.acks, ProbeAck{ID: id, At: time.Now(), Member: t.name})
			p.mu.Unlock()
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(probeInterval):
		}
	}
}

// snapshot is the acknowledgements so far.
func (p *drillProbe) snapshot() []ProbeAck {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.acks)
}

// ackedOnSince reports whether member acknowledged a write after t.
func (p *drillProbe) ackedOnSince(member string, t time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.acks) - 1; i >= 0 && p.acks[i].At.After(t); i-- {
		if p.acks[i].Member == member {
			return true
		}
	}
	return false
}

// exec runs sql on the member t.
func (p *drillProbe) exec(ctx context.Context, t probeTarget, sql string, args ...any) error {
	conn, err := p.connect(ctx, t)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("on %s: %w", t.name, err)
	}
	return nil
}

// readBack is the ids of this run's rows on the member t.
func (p *drillProbe) readBack(ctx context.Context, t probeTarget) (map[int64]bool, error) {
	conn, err := p.connect(ctx, t)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, fmt.Sprintf("SELECT id FROM %s WHERE run = $1", DrillTable), p.run)
	if err != nil {
		return nil, fmt.Errorf("read the probe's rows on %s: %w", t.name, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("read the probe's rows on %s: %w", t.name, err)
	}
	have := make(map[int64]bool, len(ids))
	for _, id := range ids {
		have[id] = true
	}
	return have, nil
}

// target is the member name's address in the probe's list.
func (p *drillProbe) target(name string) (probeTarget, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range p.targets {
		if t.name == name {
			return t, true
		}
	}
	return probeTarget{}, false
}
