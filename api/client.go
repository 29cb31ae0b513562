package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"raftgres/failover"
	"raftgres/raftstore"
)

// maxRedirects bounds how many "not leader" answers a client follows.
const maxRedirects = 5

// ClientOptions authenticate and bound a Client.
type ClientOptions struct {
	// Token is the cluster token, sent as a bearer token to internal endpoints.
	Token string
	// TLS is used for https URLs (and presents a peer certificate if set).
	TLS *tls.Config
	// Timeout bounds each request when the context has no deadline.
	Timeout time.Duration
	// Username and Password (restapi.authentication) are sent as basic
	// auth to the admin endpoints.
	Username string
	Password string
}

// Client talks to one member's API. It follows "not leader" answers to the
// leader for join and leave.
type Client struct {
	base string
	opts ClientOptions
	http *http.Client
}

// NewClient returns a client for base ("http://127.0.0.1:8008"; a bare
// host:port means http).
func NewClient(base string, opts ClientOptions) *Client {
	if opts.Timeout == 0 {
		opts.Timeout = 15 * time.Second
	}
	return &Client{
		base: NormalizeURL(base),
		opts: opts,
		http: &http.Client{
			Timeout:   opts.Timeout,
			Transport: &http.Transport{TLSClientConfig: opts.TLS, MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second},
		},
	}
}

// closeIdle closes the client's idle connections.
func (c *Client) closeIdle() { c.http.CloseIdleConnections() }

// NormalizeURL turns "host:port" into "http://host:port" and drops a
// trailing slash.
func NormalizeURL(base string) string {
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return strings.TrimRight(base, "/")
}

// Base is the URL this client talks to.
func (c *Client) Base() string { return c.base }

func (c *Client) with(base string) *Client {
	cc := *c
	cc.base = NormalizeURL(base)
	return &cc
}

// RaftStatus reads /raft/status.
func (c *Client) RaftStatus(ctx context.Context) (RaftStatus, error) {
	var out RaftStatus
	err := c.do(ctx, http.MethodGet, "/raft/status", nil, "", &out)
	return out, err
}

// Cluster reads the full replicated State (/raft/state).
func (c *Client) Cluster(ctx context.Context) (raftstore.State, error) {
	var out raftstore.State
	err := c.do(ctx, http.MethodGet, "/raft/state", nil, "", &out)
	return out, err
}

// Apply commits cmd through this member, which forwards it to the leader.
func (c *Client) Apply(ctx context.Context, cmd raftstore.Command) (raftstore.ApplyResult, error) {
	return c.apply(ctx, cmd, false)
}

func (c *Client) apply(ctx context.Context, cmd raftstore.Command, forwarded bool) (raftstore.ApplyResult, error) {
	data, err := raftstore.Encode(cmd)
	if err != nil {
		return raftstore.ApplyResult{}, err
	}
	hdr := ""
	if forwarded {
		hdr = forwardedHeader
	}
	var out ApplyResponse
	if err := c.do(ctx, http.MethodPost, "/raft/apply", data, hdr, &out); err != nil {
		return raftstore.ApplyResult{}, err
	}
	return raftstore.ApplyResult{Index: out.Index, Err: errorFromWire(out.Code, out.Error)}, nil
}

// JoinResponse answers POST /raft/join.
type JoinResponse struct {
	// Index is the Raft index the joiner must have applied before it asks
	// to become a voter.
	Index    uint64 `json:"index"`
	LeaderID string `json:"leader_id"`
}

// Join asks the cluster to add (or promote) a node, following "not leader"
// answers to the leader.
func (c *Client) Join(ctx context.Context, req raftstore.JoinRequest) (JoinResponse, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return JoinResponse{}, fmt.Errorf("encode join request: %w", err)
	}
	var out JoinResponse
	err = c.followLeader(ctx, func(cc *Client) error {
		return cc.do(ctx, http.MethodPost, "/raft/join", body, "", &out)
	})
	return out, err
}

// Leave removes member id from the cluster, following "not leader" answers.
func (c *Client) Leave(ctx context.Context, id string) error {
	body, err := json.Marshal(LeaveRequest{ID: id, Actor: "cli"})
	if err != nil {
		return fmt.Errorf("encode leave request: %w", err)
	}
	return c.followLeader(ctx, func(cc *Client) error {
		return cc.do(ctx, http.MethodPost, "/raft/leave", body, "", nil)
	})
}

// TransferLeadership asks the Raft leader to hand leadership to another
// voter (following "not leader" answers to the leader).
func (c *Client) TransferLeadership(ctx context.Context) error {
	return c.followLeader(ctx, func(cc *Client) error {
		return cc.do(ctx, http.MethodPost, "/raft/transfer", []byte("{}"), "", nil)
	})
}

// Snapshot downloads an audit export (GET /snapshot).
func (c *Client) Snapshot(ctx context.Context) ([]byte, error) {
	var raw []byte
	if err := c.do(ctx, http.MethodGet, "/snapshot", nil, "", &raw); err != nil {
		return nil, err
	}
	return raw, nil
}

