package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"raftgres/raftstore"
)

// consumer runs pg_recvlogical on the permanent slot cdc of whichever
// member holds the leader key, again after every disconnect (a failover, a
// switchover), and collects the ids of the acks rows it was sent.
type consumer struct {
	c      *cluster
	dir    string
	mu     sync.Mutex
	seen   map[int]int // id -> times delivered
	runs   []string    // the member of each run
	cancel context.CancelFunc
	done   chan struct{}
}

var ackInsert = regexp.MustCompile(`^table public\.acks: INSERT: id\[integer\]:(\d+)$`)

func startConsumer(t *testing.T, c *cluster) *consumer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	k := &consumer{c: c, dir: t.TempDir(), seen: map[int]int{}, cancel: cancel, done: make(chan struct{})}
	go k.run(ctx)
	t.Cleanup(k.stop)
	return k
}

func (k *consumer) run(ctx context.Context) {
	defer close(k.done)
	for i := 0; ctx.Err() == nil; i++ {
		st, err := k.c.state()
		holder := k.c.byName(st.Leader.Holder)
		if err != nil || holder == nil {
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		// -s 1: the position it has written is confirmed to the server
		// every second; --no-loop: a lost server ends the run.
		cmd := exec.CommandContext(ctx, "/usr/lib/postgresql/15/bin/pg_recvlogical", "-d", holder.PGConn(), "-S", "cdc",
			"--start", "-f", "-", "-s", "1", "--no-loop")
		out, err := cmd.StdoutPipe()
		if err != nil {
			continue
		}
		if err := cmd.Start(); err != nil {
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		k.mu.Lock()
		k.runs = append(k.runs, holder.Name)
		k.mu.Unlock()
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := ackInsert.FindStringSubmatch(sc.Text()); m != nil {
				id, _ := strconv.Atoi(m[1])
				k.mu.Lock()
				k.seen[id]++
				k.mu.Unlock()
			}
		}
		_ = cmd.Wait()
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func (k *consumer) stop() {
	k.cancel()
	<-k.done
}

// missing are the ids of acked not yet delivered; dups how many
// deliveries were repeats.
func (k *consumer) missing(acked []int) (missing []int, dups int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, id := range acked {
		if k.seen[id] == 0 {
			missing = append(missing, id)
		}
	}
	for _, n := range k.seen {
		dups += n - 1
	}
	return missing, dups
}

// slotOn is the position member reports for its permanent slot name (0,
// false when it has none).
func slotOn(st raftstore.State, member, name string) (uint64, bool) {
	if m, ok := st.Members[member]; ok {
		return m.SlotLSN(name)
	}
	return 0, false
}

// TestLogicalSlotSurvivesFailoverAndSwitchover: a CDC consumer
// (pg_recvlogical, test_decoding) reads a permanent logical slot while a
// probe writes, across a kill -9 of the primary's agent and then a
// switchover to the synchronous standby. Every acknowledged row is delivered at
// least once (synchronous mode: no acknowledged row is lost either).
func TestLogicalSlotSurvivesFailoverAndSwitchover(t *testing.T) {
	requireIntegration(t)
	c := newPGClusterDCS(t, 3, nil, "{ttl: 3, loop_wait: 300ms, retry_timeout: 1, synchronous_mode: true, "+
		"postgresql: {use_slots: true, parameters: {wal_level: logical}}, "+
		"slots: {cdc: {type: logical, database: postgres, plugin: test_decoding}}}")
	primary := c.waitPrimary(120*time.Second, c.nodes...)
	c.waitStreaming(primary)
	p := startProbe(t, c, primary)
	k := startConsumer(t, c)

	// everyReplicaHasTheSlot waits until every live member but the holder
	// reports a loaded copy of cdc.
	everyReplicaHasTheSlot := func(why string) {
		t.Helper()
		waitFor(t, 90*time.Second, "every replica reports its copy of cdc "+why, func() (bool, error) {
			st, err := c.state()
			if err != nil {
				return false, err
			}
			pos, ok := slotOn(st, st.Leader.Holder, "cdc")
			if !ok || pos == 0 {
				return false, nil
			}
			for _, n := range c.nodes {
				if _, exited := n.Exited(); exited || n.Name == st.Leader.Holder {
					continue
				}
				if l, ok := slotOn(st, n.Name, "cdc"); !ok || l == 0 || l > pos {
					return false, nil
				}
			}
			return true, nil
		})
	}
	// delivering waits until the consumer has been sent rows acked after
	// now: it reads on the current primary.
	delivering := func(why string) {
		t.Helper()
		p.mu.Lock()
		from := p.next
		p.mu.Unlock()
		waitFor(t, 60*time.Second, "the consumer reads rows written "+why, func() (bool, error) {
			k.mu.Lock()
			defer k.mu.Unlock()
			for id := range k.seen {
				if id > from+20 {
					return true, nil
				}
			}
			return false, nil
		})
	}
	// A replica restarts to load its copy, and in that time is no
	// synchronous standby: only once one is recorded again can the
	// primary's loss be survived.
	syncRecorded := func(why string) {
		t.Helper()
		waitFor(t, 60*time.Second, "a synchronous standby recorded "+why, func() (bool, error) {
			st, err := c.state()
			return err == nil && len(st.Sync.Standbys) > 0 && st.Sync.Primary == st.Leader.Holder, err
		})
	}
	everyReplicaHasTheSlot("before the failover")
	c.waitStreaming(primary)
	syncRecorded("before the failover")
	delivering("before the failover")

	killedAt := time.Now()
	primary.Kill9()
	next := c.waitNewPrimaryWriting(primary, "SELECT 1")
	t.Logf("failover: kill -9 of %s to %s writable in %s", primary.Name, next.Name, time.Since(killedAt).Round(time.Millisecond))
	delivering("after the failover")

	// The former primary comes back; its rewind leaves its own copy of the
	// slot at the position its consumer had reached there, which the new
	// primary may not have: it must be copied anew before it counts.
	primary.Start()
	c.waitStreaming(next)
	everyReplicaHasTheSlot("after the former primary's return")
	c.waitStreaming(next)
	syncRecorded("before the switchover")
	// In synchronous mode a switchover goes to the synchronous standby.
	st, err := c.state()
	if err != nil {
		t.Fatal(err)
	}
	target := c.byName(st.Sync.Standbys[0])
	c.apply(switchoverTo(next.Name, target.Name))
	waitFor(t, 60*time.Second, target.Name+" primary after the switchover", func() (bool, error) {
		st, err := c.state()
		return err == nil && st.Leader.Holder == target.Name && st.Failover == nil, err
	})
	delivering("after the switchover")
	p.stop()

	p.mu.Lock()
	acked := slices.Clone(p.acked)
	p.mu.Unlock()
	if m, err := p.missing(target); err != nil || len(m) > 0 {
		t.Fatalf("%d acknowledged writes lost (%v): %v", len(m), err, m)
	}
	var missing []int
	var dups int
	waitFor(t, 60*time.Second, "every acknowledged row delivered to the consumer", func() (bool, error) {
		missing, dups = k.missing(acked)
		return len(missing) == 0, nil
	})
	k.stop()
	k.mu.Lock()
	runs := slices.Clone(k.runs)
	k.mu.Unlock()
	t.Logf("logical slot: %d acknowledged rows, every one delivered, %d delivered twice or more; consumer runs on %v; longest write gap %s",
		len(acked), dups, runs, p.maxGap().Round(time.Millisecond))
	if !slices.Contains(runs, next.Name) || runs[len(runs)-1] != target.Name {
		t.Fatalf("the consumer read on %v: it never read on the failover's primary %s, or last not on %s", runs, next.Name, target.Name)
	}
	_ = os.WriteFile(filepath.Join(k.dir, "summary"), []byte(fmt.Sprint(len(acked), dups)), 0o600)
}
