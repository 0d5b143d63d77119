package repo_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/repo"
	"github.com/pmhq/pm/repo/repotest"
)

// fixture is a store with one project in one tenant and a user of each role,
// plus a user of the tenant who is no member.
type fixture struct {
	s                               *repo.Store
	admin, editor, viewer, outsider pm.Actor
	project                         pm.WorkItem
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureOn(t, repotest.MustStore(t))
}

func newFixtureOn(t *testing.T, s *repo.Store) *fixture {
	t.Helper()
	admin := repotest.NewActor()
	f := &fixture{
		s:        s,
		admin:    admin,
		editor:   pm.Actor{Tenant: admin.Tenant, User: uuid.New()},
		viewer:   pm.Actor{Tenant: admin.Tenant, User: uuid.New()},
		outsider: pm.Actor{Tenant: admin.Tenant, User: uuid.New()},
	}
	f.project = repotest.MustProject(t, s, admin)
	repotest.MustMember(t, s, admin, f.project.ID, f.editor.User, pm.RoleEditor)
	repotest.MustMember(t, s, admin, f.project.ID, f.viewer.User, pm.RoleViewer)
	return f
}

// create makes an item in the fixture's project as the editor.
func (f *fixture) create(t *testing.T, in pm.NewWorkItem) pm.WorkItem {
	t.Helper()
	if in.ProjectID == uuid.Nil && in.ParentID == uuid.Nil {
		in.ProjectID = f.project.ID
	}
	if in.Title == "" {
		in.Title = string(in.Type) + " " + uuid.NewString()[:8]
	}
	w, created, err := f.s.CreateWorkItem(t.Context(), f.editor, in)
	if err != nil {
		t.Fatalf("create %s: %v", in.Type, err)
	}
	if !created {
		t.Fatalf("create %s: created = false", in.Type)
	}
	return w
}

func (f *fixture) revision(t *testing.T) int64 {
	t.Helper()
	r, err := f.s.ProjectRevision(t.Context(), f.admin, f.project.ID)
	if err != nil {
		t.Fatalf("ProjectRevision: %v", err)
	}
	return r
}

func (f *fixture) live(t *testing.T) []pm.WorkItem {
	t.Helper()
	items, _, err := f.s.ListWorkItems(t.Context(), f.viewer, pm.WorkItemQuery{ProjectID: f.project.ID})
	if err != nil {
		t.Fatalf("ListWorkItems: %v", err)
	}
	return items
}

func (f *fixture) activity(t *testing.T, item uuid.UUID) []pm.ActivityEntry {
	t.Helper()
	entries, err := f.s.ListActivity(t.Context(), f.viewer, pm.ActivityQuery{ProjectID: f.project.ID, WorkItemID: item, Limit: pm.ActivityPageMax})
	if err != nil {
		t.Fatalf("ListActivity: %v", err)
	}
	return entries
}

// wantCode fails unless err carries a *pm.Error with code and, when field is
// not empty, that field.
func wantCode(t *testing.T, err error, code, field string) *pm.Error {
	t.Helper()
	var e *pm.Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v, want a *pm.Error with code %s", err, code)
	}
	if e.Code != code || (field != "" && e.Field != field) {
		t.Fatalf("error = %v, want code %s field %q", err, code, field)
	}
	if e.Message == "" {
		t.Fatalf("error %v has no message", err)
	}
	return e
}

func wantMessage(t *testing.T, e *pm.Error, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(e.Message, p) {
			t.Errorf("message %q does not contain %q", e.Message, p)
		}
	}
}

func ptr[T any](v T) *T { return &v }
