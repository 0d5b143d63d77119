// Package quota owns the cluster-wide limit state in Redis: how many
// connections each tenant holds on every live node (for the per-tenant
// connection cap) and each tenant's request budget (a GCRA rate limit). It
// implements node.Quota. The counts heal by themselves: each node keeps its
// own hash of counts with a TTL that its heartbeat refreshes, so the counts of
// a node that dies expire with it.
package quota

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// ErrUnavailable is returned (wrapped) while Redis is out of reach: the
// caller lets the connection or request through.
var ErrUnavailable = errors.New("quota: Redis out of reach")

// Config configures a Limiter.
type Config struct {
	// Redis keeps the counts; required. The Limiter does not close it. Give
	// the client ContextTimeoutEnabled, so OpTimeout cuts a hung read short.
	Redis redis.UniversalClient
	// Prefix starts every key. Zero means "pm:".
	Prefix string
	// TTL is how long a node's counts outlive its last heartbeat; the
	// heartbeat runs every third of it. Zero means 15s.
	TTL time.Duration
	// OpTimeout bounds each Redis call. Zero means 100ms.
	OpTimeout time.Duration
	// Backoff is how long after a failed call the Limiter answers
	// ErrUnavailable without asking Redis, so that a hung Redis costs one
	// OpTimeout per Backoff, not one per upgrade. Zero means 1s.
	Backoff time.Duration
	// Logger gets warnings. Nil discards them.
	Logger *slog.Logger
	// Registerer gets the pm_quota_* metrics. Nil registers them nowhere.
	Registerer prometheus.Registerer
}

// Defaults of Config.
const (
	DefaultPrefix    = "pm:"
	DefaultTTL       = 15 * time.Second
	DefaultOpTimeout = 100 * time.Millisecond
	DefaultBackoff   = time.Second
)

// Limiter counts connections per tenant across the nodes sharing a Redis and
// prefix, and meters each tenant's requests. It is safe for concurrent use.
//
// Keys (one hash tag, so that the keys of one admission share a Redis
// Cluster slot): <prefix>{conns}:<instance> is this node's hash of tenant →
// connections, <prefix>{conns}:live a sorted set of live instances scored by
// the unix ms at which they expire. Request budgets live at
// <prefix>rate:<tenant>.
type Limiter struct {
	rdb       redis.UniversalClient
	prefix    string
	instance  string
	hashKey   string
	liveKey   string
	ttl       time.Duration
	opTimeout time.Duration
	backoff   time.Duration
	log       *slog.Logger
	m         *metrics
	rate      *redis_rate.Limiter

	// resyncMu serialises a full rewrite of this node's hash (resync) against
	// the increments and decrements (which share it): a rewrite from a
	// snapshot must not cross an increment of the same count.
	resyncMu sync.RWMutex

	mu     sync.Mutex
	counts map[string]int // tenant → this node's connections: the truth the hash mirrors
	dirty  bool           // a call failed: the hash may be off until a resync

	downUntil atomic.Int64 // unix ns: until then, calls fail without asking Redis

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// New returns a Limiter and starts its heartbeat; Close stops it.
func New(cfg Config) (*Limiter, error) {
	if cfg.Redis == nil {
		return nil, errors.New("quota: Config.Redis is required")
	}
	if cfg.TTL < 0 || cfg.OpTimeout < 0 || cfg.Backoff < 0 {
		return nil, errors.New("quota: Config durations must not be negative")
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	l := &Limiter{
		rdb:       cfg.Redis,
		prefix:    cmp.Or(cfg.Prefix, DefaultPrefix),
		instance:  newInstanceID(),
		ttl:       cmp.Or(cfg.TTL, DefaultTTL),
		opTimeout: cmp.Or(cfg.OpTimeout, DefaultOpTimeout),
		backoff:   cmp.Or(cfg.Backoff, DefaultBackoff),
		log:       cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler)),
		m:         m,
		rate:      redis_rate.NewLimiter(rateKeys{cfg.Redis}),
		counts:    make(map[string]int),
		dirty:     true, // the first heartbeat registers the instance
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	l.hashKey = l.prefix + "{conns}:" + l.instance
	l.liveKey = l.prefix + "{conns}:live"
	go l.heartbeat()
	return l, nil
}

// Instance is this Limiter's id in Redis: unique per New.
func (l *Limiter) Instance() string { return l.instance }

// admit checks a tenant's count over the live instances against the cap
// and counts the connection on this instance. KEYS: live set, own hash.
// ARGV: tenant, cap (0: none), TTL ms, own instance, prefix of the hashes.
// It answers -1 when the tenant is at its cap, else the new own count.
var admit = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[4])
redis.call('PEXPIRE', KEYS[1], ttl)
local cap = tonumber(ARGV[2])
if cap > 0 then
  local sum = 0
  for _, inst in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    sum = sum + tonumber(redis.call('HGET', ARGV[5] .. inst, ARGV[1]) or '0')
    if sum >= cap then return -1 end
  end
