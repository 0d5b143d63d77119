package repo_test

import (
	"bytes"
	"maps"
	"testing"

	"github.com/google/uuid"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/repo/repotest"
)

// A user's projects: exactly those of the tenant they are a member of, by
// title then id, each with their role, live counts by status and revision.
func TestListProjects(t *testing.T) {
	ctx := t.Context()
	s := repotest.MustStore(t)
	owner := repotest.NewActor()
	user := pm.Actor{Tenant: owner.Tenant, User: uuid.New()}
	project := func(actor pm.Actor, title string) pm.WorkItem {
		t.Helper()
		p, _, err := s.CreateWorkItem(ctx, actor, pm.NewWorkItem{Type: pm.TypeProject, Title: title})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	beta := project(user, "Beta") // user is its admin
	alpha := project(owner, "Alpha")
	gamma := project(owner, "Gamma")
	repotest.MustMember(t, s, owner, alpha.ID, user.User, pm.RoleEditor)
	repotest.MustMember(t, s, owner, gamma.ID, user.User, pm.RoleViewer)
	project(owner, "Aardvark") // user is no member
	// The same user id in another tenant, in a project titled to sort first.
	elsewhere := pm.Actor{Tenant: repotest.NewActor().Tenant, User: user.User}
	project(elsewhere, "AAA elsewhere")

	// Items in alpha: 2 todo, 1 in progress, 1 done; then a move and a delete.
	task := func(status pm.Status) pm.WorkItem {
		t.Helper()
		w, _, err := s.CreateWorkItem(ctx, user, pm.NewWorkItem{Type: pm.TypeTask, ProjectID: alpha.ID, Title: "task", Status: status})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	t1, _ := task(pm.StatusTodo), task(pm.StatusTodo)
	t3 := task(pm.StatusInProgress)
	task(pm.StatusDone)
	gone := task(pm.StatusReview)

	list := func(actor pm.Actor) []pm.ProjectSummary {
		t.Helper()
		got, err := s.ListProjects(ctx, actor)
		if err != nil {
			t.Fatalf("ListProjects: %v", err)
		}
		return got
	}
	check := func(wantCounts map[pm.Status]int64) {
		t.Helper()
		got := list(user)
		want := []struct {
			project pm.WorkItem
			role    pm.Role
		}{{alpha, pm.RoleEditor}, {beta, pm.RoleAdmin}, {gamma, pm.RoleViewer}}
		if len(got) != len(want) {
			t.Fatalf("ListProjects = %d projects, want %d: %+v", len(got), len(want), got)
		}
		for i, w := range want {
			g := got[i]
			if g.Project.ID != w.project.ID || g.Project.Title != w.project.Title || g.Project.Type != pm.TypeProject || g.Role != w.role {
				t.Errorf("project %d = %s %q as %s, want %s %q as %s", i, g.Project.ID, g.Project.Title, g.Role, w.project.ID, w.project.Title, w.role)
			}
			rev, err := s.ProjectRevision(ctx, user, w.project.ID)
			if err != nil || g.Revision != rev {
				t.Errorf("%s: revision %d, want %d (%v)", w.project.Title, g.Revision, rev, err)
			}
			if g.Counts == nil {
				t.Errorf("%s: nil counts", w.project.Title)
			}
		}
		if !maps.Equal(got[0].Counts, wantCounts) {
			t.Errorf("alpha's counts = %v, want %v", got[0].Counts, wantCounts)
		}
		if len(got[1].Counts) != 0 || len(got[2].Counts) != 0 {
			t.Errorf("empty projects' counts = %v, %v; want none (the project item is not counted)", got[1].Counts, got[2].Counts)
		}
	}
	check(map[pm.Status]int64{pm.StatusTodo: 2, pm.StatusInProgress: 1, pm.StatusDone: 1, pm.StatusReview: 1})

	done := pm.StatusDone
	if _, _, err := s.UpdateWorkItem(ctx, user, t1.ID, t1.Version, pm.WorkItemPatch{Status: &done}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.UpdateWorkItem(ctx, user, t3.ID, t3.Version, pm.WorkItemPatch{Status: &done}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteWorkItem(ctx, user, gone.ID, 0); err != nil {
		t.Fatal(err)
	}
	check(map[pm.Status]int64{pm.StatusTodo: 1, pm.StatusDone: 3})

	// A deleted project leaves the list.
	if _, err := s.DeleteWorkItem(ctx, user, beta.ID, 0); err != nil {
		t.Fatal(err)
	}
	if got := list(user); len(got) != 2 || got[0].Project.ID != alpha.ID || got[1].Project.ID != gamma.ID {
		t.Errorf("after deleting beta: %+v", got)
	}

	// Another tenant's member sees their own project only; a user of no
	// project sees none.
	if got := list(elsewhere); len(got) != 1 || got[0].Project.Title != "AAA elsewhere" || got[0].Role != pm.RoleAdmin {
		t.Errorf("the other tenant's list = %+v", got)
	}
	if got := list(pm.Actor{Tenant: owner.Tenant, User: uuid.New()}); len(got) != 0 {
		t.Errorf("a user of no project sees %+v", got)
	}
	_, err := s.ListProjects(ctx, pm.Actor{Tenant: "bad:tenant", User: user.User})
	wantCode(t, err, pm.EUnauthorized, "")
}

// Projects of the same title are ordered by id.
func TestListProjectsSameTitle(t *testing.T) {
	s := repotest.MustStore(t)
	actor := repotest.NewActor()
	for range 4 {
		if _, _, err := s.CreateWorkItem(t.Context(), actor, pm.NewWorkItem{Type: pm.TypeProject, Title: "Same"}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.ListProjects(t.Context(), actor)
	if err != nil || len(got) != 4 {
		t.Fatalf("ListProjects = %d, %v", len(got), err)
	}
	for i := 1; i < len(got); i++ {
		if bytes.Compare(got[i-1].Project.ID[:], got[i].Project.ID[:]) >= 0 {
			t.Errorf("not ordered by id: %s before %s", got[i-1].Project.ID, got[i].Project.ID)
		}
	}
}
