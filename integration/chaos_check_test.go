package integration

// The chaos test's checker: pure functions over the write history the
// workload recorded and the lease lines the agents logged. No processes
// here, so the rules are unit-tested with synthetic histories below.

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"raftgres/raftstore"
)

// writeOutcome is what a client learnt of one write.
type writeOutcome uint8

const (
	writeAcked         writeOutcome = iota + 1
	writeFailed                     // refused before anything was sent, or by a read-only server: not written
	writeIndeterminate              // error after sending: may or may not be committed
)

func (o writeOutcome) String() string {
	switch o {
	case writeAcked:
		return "acked"
	case writeFailed:
		return "failed"
	case writeIndeterminate:
		return "indeterminate"
	}
	return "?"
}

// chaosWrite is one attempted INSERT of the workload. Every attempt has
// its own id: a write is never retried under the same id.
type chaosWrite struct {
	Writer, Seq int
	ID          int64
	Sent        time.Time // just before the INSERT was sent (wall clock)
	Done        time.Time // when the answer (ack or error) arrived
	Outcome     writeOutcome
	Server      string // member that acknowledged it (from inet_server_addr)
	Err         string
	Notice      string // a NOTICE or WARNING that came with the answer
	// Deadline is when the client's timeout sends a cancel request (zero:
	// the writer never sends one). A cancelled commit wait is answered
	// only after that request arrived, so its ack is no earlier.
	Deadline time.Time
	// CancelledWait: the answer came with PostgreSQL's "canceling wait for
	// synchronous replication" WARNING. A commit acknowledged so is
	// committed locally only: the commit gate (and in synchronous mode the
	// standby) had not confirmed it.
	CancelledWait bool
}

// cancelledWaitWarning starts the WARNING PostgreSQL sends when a cancel
// request (or pg_cancel_backend) ends a commit's wait in
// SyncRepWaitForLSN; COMMIT then succeeds (lc_messages is C here).
const cancelledWaitWarning = "canceling wait for synchronous replication"

// isCancelledWaitNotice says whether a notice is that WARNING.
func isCancelledWaitNotice(severity, message string) bool {
	return severity == "WARNING" && strings.HasPrefix(message, cancelledWaitWarning)
}

// ackFloor is the earliest time the server can have acknowledged w: an
// ordinary commit's WAL is written after the INSERT was sent; a cancelled
// wait ends only when the cancel request arrives, which the client sends
// at its deadline. (The workload drops a connection after any write that
// reached its deadline, so no cancel request meant for an earlier write
// can end a later write's wait.)
func (w chaosWrite) ackFloor() time.Time {
	if w.CancelledWait && !w.Deadline.IsZero() && w.Deadline.After(w.Sent) {
		return w.Deadline
	}
	return w.Sent
}

func (w chaosWrite) String() string {
	s := fmt.Sprintf("write %d (writer %d seq %d) sent %s, %s %s", w.ID, w.Writer, w.Seq, clock(w.Sent), w.Outcome, clock(w.Done))
	if w.Server != "" {
		s += " by " + w.Server
	}
	if w.CancelledWait {
		s += fmt.Sprintf(" with the cancelled-wait WARNING (cancel sent %s)", clock(w.Deadline))
	}
	if w.Err != "" {
		s += ": " + w.Err
	}
	return s
}

func clock(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("15:04:05.000000")
}

// leaseLine is one lease record an agent logged: "lease renewed" (Debug, on
// every acknowledged renewal of the leader key) or "lease ended" (Warn,
// when its fencer fired), each with epoch= and lease_end=.
type leaseLine struct {
	Member string
	Logged time.Time // the log line's timestamp (millisecond precision)
	Ended  bool
	Epoch  uint64
	End    time.Time
	Text   string
}

// leaseLineRE matches a lease record of any agent logger (not, say, a
// PostgreSQL log line the agent relays that happens to say the same).
var leaseLineRE = regexp.MustCompile(`^\S+ \[[A-Z]+\]\s+[\w.-]+: lease (renewed|ended):`)

