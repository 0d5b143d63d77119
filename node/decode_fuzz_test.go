package node

import (
	"errors"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/pmhq/pm"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

func seedFrames(f *testing.F) {
	seeds := []*pmv1.WebSocketMessage{
		{MessageId: "1", Payload: &pmv1.WebSocketMessage_CreateWorkItemRequest{CreateWorkItemRequest: &pmv1.CreateWorkItemRequest{
			ProjectId: "6f1c2a52-7a43-4d0f-9a53-5c8f3d1f2b11", ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "t", StoryPoints: proto.Int32(3)}}},
		{MessageId: "2", Payload: &pmv1.WebSocketMessage_UpdateWorkItemRequest{UpdateWorkItemRequest: &pmv1.UpdateWorkItemRequest{
			WorkItemId: "6f1c2a52-7a43-4d0f-9a53-5c8f3d1f2b11", ExpectedVersion: 1, Title: proto.String("x"), Position: proto.String("a0V")}}},
		{MessageId: "3", Payload: &pmv1.WebSocketMessage_Subscribe{Subscribe: &pmv1.Subscribe{ProjectIds: []string{"6f1c2a52-7a43-4d0f-9a53-5c8f3d1f2b11"}}}},
		{MessageId: "4", Payload: &pmv1.WebSocketMessage_GetWorkItemsRequest{GetWorkItemsRequest: &pmv1.GetWorkItemsRequest{SinceRevision: 7}}},
		{MessageId: "5", Payload: &pmv1.WebSocketMessage_WorkItemCreated{}},
	}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0xff, 0x01})
}

// FuzzDecodeRequest feeds arbitrary frames through the decoder and the
// request parsers: they never panic, and every refusal is a coded error
// naming a field where the parsers blame one.
func FuzzDecodeRequest(f *testing.F) {
	seedFrames(f)
	f.Fuzz(func(t *testing.T, frame []byte) {
		req, perr := decodeRequest(frame)
		if perr != nil {
			if perr.Code != pm.EInvalid || perr.Message == "" {
				t.Fatalf("decode error %+v", perr)
			}
			if id := replyID(req); id != "" && (len(id) > pm.MessageIDMaxBytes || !validMessageID(id)) {
				t.Fatalf("would echo an unusable message_id %q", id)
			}
			return
		}
		if operation(req) == "" || req.MessageId == "" {
			t.Fatalf("accepted %v", req)
		}
		var err error
		switch p := req.Payload.(type) {
		case *pmv1.WebSocketMessage_CreateWorkItemRequest:
			var in pm.NewWorkItem
			if in, err = newWorkItem(p.CreateWorkItemRequest); err == nil {
				if in.Title == "" || utf8.RuneCountInString(in.Title) > pm.TitleMaxRunes || !in.Type.Valid() || !in.Status.Valid() || !in.Priority.Valid() {
					t.Fatalf("accepted invalid item %+v", in)
				}
			}
		case *pmv1.WebSocketMessage_UpdateWorkItemRequest:
			var patch pm.WorkItemPatch
			if patch, err = workItemPatch(p.UpdateWorkItemRequest); err == nil && patch.Empty() {
				t.Fatal("accepted an empty patch")
			}
		case *pmv1.WebSocketMessage_Subscribe:
			_, err = projectIDs(p.Subscribe.ProjectIds, 100)
		}
		if err != nil {
			var e *pm.Error
			if !errors.As(err, &e) || e.Code != pm.EValidation || e.Field == "" {
				t.Fatalf("parse error %v is not a VALIDATION_ERROR naming a field", err)
			}
		}
	})
}
