package repo

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/pmhq/pm"
)

// ListActivity reads a page of a project's history, or of one of its items',
// newest first (viewer role). q.Limit 0 means pm.ActivityPageDefault; more
// than pm.ActivityPageMax is a VALIDATION_ERROR on "limit". q.BeforeID pages
// on: entries older than it.
func (s *Store) ListActivity(ctx context.Context, actor pm.Actor, q pm.ActivityQuery) (entries []pm.ActivityEntry, err error) {
	op := "list activity of project " + q.ProjectID.String()
	limit := q.Limit
	switch {
	case limit == 0:
		limit = pm.ActivityPageDefault
	case limit < 0 || limit > pm.ActivityPageMax:
		return nil, fmt.Errorf("%s: %w", op, pm.FieldErrorf("limit", "limit must be between 1 and %d", pm.ActivityPageMax))
	}
	if q.BeforeID < 0 {
		return nil, fmt.Errorf("%s: %w", op, pm.FieldErrorf("page_token", "invalid page token"))
	}
	err = s.run(ctx, op, actor.Tenant, readOnly, func(tx pgx.Tx) error {
		if _, err := projectRevision(ctx, tx, actor.Tenant, q.ProjectID); err != nil {
			return err
		}
		if _, err := requireRole(ctx, tx, actor, q.ProjectID, pm.RoleViewer); err != nil {
			return err
		}
		query := `SELECT id, project_id, work_item_id, member_user_id, actor_id, action, changes, revision, created_at
			FROM activity_log WHERE tenant_id = $1 AND project_id = $2`
		args := []any{actor.Tenant, q.ProjectID}
		if q.WorkItemID != uuid.Nil {
			project, err := itemProject(ctx, tx, actor.Tenant, q.WorkItemID)
			if err != nil {
				return err
			}
			if project != q.ProjectID {
				return notFound("work_item_id", "work item %s not found in project %s", q.WorkItemID, q.ProjectID)
			}
			args = append(args, q.WorkItemID)
			query += ` AND work_item_id = $` + strconv.Itoa(len(args))
		}
		if q.BeforeID > 0 {
			args = append(args, q.BeforeID)
			query += ` AND id < $` + strconv.Itoa(len(args))
		}
		args = append(args, limit)
		query += ` ORDER BY id DESC LIMIT $` + strconv.Itoa(len(args))
		rows, err := tx.Query(ctx, query, args...)
		if err != nil {
			return fmt.Errorf("read activity: %w", err)
		}
		entries, err = pgx.CollectRows(rows, scanActivity)
		if err != nil {
			return fmt.Errorf("read activity: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return entries, nil
}

func scanActivity(row pgx.CollectableRow) (pm.ActivityEntry, error) {
	var (
		e            pm.ActivityEntry
		item, member *uuid.UUID
		action       string
		changes      []byte
	)
	err := row.Scan(&e.ID, &e.ProjectID, &item, &member, &e.ActorID, &action, &changes, &e.Revision, &e.CreatedAt)
	if err != nil {
		return pm.ActivityEntry{}, err
	}
	e.Action = pm.Action(action)
	if item != nil {
		e.WorkItemID = *item
	}
	if member != nil {
		e.MemberUserID = *member
	}
	if err := json.Unmarshal(changes, &e.Changes); err != nil {
		return pm.ActivityEntry{}, fmt.Errorf("decode changes of activity entry %d: %w", e.ID, err)
	}
	return e, nil
}

// insertItemActivity records a change of a work item, at the revision the
// change produced.
func insertItemActivity(ctx context.Context, tx pgx.Tx, actor pm.Actor, item pm.WorkItem, action pm.Action, changes []pm.FieldChange) error {
	return insertActivity(ctx, tx, actor, pm.ActivityEntry{
		ProjectID: item.ProjectID, WorkItemID: item.ID, Action: action, Changes: changes, Revision: item.Revision,
	})
}

// queueMemberActivity queues into b the entry of a membership change: the
// member's "role" changed from old to new ("" for none), at the project's
// current revision.
func queueMemberActivity(b *pgx.Batch, actor pm.Actor, project, user uuid.UUID, action pm.Action, old, new pm.Role, revision int64) error {
	changes, err := encodeChanges([]pm.FieldChange{{Field: "role", Old: string(old), New: string(new)}})
	if err != nil {
		return err
	}
	b.Queue(insertActivitySQL, actor.Tenant, project, nil, user, actor.User, string(action), changes, revision)
	return nil
}

const insertActivitySQL = `INSERT INTO activity_log (tenant_id, project_id, work_item_id, member_user_id, actor_id,
		action, changes, revision)
	VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)`

func insertActivity(ctx context.Context, tx pgx.Tx, actor pm.Actor, e pm.ActivityEntry) error {
	changes, err := encodeChanges(e.Changes)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, insertActivitySQL,
		actor.Tenant, e.ProjectID, nullID(e.WorkItemID), nullID(e.MemberUserID), actor.User, string(e.Action),
		changes, e.Revision)
	if err != nil {
		return fmt.Errorf("insert activity entry: %w", err)
	}
	return nil
}

// encodeChanges returns changes as activity_log.changes holds them: a JSON
// array, empty for none.
func encodeChanges(changes []pm.FieldChange) (string, error) {
	if changes == nil {
		changes = []pm.FieldChange{}
	}
	b, err := json.Marshal(changes)
	if err != nil {
		return "", fmt.Errorf("encode activity changes: %w", err)
	}
	return string(b), nil
}
