// Package nodetest starts real pm nodes inside a test process, the way
// net/http/httptest starts servers: each cluster gets its own Postgres
// database (repo/repotest) and its own Redis key and channel prefix, and its
// nodes share both, so a test can exercise several nodes at once. It also
// has a raw WebSocket test connection for protocol-level tests.
package nodetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/pmhq/pm/node"
	"github.com/pmhq/pm/pubsub"
	"github.com/pmhq/pm/quota"
	"github.com/pmhq/pm/repo"
	"github.com/pmhq/pm/repo/repotest"
	"github.com/pmhq/pm/web"
)

// Options configures a test cluster. Zero values are fine.
type Options struct {
	// Nodes is how many nodes to start. Default 1.
	Nodes int
	// Configure, if set, adjusts each node's configuration before it starts.
	Configure func(*node.Config)
	// Store, if set, adjusts each node's store configuration before the
	// store opens (e.g. its DatabaseURL, to reach the database through a
	// repotest.Proxy, or the circuit breaker's settings).
	Store func(*repo.Config)
	// HeadCheckInterval is the hub's head check period. Default: disabled.
	HeadCheckInterval time.Duration
	// NoIdempotency runs the nodes without the Redis ledger.
	NoIdempotency bool
	// Logs, if set, receives the nodes' logs; default: only when -v and
	// PM_TEST_LOGS is set.
	Logs io.Writer
	// Board serves the browser board pm-node embeds (web.Dist) at /, as
	// pm-node does. Configure may set another bundle.
	Board bool
	// Quota, if set, adjusts each node's cluster-wide limits (quota.Config)
	// before they start; they run on a Redis client of their own, which
	// Crash closes. Configure sets the limits themselves.
	Quota func(*quota.Config)
}

// Cluster is a set of nodes sharing one database and one Redis prefix.
type Cluster struct {
	// DatabaseURL is the application role's URL of the cluster's database.
	DatabaseURL string
	// RedisURL is the Redis the nodes use.
	RedisURL string
	// Prefix is the cluster's Redis key and channel prefix.
	Prefix string
	// Secret signs the tokens the nodes accept (HS256).
	Secret []byte
	// Store is a store of the cluster's database, for checking what was written.
	Store *repo.Store
	// Nodes are the running nodes.
	Nodes []*Node

	tb   testing.TB
	opts Options
	log  *slog.Logger
}

// Node is one in-process pm node.
type Node struct {
	// Server is the node.
	Server *node.Server
	// Registry holds the node's metrics.
	Registry *prometheus.Registry

	addr    string
	http    *http.Server
	hub     *pubsub.Hub
	rdb     *redis.Client
	quota   *quota.Limiter
	quotaDB *redis.Client // the quota's own client
	served  chan struct{}
	stopped sync.Once
}

