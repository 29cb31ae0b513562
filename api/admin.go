package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"raftgres/failover"
	"raftgres/raftstore"
)

// admin guards the write endpoints with HTTP basic auth against
// restapi.authentication; without it configured they are refused.
func (s *Server) admin(h func(w http.ResponseWriter, r *http.Request, actor string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Username == "" {
			writeError(w, fmt.Errorf("%w: admin endpoints are disabled: set restapi.authentication", ErrForbidden), "")
			return
		}
		user, pass, ok := r.BasicAuth()
		userOK := subtle.ConstantTimeCompare([]byte(user), []byte(s.cfg.Username)) == 1
		passOK := subtle.ConstantTimeCompare([]byte(pass), []byte(s.cfg.Password.Reveal())) == 1
		if !ok || !userOK || !passOK {
			w.Header().Set("WWW-Authenticate", `Basic realm="raftgres"`)
			s.logger.Warn("admin request refused: bad or missing credentials", "method", r.Method, "path", r.URL.Path,
				"remote", r.RemoteAddr)
			writeError(w, fmt.Errorf("%w: %s %s needs the restapi credentials (basic auth)", ErrUnauthorized, r.Method, r.URL.Path), "")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		h(w, r, "api:"+user+"@"+s.store.ID())
	}
}

// decodeOptional decodes a JSON body into v; an empty body leaves v as is.
func decodeOptional(r *http.Request, v any) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return fmt.Errorf("%w: read body: %w", ErrBadRequest, err)
	}
	if strings.TrimSpace(string(b)) == "" {
		return nil
	}
	return decodeJSON(strings.NewReader(string(b)), v)
}

// Message is the body of a successful admin request.
type Message struct {
	Message string `json:"message"`
}

// commit applies cmd through the Raft leader and waits until this member
// has applied it too, so that the caller's next read here sees it
// (read-your-writes for the CLI). It returns the command's Raft index.
func (s *Server) commit(ctx context.Context, cmd raftstore.Command) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	index, err := raftstore.Commit(ctx, s.proposer, cmd)
	if err != nil {
		return 0, err
	}
	for {
		// A command applied without error sets State.Index to its own
		// index, and later ones only raise it.
		changes := s.store.Changes()
		if s.store.State().Index >= index {
			return index, nil
		}
		select {
		case <-ctx.Done():
			return index, nil // committed; only the local copy is behind
		case <-changes:
		}
	}
}

func (s *Server) handleGetConfig(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, DocOf(s.store.State().Config))
}

func (s *Server) handlePatchConfig(w http.ResponseWriter, r *http.Request, actor string) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, fmt.Errorf("%w: read body: %w", ErrBadRequest, err), "")
		return
	}
	cur := s.store.State().Config
	var next raftstore.ClusterConfig
	if r.Method == http.MethodPut {
		next, err = decodeConfigDoc(body)
	} else {
		next, err = PatchConfig(cur, body)
	}
	if err != nil {
		writeError(w, err, "")
		return
	}
	if _, err := s.commit(r.Context(), raftstore.SetConfig{Config: next, PrevVersion: cur.Version, Actor: actor, At: time.Now().UTC()}); err != nil {
		writeError(w, fmt.Errorf("change config: %w", err), "")
		return
	}
	s.logger.Info("cluster config changed", "actor", actor, "version", cur.Version+1)
	next.Version = cur.Version + 1
	writeJSON(w, http.StatusOK, DocOf(next))
}

func (s *Server) handlePause(pause bool) func(http.ResponseWriter, *http.Request, string) {
	return func(w http.ResponseWriter, r *http.Request, actor string) {
		if _, err := s.commit(r.Context(), raftstore.SetPause{Pause: pause, Actor: actor, At: time.Now().UTC()}); err != nil {
			writeError(w, err, "")
			return
		}
		msg := "cluster is now in maintenance mode: no automatic failover"
		if !pause {
			msg = "maintenance mode is off: automatic failover is back"
		}
		s.logger.Info(msg, "actor", actor)
		writeJSON(w, http.StatusOK, Message{msg})
	}
}

// SwitchoverRequest is the body of POST /switchover and /failover
// (Patroni's keys).
type SwitchoverRequest struct {
	Leader      string `json:"leader,omitempty"`
	Candidate   string `json:"candidate,omitempty"`
	ScheduledAt string `json:"scheduled_at,omitempty"`
	// Hard (POST /failover only, with Leader the current primary) is a
	// drill of a crash: the primary stops PostgreSQL immediate and
	// releases the key, and the ordinary election decides without it
	// (Candidate, if named, first when eligible).
	Hard bool `json:"hard,omitempty"`
}

// checkCandidate refuses a candidate that cannot become primary, as
// failover judges it when it acts on the request (failover.RequestRefusal).
func checkCandidate(st raftstore.State, name string) error {
	if _, ok := st.Members[name]; !ok {
		return fmt.Errorf("%w: candidate %s", raftstore.ErrUnknownMember, name)
	}
	if why := failover.RequestRefusal(st, name); why != "" {
		return fmt.Errorf("%w: candidate %s: %s", ErrPrecondition, name, why)
	}
	return nil
}

