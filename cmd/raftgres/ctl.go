package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/tw"
	"github.com/urfave/cli/v2"
	"go.yaml.in/yaml/v3"

	"raftgres/api"
	"raftgres/failover"
	"raftgres/ops"
	"raftgres/raftstore"
)

func forceFlag() cli.Flag {
	return &cli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "do not ask for confirmation"}
}

// confirm asks question on the terminal unless --force; anything but y/yes
// (or end of input) aborts.
func confirm(c *cli.Context, question string) error {
	if c.Bool("force") {
		return nil
	}
	fmt.Fprintf(c.App.Writer, "%s [y/N]: ", question)
	line, err := bufio.NewReader(c.App.Reader).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return cli.Exit("read answer: "+err.Error(), 1)
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return cli.Exit("aborted (pass --force to skip this question)", 1)
}

// ctlCommands are patronictl's daily commands.
func ctlCommands() []*cli.Command {
	return []*cli.Command{
		listCommand(), switchoverCommand(), failoverCommand(),
		memberCommand("restart", "restart PostgreSQL on MEMBER(s)", "/restart"),
		memberCommand("reload", "reload PostgreSQL's configuration on MEMBER(s)", "/reload"),
		memberCommand("reinit", "wipe MEMBER(s)' data directory and clone it again from the primary", "/reinitialize"),
		memberCommand("rewind", "pg_rewind MEMBER(s) from the current primary, then stream from it (refused on the primary)", "/rewind"),
		pauseCommand(true), pauseCommand(false),
		showConfigCommand(), editConfigCommand(), historyCommand(), checkCommand(),
		promoteClusterCommand(), demoteClusterCommand(),
	}
}

func clientOrExit(c *cli.Context) (*api.Client, error) {
	client, err := adminClient(c)
	if err != nil {
		return nil, cli.Exit(err.Error(), 2)
	}
	return client, nil
}

func listCommand() *cli.Command {
	return &cli.Command{
		Name:  "list",
		Usage: "show the cluster's members, roles, timelines and lag",
		Description: "Columns: Member, Host, Role, State, TL (timeline), LSN, Lag in MB (behind the primary's\n" +
			"last report), Pending restart, Tags. Roles and states are patronictl's words, in the table and\n" +
			"with --format json: Leader, Standby Leader, Sync Standby, Quorum Standby, Replica; running,\n" +
			"streaming (a replica streaming from the primary), stopped, starting, creating replica, ...; a\n" +
			"member whose agent stopped reporting has no role and state unreachable. In a standby cluster\n" +
			"the Standby Leader's Lag in MB is behind the source, and a line under the table says where the\n" +
			"source was last seen. (GET /cluster keeps raftgres's words: leader, standby_leader,\n" +
			"sync_standby, quorum_standby, replica.)",
		Flags: append(adminFlags(),
			&cli.StringFlag{Name: "format", Value: "table", Usage: "table or json"},
			&cli.BoolFlag{Name: "watch", Aliases: []string{"W"}, Usage: "refresh until interrupted"},
			&cli.DurationFlag{Name: "interval", Aliases: []string{"w"}, Value: 2 * time.Second, Usage: "refresh interval with -W"},
		),
		Action: func(c *cli.Context) error {
			client, probe, note, err := readClient(c)
			if err != nil {
				return err
			}
			if note != "" {
				fmt.Fprintln(c.App.ErrWriter, note)
			}
			if f := c.String("format"); f != "table" && f != "json" {
				return cli.Exit("list: --format must be table or json, got "+f, 2)
			}
			for {
				var view api.ClusterView
				if probe != nil { // the first round: what the probe just read
					view, probe = *probe, nil
				} else if view, err = client.ClusterView(c.Context); err != nil {
					return cli.Exit("list: "+err.Error(), 1)
				}
				archive := primaryArchive(c.Context, client, view)
				view = patroniView(view, ops.StreamingReplicas(c.Context, client, view))
				if c.String("format") == "json" {
					enc := json.NewEncoder(c.App.Writer)
					enc.SetIndent("", "  ")
					_ = enc.Encode(view)
				} else {
					sysid := ""
					if st, err := client.MemberStatus(c.Context); err == nil {
						sysid = st.DatabaseSystemIdentifier
					}
					if err := renderList(c.App.Writer, view, sysid, archive); err != nil {
						return err
					}
				}
				if !c.Bool("watch") {
					return nil
				}
				select {
				case <-c.Context.Done():
					return nil
				case <-time.After(c.Duration("interval")):
				}
				fmt.Fprintln(c.App.Writer)
			}
		},
	}
}

