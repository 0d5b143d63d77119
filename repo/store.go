// Package repo is pm's Postgres layer: work items, project members, the
// activity log and the per-project revision counters, read and written with
// pgx. It also applies the schema (Migrate).
//
// Every operation runs in one transaction that first selects the actor's
// tenant for row-level security (in the round trip of its BEGIN), checks the
// actor's project role, and turns every failure a client may see into a
// *pm.Error: UNAUTHORIZED, NOT_FOUND, CONFLICT, DELETE_BLOCKED,
// VALIDATION_ERROR, and UNAVAILABLE when the database is slow or down. Other
// errors are unexpected and wrapped with context.
//
// # Database protection
//
// Every operation passes a circuit breaker on its way to Postgres. After
// Config.BreakerFailures consecutive infrastructure failures (refused or
// reset connections, failed dials, acquire timeouts, a server that shuts
// down or does not accept connections yet), operations fail at once with
// UNAVAILABLE, their retry hint the time until the breaker lets a probe
// through, instead of each waiting for a timeout. Answers of the database,
// however unwelcome (conflicts, constraints, row-level security, statement
// timeouts), and callers that give up never count as failures.
//
// # Writes to a project
//
// Every work item write bumps its project's counter row in project_revisions
// and holds that row lock until it commits, so the project's writes commit in
// revision order and revisions have no gaps (a rollback undoes the bump).
// The counter row is locked last, by the statement that writes, whose
// transaction's COMMIT rides in the same round trip (commitWith): the lock is
// held for one statement and the commit, not for the client's round trips.
// The checks a write depends on take row locks of their own before it, so
// that what they found still holds when the write commits:
//
//  1. project_members rows, in user id order: FOR SHARE the writer's (its
//     role) and a new assignee's (still a member); FOR UPDATE the one row a
//     membership change changes, so that it waits for that member's writes
//     in flight, and they for it (and then see it);
//  2. the work_items row of the parent, FOR SHARE, when an item is created
//     under it or moved to it, so that a delete of the parent waits for the
//     new child and counts it, or the child sees the parent deleted;
//  3. the work_items row written, FOR NO KEY UPDATE; a delete counts the
//     live children in a later statement, which sees every child whose
//     creator held the row FOR SHARE;
//  4. last, the project_revisions row: bumped by an item write, locked FOR
//     UPDATE without a bump by a membership change, whose activity entry
//     records the revision it saw.
//
// Every write path takes its locks in this order, each step in a statement
// of its own (a pipelined batch, so still one round trip): a statement's
// snapshot predates the locks it waits for, so only a later statement sees
// what the lock holders committed. Items lock parents before children, and
// a child ranks below its parent, so no two item writes wait for each other
// in a cycle. A transaction that holds the counter row takes no further lock
// that another one can hold (only rows it inserts itself, whose keys another
// insert waits for only after taking the counter row too), so the holder
// always runs to its commit: none of these locks can deadlock. Creating a
// project inserts its counter row first, then its item and its admin, all
// new rows no one else can lock before the commit.
package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pmhq/pm"
)

// Defaults of Config.
const (
	DefaultAcquireTimeout   = 2 * time.Second
	DefaultStatementTimeout = 5 * time.Second
	DefaultLoadPageRows     = 1000
	DefaultLoadPageBytes    = 1 << 20
)

const (
	// txAttempts bounds how often a transaction runs when Postgres aborts
	// it for a serialization failure or a deadlock.
	txAttempts = 4
	// rollbackTimeout bounds a rollback, which runs even when the caller's
	// context has ended.
	rollbackTimeout = 2 * time.Second
	// cancelDeadlineDelay is how long a query may keep its connection after
	// its context ends, waiting for the server to honour the cancel request,
	// before the connection is closed instead.
	cancelDeadlineDelay = 2 * time.Second
	// retryAfterMillis is the retry hint of UNAVAILABLE errors.
	retryAfterMillis = 1000
)

// ErrRLSBypass is returned by Open when the database role is a superuser or
// has BYPASSRLS, so that row-level security would not apply to it.
var ErrRLSBypass = errors.New("database role bypasses row-level security")

// errStoreClosed is the cause of UNAVAILABLE after Close.
var errStoreClosed = errors.New("store is closed")

// errRollback, returned by a transaction's function, rolls the transaction
// back and makes the operation succeed with what the function stored.
var errRollback = errors.New("roll back")

