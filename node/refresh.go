package node

import (
	"errors"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pmhq/pm"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// refreshToken replaces the connection's token in band: the new token is
// verified as at the upgrade (signature, expiry, lifetime, audience,
// issuer), must name the same user and tenant, and then moves the
// connection's expiry to its own. A refused token changes nothing: the
// connection keeps its old token and still closes with 4500 at the old
// expiry. A refresh that loses the race against that close fails with it.
func (c *session) refreshToken(r *pmv1.RefreshTokenRequest) (*pmv1.WebSocketMessage, *event, error) {
	if r.GetToken() == "" {
		return nil, nil, &pm.Error{Code: pm.EValidation, Field: "token", Message: "token is required"}
	}
	id, err := c.srv.cfg.Auth.Verify(r.GetToken())
	if err != nil {
		c.srv.log.Info("refused token refresh", "conn", c.id, "tenant", c.actor.Tenant, "user", c.actor.User, "err", err)
		return nil, nil, &pm.Error{Code: pm.EUnauthorized, Field: "token", Message: tokenRefusal(err)}
	}
	switch {
	case id.Actor.User != c.actor.User:
		return nil, nil, &pm.Error{Code: pm.EUnauthorized, Field: "token", Message: "the token is for another user (sub) than the connection's"}
	case id.Actor.Tenant != c.actor.Tenant:
		return nil, nil, &pm.Error{Code: pm.EUnauthorized, Field: "token", Message: "the token is for another tenant (tenant_id) than the connection's"}
	case !id.Expires.After(c.srv.cfg.Now()):
		// Verify tolerates clock skew; a connection has no use for a
		// token that expires as it is handed over.
		return nil, nil, &pm.Error{Code: pm.EUnauthorized, Field: "token", Message: "the token has expired"}
	}
	if !c.extend(id.Expires) {
		return nil, nil, errUndelivered // closing for the old token's expiry
	}
	if !id.Profile.Empty() && id.Profile != c.profile {
		c.profile = id.Profile
		c.recordProfile()
	}
	return &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_TokenRefreshed{
		TokenRefreshed: &pmv1.TokenRefreshed{ExpiresAt: id.Expires.UnixMilli()},
	}}, nil, nil
}

// armExpiryLocked starts the timer that closes the connection with 4500 at
// expires. Each timer carries the generation it was armed in, and closes
// the connection only if no refresh has moved the expiry since: a timer
// that fired but waits for c.mu while a refresh holds it does nothing.
// c.mu is held.
func (c *session) armExpiryLocked(expires time.Time) {
	if c.expiry != nil {
		c.expiry.Stop()
	}
	c.expires = expires
	c.expiryGen++
	gen := c.expiryGen
	c.expiry = time.AfterFunc(max(expires.Sub(c.srv.cfg.Now()), 0), func() { c.expire(gen) })
}

// expire is the expiry timer of generation gen firing: it closes the
// connection with 4500 unless a refresh has armed a newer timer meanwhile.
func (c *session) expire(gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.expiryGen == gen {
		c.closeLocked(CloseTokenExpired, "token expired")
	}
}

// extend moves the connection's expiry, unless the connection is closing
// already (its token may have expired just now). It reports whether it did.
func (c *session) extend(expires time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || c.ended {
		return false
	}
	c.armExpiryLocked(expires)
	return true
}

// tokenRefusal is the message a client gets for a token Verify refused: what
// is wrong with it, never the token itself.
func tokenRefusal(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "the token has expired"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "the token is not a well-formed JWT"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "the token's signature does not verify"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "the token is not for this audience (aud)"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "the token is not from the accepted issuer (iss)"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "the token is not valid yet"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "the token lacks a required claim (exp)"
	case errors.Is(err, errLifetime):
		return "the token's lifetime exceeds the maximum the node accepts"
	case errors.Is(err, errSubject):
		return "the token's sub is not a user UUID in canonical form"
	case errors.Is(err, errTenant):
		return "the token's tenant_id is missing or malformed"
	}
	return "the token is not valid"
}
