package repo

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/pmhq/pm"
)

// RecordProfile stores what a user's token says of them in the actor's
// tenant: each non-empty field of p replaces the stored one, an empty field
// keeps it. When the stored profile already says the same — the usual case,
// since every connection records — nothing is written or locked.
func (s *Store) RecordProfile(ctx context.Context, actor pm.Actor, p pm.Profile) error {
	if p.Empty() {
		return nil
	}
	return s.run(ctx, "record profile of user "+actor.User.String(), actor.Tenant, readWrite, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO users (tenant_id, user_id, name, email)
			SELECT $1::text, $2::uuid, $3::text, $4::text
			WHERE NOT EXISTS (SELECT 1 FROM users WHERE tenant_id = $1 AND user_id = $2
				AND name = coalesce(NULLIF($3, ''), name) AND email = coalesce(NULLIF($4, ''), email))
			ON CONFLICT (tenant_id, user_id) DO UPDATE
			SET name = coalesce(NULLIF(EXCLUDED.name, ''), users.name),
				email = coalesce(NULLIF(EXCLUDED.email, ''), users.email),
				updated_at = now()`,
			actor.Tenant, actor.User, p.Name, p.Email)
		if err != nil {
			return fmt.Errorf("upsert user: %w", err)
		}
		return nil
	})
}
