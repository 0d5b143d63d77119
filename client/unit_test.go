package client

import (
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/pmhq/pm"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

func TestBackoffGrowsWithinBounds(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	for attempt, want := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		want *= time.Millisecond
		for range 50 {
			d := b.Delay(attempt)
			if d < want/2 || d > want {
				t.Fatalf("Delay(%d) = %v, want within [%v, %v]", attempt, d, want/2, want)
			}
		}
	}
	if d := b.Delay(1000); d > time.Second {
		t.Fatalf("Delay(1000) = %v exceeds Max", d)
	}
	var zero Backoff
	if d := zero.Delay(0); d < 50*time.Millisecond || d > 100*time.Millisecond {
		t.Fatalf("default first delay %v, want 50ms..100ms", d)
	}
}

func TestBusyDelay(t *testing.T) {
	if d := busyDelay(20, 0); d < 20*time.Millisecond || d > 30*time.Millisecond {
		t.Fatalf("busyDelay(20ms, 0) = %v", d)
	}
	if d := busyDelay(0, 0); d < 10*time.Millisecond {
		t.Fatalf("busyDelay(0, 0) = %v, want at least 10ms", d)
	}
	if d := busyDelay(1000, 30); d > 7500*time.Millisecond {
		t.Fatalf("busyDelay(1s, 30) = %v, want capped", d)
	}
}

func TestInboxDropsMessagesNotCommands(t *testing.T) {
	var q inbox
	q.init(2)
	m := &pmv1.WebSocketMessage{}
	q.push(m, true)
	q.push(m, true)
	q.push(m, true) // over the limit: dropped
	q.command(cmdReconnected)
	items, overflow := q.take()
	if !overflow {
		t.Fatal("overflow not reported")
	}
	if len(items) != 3 || items[2].cmd != cmdReconnected {
		t.Fatalf("items = %+v; want two messages and the command", items)
	}
	if _, overflow := q.take(); overflow {
		t.Fatal("overflow reported twice")
	}
	q.push(m, true)
	if items, _ := q.take(); len(items) != 1 {
		t.Fatalf("after take the limit starts over; got %d items", len(items))
	}
}

