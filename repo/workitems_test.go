package repo_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/position"
	"github.com/pmhq/pm/repo/repotest"
)

func TestCreateProject(t *testing.T) {
	s := repotest.MustStore(t)
	actor := repotest.NewActor()
	ctx := t.Context()

	p, created, err := s.CreateWorkItem(ctx, actor, pm.NewWorkItem{Type: pm.TypeProject, Title: "  Apollo  ", Description: "moon"})
	if err != nil || !created {
		t.Fatalf("CreateWorkItem = %v, %v", created, err)
	}
	if p.ID == uuid.Nil || p.ProjectID != p.ID || p.ParentID != uuid.Nil || p.Type != pm.TypeProject {
		t.Errorf("project ids/type wrong: %+v", p)
	}
	if p.Title != "Apollo" || p.Description != "moon" || p.Status != pm.StatusBacklog || p.Priority != pm.PriorityMedium {
		t.Errorf("project fields wrong: %+v", p)
	}
	if p.Version != 1 || p.Revision != 1 || p.CreatedBy != actor.User || p.UpdatedBy != actor.User || p.Deleted() {
		t.Errorf("project bookkeeping wrong: %+v", p)
	}
	if p.CreatedAt.IsZero() || p.Position == "" {
		t.Errorf("project created_at/position empty: %+v", p)
	}
	rev, err := s.ProjectRevision(ctx, actor, p.ID)
	if err != nil || rev != 1 {
		t.Errorf("ProjectRevision = %d, %v; want 1", rev, err)
	}
	members, err := s.ListMembers(ctx, actor, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(members) != 1 || members[0].UserID != actor.User || members[0].Role != pm.RoleAdmin || members[0].AddedBy != actor.User {
		t.Errorf("members = %+v, want the creator as admin", members)
	}
	entries, err := s.ListActivity(ctx, actor, pm.ActivityQuery{ProjectID: p.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Action != pm.ActionCreated || entries[0].WorkItemID != p.ID ||
		entries[0].ActorID != actor.User || entries[0].Revision != 1 || !slices.Equal(entries[0].Changes, p.Changes()) {
		t.Errorf("activity = %+v", entries)
	}

	// The project item itself is part of the project's items.
	items, snap, err := s.ListWorkItems(ctx, actor, pm.WorkItemQuery{ProjectID: p.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 1 || items[0].ID != p.ID || snap.Revision != 1 || snap.Time.IsZero() {
		t.Errorf("ListWorkItems = %+v, %+v", items, snap)
	}
}

func TestCreateItem(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	epic := f.create(t, pm.NewWorkItem{Type: pm.TypeEpic, Title: "Epic", Priority: pm.PriorityHigh})
	if epic.ParentID != f.project.ID || epic.ProjectID != f.project.ID {
		t.Errorf("epic parent/project = %s/%s, want the project %s", epic.ParentID, epic.ProjectID, f.project.ID)
	}
	if epic.Version != 1 || epic.Revision != 2 || epic.Status != pm.StatusBacklog || epic.Priority != pm.PriorityHigh || epic.CreatedBy != f.editor.User {
		t.Errorf("epic = %+v", epic)
	}
	// With only a parent, the project comes from the parent.
	story, created, err := f.s.CreateWorkItem(ctx, f.editor, pm.NewWorkItem{
		Type: pm.TypeStory, ParentID: epic.ID, Title: "Story", StoryPoints: ptr(int32(5)), AssigneeID: f.viewer.User,
	})
	if err != nil || !created {
		t.Fatalf("create story: %v", err)
	}
	if story.ProjectID != f.project.ID || story.ParentID != epic.ID || story.Revision != 3 ||
		story.StoryPoints == nil || *story.StoryPoints != 5 || story.AssigneeID != f.viewer.User {
		t.Errorf("story = %+v", story)
	}
	// A task may sit directly under the project.
	task := f.create(t, pm.NewWorkItem{Type: pm.TypeTask})
	if task.ParentID != f.project.ID {
		t.Errorf("task parent = %s, want the project", task.ParentID)
	}
	if got := f.revision(t); got != 4 {
		t.Errorf("revision = %d, want 4", got)
	}
	entries := f.activity(t, story.ID)
	if len(entries) != 1 || entries[0].Action != pm.ActionCreated || entries[0].Revision != 3 ||
		!slices.Equal(entries[0].Changes, story.Changes()) {
		t.Errorf("story activity = %+v", entries)
	}
}

func TestCreatePositions(t *testing.T) {
	f := newFixture(t)
	var backlog []string
	for range 4 {
		backlog = append(backlog, f.create(t, pm.NewWorkItem{Type: pm.TypeTask}).Position)
	}
	for i := 1; i < len(backlog); i++ {
		if backlog[i] <= backlog[i-1] {
			t.Fatalf("backlog positions not increasing: %q", backlog)
		}
	}
	// Another column starts afresh; a client position is kept.
	todo := f.create(t, pm.NewWorkItem{Type: pm.TypeTask, Status: pm.StatusTodo})
	if todo.Position != position.First {
		t.Errorf("first todo position = %q, want %q", todo.Position, position.First)
	}
	far := f.create(t, pm.NewWorkItem{Type: pm.TypeTask, Status: pm.StatusTodo, Position: "a9"})
	if far.Position != "a9" {
		t.Errorf("client position = %q, want a9", far.Position)
	}
	next := f.create(t, pm.NewWorkItem{Type: pm.TypeTask, Status: pm.StatusTodo})
	if next.Position <= "a9" {
		t.Errorf("position after a9 = %q, want above it", next.Position)
	}
	// Deleted items don't count.
	if _, err := f.s.DeleteWorkItem(t.Context(), f.editor, next.ID, 0); err != nil {
		t.Fatal(err)
	}
	again := f.create(t, pm.NewWorkItem{Type: pm.TypeTask, Status: pm.StatusTodo})
	if again.Position != next.Position {
		t.Errorf("position after deleting the last = %q, want %q again", again.Position, next.Position)
	}
	// The list is ordered by position.
	items := f.live(t)
	if !slices.IsSortedFunc(items, func(a, b pm.WorkItem) int {
		if a.Position < b.Position {
			return -1
		}
		if a.Position > b.Position {
			return 1
		}
		return 0
	}) {
		t.Errorf("ListWorkItems not ordered by position")
	}
}

func TestCreateValidation(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	epic := f.create(t, pm.NewWorkItem{Type: pm.TypeEpic})
	story := f.create(t, pm.NewWorkItem{Type: pm.TypeStory, ParentID: epic.ID})
	task := f.create(t, pm.NewWorkItem{Type: pm.TypeTask, ParentID: story.ID})
	gone := f.create(t, pm.NewWorkItem{Type: pm.TypeEpic})
	if _, err := f.s.DeleteWorkItem(ctx, f.editor, gone.ID, 0); err != nil {
		t.Fatal(err)
	}
	other := repotest.MustProject(t, f.s, f.editor)
	otherEpic := f.create(t, pm.NewWorkItem{Type: pm.TypeEpic, ProjectID: other.ID})

	tests := []struct {
		name        string
		in          pm.NewWorkItem
		code, field string
		message     string
	}{
		{"epic under epic", pm.NewWorkItem{Type: pm.TypeEpic, ParentID: epic.ID}, pm.EValidation, "parent_id", "rank below"},
		{"story under task", pm.NewWorkItem{Type: pm.TypeStory, ParentID: task.ID}, pm.EValidation, "parent_id", "story cannot be a child of a task"},
		{"epic under story", pm.NewWorkItem{Type: pm.TypeEpic, ProjectID: f.project.ID, ParentID: story.ID}, pm.EValidation, "parent_id", ""},
		{"task under task", pm.NewWorkItem{Type: pm.TypeTask, ParentID: task.ID}, pm.EValidation, "parent_id", ""},
		{"parent in another project", pm.NewWorkItem{Type: pm.TypeStory, ProjectID: f.project.ID, ParentID: otherEpic.ID}, pm.EValidation, "parent_id", "another project"},
		{"deleted parent", pm.NewWorkItem{Type: pm.TypeStory, ParentID: gone.ID}, pm.EValidation, "parent_id", "deleted"},
		{"missing parent with project", pm.NewWorkItem{Type: pm.TypeStory, ProjectID: f.project.ID, ParentID: uuid.New()}, pm.EValidation, "parent_id", "not found"},
		{"missing parent", pm.NewWorkItem{Type: pm.TypeStory, ParentID: uuid.New()}, pm.ENotFound, "parent_id", ""},
		{"missing project", pm.NewWorkItem{Type: pm.TypeStory, ProjectID: uuid.New()}, pm.ENotFound, "project_id", ""},
		{"assignee not a member", pm.NewWorkItem{Type: pm.TypeTask, ProjectID: f.project.ID, AssigneeID: f.outsider.User}, pm.EValidation, "assignee_id", "member"},
		{"project with a parent", pm.NewWorkItem{Type: pm.TypeProject, ParentID: epic.ID}, pm.EValidation, "parent_id", ""},
		{"no type", pm.NewWorkItem{ProjectID: f.project.ID}, pm.EValidation, "item_type", ""},
		{"no project", pm.NewWorkItem{Type: pm.TypeTask}, pm.EValidation, "project_id", ""},
		{"story points", pm.NewWorkItem{Type: pm.TypeTask, ProjectID: f.project.ID, StoryPoints: ptr(int32(1001))}, pm.EValidation, "story_points", ""},
		{"bad position", pm.NewWorkItem{Type: pm.TypeTask, ProjectID: f.project.ID, Position: "a00"}, pm.EValidation, "position", ""},
	}
	before := f.revision(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			if in.Title == "" {
				in.Title = "x"
			}
			_, _, err := f.s.CreateWorkItem(ctx, f.editor, in)
			e := wantCode(t, err, tc.code, tc.field)
			if tc.message != "" {
				wantMessage(t, e, tc.message)
			}
		})
	}
	if after := f.revision(t); after != before {
		t.Errorf("failed creates moved the revision from %d to %d", before, after)
	}
}

func TestCreateIdempotent(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	id := uuid.New()
	in := pm.NewWorkItem{ID: id, ProjectID: f.project.ID, Type: pm.TypeTask, Title: "once"}
	first, created, err := f.s.CreateWorkItem(ctx, f.editor, in)
	if err != nil || !created || first.ID != id {
		t.Fatalf("first create = %v, %v, %v", first.ID, created, err)
	}
	rev := f.revision(t)

	// A retry by the same actor returns the same item and changes nothing,
	// even if its other fields differ.
	retry := in
	retry.Title = "twice"
	again, created, err := f.s.CreateWorkItem(ctx, f.editor, retry)
	if err != nil || created {
		t.Fatalf("retry = created %v, %v; want false, nil", created, err)
	}
	if again != first {
		t.Errorf("retry returned %+v, want %+v", again, first)
	}
	if got := f.revision(t); got != rev {
		t.Errorf("retry moved the revision from %d to %d", rev, got)
	}
	if n := countID(f.live(t), id); n != 1 {
		t.Errorf("%d rows with the id, want 1", n)
	}
	if entries := f.activity(t, id); len(entries) != 1 {
		t.Errorf("%d activity entries, want 1", len(entries))
	}

	other := repotest.MustProject(t, f.s, f.editor)
	conflicts := []struct {
		name  string
		actor pm.Actor
		in    pm.NewWorkItem
	}{
		{"another actor", f.admin, in},
		{"another project", f.editor, pm.NewWorkItem{ID: id, ProjectID: other.ID, Type: pm.TypeTask, Title: "x"}},
		{"another type", f.editor, pm.NewWorkItem{ID: id, ProjectID: f.project.ID, Type: pm.TypeStory, Title: "x"}},
		{"a project", f.editor, pm.NewWorkItem{ID: id, Type: pm.TypeProject, Title: "x"}},
		{"the project's id", f.admin, pm.NewWorkItem{ID: f.project.ID, ProjectID: f.project.ID, Type: pm.TypeTask, Title: "x"}},
	}
	for _, tc := range conflicts {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := f.s.CreateWorkItem(ctx, tc.actor, tc.in)
			wantMessage(t, wantCode(t, err, pm.EConflict, ""), "already exists")
		})
	}
	if n := countID(f.live(t), id); n != 1 {
		t.Errorf("%d rows with the id, want 1", n)
	}

	// The same holds for a project.
	pid := uuid.New()
	p1, created1, err1 := f.s.CreateWorkItem(ctx, f.admin, pm.NewWorkItem{ID: pid, Type: pm.TypeProject, Title: "P"})
	p2, created2, err2 := f.s.CreateWorkItem(ctx, f.admin, pm.NewWorkItem{ID: pid, Type: pm.TypeProject, Title: "P"})
	if err1 != nil || err2 != nil || !created1 || created2 || p1 != p2 || p1.ID != pid {
		t.Errorf("project retry: %v %v %v %v", created1, created2, err1, err2)
	}
	_, _, err = f.s.CreateWorkItem(ctx, f.editor, pm.NewWorkItem{ID: pid, Type: pm.TypeProject, Title: "P"})
	wantCode(t, err, pm.EConflict, "")
}

func TestCreateIdempotentConcurrent(t *testing.T) {
	f := newFixture(t)
	for _, typ := range []pm.ItemType{pm.TypeTask, pm.TypeProject} {
		t.Run(string(typ), func(t *testing.T) {
			id := uuid.New()
			in := pm.NewWorkItem{ID: id, Type: typ, Title: "race"}
			if typ != pm.TypeProject {
				in.ProjectID = f.project.ID
			}
			const n = 10
			var (
				wg      sync.WaitGroup
				mu      sync.Mutex
				created int
				items   []pm.WorkItem
			)
			for range n {
				wg.Go(func() {
					w, c, err := f.s.CreateWorkItem(t.Context(), f.editor, in)
					if err != nil {
						t.Errorf("create: %v", err)
						return
					}
					mu.Lock()
					defer mu.Unlock()
					items = append(items, w)
					if c {
						created++
					}
				})
			}
			wg.Wait()
			if created != 1 || len(items) != n {
				t.Fatalf("created %d times out of %d answers, want once out of %d", created, len(items), n)
			}
			for _, w := range items {
				if w != items[0] || w.ID != id {
					t.Errorf("answers differ: %+v vs %+v", w, items[0])
				}
			}
			project := f.project.ID
			if typ == pm.TypeProject {
				project = id
			}
			got, _, err := f.s.ListWorkItems(t.Context(), f.editor, pm.WorkItemQuery{ProjectID: project})
			if err != nil {
				t.Fatal(err)
			}
			if c := countID(got, id); c != 1 {
				t.Errorf("%d rows, want 1", c)
			}
			entries, err := f.s.ListActivity(t.Context(), f.editor, pm.ActivityQuery{ProjectID: project, WorkItemID: id})
			if err != nil || len(entries) != 1 {
				t.Errorf("activity = %d entries, %v; want 1", len(entries), err)
			}
		})
	}
}

func countID(items []pm.WorkItem, id uuid.UUID) int {
	n := 0
	for _, w := range items {
		if w.ID == id {
			n++
		}
	}
	return n
}

func TestUpdate(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	task := f.create(t, pm.NewWorkItem{Type: pm.TypeTask, Title: "old", StoryPoints: ptr(int32(3))})

	w, changes, err := f.s.UpdateWorkItem(ctx, f.editor, task.ID, 1, pm.WorkItemPatch{
		Title: ptr(" new "), Status: ptr(pm.StatusInProgress), AssigneeID: ptr(f.viewer.User),
		Priority:         ptr(pm.PriorityMedium), // unchanged
		ClearStoryPoints: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	wantChanges := []pm.FieldChange{
		{Field: "title", Old: "old", New: "new"},
		{Field: "status", Old: "backlog", New: "in_progress"},
		{Field: "assignee_id", New: f.viewer.User.String()},
		{Field: "story_points", Old: "3"},
	}
	if !slices.Equal(changes, wantChanges) {
		t.Errorf("changes = %+v, want %+v", changes, wantChanges)
	}
	if w.Title != "new" || w.Status != pm.StatusInProgress || w.AssigneeID != f.viewer.User || w.StoryPoints != nil {
		t.Errorf("updated item = %+v", w)
	}
	if w.Version != 2 || w.Revision != task.Revision+1 || w.UpdatedBy != f.editor.User || !w.UpdatedAt.After(task.UpdatedAt) ||
		w.CreatedAt != task.CreatedAt || w.CreatedBy != task.CreatedBy {
		t.Errorf("bookkeeping = %+v", w)
	}
	entries := f.activity(t, task.ID)
	if len(entries) != 2 || entries[0].Action != pm.ActionUpdated || entries[0].Revision != w.Revision ||
		entries[0].ActorID != f.editor.User || !slices.Equal(entries[0].Changes, wantChanges) {
		t.Errorf("activity = %+v", entries)
	}

	// A patch that changes nothing writes nothing.
	rev := f.revision(t)
	same, changes, err := f.s.UpdateWorkItem(ctx, f.editor, task.ID, 2, pm.WorkItemPatch{Title: ptr("new")})
	if err != nil || len(changes) != 0 || same != w {
		t.Errorf("no-op update = %+v, %v, %v", same, changes, err)
	}
	if got := f.revision(t); got != rev {
		t.Errorf("no-op update moved the revision from %d to %d", rev, got)
	}
	if n := len(f.activity(t, task.ID)); n != 2 {
		t.Errorf("no-op update wrote activity: %d entries", n)
	}

	// Unassign and estimate.
	w, _, err = f.s.UpdateWorkItem(ctx, f.editor, task.ID, 2, pm.WorkItemPatch{AssigneeID: ptr(uuid.Nil), StoryPoints: ptr(int32(8))})
	if err != nil || w.AssigneeID != uuid.Nil || w.StoryPoints == nil || *w.StoryPoints != 8 || w.Version != 3 {
		t.Errorf("unassign = %+v, %v", w, err)
	}
}

func TestUpdateErrors(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	epic := f.create(t, pm.NewWorkItem{Type: pm.TypeEpic})
	story := f.create(t, pm.NewWorkItem{Type: pm.TypeStory, ParentID: epic.ID})
	story2 := f.create(t, pm.NewWorkItem{Type: pm.TypeStory, ParentID: epic.ID})
	task := f.create(t, pm.NewWorkItem{Type: pm.TypeTask, ParentID: story.ID})
	gone := f.create(t, pm.NewWorkItem{Type: pm.TypeStory})
	if _, err := f.s.DeleteWorkItem(ctx, f.editor, gone.ID, 0); err != nil {
		t.Fatal(err)
	}
	other := repotest.MustProject(t, f.s, f.editor)
	otherEpic := f.create(t, pm.NewWorkItem{Type: pm.TypeEpic, ProjectID: other.ID})

	tests := []struct {
		name        string
		id          uuid.UUID
		version     int64
		patch       pm.WorkItemPatch
		code, field string
		message     string
	}{
		{"stale version", task.ID, 7, pm.WorkItemPatch{Title: ptr("x")}, pm.EConflict, "", "version 1"},
		{"empty patch", task.ID, 1, pm.WorkItemPatch{}, pm.EValidation, "", ""},
		{"bad title", task.ID, 1, pm.WorkItemPatch{Title: ptr("  ")}, pm.EValidation, "title", ""},
		{"parent emptied", task.ID, 1, pm.WorkItemPatch{ParentID: ptr(uuid.Nil)}, pm.EValidation, "parent_id", ""},
		{"re-parent to own child", story.ID, 1, pm.WorkItemPatch{ParentID: ptr(task.ID)}, pm.EValidation, "parent_id", "rank below"},
		{"re-parent to itself", story.ID, 1, pm.WorkItemPatch{ParentID: ptr(story.ID)}, pm.EValidation, "parent_id", "cycle"},
		{"re-parent to a sibling", story.ID, 1, pm.WorkItemPatch{ParentID: ptr(story2.ID)}, pm.EValidation, "parent_id", ""},
		{"re-parent across projects", story.ID, 1, pm.WorkItemPatch{ParentID: ptr(otherEpic.ID)}, pm.EValidation, "parent_id", "another project"},
		{"re-parent to a deleted item", task.ID, 1, pm.WorkItemPatch{ParentID: ptr(gone.ID)}, pm.EValidation, "parent_id", "deleted"},
		{"re-parent to nothing", task.ID, 1, pm.WorkItemPatch{ParentID: ptr(uuid.New())}, pm.EValidation, "parent_id", "not found"},
		{"re-parent the project", f.project.ID, 1, pm.WorkItemPatch{ParentID: ptr(epic.ID)}, pm.EUnauthorized, "", "needs admin"},
		{"rename the project", f.project.ID, 1, pm.WorkItemPatch{Title: ptr("mine")}, pm.EUnauthorized, "", "needs admin"},
		{"assignee not a member", task.ID, 1, pm.WorkItemPatch{AssigneeID: ptr(f.outsider.User)}, pm.EValidation, "assignee_id", "member"},
		{"deleted item", gone.ID, 2, pm.WorkItemPatch{Title: ptr("x")}, pm.ENotFound, "", ""},
		{"missing item", uuid.New(), 1, pm.WorkItemPatch{Title: ptr("x")}, pm.ENotFound, "", ""},
	}
	// An admin may change the project item, but not give it a parent.
	_, _, err := f.s.UpdateWorkItem(ctx, f.admin, f.project.ID, 1, pm.WorkItemPatch{ParentID: ptr(epic.ID)})
	wantCode(t, err, pm.EValidation, "parent_id")
	before := f.revision(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := f.s.UpdateWorkItem(ctx, f.editor, tc.id, tc.version, tc.patch)
			e := wantCode(t, err, tc.code, tc.field)
			if tc.message != "" {
				wantMessage(t, e, tc.message)
			}
			if tc.code == pm.EConflict && e.CurrentVersion != 1 {
				t.Errorf("CurrentVersion = %d, want 1", e.CurrentVersion)
			}
		})
	}
	if after := f.revision(t); after != before {
		t.Errorf("failed updates moved the revision from %d to %d", before, after)
	}
	for _, w := range f.live(t) {
		if w.Version != 1 {
			t.Errorf("item %s (%s) changed to version %d", w.ID, w.Type, w.Version)
		}
	}

	// A valid re-parent works.
	moved, changes, err := f.s.UpdateWorkItem(ctx, f.editor, task.ID, 1, pm.WorkItemPatch{ParentID: ptr(story2.ID)})
	if err != nil || moved.ParentID != story2.ID ||
		!slices.Equal(changes, []pm.FieldChange{{Field: "parent_id", Old: story.ID.String(), New: story2.ID.String()}}) {
		t.Errorf("re-parent = %+v, %+v, %v", moved, changes, err)
	}
}

func TestUpdateConcurrentSameVersion(t *testing.T) {
	f := newFixture(t)
	task := f.create(t, pm.NewWorkItem{Type: pm.TypeTask})
	const n = 10
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		wins      []pm.WorkItem
		conflicts int
	)
	for i := range n {
		wg.Go(func() {
			w, _, err := f.s.UpdateWorkItem(t.Context(), f.editor, task.ID, 1, pm.WorkItemPatch{Title: ptr(fmt.Sprintf("writer %d", i))})
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				wins = append(wins, w)
				return
			}
			pe := pm.AsError(err)
			if pe.Code != pm.EConflict || pe.CurrentVersion != 2 {
				t.Errorf("loser error = %v, want CONFLICT at version 2", err)
			}
			conflicts++
		})
	}
	wg.Wait()
	if len(wins) != 1 || conflicts != n-1 {
		t.Fatalf("%d wins, %d conflicts; want 1 and %d", len(wins), conflicts, n-1)
	}
	items := f.live(t)
	for _, w := range items {
		if w.ID == task.ID && (w.Title != wins[0].Title || w.Version != 2) {
			t.Errorf("stored %q v%d, want the winner's %q v2", w.Title, w.Version, wins[0].Title)
		}
	}
	if got := f.revision(t); got != wins[0].Revision {
		t.Errorf("revision = %d, want %d (one bump)", got, wins[0].Revision)
	}
}

