package node_test

import (
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/node"
	"github.com/pmhq/pm/node/nodetest"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

func refresh(conn *nodetest.Conn, token string) *pmv1.WebSocketMessage {
	resp, _ := conn.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_RefreshTokenRequest{
		RefreshTokenRequest: &pmv1.RefreshTokenRequest{Token: token}}})
	return resp
}

// A refreshed connection outlives its first token: a witness connection
// whose token expires a second after that first token closes with 4500,
// and the refreshed one goes on serving, under the name its new token
// carries.
func TestTokenRefreshOutlivesTheFirstToken(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{})
	url := c.Nodes[0].URL()
	tenant := "acme-" + uuid.NewString()[:8]
	user := uuid.New()
	now := time.Now()
	first := now.Add(3 * time.Second).Unix()
	conn := nodetest.Dial(t, url, tokenOf(c, tenant, user, jwt.MapClaims{"exp": first, "iat": now.Unix(), "name": "Alice"}))
	witness := nodetest.Dial(t, url, tokenOf(c, tenant, user, jwt.MapClaims{"exp": first + 1, "iat": now.Unix()}))
	project := mustCreate(t, conn, &pmv1.CreateWorkItemRequest{ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT, Title: "Refresh"})
	if got := listMembers(t, conn, project.Id)[user.String()].GetDisplayName(); got != "Alice" {
		t.Fatalf("display name before the refresh: %q", got)
	}

	later := now.Add(time.Hour).Unix()
	resp := refresh(conn, tokenOf(c, tenant, user, jwt.MapClaims{"exp": later, "iat": now.Unix(), "name": "Alice Renewed"}))
	if got := resp.GetTokenRefreshed().GetExpiresAt(); got != later*1000 {
		t.Fatalf("refresh: %v; want expires_at %d", resp, later*1000)
	}

	if code := witness.WaitClosed(15 * time.Second); code != node.CloseTokenExpired {
		t.Fatalf("witness closed with %d, want %d", code, node.CloseTokenExpired)
	}
	// Past the first token's expiry: the connection still serves.
	mustCreate(t, conn, &pmv1.CreateWorkItemRequest{ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_EPIC, ParentId: project.Id, Title: "After"})
	if got := listMembers(t, conn, project.Id)[user.String()].GetDisplayName(); got != "Alice Renewed" {
		t.Fatalf("display name after the refresh: %q", got)
	}
}

// Every token the node would refuse at the upgrade is refused in band too,
// with UNAUTHORIZED on field token and a message that says what is wrong,
// and so are tokens of another user or tenant. None closes the connection,
// and none moves its expiry: it still closes with 4500 when its own token
// expires.
func TestTokenRefreshRefusals(t *testing.T) {
	secret := []byte("refresh-secret-" + uuid.NewString())
	const audience, issuer = "pm-test", "https://idp.test"
	c := nodetest.Start(t, nodetest.Options{Configure: func(cfg *node.Config) {
		auth, err := node.NewAuthenticator(t.Context(), node.AuthConfig{HMACSecret: secret, Audience: audience, Issuer: issuer})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Auth = auth
	}})
	tenant := "acme-" + uuid.NewString()[:8]
	user := uuid.New()
	now := time.Now()
	sign := func(key []byte, edit func(jwt.MapClaims)) string {
		claims := jwt.MapClaims{
			"sub": user.String(), "tenant_id": tenant, "aud": audience, "iss": issuer,
			"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		}
		edit(claims)
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	conn := nodetest.Dial(t, c.Nodes[0].URL(), sign(secret, func(m jwt.MapClaims) { m["exp"] = now.Add(4 * time.Second).Unix() }))

	for _, tc := range []struct {
		name, token, message string
	}{
		{"another user", sign(secret, func(m jwt.MapClaims) { m["sub"] = uuid.NewString() }), "another user"},
		{"another tenant", sign(secret, func(m jwt.MapClaims) { m["tenant_id"] = "other-" + tenant }), "another tenant"},
		{"expired", sign(secret, func(m jwt.MapClaims) {
			m["iat"], m["exp"] = now.Add(-2*time.Hour).Unix(), now.Add(-time.Hour).Unix()
		}), "has expired"},
		{"expired within the clock-skew leeway", sign(secret, func(m jwt.MapClaims) {
			m["iat"], m["exp"] = now.Add(-time.Minute).Unix(), now.Add(-5*time.Second).Unix()
		}), "has expired"},
		{"bad signature", sign([]byte("not-the-secret"), func(jwt.MapClaims) {}), "signature"},
		{"garbage", "not-a-jwt", "not a well-formed JWT"},
		{"another audience", sign(secret, func(m jwt.MapClaims) { m["aud"] = "someone-else" }), "audience"},
		{"another issuer", sign(secret, func(m jwt.MapClaims) { m["iss"] = "https://evil.test" }), "issuer"},
		{"lifetime over the maximum", sign(secret, func(m jwt.MapClaims) { m["exp"] = now.Add(48 * time.Hour).Unix() }), "lifetime"},
		{"no exp", sign(secret, func(m jwt.MapClaims) { delete(m, "exp") }), "exp"},
		{"sub not canonical", sign(secret, func(m jwt.MapClaims) { m["sub"] = strings.ToUpper(user.String()) }), "canonical"},
		{"no tenant", sign(secret, func(m jwt.MapClaims) { delete(m, "tenant_id") }), "tenant_id"},
	} {
		e := wantError(t, refresh(conn, tc.token), pm.EUnauthorized, "token")
		if !strings.Contains(e.Message, tc.message) {
			t.Errorf("%s: message %q does not say %q", tc.name, e.Message, tc.message)
		}
		if strings.Contains(e.Message, tc.token) {
			t.Errorf("%s: the message repeats the token", tc.name)
		}
	}
	wantError(t, refresh(conn, ""), pm.EValidation, "token")

	// The connection serves on, and closes at its own token's expiry.
	if resp, _ := conn.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_ListProjectsRequest{
		ListProjectsRequest: &pmv1.ListProjectsRequest{}}}); resp.GetProjectsList() == nil {
		t.Fatalf("list projects after the refusals: %v", resp)
	}
	if code := conn.WaitClosed(15 * time.Second); code != node.CloseTokenExpired {
		t.Fatalf("close code %d, want %d", code, node.CloseTokenExpired)
	}
}

// A refresh counts against the connection's rate limit like any request.
func TestTokenRefreshIsRateLimited(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{Configure: func(cfg *node.Config) { cfg.RatePerSecond, cfg.RateBurst = 0.01, 2 }})
	tenant := "acme-" + uuid.NewString()[:8]
	user := uuid.New()
	conn := nodetest.Dial(t, c.Nodes[0].URL(), c.Token(tenant, user))
	for i := range 2 {
		if resp := refresh(conn, c.Token(tenant, user)); resp.GetTokenRefreshed() == nil {
			t.Fatalf("refresh %d: %v", i+1, resp)
		}
	}
	e := wantError(t, refresh(conn, c.Token(tenant, user)), pm.ERateLimited, "")
	if e.RetryAfterMs <= 0 {
		t.Fatalf("RATE_LIMITED without retry_after_ms: %v", e)
	}
}
