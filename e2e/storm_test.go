//go:build storm && linux

// The reconnect storm runs 2,000 SDK clients in the test process: under the
// race detector their goroutines would pass its limit of 8,128, so it has a
// build tag of its own and runs without -race (`make test-storm`, part of
// `make test`).

package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/time/rate"

	"github.com/pmhq/pm/client"
)

const (
	stormClients = 2000
	survivors    = 10
)

// raiseFileLimit lifts the soft limit on open files to the hard one: the
// test process holds a socket per client.
func raiseFileLimit(t *testing.T, need uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
	}
	if lim.Cur < need {
		t.Fatalf("e2e: the open-file limit is %d, the storm needs about %d (ulimit -n)", lim.Cur, need)
	}
}

// 11. A node holding 2,000 connections dies (SIGKILL). Its clients all
// reconnect through HAProxy to the survivor at once; the survivor's
// connection rate (burst 200, then 400 a second) refuses the excess with 503
// and Retry-After, the SDK waits it out with jitter, and all 2,000 end up
// connected. Meanwhile the survivor's own clients' requests are never
// refused (no RATE_LIMITED, no UNAVAILABLE) and none times out.
func TestReconnectStorm(t *testing.T) {
	if why := haproxyMissing(); why != "" {
		missing(t, why)
	}
	raiseFileLimit(t, 2*stormClients+1000)
	c := startCluster(t, options{lb: true, env: []string{
		"PM_CONNECT_RATE=400", "PM_CONNECT_BURST=200",
		// Every upgrade runs the tenant admission in Redis; the cap is not reached.
		"PM_TENANT_MAX_CONNECTIONS=10000",
	}})
	victim, survivor := c.nodes[0], c.nodes[1]
	tenant := newTenant()

	// The storm's clients connect to the victim directly, at a pace its
	// connection rate admits; reconnects go through HAProxy.
	var lost, found atomic.Int64
	quiet := slog.New(slog.DiscardHandler)
	clients := make([]*client.Client, stormClients)
	pace := rate.NewLimiter(250, 1)
	var wg sync.WaitGroup
	errs := make(chan error, stormClients)
	for i := range clients {
		if err := pace.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			cl, err := client.Dial(ctx, victim.URL(), client.Options{
				Token:  c.token(user{name: fmt.Sprint("storm-", i), tenant: tenant, id: uuid.New()}),
				URLs:   []string{c.URL()},
				Logger: quiet,
				OnConnectionChange: func(connected bool, _ string) {
					if connected {
						found.Add(1)
					} else {
						lost.Add(1)
					}
				},
			})
			if err != nil {
				errs <- fmt.Errorf("storm client %d: %w", i, err)
				return
			}
			clients[i] = cl
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, cl := range clients {
			_ = cl.Close()
		}
	})
	eventually(t, 30*time.Second, func() bool {
		n, err := victim.metric("pm_connections")
		return err == nil && n == stormClients
	}, "the victim holds the %d storm clients", stormClients)

	// The survivor's own clients keep asking while the storm hits it.
	type result struct {
		at  time.Time
		err error
	}
	var (
		mu      sync.Mutex
		results []result
	)
	stop := make(chan struct{})
	var busy sync.WaitGroup
	for i := range survivors {
		cl := c.dial(t, survivor.URL(), newUser(tenant, fmt.Sprint("survivor-", i)), func(o *client.Options) {
			o.NoBusyRetry = true // a RATE_LIMITED or UNAVAILABLE answer is an error, not retried
		})
		busy.Add(1)
		go func() {
			defer busy.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Duration(50+rand.IntN(100)) * time.Millisecond): // ~10 requests/s
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := cl.ListProjects(ctx)
				cancel()
				mu.Lock()
				results = append(results, result{time.Now(), err})
				mu.Unlock()
			}
		}()
	}

	victim.kill()
	killed := time.Now()
	eventually(t, 120*time.Second, func() bool {
		return lost.Load() == stormClients && found.Load() == stormClients
	}, "all %d clients reconnect (lost %d, back %d)", stormClients, lost.Load(), found.Load())
	absorbed := time.Now()
	close(stop)
	busy.Wait()
	t.Logf("the %d clients were back %v after the kill", stormClients, absorbed.Sub(killed).Round(time.Millisecond))

	during := 0
	for _, r := range results {
		if r.err != nil {
			t.Errorf("a survivor's request at +%v failed: %v", r.at.Sub(killed).Round(time.Millisecond), r.err)
		}
		if errors.Is(r.err, context.DeadlineExceeded) {
			t.Error("a survivor's request timed out")
		}
		if r.at.After(killed) && r.at.Before(absorbed) {
			during++
		}
	}
	if during == 0 {
		t.Error("no survivor request ran during the storm: the test proved nothing about them")
	}
	refused, err := survivor.metric(`pm_upgrades_total{result="connect_rate"}`)
	if err != nil || refused == 0 {
		t.Errorf("the survivor refused %v upgrades for the connection rate (%v): the storm never met the limit", refused, err)
	}
	t.Logf("%d survivor requests during the storm, all served; %v upgrades refused for the connection rate", during, refused)
	if n, err := survivor.metric("pm_connections"); err != nil || n != stormClients+survivors {
		t.Errorf("the survivor holds %v connections (%v), want %d", n, err, stormClients+survivors)
	}
	for i, cl := range clients {
		if !cl.Connected() {
			t.Fatalf("storm client %d is not connected", i)
		}
	}
}
