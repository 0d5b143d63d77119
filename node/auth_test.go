package node_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/node"
	"github.com/pmhq/pm/node/nodetest"
)

// An identity provider's key set: RS256 and ES256 tokens verified through
// its JWKS URL.
func TestJWKSTokens(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	set := jwkset.NewMemoryStorage()
	for kid, key := range map[string]any{"rsa-1": rsaKey, "ec-1": ecKey} {
		jwk, err := jwkset.NewJWKFromKey(key, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid}})
		if err != nil {
			t.Fatal(err)
		}
		if err := set.KeyWrite(context.Background(), jwk); err != nil {
			t.Fatal(err)
		}
	}
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := set.JSONPublic(r.Context())
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	defer idp.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	auth, err := node.NewAuthenticator(ctx, node.AuthConfig{JWKSURL: idp.URL, Issuer: "https://idp.example"})
	if err != nil {
		t.Fatal(err)
	}
	c := nodetest.Start(t, nodetest.Options{Configure: func(cfg *node.Config) { cfg.Auth = auth }})

	claims := func() jwt.MapClaims {
		return jwt.MapClaims{"sub": uuid.NewString(), "tenant_id": "acme", "iss": "https://idp.example", "exp": time.Now().Add(time.Hour).Unix()}
	}
	sign := func(method jwt.SigningMethod, kid string, key any, claims jwt.MapClaims) string {
		tok := jwt.NewWithClaims(method, claims)
		tok.Header["kid"] = kid
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	otherRSA, _ := rsa.GenerateKey(rand.Reader, 2048)
	wrongIssuer := claims()
	wrongIssuer["iss"] = "https://evil.example"
	tests := []struct {
		name  string
		token string
		ok    bool
	}{
		{"RS256", sign(jwt.SigningMethodRS256, "rsa-1", rsaKey, claims()), true},
		{"ES256", sign(jwt.SigningMethodES256, "ec-1", ecKey, claims()), true},
		{"RS256 signed by another key", sign(jwt.SigningMethodRS256, "rsa-1", otherRSA, claims()), false},
		{"unknown kid", sign(jwt.SigningMethodRS256, "rsa-9", rsaKey, claims()), false},
		{"wrong issuer", sign(jwt.SigningMethodRS256, "rsa-1", rsaKey, wrongIssuer), false},
		{"HS256 when only a key set is configured", c.TokenWith(claims()), false},
		{"RS384 is not accepted", sign(jwt.SigningMethodRS384, "rsa-1", rsaKey, claims()), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := auth.Verify(tt.token)
			if tt.ok != (err == nil) {
				t.Fatalf("Verify: %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, node.ErrUnauthenticated) {
				t.Fatalf("refusal %v does not wrap ErrUnauthenticated", err)
			}
			conn, resp, err := nodetest.TryDial(t, c.Nodes[0].URL(), bearer(tt.token))
			if tt.ok {
				if err != nil {
					t.Fatalf("upgrade refused: %v", err)
				}
				conn.Close()
				return
			}
			if err == nil || resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("want HTTP 401, got %v %v", resp, err)
			}
		})
	}
}

// Verify reads the optional name and email claims, keeps only what is fit
// to show, and never refuses a token for them.
func TestVerifyReadsTheProfile(t *testing.T) {
	secret := []byte("secret")
	auth, err := node.NewAuthenticator(t.Context(), node.AuthConfig{HMACSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		claims jwt.MapClaims
		want   pm.Profile
	}{
		{"none", nil, pm.Profile{}},
		{"both", jwt.MapClaims{"name": "Alice Adams", "email": "alice@demo.test"}, pm.Profile{Name: "Alice Adams", Email: "alice@demo.test"}},
		{"not strings", jwt.MapClaims{"name": 42, "email": map[string]any{"x": 1}}, pm.Profile{}},
		{"null", jwt.MapClaims{"name": nil, "email": "bob@demo.test"}, pm.Profile{Email: "bob@demo.test"}},
		{"unfit", jwt.MapClaims{"name": "a\x00b", "email": "not an email"}, pm.Profile{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			claims := jwt.MapClaims{"sub": uuid.NewString(), "tenant_id": "acme", "exp": time.Now().Add(time.Hour).Unix()}
			for k, v := range tt.claims {
				claims[k] = v
			}
			token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
			if err != nil {
				t.Fatal(err)
			}
			id, err := auth.Verify(token)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if id.Profile != tt.want {
				t.Errorf("Profile = %+v, want %+v", id.Profile, tt.want)
			}
		})
	}
}