// newTable is an ASCII table with headers as given, left-aligned, the way
// patronictl prints.
func newTable(w io.Writer) *tablewriter.Table {
	return tablewriter.NewTable(w,
		tablewriter.WithSymbols(tw.NewSymbols(tw.StyleASCII)),
		tablewriter.WithHeaderAutoFormat(tw.Off),
		tablewriter.WithHeaderAlignment(tw.AlignLeft),
		tablewriter.WithRowAlignment(tw.AlignLeft),
	)
}

// patroniView rewrites the members' roles and states in patronictl's
// words, which scripts grep: Leader, Sync Standby, Replica; running,
// streaming (a replica streaming from the primary), stopped, starting,
// creating replica, ... A member that stopped reporting (agent gone) has
// no role: scripts counting Replica rows must not count it. The API's
// /cluster keeps raftgres's own words.
func patroniView(view api.ClusterView, streaming map[string]bool) api.ClusterView {
	out := view
	out.Members = slices.Clone(view.Members)
	for i, m := range out.Members {
		role := map[api.ClusterRole]string{api.ClusterLeader: "Leader", api.ClusterSyncStandby: "Sync Standby",
			api.ClusterQuorumStandby: "Quorum Standby", api.ClusterStandbyLeader: "Standby Leader"}[m.Role]
		if role == "" {
			role = "Replica"
		}
		state := string(m.State)
		switch {
		case m.State == api.StateUnreachable:
			role = ""
		case m.State == raftstore.StateRunning && m.Role != api.ClusterLeader && m.Role != api.ClusterStandbyLeader && streaming[m.Name]:
			state = "streaming"
		case m.State == raftstore.StateCloning:
			state = "creating replica"
		case m.Role == api.ClusterUninitialized && m.State == raftstore.StateStopped:
			state = "uninitialized"
		}
		// patronictl's words, for display only.
		out.Members[i].Role, out.Members[i].State = api.ClusterRole(role), raftstore.PGState(state)
	}
	return out
}

// archiveNote is the primary's WAL archiving statistics for list.
type archiveNote struct {
	Member string
	failover.ArchiveStats
}

// primaryArchive asks the primary for its WAL archiving statistics (nil
// when it has archived and failed nothing, or does not answer).
func primaryArchive(ctx context.Context, client *api.Client, view api.ClusterView) *archiveNote {
	primary, ok := ops.RunningPrimary(view)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := client.With(primary.APIURL).Archive(ctx)
	if err != nil || st.ArchivedCount == 0 && st.FailedCount == 0 {
		return nil
	}
	return &archiveNote{Member: primary.Name, ArchiveStats: st}
}

// String is the note's line under the table.
func (a archiveNote) String() string {
	line := fmt.Sprintf(" WAL archive (%s): %d archived", a.Member, a.ArchivedCount)
	if a.LastArchivedWAL != "" {
		line += fmt.Sprintf(", last %s at %s", a.LastArchivedWAL, a.LastArchivedTime.UTC().Format(time.RFC3339))
	}
	if a.FailedCount > 0 {
		line += fmt.Sprintf("; %d failed, last %s at %s", a.FailedCount, a.LastFailedWAL, a.LastFailedTime.UTC().Format(time.RFC3339))
		if a.LastFailedTime.After(a.LastArchivedTime) {
			line += " (FAILING: raftgres backup check -c FILE on that host says why)"
		}
	}
	return line
}

