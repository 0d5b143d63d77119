package pubsub

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/pmhq/pm"
)

// MustLedger returns a ledger on c with cfg and a prefix of the test's own.
func MustLedger(tb testing.TB, c redis.UniversalClient, cfg LedgerConfig) *Ledger {
	tb.Helper()
	cfg.Redis = c
	if cfg.Prefix == "" {
		cfg.Prefix = MustPrefix(tb)
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	l, err := NewLedger(cfg)
	if err != nil {
		tb.Fatalf("NewLedger: %v", err)
	}
	tb.Cleanup(func() {
		_ = l.Close()
		// Leave nothing behind in a shared Redis (errors: it was unreachable).
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, cfg.Prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
	})
	return l
}

func newRequest() pm.RequestKey {
	return pm.RequestKey{Tenant: "acme", User: uuid.New(), MessageID: "m-" + randomHex(4)}
}

func claim(t *testing.T, l *Ledger, key pm.RequestKey, wait time.Duration) (string, []byte) {
	t.Helper()
	token, replay, err := l.Claim(context.Background(), key, wait)
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	return token, replay
}

func TestLedgerReplaysTheStoredResponse(t *testing.T) {
	c := MustClient(t, "")
	l := MustLedger(t, c, LedgerConfig{})
	key := newRequest()
	token, replay := claim(t, l, key, 0)
	if token == "" || replay != nil {
		t.Fatalf("first Claim: token %q, replay %q", token, replay)
	}
	k := l.prefix + "idem:acme:" + key.User.String() + ":" + key.MessageID
	if n, err := c.Exists(context.Background(), k).Result(); err != nil || n != 1 {
		t.Fatalf("key %s: exists=%d err=%v", k, n, err)
	}
	response := []byte("\x00binary\xffresponse\r\n")
	if err := l.Complete(context.Background(), key, token, response); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	for range 2 {
		token2, replay := claim(t, l, key, 0)
		if token2 != "" || !bytes.Equal(replay, response) {
			t.Fatalf("repeated Claim: token %q, replay %q, want %q", token2, replay, response)
		}
	}
	if got := value(l.m.replayed); got != 2 {
		t.Errorf("replayed %v, want 2", got)
	}
	// Another user's identical message id is another request.
	other := key
	other.User = uuid.New()
	if token, _ := claim(t, l, other, 0); token == "" {
		t.Error("another user's request with the same message id was not claimed")
	}
}

func TestLedgerDefaultKey(t *testing.T) {
	l := MustLedger(t, MustClient(t, ""), LedgerConfig{Prefix: DefaultPrefix})
	user := uuid.MustParse("0b7a3c1e-2f4d-4e5a-9b6c-7d8e9f0a1b2c")
	got, err := l.key(pm.RequestKey{Tenant: "acme", User: user, MessageID: "m1"})
	if want := "pm:idem:acme:0b7a3c1e-2f4d-4e5a-9b6c-7d8e9f0a1b2c:m1"; err != nil || got != want {
		t.Errorf("key %q (%v), want %q", got, err, want)
	}
	for _, bad := range []pm.RequestKey{{Tenant: "a:b", User: user, MessageID: "m"}, {Tenant: "acme", User: user}} {
		if _, _, err := l.Claim(context.Background(), bad, 0); err == nil || pm.ErrorCode(err) != pm.EInternal {
			t.Errorf("Claim(%+v): %v, want a plain error", bad, err)
		}
	}
}

func TestLedgerConcurrentClaims(t *testing.T) {
	l := MustLedger(t, MustClient(t, ""), LedgerConfig{PollInterval: 5 * time.Millisecond})
	key := newRequest()
	response := []byte("the one response")

	type result struct {
		token  string
		replay []byte
		err    error
	}
	const n = 10
	results := make(chan result, n)
	claimed := make(chan string, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			token, replay, err := l.Claim(context.Background(), key, 5*time.Second)
			if token != "" {
				claimed <- token
			}
			results <- result{token, replay, err}
		})
	}
	// Exactly one claims; the others wait for its response.
	token := <-claimed
	if err := l.Complete(context.Background(), key, token, response); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(results)
	replays := 0
	for r := range results {
		switch {
		case r.err != nil:
			t.Errorf("Claim: %v", r.err)
		case r.token != "":
		case bytes.Equal(r.replay, response):
			replays++
		default:
			t.Errorf("Claim returned neither token nor the response: %+v", r)
		}
	}
	if replays != n-1 {
		t.Errorf("%d replays, want %d", replays, n-1)
	}
	if got := value(l.m.claimed); got != 1 {
		t.Errorf("claimed %v, want 1", got)
	}
}

