package repo

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/pmhq/pm"
)

// A membership change locks the changed member's row FOR UPDATE, so that it
// waits for the member's writes in flight (which hold the row FOR SHARE) and
// later writes of the member see the change; then the project's counter row
// FOR UPDATE, without bumping it (a membership change makes no work item
// event): that orders membership changes among themselves and against the
// project's item writes, and its activity entry records the revision it saw.
// See the package doc for the lock order.
const (
	lockMemberSQL = `SELECT 1 FROM project_members
		WHERE tenant_id = $1 AND project_id = $2 AND user_id = $3 FOR UPDATE`
	lockRevisionSQL = `SELECT revision FROM project_revisions
		WHERE tenant_id = $1 AND project_id = $2 FOR UPDATE`
	roleSQL = `SELECT role FROM project_members
		WHERE tenant_id = $1 AND project_id = $2 AND user_id = $3`
	adminsSQL = `SELECT count(*) FROM project_members
		WHERE tenant_id = $1 AND project_id = $2 AND role = 'admin'`
	memberSQL = selectMembers + `
		WHERE m.tenant_id = $1 AND m.project_id = $2 AND m.user_id = $3`
)

// memberChange is what the first round trip of a membership change read:
// the locks first, then, in statements that see all that committed before
// them, the actor's role, the member and the project's admins.
type memberChange struct {
	revision  int64 // 0: no such project
	actorRole pm.Role
	member    pm.Member
	found     bool // the user is a member
	admins    int64
}

// queue queues the first round trip of a change of user's membership.
func (c *memberChange) queue(b *pgx.Batch, actor pm.Actor, project, user uuid.UUID) {
	*c = memberChange{}
	b.Queue(lockMemberSQL, actor.Tenant, project, user)
	b.Queue(lockRevisionSQL, actor.Tenant, project).QueryRow(func(row pgx.Row) error {
		if err := row.Scan(&c.revision); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("lock project revision: %w", err)
		}
		return nil
	})
	b.Queue(roleSQL, actor.Tenant, project, actor.User).QueryRow(func(row pgx.Row) error {
		var role string
		if err := row.Scan(&role); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("read role: %w", err)
		}
		c.actorRole = pm.Role(role)
		return nil
	})
	b.Queue(memberSQL, actor.Tenant, project, user).QueryRow(func(row pgx.Row) error {
		m, err := scanMember(row)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read member: %w", err)
		}
		c.member, c.found = m, true
		return nil
	})
	b.Queue(adminsSQL, actor.Tenant, project).QueryRow(func(row pgx.Row) error {
		if err := row.Scan(&c.admins); err != nil {
			return fmt.Errorf("count admins: %w", err)
		}
		return nil
	})
}

// authorize checks that the project exists and that the actor is its admin.
func (c *memberChange) authorize(project uuid.UUID) error {
	if c.revision == 0 {
		return notFound("project_id", "project %s not found", project)
	}
	return checkRole(project, c.actorRole, pm.RoleAdmin)
}

// requireAnotherAdmin fails with a VALIDATION_ERROR on field unless the
// project has more than one admin.
func (c *memberChange) requireAnotherAdmin(field, verb string) error {
	if c.admins <= 1 {
		return pm.FieldErrorf(field, "cannot %s the project's last admin; make another member admin first", verb)
	}
	return nil
}

// PutMember adds a member or changes a member's role (admin role) and returns
// the member after the change. Demoting the project's last admin is a
// VALIDATION_ERROR on "role"; setting the role a member has changes nothing.
func (s *Store) PutMember(ctx context.Context, actor pm.Actor, project, user uuid.UUID, role pm.Role) (member pm.Member, err error) {
	op := fmt.Sprintf("put member %s of project %s", user, project)
	if !role.Valid() {
		return pm.Member{}, fmt.Errorf("%s: %w", op, pm.FieldErrorf("role", "role must be viewer, editor or admin"))
	}
	if user == uuid.Nil {
		return pm.Member{}, fmt.Errorf("%s: %w", op, pm.FieldErrorf("user_id", "user_id is required"))
	}
	var c memberChange
	lead := func(b *pgx.Batch) { c.queue(b, actor, project, user) }
	err = s.runLed(ctx, op, actor.Tenant, readWrite, lead, func(tx pgx.Tx) error {
		if err := c.authorize(project); err != nil {
			return err
		}
		b := &pgx.Batch{}
		switch old := c.member.Role; {
		case !c.found:
			b.Queue(`INSERT INTO project_members (tenant_id, project_id, user_id, role, added_by)
				VALUES ($1, $2, $3, $4, $5)`, actor.Tenant, project, user, string(role), actor.User)
			if err := queueMemberActivity(b, actor, project, user, pm.ActionMemberAdded, "", role, c.revision); err != nil {
				return err
			}
		case old != role:
			if old == pm.RoleAdmin {
				if err := c.requireAnotherAdmin("role", "demote"); err != nil {
					return err
				}
			}
			b.Queue(`UPDATE project_members SET role = $4
				WHERE tenant_id = $1 AND project_id = $2 AND user_id = $3`, actor.Tenant, project, user, string(role))
			if err := queueMemberActivity(b, actor, project, user, pm.ActionMemberRoleChanged, old, role, c.revision); err != nil {
				return err
			}
		default:
			member = c.member
			return errRollback // nothing to change
		}
		b.Queue(memberSQL, actor.Tenant, project, user).QueryRow(func(row pgx.Row) error {
			var err error
			if member, err = scanMember(row); err != nil {
				return fmt.Errorf("read member: %w", err)
			}
			return nil
		})
		if err := commitWith(ctx, tx, b); err != nil {
			return fmt.Errorf("write member: %w", err)
		}
		return nil
	})
	if err != nil {
		return pm.Member{}, err
	}
	return member, nil
}

