// Package api is raftgres's HTTP layer: health and status endpoints, the
// internal endpoints peers use (forward a command to the Raft leader, join,
// leave), and the Go client the CLI and peers use.
package api

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"raftgres/failover"
	"raftgres/raftstore"
)

// LoggerName is this package's sub-logger name.
const LoggerName = "api"

// maxBody bounds every request body.
const maxBody = 1 << 20

// Store is what the server needs from the local Raft peer:
// *raftstore.Store in the agent, a fake over raftstore.Apply in this
// package's tests.
type Store interface {
	ID() string
	// State returns a copy of the replicated state.
	State() raftstore.State
	// Changes returns a channel closed at the next change of State after
	// the call: waiting on it replaces polling State.
	Changes() <-chan struct{}
	Status() (raftstore.Status, error)
	// Apply commits cmd on this peer: raftstore.ErrNotLeader unless it
	// leads.
	Apply(ctx context.Context, cmd raftstore.Command) (raftstore.ApplyResult, error)
	Join(ctx context.Context, req raftstore.JoinRequest) (uint64, error)
	Leave(ctx context.Context, id, actor string) error
	Export(scope string, now time.Time) ([]byte, error)
	TransferLeadership(ctx context.Context) error
}

// Forwarder commits commands through the Raft leader, wherever it is:
// *Proposer in the agent. Deterministic refusals come back in
// ApplyResult.Err; the error return means the command was not committed
// (or its outcome is unknown).
type Forwarder interface {
	Apply(ctx context.Context, cmd raftstore.Command) (raftstore.ApplyResult, error)
}

// The agent's implementations.
var (
	_ Store      = (*raftstore.Store)(nil)
	_ LocalStore = (*raftstore.Store)(nil)
	_ Forwarder  = (*Proposer)(nil)
)

// Server serves the HTTP API. New starts nothing; Run serves until ctx ends.
type Server struct {
	cfg      Config
	scope    string
	store    Store
	proposer Forwarder
	logger   hclog.Logger
	peerCAs  *x509.CertPool
	mux      *http.ServeMux
	member   Member
	version  string
	// backupEndpoint is served on GET /backup/endpoint (nil: 404).
	backupEndpoint any
	// handler is mux behind restapi.allowlist.
	handler http.Handler
	allow   allowRule
	// members holds the members' addresses (allowlist_include_members only).
	members *memberAddrs
	// rotator serves POST /secrets/rotate (nil: 404).
	rotator SecretRotator
	// archive serves GET /archive and the archiving series (nil: none).
	archive ArchiveSource
}

// Option configures a Server.
type Option func(*Server)

// WithMember serves the local PostgreSQL member's health, status and
// operator requests; without it (a Raft-only agent) health checks fail.
func WithMember(m Member) Option { return func(s *Server) { s.member = m } }

// WithBackupEndpoint serves v (the backup package's Endpoint: how
// pgBackRest on another member's host reaches this PostgreSQL) to peers on
// GET /backup/endpoint.
func WithBackupEndpoint(v any) Option { return func(s *Server) { s.backupEndpoint = v } }

// WithVersion sets the version /patroni and /metrics report.
func WithVersion(v string) Option { return func(s *Server) { s.version = v } }

// New builds a Server for store; proposer forwards commands to the leader.
func New(cfg Config, scope string, store Store, proposer Forwarder, logger hclog.Logger, opts ...Option) (*Server, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	s := &Server{cfg: cfg, scope: scope, store: store, proposer: proposer, logger: logger.Named(LoggerName), version: "dev"}
	for _, o := range opts {
		o(s)
	}
	if cfg.PeerTLS.CAFile != "" {
		pem, err := os.ReadFile(cfg.PeerTLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read peer ca %s: %w", cfg.PeerTLS.CAFile, err)
		}
		s.peerCAs = x509.NewCertPool()
		if !s.peerCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("peer ca %s holds no PEM certificate", cfg.PeerTLS.CAFile)
		}
	}
	nets, err := parseAllowlist(cfg.Allowlist)
	if err != nil {
		return nil, fmt.Errorf("restapi.%w", err)
	}
	s.allow = allowRule{nets: nets, includeMembers: cfg.AllowlistIncludeMembers}
	if s.allow.includeMembers {
		s.members = newMemberAddrs(store, s.logger)
	}
	s.mux = http.NewServeMux()
	s.routes()
	s.handler = s.withAllowlist(s.mux)
	return s, nil
}

