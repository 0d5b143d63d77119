package repo_test

import (
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/pmhq/pm"
)

func TestMembers(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	rev := f.revision(t)
	newcomer := uuid.New()

	m, err := f.s.PutMember(ctx, f.admin, f.project.ID, newcomer, pm.RoleViewer)
	if err != nil {
		t.Fatal(err)
	}
	if m.UserID != newcomer || m.Role != pm.RoleViewer || m.AddedBy != f.admin.User || m.ProjectID != f.project.ID || m.AddedAt.IsZero() {
		t.Errorf("newcomer = %+v", m)
	}
	promoted, err := f.s.PutMember(ctx, f.admin, f.project.ID, newcomer, pm.RoleEditor)
	if err != nil || promoted.Role != pm.RoleEditor || promoted.AddedAt != m.AddedAt {
		t.Fatalf("promote: %+v, %v", promoted, err)
	}
	// Setting the same role again changes nothing.
	if again, err := f.s.PutMember(ctx, f.admin, f.project.ID, newcomer, pm.RoleEditor); err != nil || again != promoted {
		t.Fatalf("same role again: %+v, %v", again, err)
	}
	members, err := f.s.ListMembers(ctx, f.viewer, f.project.ID)
	if err != nil || len(members) != 4 || !slices.IsSortedFunc(members, func(a, b pm.Member) int { return slices.Compare(a.UserID[:], b.UserID[:]) }) {
		t.Errorf("ListMembers = %+v, %v; want 4 ordered by user id", members, err)
	}
	if got := find(members, newcomer); got == nil || *got != promoted {
		t.Errorf("listed newcomer = %+v, want %+v", got, promoted)
	}
	removed, err := f.s.RemoveMember(ctx, f.admin, f.project.ID, newcomer)
	if err != nil || removed != promoted {
		t.Fatalf("remove: %+v, %v", removed, err)
	}
	if members, _ := f.s.ListMembers(ctx, f.viewer, f.project.ID); find(members, newcomer) != nil || len(members) != 3 {
		t.Fatalf("after remove: %+v", members)
	}
	if got := f.revision(t); got != rev {
		t.Errorf("member changes moved the revision from %d to %d", rev, got)
	}

	// Activity: added, role changed, removed, newest first, at the current revision.
	entries, err := f.s.ListActivity(ctx, f.viewer, pm.ActivityQuery{ProjectID: f.project.ID, Limit: 3})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		action   pm.Action
		old, new string
	}{
		{pm.ActionMemberRemoved, "editor", ""},
		{pm.ActionMemberRoleChanged, "viewer", "editor"},
		{pm.ActionMemberAdded, "", "viewer"},
	}
	if len(entries) != 3 {
		t.Fatalf("%d entries, want 3", len(entries))
	}
	for i, w := range want {
		e := entries[i]
		if e.Action != w.action || e.MemberUserID != newcomer || e.WorkItemID != uuid.Nil || e.ActorID != f.admin.User || e.Revision != rev ||
			!slices.Equal(e.Changes, []pm.FieldChange{{Field: "role", Old: w.old, New: w.new}}) {
			t.Errorf("entry %d = %+v, want %s %q→%q", i, e, w.action, w.old, w.new)
		}
	}
}

func TestMembersLastAdmin(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	_, err := f.s.PutMember(ctx, f.admin, f.project.ID, f.admin.User, pm.RoleEditor)
	wantMessage(t, wantCode(t, err, pm.EValidation, "role"), "last admin")
	_, err = f.s.RemoveMember(ctx, f.admin, f.project.ID, f.admin.User)
	wantMessage(t, wantCode(t, err, pm.EValidation, "user_id"), "last admin")

	// With a second admin, the first may step down, or leave.
	if _, err := f.s.PutMember(ctx, f.admin, f.project.ID, f.editor.User, pm.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.PutMember(ctx, f.admin, f.project.ID, f.admin.User, pm.RoleEditor); err != nil {
		t.Fatalf("demote one of two admins: %v", err)
	}
	// f.admin is an editor now and may not manage members.
	_, err = f.s.PutMember(ctx, f.admin, f.project.ID, f.admin.User, pm.RoleAdmin)
	wantCode(t, err, pm.EUnauthorized, "")
	if _, err := f.s.PutMember(ctx, f.editor, f.project.ID, f.admin.User, pm.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	if removed, err := f.s.RemoveMember(ctx, f.admin, f.project.ID, f.admin.User); err != nil || removed.UserID != f.admin.User {
		t.Fatalf("admin removes themself: %+v, %v", removed, err)
	}
	_, err = f.s.ListMembers(ctx, f.admin, f.project.ID)
	wantCode(t, err, pm.EUnauthorized, "")
}

func TestMembersErrors(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	_, err := f.s.PutMember(ctx, f.admin, f.project.ID, uuid.New(), pm.Role("owner"))
	wantCode(t, err, pm.EValidation, "role")
	_, err = f.s.PutMember(ctx, f.admin, f.project.ID, uuid.Nil, pm.RoleViewer)
	wantCode(t, err, pm.EValidation, "user_id")
	_, err = f.s.RemoveMember(ctx, f.admin, f.project.ID, uuid.New())
	wantCode(t, err, pm.ENotFound, "user_id")
	_, err = f.s.PutMember(ctx, f.admin, uuid.New(), uuid.New(), pm.RoleViewer)
	wantCode(t, err, pm.ENotFound, "project_id")
	_, err = f.s.ListMembers(ctx, f.admin, uuid.New())
	wantCode(t, err, pm.ENotFound, "project_id")
}

func find(members []pm.Member, user uuid.UUID) *pm.Member {
	for i := range members {
		if members[i].UserID == user {
			return &members[i]
		}
	}
	return nil
}