// RemoveMember removes a member (admin role) and returns the member as it
// was. Removing a non-member is NOT_FOUND; removing the project's last admin
// is a VALIDATION_ERROR on "user_id". An admin may remove themself.
func (s *Store) RemoveMember(ctx context.Context, actor pm.Actor, project, user uuid.UUID) (member pm.Member, err error) {
	op := fmt.Sprintf("remove member %s of project %s", user, project)
	var c memberChange
	lead := func(b *pgx.Batch) { c.queue(b, actor, project, user) }
	err = s.runLed(ctx, op, actor.Tenant, readWrite, lead, func(tx pgx.Tx) error {
		if err := c.authorize(project); err != nil {
			return err
		}
		if !c.found {
			return notFound("user_id", "user %s is not a member of project %s", user, project)
		}
		member = c.member
		if member.Role == pm.RoleAdmin {
			if err := c.requireAnotherAdmin("user_id", "remove"); err != nil {
				return err
			}
		}
		b := &pgx.Batch{}
		b.Queue(`DELETE FROM project_members WHERE tenant_id = $1 AND project_id = $2 AND user_id = $3`,
			actor.Tenant, project, user)
		if err := queueMemberActivity(b, actor, project, user, pm.ActionMemberRemoved, member.Role, "", c.revision); err != nil {
			return err
		}
		if err := commitWith(ctx, tx, b); err != nil {
			return fmt.Errorf("delete member: %w", err)
		}
		return nil
	})
	if err != nil {
		return pm.Member{}, err
	}
	return member, nil
}

// ListMembers lists a project's members by user id (viewer role).
func (s *Store) ListMembers(ctx context.Context, actor pm.Actor, project uuid.UUID) (members []pm.Member, err error) {
	err = s.run(ctx, "list members of project "+project.String(), actor.Tenant, readOnly, func(tx pgx.Tx) error {
		if _, err := projectRevision(ctx, tx, actor.Tenant, project); err != nil {
			return err
		}
		if _, err := requireRole(ctx, tx, actor, project, pm.RoleViewer); err != nil {
			return err
		}
		members, err = listMembers(ctx, tx, actor.Tenant, project)
		return err
	})
	if err != nil {
		return nil, err
	}
	return members, nil
}

// selectMembers reads members with their profiles, in scanMember's order;
// a WHERE clause on m (project_members) follows.
const selectMembers = `SELECT m.project_id, m.user_id, m.role, m.added_at, m.added_by,
		coalesce(u.name, ''), coalesce(u.email, '')
	FROM project_members m
	LEFT JOIN users u ON u.tenant_id = m.tenant_id AND u.user_id = m.user_id`

func scanMember(row pgx.Row) (pm.Member, error) {
	var m pm.Member
	var role string
	err := row.Scan(&m.ProjectID, &m.UserID, &role, &m.AddedAt, &m.AddedBy, &m.Profile.Name, &m.Profile.Email)
	m.Role = pm.Role(role)
	return m, err
}

func listMembers(ctx context.Context, tx pgx.Tx, tenant string, project uuid.UUID) ([]pm.Member, error) {
	rows, err := tx.Query(ctx, selectMembers+`
		WHERE m.tenant_id = $1 AND m.project_id = $2 ORDER BY m.user_id`, tenant, project)
	if err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	members, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (pm.Member, error) { return scanMember(row) })
	if err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	return members, nil
}