func (s *Server) handleSwitchover(kind raftstore.FailoverKind) func(http.ResponseWriter, *http.Request, string) {
	return func(w http.ResponseWriter, r *http.Request, actor string) {
		var req SwitchoverRequest
		if err := decodeOptional(r, &req); err != nil {
			writeError(w, err, "")
			return
		}
		// Validate against a store that has applied everything committed
		// before this request (a member's reports reach followers up to
		// a couple of seconds late): a Barrier entry, committed and
		// applied here first.
		if _, err := s.commit(r.Context(), raftstore.Barrier{Actor: actor}); err != nil {
			writeError(w, fmt.Errorf("read the cluster state before validating the %s: %w", kind, err), "")
			return
		}
		st := s.store.State()
		if err := validateSwitchover(kind, req, st, time.Now()); err != nil {
			writeError(w, err, "")
			return
		}
		fr := &raftstore.FailoverRequest{Kind: kind, From: req.Leader, To: req.Candidate, RequestedBy: actor, RequestedAt: time.Now().UTC(),
			Hard: req.Hard}
		if kind == raftstore.KindSwitchover && fr.From == "" {
			fr.From = st.Leader.Holder
		}
		if req.ScheduledAt != "" {
			fr.ScheduledAt, _ = time.Parse(time.RFC3339, req.ScheduledAt)
		}
		// A compare-and-set: a request committed meanwhile is not
		// overwritten.
		idx, err := s.commit(r.Context(), raftstore.SetFailover{Request: fr, CAS: true, Actor: actor, At: time.Now().UTC()})
		if err != nil {
			writeError(w, err, "")
			return
		}
		s.logger.Info(string(kind)+" requested", "actor", actor, "from", fr.From, "to", fr.To, "scheduled_at", req.ScheduledAt, "hard", fr.Hard)
		if !fr.ScheduledAt.IsZero() {
			writeJSON(w, http.StatusAccepted, Message{fmt.Sprintf("%s scheduled at %s", kind, fr.ScheduledAt.Format(time.RFC3339))})
			return
		}
		holder, err := s.awaitFailover(r.Context(), st, fr, idx)
		if err != nil {
			writeError(w, err, "")
			return
		}
		writeJSON(w, http.StatusOK, Message{fmt.Sprintf("Successfully %s to %q", map[raftstore.FailoverKind]string{raftstore.KindSwitchover: "switched over", raftstore.KindFailover: "failed over"}[kind], holder)})
	}
}

func validateSwitchover(kind raftstore.FailoverKind, req SwitchoverRequest, st raftstore.State, now time.Time) error {
	if st.Failover != nil {
		return fmt.Errorf("%w: a %s is already pending (from %q to %q); cancel it with DELETE /switchover",
			ErrConflict, st.Failover.Kind, st.Failover.From, st.Failover.To)
	}
	if req.Hard {
		if err := validateHard(kind, req, st); err != nil {
			return err
		}
	} else if kind == raftstore.KindFailover && req.Candidate == "" {
		return fmt.Errorf("%w: failover needs a candidate", ErrBadRequest)
	}
	if kind == raftstore.KindFailover && req.ScheduledAt != "" {
		return fmt.Errorf("%w: a failover cannot be scheduled; use switchover", ErrBadRequest)
	}
	if kind == raftstore.KindSwitchover && st.Leader.Holder == "" {
		return fmt.Errorf("%w: there is no primary to switch over from; use failover", ErrPrecondition)
	}
	if req.Leader != "" && req.Leader != st.Leader.Holder {
		return fmt.Errorf("%w: leader %q does not match the current primary %q", ErrPrecondition, req.Leader, st.Leader.Holder)
	}
	if req.Candidate != "" {
		if err := checkCandidate(st, req.Candidate); err != nil {
			return err
		}
	}
	if req.ScheduledAt != "" {
		at, err := time.Parse(time.RFC3339, req.ScheduledAt)
		if err != nil {
			return fmt.Errorf("%w: scheduled_at %q is not an RFC 3339 time (2006-01-02T15:04:05Z07:00): %w", ErrBadRequest, req.ScheduledAt, err)
		}
		if !at.After(now) {
			return fmt.Errorf("%w: scheduled_at %s is in the past", ErrBadRequest, req.ScheduledAt)
		}
	}
	return nil
}

// validateHard checks what a hard failover needs beyond a failover's
// rules: the current primary named as leader, and a member other than it
// that could be elected (a drill must not leave the cluster to elect the
// primary it stopped back).
func validateHard(kind raftstore.FailoverKind, req SwitchoverRequest, st raftstore.State) error {
	switch {
	case kind != raftstore.KindFailover:
		return fmt.Errorf("%w: hard is for POST /failover only", ErrBadRequest)
	case req.Leader == "":
		return fmt.Errorf("%w: a hard failover names the current primary in leader", ErrBadRequest)
	case req.ScheduledAt != "":
		return fmt.Errorf("%w: a failover cannot be scheduled", ErrBadRequest)
	case st.Leader.Holder == "":
		return fmt.Errorf("%w: there is no primary to stop", ErrPrecondition)
	case st.Config.Pause:
		return fmt.Errorf("%w: the cluster is paused: nothing would be stopped, and nobody elected; resume it first", ErrPrecondition)
	}
	if req.Candidate != "" {
		return nil // checked as every candidate is
	}
	var why []string
	for _, name := range st.MemberNames() {
		if name == st.Leader.Holder {
			continue
		}
		r := failover.RequestRefusal(st, name)
		if r == "" {
			return nil
		}
		why = append(why, name+": "+r)
	}
	return fmt.Errorf("%w: no member but the primary could be elected (%s)", ErrPrecondition, strings.Join(why, "; "))
}

