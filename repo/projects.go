package repo

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/pmhq/pm"
)

// ListProjects returns every live project of the actor's tenant the actor
// is a member of, ordered by title then id, each with the actor's role, the
// project's revision and its live items counted by status (the project item
// not counted). Two queries in one snapshot, however many projects: the
// counts are those of the revision given.
func (s *Store) ListProjects(ctx context.Context, actor pm.Actor) (projects []pm.ProjectSummary, err error) {
	err = s.run(ctx, "list projects of user "+actor.User.String(), actor.Tenant, snapshot, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+itemColumns+`, role, head FROM (
				SELECT w.*, m.role, r.revision AS head
				FROM project_members m
				JOIN work_items w ON w.tenant_id = m.tenant_id AND w.id = m.project_id
				JOIN project_revisions r ON r.tenant_id = m.tenant_id AND r.project_id = m.project_id
				WHERE m.tenant_id = $1 AND m.user_id = $2 AND w.item_type = 'project' AND w.deleted_at IS NULL
			) p ORDER BY title, id`, actor.Tenant, actor.User)
		if err != nil {
			return fmt.Errorf("read projects: %w", err)
		}
		projects, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (pm.ProjectSummary, error) {
			var (
				p    pm.ProjectSummary
				role string
				err  error
			)
			p.Project, err = scanItem(row, &role, &p.Revision)
			p.Role, p.Counts = pm.Role(role), make(map[pm.Status]int64)
			return p, err
		})
		if err != nil {
			return fmt.Errorf("read projects: %w", err)
		}
		if len(projects) == 0 {
			return nil
		}
		index := make(map[uuid.UUID]int, len(projects))
		ids := make([]uuid.UUID, len(projects))
		for i, p := range projects {
			index[p.Project.ID], ids[i] = i, p.Project.ID
		}
		rows, err = tx.Query(ctx, `SELECT project_id, status, count(*) FROM work_items
			WHERE tenant_id = $1 AND project_id = ANY($2) AND deleted_at IS NULL AND item_type <> 'project'
			GROUP BY project_id, status`, actor.Tenant, ids)
		if err != nil {
			return fmt.Errorf("count items: %w", err)
		}
		var (
			project uuid.UUID
			status  string
			n       int64
		)
		_, err = pgx.ForEachRow(rows, []any{&project, &status, &n}, func() error {
			projects[index[project]].Counts[pm.Status(status)] = n
			return nil
		})
		if err != nil {
			return fmt.Errorf("count items: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return projects, nil
}
