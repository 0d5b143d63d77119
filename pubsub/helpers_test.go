package pubsub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/pmhq/pm"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// redisOptions returns options for the test Redis (PM_TEST_REDIS_URL, or
// 127.0.0.1:6379).
func redisOptions(tb testing.TB) *redis.Options {
	tb.Helper()
	url := os.Getenv("PM_TEST_REDIS_URL")
	if url == "" {
		url = "redis://127.0.0.1:6379/0"
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		tb.Fatalf("PM_TEST_REDIS_URL: %v", err)
	}
	opt.ContextTimeoutEnabled = true
	return opt
}

// MustClient returns a new client of the test Redis, closed at cleanup;
// name, if set, names its connections (CLIENT SETNAME).
func MustClient(tb testing.TB, name string) *redis.Client {
	tb.Helper()
	opt := redisOptions(tb)
	opt.ClientName = name
	c := redis.NewClient(opt)
	tb.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		tb.Fatalf("test Redis at %s: %v", opt.Addr, err)
	}
	return c
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// MustPrefix returns a key and channel prefix of the test's own.
func MustPrefix(tb testing.TB) string {
	tb.Helper()
	return "pmtest-" + randomHex(6) + ":"
}

// MustHub starts a hub with cfg, closed at cleanup. Unset Prefix and
// Registerer get a fresh prefix and registry.
func MustHub(tb testing.TB, cfg HubConfig) *Hub {
	tb.Helper()
	if cfg.Prefix == "" {
		cfg.Prefix = MustPrefix(tb)
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	h, err := NewHub(cfg)
	if err != nil {
		tb.Fatalf("NewHub: %v", err)
	}
	tb.Cleanup(func() { _ = h.Close() })
	return h
}

// waitFor waits until cond holds, failing the test after a deadline.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func newKey() pm.ProjectKey {
	return pm.ProjectKey{Tenant: "t-" + randomHex(3), Project: uuid.New()}
}

// notice is a ResyncRequired or SubscriptionRevoked call.
type notice struct {
	project uuid.UUID
	reason  string
}

// recorder is an in-memory pm.Subscriber: it records what it gets.
type recorder struct {
	id   string
	user uuid.UUID

	mu      sync.Mutex
	frames  [][]byte
	resyncs []notice
	revoked []notice
}

func newRecorder(user uuid.UUID) *recorder {
	return &recorder{id: "sub-" + randomHex(8), user: user}
}

func (r *recorder) SubscriberID() string { return r.id }
func (r *recorder) UserID() uuid.UUID    { return r.user }

func (r *recorder) Deliver(frame []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.frames = append(r.frames, frame)
}

func (r *recorder) ResyncRequired(project uuid.UUID, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.resyncs = append(r.resyncs, notice{project, reason})
}

func (r *recorder) SubscriptionRevoked(project uuid.UUID, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.revoked = append(r.revoked, notice{project, reason})
}

func (r *recorder) Frames() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.frames)
}

func (r *recorder) Resyncs() []notice {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.resyncs)
}

func (r *recorder) Revoked() []notice {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.revoked)
}

// has reports whether the recorder got frame.
func (r *recorder) has(frame string) bool {
	return slices.ContainsFunc(r.Frames(), func(f []byte) bool { return string(f) == frame })
}

// resynced reports whether the recorder was told to resync project for reason.
func (r *recorder) resynced(project uuid.UUID, reason string) bool {
	return slices.Contains(r.Resyncs(), notice{project, reason})
}

// heads is an in-memory HeadReader over a map the test changes.
type heads struct {
	mu    sync.Mutex
	m     map[pm.ProjectKey]int64
	calls atomic.Int64
}

func (h *heads) set(k pm.ProjectKey, rev int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = make(map[pm.ProjectKey]int64)
	}
	h.m[k] = rev
}

func (h *heads) ProjectHeads(_ context.Context, keys []pm.ProjectKey) (map[pm.ProjectKey]int64, error) {
	defer h.calls.Add(1)
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[pm.ProjectKey]int64, len(keys))
	for _, k := range keys {
		if v, ok := h.m[k]; ok {
			out[k] = v
		}
	}
	return out, nil
}

// subscribe subscribes sub or fails the test.
func subscribe(tb testing.TB, h *Hub, key pm.ProjectKey, sub pm.Subscriber) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.Subscribe(ctx, key, sub); err != nil {
		tb.Fatalf("Subscribe: %v", err)
	}
}

// proxy is a TCP forwarder to Redis that a test can stop, restart and
// freeze, to make Redis unreachable or a connection half-open.
type proxy struct {
	tb     testing.TB
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]*atomic.Bool // client side -> frozen
	wg    sync.WaitGroup
}

// MustProxy starts a proxy to the test Redis, stopped at cleanup.
func MustProxy(tb testing.TB) *proxy {
	tb.Helper()
	p := &proxy{tb: tb, target: redisOptions(tb).Addr, conns: make(map[net.Conn]*atomic.Bool)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	tb.Cleanup(func() {
		p.Stop()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				_ = c.Close()
				continue
			}
			frozen := new(atomic.Bool)
			p.mu.Lock()
			p.conns[c] = frozen
			p.mu.Unlock()
			p.wg.Add(2)
			go p.pipe(c, up, frozen)
			go p.pipe(up, c, frozen)
		}
	}()
}

// pipe copies src to dst until either closes; while frozen it swallows
// the bytes instead.
func (p *proxy) pipe(dst, src net.Conn, frozen *atomic.Bool) {
	defer p.wg.Done()
	defer func() { _ = dst.Close(); _ = src.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !frozen.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF, or either side closed
		}
	}
}

// Stop closes the listener and every connection: Redis is unreachable.
func (p *proxy) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		_ = c.Close()
		delete(p.conns, c)
	}
}

// Start listens again on the same address.
func (p *proxy) Start() {
	p.tb.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.tb.Fatalf("proxy restart: %v", err)
	}
	p.serve(ln)
}

// Freeze makes every current connection swallow traffic both ways, as a
// dead peer behind a live TCP connection would. New connections work.
func (p *proxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.conns {
		f.Store(true)
	}
}

// Client returns a client that talks to Redis through the proxy.
func (p *proxy) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	opt := redisOptions(tb)
	opt.Addr = p.addr
	opt.DialTimeout = 500 * time.Millisecond
	opt.ReadTimeout = 500 * time.Millisecond
	opt.WriteTimeout = 500 * time.Millisecond
	opt.MaxRetries = -1
	c := redis.NewClient(opt)
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// value reads a counter or gauge.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	panic("value: not a counter or gauge")
}
