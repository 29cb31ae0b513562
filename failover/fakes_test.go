package failover

// Fakes for unit tests of the Supervisor and the Coordinator:
// a fake Clock, a fake Store whose State is built by applying the same
// commands the real FSM applies (a small hand-written applier: the
// raftstore FSM is unexported), a Proposer that can fail, delay (by
// advancing the fake clock) or commit and lose its reply, and a scripted
// PostgreSQL that records every call. Nothing sleeps and nothing runs a
// process.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"raftgres/internal/testutil"
	"raftgres/pgmanager"
	"raftgres/raftstore"
)

// ---------------------------------------------------------------- clock

// fakeClock is a Clock that moves only when the test advances it.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After waits on real time: unit tests move the clock themselves.
func (c *fakeClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// ---------------------------------------------------------------- watchdog

// fakeWatchdog is a Watchdog that counts keepalives; unusable makes
// Usable and Arm fail.
type fakeWatchdog struct {
	mu         sync.Mutex
	unusable   error
	armed      bool
	keepalives int
}

func (w *fakeWatchdog) Usable() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.unusable
}

func (w *fakeWatchdog) Arm(time.Duration) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.unusable != nil {
		return w.unusable
	}
	w.armed = true
	return nil
}

func (w *fakeWatchdog) Keepalive() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.armed {
		return ErrWatchdog
	}
	w.keepalives++
	return nil
}

func (w *fakeWatchdog) Disarm() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.armed = false
}

func (w *fakeWatchdog) Armed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.armed
}

func (w *fakeWatchdog) String() string { return "fake" }

func (w *fakeWatchdog) fed() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.keepalives
}

// ---------------------------------------------------------------- event log

// events is one ordered log shared by the fakes, so a test can check the
// order of PostgreSQL calls and committed commands.
type events struct {
	mu  sync.Mutex
	log []string
}

func (e *events) add(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log = append(e.log, fmt.Sprintf(format, args...))
}

func (e *events) all() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.log)
}

// index returns the position of the first event starting with prefix, or -1.
func (e *events) index(prefix string) int {
	for i, s := range e.all() {
		if strings.HasPrefix(s, prefix) {
			return i
		}
	}
	return -1
}

func (e *events) count(prefix string) int {
	n := 0
	for _, s := range e.all() {
		if strings.HasPrefix(s, prefix) {
			n++
		}
	}
	return n
}

// ---------------------------------------------------------------- store

// fakeStore holds the cluster's committed State. It applies commands with
// the raftstore FSM's own rules (raftstore.Apply). A frozen view
// makes State return what the local FSM had when frozen (a member cut off
// from the Raft leader), while commits still reach the cluster's state.
type fakeStore struct {
	mu      sync.Mutex
	st      raftstore.State
	index   uint64
	frozen  *raftstore.State
	changes chan struct{}
	ev      *events

	// Coordinator side.
	leader    bool
	leaderCh  chan struct{}
	transfers int
	// unreachable maps a peer whose heartbeats fail to Raft's last
	// contact with it.
	unreachable map[string]time.Time
	// iterate, when set, makes Changes a barrier for the coordinator's loop:
	// each call signals at and waits for a step from the test (see
	// coordStepper).
	iterate chan chan struct{}
}

func newFakeStore(st raftstore.State, ev *events) *fakeStore {
	idx := max(st.Index, st.Leader.Rev, 100)
	return &fakeStore{st: st, index: idx, changes: make(chan struct{}), leaderCh: make(chan struct{}), ev: ev, leader: true}
}

func (f *fakeStore) State() raftstore.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.frozen != nil {
		return f.frozen.Clone()
	}
	return f.st.Clone()
}

// cluster is the committed state, whatever the local view shows.
func (f *fakeStore) cluster() raftstore.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st.Clone()
}

func (f *fakeStore) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.st.Clone()
	f.frozen = &c
}

func (f *fakeStore) Changes() <-chan struct{} {
	f.mu.Lock()
	it := f.iterate
	ch := f.changes
	f.mu.Unlock()
	if it != nil {
		step := make(chan struct{})
		it <- step
		<-step
		closed := make(chan struct{})
		close(closed)
		return closed
	}
	return ch
}

