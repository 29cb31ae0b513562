package integration

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// probe writes sequenced rows to whichever member accepts writes and
// records every acknowledgement with its time.
type probe struct {
	c      *cluster
	mu     sync.Mutex
	acked  []int
	ackAt  []time.Time
	ackOn  []string
	next   int
	cancel context.CancelFunc
	done   chan struct{}
}

func startProbe(t testing.TB, c *cluster, primary *Node) *probe {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	if err := pgExec(ctx, primary, "CREATE TABLE IF NOT EXISTS acks (id int primary key)"); err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithCancel(context.Background())
	p := &probe{c: c, cancel: cancel, done: make(chan struct{})}
	go p.run(pctx)
	t.Cleanup(p.stop)
	return p
}

func (p *probe) run(ctx context.Context) {
	defer close(p.done)
	conns := map[string]*pgx.Conn{}
	defer func() {
		for _, c := range conns {
			_ = c.Close(context.Background())
		}
	}()
	for ctx.Err() == nil {
		wrote := false
		for _, n := range p.c.nodes {
			if _, exited := n.Exited(); exited {
				continue
			}
			conn := conns[n.Name]
			if conn == nil {
				cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
				c, err := pgx.Connect(cctx, n.PGConn())
				cancel()
				if err != nil {
					continue
				}
				conn, conns[n.Name] = c, c
			}
			wctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			_, err := conn.Exec(wctx, "INSERT INTO acks VALUES ($1)", p.next)
			cancel()
			if err != nil {
				// The INSERT may have committed without its
				// acknowledgement reaching us (a failover in between): its
				// outcome is unknown, so the id is never retried (a retry
				// would meet a duplicate key forever) and never counted.
				p.next++
				_ = conn.Close(context.Background())
				delete(conns, n.Name)
				continue
			}
			p.mu.Lock()
			p.acked, p.ackAt, p.ackOn = append(p.acked, p.next), append(p.ackAt, time.Now()), append(p.ackOn, n.Name)
			p.mu.Unlock()
			p.next++
			wrote = true
			break
		}
		if !wrote {
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

func (p *probe) stop() {
	p.cancel()
	<-p.done
}

// maxGap is the longest time between two consecutive acknowledgements.
func (p *probe) maxGap() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var gap time.Duration
	for i := 1; i < len(p.ackAt); i++ {
		gap = max(gap, p.ackAt[i].Sub(p.ackAt[i-1]))
	}
	return gap
}

// missing returns acknowledged ids absent on n.
func (p *probe) missing(n *Node) ([]int, error) { return p.missingFrom(n, "") }

// missingFrom returns ids acknowledged by member from ("" = any) that are
// absent on n.
func (p *probe) missingFrom(n *Node, from string) ([]int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, n.PGConn())
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT id FROM acks")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	have := map[int]bool{}
	for rows.Next() {
		var id int
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		have[id] = true
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []int
	for i, id := range p.acked {
		if !have[id] && (from == "" || p.ackOn[i] == from) {
			out = append(out, id)
		}
	}
	return out, nil
}
