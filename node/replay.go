package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/pmhq/pm"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// What the idempotency ledger keeps of a mutating request: a digest of the
// request, to tell a retry from another request that reuses its message_id,
// and a record of the outcome that is compact whatever the item holds. The
// record of a work item write names the item, its version and revision and
// the changed fields; a replay reads the item again, so it answers with the
// item as it is now (exactly as the write left it, unless it changed since).

// shortChange is the longest old+new value a recorded FieldChange keeps;
// longer ones keep their field name only.
const shortChange = 256

// requestDigest identifies a request's content: the hex SHA-256 of its
// payload, encoded deterministically, without message_id and timestamp.
func requestDigest(req *pmv1.WebSocketMessage) string {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&pmv1.WebSocketMessage{Payload: req.Payload})
	if err != nil { // cannot happen for a message that was just decoded
		b = []byte(req.MessageId)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// record returns what the ledger keeps of a response: its frame, or for a
// work item write the compact form of it.
func (c *session) record(resp *pmv1.WebSocketMessage, frame []byte) []byte {
	var compact *pmv1.WebSocketMessage
	switch p := resp.Payload.(type) {
	case *pmv1.WebSocketMessage_WorkItemCreated:
		compact = &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_WorkItemCreated{
			WorkItemCreated: &pmv1.WorkItemCreated{WorkItem: itemRef(p.WorkItemCreated.WorkItem)},
		}}
	case *pmv1.WebSocketMessage_WorkItemUpdated:
		changes := make([]*pmv1.FieldChange, len(p.WorkItemUpdated.Changes))
		for i, ch := range p.WorkItemUpdated.Changes {
			changes[i] = &pmv1.FieldChange{FieldName: ch.FieldName}
			if len(ch.OldValue)+len(ch.NewValue) <= shortChange {
				changes[i].OldValue, changes[i].NewValue = ch.OldValue, ch.NewValue
			}
		}
		compact = &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_WorkItemUpdated{
			WorkItemUpdated: &pmv1.WorkItemUpdated{WorkItem: itemRef(p.WorkItemUpdated.WorkItem), Changes: changes},
		}}
	case *pmv1.WebSocketMessage_WorkItemDeleted:
		d := p.WorkItemDeleted
		compact = &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_WorkItemDeleted{
			WorkItemDeleted: &pmv1.WorkItemDeleted{WorkItemId: d.WorkItemId, Revision: d.Revision, ProjectId: d.ProjectId, WorkItem: itemRef(d.WorkItem)},
		}}
	default: // errors and member changes are small already
		return frame
	}
	compact.MessageId, compact.Timestamp = resp.MessageId, resp.Timestamp
	b, err := proto.Marshal(compact)
	if err != nil {
		return frame
	}
	return b
}

// itemRef keeps what identifies a state of an item.
func itemRef(w *pmv1.WorkItem) *pmv1.WorkItem {
	if w == nil {
		return nil
	}
	return &pmv1.WorkItem{Id: w.Id, ProjectId: w.ProjectId, Version: w.Version, Revision: w.Revision, DeletedAt: w.DeletedAt}
}

// replay turns a stored record into the response frame: a work item's
// current state is read again. If that read fails, the record goes out as it
// is: it still says what the request did.
func (c *session) replay(ctx context.Context, record []byte) []byte {
	var m pmv1.WebSocketMessage
	if err := proto.Unmarshal(record, &m); err != nil {
		return record
	}
	var ref *pmv1.WorkItem
	switch p := m.Payload.(type) {
	case *pmv1.WebSocketMessage_WorkItemCreated:
		ref = p.WorkItemCreated.GetWorkItem()
	case *pmv1.WebSocketMessage_WorkItemUpdated:
		ref = p.WorkItemUpdated.GetWorkItem()
	case *pmv1.WebSocketMessage_WorkItemDeleted:
		ref = p.WorkItemDeleted.GetWorkItem()
	}
	if ref == nil {
		return record
	}
	id, err := uuid.Parse(ref.Id)
	if err != nil {
		return record
	}
	item, err := c.srv.cfg.Store.GetWorkItem(ctx, c.actor, id)
	if err != nil {
		if pm.ErrorCode(err) == pm.EInternal {
			c.srv.log.WarnContext(ctx, "replay: could not read the item again; answering with the record", "work_item_id", id, "err", err)
		}
		return record
	}
	full := wireWorkItem(&item)
	switch p := m.Payload.(type) {
	case *pmv1.WebSocketMessage_WorkItemCreated:
		p.WorkItemCreated.WorkItem = full
	case *pmv1.WebSocketMessage_WorkItemUpdated:
		p.WorkItemUpdated.WorkItem = full
	case *pmv1.WebSocketMessage_WorkItemDeleted:
		p.WorkItemDeleted.WorkItem = full
	}
	frame, err := proto.Marshal(&m)
	if err != nil {
		return record
	}
	return frame
}