func (s *Server) routes() {
	s.mux.HandleFunc("GET /raft/status", s.internal(s.handleRaftStatus))
	s.mux.HandleFunc("GET /raft/state", s.internal(s.handleRaftState))
	s.mux.HandleFunc("POST /raft/join", s.internal(s.handleJoin))
	s.mux.HandleFunc("POST /raft/leave", s.internal(s.handleLeave))
	s.mux.HandleFunc("POST /raft/apply", s.internal(s.handleApply))
	s.mux.HandleFunc("POST /raft/transfer", s.internal(s.handleTransfer))
	s.mux.HandleFunc("GET /snapshot", s.internal(s.handleSnapshot))
	s.mux.HandleFunc("GET /backup/endpoint", s.internal(s.handleBackupEndpoint))
	s.mux.HandleFunc("POST "+rotatePath, s.internal(s.handleRotate))
	s.mux.HandleFunc("GET /cluster", s.handleCluster)
	s.mux.HandleFunc("GET /archive", s.handleArchive)
	s.mux.HandleFunc("GET /history", s.handleHistory)
	s.mux.HandleFunc("GET /patroni", s.handlePatroni)
	s.mux.Handle("GET /metrics", s.metricsHandler())
	s.mux.HandleFunc("GET /config", s.handleGetConfig)
	s.mux.HandleFunc("PATCH /config", s.admin(s.handlePatchConfig))
	s.mux.HandleFunc("PUT /config", s.admin(s.handlePatchConfig))
	s.mux.HandleFunc("POST /switchover", s.admin(s.handleSwitchover(raftstore.KindSwitchover)))
	s.mux.HandleFunc("DELETE /switchover", s.admin(s.handleCancelSwitchover))
	s.mux.HandleFunc("POST /failover", s.admin(s.handleSwitchover(raftstore.KindFailover)))
	s.mux.HandleFunc("POST /restart", s.admin(s.handleLocal(failover.RequestRestart)))
	s.mux.HandleFunc("POST /reload", s.admin(s.handleLocal(failover.RequestReload)))
	s.mux.HandleFunc("POST /reinitialize", s.admin(s.handleLocal(failover.RequestReinit)))
	s.mux.HandleFunc("POST /rewind", s.admin(s.handleLocal(failover.RequestRewind)))
	s.mux.HandleFunc("POST /pause", s.admin(s.handlePause(true)))
	s.mux.HandleFunc("POST /resume", s.admin(s.handlePause(false)))
	s.mux.HandleFunc("/{$}", s.handleHealth)
	for _, p := range healthPaths {
		s.mux.HandleFunc(p, s.handleHealth)
	}
	s.mux.HandleFunc("/", s.handleNoRoute)
}

// handleNoRoute answers JSON 405 (with Allow) when the path exists under
// another method, else JSON 404.
func (s *Server) handleNoRoute(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		r2 := r.Clone(r.Context())
		r2.Method = m
		if _, pat := s.mux.Handler(r2); pat != "/" && pat != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeJSON(w, http.StatusMethodNotAllowed, wireError{
			Error: fmt.Sprintf("method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, strings.Join(allow, ", ")),
			Code:  "method_not_allowed"})
		return
	}
	writeError(w, fmt.Errorf("%w: %s %s", ErrNotFound, r.Method, r.URL.Path), "")
}

// Handler returns the server's HTTP handler, allowlist included (for
// tests; with allowlist_include_members only Run refreshes the members).
func (s *Server) Handler() http.Handler { return s.handler }

// Run listens on cfg.Listen and serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen for api on %s: %w", s.cfg.Listen, err)
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          s.logger.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	if s.cfg.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLS.CertFile, s.cfg.TLS.KeyFile)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("load api tls certificate %s: %w", s.cfg.TLS.CertFile, err)
		}
		tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		if s.peerCAs != nil {
			tc.ClientCAs, tc.ClientAuth = s.peerCAs, tls.VerifyClientCertIfGiven
		}
		ln = tls.NewListener(ln, tc)
	}
	if s.members != nil {
		mctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		defer func() { cancel(); <-done }()
		s.members.refresh(mctx, time.Now())
		go func() { defer close(done); s.members.run(mctx) }()
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.logger.Info("api listening", "listen", s.cfg.Listen, "tls", s.cfg.TLS.CertFile != "")
	if s.allow.active() {
		s.logger.Info("api allowlist", "allowlist", s.allow.nets, "include_members", s.allow.includeMembers)
	}
	select {
	case err := <-errc:
		return fmt.Errorf("serve api: %w", err)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		return fmt.Errorf("shut down api: %w", err)
	}
	<-errc
	return nil
}