// awaitFailover waits until the leader key moved as fr (committed at index
// idx) asks, or the request was dropped (refused or aborted: History says
// why).
func (s *Server) awaitFailover(ctx context.Context, before raftstore.State, fr *raftstore.FailoverRequest, idx uint64) (string, error) {
	ttl := before.Config.TTL
	ctx, cancel := context.WithTimeout(ctx, max(4*ttl, 30*time.Second))
	defer cancel()
	for {
		changes := s.store.Changes()
		st := s.store.State()
		h := st.Leader.Holder
		// A hard failover is done when anyone else holds the key: its
		// candidate goes first only when eligible.
		if h != "" && h != before.Leader.Holder && (fr.To == "" || h == fr.To || fr.Hard) {
			return h, nil
		}
		if st.Failover == nil && st.Index > idx {
			why := "request dropped"
			for i := len(st.History) - 1; i >= 0 && st.History[i].Index > idx; i-- {
				if e := st.History[i]; e.Kind == raftstore.EventFailoverDone {
					why = e.Reason
					break
				}
			}
			if h != "" && h != before.Leader.Holder {
				return "", fmt.Errorf("%w: %s went to %s instead: %s", ErrPrecondition, fr.Kind, h, why)
			}
			return "", fmt.Errorf("%w: %s did not happen: %s", ErrPrecondition, fr.Kind, why)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%s not finished in time (the request is still pending): %w", fr.Kind, ctx.Err())
		case <-changes:
		}
	}
}

func (s *Server) handleCancelSwitchover(w http.ResponseWriter, r *http.Request, actor string) {
	f := s.store.State().Failover
	if f == nil {
		writeError(w, fmt.Errorf("%w: no switchover is pending", ErrNotFound), "")
		return
	}
	if _, err := s.commit(r.Context(), raftstore.SetFailover{Actor: actor, Reason: "cancelled by " + actor, At: time.Now().UTC(),
		CAS: true, Prev: f}); err != nil {
		writeError(w, err, "")
		return
	}
	writeJSON(w, http.StatusOK, Message{"scheduled " + string(f.Kind) + " cancelled"})
}

// RestartRequest is the body of POST /restart.
type RestartRequest struct {
	RestartPending bool   `json:"restart_pending,omitempty"`
	Role           string `json:"role,omitempty"`
}

// RewindRequest is the optional body of POST /rewind.
type RewindRequest struct {
	// ReinitOnFailure reclones when pg_rewind cannot work.
	ReinitOnFailure bool `json:"reinit_on_failure,omitempty"`
}

func (s *Server) handleLocal(kind failover.RequestKind) func(http.ResponseWriter, *http.Request, string) {
	return func(w http.ResponseWriter, r *http.Request, actor string) {
		if s.member == nil {
			writeError(w, fmt.Errorf("%w: this member runs no postgresql", ErrPrecondition), "")
			return
		}
		req := failover.Request{Kind: kind}
		switch kind {
		case failover.RequestRestart:
			var rr RestartRequest
			if err := decodeOptional(r, &rr); err != nil {
				writeError(w, err, "")
				return
			}
			if rr.Role != "" && raftstore.Role(rr.Role) != s.view().role() {
				writeError(w, fmt.Errorf("%w: role %q asked, this member is %s", ErrPrecondition, rr.Role, s.view().role()), "")
				return
			}
			req.OnlyPending = rr.RestartPending
		case failover.RequestRewind:
			var rr RewindRequest
			if err := decodeOptional(r, &rr); err != nil {
				writeError(w, err, "")
				return
			}
			req.ReinitOnFailure = rr.ReinitOnFailure
		default:
			var empty struct {
				Force bool `json:"force,omitempty"`
			}
			if err := decodeOptional(r, &empty); err != nil {
				writeError(w, err, "")
				return
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Minute)
		defer cancel()
		s.logger.Info("operator request", "request", kind, "actor", actor)
		if err := s.member.Do(ctx, req); err != nil {
			if !errors.Is(err, failover.ErrRequestRefused) && !errors.Is(err, context.DeadlineExceeded) {
				err = fmt.Errorf("%w: %w", errRequestFailed, err)
			}
			writeError(w, err, "")
			return
		}
		writeJSON(w, http.StatusOK, Message{fmt.Sprintf("%s of %s done", kind, s.store.ID())})
	}
}

var errRequestFailed = errors.New("request failed")
