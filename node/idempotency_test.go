package node_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/node/nodetest"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// ledgerValues returns the idempotency records of a cluster by key.
func ledgerValues(t *testing.T, c *nodetest.Cluster) map[string]string {
	t.Helper()
	opts, err := redis.ParseURL(c.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, c.Prefix+"idem:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string, len(keys))
	for _, k := range keys {
		out[k] = rdb.Get(ctx, k).Val()
	}
	return out
}

// Two tabs of one user that both number their requests from "1": the second
// request must get an error, never the first one's answer, and must not be
// lost silently either.
func TestReusedMessageIDWithAnotherRequestIsRefused(t *testing.T) {
	tm := newTeam(t, nodetest.Options{})
	tab1 := tm.editorConn
	tab2 := nodetest.Dial(t, tm.c.Nodes[0].URL(), tm.c.Token(tm.tenant, tm.editor))
	victim := mustCreate(t, tab1, &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "keep me"})

	first, _ := tab1.Request(&pmv1.WebSocketMessage{MessageId: "1", Payload: &pmv1.WebSocketMessage_CreateWorkItemRequest{
		CreateWorkItemRequest: &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "from tab 1"}}})
	if first.GetWorkItemCreated() == nil {
		t.Fatal(first)
	}
	second, _ := tab2.Request(&pmv1.WebSocketMessage{MessageId: "1", Payload: &pmv1.WebSocketMessage_DeleteWorkItemRequest{
		DeleteWorkItemRequest: &pmv1.DeleteWorkItemRequest{WorkItemId: victim.Id}}})
	if second.GetWorkItemCreated() != nil {
		t.Fatalf("the delete got the create's answer: %v", second)
	}
	e := wantError(t, second, pm.EValidation, "message_id")
	if !strings.Contains(e.Message, "different request") {
		t.Fatalf("message does not say why: %q", e.Message)
	}
	// The same request again is still a replay of the first.
	again, _ := tab2.Request(&pmv1.WebSocketMessage{MessageId: "1", Payload: &pmv1.WebSocketMessage_CreateWorkItemRequest{
		CreateWorkItemRequest: &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "from tab 1"}}})
	if !proto.Equal(first, again) {
		t.Fatalf("replay differs:\n%v\n%v", first, again)
	}
	// Nothing was deleted by the refused request; with a fresh id it runs.
	if del(tab2, victim.Id, 0).GetWorkItemDeleted() == nil {
		t.Fatal("the delete with a fresh message_id failed")
	}
}

// The ledger keeps what a replay needs, not whole responses: a 64 KiB
// description costs a few hundred bytes of Redis, and the replay still
// answers with the whole item.
func TestIdempotencyRecordsAreCompact(t *testing.T) {
	tm := newTeam(t, nodetest.Options{})
	task := mustCreate(t, tm.editorConn, &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "t"})
	desc := strings.Repeat("d", 64<<10)
	req := &pmv1.WebSocketMessage{MessageId: "big-update", Payload: &pmv1.WebSocketMessage_UpdateWorkItemRequest{
		UpdateWorkItemRequest: &pmv1.UpdateWorkItemRequest{WorkItemId: task.Id, ExpectedVersion: 1, Description: proto.String(desc)}}}
	first, _ := tm.editorConn.Request(req)
	if first.GetWorkItemUpdated().GetWorkItem().GetDescription() != desc {
		t.Fatalf("update: %v", first.GetError())
	}
	again, _ := tm.editorConn.Request(req)
	if !proto.Equal(first.GetWorkItemUpdated().GetWorkItem(), again.GetWorkItemUpdated().GetWorkItem()) || again.MessageId != "big-update" {
		t.Fatalf("the replay of the big update has another item: %v", again)
	}
	if ch := again.GetWorkItemUpdated().GetChanges(); len(ch) != 1 || ch[0].FieldName != "description" {
		t.Fatalf("replayed changes %v", ch)
	}
	mustCreate(t, tm.editorConn, &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "big", Description: desc})

	// Adding a member answers with that member, not the whole list.
	for range 20 {
		addMember(t, tm.adminConn, tm.project, uuid.New(), pmv1.ProjectRole_PROJECT_ROLE_VIEWER)
	}
	user := uuid.New()
	resp, _ := tm.adminConn.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_AddProjectMemberRequest{
		AddProjectMemberRequest: &pmv1.AddProjectMemberRequest{ProjectId: tm.project, UserId: user.String(), Role: pmv1.ProjectRole_PROJECT_ROLE_EDITOR}}})
	changed := resp.GetProjectMemberChanged()
	if changed.GetMember().GetUserId() != user.String() || changed.GetMember().GetRole() != pmv1.ProjectRole_PROJECT_ROLE_EDITOR || changed.GetRemoved() {
		t.Fatalf("add member answered %v", resp)
	}
	resp, _ = tm.adminConn.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_RemoveProjectMemberRequest{
		RemoveProjectMemberRequest: &pmv1.RemoveProjectMemberRequest{ProjectId: tm.project, UserId: user.String()}}})
	if changed := resp.GetProjectMemberChanged(); changed.GetMember().GetUserId() != user.String() || !changed.GetRemoved() {
		t.Fatalf("remove member answered %v", resp)
	}

	records := ledgerValues(t, tm.c)
	if len(records) < 24 {
		t.Fatalf("%d records, want one per mutating request", len(records))
	}
	for k, v := range records {
		if len(v) > 1024 {
			t.Errorf("record %s holds %d bytes", k, len(v))
		}
	}
}