end
local n = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[2], ttl)
return n`)

// release un-counts a connection. KEYS: own hash. ARGV: tenant.
var release = redis.NewScript(`
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return n`)

// beat keeps the instance alive. With rewrite it replaces its hash with the
// counts given; without, it checks that the hash sums to the local total and
// answers 0 when not (Redis lost the hash, e.g. restarted empty), so that
// the next beat rewrites it. KEYS: live set, own hash. ARGV: TTL ms, own
// instance, rewrite (0/1), local total, then tenant, count pairs.
var beat = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[2])
  for i = 5, #ARGV, 2 do
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
else
  local sum = 0
  for _, v in ipairs(redis.call('HVALS', KEYS[2])) do sum = sum + tonumber(v) end
  if sum ~= tonumber(ARGV[4]) then return 0 end
end
redis.call('PEXPIRE', KEYS[2], ttl)
return 1`)

// AcquireConnection counts one more connection of tenant in the cluster,
// unless the tenant holds max connections already (max 0: no cap, the
// connection is only counted): then ok is false and nothing is counted.
// With an error (Redis out of reach) the connection is counted here only,
// and reaches Redis with the next heartbeat that gets through; the caller
// lets it in. Either way, a connection let in is released once.
func (l *Limiter) AcquireConnection(ctx context.Context, tenant string, max int) (ok bool, err error) {
	l.resyncMu.RLock()
	defer l.resyncMu.RUnlock()
	if err := l.reachable(); err != nil {
		l.count(tenant, 1, true)
		return true, err
	}
	ctx, cancel := context.WithTimeout(ctx, l.opTimeout)
	defer cancel()
	n, err := admit.Run(ctx, l.rdb, []string{l.liveKey, l.hashKey},
		tenant, max, l.ttl.Milliseconds(), l.instance, l.prefix+"{conns}:").Int64()
	if err != nil {
		l.failed("admit")
		l.count(tenant, 1, true)
		return true, fmt.Errorf("%w: admit a connection of tenant %q: %w", ErrUnavailable, tenant, err)
	}
	if n < 0 {
		return false, nil
	}
	l.count(tenant, 1, false)
	return true, nil
}

// ReleaseConnection un-counts a connection AcquireConnection let in.
func (l *Limiter) ReleaseConnection(tenant string) {
	l.resyncMu.RLock()
	defer l.resyncMu.RUnlock()
	if l.reachable() != nil {
		l.count(tenant, -1, true)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.opTimeout)
	defer cancel()
	if err := release.Run(ctx, l.rdb, []string{l.hashKey}, tenant).Err(); err != nil {
		l.failed("release")
		l.count(tenant, -1, true)
		return
	}
	l.count(tenant, -1, false)
}

// AllowRequest takes one request from the tenant's budget of perSecond
// requests a second with bursts of burst, shared by every node. Refused, it
// returns how long until a request would be allowed; allowed, zero. An
// error means Redis is out of reach: the caller lets the request through.
func (l *Limiter) AllowRequest(ctx context.Context, tenant string, perSecond, burst int) (time.Duration, error) {
	if err := l.reachable(); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, l.opTimeout)
	defer cancel()
	res, err := l.rate.Allow(ctx, l.prefix+"rate:"+tenant, redis_rate.Limit{Rate: perSecond, Burst: max(burst, 1), Period: time.Second})
	if err != nil {
		l.failed("rate")
		return 0, fmt.Errorf("%w: rate of tenant %q: %w", ErrUnavailable, tenant, err)
	}
	if res.Allowed > 0 {
		return 0, nil
	}
	return max(res.RetryAfter, time.Millisecond), nil
}

// Close stops the heartbeat and removes this node's counts from Redis (a
// node that dies instead leaves them to expire). Safe to call twice.
func (l *Limiter) Close() error {
	var err error
	l.stopOnce.Do(func() {
		close(l.stop)
		<-l.done
		ctx, cancel := context.WithTimeout(context.Background(), l.opTimeout)
		defer cancel()
		pipe := l.rdb.TxPipeline()
		pipe.Del(ctx, l.hashKey)
		pipe.ZRem(ctx, l.liveKey, l.instance)
		if _, e := pipe.Exec(ctx); e != nil {
			err = fmt.Errorf("quota: remove this node's counts: %w", e)
		}
	})
	return err
}

