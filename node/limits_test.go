package node_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/node"
	"github.com/pmhq/pm/node/nodetest"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
	"github.com/pmhq/pm/quota"
)

// refusal is what a client sees of an upgrade refused before the upgrade.
type refusal struct {
	status     int
	retryAfter int // seconds; -1 without the header
	body       string
}

// tryUpgrade sends a WebSocket upgrade with a bearer token and returns the
// refusal; an upgrade that succeeds fails the test.
func tryUpgrade(t *testing.T, wsURL, token string) refusal {
	t.Helper()
	ref, upgraded := upgrade(t, wsURL, token)
	if upgraded {
		t.Fatal("the upgrade succeeded; want a refusal")
	}
	return ref
}

// upgrade sends a WebSocket upgrade and reports whether it succeeded (the
// connection is then closed), or else the refusal.
func upgrade(t *testing.T, wsURL, token string) (refusal, bool) {
	t.Helper()
	u, err := url.Parse(wsURL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(wait))
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer %s\r\n\r\n",
		u.RequestURI(), u.Host, token)
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return refusal{}, true
	}
	body, _ := io.ReadAll(resp.Body)
	ref := refusal{status: resp.StatusCode, retryAfter: -1, body: string(body)}
	if v := resp.Header.Get("Retry-After"); v != "" {
		if ref.retryAfter, err = strconv.Atoi(v); err != nil {
			t.Fatalf("Retry-After %q is not seconds", v)
		}
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("refusal's Content-Type %q, want text/plain", ct)
	}
	return ref, false
}

// checkRefusal checks a refusal's status, its reason and its Retry-After.
func checkRefusal(t *testing.T, got refusal, status int, reason string, minRetry, maxRetry int) {
	t.Helper()
	if got.status != status || !strings.Contains(got.body, reason) {
		t.Fatalf("refused with HTTP %d %q; want %d with %q", got.status, got.body, status, reason)
	}
	if got.retryAfter < minRetry || got.retryAfter > maxRetry {
		t.Errorf("Retry-After %d, want %d–%d", got.retryAfter, minRetry, maxRetry)
	}
}

// waitUntil polls cond until it holds or wait passes.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// labelled returns a series of a counter vector of the node: the value
// with label name=value.
func labelled(t *testing.T, n *nodetest.Node, metric, name, value string) float64 {
	t.Helper()
	families, err := n.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != metric {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == name && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

var _ node.Quota = (*quota.Limiter)(nil)

func listProjectsRequest() *pmv1.WebSocketMessage {
	return &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_ListProjectsRequest{ListProjectsRequest: &pmv1.ListProjectsRequest{}}}
}

// requestOK sends a request and fails the test unless it is answered
// without an error.
func requestOK(t *testing.T, conn *nodetest.Conn) {
	t.Helper()
	resp, _ := conn.Request(listProjectsRequest())
	if e := resp.GetError(); e != nil {
		t.Fatalf("request answered %s: %s", e.Code, e.Message)
	}
}

// A full node refuses upgrades with 503, a reason and Retry-After; a
// closed connection frees its slot.
func TestNodeConnectionCap(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{Configure: func(cfg *node.Config) { cfg.MaxConnections = 2 }})
	n := c.Nodes[0]
	first := nodetest.Dial(t, n.URL(), c.Token("acme", uuid.New()))
	nodetest.Dial(t, n.URL(), c.Token("globex", uuid.New()))
	checkRefusal(t, tryUpgrade(t, n.URL(), c.Token("initech", uuid.New())), http.StatusServiceUnavailable, "node full", 1, 5)
	if got := labelled(t, n, "pm_upgrades_total", "result", "node_full"); got != 1 {
		t.Errorf("pm_upgrades_total{result=node_full} %v, want 1", got)
	}
	requestOK(t, first) // the connections in place carry on
	first.Close()
	waitUntil(t, "the closed connection's slot to free", func() bool {
		_, ok := upgrade(t, n.URL(), c.Token("initech", uuid.New()))
		return ok
	})
}

