package node_test

import (
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/pmhq/pm/node/nodetest"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

func listProjects(t *testing.T, conn *nodetest.Conn) []*pmv1.ProjectSummary {
	t.Helper()
	req := &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_ListProjectsRequest{ListProjectsRequest: &pmv1.ListProjectsRequest{}}}
	resp, _ := conn.Request(req) // matched by message_id
	if resp.GetProjectsList() == nil {
		t.Fatalf("ListProjectsRequest: got %v", resp)
	}
	return resp.GetProjectsList().GetProjects()
}

// A user in three projects sees exactly those, by title, with their role,
// the revision and live counts by status; another tenant's projects never.
func TestListProjects(t *testing.T) {
	tm := newTeam(t, nodetest.Options{}) // project "Apollo": admin, editor, viewer
	url := tm.c.Nodes[0].URL()
	user := tm.viewer
	conn := tm.viewerConn
	mine := mustCreate(t, conn, &pmv1.CreateWorkItemRequest{ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT, Title: "Zephyr"})
	borealis := mustCreate(t, tm.adminConn, &pmv1.CreateWorkItemRequest{ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT, Title: "Borealis"})
	resp, _ := tm.adminConn.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_AddProjectMemberRequest{
		AddProjectMemberRequest: &pmv1.AddProjectMemberRequest{ProjectId: borealis.Id, UserId: user.String(), Role: pmv1.ProjectRole_PROJECT_ROLE_EDITOR},
	}})
	if resp.GetProjectMemberChanged() == nil {
		t.Fatalf("add member: %v", resp)
	}
	mustCreate(t, tm.adminConn, &pmv1.CreateWorkItemRequest{ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT, Title: "Aardvark"}) // not theirs
	// The same user id in another tenant, with a project that sorts first.
	elsewhere := nodetest.Dial(t, url, tm.c.Token("globex-"+uuid.NewString()[:8], user))
	mustCreate(t, elsewhere, &pmv1.CreateWorkItemRequest{ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT, Title: "AAA"})

	// Apollo: three todo, one in progress; then a move and a delete.
	task := func(status pmv1.WorkItemStatus) *pmv1.WorkItem {
		return mustCreate(t, tm.editorConn, &pmv1.CreateWorkItemRequest{ProjectId: tm.project,
			ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "task", Status: status})
	}
	todo := pmv1.WorkItemStatus_WORK_ITEM_STATUS_TODO
	moved, _, deleted := task(todo), task(todo), task(todo)
	task(pmv1.WorkItemStatus_WORK_ITEM_STATUS_IN_PROGRESS)
	done := pmv1.WorkItemStatus_WORK_ITEM_STATUS_DONE
	if got := update(tm.editorConn, &pmv1.UpdateWorkItemRequest{WorkItemId: moved.Id, ExpectedVersion: moved.Version, Status: &done}); got.GetWorkItemUpdated() == nil {
		t.Fatalf("move: %v", got)
	}
	last := del(tm.editorConn, deleted.Id, deleted.Version).GetWorkItemDeleted()
	if last == nil {
		t.Fatal("delete failed")
	}

	got := listProjects(t, conn)
	type row struct {
		title string
		role  pmv1.ProjectRole
	}
	var rows []row
	for _, p := range got {
		rows = append(rows, row{p.GetProject().GetTitle(), p.GetRole()})
		if p.GetProject().GetItemType() != pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT || p.GetProject().GetId() != p.GetProject().GetProjectId() {
			t.Errorf("%q is not a project item: %v", p.GetProject().GetTitle(), p.GetProject())
		}
	}
	want := []row{
		{"Apollo", pmv1.ProjectRole_PROJECT_ROLE_VIEWER},
		{"Borealis", pmv1.ProjectRole_PROJECT_ROLE_EDITOR},
		{"Zephyr", pmv1.ProjectRole_PROJECT_ROLE_ADMIN},
	}
	if !slices.Equal(rows, want) {
		t.Fatalf("projects = %v, want %v", rows, want)
	}
	apollo := got[0]
	if apollo.GetRevision() != last.GetRevision() {
		t.Errorf("Apollo's revision = %d, want %d (the delete's)", apollo.GetRevision(), last.GetRevision())
	}
	type count struct {
		status pmv1.WorkItemStatus
		n      int64
	}
	var counts []count
	for _, c := range apollo.GetCounts() {
		counts = append(counts, count{c.GetStatus(), c.GetCount()})
	}
	wantCounts := []count{{todo, 1}, {pmv1.WorkItemStatus_WORK_ITEM_STATUS_IN_PROGRESS, 1}, {done, 1}}
	if !slices.Equal(counts, wantCounts) {
		t.Errorf("Apollo's counts = %v, want %v (board order, the project item not counted)", counts, wantCounts)
	}
	if len(got[2].GetCounts()) != 0 || got[2].GetProject().GetId() != mine.Id || got[2].GetRevision() != mine.Revision {
		t.Errorf("Zephyr = %v, want no counts at revision %d", got[2], mine.Revision)
	}

	// The other tenant's connection sees its own project only.
	if other := listProjects(t, elsewhere); len(other) != 1 || other[0].GetProject().GetTitle() != "AAA" {
		t.Errorf("other tenant's projects = %v", other)
	}
	// A user of no project: an empty list.
	if none := listProjects(t, nodetest.Dial(t, url, tm.c.Token(tm.tenant, uuid.New()))); len(none) != 0 {
		t.Errorf("a user of no project sees %v", none)
	}
}