// renderList prints the list table (pure: the golden test feeds it a
// view, and the primary's archiving statistics or nil).
func renderList(w io.Writer, view api.ClusterView, sysid string, archive *archiveNote) error {
	title := "Cluster: " + view.Scope
	if sysid != "" {
		title += " (" + sysid + ")"
	}
	fmt.Fprintln(w, "+ "+title)
	t := newTable(w)
	t.Header("Member", "Host", "Role", "State", "TL", "LSN", "Lag in MB", "Pending restart", "Tags")
	for _, m := range view.Members {
		host := m.Host
		if m.Port != 0 {
			host = fmt.Sprintf("%s:%d", m.Host, m.Port)
		}
		tl, lag, pending := "", "", ""
		if m.Timeline > 0 {
			tl = fmt.Sprint(m.Timeline)
		}
		switch {
		case m.Role == "Leader":
		case m.Lag != nil:
			lag = fmt.Sprint((*m.Lag + (1<<20)/2) / (1 << 20))
		default:
			lag = "unknown"
		}
		if m.PendingRestart {
			pending = "*"
		}
		if err := t.Append(m.Name, host, m.Role, m.State, tl, m.LSN, lag, pending, formatTags(m.Tags)); err != nil {
			return err
		}
	}
	if err := t.Render(); err != nil {
		return err
	}
	var notes []string
	if view.Pause {
		notes = append(notes, " Maintenance mode: on (no automatic failover)")
	}
	if s := view.ScheduledSwitchover; s != nil {
		line := fmt.Sprintf(" Pending %s: from %q to %q", s.Kind, s.From, s.To)
		if !s.At.IsZero() {
			line += " at " + s.At.Format(time.RFC3339)
		}
		notes = append(notes, line)
	}
	if archive != nil {
		notes = append(notes, archive.String())
	}
	if n := standbyNote(view.StandbyCluster); n != "" {
		notes = append(notes, n)
	}
	notes = append(notes, slotNotes(view)...)
	if n := staleNote(view); n != "" {
		notes = append(notes, " "+n)
	}
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
	return nil
}

// slotNotes are list's lines on replication slots: members whose slot
// the primary dropped for their absence, and where each permanent slot
// stands on the primary and its copies on the replicas.
func slotNotes(view api.ClusterView) []string {
	var notes, dropped []string
	for _, m := range view.Members {
		if m.SlotDropped {
			dropped = append(dropped, m.Name)
		}
	}
	if len(dropped) > 0 {
		notes = append(notes, " Slot dropped (absent longer than member_slots_ttl): "+strings.Join(dropped, ", ")+
			"; back, it catches up from the WAL archive or is cloned again")
	}
	if view.StandbyCluster != nil && len(view.PermanentSlots) > 0 {
		// A standby cluster keeps no permanent slot: the primary made by
		// promote-cluster creates them.
		return append(notes, fmt.Sprintf(" Permanent slots (%d): made when promote-cluster makes this cluster writable",
			len(view.PermanentSlots)))
	}
	for _, ps := range view.PermanentSlots {
		line := fmt.Sprintf(" Permanent slot %s (%s): ", ps.Name, ps.Type)
		if ps.LSN != "" {
			line += "primary at " + ps.LSN
		} else {
			line += "not on the primary yet"
		}
		var copies []string
		for _, name := range slices.Sorted(maps.Keys(ps.Copies)) {
			copies = append(copies, name+" "+ps.Copies[name])
		}
		if len(copies) > 0 {
			line += "; copies: " + strings.Join(copies, ", ")
		}
		if len(ps.Missing) > 0 {
			line += "; no copy yet on " + strings.Join(ps.Missing, ", ") + " (a failover there loses the slot)"
		}
		notes = append(notes, line)
	}
	return notes
}

// formatTags shows the tags that differ from the defaults.
func formatTags(t raftstore.Tags) string {
	var out []string
	for _, kv := range []struct {
		k string
		v bool
	}{{"nofailover", t.NoFailover}, {"noloadbalance", t.NoLoadBalance}, {"clonefrom", t.CloneFrom}, {"nosync", t.NoSync}} {
		if kv.v {
			out = append(out, kv.k+": true")
		}
	}
	if t.FailoverPriority != 1 {
		out = append(out, fmt.Sprintf("failover_priority: %d", t.FailoverPriority))
	}
	return strings.Join(out, ", ")
}

