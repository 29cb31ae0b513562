package ops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"raftgres/api"
)

// drillStepTimeout bounds one step of a drill: the request, then the wait
// until every member streams from the new primary and the probe writes on
// it.
const drillStepTimeout = 5 * time.Minute

// drillWarmUp is how many acknowledged writes the probe makes on the
// primary before the first step.
const drillWarmUp = 20

// The steps of a drill.
const (
	StepSwitchover = "switchover"
	StepFailover   = "failover"
)

// DrillPlan is what a drill will do: switch over from Primary to SwitchTo,
// then (with --failover) stop HardStop's PostgreSQL immediate and let the
// election pick among the others.
type DrillPlan struct {
	Primary  string   `json:"primary"`
	SwitchTo string   `json:"switch_to"`
	HardStop string   `json:"hard_stop,omitempty"`
	Steps    []string `json:"steps"`
}

// PlanDrill is the drill's plan on a healthy cluster (h without
// blockers): the switchover goes to the streaming replica closest to the
// primary, and the hard failover stops that member once it is primary.
func PlanDrill(view api.ClusterView, h ClusterHealth, failover bool) (DrillPlan, error) {
	cand := SwitchoverCandidate(view, h.Replicas)
	switch {
	case cand == "" && view.SynchronousMode:
		return DrillPlan{}, fmt.Errorf("%w: no streaming synchronous standby to switch over to", ErrUnhealthy)
	case cand == "":
		return DrillPlan{}, fmt.Errorf("%w: no streaming replica to switch over to", ErrUnhealthy)
	}
	p := DrillPlan{Primary: h.Primary, SwitchTo: cand,
		Steps: []string{fmt.Sprintf("switchover from %s to %s (clean: shutdown checkpoint, hand-over)", h.Primary, cand)}}
	if failover {
		var others []string
		for _, m := range view.Members {
			if m.Name != cand {
				others = append(others, m.Name)
			}
		}
		p.HardStop = cand
		p.Steps = append(p.Steps, fmt.Sprintf("hard failover: stop %s's PostgreSQL immediate (as a crash); the election picks among %s",
			cand, strings.Join(others, ", ")))
	}
	return p, nil
}

// SyncStandbys is the view's synchronous standbys.
func SyncStandbys(view api.ClusterView) []string {
	var out []string
	for _, m := range view.Members {
		if api.Synchronous(m.Role) {
			out = append(out, m.Name)
		}
	}
	return out
}

// DrillStep is one step's figures. RTO is the longest time between two
// acknowledged probe writes during the step; StreamingAfter is from the
// request until a new primary ran with every other member streaming from
// it.
type DrillStep struct {
	Name                  string    `json:"name"`
	From                  string    `json:"from"`
	To                    string    `json:"to,omitempty"`
	Started               time.Time `json:"started"`
	Ended                 time.Time `json:"ended"`
	RTOSeconds            float64   `json:"rto_seconds"`
	StreamingAfterSeconds float64   `json:"streaming_after_seconds"`
	Error                 string    `json:"error,omitempty"`
}

// DrillReport is a drill's audit record: what ran, the figures and the
// verdict.
type DrillReport struct {
	Cluster string      `json:"cluster"`
	Members []string    `json:"members"`
	Mode    string      `json:"mode"` // synchronous or asynchronous
	DryRun  bool        `json:"dry_run,omitempty"`
	Plan    DrillPlan   `json:"plan"`
	Started time.Time   `json:"started"`
	Ended   time.Time   `json:"ended,omitzero"`
	Steps   []DrillStep `json:"steps"`
	// Writes counts the probe's acknowledged writes; RPO those of them
	// missing on FinalPrimary after the drill (Missing lists their ids).
	Writes       int      `json:"writes"`
	RPO          int      `json:"rpo"`
	Missing      []int64  `json:"missing,omitempty"`
	FinalPrimary string   `json:"final_primary,omitempty"`
	Pass         bool     `json:"pass"`
	Failures     []string `json:"failures,omitempty"`
}

