package repo

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/position"
)

// itemColumns are the columns scanItem reads, in its order.
const itemColumns = `id, project_id, parent_id, item_type, title, description, status, priority,
	assignee_id, position, story_points, version, revision, created_at, updated_at, deleted_at,
	created_by, updated_by`

// scanItem reads a row of itemColumns, and then into extra the columns that
// follow them.
func scanItem(row pgx.Row, extra ...any) (pm.WorkItem, error) {
	var (
		w                          pm.WorkItem
		parent, assignee           *uuid.UUID
		itemType, status, priority string
		deletedAt                  *time.Time
	)
	err := row.Scan(append([]any{&w.ID, &w.ProjectID, &parent, &itemType, &w.Title, &w.Description, &status, &priority,
		&assignee, &w.Position, &w.StoryPoints, &w.Version, &w.Revision, &w.CreatedAt, &w.UpdatedAt, &deletedAt,
		&w.CreatedBy, &w.UpdatedBy}, extra...)...)
	if err != nil {
		return pm.WorkItem{}, err
	}
	w.Type, w.Status, w.Priority = pm.ItemType(itemType), pm.Status(status), pm.Priority(priority)
	if parent != nil {
		w.ParentID = *parent
	}
	if assignee != nil {
		w.AssigneeID = *assignee
	}
	if deletedAt != nil {
		w.DeletedAt = *deletedAt
	}
	return w, nil
}

// nullID is id as a query argument, NULL for uuid.Nil.
func nullID(id uuid.UUID) any {
	if id == uuid.Nil {
		return nil
	}
	return id
}

// CreateWorkItem creates a work item (editor role in its project) or, for the
// project type, a project, whose creator becomes its admin. Without a parent,
// an item becomes a child of its project. With a client-chosen ID that exists
// already and was created by the same actor in the same project with the same
// type, it returns that item and created=false, changing nothing; any other
// existing ID is a CONFLICT.
func (s *Store) CreateWorkItem(ctx context.Context, actor pm.Actor, in pm.NewWorkItem) (item pm.WorkItem, created bool, err error) {
	const op = "create work item"
	if err := in.Normalize(); err != nil {
		return pm.WorkItem{}, false, fmt.Errorf("%s: %w", op, err)
	}
	if in.Type == pm.TypeProject {
		err = s.run(ctx, op, actor.Tenant, readWrite, func(tx pgx.Tx) error {
			item, created, err = createProject(ctx, tx, actor, in)
			if err == nil && !created {
				return errRollback
			}
			return err
		})
	} else {
		item, created, err = s.createItem(ctx, op, actor, in)
	}
	if err != nil {
		return pm.WorkItem{}, false, err
	}
	return item, created, nil
}

