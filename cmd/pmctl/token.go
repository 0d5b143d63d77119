package main

import (
	"context"
	"fmt"
	"time"

	"github.com/pmhq/pm/client"
)

// tokenCmd prints an HS256 token signed with the nodes' PM_JWT_SECRET.
func tokenCmd(_ context.Context, e env, args []string) error {
	f := newFlags(e, "token", "-secret S -tenant T -user UUID [-ttl 24h]")
	var secret, tenant, user string
	var ttl time.Duration
	f.secret(&secret, "secret", "PM_JWT_SECRET", "HS256 secret the nodes verify tokens with")
	f.str(&tenant, "tenant", "PM_TENANT", "", "tenant id (tenant_id claim)")
	f.str(&user, "user", "PM_USER", "", "user UUID (sub claim)")
	f.duration(&ttl, "ttl", "PM_TOKEN_TTL", 24*time.Hour, "how long the token is valid")
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
	tok, err := client.NewToken([]byte(secret), tenant, id, ttl)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(e.stdout, tok)
	return err
}
