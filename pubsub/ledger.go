package pubsub

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/pmhq/pm"
)

// ErrClaimLost is returned (wrapped) by Ledger.Complete when the claim had
// expired or been taken over: the response was not stored.
var ErrClaimLost = errors.New("pubsub: idempotency claim no longer held")

// LedgerConfig configures a Ledger.
type LedgerConfig struct {
	// Redis stores the ledger; required. The ledger does not close it.
	// OpTimeout bounds every call through its context, so give the client
	// ContextTimeoutEnabled: without it go-redis honours the deadline while
	// dialing and retrying but not while reading a reply from a hung server.
	Redis redis.UniversalClient
	// Prefix starts every key. Zero means "pm:".
	Prefix string
	// TTL is how long a stored response is replayed. Zero means 1h.
	TTL time.Duration
	// PendingTTL is the lease of a running request's claim: the ledger
	// renews it every third of it while the request runs, so it bounds how
	// long the claim of a request whose node died blocks retries. Zero
	// means 3s.
	PendingTTL time.Duration
	// PollInterval is how often Claim looks again while another attempt of
	// the request runs. Zero means 25ms.
	PollInterval time.Duration
	// OpTimeout bounds each Redis call, so that a dead Redis degrades
	// requests quickly. Zero means 250ms.
	OpTimeout time.Duration
	// Logger gets warnings. Nil discards them.
	Logger *slog.Logger
	// Registerer gets the pm_idempotency_* metrics. Nil registers them
	// nowhere.
	Registerer prometheus.Registerer
}

// Defaults of LedgerConfig.
const (
	DefaultLedgerTTL    = time.Hour
	DefaultPendingTTL   = 3 * time.Second
	DefaultPollInterval = 25 * time.Millisecond
	DefaultOpTimeout    = 250 * time.Millisecond
)

// Values stored under a ledger key: a state, the request's digest, and the
// claim token or the record of the outcome.
const (
	pendingPrefix = "p:" // + digest + ":" + claim token, while the request runs
	donePrefix    = "d:" // + digest + ":" + record, once it has finished
)

func pendingValue(digest, token string) string { return pendingPrefix + digest + ":" + token }

// splitValue splits a stored value into its digest and the rest; done says
// whether it holds a finished request's record.
func splitValue(v string) (done bool, digest, rest string) {
	body, done := strings.CutPrefix(v, donePrefix)
	if !done {
		body = strings.TrimPrefix(v, pendingPrefix)
	}
	digest, rest, _ = strings.Cut(body, ":")
	return done, digest, rest
}

// Ledger remembers the responses of mutating requests in Redis, so that a
// repeated request is answered on any node without running again. It
// implements node.Idempotency and is safe for concurrent use.
type Ledger struct {
	rdb        redis.UniversalClient
	prefix     string
	ttl        time.Duration
	pendingTTL time.Duration
	poll       time.Duration
	opTimeout  time.Duration
	log        *slog.Logger
	m          *ledgerMetrics
	complete   *redis.Script
	release    *redis.Script
	renew      *redis.Script

	mu     sync.Mutex
	leases map[string]chan struct{} // key+token → closed to stop its renewal
	closed bool
	wg     sync.WaitGroup // one per renewal goroutine
}