func switchoverCommand() *cli.Command {
	return &cli.Command{
		Name:  "switchover",
		Usage: "hand the primary role over to a replica, cleanly (no data loss, no rewind)",
		Description: "The primary shuts down cleanly, waits until the candidate has received all of its WAL,\n" +
			"then hands over the leader key; the old primary follows the new one. Without --candidate\n" +
			"the best replica is chosen. --scheduled takes an RFC 3339 time (2026-01-02T03:04:05Z);\n" +
			"cancel a scheduled one with switchover --cancel.",
		Flags: append(adminFlags(), forceFlag(),
			&cli.StringFlag{Name: "leader", Aliases: []string{"primary"}, Usage: "current primary `MEMBER` (checked)"},
			&cli.StringFlag{Name: "candidate", Usage: "`MEMBER` to become primary"},
			&cli.StringFlag{Name: "scheduled", Usage: "RFC 3339 `TIME` to switch over at"},
			&cli.BoolFlag{Name: "cancel", Usage: "cancel a scheduled switchover"},
		),
		Action: func(c *cli.Context) error {
			client, err := clientOrExit(c)
			if err != nil {
				return err
			}
			if c.Bool("cancel") {
				if err := confirm(c, "Cancel the scheduled switchover?"); err != nil {
					return err
				}
				return printMessage(c, client, "DELETE", "/switchover", nil)
			}
			req := api.SwitchoverRequest{Leader: c.String("leader"), Candidate: c.String("candidate"), ScheduledAt: c.String("scheduled")}
			if req.ScheduledAt != "" {
				if _, err := time.Parse(time.RFC3339, req.ScheduledAt); err != nil {
					return cli.Exit("switchover: --scheduled must be an RFC 3339 time such as 2026-01-02T03:04:05Z", 2)
				}
			}
			q := "Switch over from the current primary"
			if req.Candidate != "" {
				q += " to " + req.Candidate
			}
			if req.ScheduledAt != "" {
				q += " at " + req.ScheduledAt
			}
			if err := confirm(c, q+"?"); err != nil {
				return err
			}
			return printMessage(c, client, "POST", "/switchover", req)
		},
	}
}

func failoverCommand() *cli.Command {
	return &cli.Command{
		Name:  "failover",
		Usage: "make --candidate the primary now, even if the current primary is unhealthy",
		Description: "With a healthy primary this is a switchover to the candidate. Without one, the\n" +
			"candidate is promoted at the next election if it is a running replica within\n" +
			"maximum_lag_on_failover (in synchronous mode: a synchronous standby).",
		Flags: append(adminFlags(), forceFlag(),
			&cli.StringFlag{Name: "candidate", Usage: "`MEMBER` to promote", Required: true},
			&cli.StringFlag{Name: "leader", Aliases: []string{"primary"}, Usage: "current primary `MEMBER` (checked)"},
		),
		Action: func(c *cli.Context) error {
			client, err := clientOrExit(c)
			if err != nil {
				return err
			}
			if err := confirm(c, "Fail over to "+c.String("candidate")+"?"); err != nil {
				return err
			}
			return printMessage(c, client, "POST", "/failover", api.SwitchoverRequest{Leader: c.String("leader"), Candidate: c.String("candidate")})
		},
	}
}

func printMessage(c *cli.Context, client *api.Client, method, path string, body any) error {
	msg, err := client.Post(c.Context, method, path, body)
	if err != nil {
		return cli.Exit(fmt.Sprintf("%s %s: %v", method, path, err), 1)
	}
	fmt.Fprintln(c.App.Writer, msg.Message)
	return nil
}