// edit changes the committed state directly (what other members'
// commands did), as one applied entry.
func (f *fakeStore) edit(fn func(st *raftstore.State)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index++
	fn(&f.st)
	f.st.Index = f.index
	close(f.changes)
	f.changes = make(chan struct{})
}

func (f *fakeStore) commit(cmd raftstore.Command) raftstore.ApplyResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index++
	err := raftstore.Apply(&f.st, f.index, cmd) // the FSM's own rules
	if err == nil {
		f.st.Index = f.index
		close(f.changes)
		f.changes = make(chan struct{})
		if f.ev != nil {
			f.ev.add("commit %s", describe(cmd))
		}
	}
	return raftstore.ApplyResult{Index: f.index, Err: err}
}

func (f *fakeStore) IsLeader() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leader
}

func (f *fakeStore) LeaderChanges() <-chan struct{} { return f.leaderCh }

func (f *fakeStore) Barrier(context.Context) error { return nil }

func (f *fakeStore) Apply(_ context.Context, cmd raftstore.Command) (raftstore.ApplyResult, error) {
	return f.commit(cmd), nil
}

func (f *fakeStore) PeerUnreachable(member string) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.unreachable[member]
	return t, ok
}

// setUnreachable marks member's heartbeats failing since lastContact
// (zero time: reachable again).
func (f *fakeStore) setUnreachable(member string, lastContact time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.unreachable == nil {
		f.unreachable = map[string]time.Time{}
	}
	if lastContact.IsZero() {
		delete(f.unreachable, member)
		return
	}
	f.unreachable[member] = lastContact
}

func (f *fakeStore) PeerChanges() <-chan struct{} { return nil }

func (f *fakeStore) TransferLeadershipTo(context.Context, string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.transfers++
	return nil
}

// describe names a command for the event log.
func describe(cmd raftstore.Command) string {
	switch c := cmd.(type) {
	case raftstore.RenewLeader:
		return fmt.Sprintf("RenewLeader %s@%d", c.Holder, c.Epoch)
	case raftstore.SetLeader:
		return fmt.Sprintf("SetLeader %q prev=%d/%d cause=%s", c.Holder, c.PrevEpoch, c.PrevRev, c.Cause)
	case raftstore.SetSync:
		if c.Quorum > 0 {
			return fmt.Sprintf("SetSync %s %v q%d @%d", c.Primary, c.Standbys, c.Quorum, c.Epoch)
		}
		return fmt.Sprintf("SetSync %s %v @%d", c.Primary, c.Standbys, c.Epoch)
	case raftstore.ReportStatus:
		return fmt.Sprintf("ReportStatus %s %s %s", c.Name, c.Status.Role, c.Status.State)
	case raftstore.SetFailover:
		return fmt.Sprintf("SetFailover %v", c.Request != nil)
	}
	return fmt.Sprintf("%T", cmd)
}

// ---------------------------------------------------------------- proposer

// outcome is what the fake proposer does with one command.
type outcome struct {
	// err is returned; unless commit is set the command is not applied.
	err error
	// commit applies the command although err is returned: the entry was
	// committed but the reply was lost (a Raft leader change).
	commit bool
	// delay advances the fake clock before the reply (a slow commit).
	delay time.Duration
}

// fakeProposer commits into a fakeStore. script decides, per command, what
// happens (nil: commit and reply).
type fakeProposer struct {
	store *fakeStore
	clock *fakeClock

	mu     sync.Mutex
	script func(cmd raftstore.Command) outcome
	sent   []raftstore.Command
	// renewals receives a value after every acknowledged renewal.
	renewals chan struct{}
}

func newFakeProposer(store *fakeStore, clock *fakeClock) *fakeProposer {
	return &fakeProposer{store: store, clock: clock, renewals: make(chan struct{}, 1000)}
}

func (p *fakeProposer) setScript(fn func(cmd raftstore.Command) outcome) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.script = fn
}

