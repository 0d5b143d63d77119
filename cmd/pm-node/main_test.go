package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pmhq/pm/node"
	"github.com/pmhq/pm/node/nodetest"
	"github.com/pmhq/pm/repo/repotest"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// baseEnv is the environment of a node that serves on loopback ports of
// its own, with a fresh database and Redis prefix.
func baseEnv(t *testing.T) map[string]string {
	return map[string]string{
		"PM_DATABASE_URL": repotest.MustDatabaseURL(t),
		"PM_REDIS_URL":    nodetest.RedisURL(),
		"PM_REDIS_PREFIX": nodetest.RandomPrefix(),
		"PM_JWT_SECRET":   "secret",
		"PM_LISTEN_ADDR":  "127.0.0.1:0",
		"PM_ADMIN_ADDR":   "127.0.0.1:0",
		"PM_LOG_FORMAT":   "text",
	}
}

// startRun starts the node through run and returns its client and admin
// addresses and a function that stops it and returns run's result.
func startRun(t *testing.T, env map[string]string) (client, admin net.Addr, stop func() error) {
	t.Helper()
	return startRunLogging(t, env, io.Discard)
}

// startRunLogging is startRun with the node's log written to logs.
func startRunLogging(t *testing.T, env map[string]string, logs io.Writer) (client, admin net.Addr, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan [2]net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, nil, envOf(env), logs, func(client, admin net.Addr) { addrs <- [2]net.Addr{client, admin} })
	}()
	stopped := false
	stop = func() error {
		t.Helper()
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(20 * time.Second):
			t.Fatal("still running 20s after its context ended")
			return nil
		}
	}
	t.Cleanup(func() { _ = stop() })
	select {
	case a := <-addrs:
		return a[0], a[1], stop
	case err := <-done:
		stopped = true
		cancel()
		t.Fatalf("run ended before serving: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("not serving after 30s")
	}
	return nil, nil, nil
}

// The node starts from its environment alone, migrates an empty database,
// serves, and stops cleanly when its context ends.
func TestRunServesAndStops(t *testing.T) {
	client, admin, stop := startRun(t, baseEnv(t))
	for url, want := range map[string]int{
		"http://" + admin.String() + "/readyz": http.StatusOK,
		"http://" + client.String() + "/ws":    http.StatusUnauthorized, // no token
		"http://" + client.String() + "/":      http.StatusOK,           // the board
		"http://" + client.String() + "/nope":  http.StatusNotFound,
		// Profiles on the admin port only.
		"http://" + admin.String() + "/debug/pprof/":              http.StatusOK,
		"http://" + admin.String() + "/debug/pprof/heap?debug=1":  http.StatusOK,
		"http://" + client.String() + "/debug/pprof/":             http.StatusNotFound,
		"http://" + client.String() + "/debug/pprof/heap?debug=1": http.StatusNotFound,
	} {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET %s: %d, want %d", url, resp.StatusCode, want)
		}
	}
	// The board is the bundle pm-node embeds, under its policy.
	resp, err := http.Get("http://" + client.String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Content-Type"); got != "text/html; charset=utf-8" {
		t.Errorf("GET /: Content-Type %q", got)
	}
	if got := resp.Header.Get("Content-Security-Policy"); got != node.BoardPolicy {
		t.Errorf("GET /: Content-Security-Policy %q", got)
	}
	// The store's metrics are on the node's registry: pool statistics and
	// the circuit breaker, closed.
	resp, err = http.Get("http://" + admin.String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\npm_db_pool_max_conns ", "\npm_db_pool_acquires_total ", `pm_db_breaker_state{state="closed"} 1`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("run after shutdown: %v", err)
	}
}

