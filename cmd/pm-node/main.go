// Command pm-node is the pm server: a stateless WebSocket node that serves
// clients at /ws and the browser board at /, stores work items in Postgres
// and fans events out to the other nodes through Redis. Every setting is a flag with a matching PM_*
// environment variable; run with no arguments it serves with the defaults.
// `pm-node migrate`, with the same flags and environment, applies pending
// migrations and exits: a deployment's migration step, before nodes that run
// with PM_MIGRATE=false.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/pmhq/pm/node"
	"github.com/pmhq/pm/pubsub"
	"github.com/pmhq/pm/quota"
	"github.com/pmhq/pm/repo"
	"github.com/pmhq/pm/tracing"
	"github.com/pmhq/pm/web"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "pm-node:", err)
		os.Exit(1)
	}
}

// config is every setting of pm-node.
type config struct {
	DatabaseURL      string
	RedisURL         string
	RedisCluster     bool
	RedisPrefix      string
	JWTSecret        string
	JWKSURL          string
	JWTAudience      string
	JWTIssuer        string
	JWTMaxLifetime   time.Duration
	ListenAddr       string
	AdminAddr        string
	Migrate          bool
	NodeID           string
	AllowedOrigins   string
	BoardTokenURL    string
	AllowRLSBypass   bool
	DBAcquireTimeout time.Duration
	DBStatementTime  time.Duration
	DBMaxConns       int
	DBMaxLoads       int
	BreakerFailures  int
	BreakerOpen      time.Duration
	BreakerProbes    int
	RequestTimeout   time.Duration
	MaxFrameBytes    int
	SendQueueBytes   int
	RatePerSecond    float64
	RateBurst        int
	MaxConns         int
	TenantMaxConns   int
	ConnectRate      float64
	ConnectBurst     int
	TenantRate       int
	TenantBurst      int
	ConnCountTTL     time.Duration
	IdempotencyTTL   time.Duration
	HeadCheck        time.Duration
	ShutdownTimeout  time.Duration
	HTTPIdleTimeout  time.Duration
	HTTPReadTimeout  time.Duration
	HTTPMaxHeader    int
	LogLevel         string
	LogFormat        string
}