// createProject makes a project: its counter row at revision 1, its item,
// the creator as admin, and the activity entry.
func createProject(ctx context.Context, tx pgx.Tx, actor pm.Actor, in pm.NewWorkItem) (pm.WorkItem, bool, error) {
	id := in.ID
	if id == uuid.Nil {
		id = uuid.New()
	}
	tag, err := tx.Exec(ctx, `INSERT INTO project_revisions (tenant_id, project_id, revision) VALUES ($1, $2, 1)
		ON CONFLICT (tenant_id, project_id) DO NOTHING`, actor.Tenant, id)
	if err != nil {
		return pm.WorkItem{}, false, fmt.Errorf("insert project revision: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return existingItem(ctx, tx, actor, id, id, in.Type)
	}
	pos := in.Position
	if pos == "" {
		pos = position.First
	}
	w := pm.WorkItem{
		ID: id, ProjectID: id, Type: pm.TypeProject, Title: in.Title, Description: in.Description,
		Status: in.Status, Priority: in.Priority, AssigneeID: in.AssigneeID, Position: pos,
		StoryPoints: in.StoryPoints, Revision: 1,
	}
	if w.AssigneeID != uuid.Nil && w.AssigneeID != actor.User {
		// The creator is the project's only member.
		return pm.WorkItem{}, false, pm.FieldErrorf("assignee_id", "the assignee must be a member of the project")
	}
	item, ok, err := insertItem(ctx, tx, actor, w)
	if err != nil {
		return pm.WorkItem{}, false, err
	}
	if !ok {
		return existingItem(ctx, tx, actor, id, id, in.Type)
	}
	_, err = tx.Exec(ctx, `INSERT INTO project_members (tenant_id, project_id, user_id, role, added_by)
		VALUES ($1, $2, $3, 'admin', $3)`, actor.Tenant, id, actor.User)
	if err != nil {
		return pm.WorkItem{}, false, fmt.Errorf("insert project admin: %w", err)
	}
	if err := insertItemActivity(ctx, tx, actor, item, pm.ActionCreated, item.Changes()); err != nil {
		return pm.WorkItem{}, false, err
	}
	return item, true, nil
}

// The statements of an item write. The first round trip of a create reads,
// after the tenant and in the lock order (see the package doc), the
// creator's and the assignee's membership rows FOR SHARE, the parent's row
// FOR SHARE (the project's without a parent) and the project's item; $2 is
// the project (NULL: the parent's), $3 the parent (NULL: the project).
// Updates and deletes find the project through the item; a delete counts
// the live children after locking the item, in a statement of its own.
const (
	createMembersSQL = `SELECT user_id, role FROM project_members
		WHERE tenant_id = $1 AND user_id = ANY($4)
			AND project_id = coalesce($2::uuid, (SELECT project_id FROM work_items WHERE tenant_id = $1 AND id = $3))
		ORDER BY user_id FOR SHARE`
	createParentSQL = `SELECT ` + itemColumns + ` FROM work_items
		WHERE tenant_id = $1 AND id = coalesce($3::uuid, $2::uuid) FOR SHARE`
	createProjectSQL = `SELECT ` + itemColumns + ` FROM work_items
		WHERE tenant_id = $1 AND item_type = 'project'
			AND id = coalesce($2::uuid, (SELECT project_id FROM work_items WHERE tenant_id = $1 AND id = $3))`

	writeMembersSQL = `SELECT user_id, role FROM project_members
		WHERE tenant_id = $1 AND user_id = ANY($3)
			AND project_id = (SELECT project_id FROM work_items WHERE tenant_id = $1 AND id = $2)
		ORDER BY user_id FOR SHARE`
	lockParentSQL   = `SELECT ` + itemColumns + ` FROM work_items WHERE tenant_id = $1 AND id = $2 FOR SHARE`
	lockItemSQL     = `SELECT ` + itemColumns + `, now() FROM work_items WHERE tenant_id = $1 AND id = $2 FOR NO KEY UPDATE`
	liveChildrenSQL = `SELECT count(*) FROM work_items WHERE tenant_id = $1 AND parent_id = $2 AND deleted_at IS NULL`

	// A create bumps the revision, reads the column's last position when
	// it must choose one (under the revision lock, so that concurrent
	// creates append in commit order), then inserts the item and its
	// activity entry at the bumped revision.
	bumpSQL         = `UPDATE project_revisions SET revision = revision + 1 WHERE tenant_id = $1 AND project_id = $2`
	lastPositionSQL = `SELECT max(position) FROM work_items
		WHERE tenant_id = $1 AND project_id = $2 AND status = $3 AND deleted_at IS NULL AND item_type <> 'project'`
	insertItemSQL = `WITH i AS (
			INSERT INTO work_items (tenant_id, id, project_id, parent_id, item_type, title, description, status,
				priority, assignee_id, position, story_points, version, revision, created_by, updated_by)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1,
				(SELECT revision FROM project_revisions WHERE tenant_id = $1 AND project_id = $3), $13, $13)
			RETURNING ` + itemColumns + `
		), a AS (
			INSERT INTO activity_log (tenant_id, project_id, work_item_id, actor_id, action, changes, revision)
			SELECT $1, project_id, id, $13, $14, $15::jsonb, revision FROM i
		)
		SELECT ` + itemColumns + ` FROM i`

	// An update or a delete is one statement: it bumps the revision (the
	// lock taken last), writes the item and its activity entry. The bump
	// checks the item's state as the write does, so that neither happens
	// without the other.
	updateItemSQL = `WITH r AS (
			UPDATE project_revisions SET revision = revision + 1
			WHERE tenant_id = $1 AND project_id = $13
				AND EXISTS (SELECT 1 FROM work_items WHERE tenant_id = $1 AND id = $2 AND version = $3)
			RETURNING revision
		), u AS (
			UPDATE work_items SET title = $4, description = $5, status = $6, priority = $7,
				assignee_id = $8, parent_id = $9, position = $10, story_points = $11,
				version = version + 1, revision = (SELECT revision FROM r), updated_at = now(), updated_by = $12
			WHERE tenant_id = $1 AND id = $2 AND version = $3
			RETURNING ` + itemColumns + `
		), a AS (
			INSERT INTO activity_log (tenant_id, project_id, work_item_id, actor_id, action, changes, revision)
			SELECT $1, project_id, id, $12, $14, $15::jsonb, revision FROM u
		)
		SELECT ` + itemColumns + ` FROM u`
	deleteItemSQL = `WITH r AS (
			UPDATE project_revisions SET revision = revision + 1
			WHERE tenant_id = $1 AND project_id = $3
				AND EXISTS (SELECT 1 FROM work_items WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL)
			RETURNING revision
		), u AS (
			UPDATE work_items SET deleted_at = now(), updated_at = now(), updated_by = $4,
				version = version + 1, revision = (SELECT revision FROM r)
			WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL
			RETURNING ` + itemColumns + `
		), a AS (
			INSERT INTO activity_log (tenant_id, project_id, work_item_id, actor_id, action, changes, revision)
			SELECT $1, project_id, id, $4, $5, $6::jsonb, revision FROM u
		)
		SELECT ` + itemColumns + ` FROM u`
)

// locked is what the first round trip of an item write read under its row
// locks.
type locked struct {
	members  []roleRow    // the membership rows asked for that exist
	parent   *pm.WorkItem // the (new) parent, when asked for
	item     *pm.WorkItem // the written item (updates, deletes)
	now      time.Time    // the transaction's now(), which the write stores
	children int64        // the item's live children (deletes)
}

type roleRow struct {
	user uuid.UUID
	role pm.Role
}

// role returns user's role, "" for none (or not asked for).
func (l *locked) role(user uuid.UUID) pm.Role {
	for _, m := range l.members {
		if m.user == user {
			return m.role
		}
	}
	return ""
}

// queueMembers queues q, which selects user_id and role, into b.
func (l *locked) queueMembers(b *pgx.Batch, q string, args ...any) {
	b.Queue(q, args...).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var (
				m    roleRow
				role string
			)
			if err := rows.Scan(&m.user, &role); err != nil {
				return fmt.Errorf("lock membership: %w", err)
			}
			m.role = pm.Role(role)
			l.members = append(l.members, m)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("lock membership: %w", err)
		}
		return nil
	})
}