// agentLogTime is hclog's TimeFormat in cmd/raftgres/logging.go.
const agentLogTime = "2006-01-02T15:04:05.000Z07:00"

// parseLeaseLines extracts the lease records from an agent's text log (one
// hclog line per record: `TIME [LEVEL] logger: message: k=v k=v`). Lines
// that mention a lease but cannot be parsed are returned in bad.
func parseLeaseLines(member, log string) (lines []leaseLine, bad []string) {
	for _, text := range strings.Split(log, "\n") {
		m := leaseLineRE.FindStringSubmatch(text)
		if m == nil {
			continue
		}
		ended := m[1] == "ended"
		ts, _, _ := strings.Cut(text, " ")
		logged, err := time.Parse(agentLogTime, ts)
		if err != nil {
			bad = append(bad, text)
			continue
		}
		kv := logFields(text)
		epoch, err1 := strconv.ParseUint(kv["epoch"], 10, 64)
		end, err2 := parseLogTime(kv["lease_end"])
		if err1 != nil || err2 != nil {
			bad = append(bad, text)
			continue
		}
		lines = append(lines, leaseLine{Member: member, Logged: logged, Ended: ended, Epoch: epoch, End: end, Text: text})
	}
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].Logged.Before(lines[j].Logged) })
	return lines, bad
}

// logFields parses hclog's key=value pairs, values optionally quoted.
func logFields(line string) map[string]string {
	out := map[string]string{}
	for i := 0; i < len(line); {
		eq := strings.IndexByte(line[i:], '=')
		if eq < 0 {
			break
		}
		eq += i
		start := strings.LastIndexByte(line[:eq], ' ') + 1
		key := line[start:eq]
		j := eq + 1
		var val string
		if j < len(line) && line[j] == '"' {
			k := j + 1
			for k < len(line) && (line[k] != '"' || line[k-1] == '\\') {
				k++
			}
			if uq, err := strconv.Unquote(line[j:min(k+1, len(line))]); err == nil {
				val = uq
			} else {
				val = line[j+1 : min(k, len(line))]
			}
			j = k + 1
		} else {
			k := strings.IndexByte(line[j:], ' ')
			if k < 0 {
				k = len(line) - j
			}
			val = line[j : j+k]
			j += k
		}
		if key != "" {
			out[key] = val
		}
		i = j
	}
	return out
}

// parseLogTime accepts RFC 3339 (the contract) and Go's time.String form.
func parseLogTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	s, _, _ = strings.Cut(s, " m=") // monotonic clock reading
	return time.Parse("2006-01-02 15:04:05.999999999 -0700 MST", s)
}

// leaseBook answers, per member, which lease it held at a given time.
type leaseBook struct {
	renewals map[string][]leaseLine // "lease renewed" lines, by log time
	maxEnd   map[string][]time.Time // maxEnd[m][i]: latest lease_end among renewals[m][:i+1]
	ended    map[string][]leaseLine
}

func newLeaseBook(lines []leaseLine) *leaseBook {
	b := &leaseBook{renewals: map[string][]leaseLine{}, maxEnd: map[string][]time.Time{}, ended: map[string][]leaseLine{}}
	sorted := slices.Clone(lines)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Logged.Before(sorted[j].Logged) })
	for _, l := range sorted {
		if l.Ended {
			b.ended[l.Member] = append(b.ended[l.Member], l)
			continue
		}
		prev := time.Time{}
		if k := len(b.maxEnd[l.Member]); k > 0 {
			prev = b.maxEnd[l.Member][k-1]
		}
		b.renewals[l.Member] = append(b.renewals[l.Member], l)
		b.maxEnd[l.Member] = append(b.maxEnd[l.Member], later(prev, l.End))
	}
	return b
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// at returns the last renewal member logged at or before t and the latest
// lease_end it had logged by then. The log time has millisecond precision
// (truncated), so "at or before t" is lenient by under 1ms.
func (b *leaseBook) at(member string, t time.Time) (leaseLine, time.Time, bool) {
	rs := b.renewals[member]
	i := sort.Search(len(rs), func(i int) bool { return rs[i].Logged.After(t) }) - 1
	if i < 0 {
		return leaseLine{}, time.Time{}, false
	}
	return rs[i], b.maxEnd[member][i], true
}