// followLeader runs call against this member and, while the answer is "not
// leader", against the leader it names (waiting briefly when none is known,
// e.g. during an election or a leadership transfer).
func (c *Client) followLeader(ctx context.Context, call func(*Client) error) error {
	cur := c
	for hop := 0; ; hop++ {
		err := call(cur)
		var le *leaderError
		if !errors.As(err, &le) || hop >= maxRedirects {
			return err
		}
		if le.leaderAPI != "" && NormalizeURL(le.leaderAPI) != cur.base {
			cur = c.with(le.leaderAPI)
			continue
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up waiting for a leader: %v)", err, ctx.Err())
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// leaderError is a "not leader" answer with the leader's API address.
type leaderError struct {
	err       error
	leaderAPI string
}

func (e *leaderError) Error() string {
	if e.leaderAPI == "" {
		return e.err.Error()
	}
	return fmt.Sprintf("%v (leader api %s)", e.err, e.leaderAPI)
}
func (e *leaderError) Unwrap() error { return e.err }

func (c *Client) do(ctx context.Context, method, path string, body []byte, flagHeader string, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	internal := strings.HasPrefix(path, "/raft/") || path == "/snapshot" || path == "/backup/endpoint" || path == rotatePath
	switch {
	case internal && c.opts.Token != "":
		req.Header.Set("Authorization", "Bearer "+c.opts.Token)
	case !internal && c.opts.Username != "":
		req.SetBasicAuth(c.opts.Username, c.opts.Password)
	}
	if flagHeader != "" {
		req.Header.Set(flagHeader, "1")
	}
	if body != nil {
		ct := "application/json"
		if internal {
			ct = "application/octet-stream"
		}
		req.Header.Set("Content-Type", ct)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s%s: %w", method, c.base, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s%s: read answer: %w", method, c.base, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var we wireError
		_ = json.Unmarshal(data, &we)
		err := statusError(resp.StatusCode, we)
		if errors.Is(err, raftstore.ErrNotLeader) || errors.Is(err, ErrNoLeader) {
			return &leaderError{err: err, leaderAPI: we.LeaderAPI}
		}
		return fmt.Errorf("%s %s%s: %w", method, c.base, path, err)
	}
	switch o := out.(type) {
	case nil:
		return nil
	case *[]byte:
		*o = data
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s%s: decode answer: %w", method, c.base, path, err)
	}
	return nil
}

// With returns a client for another member's API with the same options.
func (c *Client) With(base string) *Client { return c.with(strings.TrimSuffix(base, "/patroni")) }

// get reads a public JSON endpoint into a T.
func get[T any](ctx context.Context, c *Client, path string) (T, error) {
	var out T
	err := c.do(ctx, http.MethodGet, path, nil, "", &out)
	return out, err
}

// BackupEndpoint reads the member's /backup/endpoint into out (an
// internal endpoint: it needs the cluster token or a peer certificate).
func (c *Client) BackupEndpoint(ctx context.Context, out any) error {
	return c.do(ctx, http.MethodGet, "/backup/endpoint", nil, "", out)
}

// Archive reads /archive: the member's WAL archiving statistics.
func (c *Client) Archive(ctx context.Context) (failover.ArchiveStats, error) {
	return get[failover.ArchiveStats](ctx, c, "/archive")
}

// Reachable reports whether the member's API answers at all (any HTTP
// status): the path its renewals travel (a follower forwards commands to
// the Raft leader's API) works. The coordinator asks it before the fast
// path treats a holder that Raft's heartbeats miss as lost.
func (c *Client) Reachable(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/liveness", nil)
	if err != nil {
		return fmt.Errorf("probe %s: %w", c.base, err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("probe %s: %w", c.base, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	return resp.Body.Close()
}

// ClusterView reads /cluster.
func (c *Client) ClusterView(ctx context.Context) (ClusterView, error) {
	return get[ClusterView](ctx, c, "/cluster")
}

// MemberStatus reads /patroni (this member's status).
func (c *Client) MemberStatus(ctx context.Context) (MemberStatus, error) {
	return get[MemberStatus](ctx, c, "/patroni")
}

// History reads /history: the newest raftstore.MaxHistory events, oldest
// first.
func (c *Client) History(ctx context.Context) ([]raftstore.Event, error) {
	return get[[]raftstore.Event](ctx, c, "/history")
}

// Config reads /config.
func (c *Client) Config(ctx context.Context) (ConfigDoc, error) {
	return get[ConfigDoc](ctx, c, "/config")
}

// PatchConfig sends a JSON merge patch to PATCH /config.
func (c *Client) PatchConfig(ctx context.Context, patch []byte) (ConfigDoc, error) {
	var out ConfigDoc
	err := c.do(ctx, http.MethodPatch, "/config", patch, "", &out)
	return out, err
}

// Post sends an admin request (path such as "/restart") with body v
// (nil for none) and returns the server's message.
func (c *Client) Post(ctx context.Context, method, path string, v any) (Message, error) {
	var body []byte
	if v != nil {
		var err error
		if body, err = json.Marshal(v); err != nil {
			return Message{}, err
		}
	}
	var out Message
	err := c.do(ctx, method, path, body, "", &out)
	return out, err
}
