package quota_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/pmhq/pm/quota"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// mustClient returns a client of the test Redis (PM_TEST_REDIS_URL, or the
// local one), closed when the test ends.
func mustClient(tb testing.TB) *redis.Client {
	tb.Helper()
	url := os.Getenv("PM_TEST_REDIS_URL")
	if url == "" {
		url = "redis://127.0.0.1:6379/0"
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		tb.Fatal(err)
	}
	opts.ContextTimeoutEnabled = true
	c := redis.NewClient(opts)
	tb.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		tb.Fatalf("test Redis at %s: %v", opts.Addr, err)
	}
	return c
}

func mustPrefix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "pmtest-" + hex.EncodeToString(b) + ":"
}

// mustLimiter starts a Limiter, closed when the test ends.
func mustLimiter(tb testing.TB, cfg quota.Config) *quota.Limiter {
	tb.Helper()
	l, err := quota.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = l.Close() })
	return l
}

func acquire(t *testing.T, l *quota.Limiter, tenant string, max int) bool {
	t.Helper()
	ok, err := l.AcquireConnection(context.Background(), tenant, max)
	if err != nil {
		t.Fatalf("acquire %s: %v", tenant, err)
	}
	return ok
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The cap holds over the sum of every instance's connections; a refused
// connection is not counted; a release frees a slot on any instance; one
// tenant at its cap leaves another tenant's connections alone.
func TestTenantCapAcrossInstances(t *testing.T) {
	rdb, prefix := mustClient(t), mustPrefix()
	a := mustLimiter(t, quota.Config{Redis: rdb, Prefix: prefix})
	b := mustLimiter(t, quota.Config{Redis: rdb, Prefix: prefix})
	for i, l := range []*quota.Limiter{a, a, b} {
		if !acquire(t, l, "acme", 3) {
			t.Fatalf("connection %d of 3 refused", i+1)
		}
	}
	if acquire(t, b, "acme", 3) || acquire(t, a, "acme", 3) {
		t.Fatal("a 4th connection under a cap of 3 was admitted")
	}
	if !acquire(t, b, "globex", 3) {
		t.Fatal("another tenant was refused while acme was at its cap")
	}
	a.ReleaseConnection("acme")
	if !acquire(t, b, "acme", 3) {
		t.Fatal("the slot a release freed was not given out")
	}
	if acquire(t, a, "acme", 3) {
		t.Fatal("a 4th connection was admitted after the freed slot was taken")
	}
	// A cap of 0 counts without refusing.
	if !acquire(t, a, "acme", 0) {
		t.Fatal("refused without a cap")
	}
	got, err := rdb.HGetAll(context.Background(), prefix+"{conns}:"+a.Instance()).Result()
	if err != nil {
		t.Fatal(err)
	}
	if got["acme"] != "2" {
		t.Errorf("instance a's hash %v, want acme=2", got)
	}
}

// A node that dies leaves its counts behind until its hash expires; then
// its tenants' slots are free again on the other nodes.
func TestCountsOfADeadInstanceExpire(t *testing.T) {
	rdb, prefix := mustClient(t), mustPrefix()
	ttl := 400 * time.Millisecond
	deadRedis := redis.NewClient(rdb.Options())
	dead := mustLimiter(t, quota.Config{Redis: deadRedis, Prefix: prefix, TTL: ttl})
	live := mustLimiter(t, quota.Config{Redis: rdb, Prefix: prefix, TTL: ttl})
	for range 2 {
		if !acquire(t, dead, "acme", 2) {
			t.Fatal("refused under the cap")
		}
	}
	if acquire(t, live, "acme", 2) {
		t.Fatal("admitted over the cap")
	}
	// The process dies: nothing of it reaches Redis any more.
	_ = deadRedis.Close()
	if err := dead.Close(); err == nil {
		t.Fatal("Close removed the counts through a closed client")
	}
	if n, _ := rdb.Exists(context.Background(), prefix+"{conns}:"+dead.Instance()).Result(); n != 1 {
		t.Fatal("the dead instance's counts vanished at once; the test proves nothing")
	}
	waitFor(t, "the dead instance's slots to come free", func() bool {
		ok, err := live.AcquireConnection(context.Background(), "acme", 2)
		return err == nil && ok
	})
	if !acquire(t, live, "acme", 2) || acquire(t, live, "acme", 2) {
		t.Fatal("after the dead instance's counts expired, the cap is not 2 again")
	}
}

// When Redis loses a node's hash (e.g. it restarted empty), the heartbeat
// notices that the hash no longer sums to the node's own count and
// rewrites it, so the cap counts those connections again.
func TestHeartbeatRewritesALostHash(t *testing.T) {
	rdb, prefix := mustClient(t), mustPrefix()
	reg := prometheus.NewRegistry()
	l := mustLimiter(t, quota.Config{Redis: rdb, Prefix: prefix, TTL: 300 * time.Millisecond, Registerer: reg})
	for range 2 {
		acquire(t, l, "acme", 5)
	}
	key := prefix + "{conns}:" + l.Instance()
	resyncs := metric(t, reg, "pm_quota_resyncs_total")
	if err := rdb.Del(context.Background(), key).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the hash to be rewritten", func() bool {
		v, _ := rdb.HGet(context.Background(), key, "acme").Result()
		return v == "2"
	})
	if got := metric(t, reg, "pm_quota_resyncs_total"); got <= resyncs {
		t.Errorf("pm_quota_resyncs_total %v, want more than %v", got, resyncs)
	}
}