func (p *fakeProposer) Apply(ctx context.Context, cmd raftstore.Command) (raftstore.ApplyResult, error) {
	p.mu.Lock()
	p.sent = append(p.sent, cmd)
	script := p.script
	p.mu.Unlock()
	var o outcome
	if script != nil {
		o = script(cmd)
	}
	if o.delay > 0 {
		p.clock.Advance(o.delay)
	}
	if o.err != nil && !o.commit {
		return raftstore.ApplyResult{}, o.err
	}
	res := p.store.commit(cmd)
	if o.err != nil {
		return raftstore.ApplyResult{}, o.err
	}
	if _, ok := cmd.(raftstore.RenewLeader); ok && res.Err == nil {
		p.renewals <- struct{}{}
	}
	return res, nil
}

// count returns how many commands of cmd's type were proposed.
func (p *fakeProposer) count(match func(raftstore.Command) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.sent {
		if match(c) {
			n++
		}
	}
	return n
}

func isSetLeader(c raftstore.Command) bool { _, ok := c.(raftstore.SetLeader); return ok }
func isRenew(c raftstore.Command) bool     { _, ok := c.(raftstore.RenewLeader); return ok }

// failRenewals makes every renewal fail as if the Raft leader were
// unreachable; other commands commit.
func failRenewals(cmd raftstore.Command) outcome {
	if _, ok := cmd.(raftstore.RenewLeader); ok {
		return outcome{err: errUnreachable}
	}
	return outcome{}
}

var errUnreachable = errors.New("dial tcp 10.0.0.1:8008: connect: no route to host")

// ---------------------------------------------------------------- postgres

// fakePostgres is a scripted PostgreSQL. status is what Status returns
// while running; Start, Stop, Promote, Reload, Fence… change it the way a
// real server would. dropSSN makes Reload, Start and Restart lose
// synchronous_standby_names (what pgmanager did before #1).
type fakePostgres struct {
	slots        []string // the last EnsureSlots' want
	slotLSN      uint64   // the position EnsureSlots reports for every slot
	standbySlots []string // the slots SyncStandbySlots has copied
	mu           sync.Mutex
	ev           *events

	status    pgmanager.Status
	statusErr error
	running   bool
	fenceAt   time.Time // the last deadline handed to the fence keeper
	gateDown  bool      // GateConnected reports false
	hasData   bool
	standby   bool
	sysid     string
	exited    chan struct{}
	dropSSN   bool
	ctrlCheck string // "Latest checkpoint location"
	ctrlState string // "Database cluster state", as PostgreSQL sets it
	// uncleanStop makes a fast stop end as an immediate one (pgmanager
	// escalates after its step timeout): no shutdown checkpoint.
	uncleanStop bool

	startErr, stopErr, promoteErr, rewindErr, followErr error
	// sourceID and sourceErr are what UpstreamSystemID answers.
	sourceID    string
	sourceErr   error
	statusCalls int
	// hookErr is what Hook returns per hook; hookWait makes a hook wait
	// for its ctx to end (a hook that hangs until its timeout).
	hookErr  map[string]error
	hookWait map[string]bool
	// hookBudget is the time the last hook was given (its ctx deadline
	// from when it was called; 0 without one).
	hookBudget time.Duration

	// Hooks run (without the lock) inside the call, before its effect.
	onPromote func()
	onRestart func()

	desired map[string][]pgmanager.Desired // per method
	// fenceSig receives a value at every Fence call.
	fenceSig chan struct{}
	// gateQ and gateNames are the commit gate's last quorum rule.
	gateQ     int
	gateNames []string
}

// gateRule is the gate's last rule.
func (p *fakePostgres) gateRule() (int, []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gateQ, slices.Clone(p.gateNames)
}

// SetGateQuorum records the gate's rule.
func (p *fakePostgres) SetGateQuorum(q int, names []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gateQ, p.gateNames = q, slices.Clone(names)
	p.ev.add("gate quorum %d of %v", q, names)
}

func newFakePostgres(ev *events, st pgmanager.Status) *fakePostgres {
	return &fakePostgres{ev: ev, status: st, running: st.Running, hasData: true, standby: st.InRecovery,
		sysid: testSysID, exited: make(chan struct{}), ctrlCheck: "0/3000028",
		ctrlState: controlState(!st.Running, st.InRecovery), desired: map[string][]pgmanager.Desired{},
		fenceSig: make(chan struct{}, 100)}
}

