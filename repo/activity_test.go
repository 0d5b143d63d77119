package repo_test

import (
	"testing"

	"github.com/google/uuid"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/repo/repotest"
)

func TestListActivity(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	// The project's history so far: created + 2 member_added.
	var tasks []pm.WorkItem
	for range 30 {
		tasks = append(tasks, f.create(t, pm.NewWorkItem{Type: pm.TypeTask}))
	}
	for i := range 30 {
		if _, _, err := f.s.UpdateWorkItem(ctx, f.editor, tasks[i%3].ID, int64(i/3+1), pm.WorkItemPatch{Title: ptr(uuid.NewString())}); err != nil {
			t.Fatal(err)
		}
	}
	const total = 3 + 30 + 30

	page, err := f.s.ListActivity(ctx, f.viewer, pm.ActivityQuery{ProjectID: f.project.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != pm.ActivityPageDefault {
		t.Fatalf("default page has %d entries, want %d", len(page), pm.ActivityPageDefault)
	}
	for i := 1; i < len(page); i++ {
		if page[i].ID >= page[i-1].ID || page[i].Revision > page[i-1].Revision {
			t.Fatalf("entries not newest first at %d", i)
		}
	}
	if page[0].Action != pm.ActionUpdated || page[0].WorkItemID != tasks[29%3].ID || page[0].ProjectID != f.project.ID || page[0].CreatedAt.IsZero() {
		t.Errorf("newest entry = %+v", page[0])
	}
	// Paging by BeforeID walks the whole history once.
	seen := map[int64]bool{}
	before := int64(0)
	for {
		page, err := f.s.ListActivity(ctx, f.viewer, pm.ActivityQuery{ProjectID: f.project.ID, Limit: 7, BeforeID: before})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			if seen[e.ID] || (before != 0 && e.ID >= before) {
				t.Fatalf("entry %d repeated or out of page", e.ID)
			}
			seen[e.ID] = true
		}
		before = page[len(page)-1].ID
	}
	if len(seen) != total {
		t.Errorf("paged through %d entries, want %d", len(seen), total)
	}

	// One item's history.
	item, err := f.s.ListActivity(ctx, f.viewer, pm.ActivityQuery{ProjectID: f.project.ID, WorkItemID: tasks[0].ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(item) != 11 || item[10].Action != pm.ActionCreated {
		t.Errorf("item history has %d entries, want 11 ending with created", len(item))
	}
	for _, e := range item {
		if e.WorkItemID != tasks[0].ID {
			t.Errorf("entry of another item: %+v", e)
		}
	}

	other := repotest.MustProject(t, f.s, f.viewer)
	tests := []struct {
		name        string
		q           pm.ActivityQuery
		code, field string
	}{
		{"limit too big", pm.ActivityQuery{ProjectID: f.project.ID, Limit: pm.ActivityPageMax + 1}, pm.EValidation, "limit"},
		{"negative limit", pm.ActivityQuery{ProjectID: f.project.ID, Limit: -1}, pm.EValidation, "limit"},
		{"item of another project", pm.ActivityQuery{ProjectID: f.project.ID, WorkItemID: other.ID}, pm.ENotFound, "work_item_id"},
		{"missing item", pm.ActivityQuery{ProjectID: f.project.ID, WorkItemID: uuid.New()}, pm.ENotFound, "work_item_id"},
		{"missing project", pm.ActivityQuery{ProjectID: uuid.New()}, pm.ENotFound, "project_id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.s.ListActivity(ctx, f.viewer, tc.q)
			wantCode(t, err, tc.code, tc.field)
		})
	}
	all, err := f.s.ListActivity(ctx, f.viewer, pm.ActivityQuery{ProjectID: f.project.ID, Limit: pm.ActivityPageMax})
	if err != nil || len(all) != total {
		t.Errorf("limit %d: %d entries, %v; want %d", pm.ActivityPageMax, len(all), err, total)
	}
}