// near returns member's lease lines logged within [from, to], and the
// renewals just before and after that window, for a violation report.
func (b *leaseBook) near(member string, from, to time.Time) []leaseLine {
	var out []leaseLine
	rs := b.renewals[member]
	lo := sort.Search(len(rs), func(i int) bool { return !rs[i].Logged.Before(from) })
	hi := sort.Search(len(rs), func(i int) bool { return rs[i].Logged.After(to) })
	if lo > 0 {
		out = append(out, rs[lo-1])
	}
	out = append(out, rs[lo:hi]...)
	if hi < len(rs) {
		out = append(out, rs[hi])
	}
	for _, e := range b.ended[member] {
		if !e.Logged.Before(from.Add(-5*time.Second)) && !e.Logged.After(to.Add(5*time.Second)) {
			out = append(out, e)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Logged.Before(out[j].Logged) })
	return out
}

// leaseViolation is an ack by a member that held no lease when the write
// was sent: its WAL was written after the lease end, which the commit gate
// must never acknowledge.
type leaseViolation struct {
	W        chaosWrite
	Renewal  leaseLine // the member's last renewal logged before the ack (zero if none)
	LeaseEnd time.Time // the latest lease_end logged before the ack
	Found    bool
	// LateBy > 0: a renewal logged LateBy after the ack would have covered
	// the write (a lease end after its send time). The contract says the
	// renewal is logged before the gate can use it; a small LateBy points
	// at the order of "lease renewed" and the gate's update, not at a
	// primary without a lease.
	LateBy time.Duration
}

// checkLeases applies rule (2): for a write acked by S (acked ta, not
// acknowledged by the server before tf = its ackFloor: the send time, or
// for a cancelled commit wait the cancel), S must have logged, before ta,
// a renewal whose lease_end is after tf. Else the server acknowledged it
// after its lease ended: the commit gate never replies then, and at the
// lease end PostgreSQL must be stopped, or a cancelled wait acknowledges
// without the gate.
func checkLeases(writes []chaosWrite, book *leaseBook) []leaseViolation {
	var out []leaseViolation
	for _, w := range writes {
		if w.Outcome != writeAcked {
			continue
		}
		floor := w.ackFloor()
		r, end, ok := book.at(w.Server, w.Done)
		if ok && end.After(floor) {
			continue
		}
		v := leaseViolation{W: w, Renewal: r, LeaseEnd: end, Found: ok}
		rs := book.renewals[w.Server]
		for i := sort.Search(len(rs), func(i int) bool { return rs[i].Logged.After(w.Done) }); i < len(rs); i++ {
			if rs[i].End.After(floor) {
				v.LateBy = rs[i].Logged.Sub(w.Done)
				break
			}
		}
		out = append(out, v)
	}
	return out
}

// epochOf maps an acked write to the epoch of its member's lease at the
// ack: that of the last renewal logged before it (0 when none).
func epochOf(w chaosWrite, book *leaseBook) uint64 {
	r, _, ok := book.at(w.Server, w.Done)
	if !ok {
		return 0
	}
	return r.Epoch
}

// epochViolation: Later was sent after Earlier was acked, yet acked under
// an older epoch; two members acknowledged writes in overlapping intervals.
type epochViolation struct {
	Earlier, Later chaosWrite
	E1, E2         uint64
}