// Config configures Open.
type Config struct {
	// DatabaseURL is the pgx connection string (URL or key=value); required.
	// pool_* parameters in it configure the pool.
	DatabaseURL string
	// AcquireTimeout bounds the wait for a pooled connection, including
	// dialing a new one; past it an operation fails with UNAVAILABLE.
	// 0 means DefaultAcquireTimeout (2s).
	AcquireTimeout time.Duration
	// StatementTimeout is the server's statement_timeout for every
	// statement; a statement that runs longer fails with UNAVAILABLE.
	// 0 means DefaultStatementTimeout (5s).
	StatementTimeout time.Duration
	// MaxConns caps the pool's connections; 0 means pgx's default (the
	// larger of 4 and the number of CPUs, or pool_max_conns in DatabaseURL).
	MaxConns int32
	// LoadPageRows bounds the items of one page of StreamWorkItems, and so
	// what a load holds in memory at once. 0 means DefaultLoadPageRows (1000).
	LoadPageRows int
	// LoadPageBytes bounds the text (titles, descriptions, positions, plus
	// 256 bytes a row) of one page of StreamWorkItems; a page holds at least
	// one item, so it may overshoot by one. 0 means DefaultLoadPageBytes
	// (1 MiB).
	LoadPageBytes int
	// MaxConcurrentLoads bounds the StreamWorkItems reads that run at once;
	// more wait for a turn (within their context) instead of for a
	// connection. A load holds its connection while its caller takes the
	// pages, which a slow client can make long: the bound keeps connections
	// for writes. 0 means half the pool's connections, at least 1.
	MaxConcurrentLoads int
	// BreakerFailures is how many consecutive infrastructure failures open
	// the circuit breaker. 0 means DefaultBreakerFailures (5); negative
	// disables the breaker.
	BreakerFailures int
	// BreakerOpen is how long the open breaker refuses every operation
	// before it lets probes through. 0 means DefaultBreakerOpen (5s).
	BreakerOpen time.Duration
	// BreakerProbes is how many operations the half-open breaker lets
	// through, all of which must succeed for it to close. 0 means
	// DefaultBreakerProbes (1).
	BreakerProbes int
	// Registerer receives the pm_db_* metrics (the pool's statistics and the
	// breaker's state); nil registers them nowhere.
	Registerer prometheus.Registerer
	// AllowRLSBypass lets Open connect as a superuser or a BYPASSRLS role,
	// to which row-level security does not apply. For development only:
	// tenant isolation then rests on the queries alone. Open logs a warning.
	AllowRLSBypass bool
	// Logger receives warnings; nil discards them.
	Logger *slog.Logger
}

// Store is pm's Postgres store. It implements node.Store. Its methods are
// safe for concurrent use.
type Store struct {
	pool           *pgxpool.Pool
	acquireTimeout time.Duration
	pageRows       int
	pageBytes      int64
	loads          chan struct{} // a slot per running StreamWorkItems
	breaker        *breaker
	logger         *slog.Logger
	closed         atomic.Bool
}

// Open connects to Postgres and checks the connected role. It refuses a
// superuser or BYPASSRLS role (ErrRLSBypass) unless cfg.AllowRLSBypass is
// set. When the database cannot be reached it fails with UNAVAILABLE.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.AcquireTimeout <= 0 {
		cfg.AcquireTimeout = DefaultAcquireTimeout
	}
	if cfg.StatementTimeout <= 0 {
		cfg.StatementTimeout = DefaultStatementTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.LoadPageRows <= 0 {
		cfg.LoadPageRows = DefaultLoadPageRows
	}
	if cfg.LoadPageBytes <= 0 {
		cfg.LoadPageBytes = DefaultLoadPageBytes
	}
	if cfg.BreakerFailures == 0 {
		cfg.BreakerFailures = DefaultBreakerFailures
	}
	if cfg.BreakerOpen <= 0 {
		cfg.BreakerOpen = DefaultBreakerOpen
	}
	if cfg.BreakerProbes <= 0 {
		cfg.BreakerProbes = DefaultBreakerProbes
	}
	if cfg.MaxConns < 0 {
		return nil, fmt.Errorf("repo: MaxConns %d is negative", cfg.MaxConns)
	}
	poolConfig, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("repo: parse database URL: %w", err)
	}
	if cfg.MaxConns > 0 {
		poolConfig.MaxConns = cfg.MaxConns
	}
	if cfg.MaxConcurrentLoads <= 0 {
		cfg.MaxConcurrentLoads = max(1, int(poolConfig.MaxConns)/2)
	}
	cc := poolConfig.ConnConfig
	cc.RuntimeParams["statement_timeout"] = strconv.FormatInt(cfg.StatementTimeout.Milliseconds(), 10)
	if cc.RuntimeParams["application_name"] == "" {
		cc.RuntimeParams["application_name"] = "pm"
	}
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = cfg.AcquireTimeout
	}
	// On a cancelled context, ask the server to cancel the running query
	// (instead of only abandoning the connection while the query runs on).
	cc.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: cancelDeadlineDelay}
	}
	pool, err := pgxpool.NewWithConfig(ctx, poolConfig)
	if err != nil {
		return nil, fmt.Errorf("repo: create pool: %w", err)
	}
	s := &Store{
		pool: pool, acquireTimeout: cfg.AcquireTimeout, logger: cfg.Logger,
		pageRows: cfg.LoadPageRows, pageBytes: int64(cfg.LoadPageBytes),
		loads:   make(chan struct{}, cfg.MaxConcurrentLoads),
		breaker: newBreaker(cfg.BreakerFailures, cfg.BreakerOpen, cfg.BreakerProbes),
	}
	if err := s.register(cfg.Registerer); err != nil {
		pool.Close()
		return nil, fmt.Errorf("repo: register metrics: %w", err)
	}
	if err := s.checkRole(ctx, cfg.AllowRLSBypass); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// checkRole refuses a role that row-level security does not apply to.