// LongestGap is the longest time without an acknowledged write over
// [from, to]: between consecutive acknowledgements, from the last one
// before from (or from itself) to the first after it, and from the last
// one to to when the writes had not resumed by then.
func LongestGap(acks []ProbeAck, from, to time.Time) time.Duration {
	prev := from
	for _, a := range acks {
		if !a.At.After(from) {
			prev = a.At
		}
	}
	var gap time.Duration
	for _, a := range acks {
		if !a.At.After(from) {
			continue
		}
		if a.At.After(to) {
			break
		}
		gap = max(gap, a.At.Sub(prev))
		prev = a.At
	}
	return max(gap, to.Sub(prev))
}

// MissingWrites is the acknowledged ids that have is missing, in order.
func MissingWrites(acks []ProbeAck, have map[int64]bool) []int64 {
	var out []int64
	for _, a := range acks {
		if !have[a.ID] {
			out = append(out, a.ID)
		}
	}
	return out
}

// Judge sets Pass and Failures: every step completed and moved the
// primary, the probe's rows were read back, and in synchronous mode no
// acknowledged write is missing.
func (r *DrillReport) Judge() {
	r.Failures = nil
	for _, s := range r.Steps {
		switch {
		case s.Error != "":
			r.Failures = append(r.Failures, fmt.Sprintf("%s: %s", s.Name, s.Error))
		case s.To == "" || s.To == s.From:
			r.Failures = append(r.Failures, fmt.Sprintf("%s: the primary did not change (still %s)", s.Name, s.From))
		}
	}
	if want := 1 + btoi(r.Plan.HardStop != ""); len(r.Steps) != want {
		r.Failures = append(r.Failures, fmt.Sprintf("%d of %d steps ran", len(r.Steps), want))
	}
	if r.FinalPrimary == "" {
		r.Failures = append(r.Failures, "the probe's writes could not be read back")
	}
	if r.Mode == modeSync && r.RPO > 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("RPO %d in synchronous mode: acknowledged writes lost", r.RPO))
	}
	r.Pass = len(r.Failures) == 0
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

const (
	modeSync  = "synchronous"
	modeAsync = "asynchronous"
)

// Summary is the report in lines for a terminal, ending with PASS or FAIL.
func (r DrillReport) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "drill of cluster %q (%s mode), members %s\n", r.Cluster, r.Mode, strings.Join(r.Members, ", "))
	if r.DryRun {
		b.WriteString("dry run: nothing done; the drill would\n")
		for i, s := range r.Plan.Steps {
			fmt.Fprintf(&b, "  %d. %s\n", i+1, s)
		}
		fmt.Fprintf(&b, "  with a probe writing to table %s throughout (created, then dropped)\n", DrillTable)
		return b.String()
	}
	for _, s := range r.Steps {
		fmt.Fprintf(&b, "%s %s -> %s: RTO %s (longest write gap), every member streaming after %s",
			s.Name, s.From, valueOr(s.To, "?"), seconds(s.RTOSeconds), seconds(s.StreamingAfterSeconds))
		if s.Error != "" {
			fmt.Fprintf(&b, " (%s)", s.Error)
		}
		b.WriteString("\n")
	}
	if r.FinalPrimary != "" {
		fmt.Fprintf(&b, "RPO: %d of %d acknowledged writes missing on %s", r.RPO, r.Writes, r.FinalPrimary)
		if r.Mode == modeSync {
			b.WriteString(" (must be 0 in synchronous mode)")
		}
		b.WriteString("\n")
	}
	if r.Pass {
		b.WriteString("PASS\n")
	} else {
		fmt.Fprintf(&b, "FAIL: %s\n", strings.Join(r.Failures, "; "))
	}
	return b.String()
}

func seconds(s float64) string {
	return (time.Duration(s * float64(time.Second))).Round(time.Millisecond).String()
}

func valueOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// DrillOptions shape Drill.
type DrillOptions struct {
	// Failover adds the hard failover after the switchover.
	Failover bool
	// DryRun plans and does nothing.
	DryRun bool
	// Conn is the probe's connection string (libpq URL or key/value)
	// without host and port, which are each member's; "" leaves it all
	// to libpq's environment (PGUSER, PGPASSWORD, PGDATABASE, ...).
	Conn string
	// Out receives the progress lines.
	Out io.Writer
	// Confirm is asked once, with what will be done, before anything is.
	Confirm func(question string) error
}

// Drill runs the failover drill against a live cluster: a switchover to
// the closest streaming replica, then with o.Failover a hard failover of
// that member, while a probe writes to DrillTable throughout. It refuses
// to start on an unhealthy cluster (ErrUnhealthy); a step that fails ends
// the drill with the report saying why. The error is for what kept the
// drill from running at all.
func Drill(ctx context.Context, client *api.Client, o DrillOptions) (DrillReport, error) {
	out := o.Out
	if out == nil {
		out = io.Discard
	}
	view, err := client.ClusterView(ctx)
	if err != nil {
		return DrillReport{}, fmt.Errorf("read the cluster: %w", err)
	}
	r := DrillReport{Cluster: view.Scope, Mode: modeAsync, DryRun: o.DryRun, Started: time.Now().UTC(), Steps: []DrillStep{}}
	if view.SynchronousMode {
		r.Mode = modeSync
	}
	for _, m := range view.Members {
		r.Members = append(r.Members, m.Name)
	}
	h := CheckHealth(view, StreamingReplicas(ctx, client, view))
	if len(h.Blockers) > 0 {
		return r, fmt.Errorf("%w:\n  - %s", ErrUnhealthy, strings.Join(h.Blockers, "\n  - "))
	}
	if r.Plan, err = PlanDrill(view, h, o.Failover); err != nil {
		return r, err
	}
	if o.DryRun {
		r.Pass = true
		return r, nil
	}
	q := fmt.Sprintf("Drill on cluster %q: switch over from %s to %s", r.Cluster, h.Primary, r.Plan.SwitchTo)
	if o.Failover {
		q += fmt.Sprintf(", then STOP %s's PostgreSQL HARD (immediate, as a crash) and fail over", r.Plan.HardStop)
	}
	if err := o.Confirm(q + "?"); err != nil {
		return r, err
	}
	run := r.Started.Format("20060102T150405.000000000Z")
	probe := newDrillProbe(run, o.Conn, view)
	primary, ok := probe.target(h.Primary)
	if !ok {
		return r, fmt.Errorf("the primary %s lists no PostgreSQL address in /cluster: the probe cannot reach it", h.Primary)
	}
	create := fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (run text, id bigint, member text, at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (run, id))", DrillTable)
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = probe.exec(cctx, primary, create)
	cancel()
	if err != nil {
		return r, fmt.Errorf("create the probe's table %s: %w", DrillTable, err)
	}
	fmt.Fprintf(out, "probe writing to %s on %s\n", DrillTable, h.Primary)
	probe.start()
	defer probe.stop()
	if err := waitWarm(ctx, probe, h.Primary); err != nil {
		probe.stop()
		dropTable(ctx, probe, primary, out)
		return r, err
	}
	steps := []func() DrillStep{func() DrillStep {
		return drillStep(ctx, client, probe, out, StepSwitchover, h.Primary, func() error {
			_, err := client.Post(ctx, "POST", "/switchover", api.SwitchoverRequest{Leader: h.Primary, Candidate: r.Plan.SwitchTo})
			return err
		})
	}}
	if o.Failover {
		steps = append(steps, func() DrillStep {
			from := r.Steps[len(r.Steps)-1].To
			return drillStep(ctx, client, probe, out, StepFailover, from, func() error {
				_, err := client.Post(ctx, "POST", "/failover", api.SwitchoverRequest{Leader: from, Hard: true})
				return err
			})
		})
	}
	for _, step := range steps {
		s := step()
		r.Steps = append(r.Steps, s)
		if s.Error != "" {
			break
		}
	}
	probe.stop()
	acks := probe.snapshot()
	r.Writes = len(acks)
	// Read back from the primary now (after a failed step, whoever it is).
	final := r.Steps[len(r.Steps)-1].To
	if view, err := client.ClusterView(ctx); err == nil {
		if p, ok := RunningPrimary(view); ok {
			final = p.Name
		}
	}
	if t, ok := probe.target(final); ok && final != "" {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		have, err := probe.readBack(rctx, t)
		cancel()
		if err != nil {
			fmt.Fprintf(out, "read back: %v\n", err)
		} else {
			r.FinalPrimary = final
			r.Missing = MissingWrites(acks, have)
			r.RPO = len(r.Missing)
			dropTable(ctx, probe, t, out)
		}
	}
	r.Ended = time.Now().UTC()
	r.Judge()
	return r, nil
}