// checkEpochOrder applies rule (3): if w2 was sent after w1 was acked then
// epoch(w2) ≥ epoch(w1). Writes with no known epoch are left to rule (2).
func checkEpochOrder(writes []chaosWrite, epoch func(chaosWrite) uint64) []epochViolation {
	type ew struct {
		w chaosWrite
		e uint64
	}
	var byAck []ew
	for _, w := range writes {
		if w.Outcome != writeAcked {
			continue
		}
		if e := epoch(w); e > 0 {
			byAck = append(byAck, ew{w, e})
		}
	}
	bySend := slices.Clone(byAck)
	sort.SliceStable(byAck, func(i, j int) bool { return byAck[i].w.Done.Before(byAck[j].w.Done) })
	sort.SliceStable(bySend, func(i, j int) bool { return bySend[i].w.Sent.Before(bySend[j].w.Sent) })
	var out []epochViolation
	var best ew // the highest-epoch write acked so far
	i := 0
	for _, cur := range bySend {
		for i < len(byAck) && byAck[i].w.Done.Before(cur.w.Sent) {
			if byAck[i].e > best.e {
				best = byAck[i]
			}
			i++
		}
		if cur.e < best.e {
			out = append(out, epochViolation{Earlier: best.w, Later: cur.w, E1: best.e, E2: cur.e})
		}
	}
	return out
}

// missingAcked returns acknowledged writes whose id is not in have.
func missingAcked(writes []chaosWrite, have map[int64]bool) []chaosWrite {
	var out []chaosWrite
	for _, w := range writes {
		if w.Outcome == writeAcked && !have[w.ID] {
			out = append(out, w)
		}
	}
	return out
}

// splitCancelled separates acknowledged writes that came with the
// cancelled-wait WARNING from ordinary ones.
func splitCancelled(ws []chaosWrite) (ordinary, cancelled []chaosWrite) {
	for _, w := range ws {
		if w.CancelledWait {
			cancelled = append(cancelled, w)
		} else {
			ordinary = append(ordinary, w)
		}
	}
	return ordinary, cancelled
}

// cancelledWaitFigures places the acks of cancelled commit waits against
// their member's lease. PostgreSQL turns a cancelled wait into a local
// commit, so such an ack may be lost, but only if it came before the
// member's lease end: after it, PostgreSQL must already be stopped.
type cancelledWaitFigures struct {
	Acks int // acknowledged with the WARNING
	Lost int // of them, missing at the end
	// After: acknowledged after the member's lease end (its cancel was
	// sent after the end, or the member had logged no renewal): rule (2)
	// violations, also counted by checkLeases.
	After int
	// Straddling: cancel sent before the lease end, answer received after
	// it. The server may have answered before the end (then the answer
	// only travelled late); allowed.
	Straddling int
	// LostAfter: lost and acknowledged after the lease end.
	LostAfter []chaosWrite
}

func cancelledWaits(writes []chaosWrite, have map[int64]bool, book *leaseBook) cancelledWaitFigures {
	var f cancelledWaitFigures
	for _, w := range writes {
		if w.Outcome != writeAcked || !w.CancelledWait {
			continue
		}
		f.Acks++
		lost := !have[w.ID]
		if lost {
			f.Lost++
		}
		_, end, ok := book.at(w.Server, w.Done)
		switch {
		case !ok || !end.After(w.ackFloor()):
			f.After++
			if lost {
				f.LostAfter = append(f.LostAfter, w)
			}
		case !end.After(w.Done):
			f.Straddling++
		}
	}
	return f
}

// unexplainedLoss returns lost acked writes that a failover does not
// explain (asynchronous mode): a write acked under epoch e may be lost only
// if the key then went to a new epoch for another reason than a switchover
// (a clean hand-over waits for the candidate to replay everything).
func unexplainedLoss(lost []chaosWrite, epoch func(chaosWrite) uint64, history []raftstore.Event) []chaosWrite {
	next := map[uint64]raftstore.Event{} // epoch → the leader event that made it
	for _, e := range history {
		if e.Kind == raftstore.EventLeader {
			next[e.Epoch] = e
		}
	}
	var out []chaosWrite
	for _, w := range lost {
		e := epoch(w)
		ev, ok := next[e+1]
		if e == 0 || !ok || strings.HasPrefix(ev.Reason, "switchover") {
			out = append(out, w)
		}
	}
	return out
}