// parseConfig reads flags, each defaulting to its PM_* environment variable.
func parseConfig(args []string, getenv func(string) string, output io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("pm-node", flag.ContinueOnError)
	fs.SetOutput(output)
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	var errs []error
	str := func(p *string, name, envName, def, usage string) {
		fs.StringVar(p, name, env(envName, def), usage+" ("+envName+")")
	}
	boolean := func(p *bool, name, envName string, def bool, usage string) {
		v, err := strconv.ParseBool(env(envName, strconv.FormatBool(def)))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", envName, err))
		}
		fs.BoolVar(p, name, v, usage+" ("+envName+")")
	}
	duration := func(p *time.Duration, name, envName string, def time.Duration, usage string) {
		v, err := time.ParseDuration(env(envName, def.String()))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", envName, err))
		}
		fs.DurationVar(p, name, v, usage+" ("+envName+")")
	}
	integer := func(p *int, name, envName string, def int, usage string) {
		v, err := strconv.Atoi(env(envName, strconv.Itoa(def)))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", envName, err))
		}
		fs.IntVar(p, name, v, usage+" ("+envName+")")
	}
	float := func(p *float64, name, envName string, def float64, usage string) {
		v, err := strconv.ParseFloat(env(envName, strconv.FormatFloat(def, 'g', -1, 64)), 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", envName, err))
		}
		fs.Float64Var(p, name, v, usage+" ("+envName+")")
	}

	str(&c.DatabaseURL, "database-url", "PM_DATABASE_URL", "postgres://pm_app:pm_app@127.0.0.1:5432/pm?sslmode=disable", "Postgres URL; the role must not be a superuser or BYPASSRLS")
	str(&c.RedisURL, "redis-url", "PM_REDIS_URL", "redis://127.0.0.1:6379/0", "Redis URL (with -redis-cluster: redis://host:port?addr=host2:port2…)")
	boolean(&c.RedisCluster, "redis-cluster", "PM_REDIS_CLUSTER", false, "Redis Cluster with sharded pub/sub (SSUBSCRIBE/SPUBLISH)")
	str(&c.RedisPrefix, "redis-prefix", "PM_REDIS_PREFIX", "pm:", "prefix of every Redis key and channel")
	str(&c.JWTSecret, "jwt-secret", "PM_JWT_SECRET", "", "HS256 secret for client tokens")
	str(&c.JWKSURL, "jwt-jwks-url", "PM_JWT_JWKS_URL", "", "JWKS URL of an identity provider, for RS256/ES256 tokens")
	str(&c.JWTAudience, "jwt-audience", "PM_JWT_AUDIENCE", "", "required aud claim, if set")
	str(&c.JWTIssuer, "jwt-issuer", "PM_JWT_ISSUER", "", "required iss claim, if set")
	duration(&c.JWTMaxLifetime, "jwt-max-lifetime", "PM_JWT_MAX_LIFETIME", 24*time.Hour, "longest a token may be valid (exp - iat); negative: no cap")
	str(&c.ListenAddr, "listen-addr", "PM_LISTEN_ADDR", ":8080", "client address (GET /ws, the board at /)")
	str(&c.AdminAddr, "admin-addr", "PM_ADMIN_ADDR", ":9090", "admin address (/metrics, /healthz, /readyz, /debug/pprof/)")
	boolean(&c.Migrate, "migrate", "PM_MIGRATE", true, "apply pending migrations at start (safe with several nodes)")
	str(&c.NodeID, "node-id", "PM_NODE_ID", "", "name of this node in logs (default: host name)")
	str(&c.AllowedOrigins, "allowed-origins", "PM_ALLOWED_ORIGINS", "", "comma-separated browser origins allowed to connect, * for any (default: same host only)")
	str(&c.BoardTokenURL, "board-token-url", "PM_BOARD_TOKEN_URL", "", "where the board fetches fresh tokens, with the browser's credentials, to refresh silently: an http(s) URL or a path on the board's host (default: the board asks the person)")
	boolean(&c.AllowRLSBypass, "allow-rls-bypass", "PM_ALLOW_RLS_BYPASS", false, "DEVELOPMENT ONLY: start even as a superuser/BYPASSRLS role, which row-level security does not bind")
	duration(&c.DBAcquireTimeout, "db-acquire-timeout", "PM_DB_ACQUIRE_TIMEOUT", 2*time.Second, "longest wait for a database connection")
	duration(&c.DBStatementTime, "db-statement-timeout", "PM_DB_STATEMENT_TIMEOUT", 5*time.Second, "longest a statement may run")
	integer(&c.DBMaxConns, "db-max-conns", "PM_DB_MAX_CONNS", 0, "database pool size (0: pgx default)")
	integer(&c.DBMaxLoads, "db-max-loads", "PM_DB_MAX_LOADS", 0, "project loads streaming at once, each holding a database connection (0: half the pool)")
	integer(&c.BreakerFailures, "db-breaker-failures", "PM_DB_BREAKER_FAILURES", repo.DefaultBreakerFailures, "consecutive database failures (refused, reset, timed-out connections) that open the circuit breaker (negative: no breaker)")
	duration(&c.BreakerOpen, "db-breaker-open", "PM_DB_BREAKER_OPEN", repo.DefaultBreakerOpen, "how long the open breaker fails database operations at once (UNAVAILABLE) before it probes")
	integer(&c.BreakerProbes, "db-breaker-probes", "PM_DB_BREAKER_PROBES", repo.DefaultBreakerProbes, "operations the half-open breaker lets through; all must succeed for it to close")
	duration(&c.RequestTimeout, "request-timeout", "PM_REQUEST_TIMEOUT", 10*time.Second, "longest one request may take")
	integer(&c.MaxFrameBytes, "max-frame-bytes", "PM_MAX_FRAME_BYTES", 256<<10, "largest frame a client may send (larger: close 1009)")
	integer(&c.SendQueueBytes, "send-queue-bytes", "PM_SEND_QUEUE_BYTES", 4<<20, "bytes queued for one client before it is dropped as a slow consumer (close 4000)")
	float(&c.RatePerSecond, "rate-per-second", "PM_RATE_PER_SECOND", 50, "requests per second per connection (negative: unlimited)")
	integer(&c.RateBurst, "rate-burst", "PM_RATE_BURST", 100, "request burst per connection")
	integer(&c.MaxConns, "max-connections", "PM_MAX_CONNECTIONS", defaultMaxConnections(openFileLimit()), "connections this node holds at most; beyond: HTTP 503 at the upgrade (0: unlimited; default: the open-file limit less a reserve for Postgres, Redis and probes)")
	integer(&c.TenantMaxConns, "tenant-max-connections", "PM_TENANT_MAX_CONNECTIONS", 0, "connections one tenant holds at most across the cluster; beyond: HTTP 429 at the upgrade (0: unlimited)")
	float(&c.ConnectRate, "connect-rate", "PM_CONNECT_RATE", 500, "upgrades per second this node accepts; beyond: HTTP 503 with Retry-After (negative: unlimited)")
	integer(&c.ConnectBurst, "connect-burst", "PM_CONNECT_BURST", 0, "upgrade burst (0: the connect rate)")
	integer(&c.TenantRate, "tenant-rate-per-second", "PM_TENANT_RATE_PER_SECOND", 0, "requests per second of one tenant across the cluster; beyond: RATE_LIMITED (0: unlimited)")
	integer(&c.TenantBurst, "tenant-rate-burst", "PM_TENANT_RATE_BURST", 0, "request burst of one tenant across the cluster (0: the tenant rate)")
	duration(&c.ConnCountTTL, "connection-count-ttl", "PM_CONNECTION_COUNT_TTL", quota.DefaultTTL, "how long a node's connection counts in Redis outlive it (heartbeat: every third)")
	duration(&c.IdempotencyTTL, "idempotency-ttl", "PM_IDEMPOTENCY_TTL", time.Hour, "how long responses are kept for replays of a message_id")
	duration(&c.HeadCheck, "head-check-interval", "PM_HEAD_CHECK_INTERVAL", 30*time.Second, "how often subscribed projects' revisions are compared with Postgres to catch lost events")
	duration(&c.ShutdownTimeout, "shutdown-timeout", "PM_SHUTDOWN_TIMEOUT", 15*time.Second, "longest graceful shutdown")
	duration(&c.HTTPIdleTimeout, "http-idle-timeout", "PM_HTTP_IDLE_TIMEOUT", 30*time.Second, "both listeners: how long a kept-alive HTTP connection may wait for its next request")
	duration(&c.HTTPReadTimeout, "http-read-timeout", "PM_HTTP_READ_TIMEOUT", 10*time.Second, "both listeners: a request's headers (and body) must arrive within this")
	integer(&c.HTTPMaxHeader, "http-max-header-bytes", "PM_HTTP_MAX_HEADER_BYTES", 32<<10, "both listeners: largest request line and headers (an access_token query parameter counts); larger: HTTP 431")
	str(&c.LogLevel, "log-level", "PM_LOG_LEVEL", "info", "debug, info, warn or error")
	str(&c.LogFormat, "log-format", "PM_LOG_FORMAT", "json", "json or text")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if len(errs) > 0 {
		return c, errors.Join(errs...)
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	for name, d := range map[string]time.Duration{"PM_HTTP_IDLE_TIMEOUT": c.HTTPIdleTimeout, "PM_HTTP_READ_TIMEOUT": c.HTTPReadTimeout} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s: %v is not positive", name, d))
		}
	}
	for name, n := range map[string]int{"PM_MAX_CONNECTIONS": c.MaxConns, "PM_TENANT_MAX_CONNECTIONS": c.TenantMaxConns,
		"PM_CONNECT_BURST": c.ConnectBurst, "PM_TENANT_RATE_PER_SECOND": c.TenantRate, "PM_TENANT_RATE_BURST": c.TenantBurst} {
		if n < 0 {
			errs = append(errs, fmt.Errorf("%s: %d is negative", name, n))
		}
	}
	if c.ConnectRate == 0 {
		errs = append(errs, errors.New("PM_CONNECT_RATE: 0 would refuse every connection (negative: unlimited)"))
	}
	if c.ConnCountTTL <= 0 {
		errs = append(errs, fmt.Errorf("PM_CONNECTION_COUNT_TTL: %v is not positive", c.ConnCountTTL))
	}
	if c.BreakerFailures == 0 {
		errs = append(errs, errors.New("PM_DB_BREAKER_FAILURES: 0 would open at once; a negative value disables the breaker"))
	}
	if c.BreakerOpen <= 0 {
		errs = append(errs, fmt.Errorf("PM_DB_BREAKER_OPEN: %v is not positive", c.BreakerOpen))
	}
	if c.BreakerProbes <= 0 {
		errs = append(errs, fmt.Errorf("PM_DB_BREAKER_PROBES: %d is not positive", c.BreakerProbes))
	}
	if c.HTTPMaxHeader <= 0 {
		errs = append(errs, fmt.Errorf("PM_HTTP_MAX_HEADER_BYTES: %d is not positive", c.HTTPMaxHeader))
	}
	if len(errs) > 0 {
		return c, errors.Join(errs...)
	}
	if c.NodeID == "" {
		c.NodeID, _ = os.Hostname()
	}
	return c, nil
}