// A tenant at its cap is refused with 429 on every node, while another
// tenant still connects; a connection closed on one node frees a slot on
// the other.
func TestTenantConnectionCapAcrossNodes(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{Nodes: 2, Configure: func(cfg *node.Config) { cfg.TenantMaxConnections = 2 }})
	a, b := c.Nodes[0], c.Nodes[1]
	onA := nodetest.Dial(t, a.URL(), c.Token("acme", uuid.New()))
	nodetest.Dial(t, b.URL(), c.Token("acme", uuid.New()))
	for _, n := range []*nodetest.Node{a, b} {
		checkRefusal(t, tryUpgrade(t, n.URL(), c.Token("acme", uuid.New())), http.StatusTooManyRequests, "tenant connection limit", 10, 20)
	}
	if got := labelled(t, a, "pm_upgrades_total", "result", "tenant_full") + labelled(t, b, "pm_upgrades_total", "result", "tenant_full"); got != 2 {
		t.Errorf("pm_upgrades_total{result=tenant_full} %v over both nodes, want 2", got)
	}
	for _, n := range []*nodetest.Node{a, b} {
		requestOK(t, nodetest.Dial(t, n.URL(), c.Token("globex", uuid.New())))
	}
	onA.Close()
	waitUntil(t, "the closed connection's slot to free", func() bool {
		_, ok := upgrade(t, b.URL(), c.Token("acme", uuid.New()))
		return ok
	})
}

// A node that dies without giving its connections back stops holding its
// tenants' slots once its counts expire.
func TestTenantCountsHealWhenANodeDies(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{
		Nodes:     2,
		Configure: func(cfg *node.Config) { cfg.TenantMaxConnections = 2 },
		Quota:     func(qc *quota.Config) { qc.TTL = 600 * time.Millisecond },
	})
	dying, survivor := c.Nodes[0], c.Nodes[1]
	for range 2 {
		nodetest.Dial(t, dying.URL(), c.Token("acme", uuid.New()))
	}
	checkRefusal(t, tryUpgrade(t, survivor.URL(), c.Token("acme", uuid.New())), http.StatusTooManyRequests, "tenant connection limit", 10, 20)
	dying.Crash()
	rdb := redisClient(t, c.RedisURL)
	if n, err := rdb.Exists(context.Background(), c.Prefix+"{conns}:"+dying.QuotaInstance()).Result(); err != nil || n != 1 {
		t.Fatalf("the dead node's counts are gone at once (%d, %v): the test would prove nothing", n, err)
	}
	waitUntil(t, "the dead node's counts to expire", func() bool {
		_, ok := upgrade(t, survivor.URL(), c.Token("acme", uuid.New()))
		return ok
	})
}

func redisClient(t *testing.T, u string) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// blackhole is a Redis that accepts connections and never answers.
func blackhole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var conns []net.Conn
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

// With the limits' Redis hung, the limits fail open: connections over the
// tenant cap and requests over the tenant rate are served, and the
// fail-open metric counts them.
func TestLimitsFailOpenWhenRedisIsDown(t *testing.T) {
	hung := redis.NewClient(&redis.Options{Addr: blackhole(t), ContextTimeoutEnabled: true, MaxRetries: -1})
	c := nodetest.Start(t, nodetest.Options{
		Configure: func(cfg *node.Config) {
			cfg.TenantMaxConnections, cfg.TenantRatePerSecond, cfg.TenantRateBurst = 1, 1, 1
		},
		Quota: func(qc *quota.Config) { qc.Redis = hung },
	})
	t.Cleanup(func() { _ = hung.Close() }) // after the node stops
	n := c.Nodes[0]
	for range 3 {
		conn := nodetest.Dial(t, n.URL(), c.Token("acme", uuid.New()))
		for range 2 {
			requestOK(t, conn)
		}
	}
	if got := labelled(t, n, "pm_limit_fail_open_total", "limit", "tenant_connections"); got != 3 {
		t.Errorf("pm_limit_fail_open_total{limit=tenant_connections} %v, want 3", got)
	}
	if got := labelled(t, n, "pm_limit_fail_open_total", "limit", "tenant_requests"); got < 6 {
		t.Errorf("pm_limit_fail_open_total{limit=tenant_requests} %v, want at least 6", got)
	}
}