// A tenant's request budget is shared by every node: GCRA with a burst,
// then a refusal that says how long to wait; other tenants are unaffected.
func TestRequestRateAcrossInstances(t *testing.T) {
	rdb, prefix := mustClient(t), mustPrefix()
	a := mustLimiter(t, quota.Config{Redis: rdb, Prefix: prefix})
	b := mustLimiter(t, quota.Config{Redis: rdb, Prefix: prefix})
	ctx := context.Background()
	for i, l := range []*quota.Limiter{a, b, a} {
		wait, err := l.AllowRequest(ctx, "acme", 1, 3)
		if err != nil || wait != 0 {
			t.Fatalf("request %d of a burst of 3: wait %v, err %v", i+1, wait, err)
		}
	}
	wait, err := b.AllowRequest(ctx, "acme", 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	if wait <= 0 || wait > time.Second {
		t.Fatalf("4th request: wait %v, want in (0, 1s]", wait)
	}
	if wait, err := a.AllowRequest(ctx, "globex", 1, 3); err != nil || wait != 0 {
		t.Fatalf("another tenant: wait %v, err %v", wait, err)
	}
	if n, _ := rdb.Exists(ctx, prefix+"rate:acme").Result(); n != 1 {
		t.Error("the budget is not at the documented key")
	}
	if n, _ := rdb.Exists(ctx, "rate:"+prefix+"rate:acme").Result(); n != 0 {
		t.Error("the budget is (also) outside the prefix")
	}
}

// blackhole accepts connections and never answers: a hung Redis.
func blackhole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var conns []net.Conn
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				for _, c := range conns {
					_ = c.Close()
				}
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); <-done })
	return ln.Addr().String()
}

// With Redis hung, every call gives up within its timeout and says so:
// connections are let in (and counted locally), requests allowed.
func TestRedisDownFailsOpen(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: blackhole(t), ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	reg := prometheus.NewRegistry()
	l := mustLimiter(t, quota.Config{Redis: rdb, Prefix: mustPrefix(), OpTimeout: 50 * time.Millisecond, Registerer: reg})
	for range 3 { // the first asks Redis, the others fail fast
		ok, err := l.AcquireConnection(context.Background(), "acme", 1)
		if !ok || !errors.Is(err, quota.ErrUnavailable) {
			t.Fatalf("acquire with Redis down: ok %v, err %v; want let in with ErrUnavailable", ok, err)
		}
	}
	if wait, err := l.AllowRequest(context.Background(), "acme", 1, 1); wait != 0 || !errors.Is(err, quota.ErrUnavailable) {
		t.Fatalf("request with Redis down: wait %v, err %v", wait, err)
	}
	if got := metric(t, reg, "pm_quota_errors_total"); got < 1 {
		t.Errorf("pm_quota_errors_total %v, want at least the first call's failure", got)
	}
	if got := metric(t, reg, "pm_quota_connections"); got != 3 {
		t.Errorf("pm_quota_connections %v, want the 3 let in", got)
	}
	for range 3 {
		l.ReleaseConnection("acme")
	}
	if got := metric(t, reg, "pm_quota_connections"); got != 0 {
		t.Errorf("pm_quota_connections %v after the releases, want 0", got)
	}
}

// Settings that make no sense are refused.
func TestNewRefuses(t *testing.T) {
	if _, err := quota.New(quota.Config{}); err == nil {
		t.Error("no Redis: accepted")
	}
	if _, err := quota.New(quota.Config{Redis: mustClient(t), TTL: -time.Second}); err == nil {
		t.Error("negative TTL: accepted")
	}
}

// metric returns the sum of a counter's or gauge's series in reg.
func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return sum
}