// defaultMaxConnections is PM_MAX_CONNECTIONS when it is not set: the
// open-file limit less a reserve (a twentieth, at least 256) for the
// database pool, Redis, the listeners and the probes, so that a full node
// refuses upgrades with 503 rather than failing its own dials with EMFILE;
// 0 (unlimited) when the limit is unknown or leaves no room.
func defaultMaxConnections(fileLimit int) int {
	return max(fileLimit-max(256, fileLimit/20), 0)
}

func newLogger(c config, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fmt.Errorf("log level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.LogFormat {
	case "json":
		return slog.New(tracing.LogHandler(slog.NewJSONHandler(w, opts))), nil
	case "text":
		return slog.New(tracing.LogHandler(slog.NewTextHandler(w, opts))), nil
	}
	return nil, fmt.Errorf("log format %q: want json or text", c.LogFormat)
}

// Redis client settings: fail fast when Redis is out of reach, so that a
// node without Redis serves degraded rather than slowly. The defaults would
// dial five times per attempt, 100 ms apart, with a 5 s dial timeout.
const (
	redisDialTimeout   = time.Second
	redisDialerRetries = 1
)

func newRedis(c config) (redis.UniversalClient, error) {
	if c.RedisCluster {
		opts, err := redis.ParseClusterURL(c.RedisURL)
		if err != nil {
			return nil, fmt.Errorf("redis cluster URL: %w", err)
		}
		opts.ContextTimeoutEnabled = true // request deadlines bound Redis calls
		opts.DialTimeout, opts.DialerRetries = redisDialTimeout, redisDialerRetries
		return redis.NewClusterClient(opts), nil
	}
	opts, err := redis.ParseURL(c.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("redis URL: %w", err)
	}
	opts.ContextTimeoutEnabled = true // request deadlines bound Redis calls
	opts.DialTimeout, opts.DialerRetries = redisDialTimeout, redisDialerRetries
	return redis.NewClient(opts), nil
}

