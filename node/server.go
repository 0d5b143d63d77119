// Package node is pm's WebSocket server: it authenticates clients at the
// upgrade, runs each connection (a reader, a request worker and a writer with
// a byte-bounded send queue), decodes and validates requests, authorizes and
// executes them through a Store, answers with the request's message_id,
// publishes committed changes through a Fanout, and enforces the limits
// (frame size, request rate, subscriptions, send queue; connections per node
// and the upgrade rate; through a Quota, connections and requests per tenant
// across the cluster). Given the browser board's
// built bundle, it serves the board at / too. It also serves the admin
// endpoints: /metrics, /healthz and /readyz.
package node

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/time/rate"
)

// Close codes the node sends; docs/protocol.md lists them for clients.
const (
	CloseGoingAway     = 1001 // the node shuts down: reconnect (to another node)
	ClosePolicy        = 1008 // the client kept sending while rate limited
	CloseTooBig        = 1009 // a frame exceeded the size limit
	CloseSlowConsumer  = 4000 // the send queue overflowed: reconnect, then resync
	CloseTokenExpired  = 4500 // the token expired: get a new token before reconnecting
	closeReasonTooSlow = "slow consumer: reconnect and resync"
)

// Config configures a Server. Zero values take the documented defaults.
type Config struct {
	// NodeID names this node in logs. Several nodes may share a name (e.g.
	// the host name): subscriber ids come from a random instance id made
	// at each New, never from NodeID. Default: "node-" and that instance id.
	NodeID string
	// Store is the database. Required.
	Store Store
	// Fanout carries events between nodes. Required.
	Fanout Fanout
	// Idempotency remembers responses of mutating requests; nil disables
	// idempotency by message_id (client-chosen ids still make creates safe).
	Idempotency Idempotency
	// Auth verifies tokens. Required.
	Auth *Authenticator
	// AllowedOrigins lists browser origins allowed to connect ("*": any).
	// Empty: only pages served from the host the browser connects to (the
	// node's address, or a proxy's that passes the Host header on).
	AllowedOrigins []string
	// Assets is the browser board's built bundle (index.html, and assets/
	// with content-hashed names), served at / with a strict
	// Content-Security-Policy. Nil: no board, / is 404.
	Assets fs.FS
	// BoardTokenURL, when set, is where the board fetches fresh tokens
	// (with the browser's credentials, e.g. an identity provider's session
	// cookie) to refresh its connection silently: an http(s) URL, whose
	// origin the page's connect-src then admits, or a path on the board's
	// own host. Empty: the board asks the person for a new token before
	// theirs expires.
	BoardTokenURL string
	// MaxFrameBytes is the largest frame a client may send; a larger one
	// closes its connection with 1009. Default 256 KiB.
	MaxFrameBytes int
	// SendQueueBytes bounds a connection's queued outgoing bytes; beyond it
	// the connection is closed with 4000. Default 4 MiB.
	SendQueueBytes int
	// RequestTimeout bounds one request's work. Default 10s.
	RequestTimeout time.Duration
	// IdempotencyWait is how long a duplicate of a still-running request
	// waits for its response. Default 2s.
	IdempotencyWait time.Duration
	// PublishTimeout bounds publishing one committed event. Default 500ms.
	PublishTimeout time.Duration
	// PingInterval is how often the node pings an idle client; a client
	// silent for two intervals is dropped. Default 25s.
	PingInterval time.Duration
	// WriteTimeout bounds a write to a client (the frames queued when the
	// flusher ran): each write has at least half of it, at most all of it
	// (see extendWriteDeadline). Default 10s.
	WriteTimeout time.Duration
	// RatePerSecond and RateBurst limit requests per connection; beyond
	// them requests get RATE_LIMITED. Defaults 50 and 100; negative: no limit.
	RatePerSecond float64
	RateBurst     int
	// MaxSubscriptions bounds the projects one connection subscribes to.
	// Default 100.
	MaxSubscriptions int
	// MaxConnections caps this node's connections (those being upgraded
	// count); beyond it upgrades get HTTP 503. Zero: no cap.
	MaxConnections int
	// ConnectRate and ConnectBurst limit this node's upgrades (a token
	// bucket), so that the reconnect storm after a node dies is spread out
	// while existing connections keep their share of the CPU; beyond them
	// upgrades get HTTP 503 with Retry-After. Default 500 a second; the
	// burst defaults to the rate. A negative ConnectRate: no limit.
	ConnectRate  float64
	ConnectBurst int
	// Quota keeps the limits that span the cluster. Required when
	// TenantMaxConnections or TenantRatePerSecond is set.
	Quota Quota
	// TenantMaxConnections caps a tenant's connections across the cluster;
	// beyond it upgrades get HTTP 429. Zero: no cap.
	TenantMaxConnections int
	// TenantRatePerSecond and TenantRateBurst limit a tenant's requests
	// across the cluster, beside each connection's own limit; beyond them
	// requests get RATE_LIMITED with retry_after_ms. Zero rate: no limit;
	// zero burst: the rate.
	TenantRatePerSecond int
	TenantRateBurst     int
	// Checks are readiness checks run by /readyz besides the Store's Ping.
	// Only what the node cannot serve without belongs here.
	Checks map[string]func(context.Context) error
	// Logger receives one line per request and the node's events. Default: slog.Default().
	Logger *slog.Logger
	// Registerer receives the node's metrics. Default: a new registry.
	Registerer prometheus.Registerer
	// Gatherer serves /metrics. Default: prometheus.DefaultGatherer when
	// Registerer is nil, else nothing is served unless set.
	Gatherer prometheus.Gatherer
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// TracerProvider makes the spans of requests, their database
	// transactions and their publishes (see docs/operations.md). Nil means
	// the no-op provider: no spans, but a client's trace context still
	// travels with the events its requests publish.
	TracerProvider trace.TracerProvider
}

