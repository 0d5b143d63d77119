package main

import (
	"context"
	"fmt"
	"time"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/client"
)

// tokenCmd prints an HS256 token signed with the nodes' PM_JWT_SECRET,
// with the user's name and email if given.
func tokenCmd(_ context.Context, e env, args []string) error {
	f := newFlags(e, "token", "-secret S -tenant T -user UUID [-ttl 24h] [-name N] [-email E]")
	var secret, tenant, user, name, email string
	var ttl time.Duration
	f.secret(&secret, "secret", "PM_JWT_SECRET", "HS256 secret the nodes verify tokens with")
	f.str(&tenant, "tenant", "PM_TENANT", "", "tenant id (tenant_id claim)")
	f.str(&user, "user", "PM_USER", "", "user UUID (sub claim)")
	f.duration(&ttl, "ttl", "PM_TOKEN_TTL", 24*time.Hour, "how long the token is valid")
	f.str(&name, "name", "", "", "the user's display name (name claim; optional)")
	f.str(&email, "email", "", "", "the user's email address (email claim; optional)")
	if err := f.parse(args); err != nil {
		return err
	}
	if err := f.required(map[string]string{"secret": secret, "tenant": tenant, "user": user}); err != nil {
		return err
	}
	id, err := f.uuidFlag("user", user, false)
	if err != nil {
		return err
	}
	tok, err := client.NewTokenWithProfile([]byte(secret), tenant, id, ttl, pm.Profile{Name: name, Email: email})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(e.stdout, tok)
	return err
}