func TestLedgerInFlightIsUnavailable(t *testing.T) {
	l := MustLedger(t, MustClient(t, ""), LedgerConfig{PollInterval: 5 * time.Millisecond})
	key := newRequest()
	claim(t, l, key, 0)
	const n = 10
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			start := time.Now()
			_, _, err := l.Claim(context.Background(), key, 30*time.Millisecond)
			e, ok := errors.AsType[*pm.Error](err)
			if !ok || e.Code != pm.EUnavailable || e.RetryAfterMillis <= 0 {
				t.Errorf("Claim while another attempt runs: %v, want UNAVAILABLE with a retry hint", err)
			}
			if d := time.Since(start); d < 30*time.Millisecond || d > 2*time.Second {
				t.Errorf("Claim waited %v, want about 30ms", d)
			}
		})
	}
	wg.Wait()
	if _, _, err := l.Claim(context.Background(), key, 0); pm.ErrorCode(err) != pm.EUnavailable {
		t.Errorf("Claim without waiting: %v, want UNAVAILABLE", err)
	}
	if got := value(l.m.inFlight); got != n+1 {
		t.Errorf("in-flight %v, want %d", got, n+1)
	}
}

func TestLedgerReleaseLetsARetryRun(t *testing.T) {
	l := MustLedger(t, MustClient(t, ""), LedgerConfig{PollInterval: 5 * time.Millisecond})
	key := newRequest()
	token, _ := claim(t, l, key, 0)
	// A waiter gets the claim once the first attempt lets go.
	got := make(chan string, 1)
	go func() {
		token, _, err := l.Claim(context.Background(), key, 5*time.Second)
		if err != nil {
			t.Errorf("waiting Claim: %v", err)
		}
		got <- token
	}()
	if err := l.Release(context.Background(), key, "not-the-token"); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(context.Background(), key, token); err != nil {
		t.Fatal(err)
	}
	retry := <-got
	if retry == "" || retry == token {
		t.Fatalf("retry's token %q (first %q)", retry, token)
	}
	// The first attempt's token no longer counts.
	if err := l.Complete(context.Background(), key, token, []byte("stale")); !errors.Is(err, ErrClaimLost) {
		t.Errorf("Complete with a released token: %v, want ErrClaimLost", err)
	}
	if err := l.Complete(context.Background(), key, retry, []byte("fresh")); err != nil {
		t.Fatal(err)
	}
	if _, replay := claim(t, l, key, 0); string(replay) != "fresh" {
		t.Errorf("replay %q, want the retry's response", replay)
	}
}

func TestLedgerExpiredClaimIsNotOverwritten(t *testing.T) {
	c := MustClient(t, "")
	prefix := MustPrefix(t)
	dying := MustLedger(t, c, LedgerConfig{Prefix: prefix, PendingTTL: 50 * time.Millisecond})
	l := MustLedger(t, c, LedgerConfig{Prefix: prefix, PendingTTL: 50 * time.Millisecond})
	key := newRequest()
	first, _ := claim(t, dying, key, 0)
	_ = dying.Close() // its node dies: nobody renews the claim
	k, _ := l.key(key)
	waitFor(t, "the claim to expire", func() bool { return c.Exists(context.Background(), k).Val() == 0 })
	second, _ := claim(t, l, key, 0)
	if second == "" {
		t.Fatal("the expired claim was not retaken")
	}
	if err := dying.Complete(context.Background(), key, first, []byte("late")); !errors.Is(err, ErrClaimLost) {
		t.Fatalf("Complete after losing the claim: %v, want ErrClaimLost", err)
	}
	if v := c.Get(context.Background(), k).Val(); v != pendingValue(key.Digest, second) {
		t.Fatalf("key holds %q, want the second claim", v)
	}
	if got := value(dying.m.lost); got != 1 {
		t.Errorf("claims lost %v, want 1", got)
	}
}

// A request that runs longer than PendingTTL keeps its claim: the lease is
// renewed until Complete.
func TestLedgerRenewsTheLeaseOfARunningRequest(t *testing.T) {
	c := MustClient(t, "")
	l := MustLedger(t, c, LedgerConfig{PendingTTL: 150 * time.Millisecond})
	key := newRequest()
	token, _ := claim(t, l, key, 0)
	k, _ := l.key(key)
	for start := time.Now(); time.Since(start) < 5*150*time.Millisecond; {
		if v := c.Get(context.Background(), k).Val(); v != pendingValue(key.Digest, token) {
			t.Fatalf("after %v the key holds %q, want the running claim", time.Since(start), v)
		}
		if _, _, err := l.Claim(context.Background(), key, 0); pm.ErrorCode(err) != pm.EUnavailable {
			t.Fatalf("a duplicate while the request runs: %v, want UNAVAILABLE", err)
		}
	}
	if err := l.Complete(context.Background(), key, token, []byte("done")); err != nil {
		t.Fatalf("Complete after a long run: %v", err)
	}
}