func (c *Config) setDefaults() error {
	if c.Store == nil || c.Fanout == nil || c.Auth == nil {
		return errors.New("node: Store, Fanout and Auth are required")
	}
	setDefault(&c.MaxFrameBytes, 256<<10)
	setDefault(&c.SendQueueBytes, 4<<20)
	setDefault(&c.RequestTimeout, 10*time.Second)
	setDefault(&c.IdempotencyWait, 2*time.Second)
	setDefault(&c.PublishTimeout, 500*time.Millisecond)
	setDefault(&c.PingInterval, 25*time.Second)
	setDefault(&c.WriteTimeout, 10*time.Second)
	setDefault(&c.RatePerSecond, 50)
	setDefault(&c.RateBurst, 100)
	setDefault(&c.MaxSubscriptions, 100)
	setDefault(&c.ConnectRate, 500)
	setDefault(&c.ConnectBurst, max(int(c.ConnectRate), 1))
	setDefault(&c.TenantRateBurst, c.TenantRatePerSecond)
	if c.MaxConnections < 0 || c.TenantMaxConnections < 0 || c.TenantRatePerSecond < 0 || c.TenantRateBurst < 0 || c.ConnectBurst < 0 {
		return errors.New("node: connection caps, tenant rate and bursts must not be negative")
	}
	if c.Quota == nil && (c.TenantMaxConnections > 0 || c.TenantRatePerSecond > 0) {
		return errors.New("node: TenantMaxConnections and TenantRatePerSecond need a Quota")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registerer == nil {
		reg := prometheus.NewRegistry()
		c.Registerer, c.Gatherer = reg, reg
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.TracerProvider == nil {
		c.TracerProvider = noop.NewTracerProvider()
	} else {
		c.Store = tracedStore{Store: c.Store, tracer: c.TracerProvider.Tracer(tracerName)}
	}
	return nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Server accepts WebSocket clients and serves their requests.
type Server struct {
	cfg      Config
	log      *slog.Logger
	metrics  *metrics
	tracer   trace.Tracer
	upgrader *gws.Upgrader
	board    *board        // nil without Config.Assets
	connect  *rate.Limiter // upgrades; nil: no limit

	failOpenLogged atomic.Int64 // unix ns of the last fail-open log line

	ctx    context.Context // ends at Shutdown; parent of every request's context
	cancel context.CancelFunc

	// instance is unique per process start (per New): it prefixes the
	// subscriber ids of the node's connections.
	instance string

	mu       sync.Mutex
	sessions map[*session]struct{}
	draining bool
	seq      atomic.Uint64
	wg       sync.WaitGroup // one per running connection

	shutdownOnce sync.Once
}

// New makes a Server.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	var b *board
	if cfg.Assets != nil {
		var err error
		if b, err = newBoard(cfg.Assets, cfg.BoardTokenURL); err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("node: register metrics: %w", err)
	}
	instance := newInstanceID()
	if cfg.NodeID == "" {
		cfg.NodeID = "node-" + instance
	}
	s := &Server{
		instance: instance,
		cfg:      cfg,
		log:      cfg.Logger,
		metrics:  m,
		tracer:   cfg.TracerProvider.Tracer(tracerName),
		board:    b,
		sessions: make(map[*session]struct{}),
	}
	if cfg.ConnectRate > 0 {
		s.connect = rate.NewLimiter(rate.Limit(cfg.ConnectRate), cfg.ConnectBurst)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.upgrader = gws.NewUpgrader(&events{}, &gws.ServerOption{
		ReadMaxPayloadSize: cfg.MaxFrameBytes,
		HandshakeTimeout:   5 * time.Second,
		Recovery:           gws.Recovery,
		Logger:             gwsLogger{s.log},
	})
	return s, nil
}

// Handler serves the client endpoints: GET /ws, and with Config.Assets the
// board: GET (and HEAD) / and the bundle's files.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", s.serveWS)
	if s.board != nil {
		mux.Handle("GET /", s.board)
	}
	return mux
}

// AdminHandler serves /metrics, /healthz (the process is up), /readyz
// (the node accepts clients and its dependencies answer) and the runtime
// profiles under /debug/pprof/.
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	if s.cfg.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", s.serveReady)
	// Profiles for operators; the admin port is never exposed to clients.
	// A CPU profile or trace must end within the admin server's write
	// timeout (pm-node: 30 s).
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return mux
}

func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	draining := s.draining
	s.mu.Unlock()
	if draining {
		http.Error(w, "draining", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	checks := map[string]func(context.Context) error{"postgres": s.cfg.Store.Ping}
	for name, check := range s.cfg.Checks {
		checks[name] = check
	}
	for name, check := range checks {
		if err := check(ctx); err != nil {
			http.Error(w, name+": "+err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	_, _ = w.Write([]byte("ready\n"))
}

// serveWS authenticates, checks the origin and the connection limits, and
// upgrades. Refusals happen before the upgrade, as plain HTTP with a
// plain-text reason: 401 for a bad token, 403 for an origin, 503 while
// draining, when the node is full or takes too many new connections at
// once, 429 when the tenant is at its cap (both with Retry-After).
func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	if !originAllowed(r, s.cfg.AllowedOrigins) {
		s.metrics.upgrades.WithLabelValues("forbidden_origin").Inc()
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return
	}
	token := bearerToken(r)
	if token == "" {
		s.metrics.upgrades.WithLabelValues("unauthorized").Inc()
		w.Header().Set("WWW-Authenticate", `Bearer realm="pm"`)
		http.Error(w, "missing bearer token", http.StatusUnauthorized)
		return
	}
	id, err := s.cfg.Auth.Verify(token)
	if err != nil {
		s.metrics.upgrades.WithLabelValues("unauthorized").Inc()
		s.log.Info("refused token", "remote", r.RemoteAddr, "err", err)
		w.Header().Set("WWW-Authenticate", `Bearer realm="pm", error="invalid_token"`)
		http.Error(w, "invalid token", http.StatusUnauthorized)
		return
	}
	sess := s.newSession(id)
	switch s.track(sess) {
	case trackDraining:
		sess.cancel()
		s.metrics.upgrades.WithLabelValues("draining").Inc()
		http.Error(w, "node is shutting down", http.StatusServiceUnavailable)
		return
	case trackFull:
		sess.cancel()
		s.refuse(w, refuseNodeFull)
		return
	}
	if s.connect != nil && !s.connect.Allow() {
		sess.cancel()
		s.untrack(sess)
		s.refuse(w, refuseConnectRate)
		return
	}
	ok, counted := s.admitTenant(r.Context(), id.Actor.Tenant)
	sess.counted = counted
	if !ok {
		sess.cancel()
		s.untrack(sess)
		s.refuse(w, refuseTenantFull)
		return
	}
	nc, err := hijack(w)
	if err == nil {
		var conn *gws.Conn
		if conn, err = s.upgrader.UpgradeFromConn(nc, bufio.NewReaderSize(nc, readBufferSize), r); err == nil {
			s.metrics.upgrades.WithLabelValues("ok").Inc()
			conn.Session().Store(sessionKey, sess)
			sess.nc = nc
			// The connection is served on a goroutine of its own, and this
			// one returns: the HTTP server's goroutine, its stack grown by
			// the request, and its buffers (8 KiB) are released, not held
			// for the life of the WebSocket.
			go s.serveConn(sess, conn)
			return
		}
		nc.linger()
	}
	sess.cancel()
	s.untrack(sess)
	s.metrics.upgrades.WithLabelValues("failed").Inc()
	s.log.Info("upgrade failed", "remote", r.RemoteAddr, "err", err)
}

// serveConn serves an upgraded connection until it closes.
func (s *Server) serveConn(sess *session, conn *gws.Conn) {
	defer s.untrack(sess)
	defer sess.cancel()
	defer sess.nc.linger()
	sess.run(conn)
}

// readBufferSize is the size of a WebSocket's read buffer, held for the
// connection's life. Requests are small (about 150 bytes); a larger frame
// is read straight into its own buffer, past this one.
const readBufferSize = 1 << 10

// hijack takes the connection over from the HTTP server, as a lingerConn:
// gws closes a WebSocket gracefully through it.
func hijack(w http.ResponseWriter) (*lingerConn, error) {
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, err
	}
	// Bytes the client sent after its request, read ahead by the HTTP server.
	var readAhead []byte
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		readAhead = append([]byte(nil), b...)
	}
	return newLingerConn(c, readAhead), nil
}

// Results of track.
const (
	tracked = iota
	trackDraining
	trackFull // MaxConnections reached
)

// track registers a session unless the server is draining or full.
func (s *Server) track(sess *session) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.draining:
		return trackDraining
	case s.cfg.MaxConnections > 0 && len(s.sessions) >= s.cfg.MaxConnections:
		return trackFull
	}
	s.sessions[sess] = struct{}{}
	s.wg.Add(1)
	return tracked
}