// queueItem queues q, which selects itemColumns and then extra, into b: the
// item goes to *dst, nil when there is none.
func queueItem(b *pgx.Batch, dst **pm.WorkItem, what, q string, args []any, extra ...any) {
	b.Queue(q, args...).QueryRow(func(row pgx.Row) error {
		w, err := scanItem(row, extra...)
		if errors.Is(err, pgx.ErrNoRows) {
			*dst = nil
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		*dst = &w
		return nil
	})
}

// writable checks that l.item, the item id, may be written by actor: it
// exists, the actor is an editor of its project (an admin for the project
// item itself), and it is live. It returns the item.
func (l *locked) writable(actor pm.Actor, id uuid.UUID) (pm.WorkItem, error) {
	if l.item == nil {
		return pm.WorkItem{}, notFound("work_item_id", "work item %s not found", id)
	}
	project, role := l.item.ProjectID, l.role(actor.User)
	if err := checkRole(project, role, pm.RoleEditor); err != nil {
		return pm.WorkItem{}, err
	}
	if l.item.Deleted() {
		return pm.WorkItem{}, notFound("work_item_id", "work item %s not found", id)
	}
	if l.item.Type == pm.TypeProject && !role.Allows(pm.RoleAdmin) {
		return pm.WorkItem{}, pm.Errorf(pm.EUnauthorized, "your role in project %s is %s; changing the project itself needs admin", project, role)
	}
	return *l.item, nil
}

// queueWrite queues q, the statement that writes an item, into b: the item
// it returns goes to *dst, and *written says whether there was one.
func queueWrite(b *pgx.Batch, dst *pm.WorkItem, written *bool, what, q string, args ...any) {
	b.Queue(q, args...).QueryRow(func(row pgx.Row) error {
		w, err := scanItem(row)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		*dst, *written = w, true
		return nil
	})
}

// createItem makes an epic, story or task in a project. One round trip
// locks and reads what the checks need; one bumps the revision, inserts the
// item and its activity entry and commits. Without a client position, the
// bump goes first, in a round trip of its own with the read of the column's
// last position, which must happen under the revision lock.
func (s *Store) createItem(ctx context.Context, op string, actor pm.Actor, in pm.NewWorkItem) (item pm.WorkItem, created bool, err error) {
	users := []uuid.UUID{actor.User}
	if in.AssigneeID != uuid.Nil && in.AssigneeID != actor.User {
		users = append(users, in.AssigneeID)
	}
	var (
		lk       locked
		projItem *pm.WorkItem
		project  uuid.UUID
		taken    uuid.UUID // the ID the create found taken: answer with that item
	)
	lead := func(b *pgx.Batch) {
		lk = locked{}
		p, parent := nullID(in.ProjectID), nullID(in.ParentID)
		lk.queueMembers(b, createMembersSQL, actor.Tenant, p, parent, users)
		queueItem(b, &lk.parent, "lock parent", createParentSQL, []any{actor.Tenant, p, parent})
		queueItem(b, &projItem, "read project", createProjectSQL, []any{actor.Tenant, p, parent})
	}
	err = s.runLed(ctx, op, actor.Tenant, readWrite, lead, func(tx pgx.Tx) error {
		item, created, taken = pm.WorkItem{}, false, uuid.Nil
		project = in.ProjectID
		if project == uuid.Nil {
			// The parent's project (immutable).
			if lk.parent == nil {
				return notFound("parent_id", "parent %s not found", in.ParentID)
			}
			project = lk.parent.ProjectID
		}
		if projItem == nil {
			return notFound("project_id", "project %s not found", project)
		}
		if err := checkRole(project, lk.role(actor.User), pm.RoleEditor); err != nil {
			return err
		}
		if projItem.Deleted() {
			return notFound("project_id", "project %s not found", project)
		}
		parent := projItem
		if in.ParentID != uuid.Nil {
			parent = lk.parent
			switch {
			case parent == nil:
				return pm.FieldErrorf("parent_id", "parent %s not found", in.ParentID)
			case parent.ProjectID != project:
				return pm.FieldErrorf("parent_id", "parent %s is in another project", in.ParentID)
			case parent.Deleted():
				return pm.FieldErrorf("parent_id", "parent %s is deleted", in.ParentID)
			}
		}
		if !pm.CanParent(parent.Type, in.Type) {
			return hierarchyError(parent.Type, in.Type)
		}
		if in.AssigneeID != uuid.Nil && lk.role(in.AssigneeID) == "" {
			return assigneeError(in.AssigneeID)
		}
		b := &pgx.Batch{}
		b.Queue(bumpSQL, actor.Tenant, project)
		pos := in.Position
		if pos == "" {
			var last *string
			b.Queue(lastPositionSQL, actor.Tenant, project, string(in.Status)).QueryRow(func(row pgx.Row) error {
				if err := row.Scan(&last); err != nil {
					return fmt.Errorf("read last position: %w", err)
				}
				return nil
			})
			if err := tx.SendBatch(ctx, b).Close(); err != nil {
				return fmt.Errorf("bump project revision, read last position: %w", err)
			}
			var err error
			if pos, err = positionAfter(last); err != nil {
				return err
			}
			b = &pgx.Batch{}
		}
		id := in.ID
		if id == uuid.Nil {
			id = uuid.New()
		}
		if id == parent.ID {
			// Taken by the parent; the insert would fail its CHECK first.
			taken = id
			return errRollback
		}
		w := pm.WorkItem{
			ID: id, ProjectID: project, ParentID: parent.ID, Type: in.Type, Title: in.Title,
			Description: in.Description, Status: in.Status, Priority: in.Priority, AssigneeID: in.AssigneeID,
			Position: pos, StoryPoints: in.StoryPoints,
		}
		changes, err := encodeChanges(w.Changes())
		if err != nil {
			return err
		}
		queueWrite(b, &item, &created, "insert work item", insertItemSQL,
			actor.Tenant, w.ID, w.ProjectID, nullID(w.ParentID), string(w.Type), w.Title, w.Description,
			string(w.Status), string(w.Priority), nullID(w.AssigneeID), w.Position, w.StoryPoints, actor.User,
			string(pm.ActionCreated), changes)
		if err := commitWith(ctx, tx, b); err != nil {
			if idTaken(err) {
				taken = id
				return errRollback
			}
			return err
		}
		if !created {
			return errors.New("insert work item: no row returned") // an INSERT … VALUES returns its row
		}
		return nil
	})
	if err != nil || taken == uuid.Nil {
		return item, created, err
	}
	// The insert waited for the transaction that holds the ID to end, and
	// found it committed: a new transaction sees the item.
	err = s.run(ctx, op, actor.Tenant, readOnly, func(tx pgx.Tx) error {
		item, created, err = existingItem(ctx, tx, actor, taken, project, in.Type)
		return err
	})
	return item, created, err
}

// idTaken reports whether err is the insert of a work item whose ID exists.
func idTaken(err error) bool {
	pgErr, ok := errors.AsType[*pgconn.PgError](err)
	return ok && pgErr.Code == sqlUniqueViolation && pgErr.ConstraintName == "work_items_pkey"
}

// insertItem inserts w at version 1, unless its ID is taken: then ok is false.
func insertItem(ctx context.Context, tx pgx.Tx, actor pm.Actor, w pm.WorkItem) (item pm.WorkItem, ok bool, err error) {
	row := tx.QueryRow(ctx, `INSERT INTO work_items (tenant_id, id, project_id, parent_id, item_type, title,
			description, status, priority, assignee_id, position, story_points, version, revision,
			created_by, updated_by)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1, $13, $14, $14)
		ON CONFLICT (tenant_id, id) DO NOTHING
		RETURNING `+itemColumns,
		actor.Tenant, w.ID, w.ProjectID, nullID(w.ParentID), string(w.Type), w.Title, w.Description,
		string(w.Status), string(w.Priority), nullID(w.AssigneeID), w.Position, w.StoryPoints, w.Revision,
		actor.User)
	item, err = scanItem(row)
	if errors.Is(err, pgx.ErrNoRows) {
		return pm.WorkItem{}, false, nil
	}
	if err != nil {
		return pm.WorkItem{}, false, fmt.Errorf("insert work item: %w", err)
	}
	return item, true, nil
}

// existingItem answers a create whose ID is taken: the existing item, with
// created=false, when the same actor created it in the same project with the
// same type (a retried request); CONFLICT otherwise.
func existingItem(ctx context.Context, tx pgx.Tx, actor pm.Actor, id, project uuid.UUID, t pm.ItemType) (pm.WorkItem, bool, error) {
	w, err := readItem(ctx, tx, actor.Tenant, id)
	if err != nil {
		return pm.WorkItem{}, false, err
	}
	if w == nil || w.CreatedBy != actor.User || w.ProjectID != project || w.Type != t {
		return pm.WorkItem{}, false, &pm.Error{Code: pm.EConflict, Field: "work_item_id", Message: "work item id already exists"}
	}
	return *w, false, nil
}

// positionAfter returns a position after last, the last live position of a
// column (nil for none).
func positionAfter(last *string) (string, error) {
	after := ""
	if last != nil {
		after = *last
	}
	pos, err := position.Between(after, "")
	if err != nil {
		return "", pm.FieldErrorf("position", "no position is left after %q; give one", after)
	}
	return pos, nil
}

// UpdateWorkItem applies patch to the item at expectedVersion (editor role)
// and returns the new state and the fields that changed. A stale version is
// a CONFLICT carrying the current one. A patch that changes nothing returns
// the item as it is, with no changes, and writes nothing.
//
// Two round trips: one locks the writer's membership, the new parent and the
// item, the other bumps the revision, writes the item and its activity
// entry and commits.
func (s *Store) UpdateWorkItem(ctx context.Context, actor pm.Actor, id uuid.UUID, expectedVersion int64, patch pm.WorkItemPatch) (item pm.WorkItem, changes []pm.FieldChange, err error) {
	op := "update work item " + id.String()
	if err := patch.Normalize(); err != nil {
		return pm.WorkItem{}, nil, fmt.Errorf("%s: %w", op, err)
	}
	if patch.Empty() {
		return pm.WorkItem{}, nil, fmt.Errorf("%s: %w", op, pm.Errorf(pm.EValidation, "the update sets no field"))
	}
	users := []uuid.UUID{actor.User}
	if a := patch.AssigneeID; a != nil && *a != uuid.Nil && *a != actor.User {
		users = append(users, *a)
	}
	var lk locked
	lead := func(b *pgx.Batch) {
		lk = locked{}
		lk.queueMembers(b, writeMembersSQL, actor.Tenant, id, users)
		if p := patch.ParentID; p != nil && *p != uuid.Nil && *p != id {
			queueItem(b, &lk.parent, "lock new parent", lockParentSQL, []any{actor.Tenant, *p})
		}
		queueItem(b, &lk.item, "lock work item", lockItemSQL, []any{actor.Tenant, id}, &lk.now)
	}
	err = s.runLed(ctx, op, actor.Tenant, readWrite, lead, func(tx pgx.Tx) error {
		cur, err := lk.writable(actor, id)
		if err != nil {
			return err
		}
		if cur.Version != expectedVersion {
			return staleVersion(cur.Version, expectedVersion)
		}
		next := cur
		changes = patch.Apply(&next)
		if len(changes) == 0 {
			item, changes = cur, nil
			return errRollback
		}
		if next.ParentID != cur.ParentID {
			if err := checkNewParent(next, lk.parent); err != nil {
				return err
			}
		}
		if next.AssigneeID != cur.AssigneeID && next.AssigneeID != uuid.Nil && lk.role(next.AssigneeID) == "" {
			return assigneeError(next.AssigneeID)
		}
		encoded, err := encodeChanges(changes)
		if err != nil {
			return err
		}
		var written bool
		b := &pgx.Batch{}
		queueWrite(b, &item, &written, "update", updateItemSQL,
			actor.Tenant, id, expectedVersion, next.Title, next.Description, string(next.Status),
			string(next.Priority), nullID(next.AssigneeID), nullID(next.ParentID), next.Position,
			next.StoryPoints, actor.User, cur.ProjectID, string(pm.ActionUpdated), encoded)
		if err := commitWith(ctx, tx, b); err != nil {
			return err
		}
		if !written {
			// Not expected while the row is locked; nothing was written.
			return staleVersion(cur.Version, expectedVersion)
		}
		return nil
	})
	if err != nil {
		return pm.WorkItem{}, nil, err
	}
	return item, changes, nil
}

// checkNewParent checks parent, the new parent of w (nil: none found): live,
// in w's project, not w, and of a type that ranks above w's. Because types
// rank strictly lower down every parent chain, an item's descendants all
// rank below it and can never become its parent: re-parenting cannot make a
// cycle.
func checkNewParent(w pm.WorkItem, parent *pm.WorkItem) error {
	if w.ParentID == w.ID {
		return pm.FieldErrorf("parent_id", "an item cannot be its own parent: that would create a cycle")
	}
	switch {
	case parent == nil:
		return pm.FieldErrorf("parent_id", "parent %s not found", w.ParentID)
	case parent.ProjectID != w.ProjectID:
		return pm.FieldErrorf("parent_id", "parent %s is in another project; items cannot move between projects", w.ParentID)
	case parent.Deleted():
		return pm.FieldErrorf("parent_id", "parent %s is deleted", w.ParentID)
	case !pm.CanParent(parent.Type, w.Type):
		return hierarchyError(parent.Type, w.Type)
	}
	return nil
}

// DeleteWorkItem soft-deletes an item without live children (editor role);
// expectedVersion 0 accepts any version. It returns the tombstone.
//
// Two round trips: one locks the writer's membership and the item and then
// counts the item's live children, the other bumps the revision, writes the
// tombstone and its activity entry and commits.
func (s *Store) DeleteWorkItem(ctx context.Context, actor pm.Actor, id uuid.UUID, expectedVersion int64) (item pm.WorkItem, err error) {
	var lk locked
	lead := func(b *pgx.Batch) {
		lk = locked{}
		lk.queueMembers(b, writeMembersSQL, actor.Tenant, id, []uuid.UUID{actor.User})
		queueItem(b, &lk.item, "lock work item", lockItemSQL, []any{actor.Tenant, id}, &lk.now)
		b.Queue(liveChildrenSQL, actor.Tenant, id).QueryRow(func(row pgx.Row) error {
			if err := row.Scan(&lk.children); err != nil {
				return fmt.Errorf("count children: %w", err)
			}
			return nil
		})
	}
	err = s.runLed(ctx, "delete work item "+id.String(), actor.Tenant, readWrite, lead, func(tx pgx.Tx) error {
		cur, err := lk.writable(actor, id)
		if err != nil {
			return err
		}
		if expectedVersion != 0 && cur.Version != expectedVersion {
			return staleVersion(cur.Version, expectedVersion)
		}
		if n := lk.children; n > 0 {
			noun := "children"
			if n == 1 {
				noun = "child"
			}
			return pm.Errorf(pm.EDeleteBlocked, "the work item has %d live %s; delete or move them first", n, noun)
		}
		// The tombstone's deleted_at is the transaction's now().
		changes, err := encodeChanges([]pm.FieldChange{{Field: "deleted_at", New: lk.now.UTC().Format(time.RFC3339Nano)}})
		if err != nil {
			return err
		}
		var written bool
		b := &pgx.Batch{}
		queueWrite(b, &item, &written, "delete", deleteItemSQL,
			actor.Tenant, id, cur.ProjectID, actor.User, string(pm.ActionDeleted), changes)
		if err := commitWith(ctx, tx, b); err != nil {
			return err
		}
		if !written {
			return errors.New("delete: no row returned") // not expected while the row is locked
		}
		return nil
	})
	if err != nil {
		return pm.WorkItem{}, err
	}
	return item, nil
}

// itemProject returns the project of an item, deleted or not; uuid.Nil when
// there is no such item in the tenant. An item's project never changes.
func itemProject(ctx context.Context, tx pgx.Tx, tenant string, id uuid.UUID) (uuid.UUID, error) {
	var project uuid.UUID
	err := tx.QueryRow(ctx, `SELECT project_id FROM work_items WHERE tenant_id = $1 AND id = $2`, tenant, id).Scan(&project)
	if errors.Is(err, pgx.ErrNoRows) {
		return uuid.Nil, nil
	}
	if err != nil {
		return uuid.Nil, fmt.Errorf("read project of work item: %w", err)
	}
	return project, nil
}

// readItem reads an item, deleted or not; nil when there is no such item in
// the tenant.
func readItem(ctx context.Context, tx pgx.Tx, tenant string, id uuid.UUID) (*pm.WorkItem, error) {
	w, err := scanItem(tx.QueryRow(ctx, `SELECT `+itemColumns+` FROM work_items WHERE tenant_id = $1 AND id = $2`, tenant, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read work item: %w", err)
	}
	return &w, nil
}

func assigneeError(user uuid.UUID) *pm.Error {
	return pm.FieldErrorf("assignee_id", "the assignee %s is not a member of the project", user)
}

func hierarchyError(parent, child pm.ItemType) *pm.Error {
	return pm.FieldErrorf("parent_id", "a %s cannot be a child of a %s: a child's type must rank below its parent's (project > epic > story > task)", child, parent)
}

func staleVersion(current, expected int64) *pm.Error {
	return &pm.Error{
		Code:           pm.EConflict,
		Field:          "expected_version",
		Message:        fmt.Sprintf("the work item is at version %d, not %d; reload it and retry", current, expected),
		CurrentVersion: current,
	}
}

// ListWorkItems reads a project's items (viewer role) in one snapshot, as
// StreamWorkItems selects and orders them, and returns them all at once with
// the snapshot. It holds the whole result in memory: for small projects and
// tests; a node streams loads instead.
func (s *Store) ListWorkItems(ctx context.Context, actor pm.Actor, q pm.WorkItemQuery) (items []pm.WorkItem, snap pm.Snapshot, err error) {
	items = []pm.WorkItem{}
	err = s.StreamWorkItems(ctx, actor, q, func(sn pm.Snapshot, page []pm.WorkItem) error {
		snap = sn
		items = append(items, page...)
		return nil
	})
	if err != nil {
		return nil, pm.Snapshot{}, err
	}
	return items, snap, nil
}

// StreamWorkItems reads a project's items (viewer role) in one snapshot —
// every live item, or with q.SinceRevision every item changed after that
// revision, or else with q.SinceTime every item changed after that time
// (tombstones included for both) — ordered by position, then id, and hands
// them to page a page at a time: at least once (an empty result is one empty
// page), always with the same snapshot, whose revision and time say what the
// read saw. A page holds at most Config.LoadPageRows items and about
// Config.LoadPageBytes of their text (at least one item, so one item may
// overshoot it). page must not keep the slice, which is reused; it may keep
// the items' strings. An error from page ends the read and is returned in
// the chain of StreamWorkItems' error.
//
// The pages are read with keyset pagination inside one REPEATABLE READ, READ
// ONLY transaction, which stays open while page runs: a slow page holds a
// database connection and the snapshot. So at most
// Config.MaxConcurrentLoads reads run at once; the others wait for a turn
// until ctx ends (then UNAVAILABLE). A failure worth retrying (a
// serialization failure or deadlock) runs the read again only while no page
// has been handed out; after the first page it fails, with UNAVAILABLE when
// the database is to blame, because the caller has acted on pages already.
func (s *Store) StreamWorkItems(ctx context.Context, actor pm.Actor, q pm.WorkItemQuery, page func(pm.Snapshot, []pm.WorkItem) error) error {
	op := "list work items of project " + q.ProjectID.String()
	if q.SinceRevision < 0 {
		return fmt.Errorf("%s: %w", op, pm.FieldErrorf("since_revision", "since_revision must not be negative"))
	}
	args := pgx.NamedArgs{"tenant": actor.Tenant, "project": q.ProjectID, "rows": s.pageRows, "bytes": s.pageBytes}
	filter := `deleted_at IS NULL`
	switch {
	case q.SinceRevision > 0:
		filter, args["since"] = `revision > @since`, q.SinceRevision
	case !q.SinceTime.IsZero():
		filter, args["since"] = `updated_at > @since`, q.SinceTime
	}
	first, next := itemPageQuery(filter, false), itemPageQuery(filter, true)
	select {
	case s.loads <- struct{}{}:
		defer func() { <-s.loads }()
	case <-ctx.Done():
		return fmt.Errorf("%s: wait for a turn among the running loads: %w", op, classify(ctx.Err()))
	}
	handed := false // a page went to the caller: the read must not start over
	// The snapshot's revision and the role ride in the BEGIN's round trip.
	var v projectView
	lead := func(b *pgx.Batch) { v.queue(b, actor, q.ProjectID) }
	read := func(tx pgx.Tx) error {
		if err := v.check(q.ProjectID); err != nil {
			return err
		}
		snap := v.snap
		var items []pm.WorkItem
		for query := first; ; query = next {
			rows, err := tx.Query(ctx, query, args)
			if err != nil {
				return fmt.Errorf("read work items: %w", err)
			}
			items, err = appendItems(items[:0], rows)
			if err != nil {
				return fmt.Errorf("read work items: %w", err)
			}
			if len(items) == 0 && handed {
				return nil
			}
			handed = true
			if err := page(snap, items); err != nil {
				return err
			}
			if len(items) == 0 {
				return nil
			}
			last := &items[len(items)-1]
			args["after_position"], args["after_id"] = last.Position, last.ID
		}
	}
	return s.runWhile(ctx, op, actor.Tenant, snapshot, lead, read, func() bool { return !handed })
}

// itemRowOverhead approximates the bytes of a row's columns besides its text
// (ids, enums, numbers, times) for the page size bound.
const itemRowOverhead = "256"

// itemPageQuery returns the query of one page of a load: the next rows in
// (position, id) order that match filter — after (@after_position,
// @after_id) unless first — at most @rows of them, and only as many as fit
// in @bytes of text (the first always does). The sizes come from
// octet_length, which reads a TOASTed description's length without
// fetching it, so the candidates past the cut cost no more than their keys.
func itemPageQuery(filter string, after bool) string {
	keyset := ""
	if after {
		keyset = ` AND (position, id) > (@after_position, @after_id)`
	}
	return `SELECT ` + itemColumns + `
		FROM (
			SELECT *, sum(size) OVER (ORDER BY position, id) - size AS bytes_before
			FROM (
				SELECT ` + itemColumns + `,
					octet_length(title) + octet_length(description) + octet_length(position) + ` + itemRowOverhead + ` AS size
				FROM work_items
				WHERE tenant_id = @tenant AND project_id = @project AND ` + filter + keyset + `
				ORDER BY position, id
				LIMIT @rows
			) page
		) sized
		WHERE bytes_before < @bytes
		ORDER BY position, id`
}

// appendItems appends the rows of itemColumns to items and closes rows.
func appendItems(items []pm.WorkItem, rows pgx.Rows) ([]pm.WorkItem, error) {
	return pgx.AppendRows(items, rows, func(row pgx.CollectableRow) (pm.WorkItem, error) { return scanItem(row) })
}

// GetWorkItem reads one item as it is now, a tombstone included (viewer
// role in its project); NOT_FOUND when there is no such item in the tenant.
func (s *Store) GetWorkItem(ctx context.Context, actor pm.Actor, id uuid.UUID) (item pm.WorkItem, err error) {
	err = s.run(ctx, "read work item "+id.String(), actor.Tenant, readOnly, func(tx pgx.Tx) error {
		w, err := readItem(ctx, tx, actor.Tenant, id)
		if err != nil {
			return err
		}
		if w == nil {
			return notFound("work_item_id", "work item %s not found", id)
		}
		if _, err := requireRole(ctx, tx, actor, w.ProjectID, pm.RoleViewer); err != nil {
			return err
		}
		item = *w
		return nil
	})
	return item, err
}

// ProjectRevision checks that the actor may view the project and returns its
// current revision.
func (s *Store) ProjectRevision(ctx context.Context, actor pm.Actor, project uuid.UUID) (revision int64, err error) {
	// One round trip: BEGIN, the tenant, both reads and the COMMIT.
	var v projectView
	lead := func(b *pgx.Batch) {
		v.queue(b, actor, project)
		b.Queue(`COMMIT`)
	}
	err = s.runLed(ctx, "read revision of project "+project.String(), actor.Tenant, readOnly, lead, func(pgx.Tx) error {
		return v.check(project)
	})
	if err != nil {
		return 0, err
	}
	return v.snap.Revision, nil
}

// projectView is what a read of a project starts with: the project's
// revision and the database's time (the snapshot), and the actor's role.
type projectView struct {
	snap  pm.Snapshot
	found bool   // the project exists
	role  string // "" for none
}

// queue queues the reads into b; their callbacks fill v.
func (v *projectView) queue(b *pgx.Batch, actor pm.Actor, project uuid.UUID) {
	*v = projectView{}
	b.Queue(`SELECT revision, now() FROM project_revisions WHERE tenant_id = $1 AND project_id = $2`,
		actor.Tenant, project).QueryRow(func(row pgx.Row) error {
		err := row.Scan(&v.snap.Revision, &v.snap.Time)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read project revision: %w", err)
		}
		v.found = true
		return nil
	})
	b.Queue(roleSQL, actor.Tenant, project, actor.User).QueryRow(func(row pgx.Row) error {
		if err := row.Scan(&v.role); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("read role: %w", err)
		}
		return nil
	})
}

// check fails with NOT_FOUND without the project, UNAUTHORIZED unless the
// actor may view it.
func (v *projectView) check(project uuid.UUID) error {
	if !v.found {
		return notFound("project_id", "project %s not found", project)
	}
	return checkRole(project, pm.Role(v.role), pm.RoleViewer)
}

// projectRevision reads a project's current revision; NOT_FOUND when there
// is no such project in the tenant.
func projectRevision(ctx context.Context, tx pgx.Tx, tenant string, project uuid.UUID) (int64, error) {
	var revision int64
	err := tx.QueryRow(ctx, `SELECT revision FROM project_revisions WHERE tenant_id = $1 AND project_id = $2`,
		tenant, project).Scan(&revision)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, notFound("project_id", "project %s not found", project)
	}
	if err != nil {
		return 0, fmt.Errorf("read project revision: %w", err)
	}
	return revision, nil
}
