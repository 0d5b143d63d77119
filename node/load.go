package node

import (
	"context"
	"errors"
	"math"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/pmhq/pm"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// maxChunkBytes bounds one encoded WorkItemsList frame of a load, as the
// protocol promises (docs/protocol.md). A work item is far smaller (see
// TestLargestItemFitsInAChunk), so every chunk holds at least one.
const maxChunkBytes = 256 << 10

// getWorkItems answers a load (GetWorkItemsRequest) itself: it streams the
// project's items from the Store a page at a time and sends them as
// WorkItemsList chunks of at most maxChunkBytes, all of the one snapshot,
// each queued only when the send queue has room (enqueueWait), the last one
// marked complete. It returns nil, nil, nil once the last chunk is written.
// On an error after some chunks went out, the caller answers with an Error
// as for any request, and the client discards the chunks; errUndelivered
// means the connection closed before the answer was out.
func (c *session) getWorkItems(ctx context.Context, messageID string, r *pmv1.GetWorkItemsRequest) (*pmv1.WebSocketMessage, *event, error) {
	project, err := pm.ParseID("project_id", r.ProjectId, false)
	if err != nil {
		return nil, nil, err
	}
	q := pm.WorkItemQuery{ProjectID: project, SinceRevision: r.SinceRevision}
	switch {
	case r.SinceRevision < 0:
		return nil, nil, pm.FieldErrorf("since_revision", "since_revision cannot be negative")
	case r.SinceTimestamp < 0 || r.SinceTimestamp > pm.TimestampMaxMillis:
		return nil, nil, pm.FieldErrorf("since_timestamp", "since_timestamp must be unix milliseconds between 0 and %d (year 9999)", int64(pm.TimestampMaxMillis))
	case r.SinceRevision > 0 && r.SinceTimestamp > 0:
		return nil, nil, pm.FieldErrorf("since_timestamp", "give since_revision or since_timestamp, not both")
	case r.SinceTimestamp > 0:
		q.SinceTime = time.UnixMilli(r.SinceTimestamp)
	}
	var last uint64 // sequence number of the last chunk queued
	chunks := &chunker{limit: maxChunkBytes, send: func(list *pmv1.WorkItemsList) error {
		frame := c.encode(messageID, &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_WorkItemsList{WorkItemsList: list}})
		if len(frame) > maxChunkBytes { // cannot happen: see chunker
			c.srv.log.ErrorContext(ctx, "load chunk over the limit", "message_id", messageID, "bytes", len(frame), "items", len(list.WorkItems))
		}
		seq, err := c.enqueueWait(ctx, frame)
		last = seq
		return err
	}}
	err = c.srv.cfg.Store.StreamWorkItems(ctx, c.actor, q, func(snap pm.Snapshot, page []pm.WorkItem) error {
		if !chunks.started {
			chunks.start(messageID, &pmv1.WorkItemsList{
				ProjectId: project.String(), AsOfRevision: snap.Revision, AsOfTimestamp: millis(snap.Time),
			})
		}
		for i := range page {
			if err := chunks.add(wireWorkItem(&page[i])); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = chunks.finish()
	}
	if err == nil {
		err = c.waitWritten(ctx, last)
	}
	switch {
	case err == nil:
		return nil, nil, nil
	case errors.Is(err, errUndelivered):
		return nil, nil, err
	case ctx.Err() != nil:
		// Whether the database or the client was slow, the client may retry.
		return nil, nil, &pm.Error{Code: pm.EUnavailable, Message: "the load did not finish in time; retry", RetryAfterMillis: 1000}
	}
	return nil, nil, err
}

// chunker cuts the items of a load into WorkItemsList chunks whose encoded
// frames (envelope included) stay within limit bytes. Every chunk carries
// the same head (project and snapshot); the last one, sent by finish, is
// marked complete and may hold no items. It keeps at most one chunk's items.
type chunker struct {
	limit int
	send  func(*pmv1.WorkItemsList) error

	started bool
	head    *pmv1.WorkItemsList // project and snapshot; no items
	base    int                 // encoded bytes of a chunk without items, at most
	items   []*pmv1.WorkItem
	size    int // encoded bytes of the chunk with items, at most
}

// start sets the head of every chunk; messageID is the frames' message_id.
func (k *chunker) start(messageID string, head *pmv1.WorkItemsList) {
	k.started, k.head = true, head
	// An upper bound: the largest timestamp, complete set, and room for the
	// length prefix of the payload to grow to its longest (4 bytes for up
	// to 256 MiB) from the one byte of an empty list.
	empty := proto.Clone(head).(*pmv1.WorkItemsList)
	empty.Complete = true
	k.base = proto.Size(&pmv1.WebSocketMessage{
		MessageId: messageID, Timestamp: math.MaxInt64,
		Payload: &pmv1.WebSocketMessage_WorkItemsList{WorkItemsList: empty},
	}) + 3
	k.size = k.base
}

// add appends an item to the chunk, sending the chunk first when the item
// would not fit. An item too large for any chunk goes alone.
func (k *chunker) add(w *pmv1.WorkItem) error {
	n := protowire.SizeTag(1) + protowire.SizeBytes(proto.Size(w))
	if len(k.items) > 0 && k.size+n > k.limit {
		if err := k.flush(false); err != nil {
			return err
		}
	}
	k.items = append(k.items, w)
	k.size += n
	return nil
}

// finish sends the last chunk, marked complete.
func (k *chunker) finish() error {
	if !k.started {
		return errors.New("load: the store handed out no page")
	}
	return k.flush(true)
}

func (k *chunker) flush(complete bool) error {
	list := proto.Clone(k.head).(*pmv1.WorkItemsList)
	list.WorkItems, list.Complete = k.items, complete
	err := k.send(list)
	clear(k.items) // the chunk is encoded: let the items go
	k.items, k.size = k.items[:0], k.base
	return err
}