// RedisURL returns the Redis the tests use: PM_TEST_REDIS_URL, or the local one.
func RedisURL() string {
	if u := os.Getenv("PM_TEST_REDIS_URL"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

// RandomPrefix returns a Redis prefix no other test run uses.
func RandomPrefix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "pmtest-" + hex.EncodeToString(b) + ":"
}

// Start starts a cluster and stops it when the test ends.
func Start(tb testing.TB, opts Options) *Cluster {
	tb.Helper()
	if opts.Nodes == 0 {
		opts.Nodes = 1
	}
	if opts.HeadCheckInterval == 0 {
		opts.HeadCheckInterval = -1
	}
	logs := opts.Logs
	if logs == nil {
		logs = io.Discard
		if testing.Verbose() && os.Getenv("PM_TEST_LOGS") != "" {
			logs = os.Stderr
		}
	}
	c := &Cluster{
		DatabaseURL: repotest.MustDatabaseURL(tb),
		RedisURL:    RedisURL(),
		Prefix:      RandomPrefix(),
		Secret:      []byte("test-secret-" + uuid.NewString()),
		tb:          tb,
		opts:        opts,
		log:         slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	ctx := context.Background()
	if err := repo.Migrate(ctx, c.DatabaseURL, c.log); err != nil {
		tb.Fatalf("nodetest: migrate: %v", err)
	}
	store, err := repo.Open(ctx, repo.Config{DatabaseURL: c.DatabaseURL, Logger: c.log})
	if err != nil {
		tb.Fatalf("nodetest: open store: %v", err)
	}
	c.Store = store
	tb.Cleanup(store.Close)
	for i := range opts.Nodes {
		c.Nodes = append(c.Nodes, c.startNode(fmt.Sprintf("node-%d", i+1)))
	}
	return c
}

func (c *Cluster) startNode(id string) *Node {
	tb := c.tb
	tb.Helper()
	ctx := context.Background()
	log := c.log.With("node", id)
	reg := prometheus.NewRegistry()
	scfg := repo.Config{DatabaseURL: c.DatabaseURL, Logger: log, Registerer: reg}
	if c.opts.Store != nil {
		c.opts.Store(&scfg)
	}
	store, err := repo.Open(ctx, scfg)
	if err != nil {
		tb.Fatalf("nodetest: open store: %v", err)
	}
	ropts, err := redis.ParseURL(c.RedisURL)
	if err != nil {
		tb.Fatalf("nodetest: redis URL: %v", err)
	}
	ropts.ContextTimeoutEnabled = true
	rdb := redis.NewClient(ropts)
	hub, err := pubsub.NewHub(pubsub.HubConfig{
		Redis: rdb, Prefix: c.Prefix, Heads: store, HeadCheckInterval: c.opts.HeadCheckInterval,
		Logger: log, Registerer: reg,
	})
	if err != nil {
		tb.Fatalf("nodetest: hub: %v", err)
	}
	auth, err := node.NewAuthenticator(ctx, node.AuthConfig{HMACSecret: c.Secret})
	if err != nil {
		tb.Fatalf("nodetest: auth: %v", err)
	}
	cfg := node.Config{
		NodeID: id, Store: store, Fanout: hub, Auth: auth,
		Logger: log, Registerer: reg, Gatherer: reg,
	}
	if c.opts.Board {
		cfg.Assets = web.Dist
	}
	if !c.opts.NoIdempotency {
		ledger, err := pubsub.NewLedger(pubsub.LedgerConfig{Redis: rdb, Prefix: c.Prefix, Logger: log, Registerer: reg})
		if err != nil {
			tb.Fatalf("nodetest: ledger: %v", err)
		}
		cfg.Idempotency = ledger
		tb.Cleanup(func() { _ = ledger.Close() })
	}
	qopts := *ropts
	qdb := redis.NewClient(&qopts)
	qcfg := quota.Config{Redis: qdb, Prefix: c.Prefix, Logger: log, Registerer: reg}
	if c.opts.Quota != nil {
		c.opts.Quota(&qcfg)
	}
	lim, err := quota.New(qcfg)
	if err != nil {
		tb.Fatalf("nodetest: quota: %v", err)
	}
	cfg.Quota = lim
	if c.opts.Configure != nil {
		c.opts.Configure(&cfg)
	}
	srv, err := node.New(cfg)
	if err != nil {
		tb.Fatalf("nodetest: node: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("nodetest: listen: %v", err)
	}
	// One listener for both: the admin endpoints at their paths, the
	// client endpoints (/ws, the board) at every other.
	mux := http.NewServeMux()
	admin := srv.AdminHandler()
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		mux.Handle(path, admin)
	}
	mux.Handle("/", srv.Handler())
	n := &Node{
		Server: srv, Registry: reg, addr: ln.Addr().String(),
		http: &http.Server{Handler: mux}, hub: hub, rdb: rdb, quota: lim, quotaDB: qdb, served: make(chan struct{}),
	}
	go func() {
		defer close(n.served)
		_ = n.http.Serve(ln)
	}()
	tb.Cleanup(func() {
		n.Stop()
		store.Close()
	})
	return n
}

// AddNode starts one more node in the cluster.
func (c *Cluster) AddNode() *Node {
	c.tb.Helper()
	n := c.startNode(fmt.Sprintf("node-%d", len(c.Nodes)+1))
	c.Nodes = append(c.Nodes, n)
	return n
}

// Token returns a valid token for a user of a tenant, for an hour.
func (c *Cluster) Token(tenant string, user uuid.UUID) string {
	return c.TokenWith(jwt.MapClaims{
		"sub": user.String(), "tenant_id": tenant,
		"iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix(),
	})
}

// TokenWith signs arbitrary claims with the cluster's secret (HS256).
func (c *Cluster) TokenWith(claims jwt.MapClaims) string {
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(c.Secret)
	if err != nil {
		c.tb.Fatalf("nodetest: sign token: %v", err)
	}
	return s
}

// URL returns the node's WebSocket URL.
func (n *Node) URL() string { return "ws://" + n.addr + "/ws" }

// HTTPURL returns the node's base HTTP URL; admin endpoints (/metrics,
// /healthz, /readyz) are served there too.
func (n *Node) HTTPURL() string { return "http://" + n.addr }

// Metric returns the sum of every series of a metric of the node (a counter
// or gauge), 0 when it has none.
func (n *Node) Metric(name string) float64 {
	return n.MetricWith(name, nil)
}

// MetricWith returns the sum of the series of a metric of the node (a
// counter or gauge) that carry all of labels, 0 when there are none.
func (n *Node) MetricWith(name string, labels map[string]string) float64 {
	families, err := n.Registry.Gather()
	if err != nil {
		return 0
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			for k, v := range labels {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == k && l.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue series
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// Stop shuts the node down gracefully: its clients are closed with 1001.
// Safe to call more than once.
func (n *Node) Stop() {
	n.stopped.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.http.Shutdown(ctx)
		_ = n.Server.Shutdown(ctx)
		<-n.served
		_ = n.quota.Close()
		_ = n.quotaDB.Close()
		n.hub.Close()
		_ = n.rdb.Close()
	})
}

// Crash stops the node the way a killed process leaves Redis: its
// cluster-wide limits lose Redis first, so that its connection counts are
// neither released nor removed and stay until they expire. Its clients are
// closed.
func (n *Node) Crash() {
	_ = n.quotaDB.Close()
	n.Stop()
}

// QuotaInstance is the node's id among the instances of the cluster-wide
// connection counts in Redis.
func (n *Node) QuotaInstance() string { return n.quota.Instance() }