func (s *Store) checkRole(ctx context.Context, allowBypass bool) error {
	conn, done, err := s.acquire(ctx)
	if err != nil {
		return fmt.Errorf("repo: open: %w", classify(err))
	}
	defer conn.Release()
	var (
		role             string
		super, bypassRLS bool
	)
	err = conn.QueryRow(ctx, `SELECT rolname, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user`).
		Scan(&role, &super, &bypassRLS)
	done(ctx, err)
	if err != nil {
		return fmt.Errorf("repo: open: check database role: %w", classify(err))
	}
	if !super && !bypassRLS {
		return nil
	}
	what := "a superuser"
	if !super {
		what = "a BYPASSRLS role"
	}
	if !allowBypass {
		return fmt.Errorf("repo: database role %q is %s: row-level security would not isolate tenants; "+
			"connect as a NOSUPERUSER NOBYPASSRLS role, or set the development-only override AllowRLSBypass: %w",
			role, what, ErrRLSBypass)
	}
	s.logger.Warn("DATABASE ROLE BYPASSES ROW-LEVEL SECURITY: tenant isolation rests on the queries alone; "+
		"allowed by AllowRLSBypass, which is for development only",
		"role", role, "superuser", super, "bypassrls", bypassRLS)
	return nil
}

// Close closes the pool's connections. Operations after Close fail with
// UNAVAILABLE. It is safe to call more than once.
func (s *Store) Close() {
	s.closed.Store(true)
	s.pool.Close()
}

// Ping checks that the database answers, within the acquire timeout. While
// the circuit breaker is open it fails at once (a *CircuitOpenError in the
// chain); after the open period it is one of the breaker's probes.
func (s *Store) Ping(ctx context.Context) error {
	conn, done, err := s.acquire(ctx)
	if err != nil {
		return fmt.Errorf("ping database: %w", classify(err))
	}
	defer conn.Release()
	err = conn.Ping(ctx)
	done(ctx, err)
	if err != nil {
		return fmt.Errorf("ping database: %w", classify(err))
	}
	return nil
}

// errAcquireTimeout is the cause of an acquire that found no connection
// within the acquire timeout.
var errAcquireTimeout = errors.New("no database connection")

// acquire takes a pooled connection through the circuit breaker, waiting at
// most the acquire timeout. The breaker may refuse at once, with a
// *CircuitOpenError. On success the caller reports to done, with its
// context, what its first round trip on the connection gave (done ignores
// later calls); a failed acquire has reported itself.
func (s *Store) acquire(ctx context.Context) (*pgxpool.Conn, func(context.Context, error), error) {
	if s.closed.Load() {
		return nil, nil, errStoreClosed
	}
	done, err := s.breaker.allow()
	if err != nil {
		return nil, nil, err
	}
	actx, cancel := context.WithTimeout(ctx, s.acquireTimeout)
	defer cancel()
	conn, err := s.pool.Acquire(actx)
	if err != nil {
		switch {
		case s.closed.Load():
			err = fmt.Errorf("%w: %w", errStoreClosed, err)
		case ctx.Err() == nil && actx.Err() != nil:
			err = fmt.Errorf("%w within %s: %w", errAcquireTimeout, s.acquireTimeout, err)
		default:
			err = fmt.Errorf("acquire database connection: %w", err)
		}
		done(ctx, err)
		return nil, nil, err
	}
	return conn, done, nil
}