const testSysID = "7000000000000000042"

func (p *fakePostgres) record(method string, d *pgmanager.Desired, detail string) {
	if d != nil {
		p.desired[method] = append(p.desired[method], *d)
	}
	if detail != "" {
		p.ev.add("pg %s %s", method, detail)
	} else {
		p.ev.add("pg %s", method)
	}
}

func (p *fakePostgres) desiredOf(method string) []pgmanager.Desired {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.desired[method])
}

func (p *fakePostgres) set(fn func(p *fakePostgres)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fn(p)
}

func (p *fakePostgres) Status(context.Context) (pgmanager.Status, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.statusCalls++
	if !p.running {
		return pgmanager.Status{}, nil
	}
	st := p.status
	st.Replicas = slices.Clone(p.status.Replicas)
	st.Running = true
	if p.statusErr != nil {
		st.Error = p.statusErr.Error()
		return st, p.statusErr
	}
	return st, nil
}

func (p *fakePostgres) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.running
}

func (p *fakePostgres) Exited() <-chan struct{} { return p.exited }

func (p *fakePostgres) HasDataDir() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hasData
}

func (p *fakePostgres) IsStandbyConfigured() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.standby
}

func (p *fakePostgres) SystemID(context.Context) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sysid, nil
}

func (p *fakePostgres) Init(_ context.Context, d pgmanager.Desired) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.record("Init", &d, "")
	p.hasData = true
	return p.sysid, nil
}

// configure applies d's synchronous_standby_names the way the server would
// see it after a reload or start.
func (p *fakePostgres) configure(d pgmanager.Desired) {
	p.standby = d.IsStandby()
	if p.dropSSN {
		p.status.SyncStandbyNames = ""
	} else {
		p.status.SyncStandbyNames = d.SyncStandbyNames
	}
	p.status.UpstreamAddr = ""
	if d.Standby != nil {
		p.status.UpstreamAddr = fmt.Sprintf("%s:%d", d.Standby.Host, d.Standby.Port)
	}
}

func (p *fakePostgres) Start(_ context.Context, d pgmanager.Desired) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.record("Start", &d, fmt.Sprintf("standby=%v", d.IsStandby()))
	if p.startErr != nil {
		return p.startErr
	}
	p.configure(d)
	p.running = true
	p.status.InRecovery = d.IsStandby()
	p.status.SystemID = p.sysid
	p.ctrlState = controlState(false, p.status.InRecovery)
	return nil
}

func (p *fakePostgres) Hook(ctx context.Context, hook string) error {
	p.mu.Lock()
	p.record("Hook", nil, hook)
	err, wait := p.hookErr[hook], p.hookWait[hook]
	p.hookBudget = 0
	if d, ok := ctx.Deadline(); ok {
		p.hookBudget = time.Until(d)
	}
	p.mu.Unlock()
	if wait {
		<-ctx.Done()
		return fmt.Errorf("run %s: %w", hook, ctx.Err())
	}
	return err
}

func (p *fakePostgres) Stop(_ context.Context, mode pgmanager.StopMode) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.record("Stop", nil, fmt.Sprint(mode))
	if p.stopErr != nil {
		return p.stopErr
	}
	if p.running {
		p.ctrlState = controlState(mode == pgmanager.StopFast && !p.uncleanStop, p.status.InRecovery)
	}
	p.running = false
	return nil
}

// controlState is pg_controldata's "Database cluster state" after a stop:
// a clean (fast or smart) one writes a shutdown checkpoint, an immediate
// one or a crash leaves the state the server ran in.
func controlState(clean, standby bool) string {
	switch {
	case clean && standby:
		return "shut down in recovery"
	case clean:
		return "shut down"
	case standby:
		return "in archive recovery"
	}
	return "in production"
}

