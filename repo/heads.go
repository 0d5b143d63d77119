package repo

import (
	"context"
	"fmt"
	"slices"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/pmhq/pm"
)

// ProjectHeads returns the current revision of each of the projects that
// exists; a key of a missing project is absent from the map. It checks no
// role: it serves the event hub's periodic check for lost events, not a
// client. It runs one query per tenant, all in one read-only transaction.
func (s *Store) ProjectHeads(ctx context.Context, keys []pm.ProjectKey) (map[pm.ProjectKey]int64, error) {
	heads := make(map[pm.ProjectKey]int64, len(keys))
	if len(keys) == 0 {
		return heads, nil
	}
	byTenant := make(map[string][]uuid.UUID)
	for _, k := range keys {
		if !pm.ValidTenant(k.Tenant) {
			continue // no such tenant, no such project
		}
		byTenant[k.Tenant] = append(byTenant[k.Tenant], k.Project)
	}
	if len(byTenant) == 0 {
		return heads, nil
	}
	tenants := make([]string, 0, len(byTenant))
	for t := range byTenant {
		tenants = append(tenants, t)
	}
	slices.Sort(tenants)

	// run selects the first tenant; each query selects its own before it runs.
	err := s.run(ctx, "read project heads", tenants[0], readOnly, func(tx pgx.Tx) error {
		clear(heads)
		for _, tenant := range tenants {
			if _, err := tx.Exec(ctx, `SELECT set_config('app.tenant_id', $1, true)`, tenant); err != nil {
				return fmt.Errorf("select tenant: %w", err)
			}
			rows, err := tx.Query(ctx, `SELECT project_id, revision FROM project_revisions
				WHERE tenant_id = $1 AND project_id = ANY($2)`, tenant, byTenant[tenant])
			if err != nil {
				return fmt.Errorf("read revisions of tenant %s: %w", tenant, err)
			}
			var (
				project  uuid.UUID
				revision int64
			)
			_, err = pgx.ForEachRow(rows, []any{&project, &revision}, func() error {
				heads[pm.ProjectKey{Tenant: tenant, Project: project}] = revision
				return nil
			})
			if err != nil {
				return fmt.Errorf("read revisions of tenant %s: %w", tenant, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return heads, nil
}
