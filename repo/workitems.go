package repo

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

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
	if err := in.Normalize(); err != nil {
		return pm.WorkItem{}, false, fmt.Errorf("create work item: %w", err)
	}
	create := createItem
	if in.Type == pm.TypeProject {
		create = createProject
	}
	err = s.run(ctx, "create work item", actor.Tenant, readWrite, func(tx pgx.Tx) error {
		item, created, err = create(ctx, tx, actor, in)
		if err == nil && !created {
			return errRollback
		}
		return err
	})
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

// createItem makes an epic, story or task in a project.
func createItem(ctx context.Context, tx pgx.Tx, actor pm.Actor, in pm.NewWorkItem) (pm.WorkItem, bool, error) {
	project := in.ProjectID
	if project == uuid.Nil {
		// The parent's project (immutable) says which project to lock.
		p, err := itemProject(ctx, tx, actor.Tenant, in.ParentID)
		if err != nil {
			return pm.WorkItem{}, false, err
		}
		if p == uuid.Nil {
			return pm.WorkItem{}, false, notFound("parent_id", "parent %s not found", in.ParentID)
		}
		project = p
	}
	revision, err := bumpRevision(ctx, tx, actor.Tenant, project)
	if err != nil {
		return pm.WorkItem{}, false, err
	}
	if _, err := requireRole(ctx, tx, actor, project, pm.RoleEditor); err != nil {
		return pm.WorkItem{}, false, err
	}
	projectItem, err := readItem(ctx, tx, actor.Tenant, project, false)
	if err != nil {
		return pm.WorkItem{}, false, err
	}
	if projectItem == nil || projectItem.Deleted() {
		return pm.WorkItem{}, false, notFound("project_id", "project %s not found", project)
	}
	parent := projectItem
	if in.ParentID != uuid.Nil {
		parent, err = readItem(ctx, tx, actor.Tenant, in.ParentID, false)
		if err != nil {
			return pm.WorkItem{}, false, err
		}
		switch {
		case parent == nil:
			return pm.WorkItem{}, false, pm.FieldErrorf("parent_id", "parent %s not found", in.ParentID)
		case parent.ProjectID != project:
			return pm.WorkItem{}, false, pm.FieldErrorf("parent_id", "parent %s is in another project", in.ParentID)
		case parent.Deleted():
			return pm.WorkItem{}, false, pm.FieldErrorf("parent_id", "parent %s is deleted", in.ParentID)
		}
	}
	if !pm.CanParent(parent.Type, in.Type) {
		return pm.WorkItem{}, false, hierarchyError(parent.Type, in.Type)
	}
	if err := requireMember(ctx, tx, actor.Tenant, project, in.AssigneeID); err != nil {
		return pm.WorkItem{}, false, err
	}
	pos := in.Position
	if pos == "" {
		if pos, err = nextPosition(ctx, tx, actor.Tenant, project, in.Status); err != nil {
			return pm.WorkItem{}, false, err
		}
	}
	id := in.ID
	if id == uuid.Nil {
		id = uuid.New()
	}
	if id == parent.ID {
		// Taken by the parent; the insert would fail its CHECK before ON CONFLICT.
		return existingItem(ctx, tx, actor, id, project, in.Type)
	}
	w := pm.WorkItem{
		ID: id, ProjectID: project, ParentID: parent.ID, Type: in.Type, Title: in.Title,
		Description: in.Description, Status: in.Status, Priority: in.Priority, AssigneeID: in.AssigneeID,
		Position: pos, StoryPoints: in.StoryPoints, Revision: revision,
	}
	item, ok, err := insertItem(ctx, tx, actor, w)
	if err != nil {
		return pm.WorkItem{}, false, err
	}
	if !ok {
		return existingItem(ctx, tx, actor, id, project, in.Type)
	}
	if err := insertItemActivity(ctx, tx, actor, item, pm.ActionCreated, item.Changes()); err != nil {
		return pm.WorkItem{}, false, err
	}
	return item, true, nil
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
	// The insert waited for the transaction that holds the ID to end, and
	// this statement's snapshot sees what it committed.
	w, err := readItem(ctx, tx, actor.Tenant, id, false)
	if err != nil {
		return pm.WorkItem{}, false, err
	}
	if w == nil || w.CreatedBy != actor.User || w.ProjectID != project || w.Type != t {
		return pm.WorkItem{}, false, &pm.Error{Code: pm.EConflict, Field: "work_item_id", Message: "work item id already exists"}
	}
	return *w, false, nil
}