// Neither listener lets a connection hold resources without a request that
// it serves: an idle keep-alive connection is closed after the idle timeout
// (also after a 401), a request whose headers never end is cut off after
// the read timeout, and oversized headers or bodies are refused.
func TestHTTPLimits(t *testing.T) {
	const idle, read = 300 * time.Millisecond, 300 * time.Millisecond
	env := baseEnv(t)
	env["PM_HTTP_IDLE_TIMEOUT"] = idle.String()
	env["PM_HTTP_READ_TIMEOUT"] = read.String()
	env["PM_HTTP_MAX_HEADER_BYTES"] = "4096"
	client, admin, _ := startRun(t, env)
	// waitClosed reads until the server closes the connection and fails if
	// it is still open after a few seconds, far beyond both timeouts.
	waitClosed := func(t *testing.T, conn net.Conn, br *bufio.Reader, after time.Time, atLeast time.Duration) {
		t.Helper()
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := io.Copy(io.Discard, br)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("connection still open %v later", time.Since(after).Round(time.Millisecond))
		}
		if d := time.Since(after); d < atLeast {
			t.Fatalf("closed after %v, before the timeout", d)
		}
	}
	dial := func(t *testing.T, addr net.Addr) (net.Conn, *bufio.Reader) {
		t.Helper()
		conn, err := net.Dial("tcp", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn, bufio.NewReader(conn)
	}
	for _, l := range []struct {
		name string
		addr net.Addr
		path string
		want int // answer to a plain GET of path
	}{
		{"client", client, "/ws", http.StatusUnauthorized},
		{"admin", admin, "/healthz", http.StatusOK},
	} {
		get := "GET " + l.path + " HTTP/1.1\r\nHost: pm\r\n"
		t.Run(l.name+"/idle keep-alive connection", func(t *testing.T) {
			conn, br := dial(t, l.addr)
			if _, err := io.WriteString(conn, get+"\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			answered := time.Now()
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != l.want || resp.Close {
				t.Fatalf("HTTP %d, close %v; want %d on a kept-alive connection", resp.StatusCode, resp.Close, l.want)
			}
			waitClosed(t, conn, br, answered, idle-50*time.Millisecond)
		})
		t.Run(l.name+"/headers never finished", func(t *testing.T) {
			conn, br := dial(t, l.addr)
			sent := time.Now()
			if _, err := io.WriteString(conn, get+"X-Slow: 1\r\n"); err != nil {
				t.Fatal(err)
			}
			waitClosed(t, conn, br, sent, read-50*time.Millisecond)
		})
		t.Run(l.name+"/oversized headers", func(t *testing.T) {
			conn, br := dial(t, l.addr)
			if _, err := io.WriteString(conn, get+"X-Big: "+strings.Repeat("b", 8<<10)+"\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
				t.Fatalf("HTTP %d, want 431", resp.StatusCode)
			}
		})
		t.Run(l.name+"/oversized body", func(t *testing.T) {
			conn, br := dial(t, l.addr)
			if _, err := io.WriteString(conn, get+"Content-Length: 10485760\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge || !resp.Close {
				t.Fatalf("HTTP %d, close %v; want 413 and the connection closed", resp.StatusCode, resp.Close)
			}
		})
	}
}

func TestRunRefuses(t *testing.T) {
	base := func() map[string]string {
		return map[string]string{
			"PM_DATABASE_URL": "postgres://nobody@127.0.0.1:1/none?sslmode=disable",
			"PM_JWT_SECRET":   "secret",
			"PM_LISTEN_ADDR":  "127.0.0.1:0",
			"PM_ADMIN_ADDR":   "127.0.0.1:0",
			"PM_MIGRATE":      "false",
		}
	}
	superuser := base()
	superuser["PM_DATABASE_URL"] = repotest.AdminDatabaseURL(t, repotest.MustMigratedDatabaseURL(t))
	noSecret := base()
	delete(noSecret, "PM_JWT_SECRET")
	noSecret["PM_DATABASE_URL"] = repotest.MustMigratedDatabaseURL(t)
	badDuration := base()
	badDuration["PM_REQUEST_TIMEOUT"] = "soon"
	badBool := base()
	badBool["PM_MIGRATE"] = "maybe"
	noIdleLimit := base()
	noIdleLimit["PM_HTTP_IDLE_TIMEOUT"] = "0s"
	negativeCap := base()
	negativeCap["PM_TENANT_MAX_CONNECTIONS"] = "-1"
	zeroConnectRate := base()
	zeroConnectRate["PM_CONNECT_RATE"] = "0"
	noCountTTL := base()
	noCountTTL["PM_CONNECTION_COUNT_TTL"] = "0s"
	breakerNever := base()
	breakerNever["PM_DB_BREAKER_FAILURES"] = "0"
	breakerShut := base()
	breakerShut["PM_DB_BREAKER_OPEN"] = "0s"
	noProbes := base()
	noProbes["PM_DB_BREAKER_PROBES"] = "0"
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"breaker opening at once", breakerNever, nil, "PM_DB_BREAKER_FAILURES"},
		{"breaker open for no time", breakerShut, nil, "PM_DB_BREAKER_OPEN"},
		{"breaker without probes", noProbes, nil, "PM_DB_BREAKER_PROBES"},
		{"breaker flag", base(), []string{"-db-breaker-open=-1s"}, "PM_DB_BREAKER_OPEN"},
		{"superuser role", superuser, nil, "PM_ALLOW_RLS_BYPASS"},
		{"no token verification configured", noSecret, nil, "PM_JWT_SECRET"},
		{"bad duration", badDuration, nil, "PM_REQUEST_TIMEOUT"},
		{"bad boolean", badBool, nil, "PM_MIGRATE"},
		{"no idle limit", noIdleLimit, nil, "PM_HTTP_IDLE_TIMEOUT"},
		{"negative tenant cap", negativeCap, nil, "PM_TENANT_MAX_CONNECTIONS"},
		{"connect rate zero", zeroConnectRate, nil, "PM_CONNECT_RATE"},
		{"no connection count TTL", noCountTTL, nil, "PM_CONNECTION_COUNT_TTL"},
		{"stray argument", base(), []string{"serve"}, "unexpected arguments"},
		{"unknown flag", base(), []string{"-no-such-flag"}, "no-such-flag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var stderr strings.Builder
			err := run(ctx, tt.args, envOf(tt.env), &stderr, nil)
			if err == nil {
				t.Fatal("run started; want a refusal")
			}
			if msg := err.Error() + stderr.String(); !strings.Contains(msg, tt.want) {
				t.Fatalf("refusal %q does not mention %q", msg, tt.want)
			}
		})
	}
}