// reachable fails fast while a recent call failed.
func (l *Limiter) reachable() error {
	if time.Now().UnixNano() < l.downUntil.Load() {
		return ErrUnavailable
	}
	return nil
}

// failed counts a failed call, stops calls for the backoff and marks the
// hash for a rewrite.
func (l *Limiter) failed(op string) {
	l.m.errors.WithLabelValues(op).Inc()
	l.downUntil.Store(time.Now().Add(l.backoff).UnixNano())
	l.mu.Lock()
	l.dirty = true
	l.mu.Unlock()
}

// count applies delta to the local count of tenant; dirty says that Redis
// did not see it.
func (l *Limiter) count(tenant string, delta int, dirty bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.counts[tenant] + delta
	if n <= 0 {
		delete(l.counts, tenant)
	} else {
		l.counts[tenant] = n
	}
	l.dirty = l.dirty || dirty
	l.m.connections.Add(float64(delta))
	l.m.tenants.Set(float64(len(l.counts)))
}

// heartbeat refreshes the TTLs every third of the TTL, and rewrites the
// hash from the local counts while a failed call may have left it wrong.
func (l *Limiter) heartbeat() {
	defer close(l.done)
	t := time.NewTicker(l.ttl / 3)
	defer t.Stop()
	for {
		l.beat()
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
	}
}

func (l *Limiter) beat() {
	l.mu.Lock()
	rewrite := l.dirty
	l.mu.Unlock()
	if rewrite {
		// No increment may run between the snapshot and the rewrite.
		l.resyncMu.Lock()
		defer l.resyncMu.Unlock()
	}
	args := []any{l.ttl.Milliseconds(), l.instance, "0", 0}
	l.mu.Lock()
	total := 0
	for tenant, n := range l.counts {
		total += n
		if rewrite {
			args = append(args, tenant, n)
		}
	}
	l.mu.Unlock()
	args[3] = total
	if rewrite {
		args[2] = "1"
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.opTimeout)
	defer cancel()
	ok, err := beat.Run(ctx, l.rdb, []string{l.liveKey, l.hashKey}, args...).Int()
	if err != nil {
		l.m.errors.WithLabelValues("heartbeat").Inc()
		l.downUntil.Store(time.Now().Add(l.backoff).UnixNano())
		l.mu.Lock()
		l.dirty = true
		l.mu.Unlock()
		l.log.Warn("quota: heartbeat failed; connection counts of this node may expire or be off until Redis answers", "err", err)
		return
	}
	l.downUntil.Store(0)
	if ok == 0 { // the hash is off: rewrite it at the next beat
		l.mu.Lock()
		l.dirty = true
		l.mu.Unlock()
		return
	}
	if rewrite {
		l.m.resyncs.Inc()
		l.mu.Lock()
		l.dirty = false
		l.mu.Unlock()
	}
}

// rateKeys hands the GCRA library's scripts their keys without the "rate:"
// it puts in front of every key, so that the budgets live under the
// configured prefix, as every key pm keeps does.
type rateKeys struct{ redis.UniversalClient }

func unrate(keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = strings.TrimPrefix(k, "rate:")
	}
	return out
}

func (r rateKeys) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return r.UniversalClient.Eval(ctx, script, unrate(keys), args...)
}

func (r rateKeys) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return r.UniversalClient.EvalSha(ctx, sha1, unrate(keys), args...)
}

func (r rateKeys) EvalRO(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return r.UniversalClient.EvalRO(ctx, script, unrate(keys), args...)
}

func (r rateKeys) EvalShaRO(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return r.UniversalClient.EvalShaRO(ctx, sha1, unrate(keys), args...)
}

func (r rateKeys) Del(ctx context.Context, keys ...string) *redis.IntCmd {
	return r.UniversalClient.Del(ctx, unrate(keys)...)
}

// newInstanceID returns 64 random bits in base 32.
func newInstanceID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

type metrics struct {
	connections prometheus.Gauge
	tenants     prometheus.Gauge
	resyncs     prometheus.Counter
	errors      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pm_quota_connections", Help: "Connections this node counts toward the per-tenant caps.",
		}),
		tenants: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pm_quota_tenants", Help: "Tenants with connections on this node.",
		}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pm_quota_resyncs_total", Help: "Rewrites of this node's connection counts in Redis after calls that failed.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pm_quota_errors_total", Help: "Redis calls of the cluster-wide limits that failed, by operation (admit, release, rate, heartbeat).",
		}, []string{"op"}),
	}
	for _, op := range []string{"admit", "release", "rate", "heartbeat"} {
		m.errors.WithLabelValues(op) // exported from the start, at 0
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.connections, m.tenants, m.resyncs, m.errors} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("quota: register metrics: %w", err)
			}
		}
	}
	return m, nil
}