// ackedOffKey returns acknowledged writes sent more than slack after the
// leader key had left their member, by the FSM's History (the event time
// is the proposer's, taken before the change committed). The key moves
// only after the holder's lease ended, or after it stopped (switchover,
// release), so with slack 0 any such write was sent after its member's
// lease end; only the synchronous fast failover of docs/design.md (promotion
// before the old lease ends) makes some expected. It needs no agent log:
// a figure beside rule (2).
func ackedOffKey(writes []chaosWrite, history []raftstore.Event, slack time.Duration) []chaosWrite {
	var evs []raftstore.Event
	for _, e := range history {
		if e.Kind == raftstore.EventLeader {
			evs = append(evs, e)
		}
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].At.Before(evs[j].At) })
	var out []chaosWrite
	for _, w := range writes {
		if w.Outcome != writeAcked {
			continue
		}
		i := sort.Search(len(evs), func(i int) bool { return evs[i].At.After(w.Sent) }) - 1
		if i < 0 {
			continue // before the bootstrap's key: not the workload's
		}
		if evs[i].Member != w.Server && w.Sent.Sub(evs[i].At) > slack {
			out = append(out, w)
		}
	}
	return out
}

// memberDigest is what a member holds at the end.
type memberDigest struct {
	Member   string
	Rows     int
	Checksum string
	Err      error
}

// checkConverged applies rule (4): every member answered with the same
// row count and checksum.
func checkConverged(ds []memberDigest) error {
	if len(ds) == 0 {
		return fmt.Errorf("no member answered")
	}
	var errs []string
	for _, d := range ds {
		if d.Err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", d.Member, d.Err))
		} else if d.Rows != ds[0].Rows || d.Checksum != ds[0].Checksum {
			errs = append(errs, fmt.Sprintf("%s has %d rows (md5 %s), %s has %d (md5 %s)",
				d.Member, d.Rows, d.Checksum, ds[0].Member, ds[0].Rows, ds[0].Checksum))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// maxAckGap is the longest time between two consecutive acks (by ack
// time), and when it began.
func maxAckGap(writes []chaosWrite) (time.Duration, time.Time) {
	var acks []time.Time
	for _, w := range writes {
		if w.Outcome == writeAcked {
			acks = append(acks, w.Done)
		}
	}
	slices.SortFunc(acks, func(a, b time.Time) int { return a.Compare(b) })
	var gap time.Duration
	var at time.Time
	for i := 1; i < len(acks); i++ {
		if d := acks[i].Sub(acks[i-1]); d > gap {
			gap, at = d, acks[i-1]
		}
	}
	return gap, at
}

// ackSeconds counts the whole seconds of [from, to) in which at least one
// write was acknowledged, and the seconds in all: the share of seconds the
// cluster took writes (the liveness target: 90 %).
func ackSeconds(writes []chaosWrite, from, to time.Time) (withAck, total int) {
	total = int(to.Sub(from) / time.Second)
	if total <= 0 {
		return 0, 0
	}
	seen := make([]bool, total)
	for _, w := range writes {
		if w.Outcome != writeAcked || w.Done.Before(from) {
			continue
		}
		if i := int(w.Done.Sub(from) / time.Second); i < total && !seen[i] {
			seen[i] = true
			withAck++
		}
	}
	return withAck, total
}

// leaseEpisode groups lease violations of one member that follow each
// other closely: one frozen or cut-off primary makes many.
type leaseEpisode struct {
	Member    string
	N         int
	First     leaseViolation
	LastAck   time.Time
	PastLease time.Duration // the latest ack after the lease end
}

func leaseEpisodes(vs []leaseViolation) []leaseEpisode {
	sorted := slices.Clone(vs)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].W.Done.Before(sorted[j].W.Done) })
	var out []leaseEpisode
	open := map[string]int{} // member → index in out
	for _, v := range sorted {
		k, ok := open[v.W.Server]
		if ok && v.W.Done.Sub(out[k].LastAck) > 2*time.Second {
			ok = false
		}
		if !ok {
			out = append(out, leaseEpisode{Member: v.W.Server, First: v})
			k = len(out) - 1
			open[v.W.Server] = k
		}
		e := &out[k]
		e.N++
		e.LastAck = v.W.Done
		if v.Found {
			e.PastLease = max(e.PastLease, v.W.Done.Sub(v.LeaseEnd))
		}
	}
	return out
}

