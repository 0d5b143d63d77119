package repo_test

import (
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/repo/repotest"
)

// operations runs each Store method once on the fixture's project, as actor.
func operations(f *fixture, item pm.WorkItem) map[string]func(t *testing.T, actor pm.Actor) error {
	return map[string]func(t *testing.T, actor pm.Actor) error{
		"create": func(t *testing.T, a pm.Actor) error {
			_, _, err := f.s.CreateWorkItem(t.Context(), a, pm.NewWorkItem{ProjectID: f.project.ID, Type: pm.TypeTask, Title: "x"})
			return err
		},
		"create under parent": func(t *testing.T, a pm.Actor) error {
			_, _, err := f.s.CreateWorkItem(t.Context(), a, pm.NewWorkItem{ParentID: item.ID, Type: pm.TypeStory, Title: "x"})
			return err
		},
		"update": func(t *testing.T, a pm.Actor) error {
			_, _, err := f.s.UpdateWorkItem(t.Context(), a, item.ID, 1, pm.WorkItemPatch{Title: ptr("changed")})
			return err
		},
		"delete": func(t *testing.T, a pm.Actor) error {
			_, err := f.s.DeleteWorkItem(t.Context(), a, item.ID, 0)
			return err
		},
		"list": func(t *testing.T, a pm.Actor) error {
			_, _, err := f.s.ListWorkItems(t.Context(), a, pm.WorkItemQuery{ProjectID: f.project.ID})
			return err
		},
		"revision": func(t *testing.T, a pm.Actor) error {
			_, err := f.s.ProjectRevision(t.Context(), a, f.project.ID)
			return err
		},
		"put member": func(t *testing.T, a pm.Actor) error {
			_, err := f.s.PutMember(t.Context(), a, f.project.ID, uuid.New(), pm.RoleViewer)
			return err
		},
		"remove member": func(t *testing.T, a pm.Actor) error {
			_, err := f.s.RemoveMember(t.Context(), a, f.project.ID, f.viewer.User)
			return err
		},
		"list members": func(t *testing.T, a pm.Actor) error {
			_, err := f.s.ListMembers(t.Context(), a, f.project.ID)
			return err
		},
		"activity": func(t *testing.T, a pm.Actor) error {
			_, err := f.s.ListActivity(t.Context(), a, pm.ActivityQuery{ProjectID: f.project.ID, WorkItemID: item.ID})
			return err
		},
	}
}

func TestAuthorization(t *testing.T) {
	f := newFixture(t)
	epic := f.create(t, pm.NewWorkItem{Type: pm.TypeEpic})
	ops := operations(f, epic)
	reads := []string{"list", "revision", "list members", "activity"}
	edits := []string{"create", "create under parent", "update", "delete"}
	manage := []string{"put member", "remove member"}

	tests := []struct {
		role    string
		actor   pm.Actor
		allowed []string
	}{
		{"outsider", f.outsider, nil},
		{"viewer", f.viewer, reads},
		{"editor", f.editor, append(append([]string{}, reads...), edits...)},
	}
	before := f.revision(t)
	for _, tc := range tests {
		for name, op := range ops {
			if slices.Contains(tc.allowed, name) {
				continue
			}
			t.Run(tc.role+" "+name, func(t *testing.T) {
				wantCode(t, op(t, tc.actor), pm.EUnauthorized, "")
			})
		}
	}
	if after := f.revision(t); after != before {
		t.Errorf("refused operations moved the revision from %d to %d", before, after)
	}
	// The allowed ones succeed (reads first: delete removes the item).
	for _, tc := range tests {
		for _, name := range tc.allowed {
			if slices.Contains(edits, name) {
				continue
			}
			if err := ops[name](t, tc.actor); err != nil {
				t.Errorf("%s %s: %v", tc.role, name, err)
			}
		}
	}
	for _, name := range append(edits, manage...) {
		if err := ops[name](t, f.admin); err != nil && !(name == "delete" && pm.ErrorCode(err) == pm.EDeleteBlocked) {
			t.Errorf("admin %s: %v", name, err)
		}
	}
}

// TestOtherTenant checks that ids of another tenant are NOT_FOUND, even for
// the same user id as the project's admin.
func TestOtherTenant(t *testing.T) {
	f := newFixture(t)
	epic := f.create(t, pm.NewWorkItem{Type: pm.TypeEpic})
	ops := operations(f, epic)
	intruders := map[string]pm.Actor{
		"same user id": {Tenant: "other-" + f.admin.Tenant, User: f.admin.User},
		"another user": repotest.NewActor(),
	}
	// The intruder has a project of their own, so they exist as a member somewhere.
	for _, a := range intruders {
		repotest.MustProject(t, f.s, a)
	}
	before := f.revision(t)
	for who, actor := range intruders {
		for name, op := range ops {
			t.Run(who+" "+name, func(t *testing.T) {
				wantCode(t, op(t, actor), pm.ENotFound, "")
			})
		}
	}
	if after := f.revision(t); after != before {
		t.Errorf("intruders moved the revision from %d to %d", before, after)
	}
	if items := f.live(t); len(items) != 2 {
		t.Errorf("project has %d items, want 2", len(items))
	}
}

func TestInvalidTenant(t *testing.T) {
	f := newFixture(t)
	_, err := f.s.ProjectRevision(t.Context(), pm.Actor{Tenant: "", User: f.admin.User}, f.project.ID)
	wantCode(t, err, pm.EUnauthorized, "")
	_, err = f.s.ProjectRevision(t.Context(), pm.Actor{Tenant: f.admin.Tenant + ":x", User: f.admin.User}, f.project.ID)
	wantCode(t, err, pm.EUnauthorized, "")
}