// redisLogger routes go-redis's own messages (e.g. failed dials) into the
// node's structured log.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, "redis client", "detail", fmt.Sprintf(format, v...))
}

// configure reads the settings and makes the node's logger. After -h it
// returns a nil config and no error: the usage is printed, nothing runs.
func configure(args []string, getenv func(string) string, stderr io.Writer) (*config, *slog.Logger, error) {
	cfg, err := parseConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	log, err := newLogger(cfg, stderr)
	if err != nil {
		return nil, nil, err
	}
	return &cfg, log.With("node", cfg.NodeID), nil
}

// migrateTimeout bounds applying the migrations, waiting for another
// process's migration lock included.
const migrateTimeout = 5 * time.Minute

// migrate applies pending migrations and returns: `pm-node migrate`.
func migrate(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, log, err := configure(args, getenv, stderr)
	if cfg == nil {
		return err // nil after -h
	}
	mctx, cancel := context.WithTimeout(ctx, migrateTimeout)
	defer cancel()
	if err := repo.Migrate(mctx, cfg.DatabaseURL, log); err != nil {
		return err // says "migrate: …"
	}
	log.Info("migrations applied")
	return nil
}

// run starts the node and serves until ctx ends, then shuts down gracefully.
// ready, if not nil, receives the bound client and admin addresses. With
// "migrate" as its first argument it applies the migrations and returns.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer, ready func(client, admin net.Addr)) error {
	if len(args) > 0 && args[0] == "migrate" {
		return migrate(ctx, args[1:], getenv, stderr)
	}
	cfg, log, err := configure(args, getenv, stderr)
	if cfg == nil {
		return err // nil after -h
	}

	// Tracing is off unless an OTLP endpoint is set: node and pubsub then
	// get no provider and use the no-op one.
	var tp trace.TracerProvider
	if tracing.Enabled(getenv) {
		sdk, err := tracing.New(ctx, getenv, cfg.NodeID)
		if err != nil {
			return err
		}
		otel.SetErrorHandler(tracing.ErrorHandler(log)) // export errors into the JSON log
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), tracingFlushTimeout)
			defer cancel()
			if err := sdk.Shutdown(sctx); err != nil {
				log.Warn("tracing: spans not exported at shutdown", "err", err)
			}
		}()
		tp = sdk
		log.Info("tracing: exporting spans by OTLP/HTTP")
	}

	if cfg.Migrate {
		mctx, cancel := context.WithTimeout(ctx, migrateTimeout)
		err := repo.Migrate(mctx, cfg.DatabaseURL, log)
		cancel()
		if err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	store, err := repo.Open(ctx, repo.Config{
		DatabaseURL:        cfg.DatabaseURL,
		AcquireTimeout:     cfg.DBAcquireTimeout,
		StatementTimeout:   cfg.DBStatementTime,
		MaxConns:           int32(cfg.DBMaxConns),
		MaxConcurrentLoads: cfg.DBMaxLoads,
		BreakerFailures:    cfg.BreakerFailures,
		BreakerOpen:        cfg.BreakerOpen,
		BreakerProbes:      cfg.BreakerProbes,
		AllowRLSBypass:     cfg.AllowRLSBypass,
		Registerer:         reg,
		Logger:             log,
	})
	if errors.Is(err, repo.ErrRLSBypass) {
		return fmt.Errorf("%w (PM_ALLOW_RLS_BYPASS=true, or -allow-rls-bypass, starts anyway: development only)", err)
	}
	if err != nil {
		return err
	}
	defer store.Close()

	redis.SetLogger(redisLogger{log}) // go-redis has one process-wide logger
	rdb, err := newRedis(*cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()

	hub, err := pubsub.NewHub(pubsub.HubConfig{
		Redis:             rdb,
		Prefix:            cfg.RedisPrefix,
		Sharded:           cfg.RedisCluster,
		HeadCheckInterval: cfg.HeadCheck,
		Heads:             store,
		Logger:            log,
		Registerer:        reg,
		TracerProvider:    tp,
	})
	if err != nil {
		return err
	}
	defer hub.Close()
	ledger, err := pubsub.NewLedger(pubsub.LedgerConfig{
		Redis:      rdb,
		Prefix:     cfg.RedisPrefix,
		TTL:        cfg.IdempotencyTTL,
		Logger:     log,
		Registerer: reg,
	})
	if err != nil {
		return err
	}
	defer ledger.Close()
	limits, err := quota.New(quota.Config{
		Redis:      rdb,
		Prefix:     cfg.RedisPrefix,
		TTL:        cfg.ConnCountTTL,
		Logger:     log,
		Registerer: reg,
	})
	if err != nil {
		return err
	}
	defer limits.Close()

	authCtx, stopAuth := context.WithCancel(context.Background())
	defer stopAuth()
	auth, err := node.NewAuthenticator(authCtx, node.AuthConfig{
		HMACSecret:  []byte(cfg.JWTSecret),
		JWKSURL:     cfg.JWKSURL,
		Audience:    cfg.JWTAudience,
		Issuer:      cfg.JWTIssuer,
		MaxLifetime: cfg.JWTMaxLifetime,
	})
	if err != nil {
		return err
	}
	if cfg.JWTAudience == "" || cfg.JWTIssuer == "" {
		log.Warn("tokens are accepted for any audience or issuer; in production set PM_JWT_AUDIENCE and PM_JWT_ISSUER",
			"audience", cfg.JWTAudience, "issuer", cfg.JWTIssuer)
	}
	var origins []string
	for o := range strings.SplitSeq(cfg.AllowedOrigins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			origins = append(origins, o)
		}
	}
	srv, err := node.New(node.Config{
		NodeID:         cfg.NodeID,
		Store:          store,
		Fanout:         hub,
		Idempotency:    ledger,
		Auth:           auth,
		AllowedOrigins: origins,
		Assets:         web.Dist,
		BoardTokenURL:  cfg.BoardTokenURL,
		MaxFrameBytes:  cfg.MaxFrameBytes,
		SendQueueBytes: cfg.SendQueueBytes,
		RequestTimeout: cfg.RequestTimeout,
		RatePerSecond:  cfg.RatePerSecond,
		RateBurst:      cfg.RateBurst,

		MaxConnections:       cfg.MaxConns,
		ConnectRate:          cfg.ConnectRate,
		ConnectBurst:         cfg.ConnectBurst,
		Quota:                limits,
		TenantMaxConnections: cfg.TenantMaxConns,
		TenantRatePerSecond:  cfg.TenantRate,
		TenantRateBurst:      cfg.TenantBurst,
		// Readiness is Postgres only: without Redis a node still serves
		// (writes commit; cross-node events and replays wait for Redis), and
		// failing every node's check at once would turn a Redis blip into
		// an outage.
		Logger:         log,
		Registerer:     reg,
		Gatherer:       reg,
		TracerProvider: tp,
	})
	if err != nil {
		return err
	}

	clientLn, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return err
	}
	adminLn, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		clientLn.Close()
		return err
	}
	clientHTTP := newHTTPServer(srv.Handler(), *cfg)
	adminHTTP := newHTTPServer(srv.AdminHandler(), *cfg)
	errc := make(chan error, 2)
	go func() { errc <- clientHTTP.Serve(clientLn) }()
	go func() { errc <- adminHTTP.Serve(adminLn) }()
	log.Info("serving", "listen_addr", clientLn.Addr().String(), "admin_addr", adminLn.Addr().String())
	if ready != nil {
		ready(clientLn.Addr(), adminLn.Addr())
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	log.Info("stopping")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	_ = clientHTTP.Shutdown(sctx) // stops accepting; WebSockets are hijacked and closed by srv
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("connections still open at shutdown deadline", "err", err)
	}
	_ = adminHTTP.Shutdown(sctx)
	for range 2 - boolToInt(serveErr != nil) {
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) && serveErr == nil {
			serveErr = err
		}
	}
	if errors.Is(serveErr, http.ErrServerClosed) {
		serveErr = nil
	}
	log.Info("stopped")
	return serveErr
}

