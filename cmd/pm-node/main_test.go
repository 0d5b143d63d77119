package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pmhq/pm/node/nodetest"
	"github.com/pmhq/pm/repo/repotest"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// The node starts from its environment alone, migrates an empty database,
// serves, and stops cleanly when its context ends.
func TestRunServesAndStops(t *testing.T) {
	env := map[string]string{
		"PM_DATABASE_URL": repotest.MustDatabaseURL(t),
		"PM_REDIS_URL":    nodetest.RedisURL(),
		"PM_REDIS_PREFIX": nodetest.RandomPrefix(),
		"PM_JWT_SECRET":   "secret",
		"PM_LISTEN_ADDR":  "127.0.0.1:0",
		"PM_ADMIN_ADDR":   "127.0.0.1:0",
		"PM_LOG_FORMAT":   "text",
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrs := make(chan [2]net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, nil, envOf(env), io.Discard, func(client, admin net.Addr) { addrs <- [2]net.Addr{client, admin} })
	}()
	var a [2]net.Addr
	select {
	case a = <-addrs:
	case err := <-done:
		t.Fatalf("run ended before serving: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("not serving after 30s")
	}
	for url, want := range map[string]int{
		"http://" + a[1].String() + "/readyz": http.StatusOK,
		"http://" + a[0].String() + "/ws":     http.StatusUnauthorized, // no token
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
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after shutdown: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("still running 20s after its context ended")
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
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"superuser role", superuser, nil, "PM_ALLOW_RLS_BYPASS"},
		{"no token verification configured", noSecret, nil, "PM_JWT_SECRET"},
		{"bad duration", badDuration, nil, "PM_REQUEST_TIMEOUT"},
		{"bad boolean", badBool, nil, "PM_MIGRATE"},
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