// chaosCheck is one pass/fail line of the summary.
type chaosCheck struct {
	Name   string
	Failed bool
	Detail string
}

// --- unit tests of the checker ------------------------------------------

var chaosT0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

func msAt(ms int) time.Time { return chaosT0.Add(time.Duration(ms) * time.Millisecond) }

func ack(id int64, server string, sent, done int) chaosWrite {
	return chaosWrite{ID: id, Seq: int(id), Sent: msAt(sent), Done: msAt(done), Outcome: writeAcked, Server: server}
}

func renewal(member string, logged, end int, epoch uint64) leaseLine {
	return leaseLine{Member: member, Logged: msAt(logged), End: msAt(end), Epoch: epoch}
}

func TestChaosCheckParsesLeaseLines(t *testing.T) {
	log := strings.Join([]string{
		`2026-11-28T12:00:01.250Z [DEBUG] raftgres.failover.supervisor: lease renewed: node=pg1 epoch=7 lease_end=2026-11-28T12:00:03.2501234Z`,
		`2026-11-28T12:00:01.300Z [INFO]  raftgres.pgmanager.postgres: 2026-11-28 12:00:01.300 UTC [99] LOG:  lease renewed: epoch=1 lease_end=2026-11-28T12:00:03Z: node=pg1`,
		`2026-11-28T12:00:04.000Z [WARN]  raftgres.failover.supervisor: lease ended: node=pg1 epoch=7 lease_end="2026-11-28 12:00:03.9 +0000 UTC"`,
		`2026-11-28T12:00:05.000Z [DEBUG] raftgres.failover.supervisor: lease renewed: node=pg1 epoch=x lease_end=2026-11-28T12:00:03Z`,
		`garbage`,
	}, "\n")
	lines, bad := parseLeaseLines("pg1", log)
	if len(lines) != 2 || len(bad) != 1 {
		t.Fatalf("parsed %d lines (%v), %d bad (%q); want 2 and 1", len(lines), lines, len(bad), bad)
	}
	if l := lines[0]; l.Ended || l.Epoch != 7 || !l.Logged.Equal(msAt(1250)) || !l.End.Equal(msAt(3250).Add(123400)) {
		t.Fatalf("renewal parsed as %+v", l)
	}
	if l := lines[1]; !l.Ended || l.Epoch != 7 || !l.End.Equal(msAt(3900)) {
		t.Fatalf("lease end parsed as %+v", l)
	}
}

func TestChaosCheckLeases(t *testing.T) {
	book := newLeaseBook([]leaseLine{
		renewal("pg1", 1000, 3000, 5),
		renewal("pg1", 1300, 3300, 5),
		{Member: "pg1", Logged: msAt(3300), Ended: true, Epoch: 5, End: msAt(3300)},
		renewal("pg2", 6000, 8000, 6),
	})
	writes := []chaosWrite{
		ack(1, "pg1", 1100, 1200), // sent and acked within the lease of the first renewal
		ack(2, "pg1", 3200, 3400), // sent before the lease end, acked after it: allowed
		ack(3, "pg1", 3400, 3450), // sent after the lease end: violation
		ack(4, "pg2", 5900, 5990), // acked before pg2 logged any renewal: violation
		ack(5, "pg3", 6000, 6100), // a member that never held a lease: violation
		ack(6, "pg2", 6500, 6600), // fine
		{ID: 7, Sent: msAt(9000), Done: msAt(9100), Outcome: writeIndeterminate}, // not an ack
	}
	vs := checkLeases(writes, book)
	var ids []int64
	for _, v := range vs {
		ids = append(ids, v.W.ID)
	}
	if !slices.Equal(ids, []int64{3, 4, 5}) {
		t.Fatalf("lease violations %v, want [3 4 5]", ids)
	}
	if !vs[0].Found || !vs[0].LeaseEnd.Equal(msAt(3300)) || vs[1].Found || vs[0].LateBy != 0 || vs[1].LateBy != 10*time.Millisecond {
		t.Fatalf("violation details: %+v", vs)
	}
	eps := leaseEpisodes(vs)
	if len(eps) != 3 || eps[0].Member != "pg1" || eps[0].PastLease != 150*time.Millisecond {
		t.Fatalf("episodes %+v", eps)
	}
}