func TestDelete(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	epic := f.create(t, pm.NewWorkItem{Type: pm.TypeEpic})
	s1 := f.create(t, pm.NewWorkItem{Type: pm.TypeStory, ParentID: epic.ID})
	s2 := f.create(t, pm.NewWorkItem{Type: pm.TypeStory, ParentID: epic.ID})

	_, err := f.s.DeleteWorkItem(ctx, f.editor, epic.ID, 0)
	wantMessage(t, wantCode(t, err, pm.EDeleteBlocked, ""), "2 live children")
	_, err = f.s.DeleteWorkItem(ctx, f.editor, s1.ID, 5)
	if e := wantCode(t, err, pm.EConflict, ""); e.CurrentVersion != 1 {
		t.Errorf("CurrentVersion = %d, want 1", e.CurrentVersion)
	}

	rev := f.revision(t)
	tomb, err := f.s.DeleteWorkItem(ctx, f.editor, s1.ID, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !tomb.Deleted() || tomb.Version != 2 || tomb.Revision != rev+1 || tomb.UpdatedBy != f.editor.User || tomb.Title != s1.Title {
		t.Errorf("tombstone = %+v", tomb)
	}
	_, err = f.s.DeleteWorkItem(ctx, f.editor, epic.ID, 0)
	wantMessage(t, wantCode(t, err, pm.EDeleteBlocked, ""), "1 live child")

	if _, err := f.s.DeleteWorkItem(ctx, f.editor, s2.ID, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.DeleteWorkItem(ctx, f.editor, epic.ID, 1); err != nil {
		t.Fatalf("delete epic without live children: %v", err)
	}
	_, err = f.s.DeleteWorkItem(ctx, f.editor, s1.ID, 0)
	wantCode(t, err, pm.ENotFound, "")
	_, err = f.s.DeleteWorkItem(ctx, f.editor, uuid.New(), 0)
	wantCode(t, err, pm.ENotFound, "")

	if n := countID(f.live(t), s1.ID); n != 0 {
		t.Errorf("deleted item listed as live")
	}
	entries := f.activity(t, s1.ID)
	if len(entries) != 2 || entries[0].Action != pm.ActionDeleted || entries[0].Revision != tomb.Revision ||
		len(entries[0].Changes) != 1 || entries[0].Changes[0].Field != "deleted_at" || entries[0].Changes[0].New == "" {
		t.Errorf("activity = %+v", entries)
	}
	// A deleted project takes no new items.
	if _, err := f.s.DeleteWorkItem(ctx, f.admin, f.project.ID, 0); err != nil {
		t.Fatalf("delete empty project: %v", err)
	}
	_, _, err = f.s.CreateWorkItem(ctx, f.editor, pm.NewWorkItem{Type: pm.TypeTask, ProjectID: f.project.ID, Title: "x"})
	wantCode(t, err, pm.ENotFound, "project_id")
}

func TestListSince(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	a := f.create(t, pm.NewWorkItem{Type: pm.TypeTask})
	b := f.create(t, pm.NewWorkItem{Type: pm.TypeTask})
	_, snapB, err := f.s.ListWorkItems(ctx, f.viewer, pm.WorkItemQuery{ProjectID: f.project.ID})
	if err != nil {
		t.Fatal(err)
	}
	if snapB.Revision != b.Revision {
		t.Fatalf("snapshot revision = %d, want %d", snapB.Revision, b.Revision)
	}
	c := f.create(t, pm.NewWorkItem{Type: pm.TypeTask})
	tomb, err := f.s.DeleteWorkItem(ctx, f.editor, a.ID, 0)
	if err != nil {
		t.Fatal(err)
	}

	items, snap, err := f.s.ListWorkItems(ctx, f.viewer, pm.WorkItemQuery{ProjectID: f.project.ID, SinceRevision: snapB.Revision})
	if err != nil {
		t.Fatal(err)
	}
	if snap.Revision != tomb.Revision || len(items) != 2 {
		t.Fatalf("since %d: %d items at revision %d, want 2 at %d", snapB.Revision, len(items), snap.Revision, tomb.Revision)
	}
	byID := map[uuid.UUID]pm.WorkItem{}
	for _, w := range items {
		byID[w.ID] = w
	}
	if w, ok := byID[a.ID]; !ok || !w.Deleted() {
		t.Errorf("since_revision lacks the tombstone of %s: %+v", a.ID, items)
	}
	if _, ok := byID[c.ID]; !ok {
		t.Errorf("since_revision lacks the new item")
	}

	// By time: everything changed after the snapshot's time, tombstones included.
	items, _, err = f.s.ListWorkItems(ctx, f.viewer, pm.WorkItemQuery{ProjectID: f.project.ID, SinceTime: snapB.Time})
	if err != nil {
		t.Fatal(err)
	}
	if countID(items, a.ID) != 1 || countID(items, c.ID) != 1 || countID(items, b.ID) != 0 {
		t.Errorf("since_time = %+v", items)
	}
	// Everything live: the project, b and c.
	live := f.live(t)
	if len(live) != 3 || countID(live, f.project.ID) != 1 || countID(live, a.ID) != 0 {
		t.Errorf("live = %+v", live)
	}
	_, _, err = f.s.ListWorkItems(ctx, f.viewer, pm.WorkItemQuery{ProjectID: f.project.ID, SinceRevision: -1})
	wantCode(t, err, pm.EValidation, "since_revision")
	_, _, err = f.s.ListWorkItems(ctx, f.viewer, pm.WorkItemQuery{ProjectID: uuid.New()})
	wantCode(t, err, pm.ENotFound, "project_id")
}

func TestRevisionsGapFree(t *testing.T) {
	f := newFixture(t)
	const n = 20
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		revisions []int64
	)
	for i := range n {
		wg.Go(func() {
			w, _, err := f.s.CreateWorkItem(t.Context(), f.editor, pm.NewWorkItem{
				ProjectID: f.project.ID, Type: pm.TypeTask, Title: fmt.Sprint("task ", i),
			})
			if err != nil {
				t.Errorf("create: %v", err)
				return
			}
			mu.Lock()
			revisions = append(revisions, w.Revision)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(revisions)
	start := f.project.Revision + 1 // the project is at 1; member changes don't bump
	for i, r := range revisions {
		if r != start+int64(i) {
			t.Fatalf("revisions = %v, want %d..%d", revisions, start, start+n-1)
		}
	}
	items, snap, err := f.s.ListWorkItems(t.Context(), f.viewer, pm.WorkItemQuery{ProjectID: f.project.ID, SinceRevision: f.project.Revision})
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != n || snap.Revision != start+n-1 {
		t.Errorf("since %d: %d items at %d, want %d at %d", f.project.Revision, len(items), snap.Revision, n, start+n-1)
	}
	// Positions made concurrently are distinct and follow commit order.
	positions := map[string]int64{}
	for _, w := range items {
		positions[w.Position] = w.Revision
	}
	if len(positions) != n {
		t.Errorf("%d distinct positions for %d items", len(positions), n)
	}
	for i := 1; i < len(items); i++ {
		if items[i].Revision <= items[i-1].Revision {
			t.Errorf("position order differs from revision order at %d", i)
		}
	}
}

func TestSnapshotTime(t *testing.T) {
	f := newFixture(t)
	before := time.Now().Add(-time.Minute)
	_, snap, err := f.s.ListWorkItems(t.Context(), f.viewer, pm.WorkItemQuery{ProjectID: f.project.ID})
	if err != nil {
		t.Fatal(err)
	}
	if snap.Time.Before(before) || snap.Time.After(time.Now().Add(time.Minute)) {
		t.Errorf("snapshot time %v is not about now", snap.Time)
	}
}