// NewLedger returns a ledger on cfg.Redis.
func NewLedger(cfg LedgerConfig) (*Ledger, error) {
	if cfg.Redis == nil {
		return nil, errors.New("pubsub: LedgerConfig.Redis is required")
	}
	l := &Ledger{
		rdb:        cfg.Redis,
		prefix:     cmp.Or(cfg.Prefix, DefaultPrefix),
		ttl:        cmp.Or(cfg.TTL, DefaultLedgerTTL),
		pendingTTL: cmp.Or(cfg.PendingTTL, DefaultPendingTTL),
		poll:       cmp.Or(cfg.PollInterval, DefaultPollInterval),
		opTimeout:  cmp.Or(cfg.OpTimeout, DefaultOpTimeout),
		log:        cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler)),
		// Set the response only while the key still holds our claim.
		complete: redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0`),
		// Delete the key only while it still holds our claim.
		release: redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`),
		// Extend the claim's lease only while the key still holds it.
		renew: redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`),
		leases: make(map[string]chan struct{}),
	}
	if l.ttl < 0 || l.pendingTTL < 0 || l.poll < 0 || l.opTimeout < 0 {
		return nil, errors.New("pubsub: LedgerConfig durations must not be negative")
	}
	if !contextTimeouts(cfg.Redis) {
		l.log.Warn("pubsub: the Redis client has ContextTimeoutEnabled off; the ledger's OpTimeout will not cut a hung read short")
	}
	m, err := newLedgerMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	l.m = m
	return l, nil
}

// Claim reserves the request's key and returns a token proving the claim. If
// the request has a stored record, Claim returns it as replay instead. If the
// key is held by a request with another digest (a message_id reused for
// something else), Claim returns a VALIDATION_ERROR *pm.Error on message_id. If
// another attempt of the request is still running, Claim waits up to wait
// for its response (or for its claim to go away, and then claims) and
// otherwise returns an UNAVAILABLE *pm.Error. Any other error means Redis is
// out of reach; the caller proceeds without the ledger.
func (l *Ledger) Claim(ctx context.Context, key pm.RequestKey, wait time.Duration) (token string, replay []byte, err error) {
	k, err := l.key(key)
	if err != nil {
		return "", nil, err
	}
	token, err = newToken()
	if err != nil {
		return "", nil, err
	}
	deadline := time.Now().Add(wait)
	for {
		old, err := l.setNXGet(ctx, k, pendingValue(key.Digest, token))
		if errors.Is(err, redis.Nil) {
			l.m.claimed.Inc()
			l.hold(k, pendingValue(key.Digest, token))
			return token, nil, nil
		}
		if err != nil {
			l.m.errors.WithLabelValues("claim").Inc()
			return "", nil, fmt.Errorf("pubsub: idempotency claim %s: %w", k, err)
		}
		// Held: a response, or another attempt still running.
		retryAfter := l.pendingTTL
		for {
			done, digest, rest := splitValue(old)
			if digest != key.Digest {
				l.m.reused.Inc()
				return "", nil, reused(key.MessageID)
			}
			if done {
				l.m.replayed.Inc()
				return "", []byte(rest), nil
			}
			left := time.Until(deadline)
			if left <= 0 || !sleep(ctx, min(l.poll, left)) {
				l.m.inFlight.Inc()
				return "", nil, busy(retryAfter)
			}
			var found bool
			old, retryAfter, found, err = l.peek(ctx, k)
			if err != nil {
				// We know an attempt is running: refuse rather than
				// let the caller run the request a second time.
				l.m.errors.WithLabelValues("claim").Inc()
				l.m.inFlight.Inc()
				return "", nil, fmt.Errorf("%w (ledger: %v)", busy(time.Second), err)
			}
			if !found {
				break // finished without a response, or expired: claim again
			}
		}
	}
}

// Complete stores record as the request's outcome for TTL, if the claim is
// still token's; otherwise it returns an error wrapping ErrClaimLost.
func (l *Ledger) Complete(ctx context.Context, key pm.RequestKey, token string, record []byte) error {
	k, err := l.key(key)
	if err != nil {
		return err
	}
	l.unhold(k, pendingValue(key.Digest, token))
	val := append([]byte(donePrefix+key.Digest+":"), record...)
	ctx, cancel := context.WithTimeout(ctx, l.opTimeout)
	defer cancel()
	n, err := l.complete.Run(ctx, l.rdb, []string{k}, pendingValue(key.Digest, token), val, l.ttl.Milliseconds()).Int()
	if err != nil {
		l.m.errors.WithLabelValues("complete").Inc()
		return fmt.Errorf("pubsub: idempotency complete %s: %w", k, err)
	}
	if n == 0 {
		l.m.lost.Inc()
		return fmt.Errorf("pubsub: idempotency complete %s: %w", k, ErrClaimLost)
	}
	return nil
}

// Release gives up token's claim without a response, so that a retry runs
// the request again. A claim that is no longer token's is left alone.
func (l *Ledger) Release(ctx context.Context, key pm.RequestKey, token string) error {
	k, err := l.key(key)
	if err != nil {
		return err
	}
	l.unhold(k, pendingValue(key.Digest, token))
	ctx, cancel := context.WithTimeout(ctx, l.opTimeout)
	defer cancel()
	if err := l.release.Run(ctx, l.rdb, []string{k}, pendingValue(key.Digest, token)).Err(); err != nil {
		l.m.errors.WithLabelValues("release").Inc()
		return fmt.Errorf("pubsub: idempotency release %s: %w", k, err)
	}
	return nil
}

// hold renews the lease of a claim (the key holding the pending value)
// every third of PendingTTL until unhold, Close, or the claim is found lost.
func (l *Ledger) hold(k, pending string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	stop := make(chan struct{})
	l.leases[k+pending] = stop
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		tick := time.NewTicker(l.pendingTTL / 3)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), l.opTimeout)
			n, err := l.renew.Run(ctx, l.rdb, []string{k}, pending, l.pendingTTL.Milliseconds()).Int()
			cancel()
			switch {
			case err != nil:
				l.m.errors.WithLabelValues("renew").Inc()
			case n == 0:
				return // expired or taken over; Complete will say so
			}
		}
	}()
}

// unhold stops renewing a claim's lease.
func (l *Ledger) unhold(k, pending string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if stop, ok := l.leases[k+pending]; ok {
		close(stop)
		delete(l.leases, k+pending)
	}
}

// Close stops renewing the leases of claims still held (they expire after
// PendingTTL) and waits for the renewals to end. Safe to call more than once.
func (l *Ledger) Close() error {
	l.mu.Lock()
	l.closed = true
	for key, stop := range l.leases {
		close(stop)
		delete(l.leases, key)
	}
	l.mu.Unlock()
	l.wg.Wait()
	return nil
}

// setNXGet is SET k v NX GET PX PendingTTL: it claims an absent key
// (answering redis.Nil) or returns what the key holds.
func (l *Ledger) setNXGet(ctx context.Context, k, v string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, l.opTimeout)
	defer cancel()
	return l.rdb.SetArgs(ctx, k, v, redis.SetArgs{Mode: "NX", Get: true, TTL: l.pendingTTL}).Result()
}

// peek reads the key's value and remaining time to live.
func (l *Ledger) peek(ctx context.Context, k string) (val string, ttl time.Duration, found bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, l.opTimeout)
	defer cancel()
	var get *redis.StringCmd
	var pttl *redis.DurationCmd
	_, _ = l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		get = p.Get(ctx, k)
		pttl = p.PTTL(ctx, k)
		return nil
	})
	val, err = get.Result()
	switch {
	case errors.Is(err, redis.Nil):
		return "", 0, false, nil
	case err != nil:
		return "", 0, false, err
	}
	return val, pttl.Val(), true, nil
}

// key names the request's key: <prefix>idem:<tenant>:<user>:<message_id>.
func (l *Ledger) key(k pm.RequestKey) (string, error) {
	if !pm.ValidTenant(k.Tenant) {
		return "", fmt.Errorf("pubsub: idempotency key: invalid tenant %q", k.Tenant)
	}
	if k.MessageID == "" || len(k.MessageID) > pm.MessageIDMaxBytes {
		return "", fmt.Errorf("pubsub: idempotency key: message id must have 1..%d bytes", pm.MessageIDMaxBytes)
	}
	if len(k.Digest) > maxDigestBytes || strings.Contains(k.Digest, ":") {
		return "", fmt.Errorf("pubsub: idempotency key: digest must have at most %d bytes and no colon", maxDigestBytes)
	}
	return l.prefix + "idem:" + k.Tenant + ":" + k.User.String() + ":" + k.MessageID, nil
}

// maxDigestBytes bounds RequestKey.Digest (a hex SHA-256 has 64).
const maxDigestBytes = 128

// reused is Claim's answer to a message_id that another request holds.
func reused(messageID string) *pm.Error {
	return &pm.Error{
		Code:  pm.EValidation,
		Field: "message_id",
		Message: "message_id " + strconv.Quote(messageID) + " was already used for a different request; " +
			"give every request its own message_id (a UUID), and reuse one only to retry the same request",
	}
}

// busy is Claim's answer while another attempt of the request runs.
func busy(retryAfter time.Duration) *pm.Error {
	return &pm.Error{
		Code:             pm.EUnavailable,
		Message:          "the same request is still being processed; retry",
		RetryAfterMillis: min(max(retryAfter, 100*time.Millisecond), time.Second).Milliseconds(),
	}
}

func newToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("pubsub: claim token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// sleep waits d or until ctx ends (reporting false).
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// contextTimeouts reports whether the client lets context deadlines bound
// socket reads (true when it cannot tell).
func contextTimeouts(c redis.UniversalClient) bool {
	switch c := c.(type) {
	case *redis.Client:
		return c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled
	}
	return true
}