func (p *fakePostgres) Restart(_ context.Context, d pgmanager.Desired) error {
	p.mu.Lock()
	hook := p.onRestart
	p.record("Restart", &d, "")
	p.mu.Unlock()
	if hook != nil {
		hook()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.configure(d)
	p.running = true
	return nil
}

func (p *fakePostgres) Reload(_ context.Context, d pgmanager.Desired) (pgmanager.ConfigChange, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.record("Reload", &d, fmt.Sprintf("standby=%v", d.IsStandby()))
	p.configure(d)
	return pgmanager.ConfigChange{Files: []string{"postgresql.conf"}}, nil
}

func (p *fakePostgres) Promote(context.Context) error {
	p.mu.Lock()
	hook := p.onPromote
	p.record("Promote", nil, "")
	p.mu.Unlock()
	if hook != nil {
		hook()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.promoteErr != nil {
		return p.promoteErr
	}
	if !p.running {
		return errors.New("promote: server closed the connection unexpectedly")
	}
	p.status.InRecovery, p.standby = false, false
	return nil
}

func (p *fakePostgres) Follow(_ context.Context, d pgmanager.Desired) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.record("Follow", &d, "")
	if p.followErr != nil {
		return p.followErr
	}
	p.configure(d)
	return nil
}

func (p *fakePostgres) Rewind(_ context.Context, d pgmanager.Desired) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.record("Rewind", &d, "")
	if p.rewindErr != nil {
		return p.rewindErr
	}
	p.standby = true // pg_rewind's config write recreates standby.signal
	return nil
}

func (p *fakePostgres) Clone(_ context.Context, d pgmanager.Desired) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.record("Clone", &d, "")
	p.hasData, p.standby = true, true
	return nil
}

func (p *fakePostgres) Reclone(_ context.Context, d pgmanager.Desired) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.record("Reclone", &d, "")
	p.hasData, p.standby, p.running = true, true, false
	return nil
}

func (p *fakePostgres) EnsureSlots(_ context.Context, want []pgmanager.Slot, _ func(pgmanager.SlotState) bool) ([]pgmanager.SlotState, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.slots = nil
	var have []pgmanager.SlotState
	for _, s := range want {
		p.slots = append(p.slots, s.Name)
		have = append(have, pgmanager.SlotState{Slot: s, LSN: p.slotLSN})
	}
	return have, nil
}

func (p *fakePostgres) SyncStandbySlots(_ context.Context, want []pgmanager.Slot, primaryLSN map[string]uint64, _ pgmanager.Upstream, replayed uint64) (pgmanager.StandbySlots, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.record("SyncStandbySlots", nil, "")
	var res pgmanager.StandbySlots
	for _, s := range want {
		if !slices.Contains(p.standbySlots, s.Name) {
			p.standbySlots = append(p.standbySlots, s.Name)
			res.Copied = append(res.Copied, s.Name)
			continue
		}
		res.Slots = append(res.Slots, pgmanager.SlotState{Slot: s, LSN: min(primaryLSN[s.Name], replayed)})
	}
	return res, nil
}

// UpstreamSystemID answers sourceID (testSysID when unset) or sourceErr.
func (p *fakePostgres) UpstreamSystemID(_ context.Context, d pgmanager.Desired) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.record("UpstreamSystemID", &d, "")
	if p.sourceErr != nil {
		return "", p.sourceErr
	}
	return cmp.Or(p.sourceID, testSysID), nil
}

func (p *fakePostgres) Checkpoint(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.record("Checkpoint", nil, "")
	return nil
}

func (p *fakePostgres) ControlData(context.Context) (map[string]string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return map[string]string{"Latest checkpoint location": p.ctrlCheck, "Database cluster state": p.ctrlState}, nil
}

func (p *fakePostgres) SetSynchronousStandbyNames(_ context.Context, d pgmanager.Desired) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.record("SetSynchronousStandbyNames", &d, d.SyncStandbyNames)
	p.status.SyncStandbyNames = d.SyncStandbyNames
	return nil
}

func (p *fakePostgres) RunGate(ctx context.Context, _ func() time.Time, _ func() <-chan struct{}) error {
	<-ctx.Done()
	return nil
}

func (p *fakePostgres) Fence() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.record("Fence", nil, "")
	was := p.running
	if was {
		p.ctrlState = controlState(false, p.status.InRecovery)
	}
	p.running = false
	p.fenceSig <- struct{}{}
	return was
}

// GateConnected is true unless a test set gateDown.
func (p *fakePostgres) GateConnected() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.gateDown
}

