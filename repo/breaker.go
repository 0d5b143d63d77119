package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
)

// Defaults of the circuit breaker settings in Config.
const (
	DefaultBreakerFailures = 5
	DefaultBreakerOpen     = 5 * time.Second
	DefaultBreakerProbes   = 1
)

// minRetryAfter is the smallest retry hint of a refusal by the breaker: in
// half-open state the probes are under way and the next may be admitted at
// any moment.
const minRetryAfter = 100 * time.Millisecond

// CircuitOpenError is the cause of the UNAVAILABLE error an operation gets
// without trying the database, because the breaker is open (or half-open
// with its probes under way). RetryAfter is the time until the breaker lets
// a probe through.
type CircuitOpenError struct {
	RetryAfter time.Duration
}

// Error implements the error interface.
func (e *CircuitOpenError) Error() string {
	return fmt.Sprintf("database circuit breaker open: next probe in %s", e.RetryAfter.Round(time.Millisecond))
}

// breaker stands between the store and Postgres: after Failures consecutive
// infrastructure failures (see infraFailure) it opens, and for the open
// duration every operation fails at once with a *CircuitOpenError instead
// of waiting for a connection. After it, the breaker is half-open: it lets
// Probes operations through, and closes once they all succeed, or opens
// again at the first failure. The probes are ordinary operations (readiness
// checks included), so it closes by itself once anything asks.
//
// An operation's outcome is what its acquire and first round trip showed:
// that the database answered (a success, whatever the answer), that it is
// out of reach (a failure), or nothing, when the caller's context ended
// first. A long load thus never holds a half-open probe slot.
type breaker struct {
	cb *gobreaker.TwoStepCircuitBreaker[struct{}] // nil: disabled

	mu      sync.Mutex
	probeAt time.Time // when the open state ends

	rejections  prometheus.Counter
	transitions *prometheus.CounterVec
}

// newBreaker makes a breaker; failures < 0 disables it (every operation
// tries the database).
func newBreaker(failures int, open time.Duration, probes int) *breaker {
	b := &breaker{
		rejections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pm_db_breaker_rejections_total",
			Help: "Database operations refused at once (UNAVAILABLE) because the circuit breaker was open or its probes were under way.",
		}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pm_db_breaker_transitions_total",
			Help: "State changes of the database circuit breaker, by from and to state (closed, half_open, open).",
		}, []string{"from", "to"}),
	}
	// Every transition the breaker can make is exported from the start, at
	// 0: rate() and increase() over a series that appears at its first
	// increment miss that increment, and alerts would stay silent.
	for _, t := range [][2]gobreaker.State{
		{gobreaker.StateClosed, gobreaker.StateOpen}, {gobreaker.StateOpen, gobreaker.StateHalfOpen},
		{gobreaker.StateHalfOpen, gobreaker.StateClosed}, {gobreaker.StateHalfOpen, gobreaker.StateOpen},
	} {
		b.transitions.WithLabelValues(stateName(t[0]), stateName(t[1]))
	}
	if failures < 0 {
		return b
	}
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        "postgres",
		MaxRequests: uint32(probes),
		Timeout:     open,
		IsExcluded:  func(err error) bool { return errors.Is(err, errNotCounted) },
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= uint32(failures) },
		// Called with the breaker's lock held: only record.
		OnStateChange: func(_ string, from, to gobreaker.State) {
			if to == gobreaker.StateOpen {
				b.mu.Lock()
				b.probeAt = time.Now().Add(open)
				b.mu.Unlock()
			}
			b.transitions.WithLabelValues(stateName(from), stateName(to)).Inc()
		},
	})
	return b
}

// stateName is a breaker state as a metric label.
func stateName(s gobreaker.State) string {
	switch s {
	case gobreaker.StateClosed:
		return "closed"
	case gobreaker.StateHalfOpen:
		return "half_open"
	}
	return "open"
}

// state returns the breaker's state; a disabled breaker is always closed.
func (b *breaker) state() gobreaker.State {
	if b.cb == nil {
		return gobreaker.StateClosed
	}
	return b.cb.State()
}

// allow admits an operation, or refuses it with a *CircuitOpenError. An
// admitted operation reports its outcome to done, once: ctx is the
// caller's, err what the database access gave (nil: it answered).
func (b *breaker) allow() (done func(ctx context.Context, err error), err error) {
	if b.cb == nil {
		return func(context.Context, error) {}, nil
	}
	report, err := b.cb.Allow()
	if err != nil {
		b.rejections.Inc()
		b.mu.Lock()
		wait := time.Until(b.probeAt)
		b.mu.Unlock()
		return nil, &CircuitOpenError{RetryAfter: max(wait, minRetryAfter)}
	}
	var once sync.Once
	return func(ctx context.Context, err error) {
		once.Do(func() { report(outcome(ctx, err)) })
	}, nil
}

// errNotCounted is the outcome of an operation that proved nothing about
// the database: gobreaker counts it as neither success nor failure.
var errNotCounted = errors.New("not counted")

// outcome maps what an operation saw to what the breaker counts: nil for
// a database that answered, err for one out of reach, errNotCounted when
// the caller cancelled, or its deadline passed with no sign of the network
// failing.
func outcome(ctx context.Context, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(ctx.Err(), context.Canceled):
		return errNotCounted
	case infraFailure(err):
		return err
	case ctx.Err() != nil:
		return errNotCounted
	}
	return nil
}

// infraFailure reports whether err shows that the database is out of reach
// (refused or reset connections, failed dials, a pool that found no
// connection within the acquire timeout, a server shutting down or not yet
// accepting connections), as opposed to an answer it gave (a constraint, a
// conflict, a statement timeout) or a caller that gave up.
func infraFailure(err error) bool {
	if errors.Is(err, errAcquireTimeout) {
		return true
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case sqlAdminShutdown, sqlCrashShutdown, sqlCannotConnectNow, sqlTooManyConnections:
			return true
		}
		return strings.HasPrefix(pgErr.Code, sqlClassConnection)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false // the caller's context, not the network
	}
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}