// Transaction options.
var (
	readWrite = pgx.TxOptions{IsoLevel: pgx.ReadCommitted}
	readOnly  = pgx.TxOptions{IsoLevel: pgx.ReadCommitted, AccessMode: pgx.ReadOnly}
	snapshot  = pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}
)

// run runs fn in a transaction of tenant and commits it, retrying the whole
// transaction after a serialization failure or deadlock. When fn returns
// errRollback, run rolls back and returns nil. Errors come back wrapped in
// op, client-visible ones with a *pm.Error in their chain.
func (s *Store) run(ctx context.Context, op, tenant string, opts pgx.TxOptions, fn func(pgx.Tx) error) error {
	return s.runWhile(ctx, op, tenant, opts, nil, fn, nil)
}

// runLed is run with lead's queries in the transaction's first round trip:
// lead queues them (after the BEGIN and the tenant's selection) with
// callbacks that take their results (pgx.QueuedQuery.Query, QueryRow or
// Exec), and the callbacks run before fn. lead runs again for every attempt.
func (s *Store) runLed(ctx context.Context, op, tenant string, opts pgx.TxOptions, lead func(*pgx.Batch), fn func(pgx.Tx) error) error {
	return s.runWhile(ctx, op, tenant, opts, lead, fn, nil)
}

// runWhile is runLed, except that it runs the transaction again only while
// mayRetry, if not nil, says so: e.g. until part of the result has left.
func (s *Store) runWhile(ctx context.Context, op, tenant string, opts pgx.TxOptions, lead func(*pgx.Batch), fn func(pgx.Tx) error, mayRetry func() bool) error {
	if !pm.ValidTenant(tenant) {
		return fmt.Errorf("%s: %w", op, pm.Errorf(pm.EUnauthorized, "invalid tenant"))
	}
	for attempt := 1; ; attempt++ {
		err := s.attempt(ctx, tenant, opts, lead, fn)
		if err == nil || errors.Is(err, errRollback) {
			return nil
		}
		if attempt < txAttempts && retryable(err) && ctx.Err() == nil && (mayRetry == nil || mayRetry()) {
			s.logger.Debug("repo: retrying transaction", "op", op, "attempt", attempt, "error", err)
			backoff := time.Duration(attempt) * time.Duration(5+rand.IntN(20)) * time.Millisecond
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
				continue
			case <-ctx.Done():
				t.Stop()
			}
		}
		return fmt.Errorf("%s: %w", op, classify(err))
	}
}

// attempt runs the transaction once. Its first round trip carries the BEGIN,
// the tenant's selection and lead's queries; fn may end the transaction
// itself with commitWith, and attempt commits it otherwise.
func (s *Store) attempt(ctx context.Context, tenant string, opts pgx.TxOptions, lead func(*pgx.Batch), fn func(pgx.Tx) error) (err error) {
	conn, done, err := s.acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	defer func() { done(ctx, err) }() // unless the BEGIN's answer reported first
	b := &pgx.Batch{}
	b.BeginTx(opts)
	b.Queue(`SELECT set_config('app.tenant_id', $1, true)`, tenant)
	if lead != nil {
		lead(b)
	}
	br := conn.SendBatch(ctx, b)
	tx := br.Tx()
	pg := conn.Conn().PgConn()
	defer func() {
		if pg.TxStatus() == 'I' {
			return // committed, or never begun
		}
		// It runs even when ctx has ended, so that the connection goes back
		// to the pool clean.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
		defer cancel()
		_ = tx.Rollback(rctx)
	}()
	_, err = br.Exec()
	// The database answered, or not: enough for the breaker, and a long
	// transaction (a load) does not hold a half-open probe slot.
	done(ctx, err)
	if err != nil {
		_ = br.Close()
		return fmt.Errorf("begin: %w", err)
	}
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		return fmt.Errorf("select tenant: %w", err)
	}
	if err := br.Close(); err != nil { // runs lead's callbacks
		return err
	}
	if err := fn(tx); err != nil {
		return err
	}
	if pg.TxStatus() == 'I' {
		return nil // fn committed
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// commitWith sends b with a COMMIT behind it, in one round trip, and so ends
// the transaction: its locks go as soon as the server has run b, however
// long the client takes to read the answer. b's callbacks take its results.
// When a statement of b fails, the server skips the rest, the COMMIT too,
// and the transaction is rolled back. The server commits without waiting
// for the callbacks, so they must only take results (a failing one reports
// an error for a committed transaction); checks belong before commitWith.
func commitWith(ctx context.Context, tx pgx.Tx, b *pgx.Batch) error {
	b.Queue(`COMMIT`).Exec(func(tag pgconn.CommandTag) error {
		if tag.String() != "COMMIT" {
			return fmt.Errorf("commit: %w", pgx.ErrTxCommitRollback)
		}
		return nil
	})
	return tx.SendBatch(ctx, b).Close()
}

// SQLSTATE codes the store acts on.
const (
	sqlSerializationFailure = "40001"
	sqlDeadlockDetected     = "40P01"
	sqlQueryCanceled        = "57014" // statement_timeout, or a cancel request
	sqlTooManyConnections   = "53300"
	sqlAdminShutdown        = "57P01"
	sqlCrashShutdown        = "57P02"
	sqlCannotConnectNow     = "57P03"
	sqlLockNotAvailable     = "55P03"
	sqlUniqueViolation      = "23505"
	sqlClassConnection      = "08" // connection exceptions
)

// retryable reports whether err aborted a transaction that may succeed when run again.
func retryable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == sqlSerializationFailure || pgErr.Code == sqlDeadlockDetected
	}
	return false
}