// `pm-node migrate` applies the migrations to an empty database and returns
// without serving; run again, it has nothing to do. A node with
// PM_MIGRATE=false then serves from that schema.
func TestMigrateSubcommand(t *testing.T) {
	env := baseEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range 2 {
		var stderr strings.Builder
		if err := run(ctx, []string{"migrate"}, envOf(env), &stderr, func(net.Addr, net.Addr) {
			t.Error("migrate started serving")
		}); err != nil {
			t.Fatalf("migrate (run %d): %v\n%s", i+1, err, stderr.String())
		}
		if !strings.Contains(stderr.String(), "migrations applied") {
			t.Fatalf("migrate (run %d) logged no success:\n%s", i+1, stderr.String())
		}
	}
	var version int64
	var dirty bool
	pool := repotest.MustPool(t, env["PM_DATABASE_URL"])
	if err := pool.QueryRow(ctx, `SELECT version, dirty FROM schema_migrations`).Scan(&version, &dirty); err != nil {
		t.Fatalf("read the schema version: %v", err)
	}
	if version == 0 || dirty {
		t.Fatalf("schema version %d, dirty %v: want a clean, applied schema", version, dirty)
	}

	env["PM_MIGRATE"] = "false"
	_, admin, stop := startRun(t, env)
	resp, err := http.Get("http://" + admin.String() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz of a node on the migrated schema: HTTP %d", resp.StatusCode)
	}
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
}

func TestMigrateSubcommandRefuses(t *testing.T) {
	unreachable := map[string]string{"PM_DATABASE_URL": "postgres://nobody@127.0.0.1:1/none?sslmode=disable"}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"database out of reach", []string{"migrate"}, "migrate: connect"},
		{"stray argument", []string{"migrate", "now"}, "unexpected arguments"},
		{"unknown flag", []string{"migrate", "-no-such-flag"}, "no-such-flag"},
		{"bad setting", []string{"migrate", "-request-timeout", "soon"}, "request-timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var stderr strings.Builder
			err := run(ctx, tt.args, envOf(unreachable), &stderr, nil)
			if err == nil {
				t.Fatal("migrate succeeded; want a refusal")
			}
			if msg := err.Error() + stderr.String(); !strings.Contains(msg, tt.want) {
				t.Fatalf("refusal %q does not mention %q", msg, tt.want)
			}
		})
	}
}

// Unless set, a node's connection cap leaves room under the open-file limit
// for its own connections to Postgres and Redis.
func TestMaxConnectionsDefaultsBelowTheFileLimit(t *testing.T) {
	limit := openFileLimit()
	if limit == 0 {
		t.Fatal("RLIMIT_NOFILE could not be read")
	}
	c, err := parseConfig(nil, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxConns <= 0 || c.MaxConns > limit-256 {
		t.Errorf("default PM_MAX_CONNECTIONS = %d with an open-file limit of %d: want at most %d, more than 0", c.MaxConns, limit, limit-256)
	}
	set, err := parseConfig(nil, func(name string) string {
		if name == "PM_MAX_CONNECTIONS" {
			return "0"
		}
		return ""
	}, io.Discard)
	if err != nil || set.MaxConns != 0 {
		t.Errorf("PM_MAX_CONNECTIONS=0: got %d, %v; want 0 (unlimited)", set.MaxConns, err)
	}
	for _, tc := range []struct{ limit, want int }{{0, 0}, {200, 0}, {1024, 768}, {20000, 19000}, {1 << 20, (1 << 20) - (1<<20)/20}} {
		if got := defaultMaxConnections(tc.limit); got != tc.want {
			t.Errorf("defaultMaxConnections(%d) = %d, want %d", tc.limit, got, tc.want)
		}
	}
}