func TestChaosCheckEpochOrder(t *testing.T) {
	book := newLeaseBook([]leaseLine{
		renewal("pg1", 0, 2000, 5),
		renewal("pg2", 2500, 4500, 6),
	})
	ep := func(w chaosWrite) uint64 { return epochOf(w, book) }
	ok := []chaosWrite{
		ack(1, "pg1", 1000, 1100),
		ack(2, "pg2", 2600, 2700),
		ack(3, "pg1", 2650, 2800), // concurrent with write 2 (sent before it was acked): no order
	}
	if vs := checkEpochOrder(ok, ep); len(vs) != 0 {
		t.Fatalf("concurrent writes flagged: %+v", vs)
	}
	bad := append(ok, ack(4, "pg1", 2750, 2900)) // sent after write 2 was acked under epoch 6
	vs := checkEpochOrder(bad, ep)
	if len(vs) != 1 || vs[0].Later.ID != 4 || vs[0].Earlier.ID != 2 || vs[0].E1 != 6 || vs[0].E2 != 5 {
		t.Fatalf("epoch violations %+v, want write 4 (epoch 5) after write 2 (epoch 6)", vs)
	}
}

func TestChaosCheckLossAndConvergence(t *testing.T) {
	writes := []chaosWrite{ack(1, "pg1", 0, 10), ack(2, "pg1", 20, 30), {ID: 3, Outcome: writeIndeterminate}}
	lost := missingAcked(writes, map[int64]bool{1: true})
	if len(lost) != 1 || lost[0].ID != 2 {
		t.Fatalf("lost %v, want write 2", lost)
	}
	ep := func(chaosWrite) uint64 { return 5 }
	failover := []raftstore.Event{{Kind: raftstore.EventLeader, Epoch: 6, Reason: "leader key of pg1 expired"}}
	switchover := []raftstore.Event{{Kind: raftstore.EventLeader, Epoch: 6, Reason: "switchover from pg1"}}
	if u := unexplainedLoss(lost, ep, failover); len(u) != 0 {
		t.Fatalf("a loss to a failover reported as unexplained: %v", u)
	}
	if u := unexplainedLoss(lost, ep, switchover); len(u) != 1 {
		t.Fatal("a loss in a switchover not reported")
	}
	if u := unexplainedLoss(lost, ep, nil); len(u) != 1 {
		t.Fatal("a loss under the final epoch not reported")
	}
	if err := checkConverged([]memberDigest{{"pg1", 2, "a", nil}, {"pg2", 2, "a", nil}}); err != nil {
		t.Fatal(err)
	}
	if err := checkConverged([]memberDigest{{"pg1", 2, "a", nil}, {"pg2", 2, "b", nil}}); err == nil {
		t.Fatal("different checksums converged")
	}
	if err := checkConverged([]memberDigest{{"pg1", 2, "a", nil}, {"pg2", 0, "", fmt.Errorf("down")}}); err == nil {
		t.Fatal("a member that did not answer converged")
	}
	history := []raftstore.Event{
		{Kind: raftstore.EventLeader, Epoch: 1, Member: "pg1", At: msAt(0)},
		{Kind: raftstore.EventLeader, Epoch: 2, Member: "pg2", At: msAt(1000)},
	}
	off := ackedOffKey([]chaosWrite{ack(1, "pg1", 900, 1100), ack(2, "pg1", 1100, 1150), ack(3, "pg1", 1600, 1700), ack(4, "pg2", 1600, 1700)}, history, 500*time.Millisecond)
	if len(off) != 1 || off[0].ID != 3 {
		t.Fatalf("acked off the key: %v, want write 3", off)
	}
	if gap, from := maxAckGap([]chaosWrite{ack(1, "pg1", 0, 100), ack(2, "pg1", 0, 900), ack(3, "pg1", 0, 1000)}); gap != 800*time.Millisecond || !from.Equal(msAt(100)) {
		t.Fatalf("max gap %s from %s", gap, from)
	}
}