// waitWarm waits until the probe wrote drillWarmUp rows on primary.
func waitWarm(ctx context.Context, probe *drillProbe, primary string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		n := 0
		for _, a := range probe.snapshot() {
			if a.Member == primary {
				n++
			}
		}
		if n >= drillWarmUp {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the probe wrote %d rows on %s within 30s, want %d: check the connection (--dsn)", n, primary, drillWarmUp)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func dropTable(ctx context.Context, probe *drillProbe, t probeTarget, out io.Writer) {
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := probe.exec(dctx, t, "DROP TABLE IF EXISTS "+DrillTable); err != nil {
		fmt.Fprintf(out, "drop the probe's table %s: %v\n", DrillTable, err)
	}
}

// drillStep runs one step: request, then wait until a primary other than
// from runs with every other member streaming from it, no request is
// pending, and the probe wrote on it.
func drillStep(ctx context.Context, client *api.Client, probe *drillProbe, out io.Writer, name, from string, request func() error) (s DrillStep) {
	s = DrillStep{Name: name, From: from, Started: time.Now()}
	defer func() {
		s.Ended = time.Now()
		s.RTOSeconds = LongestGap(probe.snapshot(), s.Started, s.Ended).Seconds()
		s.Started, s.Ended = s.Started.UTC(), s.Ended.UTC()
	}()
	fmt.Fprintf(out, "%s from %s ...\n", name, from)
	if err := request(); err != nil {
		s.Error = fmt.Sprintf("request: %v", err)
		return s
	}
	ctx, cancel := context.WithTimeout(ctx, drillStepTimeout)
	defer cancel()
	last := errors.New("not yet checked")
	for {
		view, err := client.ClusterView(ctx)
		if err == nil {
			probe.follow(view)
			h := CheckHealth(view, StreamingReplicas(ctx, client, view))
			switch {
			case h.Primary == "" || h.Primary == from:
				last = fmt.Errorf("the primary is still %s", valueOr(h.Primary, "nobody"))
			case len(h.Blockers) > 0:
				s.To = h.Primary
				last = errors.New(strings.Join(h.Blockers, "; "))
			case view.SynchronousMode && len(SyncStandbys(view)) == 0:
				s.To = h.Primary
				last = errors.New("no synchronous standby recorded yet")
			default:
				s.To = h.Primary
				if s.StreamingAfterSeconds == 0 {
					s.StreamingAfterSeconds = time.Since(s.Started).Seconds()
				}
				if probe.ackedOnSince(h.Primary, s.Started) {
					fmt.Fprintf(out, "%s: %s is primary, every member streaming after %s\n", name, h.Primary,
						seconds(s.StreamingAfterSeconds))
					return s
				}
				last = fmt.Errorf("the probe has not written on %s yet", h.Primary)
			}
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			s.Error = fmt.Sprintf("not whole again within %s: %v", drillStepTimeout, last)
			return s
		case <-time.After(250 * time.Millisecond):
		}
	}
}
