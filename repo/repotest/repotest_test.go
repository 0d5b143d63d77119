package repotest_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pmhq/pm/repo/repotest"
)

func TestMustDatabaseURL(t *testing.T) {
	var name string
	t.Run("use", func(t *testing.T) {
		dsn := repotest.MustDatabaseURL(t)
		pool := repotest.MustPool(t, dsn)
		var user, owner string
		var super, bypass bool
		err := pool.QueryRow(t.Context(), `SELECT current_user, current_database(), r.rolsuper, r.rolbypassrls,
				pg_get_userbyid(d.datdba)
			FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = current_database()`).
			Scan(&user, &name, &super, &bypass, &owner)
		if err != nil {
			t.Fatal(err)
		}
		if user != repotest.AppRole || owner != repotest.AppRole || super || bypass || !strings.HasPrefix(name, "pm_test_") {
			t.Errorf("user %s, database %s owned by %s, superuser %v, bypassrls %v", user, name, owner, super, bypass)
		}
		if !strings.Contains(dsn, "127.0.0.1") || !strings.Contains(dsn, "sslmode=disable") {
			t.Errorf("DSN %q", dsn)
		}
	})
	// The database is gone once its test has ended.
	admin, err := pgx.Connect(t.Context(), repotest.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = admin.Close(t.Context()) }()
	var exists bool
	if err := admin.QueryRow(t.Context(), `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil || exists {
		t.Errorf("database %s still exists (%v)", name, err)
	}
}

func TestMustDatabaseURLParallel(t *testing.T) {
	seen := sync.Map{}
	for i := range 4 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			dsn := repotest.MustDatabaseURL(t)
			if _, dup := seen.LoadOrStore(dsn, true); dup {
				t.Errorf("database handed out twice: %s", dsn)
			}
		})
	}
}

// fatalRecorder records Fatalf and ends its goroutine, as testing.T does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestUnreachableFails(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	t.Setenv(repotest.AdminURLEnv, "postgres://postgres@"+addr+"/postgres?sslmode=disable")

	r := &fatalRecorder{TB: t}
	var wg sync.WaitGroup
	wg.Go(func() { repotest.MustDatabaseURL(r) })
	wg.Wait()
	if !strings.Contains(r.msg, "make services") || !strings.Contains(r.msg, addr) {
		t.Errorf("failure message %q does not say how to start Postgres", r.msg)
	}
}

// The proxy forwards while up; down, it refuses new connections and resets
// open ones, as a stopped server does; blackholed, it accepts and never
// answers; up again, it forwards again.
func TestProxy(t *testing.T) {
	proxy, url := repotest.MustProxy(t, repotest.MustDatabaseURL(t))
	connect := func(timeout time.Duration) (*pgx.Conn, error) {
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		defer cancel()
		return pgx.Connect(ctx, url)
	}
	conn, err := connect(5 * time.Second)
	if err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	defer conn.Close(context.Background())
	if err := conn.Ping(t.Context()); err != nil {
		t.Fatalf("ping through the proxy: %v", err)
	}

	proxy.Down()
	if err := conn.Ping(t.Context()); err == nil {
		t.Fatal("a connection open when the proxy went down still answers")
	}
	start := time.Now()
	if _, err := connect(5 * time.Second); err == nil {
		t.Fatal("connected while the proxy is down")
	} else if time.Since(start) > 4*time.Second {
		t.Fatalf("connecting while down timed out (%v) instead of being refused", err)
	}

	proxy.Blackhole()
	if _, err := connect(300 * time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("connecting to a blackhole: %v, want the deadline to pass", err)
	}

	proxy.Up()
	again, err := connect(5 * time.Second)
	if err != nil {
		t.Fatalf("through the proxy, up again: %v", err)
	}
	defer again.Close(context.Background())
	if err := again.Ping(t.Context()); err != nil {
		t.Fatalf("ping through the proxy, up again: %v", err)
	}
}