// nextPosition returns a position after the last live item of a column.
func nextPosition(ctx context.Context, tx pgx.Tx, tenant string, project uuid.UUID, status pm.Status) (string, error) {
	var last *string
	err := tx.QueryRow(ctx, `SELECT max(position) FROM work_items
		WHERE tenant_id = $1 AND project_id = $2 AND status = $3 AND deleted_at IS NULL AND item_type <> 'project'`,
		tenant, project, string(status)).Scan(&last)
	if err != nil {
		return "", fmt.Errorf("read last position: %w", err)
	}
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
func (s *Store) UpdateWorkItem(ctx context.Context, actor pm.Actor, id uuid.UUID, expectedVersion int64, patch pm.WorkItemPatch) (item pm.WorkItem, changes []pm.FieldChange, err error) {
	op := "update work item " + id.String()
	if err := patch.Normalize(); err != nil {
		return pm.WorkItem{}, nil, fmt.Errorf("%s: %w", op, err)
	}
	if patch.Empty() {
		return pm.WorkItem{}, nil, fmt.Errorf("%s: %w", op, pm.Errorf(pm.EValidation, "the update sets no field"))
	}
	err = s.run(ctx, op, actor.Tenant, readWrite, func(tx pgx.Tx) error {
		cur, revision, err := lockItemForWrite(ctx, tx, actor, id)
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
			return errRollback // undoes the revision bump
		}
		if next.ParentID != cur.ParentID {
			if err := checkNewParent(ctx, tx, actor.Tenant, next); err != nil {
				return err
			}
		}
		if next.AssigneeID != cur.AssigneeID {
			if err := requireMember(ctx, tx, actor.Tenant, next.ProjectID, next.AssigneeID); err != nil {
				return err
			}
		}
		row := tx.QueryRow(ctx, `UPDATE work_items SET title = $4, description = $5, status = $6, priority = $7,
				assignee_id = $8, parent_id = $9, position = $10, story_points = $11,
				version = version + 1, revision = $12, updated_at = now(), updated_by = $13
			WHERE tenant_id = $1 AND id = $2 AND version = $3
			RETURNING `+itemColumns,
			actor.Tenant, id, expectedVersion, next.Title, next.Description, string(next.Status),
			string(next.Priority), nullID(next.AssigneeID), nullID(next.ParentID), next.Position,
			next.StoryPoints, revision, actor.User)
		item, err = scanItem(row)
		if errors.Is(err, pgx.ErrNoRows) {
			// Not expected while the row is locked; answer as for a stale version.
			return staleVersion(cur.Version, expectedVersion)
		}
		if err != nil {
			return fmt.Errorf("update: %w", err)
		}
		return insertItemActivity(ctx, tx, actor, item, pm.ActionUpdated, changes)
	})
	if err != nil {
		return pm.WorkItem{}, nil, err
	}
	return item, changes, nil
}

