package node_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/node"
	"github.com/pmhq/pm/node/nodetest"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
	"github.com/pmhq/pm/repo"
	"github.com/pmhq/pm/repo/repotest"
)

// readyz returns the status and body of the node's /readyz.
func readyz(t *testing.T, n *nodetest.Node) (int, string) {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(n.HTTPURL() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, strings.TrimSpace(string(body))
}

// gatedStore holds every ListActivity call until release is closed, even
// past the end of its request's context, as a database call that is slow to
// honour a cancel does.
type gatedStore struct {
	node.Store
	entered chan struct{} // receives once per call that waits
	release chan struct{}
}

func (s *gatedStore) ListActivity(ctx context.Context, actor pm.Actor, q pm.ActivityQuery) ([]pm.ActivityEntry, error) {
	s.entered <- struct{}{}
	<-s.release
	return s.Store.ListActivity(ctx, actor, q)
}

// A draining node is not ready, from the moment its shutdown starts, while
// its connections are still finishing; it never becomes ready again.
func TestReadinessWhileDraining(t *testing.T) {
	gate := &gatedStore{entered: make(chan struct{}, 1), release: make(chan struct{})}
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(gate.release) }) }
	c := nodetest.Start(t, nodetest.Options{Configure: func(cfg *node.Config) {
		gate.Store = cfg.Store
		cfg.Store = gate
	}})
	t.Cleanup(release) // before the node stops, should the test end early
	n := c.Nodes[0]
	if status, body := readyz(t, n); status != http.StatusOK {
		t.Fatalf("before shutdown: %d %q", status, body)
	}
	conn := nodetest.Dial(t, n.URL(), c.Token("acme", uuid.New()))
	conn.Send(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_GetActivityRequest{
		GetActivityRequest: &pmv1.GetActivityRequest{ProjectId: uuid.NewString()}}})
	select {
	case <-gate.entered: // the connection's request runs until released
	case <-time.After(wait):
		t.Fatal("the request never reached the store")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	shutdown := make(chan error, 1)
	go func() { shutdown <- n.Server.Shutdown(ctx) }()
	// The node starts draining before it sends 1001, so by now it drains.
	if code := conn.WaitClosed(wait); code != node.CloseGoingAway {
		t.Fatalf("close code %d, want %d", code, node.CloseGoingAway)
	}
	status, body := readyz(t, n)
	select {
	case err := <-shutdown:
		t.Fatalf("shutdown ended (%v) while a connection was still running a request", err)
	default:
	}
	if status != http.StatusServiceUnavailable || body != "draining" {
		t.Fatalf("while draining: %d %q, want 503 draining", status, body)
	}

	release()
	if err := <-shutdown; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if status, body := readyz(t, n); status != http.StatusServiceUnavailable {
		t.Fatalf("after shutdown: %d %q, want 503", status, body)
	}
}

// A node whose database is out of reach is not ready, and is ready again
// once the database is back.
func TestReadinessFollowsPostgres(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{})
	n := c.Nodes[0]
	if status, body := readyz(t, n); status != http.StatusOK {
		t.Fatalf("before: %d %q", status, body)
	}
	cfg, err := pgx.ParseConfig(c.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	db := cfg.Database
	admin := repotest.MustPool(t, repotest.AdminURL())
	ctx := t.Context()
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := admin.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}

	// The database goes away: it refuses new connections and ends the
	// node's.
	exec(`ALTER DATABASE ` + pgx.Identifier{db}.Sanitize() + ` ALLOW_CONNECTIONS false`)
	// pg_terminate_backend with a timeout (Postgres 14) waits for each to end.
	var ended bool
	err = admin.QueryRow(ctx, `SELECT coalesce(bool_and(pg_terminate_backend(pid, 5000)), true)
		FROM pg_stat_activity WHERE datname = $1`, db).Scan(&ended)
	if err != nil || !ended {
		t.Fatalf("ending the node's database connections: %v (all ended: %v)", err, ended)
	}
	for range 3 { // whichever pooled connection a check takes, it fails
		if status, body := readyz(t, n); status != http.StatusServiceUnavailable || !strings.HasPrefix(body, "postgres: ") {
			t.Fatalf("database gone: %d %q, want 503 postgres: …", status, body)
		}
	}

	// It is back: the node is ready again, at the latest once the pool has
	// dropped the connections that died and the circuit breaker, should
	// those failures have opened it, has let a probe through.
	exec(`ALTER DATABASE ` + pgx.Identifier{db}.Sanitize() + ` ALLOW_CONNECTIONS true`)
	deadline := time.Now().Add(wait + repo.DefaultBreakerOpen)
	for {
		status, body := readyz(t, n)
		if status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("database back: still %d %q after %v", status, body, wait)
		}
	}
}

// A node whose database circuit breaker is open is not ready and says why;
// meanwhile its clients' requests fail at once with UNAVAILABLE and the time
// until the breaker's next probe.
func TestReadinessWhileTheBreakerIsOpen(t *testing.T) {
	const open = time.Hour
	var proxy *repotest.Proxy
	c := nodetest.Start(t, nodetest.Options{Store: func(cfg *repo.Config) {
		proxy, cfg.DatabaseURL = repotest.MustProxy(t, cfg.DatabaseURL)
		cfg.BreakerFailures, cfg.BreakerOpen = 2, open
	}})
	n := c.Nodes[0]
	if status, body := readyz(t, n); status != http.StatusOK {
		t.Fatalf("before: %d %q", status, body)
	}
	conn := nodetest.Dial(t, n.URL(), c.Token("acme", uuid.New()))
	project := mustCreate(t, conn, &pmv1.CreateWorkItemRequest{ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT, Title: "Breaker"})

	proxy.Down()
	// The checks are the failures that open the breaker; every one of them
	// fails, those before it opens for a failed connection.
	deadline := time.Now().Add(wait)
	for {
		status, body := readyz(t, n)
		if status != http.StatusServiceUnavailable || !strings.HasPrefix(body, "postgres: ") {
			t.Fatalf("database gone: %d %q, want 503 postgres: …", status, body)
		}
		if strings.Contains(body, "circuit breaker open") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("breaker not open after %v of failed checks: %q", wait, body)
		}
	}
	if got := n.MetricWith("pm_db_breaker_state", map[string]string{"state": "open"}); got != 1 {
		t.Fatalf("pm_db_breaker_state{state=open} = %v, want 1", got)
	}
	start := time.Now()
	resp := create(conn, &pmv1.CreateWorkItemRequest{ProjectId: project.Id, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "refused"})
	took := time.Since(start)
	e := resp.GetError()
	if e.GetCode() != pm.EUnavailable || e.GetRetryAfterMs() <= 0 || e.GetRetryAfterMs() > open.Milliseconds() {
		t.Fatalf("write while the breaker is open: %v, want UNAVAILABLE with retry_after_ms in (0, %d]", resp, open.Milliseconds())
	}
	t.Logf("write refused in %v, retry_after_ms %d", took, e.GetRetryAfterMs())
	if got := n.Metric("pm_db_breaker_rejections_total"); got < 2 {
		t.Fatalf("pm_db_breaker_rejections_total = %v, want the check and the write at least", got)
	}
}