// unavailable reports whether err means that the database is down, slow or
// out of reach, rather than that the request or the code is wrong.
func unavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, errStoreClosed) {
		return true
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return true // whatever the server said: no database, no login, not ready
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case sqlSerializationFailure, sqlDeadlockDetected, // after the retries
			sqlQueryCanceled, sqlTooManyConnections, sqlAdminShutdown, sqlCrashShutdown,
			sqlCannotConnectNow, sqlLockNotAvailable:
			return true
		}
		return strings.HasPrefix(pgErr.Code, sqlClassConnection)
	}
	var netErr net.Error
	return errors.As(err, &netErr) || pgconn.Timeout(err) ||
		pgconn.SafeToRetry(err) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

// classify returns err unchanged when it carries a *pm.Error or is
// unexpected, and joins an UNAVAILABLE *pm.Error to it when the database is
// out of reach, so that errors.As finds the *pm.Error and errors.Is the cause.
func classify(err error) error {
	if _, ok := errors.AsType[*pm.Error](err); ok {
		return err
	}
	if open, ok := errors.AsType[*CircuitOpenError](err); ok {
		return fmt.Errorf("%w: %w", &pm.Error{
			Code:             pm.EUnavailable,
			Message:          "database unavailable, retry",
			RetryAfterMillis: max(open.RetryAfter.Milliseconds(), 1),
		}, err)
	}
	if unavailable(err) {
		return fmt.Errorf("%w: %w", &pm.Error{
			Code:             pm.EUnavailable,
			Message:          "database unavailable, retry",
			RetryAfterMillis: retryAfterMillis,
		}, err)
	}
	return err
}

// notFound returns a NOT_FOUND *pm.Error that blames field.
func notFound(field, format string, args ...any) *pm.Error {
	return &pm.Error{Code: pm.ENotFound, Field: field, Message: fmt.Sprintf(format, args...)}
}

// requireRole checks that the actor's role in project allows need, and
// returns the role.
func requireRole(ctx context.Context, tx pgx.Tx, actor pm.Actor, project uuid.UUID, need pm.Role) (pm.Role, error) {
	var role string
	err := tx.QueryRow(ctx, `SELECT role FROM project_members
		WHERE tenant_id = $1 AND project_id = $2 AND user_id = $3`,
		actor.Tenant, project, actor.User).Scan(&role)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("read role: %w", err)
	}
	r := pm.Role(role)
	if err := checkRole(project, r, need); err != nil {
		return "", err
	}
	return r, nil
}

// checkRole fails with UNAUTHORIZED unless role r in project ("" for none)
// allows need.
func checkRole(project uuid.UUID, r, need pm.Role) error {
	if r.Allows(need) {
		return nil
	}
	if r == "" {
		return pm.Errorf(pm.EUnauthorized, "you are not a member of project %s", project)
	}
	return pm.Errorf(pm.EUnauthorized, "your role in project %s is %s; this needs %s", project, r, need)
}