// Limits of both listeners that are not settings: no endpoint takes a
// request body, and every response is small.
const (
	tracingFlushTimeout = 5 * time.Second // exporting the last spans at shutdown
	maxRequestBodyBytes = 64 << 10
	httpWriteTimeout    = 30 * time.Second
)

// newHTTPServer serves h with the limits that keep a connection from holding
// the node's resources without a request it serves: idle keep-alive
// connections close, slow or oversized requests are cut off. A WebSocket is
// exempt once upgraded (the node pings it and drops it when silent).
func newHTTPServer(h http.Handler, c config) *http.Server {
	return &http.Server{
		Handler:           limitBody(h, maxRequestBodyBytes),
		ReadHeaderTimeout: c.HTTPReadTimeout,
		ReadTimeout:       c.HTTPReadTimeout,
		WriteTimeout:      httpWriteTimeout,
		IdleTimeout:       c.HTTPIdleTimeout,
		MaxHeaderBytes:    c.HTTPMaxHeader,
	}
}

// limitBody answers 413 to a request that declares a body over limit, and
// closes its connection; an undeclared (chunked) body reads at most limit.
func limitBody(h http.Handler, limit int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			w.Header().Set("Connection", "close")
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		h.ServeHTTP(w, r)
	})
}

func boolToInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
