package node

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/pmhq/pm"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// BenchmarkDecodeDispatch measures what the node does with a typical binary
// update frame before it reaches the store, without I/O: decode and check
// the envelope (decodeRequest), name the operation, digest it for the
// idempotency ledger (a mutating request), and parse the request as
// updateWorkItem does.
func BenchmarkDecodeDispatch(b *testing.B) {
	frame, err := proto.Marshal(&pmv1.WebSocketMessage{
		MessageId: "5b0e4a7e-8f1d-4c2b-9a61-3f2d7c9e1a40",
		Payload: &pmv1.WebSocketMessage_UpdateWorkItemRequest{UpdateWorkItemRequest: &pmv1.UpdateWorkItemRequest{
			WorkItemId:      "6f1c2a52-7a43-4d0f-9a53-5c8f3d1f2b11",
			ExpectedVersion: 7,
			Title:           proto.String("Move the export to the background queue"),
			Status:          pmv1.WorkItemStatus_WORK_ITEM_STATUS_IN_PROGRESS.Enum(),
			Position:        proto.String("a0V"),
		}},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		req, perr := decodeRequest(frame)
		if perr != nil {
			b.Fatal(perr)
		}
		op := operation(req)
		if !mutating[op] {
			b.Fatalf("operation %q is not mutating", op)
		}
		if requestDigest(req) == "" {
			b.Fatal("empty digest")
		}
		r := req.GetUpdateWorkItemRequest()
		if _, err := pm.ParseID("work_item_id", r.WorkItemId, false); err != nil {
			b.Fatal(err)
		}
		if _, err := workItemPatch(r); err != nil {
			b.Fatal(err)
		}
	}
}
