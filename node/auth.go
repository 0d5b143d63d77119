package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/pmhq/pm"
)

// AuthConfig says which tokens the node accepts. At least one of HMACSecret
// and JWKSURL must be set.
type AuthConfig struct {
	// HMACSecret verifies HS256 tokens; empty: HS256 is refused.
	HMACSecret []byte
	// JWKSURL is an identity provider's key set, for RS256 and ES256 tokens;
	// empty: those are refused. It is fetched at start and refreshed.
	JWKSURL string
	// Audience, when set, must be in the token's aud claim.
	Audience string
	// Issuer, when set, must equal the token's iss claim.
	Issuer string
	// Leeway tolerates clock skew on exp, nbf and iat. Zero means 30s.
	Leeway time.Duration
	// MaxLifetime caps how long a token may be valid: exp - iat (exp - now
	// when there is no iat). Zero means 24h; negative: no cap.
	MaxLifetime time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// DefaultMaxTokenLifetime is AuthConfig.MaxLifetime's default.
const DefaultMaxTokenLifetime = 24 * time.Hour

// Claims are the claims pm reads from a token: sub is the user's UUID in
// canonical form (lower case, hyphenated), tenant_id the tenant. exp is
// required. name and email are optional: what they say is kept only when it
// is fit to show (pm.NewProfile), and a claim of another type than a string
// is ignored, never a reason to refuse the token.
type Claims struct {
	TenantID string `json:"tenant_id"`
	Name     any    `json:"name,omitempty"`
	Email    any    `json:"email,omitempty"`
	jwt.RegisteredClaims
}

// Identity is who a verified token speaks for, and until when.
type Identity struct {
	Actor   pm.Actor
	Expires time.Time
	// Profile is the token's name and email, as far as they are fit to show.
	Profile pm.Profile
}

// Authenticator verifies bearer tokens.
type Authenticator struct {
	cfg     AuthConfig
	jwks    keyfunc.Keyfunc
	parser  *jwt.Parser
	methods []string
}

// ErrUnauthenticated is wrapped by every refusal of a token.
var ErrUnauthenticated = errors.New("unauthenticated")

// The refusals of Verify's own checks, wrapped beside ErrUnauthenticated.
var (
	errSubject  = errors.New("sub is not a user UUID in canonical form (lower case, hyphenated)")
	errLifetime = errors.New("token lifetime exceeds the maximum")
	errTenant   = errors.New("tenant_id is missing or malformed")
)

// NewAuthenticator makes an Authenticator. With a JWKS URL it fetches the key
// set and keeps it fresh until ctx ends.
func NewAuthenticator(ctx context.Context, cfg AuthConfig) (*Authenticator, error) {
	if len(cfg.HMACSecret) == 0 && cfg.JWKSURL == "" {
		return nil, errors.New("auth: set a JWT secret (PM_JWT_SECRET) or a JWKS URL (PM_JWT_JWKS_URL)")
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = 30 * time.Second
	}
	if cfg.MaxLifetime == 0 {
		cfg.MaxLifetime = DefaultMaxTokenLifetime
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &Authenticator{cfg: cfg}
	if len(cfg.HMACSecret) > 0 {
		a.methods = append(a.methods, jwt.SigningMethodHS256.Alg())
	}
	if cfg.JWKSURL != "" {
		jwks, err := keyfunc.NewDefaultCtx(ctx, []string{cfg.JWKSURL})
		if err != nil {
			return nil, fmt.Errorf("auth: load JWKS from %s: %w", cfg.JWKSURL, err)
		}
		a.jwks = jwks
		a.methods = append(a.methods, jwt.SigningMethodRS256.Alg(), jwt.SigningMethodES256.Alg())
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(a.methods),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(cfg.Now),
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	a.parser = jwt.NewParser(opts...)
	return a, nil
}

// Verify checks a token's signature, algorithm, expiry, lifetime, audience
// and issuer, and that sub is a canonical UUID and tenant_id a valid tenant
// id.
func (a *Authenticator) Verify(token string) (Identity, error) {
	var claims Claims
	_, err := a.parser.ParseWithClaims(token, &claims, a.key)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	// One spelling per user: uuid.Parse also takes upper case, braces,
	// urn:uuid: and no hyphens, which would make one user several actors.
	user, err := uuid.Parse(claims.Subject)
	if err != nil || user == uuid.Nil || user.String() != claims.Subject {
		return Identity{}, fmt.Errorf("%w: %w", ErrUnauthenticated, errSubject)
	}
	if a.cfg.MaxLifetime > 0 {
		from := a.cfg.Now()
		if claims.IssuedAt != nil {
			from = claims.IssuedAt.Time
		}
		if life := claims.ExpiresAt.Sub(from); life > a.cfg.MaxLifetime+a.cfg.Leeway {
			return Identity{}, fmt.Errorf("%w: %w: %v > %v", ErrUnauthenticated, errLifetime, life.Round(time.Second), a.cfg.MaxLifetime)
		}
	}
	if !pm.ValidTenant(claims.TenantID) {
		return Identity{}, fmt.Errorf("%w: %w", ErrUnauthenticated, errTenant)
	}
	name, _ := claims.Name.(string)
	email, _ := claims.Email.(string)
	return Identity{
		Actor:   pm.Actor{Tenant: claims.TenantID, User: user},
		Expires: claims.ExpiresAt.Time,
		Profile: pm.NewProfile(name, email),
	}, nil
}

func (a *Authenticator) key(t *jwt.Token) (any, error) {
	if _, ok := t.Method.(*jwt.SigningMethodHMAC); ok {
		return a.cfg.HMACSecret, nil
	}
	return a.jwks.Keyfunc(t)
}

// bearerToken reads the token from the Authorization header, or from the
// access_token query parameter (browsers cannot set headers on WebSockets).
func bearerToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, token, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(token)
		}
		return ""
	}
	return r.URL.Query().Get("access_token")
}

// originAllowed checks a browser's Origin against the allow-list. Requests
// without an Origin (non-browser clients) pass. An empty list allows only
// the same host; "*" allows any origin.
func originAllowed(r *http.Request, allowed []string) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if len(allowed) == 0 {
		_, host, ok := strings.Cut(origin, "://")
		return ok && strings.EqualFold(host, r.Host)
	}
	for _, a := range allowed {
		if a == "*" || strings.EqualFold(a, origin) {
			return true
		}
	}
	return false
}