// untrack forgets a tracked session, and gives its slot of the tenant's
// cap back.
func (s *Server) untrack(sess *session) {
	if sess.counted {
		s.cfg.Quota.ReleaseConnection(sess.actor.Tenant)
	}
	s.mu.Lock()
	delete(s.sessions, sess)
	s.mu.Unlock()
	s.wg.Done()
}

// Shutdown stops accepting connections, closes every connection with 1001
// (going away), a bounded number at a time, and waits for them to finish or
// for ctx to end. The caller shuts the http.Server down first or after; it
// does not close hijacked WebSockets. Safe to call more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		s.mu.Lock()
		s.draining = true
		all := make([]*session, 0, len(s.sessions))
		for sess := range s.sessions {
			all = append(all, sess)
		}
		s.mu.Unlock()
		s.log.Info("shutting down", "connections", len(all))
		const batch = 64
		for i, sess := range all {
			sess.close(CloseGoingAway, "node shutting down")
			if i%batch == batch-1 {
				time.Sleep(10 * time.Millisecond) // let clients spread their reconnects
			}
		}
	})
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
		s.cancel() // abort requests still running
		return fmt.Errorf("node: shutdown: %w", ctx.Err())
	}
}

// newInstanceID returns 64 random bits in base 32: ids that no other node
// start shares, whatever the operator named the nodes.
func newInstanceID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// gwsLogger routes gws's internal errors (e.g. recovered panics) to slog.
type gwsLogger struct{ log *slog.Logger }

func (l gwsLogger) Error(v ...any) { l.log.Error("websocket", "detail", fmt.Sprint(v...)) }