func TestNewToken(t *testing.T) {
	secret := []byte("s3cret")
	user := uuid.New()
	tok, err := NewToken(secret, "acme", user, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		TenantID string `json:"tenant_id"`
		jwt.RegisteredClaims
	}
	parsed, err := jwt.ParseWithClaims(tok, &claims, func(*jwt.Token) (any, error) { return secret, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	if err != nil || !parsed.Valid {
		t.Fatalf("token does not verify: %v", err)
	}
	if claims.Subject != user.String() || claims.TenantID != "acme" {
		t.Fatalf("claims = sub %q tenant %q", claims.Subject, claims.TenantID)
	}
	if exp := time.Until(claims.ExpiresAt.Time); exp < 59*time.Minute || exp > time.Hour+time.Second {
		t.Fatalf("expires in %v, want about an hour", exp)
	}
	if _, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return []byte("other"), nil }); err == nil {
		t.Fatal("token verified with another secret")
	}

	for name, call := range map[string]func() (string, error){
		"no secret":  func() (string, error) { return NewToken(nil, "acme", user, time.Hour) },
		"bad tenant": func() (string, error) { return NewToken(secret, "a:b", user, time.Hour) },
		"nil user":   func() (string, error) { return NewToken(secret, "acme", uuid.Nil, time.Hour) },
		"no ttl":     func() (string, error) { return NewToken(secret, "acme", user, 0) },
	} {
		if _, err := call(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestNewTokenWithProfile(t *testing.T) {
	secret := []byte("s3cret")
	user := uuid.New()
	claimsOf := func(tok string) jwt.MapClaims {
		t.Helper()
		claims := jwt.MapClaims{}
		if _, err := jwt.ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) { return secret, nil }); err != nil {
			t.Fatal(err)
		}
		return claims
	}
	tok, err := NewTokenWithProfile(secret, "acme", user, time.Hour, pm.Profile{Name: "Alice Adams", Email: "alice@demo.test"})
	if err != nil {
		t.Fatal(err)
	}
	if c := claimsOf(tok); c["name"] != "Alice Adams" || c["email"] != "alice@demo.test" || c["sub"] != user.String() || c["tenant_id"] != "acme" {
		t.Errorf("claims = %v", c)
	}
	// Empty fields are left out; NewToken sets neither.
	tok, err = NewTokenWithProfile(secret, "acme", user, time.Hour, pm.Profile{Name: "Bob"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := claimsOf(tok)["email"]; ok {
		t.Errorf("an empty email is a claim: %v", claimsOf(tok))
	}
	tok, _ = NewToken(secret, "acme", user, time.Hour)
	if c := claimsOf(tok); c["name"] != nil || c["email"] != nil {
		t.Errorf("NewToken sets a profile: %v", c)
	}
	// A name or email the node would not show is refused, not dropped.
	for _, p := range []pm.Profile{{Name: "Ca\x00rol"}, {Email: "not an email"}, {Name: strings.Repeat("x", pm.NameMaxRunes+1)}} {
		if _, err := NewTokenWithProfile(secret, "acme", user, time.Hour, p); err == nil {
			t.Errorf("profile %+v: no error", p)
		}
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"ws://h:8080/ws":                          "ws://h:8080/ws",
		"ws://h:8080/ws?access_token=eyJ.a.b":     "ws://h:8080/ws?access_token=REDACTED",
		"wss://h/ws?x=1&access_token=eyJ.a.b#top": "wss://h/ws?access_token=REDACTED&x=1#top",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRefreshDelayIsAJitteredShareOfTheRemainingLifetime(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 200 {
		d := refreshDelay(10 * time.Minute)
		if d < 7*time.Minute || d > 8*time.Minute {
			t.Fatalf("refreshDelay(10m) = %v, want 7m to 8m", d)
		}
		seen[d] = true
	}
	if len(seen) < 100 {
		t.Fatalf("only %d distinct delays in 200: no jitter", len(seen))
	}
	for _, remaining := range []time.Duration{0, -time.Second} {
		if d := refreshDelay(remaining); d != 0 {
			t.Fatalf("refreshDelay(%v) = %v, want 0", remaining, d)
		}
	}
}

func TestTokenExpiry(t *testing.T) {
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	sign := func(claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte("k"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if got, ok := tokenExpiry(sign(jwt.MapClaims{"sub": "x", "exp": exp.Unix()})); !ok || !got.Equal(exp) {
		t.Fatalf("tokenExpiry = %v, %v; want %v", got, ok, exp)
	}
	for name, token := range map[string]string{
		"no exp":    sign(jwt.MapClaims{"sub": "x"}),
		"not a JWT": "opaque-token",
		"empty":     "",
	} {
		if got, ok := tokenExpiry(token); ok {
			t.Errorf("%s: tokenExpiry = %v, true; want false", name, got)
		}
	}
}

// A refusal says when to come back only when the node said so (a load
// balancer's own 503 carries no Retry-After).
func TestRefusedErrorMessage(t *testing.T) {
	for _, tc := range []struct {
		err  RefusedError
		want string
	}{
		{RefusedError{Status: 503}, "client: the node refused the connection (HTTP 503)"},
		{RefusedError{Status: 429, RetryAfter: 12 * time.Second}, "client: the node refused the connection (HTTP 429), retry after 12s"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.err, got, tc.want)
		}
	}
}

// After a refused upgrade the client waits at least the node's Retry-After
// and at most half as long again, spread at random; the backoff wins when
// it is longer, and without a Retry-After it is the backoff alone.
func TestRetryDelayHonoursRetryAfter(t *testing.T) {
	if d := retryDelay(300*time.Millisecond, 0); d != 300*time.Millisecond {
		t.Errorf("no Retry-After: %v, want the backoff 300ms", d)
	}
	if d := retryDelay(20*time.Second, 2*time.Second); d != 20*time.Second {
		t.Errorf("backoff 20s, Retry-After 2s: %v, want 20s", d)
	}
	seen := map[time.Duration]bool{}
	for range 200 {
		d := retryDelay(100*time.Millisecond, 10*time.Second)
		if d < 10*time.Second || d > 15*time.Second {
			t.Fatalf("Retry-After 10s: waited %v, want 10s to 15s", d)
		}
		seen[d] = true
	}
	if len(seen) < 2 {
		t.Errorf("200 waits after Retry-After 10s were all the same: refused clients would come back together")
	}
}