// memberCommand runs an operator request on each named member's own API.
func memberCommand(name, usage, path string) *cli.Command {
	flags := append(adminFlags(), forceFlag())
	if name == "restart" {
		flags = append(flags, &cli.BoolFlag{Name: "pending", Usage: "restart only members with a pending restart"},
			&cli.StringFlag{Name: "role", Usage: "restart only members with this `ROLE` (primary or replica)"},
			&cli.BoolFlag{Name: "rolling", Usage: "every member, one at a time: replicas until each streams again, then the primary by a switchover"},
			&cli.StringFlag{Name: "since", Usage: "with --rolling: resume an interrupted run started at `TIME` (RFC 3339, as it printed)"})
	}
	if name == "rewind" {
		flags = append(flags, &cli.BoolFlag{Name: "reinit-on-failure", Usage: "reclone the member when pg_rewind cannot work"})
	}
	return &cli.Command{
		Name: name, Usage: usage, ArgsUsage: "MEMBER...", Flags: flags,
		Action: func(c *cli.Context) error {
			if name == "restart" && c.Bool("rolling") {
				if c.NArg() > 0 || c.String("role") != "" {
					return cli.Exit("restart --rolling restarts every member: name no MEMBER and no --role", 2)
				}
				client, err := clientOrExit(c)
				if err != nil {
					return err
				}
				return rollingRestart(c, client)
			}
			if c.Bool("rolling") || c.String("since") != "" {
				return cli.Exit(name+": --since goes with restart --rolling", 2)
			}
			if c.NArg() == 0 {
				return cli.Exit(name+": name at least one MEMBER", 2)
			}
			client, err := clientOrExit(c)
			if err != nil {
				return err
			}
			view, err := client.ClusterView(c.Context)
			if err != nil {
				return cli.Exit(name+": "+err.Error(), 1)
			}
			urls := map[string]string{}
			for _, m := range view.Members {
				urls[m.Name] = m.APIURL
			}
			for _, m := range c.Args().Slice() {
				if urls[m] == "" {
					return cli.Exit(fmt.Sprintf("%s: %s is not a member of %s", name, m, view.Scope), 2)
				}
			}
			if err := confirm(c, fmt.Sprintf("%s %s?", strings.ToUpper(name[:1])+name[1:], strings.Join(c.Args().Slice(), ", "))); err != nil {
				return err
			}
			var body any
			switch name {
			case "restart":
				body = api.RestartRequest{RestartPending: c.Bool("pending"), Role: c.String("role")}
			case "rewind":
				body = api.RewindRequest{ReinitOnFailure: c.Bool("reinit-on-failure")}
			}
			failed := 0
			for _, m := range c.Args().Slice() {
				msg, err := client.With(urls[m]).Post(c.Context, "POST", path, body)
				if err != nil {
					failed++
					fmt.Fprintf(c.App.ErrWriter, "%s %s: %v\n", name, m, err)
					continue
				}
				fmt.Fprintln(c.App.Writer, msg.Message)
			}
			if failed > 0 {
				return cli.Exit("", 1)
			}
			return nil
		},
	}
}

func pauseCommand(pause bool) *cli.Command {
	name, usage := "pause", "maintenance mode: no automatic failover until resume"
	if !pause {
		name, usage = "resume", "end maintenance mode: automatic failover again"
	}
	return &cli.Command{
		Name: name, Usage: usage, Flags: adminFlags(),
		Action: func(c *cli.Context) error {
			client, err := clientOrExit(c)
			if err != nil {
				return err
			}
			return printMessage(c, client, "POST", "/"+name, nil)
		},
	}
}

func showConfigCommand() *cli.Command {
	return &cli.Command{
		Name: "show-config", Usage: "print the dynamic cluster configuration (YAML)", Flags: adminFlags(),
		Action: func(c *cli.Context) error {
			client, _, note, err := readClient(c)
			if err != nil {
				return err
			}
			if note != "" {
				fmt.Fprintln(c.App.ErrWriter, note)
			}
			doc, err := client.Config(c.Context)
			if err != nil {
				return cli.Exit("show-config: "+err.Error(), 1)
			}
			return printYAML(c.App.Writer, doc)
		},
	}
}

func printYAML(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var m any
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return err
	}
	out, err := yaml.Marshal(plainNumbers(m))
	if err != nil {
		return err
	}
	_, err = w.Write(out)
	return err
}

// plainNumbers turns json.Numbers into int64 or float64 so YAML prints
// 1048576, not "1048576" or 1.048576e+06.
func plainNumbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = plainNumbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = plainNumbers(e)
		}
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	}
	return v
}

func editConfigCommand() *cli.Command {
	return &cli.Command{
		Name:  "edit-config",
		Usage: "change the dynamic cluster configuration",
		Description: "--set KEY=VALUE takes a dotted key (ttl=5, loop_wait=500ms, synchronous_mode=true,\n" +
			"postgresql.parameters.work_mem=64MB); --pg NAME=VALUE is short for\n" +
			"--set postgresql.parameters.NAME=VALUE. VALUE null removes the key (a removed setting\n" +
			"returns to its default). Changes are checked (e.g. ttl ≥ loop_wait + 2·retry_timeout)\n" +
			"and applied with a compare-and-set on the config version.",
		Flags: append(adminFlags(), forceFlag(),
			&cli.StringSliceFlag{Name: "set", Aliases: []string{"s"}, Usage: "`KEY=VALUE` to set (repeatable)"},
			&cli.StringSliceFlag{Name: "pg", Aliases: []string{"p"}, Usage: "PostgreSQL parameter `NAME=VALUE` (repeatable)"},
		),
		Action: func(c *cli.Context) error {
			patch, err := buildPatch(c.StringSlice("set"), c.StringSlice("pg"))
			if err != nil {
				return cli.Exit("edit-config: "+err.Error(), 2)
			}
			client, err := clientOrExit(c)
			if err != nil {
				return err
			}
			body, _ := json.Marshal(patch)
			fmt.Fprintf(c.App.Writer, "Change: %s\n", body)
			if err := confirm(c, "Apply these changes?"); err != nil {
				return err
			}
			doc, err := client.PatchConfig(c.Context, body)
			if err != nil {
				return cli.Exit("edit-config: "+err.Error(), 1)
			}
			fmt.Fprintln(c.App.Writer, "Configuration changed:")
			return printYAML(c.App.Writer, doc)
		},
	}
}

