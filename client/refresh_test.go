package client_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/pmhq/pm/client"
	"github.com/pmhq/pm/node"
	"github.com/pmhq/pm/node/nodetest"
)

// shortToken is a token of user that expires in about lifetime (exp has
// whole seconds), and its exp.
func shortToken(cl *nodetest.Cluster, user uuid.UUID, lifetime time.Duration) (string, int64) {
	now := time.Now()
	exp := now.Add(lifetime).Unix()
	return cl.TokenWith(jwt.MapClaims{"sub": user.String(), "tenant_id": tenant, "iat": now.Unix(), "exp": exp}), exp
}

// witness opens a raw connection whose token expires a second after exp:
// once it is closed with 4500, a token that expired at exp has expired on
// the node too.
func witness(t *testing.T, cl *nodetest.Cluster, user uuid.UUID, exp int64) *nodetest.Conn {
	return nodetest.Dial(t, cl.Nodes[0].URL(), cl.TokenWith(jwt.MapClaims{
		"sub": user.String(), "tenant_id": tenant, "iat": time.Now().Unix(), "exp": exp + 1}))
}

// waitExpired waits until w is closed with 4500.
func waitExpired(t *testing.T, w *nodetest.Conn) {
	t.Helper()
	if code := w.WaitClosed(timeout); code != node.CloseTokenExpired {
		t.Fatalf("witness closed with %d, want %d", code, node.CloseTokenExpired)
	}
}

// A client with a token source refreshes its token in band ahead of
// expiry: it outlives the first token on its first connection.
func TestTokenSourceRefreshesInBand(t *testing.T) {
	cl := nodetest.Start(t, nodetest.Options{})
	user := uuid.New()
	first, exp := shortToken(cl, user, 3*time.Second)
	var calls atomic.Int32
	var drops atomic.Int32
	c := mustDial(t, cl, cl.Nodes[0].URL(), user, client.Options{
		TokenSource: func(context.Context) (string, error) {
			if calls.Add(1) == 1 {
				return first, nil
			}
			tok, _ := shortToken(cl, user, 3*time.Second)
			return tok, nil
		},
		OnConnectionChange: func(connected bool, _ string) {
			if !connected {
				drops.Add(1)
			}
		},
	})
	w := witness(t, cl, user, exp)
	waitExpired(t, w)
	// Two refreshes at least, the second with the first token gone.
	n := cl.Nodes[0]
	deadline := time.Now().Add(timeout)
	for counter(t, n, "pm_requests_total", "op", "refresh_token", "outcome", "ok") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("refreshes: %v, token source asked %d times", counter(t, n, "pm_requests_total", "op", "refresh_token", "outcome", "ok"), calls.Load())
		}
		time.Sleep(20 * time.Millisecond) // polling the node's counter
	}
	if _, err := c.ListProjects(testContext(t)); err != nil {
		t.Fatalf("after the first token expired: %v", err)
	}
	requireOneUpgrade(t, n, drops.Load())
}

// requireOneUpgrade fails the test if the client connected more than once
// (the witness is the node's other connection).
func requireOneUpgrade(t *testing.T, n *nodetest.Node, drops int32) {
	t.Helper()
	if got := counter(t, n, "pm_upgrades_total", "result", "ok"); got != 2 || drops != 0 {
		t.Fatalf("%v upgrades (want the client's and the witness's), %d drops", got, drops)
	}
}

// counter reads one series of a node's counter, by label pairs.
func counter(t *testing.T, n *nodetest.Node, name string, labels ...string) float64 {
	t.Helper()
	families, err := n.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue series
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// A failing token source, and a token the node refuses (another user's),
// are retried; the connection carries on once a good token comes.
func TestFailedRefreshIsRetried(t *testing.T) {
	cl := nodetest.Start(t, nodetest.Options{})
	user := uuid.New()
	first, exp := shortToken(cl, user, 3*time.Second)
	var calls atomic.Int32
	var drops atomic.Int32
	good := make(chan struct{})
	c := mustDial(t, cl, cl.Nodes[0].URL(), user, client.Options{
		Reconnect: client.Backoff{Min: 50 * time.Millisecond, Max: 100 * time.Millisecond},
		TokenSource: func(context.Context) (string, error) {
			switch calls.Add(1) {
			case 1:
				return first, nil
			case 2:
				return "", errors.New("identity provider down")
			case 3:
				tok, _ := shortToken(cl, uuid.New(), time.Hour) // another user's
				return tok, nil
			case 4:
				close(good)
			}
			return cl.Token(tenant, user), nil
		},
		OnConnectionChange: func(connected bool, _ string) {
			if !connected {
				drops.Add(1)
			}
		},
	})
	w := witness(t, cl, user, exp)
	select {
	case <-good:
	case <-testContext(t).Done():
		t.Fatalf("token source asked %d times", calls.Load())
	}
	waitExpired(t, w)
	if _, err := c.ListProjects(testContext(t)); err != nil {
		t.Fatalf("after the first token expired: %v", err)
	}
	requireOneUpgrade(t, cl.Nodes[0], drops.Load())
	if got := counter(t, cl.Nodes[0], "pm_requests_total", "op", "refresh_token", "outcome", "UNAUTHORIZED"); got != 1 {
		t.Fatalf("%v refreshes refused, want 1 (the other user's token)", got)
	}
}

// A token the node keeps refusing lets the connection expire: the node
// closes it with 4500 and the client reconnects with a fresh token from
// the source.
func TestExpiryReconnectsWithAFreshToken(t *testing.T) {
	cl := nodetest.Start(t, nodetest.Options{})
	user := uuid.New()
	first, _ := shortToken(cl, user, 3*time.Second)
	var calls atomic.Int32
	var lost atomic.Bool
	up := make(chan struct{})
	var logs syncBuffer
	c := mustDial(t, cl, cl.Nodes[0].URL(), user, client.Options{
		Logger:    slog.New(slog.NewTextHandler(&logs, nil)),
		Reconnect: client.Backoff{Min: 50 * time.Millisecond, Max: 100 * time.Millisecond},
		TokenSource: func(context.Context) (string, error) {
			switch {
			case calls.Add(1) == 1:
				return first, nil
			case !lost.Load():
				tok, _ := shortToken(cl, uuid.New(), time.Hour) // refused in band
				return tok, nil
			}
			return cl.Token(tenant, user), nil
		},
		OnConnectionChange: func(connected bool, _ string) {
			if connected {
				close(up)
			} else {
				lost.Store(true)
			}
		},
	})
	select {
	case <-up:
	case <-testContext(t).Done():
		t.Fatal("no reconnect after the token expired")
	}
	if !strings.Contains(logs.String(), "code=4500") {
		t.Fatalf("the connection was not closed for expiry:\n%s", logs.String())
	}
	if _, err := c.ListProjects(testContext(t)); err != nil {
		t.Fatalf("after the reconnect: %v", err)
	}
	if c.Err() != nil {
		t.Fatalf("client stopped: %v", c.Err())
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers (a log).
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