// internal guards peer-only endpoints: a client certificate verified
// against the cluster CA, or the cluster token as a bearer token.
func (s *Server) internal(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.peerAuthorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="raftgres"`)
			writeError(w, fmt.Errorf("%w: internal endpoint needs the cluster token or a peer certificate", ErrUnauthorized), "")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		h(w, r)
	}
}

func (s *Server) peerAuthorized(r *http.Request) bool {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && s.peerCAs != nil {
		return true
	}
	tok := s.cfg.Token.Reveal()
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && tok != "" && subtle.ConstantTimeCompare([]byte(got), []byte(tok)) == 1
}

// RaftStatus is /raft/status: the Raft view of this node plus the leader's
// API address.
type RaftStatus struct {
	raftstore.Status
	LeaderAPI string `json:"leader_api,omitempty"`
}

func (s *Server) handleRaftStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.store.Status()
	if err != nil && st.State == "" {
		writeError(w, err, "")
		return
	}
	out := RaftStatus{Status: st}
	if m, ok := s.store.State().Members[st.LeaderID]; ok {
		out.LeaderAPI = m.APIAddr
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleRaftState(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.store.State())
}

func (s *Server) handleJoin(w http.ResponseWriter, r *http.Request) {
	var req raftstore.JoinRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		writeError(w, err, "")
		return
	}
	idx, err := s.store.Join(r.Context(), req)
	if err != nil {
		s.logger.Info("join not done here", "member", req.ID, "voter", req.Voter, "error", err)
		writeError(w, err, s.leaderAPI())
		return
	}
	writeJSON(w, http.StatusOK, JoinResponse{Index: idx, LeaderID: s.store.ID()})
}

// LeaveRequest is the body of POST /raft/leave.
type LeaveRequest struct {
	ID    string `json:"id"`
	Actor string `json:"actor,omitempty"`
}

func (s *Server) handleLeave(w http.ResponseWriter, r *http.Request) {
	var req LeaveRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		writeError(w, err, "")
		return
	}
	if req.ID == "" {
		writeError(w, fmt.Errorf("%w: id is required", ErrBadRequest), "")
		return
	}
	if req.Actor == "" {
		req.Actor = "api"
	}
	if err := s.store.Leave(r.Context(), req.ID, req.Actor); err != nil {
		writeError(w, err, s.leaderAPI())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"left": req.ID})
}

// ApplyResponse is the body of a successful POST /raft/apply: the command
// committed at Index; Error/Code carry a deterministic refusal (e.g. a
// failed compare-and-set).
type ApplyResponse struct {
	Index uint64 `json:"index"`
	Error string `json:"error,omitempty"`
	Code  string `json:"code,omitempty"`
}

func (s *Server) handleApply(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, fmt.Errorf("%w: read body: %w", ErrBadRequest, err), "")
		return
	}
	cmd, err := raftstore.Decode(data)
	if err != nil {
		writeError(w, err, "")
		return
	}
	var res raftstore.ApplyResult
	if r.Header.Get(forwardedHeader) != "" {
		// Forwarded once already: applied here or refused, so a stale
		// view of who leads never bounces a command between members.
		res, err = s.store.Apply(r.Context(), cmd)
	} else {
		res, err = s.proposer.Apply(r.Context(), cmd)
	}
	if err != nil {
		writeError(w, err, s.leaderAPI())
		return
	}
	code, msg := wireOf(res.Err)
	writeJSON(w, http.StatusOK, ApplyResponse{Index: res.Index, Error: msg, Code: code})
}

func (s *Server) handleTransfer(w http.ResponseWriter, r *http.Request) {
	if err := s.store.TransferLeadership(r.Context()); err != nil {
		writeError(w, err, s.leaderAPI())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"transferred_from": s.store.ID()})
}

func (s *Server) handleBackupEndpoint(w http.ResponseWriter, r *http.Request) {
	if s.backupEndpoint == nil {
		writeError(w, fmt.Errorf("%w: this member runs no pgBackRest TLS server (backup.server)", ErrNotFound), "")
		return
	}
	writeJSON(w, http.StatusOK, s.backupEndpoint)
}

func (s *Server) handleSnapshot(w http.ResponseWriter, r *http.Request) {
	b, err := s.store.Export(s.scope, time.Now())
	if err != nil {
		writeError(w, err, "")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// leaderAPI is the API address of the Raft leader, if known.
func (s *Server) leaderAPI() string {
	st, _ := s.store.Status()
	if m, ok := s.store.State().Members[st.LeaderID]; ok {
		return m.APIAddr
	}
	return ""
}

func decodeJSON(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: malformed json: %w", ErrBadRequest, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: trailing data after json body", ErrBadRequest)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, err error, leaderAPI string) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		writeJSON(w, http.StatusRequestEntityTooLarge, wireError{Error: err.Error(), Code: "too_large"})
		return
	}
	status, code := errorStatus(err)
	writeJSON(w, status, wireError{Error: err.Error(), Code: code, LeaderAPI: leaderAPI})
}