// A tenant's requests share one budget across the nodes: past it they get
// RATE_LIMITED with retry_after_ms, on either node, while another tenant's
// requests go through.
func TestTenantRequestRateAcrossNodes(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{Nodes: 2, Configure: func(cfg *node.Config) {
		cfg.TenantRatePerSecond, cfg.TenantRateBurst = 1, 4
	}})
	a, b := c.Nodes[0], c.Nodes[1]
	onA := nodetest.Dial(t, a.URL(), c.Token("acme", uuid.New()))
	onB := nodetest.Dial(t, b.URL(), c.Token("acme", uuid.New()))
	other := nodetest.Dial(t, a.URL(), c.Token("globex", uuid.New()))
	for _, conn := range []*nodetest.Conn{onA, onB, onA, onB} { // the burst
		requestOK(t, conn)
	}
	// At 1 a second, 50 requests spend the budget whatever the pace.
	var limited *pmv1.Error
	for i := 0; i < 50 && limited == nil; i++ {
		req := listProjectsRequest()
		resp, _ := onB.Request(req)
		limited = resp.GetError()
	}
	if limited == nil {
		t.Fatal("50 requests past a burst of 4 at 1/s were all served")
	}
	if limited.Code != pm.ERateLimited || !strings.Contains(limited.Message, "tenant") || limited.RetryAfterMs <= 0 || limited.RetryAfterMs > 1000 {
		t.Fatalf("refused with %s %q retry_after_ms %d; want RATE_LIMITED for the tenant, within 1s", limited.Code, limited.Message, limited.RetryAfterMs)
	}
	resp, _ := onA.Request(listProjectsRequest())
	if e := resp.GetError(); e == nil || e.Code != pm.ERateLimited {
		t.Fatalf("the other node served the tenant past its budget: %v", resp)
	}
	requestOK(t, other)
	if got := a.Metric("pm_tenant_rate_limited_total") + b.Metric("pm_tenant_rate_limited_total"); got < 2 {
		t.Errorf("pm_tenant_rate_limited_total %v over both nodes, want at least 2", got)
	}
}

// Upgrades beyond the connection rate's burst get 503 with Retry-After,
// while the connections in place keep being served.
func TestConnectRateLimit(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{Configure: func(cfg *node.Config) {
		cfg.ConnectRate, cfg.ConnectBurst = 0.001, 3 // no token comes back during the test
	}})
	n := c.Nodes[0]
	var conns []*nodetest.Conn
	for range 3 {
		conns = append(conns, nodetest.Dial(t, n.URL(), c.Token("acme", uuid.New())))
	}
	checkRefusal(t, tryUpgrade(t, n.URL(), c.Token("acme", uuid.New())), http.StatusServiceUnavailable, "too many new connections", 1, 3)
	if got := labelled(t, n, "pm_upgrades_total", "result", "connect_rate"); got != 1 {
		t.Errorf("pm_upgrades_total{result=connect_rate} %v, want 1", got)
	}
	for _, conn := range conns {
		requestOK(t, conn)
	}
}

// Limits the node cannot enforce are refused at New.
func TestLimitSettingsRefused(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{})
	base := func() node.Config {
		return node.Config{Store: c.Store, Fanout: nopFanout{}, Auth: mustAuth(t, c.Secret), Registerer: prometheus.NewRegistry()}
	}
	for name, change := range map[string]func(*node.Config){
		"tenant cap without a quota":  func(cfg *node.Config) { cfg.TenantMaxConnections = 5 },
		"tenant rate without a quota": func(cfg *node.Config) { cfg.TenantRatePerSecond = 5 },
		"negative node cap":           func(cfg *node.Config) { cfg.MaxConnections = -1 },
	} {
		cfg := base()
		change(&cfg)
		if _, err := node.New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// nopFanout is a Fanout for a node that is never started.
type nopFanout struct{}

func (nopFanout) Publish(context.Context, pm.ProjectKey, int64, string, []byte, time.Time) error {
	return nil
}
func (nopFanout) PublishMemberRemoved(context.Context, pm.ProjectKey, uuid.UUID) error { return nil }
func (nopFanout) Subscribe(context.Context, pm.ProjectKey, pm.Subscriber) error        { return nil }
func (nopFanout) Unsubscribe(pm.ProjectKey, pm.Subscriber)                             {}
func (nopFanout) UnsubscribeAll(pm.Subscriber)                                         {}

func mustAuth(t *testing.T, secret []byte) *node.Authenticator {
	t.Helper()
	auth, err := node.NewAuthenticator(context.Background(), node.AuthConfig{HMACSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	return auth
}
