package pm_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/position"
)

func TestCanParent(t *testing.T) {
	types := []pm.ItemType{pm.TypeProject, pm.TypeEpic, pm.TypeStory, pm.TypeTask}
	for i, parent := range types {
		for j, child := range types {
			if got, want := pm.CanParent(parent, child), i < j; got != want {
				t.Errorf("CanParent(%s, %s) = %v, want %v", parent, child, got, want)
			}
		}
		if pm.CanParent(parent, "bug") || pm.CanParent("bug", parent) {
			t.Errorf("unknown type accepted with %s", parent)
		}
	}
}

func TestRoleAllows(t *testing.T) {
	roles := []pm.Role{pm.RoleViewer, pm.RoleEditor, pm.RoleAdmin}
	for i, have := range roles {
		for j, need := range roles {
			if got, want := have.Allows(need), i >= j; got != want {
				t.Errorf("%s.Allows(%s) = %v, want %v", have, need, got, want)
			}
		}
	}
	if pm.Role("").Allows(pm.RoleViewer) || pm.Role("owner").Allows(pm.RoleViewer) {
		t.Error("no role allows viewing")
	}
}

func fieldOf(t *testing.T, err error) string {
	t.Helper()
	var e *pm.Error
	if !errors.As(err, &e) || e.Code != pm.EValidation {
		t.Fatalf("want a VALIDATION_ERROR, got %v", err)
	}
	return e.Field
}

func TestNewWorkItemNormalize(t *testing.T) {
	project, parent := uuid.New(), uuid.New()
	points := func(n int32) *int32 { return &n }
	tests := []struct {
		name  string
		in    pm.NewWorkItem
		field string // "" = valid
	}{
		{"task in a project", pm.NewWorkItem{ProjectID: project, Type: pm.TypeTask, Title: " t "}, ""},
		{"task under a parent", pm.NewWorkItem{ParentID: parent, Type: pm.TypeTask, Title: "t"}, ""},
		{"project", pm.NewWorkItem{Type: pm.TypeProject, Title: "p"}, ""},
		{"500 runes", pm.NewWorkItem{ProjectID: project, Type: pm.TypeTask, Title: strings.Repeat("ü", 500)}, ""},
		{"501 runes", pm.NewWorkItem{ProjectID: project, Type: pm.TypeTask, Title: strings.Repeat("ü", 501)}, "title"},
		{"blank title", pm.NewWorkItem{ProjectID: project, Type: pm.TypeTask, Title: " \t"}, "title"},
		{"invalid UTF-8", pm.NewWorkItem{ProjectID: project, Type: pm.TypeTask, Title: "\xff"}, "title"},
		{"no type", pm.NewWorkItem{ProjectID: project, Title: "t"}, "item_type"},
		{"no project or parent", pm.NewWorkItem{Type: pm.TypeStory, Title: "t"}, "project_id"},
		{"project with a parent", pm.NewWorkItem{Type: pm.TypeProject, ParentID: parent, Title: "p"}, "parent_id"},
		{"project with a project", pm.NewWorkItem{Type: pm.TypeProject, ProjectID: project, Title: "p"}, "project_id"},
		{"status", pm.NewWorkItem{ProjectID: project, Type: pm.TypeTask, Title: "t", Status: "blocked"}, "status"},
		{"priority", pm.NewWorkItem{ProjectID: project, Type: pm.TypeTask, Title: "t", Priority: "urgent"}, "priority"},
		{"points", pm.NewWorkItem{ProjectID: project, Type: pm.TypeTask, Title: "t", StoryPoints: points(1001)}, "story_points"},
		{"position", pm.NewWorkItem{ProjectID: project, Type: pm.TypeTask, Title: "t", Position: "zz0"}, "position"},
		{"description", pm.NewWorkItem{ProjectID: project, Type: pm.TypeTask, Title: "t", Description: strings.Repeat("x", pm.DescriptionMaxBytes+1)}, "description"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in
			err := in.Normalize()
			if tt.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				if in.Status != pm.StatusBacklog || in.Priority != pm.PriorityMedium || in.Title != strings.TrimSpace(tt.in.Title) {
					t.Fatalf("defaults: %+v", in)
				}
				return
			}
			if got := fieldOf(t, err); got != tt.field {
				t.Fatalf("field %q, want %q", got, tt.field)
			}
		})
	}
}