func TestLedgerTTLs(t *testing.T) {
	c := MustClient(t, "")
	l := MustLedger(t, c, LedgerConfig{PendingTTL: 20 * time.Second, TTL: 2 * time.Hour})
	key := newRequest()
	k, _ := l.key(key)
	token, _ := claim(t, l, key, 0)
	if ttl := c.PTTL(context.Background(), k).Val(); ttl <= 19*time.Second || ttl > 20*time.Second {
		t.Errorf("pending PTTL %v, want about 20s", ttl)
	}
	if err := l.Complete(context.Background(), key, token, []byte("r")); err != nil {
		t.Fatal(err)
	}
	if ttl := c.PTTL(context.Background(), k).Val(); ttl <= 119*time.Minute || ttl > 2*time.Hour {
		t.Errorf("response PTTL %v, want about 2h", ttl)
	}
}

func TestLedgerRedisUnreachable(t *testing.T) {
	// A closed port refuses at once; a listener that never answers hangs.
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedAddr := refused.Addr().String()
	_ = refused.Close()
	hung, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	var accepted []net.Conn
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := hung.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted = append(accepted, c)
			mu.Unlock()
		}
	}()
	defer func() {
		_ = hung.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range accepted {
			_ = c.Close()
		}
	}()

	const opTimeout = 100 * time.Millisecond
	for name, addr := range map[string]string{"refused": refusedAddr, "hung": hung.Addr().String()} {
		t.Run(name, func(t *testing.T) {
			c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
			defer c.Close()
			l := MustLedger(t, c, LedgerConfig{OpTimeout: opTimeout})
			key := newRequest()
			check := func(op string, err error, d time.Duration) {
				t.Helper()
				if err == nil {
					t.Errorf("%s succeeded", op)
				}
				if _, ok := errors.AsType[*pm.Error](err); ok {
					t.Errorf("%s: %v, want an error that is no *pm.Error", op, err)
				}
				if d > 4*opTimeout {
					t.Errorf("%s took %v, want about OpTimeout (%v)", op, d, opTimeout)
				}
			}
			start := time.Now()
			_, _, err := l.Claim(context.Background(), key, time.Second)
			check("Claim", err, time.Since(start))
			start = time.Now()
			err = l.Complete(context.Background(), key, "t", []byte("r"))
			check("Complete", err, time.Since(start))
			start = time.Now()
			err = l.Release(context.Background(), key, "t")
			check("Release", err, time.Since(start))
			if got := value(l.m.errors.WithLabelValues("claim")); got != 1 {
				t.Errorf("claim errors %v, want 1", got)
			}
		})
	}
}

// A message_id reused for another request (another digest) is refused, while
// the first request runs and after it finished; the first one's record is
// never handed to it, and a retry of the first still replays.
func TestLedgerRefusesAReusedMessageID(t *testing.T) {
	c := MustClient(t, "")
	l := MustLedger(t, c, LedgerConfig{})
	first := newRequest()
	first.Digest = "aaaa"
	other := first
	other.Digest = "bbbb"
	token, _ := claim(t, l, first, 0)
	for _, state := range []string{"running", "finished"} {
		_, replay, err := l.Claim(context.Background(), other, time.Second)
		if replay != nil || pm.ErrorCode(err) != pm.EValidation {
			t.Fatalf("%s: reused id answered replay %q, err %v", state, replay, err)
		}
		var perr *pm.Error
		if errors.As(err, &perr); perr.Field != "message_id" {
			t.Fatalf("%s: error field %q", state, perr.Field)
		}
		if state == "running" {
			if err := l.Complete(context.Background(), first, token, []byte("first's record")); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, replay := claim(t, l, first, 0); string(replay) != "first's record" {
		t.Fatalf("retry of the first: %q", replay)
	}
	bad := first
	bad.Digest = "with:colon"
	if _, _, err := l.Claim(context.Background(), bad, 0); err == nil || pm.ErrorCode(err) != pm.EInternal {
		t.Fatalf("digest with a colon: %v", err)
	}
}