// FenceAt records the deadline handed to the fence keeper.
func (p *fakePostgres) FenceAt(until time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fenceAt = until
}

func (p *fakePostgres) Callback(event, role string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.record("Callback", nil, event+" "+role)
}

// ---------------------------------------------------------------- harness

// syncBuffer collects log output from several goroutines.
type syncBuffer = testutil.SyncBuffer

// rig is one supervisor wired to fakes.
type rig struct {
	t     *testing.T
	ev    *events
	clock *fakeClock
	store *fakeStore
	prop  *fakeProposer
	pg    *fakePostgres
	sup   *Supervisor
	logs  *syncBuffer
}

// Cluster timings of the tests: ttl 3s → lease 2s after the send time,
// margin 1s. loop_wait is short because renewWhile paces its renewals
// with a real timer of min(loop_wait, margin/2).
func testConfig() raftstore.ClusterConfig {
	c := raftstore.DefaultClusterConfig()
	c.LoopWait = 10 * time.Millisecond
	c.PostgreSQL.UseSlots = false
	c.Version = 1
	return c
}

// testState is a cluster of members with holder at epoch 5, every member
// registered with a PostgreSQL address and reporting "running"; the holder
// reports primary.
func testState(holder string, members ...string) raftstore.State {
	st := raftstore.NewState()
	st.Bootstrap = true
	st.Initialize = testSysID
	st.Config = testConfig()
	st.Leader = raftstore.LeaderKey{Holder: holder, Epoch: 5, Rev: 50}
	st.Index = 50
	for i, m := range members {
		role := raftstore.RoleReplica
		if m == holder {
			role = raftstore.RolePrimary
		}
		st.Members[m] = &raftstore.Member{Name: m, PGAddr: fmt.Sprintf("10.0.0.%d:5432", i+1), Tags: raftstore.DefaultTags(),
			Status: raftstore.MemberStatus{Role: role, State: "running", SystemID: testSysID,
				ReportedAt: time.Date(2026, 1, 1, 11, 59, 59, 0, time.UTC)}}
	}
	return st
}

var (
	runningPrimary = pgmanager.Status{Running: true, SystemID: testSysID, Timeline: 2, CurrentLSN: 0x3000000}
	runningReplica = pgmanager.Status{Running: true, InRecovery: true, SystemID: testSysID, Timeline: 2,
		WalReceiver: "streaming", ReceivedLSN: 0x3000000, ReplayedLSN: 0x3000000}
	stopped = pgmanager.Status{}
)

func newRig(t *testing.T, me string, st raftstore.State, pgst pgmanager.Status) *rig {
	t.Helper()
	r := &rig{t: t, ev: &events{}, clock: newFakeClock(), logs: &syncBuffer{}}
	r.store = newFakeStore(st, r.ev)
	r.prop = newFakeProposer(r.store, r.clock)
	r.pg = newFakePostgres(r.ev, pgst)
	logger := hclog.New(&hclog.LoggerOptions{Output: r.logs, Level: hclog.Debug})
	r.sup = NewSupervisor(Config{Member: me, Tags: raftstore.DefaultTags(), MaxCrashes: 3}, r.pg, r.store, r.prop, logger)
	r.sup.clock = r.clock
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("events:\n  %s", strings.Join(r.ev.all(), "\n  "))
			t.Logf("log:\n%s", r.logs.String())
		}
	})
	return r
}

// renew gives the supervisor an acknowledged renewal sent now.
func (r *rig) renew() {
	r.t.Helper()
	r.sup.renew(context.Background(), r.store.State())
	if r.sup.lease.End().IsZero() {
		r.t.Fatalf("renewal not acknowledged")
	}
}

// await waits for a value on ch and reports whether one came; the bound
// only keeps a broken test from hanging (nothing waits on it in a passing
// run). It never calls FailNow, so fake hooks (which run in the
// supervisor's goroutines) may use it: on false they return at once.
func await[T any](t *testing.T, ch <-chan T, what string) bool {
	t.Helper()
	select {
	case <-ch:
		return true
	case <-time.After(5 * time.Second):
		t.Errorf("timed out waiting for %s", what)
		return false
	}
}
