package repo

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/pmhq/pm"
)

// Membership changes lock the project's counter row (without bumping it:
// they produce no work item events), so they serialise with the project's
// work item writes; their activity entries record the revision they saw.

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
	err = s.run(ctx, op, actor.Tenant, readWrite, func(tx pgx.Tx) error {
		revision, err := lockMembers(ctx, tx, actor, project)
		if err != nil {
			return err
		}
		old, err := memberRole(ctx, tx, actor.Tenant, project, user)
		if err != nil {
			return err
		}
		switch {
		case old == "":
			_, err = tx.Exec(ctx, `INSERT INTO project_members (tenant_id, project_id, user_id, role, added_by)
				VALUES ($1, $2, $3, $4, $5)`, actor.Tenant, project, user, string(role), actor.User)
			if err != nil {
				return fmt.Errorf("insert member: %w", err)
			}
			err = insertMemberActivity(ctx, tx, actor, project, user, pm.ActionMemberAdded, "", role, revision)
		case old != role:
			if old == pm.RoleAdmin {
				if err := requireAnotherAdmin(ctx, tx, actor.Tenant, project, "role", "demote"); err != nil {
					return err
				}
			}
			_, err = tx.Exec(ctx, `UPDATE project_members SET role = $4
				WHERE tenant_id = $1 AND project_id = $2 AND user_id = $3`, actor.Tenant, project, user, string(role))
			if err != nil {
				return fmt.Errorf("update member: %w", err)
			}
			err = insertMemberActivity(ctx, tx, actor, project, user, pm.ActionMemberRoleChanged, old, role, revision)
		}
		if err != nil {
			return err
		}
		member, _, err = readMember(ctx, tx, actor.Tenant, project, user)
		return err
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
	err = s.run(ctx, op, actor.Tenant, readWrite, func(tx pgx.Tx) error {
		revision, err := lockMembers(ctx, tx, actor, project)
		if err != nil {
			return err
		}
		var found bool
		member, found, err = readMember(ctx, tx, actor.Tenant, project, user)
		if err != nil {
			return err
		}
		if !found {
			return notFound("user_id", "user %s is not a member of project %s", user, project)
		}
		old := member.Role
		if old == pm.RoleAdmin {
			if err := requireAnotherAdmin(ctx, tx, actor.Tenant, project, "user_id", "remove"); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `DELETE FROM project_members WHERE tenant_id = $1 AND project_id = $2 AND user_id = $3`,
			actor.Tenant, project, user)
		if err != nil {
			return fmt.Errorf("delete member: %w", err)
		}
		return insertMemberActivity(ctx, tx, actor, project, user, pm.ActionMemberRemoved, old, "", revision)
	})
	if err != nil {
		return pm.Member{}, err
	}
	return member, nil
}

// ListMembers lists a project's members by user id (viewer role).
func (s *Store) ListMembers(ctx context.Context, actor pm.Actor, project uuid.UUID) (members []pm.Member, err error) {
	err = s.run(ctx, "list members of project "+project.String(), actor.Tenant, readOnly, func(tx pgx.Tx) error {
		if _, err := projectRevision(ctx, tx, actor.Tenant, project, false); err != nil {
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

// lockMembers locks the project's counter row, checks the admin role and
// returns the project's current revision.
func lockMembers(ctx context.Context, tx pgx.Tx, actor pm.Actor, project uuid.UUID) (int64, error) {
	revision, err := projectRevision(ctx, tx, actor.Tenant, project, true)
	if err != nil {
		return 0, err
	}
	if _, err := requireRole(ctx, tx, actor, project, pm.RoleAdmin); err != nil {
		return 0, err
	}
	return revision, nil
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

// readMember reads a user's membership of a project; found is false for none.
func readMember(ctx context.Context, tx pgx.Tx, tenant string, project, user uuid.UUID) (m pm.Member, found bool, err error) {
	m, err = scanMember(tx.QueryRow(ctx, selectMembers+`
		WHERE m.tenant_id = $1 AND m.project_id = $2 AND m.user_id = $3`, tenant, project, user))
	if errors.Is(err, pgx.ErrNoRows) {
		return pm.Member{}, false, nil
	}
	if err != nil {
		return pm.Member{}, false, fmt.Errorf("read member: %w", err)
	}
	return m, true, nil
}

// memberRole returns a user's role in a project, "" for none.
func memberRole(ctx context.Context, tx pgx.Tx, tenant string, project, user uuid.UUID) (pm.Role, error) {
	m, _, err := readMember(ctx, tx, tenant, project, user)
	return m.Role, err
}

// requireAnotherAdmin fails with a VALIDATION_ERROR on field unless the
// project has more than one admin.
func requireAnotherAdmin(ctx context.Context, tx pgx.Tx, tenant string, project uuid.UUID, field, verb string) error {
	var admins int64
	err := tx.QueryRow(ctx, `SELECT count(*) FROM project_members
		WHERE tenant_id = $1 AND project_id = $2 AND role = 'admin'`, tenant, project).Scan(&admins)
	if err != nil {
		return fmt.Errorf("count admins: %w", err)
	}
	if admins <= 1 {
		return pm.FieldErrorf(field, "cannot %s the project's last admin; make another member admin first", verb)
	}
	return nil
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