// checkNewParent checks the new parent of w: live, in w's project, not w,
// and of a type that ranks above w's. Because types rank strictly lower down
// every parent chain, an item's descendants all rank below it and can never
// become its parent: re-parenting cannot make a cycle.
func checkNewParent(ctx context.Context, tx pgx.Tx, tenant string, w pm.WorkItem) error {
	if w.ParentID == w.ID {
		return pm.FieldErrorf("parent_id", "an item cannot be its own parent: that would create a cycle")
	}
	parent, err := readItem(ctx, tx, tenant, w.ParentID, false)
	if err != nil {
		return err
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
func (s *Store) DeleteWorkItem(ctx context.Context, actor pm.Actor, id uuid.UUID, expectedVersion int64) (item pm.WorkItem, err error) {
	err = s.run(ctx, "delete work item "+id.String(), actor.Tenant, readWrite, func(tx pgx.Tx) error {
		cur, revision, err := lockItemForWrite(ctx, tx, actor, id)
		if err != nil {
			return err
		}
		if expectedVersion != 0 && cur.Version != expectedVersion {
			return staleVersion(cur.Version, expectedVersion)
		}
		var children int64
		err = tx.QueryRow(ctx, `SELECT count(*) FROM work_items
			WHERE tenant_id = $1 AND parent_id = $2 AND deleted_at IS NULL`, actor.Tenant, id).Scan(&children)
		if err != nil {
			return fmt.Errorf("count children: %w", err)
		}
		if children > 0 {
			noun := "children"
			if children == 1 {
				noun = "child"
			}
			return pm.Errorf(pm.EDeleteBlocked, "the work item has %d live %s; delete or move them first", children, noun)
		}
		row := tx.QueryRow(ctx, `UPDATE work_items SET deleted_at = now(), updated_at = now(), updated_by = $3,
				version = version + 1, revision = $4
			WHERE tenant_id = $1 AND id = $2
			RETURNING `+itemColumns, actor.Tenant, id, actor.User, revision)
		if item, err = scanItem(row); err != nil {
			return fmt.Errorf("delete: %w", err)
		}
		changes := []pm.FieldChange{{Field: "deleted_at", New: item.DeletedAt.UTC().Format(time.RFC3339Nano)}}
		return insertItemActivity(ctx, tx, actor, item, pm.ActionDeleted, changes)
	})
	if err != nil {
		return pm.WorkItem{}, err
	}
	return item, nil
}

// lockItemForWrite prepares a write to a live item: it finds the item's
// project, bumps the project's revision (which serialises the project's
// writes), checks the role (editor; admin for the project item itself) and
// locks the item row. It returns the item and the new revision.
func lockItemForWrite(ctx context.Context, tx pgx.Tx, actor pm.Actor, id uuid.UUID) (pm.WorkItem, int64, error) {
	project, err := itemProject(ctx, tx, actor.Tenant, id)
	if err != nil {
		return pm.WorkItem{}, 0, err
	}
	if project == uuid.Nil {
		return pm.WorkItem{}, 0, notFound("work_item_id", "work item %s not found", id)
	}
	revision, err := bumpRevision(ctx, tx, actor.Tenant, project)
	if err != nil {
		return pm.WorkItem{}, 0, err
	}
	role, err := requireRole(ctx, tx, actor, project, pm.RoleEditor)
	if err != nil {
		return pm.WorkItem{}, 0, err
	}
	cur, err := readItem(ctx, tx, actor.Tenant, id, true)
	if err != nil {
		return pm.WorkItem{}, 0, err
	}
	if cur == nil || cur.Deleted() {
		return pm.WorkItem{}, 0, notFound("work_item_id", "work item %s not found", id)
	}
	if cur.Type == pm.TypeProject && !role.Allows(pm.RoleAdmin) {
		return pm.WorkItem{}, 0, pm.Errorf(pm.EUnauthorized, "your role in project %s is %s; changing the project itself needs admin", project, role)
	}
	return *cur, revision, nil
}

// itemProject returns the project of an item, deleted or not; uuid.Nil when
// there is no such item in the tenant. An item's project never changes, so
// this may be read before the project is locked.
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

// readItem reads an item, deleted or not, locking it when forUpdate; nil
// when there is no such item in the tenant.
func readItem(ctx context.Context, tx pgx.Tx, tenant string, id uuid.UUID, forUpdate bool) (*pm.WorkItem, error) {
	q := `SELECT ` + itemColumns + ` FROM work_items WHERE tenant_id = $1 AND id = $2`
	if forUpdate {
		q += ` FOR UPDATE`
	}
	w, err := scanItem(tx.QueryRow(ctx, q, tenant, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read work item: %w", err)
	}
	return &w, nil
}

// bumpRevision increments a project's revision and returns it. The row lock
// it takes, held until the transaction ends, makes the project's writes
// commit one at a time, in revision order; a rollback undoes the increment,
// so revisions have no gaps.
func bumpRevision(ctx context.Context, tx pgx.Tx, tenant string, project uuid.UUID) (int64, error) {
	var revision int64
	err := tx.QueryRow(ctx, `UPDATE project_revisions SET revision = revision + 1
		WHERE tenant_id = $1 AND project_id = $2 RETURNING revision`, tenant, project).Scan(&revision)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, notFound("project_id", "project %s not found", project)
	}
	if err != nil {
		return 0, fmt.Errorf("bump project revision: %w", err)
	}
	return revision, nil
}

// requireMember checks that user, unless uuid.Nil, is a member of project
// (any role), as an assignee must be.
func requireMember(ctx context.Context, tx pgx.Tx, tenant string, project, user uuid.UUID) error {
	if user == uuid.Nil {
		return nil
	}
	var member bool
	err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM project_members
		WHERE tenant_id = $1 AND project_id = $2 AND user_id = $3)`, tenant, project, user).Scan(&member)
	if err != nil {
		return fmt.Errorf("check assignee: %w", err)
	}
	if !member {
		return pm.FieldErrorf("assignee_id", "the assignee %s is not a member of the project", user)
	}
	return nil
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
	read := func(tx pgx.Tx) error {
		var snap pm.Snapshot
		err := tx.QueryRow(ctx, `SELECT revision, now() FROM project_revisions
			WHERE tenant_id = $1 AND project_id = $2`, actor.Tenant, q.ProjectID).Scan(&snap.Revision, &snap.Time)
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound("project_id", "project %s not found", q.ProjectID)
		}
		if err != nil {
			return fmt.Errorf("read project revision: %w", err)
		}
		if _, err := requireRole(ctx, tx, actor, q.ProjectID, pm.RoleViewer); err != nil {
			return err
		}
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
	return s.runWhile(ctx, op, actor.Tenant, snapshot, read, func() bool { return !handed })
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
		w, err := readItem(ctx, tx, actor.Tenant, id, false)
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
	err = s.run(ctx, "read revision of project "+project.String(), actor.Tenant, readOnly, func(tx pgx.Tx) error {
		var err error
		revision, err = projectRevision(ctx, tx, actor.Tenant, project, false)
		if err != nil {
			return err
		}
		_, err = requireRole(ctx, tx, actor, project, pm.RoleViewer)
		return err
	})
	if err != nil {
		return 0, err
	}
	return revision, nil
}

// projectRevision reads a project's current revision, locking the counter
// row when forUpdate; NOT_FOUND when there is no such project in the tenant.
func projectRevision(ctx context.Context, tx pgx.Tx, tenant string, project uuid.UUID, forUpdate bool) (int64, error) {
	q := `SELECT revision FROM project_revisions WHERE tenant_id = $1 AND project_id = $2`
	if forUpdate {
		q += ` FOR UPDATE`
	}
	var revision int64
	err := tx.QueryRow(ctx, q, tenant, project).Scan(&revision)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, notFound("project_id", "project %s not found", project)
	}
	if err != nil {
		return 0, fmt.Errorf("read project revision: %w", err)
	}
	return revision, nil
}
