package client

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/pmhq/pm"
)

// NewToken returns an HS256 token for a user of a tenant, valid for ttl,
// with the claims the node reads: sub (the user), tenant_id, iat and exp.
// It is meant for tools and tests; production tokens come from an identity
// provider.
func NewToken(secret []byte, tenant string, user uuid.UUID, ttl time.Duration) (string, error) {
	return NewTokenWithProfile(secret, tenant, user, ttl, pm.Profile{})
}

// NewTokenWithProfile is NewToken with the optional name and email claims,
// which the nodes record as the user's display name and email in the
// tenant; an empty field is left out. A name or email the nodes would not
// keep (pm.NewProfile) is an error.
func NewTokenWithProfile(secret []byte, tenant string, user uuid.UUID, ttl time.Duration, profile pm.Profile) (string, error) {
	switch {
	case len(secret) == 0:
		return "", errors.New("client: token: empty secret")
	case !pm.ValidTenant(tenant):
		return "", fmt.Errorf("client: token: invalid tenant id %q", tenant)
	case user == uuid.Nil:
		return "", errors.New("client: token: user is the nil UUID")
	case ttl <= 0:
		return "", fmt.Errorf("client: token: ttl %v is not positive", ttl)
	}
	kept := pm.NewProfile(profile.Name, profile.Email)
	if profile.Name != "" && kept.Name == "" {
		return "", fmt.Errorf("client: token: name %q: at most %d characters, no control characters", profile.Name, pm.NameMaxRunes)
	}
	if profile.Email != "" && kept.Email == "" {
		return "", fmt.Errorf("client: token: email %q is not an email address of at most %d bytes", profile.Email, pm.EmailMaxBytes)
	}
	now := time.Now()
	claims := struct {
		TenantID string `json:"tenant_id"`
		Name     string `json:"name,omitempty"`
		Email    string `json:"email,omitempty"`
		jwt.RegisteredClaims
	}{
		TenantID: tenant,
		Name:     kept.Name,
		Email:    kept.Email,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   user.String(),
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("client: sign token: %w", err)
	}
	return s, nil
}