func TestPatchApply(t *testing.T) {
	assignee := uuid.New()
	three := int32(3)
	w := pm.WorkItem{Title: "a", Status: pm.StatusTodo, Priority: pm.PriorityLow, StoryPoints: &three}
	title, same := "b", pm.PriorityLow
	done := pm.StatusDone
	p := pm.WorkItemPatch{Title: &title, Status: &done, Priority: &same, AssigneeID: &assignee, ClearStoryPoints: true}
	if err := p.Normalize(); err != nil {
		t.Fatal(err)
	}
	changes := p.Apply(&w)
	want := []pm.FieldChange{
		{Field: "title", Old: "a", New: "b"},
		{Field: "status", Old: "todo", New: "done"},
		{Field: "assignee_id", New: assignee.String()},
		{Field: "story_points", Old: "3"},
	}
	if len(changes) != len(want) {
		t.Fatalf("changes %v, want %v", changes, want)
	}
	for i := range want {
		if changes[i] != want[i] {
			t.Fatalf("change %d: %v, want %v", i, changes[i], want[i])
		}
	}
	if w.Title != "b" || w.Status != done || w.AssigneeID != assignee || w.StoryPoints != nil {
		t.Fatalf("applied: %+v", w)
	}
	if again := p.Apply(&w); len(again) != 0 {
		t.Fatalf("re-applying changed %v", again)
	}
}

func TestPatchNormalize(t *testing.T) {
	nilID, blank, bad := uuid.Nil, "  ", "a00"
	n := int32(-1)
	tests := []struct {
		name  string
		p     pm.WorkItemPatch
		field string
	}{
		{"blank title", pm.WorkItemPatch{Title: &blank}, "title"},
		{"no parent", pm.WorkItemPatch{ParentID: &nilID}, "parent_id"},
		{"bad position", pm.WorkItemPatch{Position: &bad}, "position"},
		{"negative points", pm.WorkItemPatch{StoryPoints: &n}, "story_points"},
		{"set and clear points", pm.WorkItemPatch{StoryPoints: new(int32), ClearStoryPoints: true}, "clear_story_points"},
	}
	for _, tt := range tests {
		if got := fieldOf(t, tt.p.Normalize()); got != tt.field {
			t.Errorf("%s: field %q, want %q", tt.name, got, tt.field)
		}
	}
}

func TestParseIDAndTenant(t *testing.T) {
	id := uuid.New()
	if got, err := pm.ParseID("x", id.String(), false); err != nil || got != id {
		t.Fatalf("ParseID: %v %v", got, err)
	}
	for _, s := range []string{"", "nope", "{" + id.String() + "}", strings.ReplaceAll(id.String(), "-", "")} {
		if _, err := pm.ParseID("x", s, false); fieldOf(t, err) != "x" {
			t.Fatalf("ParseID(%q) accepted", s)
		}
	}
	if got, err := pm.ParseID("x", "", true); err != nil || got != uuid.Nil {
		t.Fatal("optional empty id")
	}
	for s, ok := range map[string]bool{"acme": true, "a.b-c_d": true, "A1": true, "": false, "a:b": false, "-a": false, strings.Repeat("a", 65): false, "a b": false} {
		if pm.ValidTenant(s) != ok {
			t.Errorf("ValidTenant(%q) != %v", s, ok)
		}
	}
}

func TestErrorHelpers(t *testing.T) {
	wrapped := errors.Join(errors.New("context"), pm.Errorf(pm.EConflict, "version %d", 3))
	if pm.ErrorCode(wrapped) != pm.EConflict || pm.AsError(wrapped).Message != "version 3" {
		t.Fatalf("wrapped: %v", wrapped)
	}
	internal := errors.New("pq: secret detail")
	if pm.ErrorCode(internal) != pm.EInternal || strings.Contains(pm.AsError(internal).Message, "secret") {
		t.Fatal("internal details leak")
	}
	if pm.ErrorCode(nil) != "" || pm.AsError(nil) != nil {
		t.Fatal("nil")
	}
}

// A card dropped 1,000 times at the same spot (always right after the same
// neighbour) gets keys a client may still send.
func TestRepeatedMovesToOneSpotStayValid(t *testing.T) {
	before, after := "a0", "a1"
	for i := range 1000 {
		key, err := position.Between(before, after)
		if err != nil {
			t.Fatalf("move %d: %v", i, err)
		}
		if err := pm.ValidatePosition(key); err != nil {
			t.Fatalf("move %d: key of %d bytes refused: %v", i, len(key), err)
		}
		after = key
	}
}