// A cancelled commit wait is acknowledged when the cancel arrives: an ack
// whose cancel was sent after the lease end is a violation even when the
// INSERT was sent well before it; one acknowledged before may be lost.
func TestChaosCheckCancelledWaits(t *testing.T) {
	book := newLeaseBook([]leaseLine{renewal("pg1", 1000, 3000, 5)})
	cw := func(id int64, sent, deadline, done int) chaosWrite {
		w := ack(id, "pg1", sent, done)
		w.Deadline, w.CancelledWait = msAt(deadline), true
		return w
	}
	plainWarned := ack(5, "pg1", 2900, 3200) // the WARNING without a deadline of ours (pg_cancel_backend): straddling
	plainWarned.CancelledWait = true
	beatDeadline := ack(6, "pg1", 2950, 2990) // a cancelling writer's ordinary ack
	beatDeadline.Deadline = msAt(3450)
	writes := []chaosWrite{
		ack(1, "pg1", 2900, 3100), // ordinary, sent before the end: fine
		cw(2, 2000, 2500, 2600),   // cancelled before the end: may be lost
		cw(3, 2800, 3300, 3400),   // sent before the end, cancelled after it: violation
		cw(4, 2450, 2950, 3050),   // cancel before the end, answer after it: straddling, allowed
		plainWarned,
		beatDeadline,
		cw(7, 3500, 4000, 4100), // sent after the end: violation
	}
	vs := checkLeases(writes, book)
	var ids []int64
	for _, v := range vs {
		ids = append(ids, v.W.ID)
	}
	if !slices.Equal(ids, []int64{3, 7}) {
		t.Fatalf("lease violations %v, want [3 7]", ids)
	}
	have := map[int64]bool{1: true, 4: true, 5: true, 6: true, 7: true} // 2 and 3 lost
	f := cancelledWaits(writes, have, book)
	if f.Acks != 5 || f.Lost != 2 || f.After != 2 || f.Straddling != 2 || len(f.LostAfter) != 1 || f.LostAfter[0].ID != 3 {
		t.Fatalf("cancelled-wait figures %+v", f)
	}
	lost := missingAcked(writes, have)
	ord, canc := splitCancelled(lost)
	if len(ord) != 0 || len(canc) != 2 {
		t.Fatalf("lost split into %v and %v", ord, canc)
	}
	if !strings.Contains(cw(3, 2800, 3300, 3400).String(), "cancelled-wait WARNING") {
		t.Fatal("a cancelled-wait ack does not say so")
	}
}

func TestChaosCheckAckSeconds(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) chaosWrite { return chaosWrite{Outcome: writeAcked, Done: t0.Add(d)} }
	writes := []chaosWrite{at(100 * time.Millisecond), at(900 * time.Millisecond), at(2500 * time.Millisecond),
		at(-time.Second), at(10 * time.Second), {Outcome: writeFailed, Done: t0.Add(3500 * time.Millisecond)}}
	if got, total := ackSeconds(writes, t0, t0.Add(4*time.Second)); got != 2 || total != 4 {
		t.Fatalf("ackSeconds = %d of %d, want 2 of 4", got, total)
	}
}