// buildPatch turns --set and --pg pairs into a JSON merge patch. Values are
// YAML scalars (5, true, 300ms, null).
func buildPatch(sets, pgs []string) (map[string]any, error) {
	if len(sets)+len(pgs) == 0 {
		return nil, errors.New("nothing to change: give --set KEY=VALUE or --pg NAME=VALUE")
	}
	patch := map[string]any{}
	put := func(path []string, raw string) error {
		var v any
		if err := yaml.Unmarshal([]byte(raw), &v); err != nil {
			return fmt.Errorf("value %q: %w", raw, err)
		}
		m := patch
		for _, k := range path[:len(path)-1] {
			next, ok := m[k].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[k] = next
			}
			m = next
		}
		m[path[len(path)-1]] = v
		return nil
	}
	for _, kv := range sets {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--set %q: want KEY=VALUE", kv)
		}
		path := strings.Split(k, ".")
		if len(path) > 2 && path[0] == "postgresql" && path[1] == "parameters" {
			path = []string{"postgresql", "parameters", strings.Join(path[2:], ".")}
		}
		if slices.Contains(path, "") {
			return nil, fmt.Errorf("--set %q: empty key part", kv)
		}
		if err := put(path, v); err != nil {
			return nil, err
		}
	}
	for _, kv := range pgs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--pg %q: want NAME=VALUE", kv)
		}
		if v != "null" {
			v = `"` + strings.ReplaceAll(strings.ReplaceAll(v, `\`, `\\`), `"`, `\"`) + `"`
		}
		if err := put([]string{"postgresql", "parameters", k}, v); err != nil {
			return nil, err
		}
	}
	return patch, nil
}

func historyCommand() *cli.Command {
	return &cli.Command{
		Name: "history", Usage: fmt.Sprintf("show the cluster's history (failovers, switchovers, members, config; the newest %d events)", raftstore.MaxHistory), Flags: adminFlags(),
		Action: func(c *cli.Context) error {
			client, _, note, err := readClient(c)
			if err != nil {
				return err
			}
			if note != "" {
				fmt.Fprintln(c.App.ErrWriter, note)
			}
			evs, err := client.History(c.Context)
			if err != nil {
				return cli.Exit("history: "+err.Error(), 1)
			}
			return renderHistory(c.App.Writer, evs)
		},
	}
}

// renderHistory prints History as a table. A leader change shows its cause
// in Event, and after its reason the election's choice and how long it
// took (previous primary's last renewal to the new one's first).
func renderHistory(w io.Writer, evs []raftstore.Event) error {
	t := newTable(w)
	t.Header("Index", "Time", "Event", "Member", "Epoch", "By", "Reason")
	for _, e := range evs {
		epoch := ""
		if e.Epoch > 0 {
			epoch = fmt.Sprint(e.Epoch)
		}
		kind, reason := e.Kind, e.Reason
		if e.Cause != "" {
			kind += " (" + e.Cause + ")"
		}
		if e.Choice != "" {
			reason += "; chose: " + e.Choice
		}
		if d, ok := e.Duration(); ok {
			reason += "; took " + d.Round(time.Millisecond).String()
		}
		_ = t.Append(fmt.Sprint(e.Index), e.At.UTC().Format(time.RFC3339), kind, e.Member, epoch, e.Actor, reason)
	}
	if err := t.Render(); err != nil {
		return fmt.Errorf("render history: %w", err)
	}
	if len(evs) >= raftstore.MaxHistory {
		fmt.Fprintf(w, "(the cluster keeps only the newest %d events)\n", raftstore.MaxHistory)
	}
	return nil
}

// Exit codes of check, as monitoring plugins use them.
const (
	checkOK       = 0
	checkWarning  = 1
	checkCritical = 2
)

// evaluateCheck judges a cluster view: critical without a running primary,
// warning with fewer running replicas than expected or lag over maxLag.
func evaluateCheck(view api.ClusterView, wantReplicas int, maxLag int64) (int, string) {
	var primary string
	var replicas []string
	var problems []string
	maxSeen := int64(0)
	leader, noun := api.ClusterLeader, "primary"
	if view.StandbyCluster != nil {
		// A standby cluster is healthy with its standby leader running;
		// its lag is the standby leader's behind the source.
		leader, noun = api.ClusterStandbyLeader, "standby leader"
	}
	for _, m := range view.Members {
		switch {
		case m.Role == leader && m.State == raftstore.StateRunning:
			primary = m.Name
			if m.Lag != nil {
				maxSeen = max(maxSeen, *m.Lag)
				if maxLag >= 0 && *m.Lag > maxLag {
					problems = append(problems, fmt.Sprintf("%s lags %d bytes behind the source (over %d)", m.Name, *m.Lag, maxLag))
				}
			}
		case m.Role == leader:
			problems = append(problems, fmt.Sprintf("%s %s is %s", noun, m.Name, m.State))
		case m.State == raftstore.StateRunning:
			replicas = append(replicas, m.Name)
			if m.Lag != nil {
				maxSeen = max(maxSeen, *m.Lag)
				if maxLag >= 0 && *m.Lag > maxLag {
					problems = append(problems, fmt.Sprintf("%s lags %d bytes (over %d)", m.Name, *m.Lag, maxLag))
				}
			}
		default:
			problems = append(problems, fmt.Sprintf("%s is %s", m.Name, m.State))
		}
	}
	if wantReplicas < 0 {
		wantReplicas = max(len(view.Members)-1, 0)
	}
	summary := fmt.Sprintf("%s %s, %d/%d replicas running, max lag %d bytes", noun, primary, len(replicas), wantReplicas, maxSeen)
	if primary == "" {
		return checkCritical, "CRITICAL: no running " + noun + " in " + view.Scope + joinProblems(problems)
	}
	if len(replicas) < wantReplicas {
		return checkWarning, "WARNING: " + summary + joinProblems(problems)
	}
	if len(problems) > 0 {
		return checkWarning, "WARNING: " + summary + joinProblems(problems)
	}
	return checkOK, "OK: " + summary
}

func joinProblems(p []string) string {
	if len(p) == 0 {
		return ""
	}
	return " (" + strings.Join(p, "; ") + ")"
}

func checkCommand() *cli.Command {
	return &cli.Command{
		Name:  "check",
		Usage: "health check for monitoring: exit 0 ok, 1 warning, 2 critical",
		Description: "Critical: no running primary, or no member's API answers. Warning: fewer running\n" +
			"replicas than --replicas (default: all other members), a member not running, or a\n" +
			"replica lagging more than --max-lag.",
		Flags: append(adminFlags(),
			&cli.IntFlag{Name: "replicas", Value: -1, Usage: "running replicas expected (default: members - 1)"},
			&cli.StringFlag{Name: "max-lag", Value: "16MB", Usage: "warn when a replica lags more than `BYTES` (kB, MB, GB)"},
		),
		Action: func(c *cli.Context) error {
			maxLag, err := api.ParseBytes(c.String("max-lag"))
			if err != nil {
				return cli.Exit(fmt.Sprintf("CRITICAL: --max-lag %q: %v", c.String("max-lag"), err), checkCritical)
			}
			client, probe, note, err := readClient(c)
			if err != nil {
				return cli.Exit("CRITICAL: "+err.Error(), checkCritical)
			}
			if note != "" {
				fmt.Fprintln(c.App.ErrWriter, note)
			}
			if probe == nil { // nobody answered the probe: one more try, for the error
				ctx, cancel := context.WithTimeout(c.Context, 10*time.Second)
				defer cancel()
				view, err := client.ClusterView(ctx)
				if err != nil {
					return cli.Exit("CRITICAL: cannot read the cluster: "+err.Error(), checkCritical)
				}
				probe = &view
			}
			code, msg := evaluateCheck(*probe, c.Int("replicas"), maxLag)
			fmt.Fprintln(c.App.Writer, msg)
			if code != checkOK {
				return cli.Exit("", code)
			}
			return nil
		},
	}
}
