package client

import (
	"sync"

	"github.com/pmhq/pm"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// waiter collects the answer to one pending request. Most answers are one
// message. A load's (GetWorkItemsRequest) is one or more WorkItemsList
// chunks with the request's message_id, read until the one marked complete
// and joined into one message; an Error ends the answer wherever it comes,
// and the chunks before it are dropped. Connection readers deliver, never
// blocking; the caller takes the answer from answer.
type waiter struct {
	answer chan *pmv1.WebSocketMessage // capacity 1: the whole answer

	mu      sync.Mutex
	partial *pmv1.WebSocketMessage // the chunks so far of a load, joined
}

func newWaiter() *waiter {
	return &waiter{answer: make(chan *pmv1.WebSocketMessage, 1)}
}

// deliver takes one message with the request's message_id.
func (w *waiter) deliver(m *pmv1.WebSocketMessage) {
	w.mu.Lock()
	defer w.mu.Unlock()
	chunk := m.GetWorkItemsList()
	if chunk == nil { // an Error, or any other answer: whole by itself
		w.partial = nil
		w.put(m)
		return
	}
	if w.partial == nil {
		if chunk.Complete {
			w.put(m)
			return
		}
		w.partial = m
		return
	}
	joined := w.partial.GetWorkItemsList()
	if chunk.AsOfRevision != joined.AsOfRevision || chunk.AsOfTimestamp != joined.AsOfTimestamp || chunk.ProjectId != joined.ProjectId {
		// Not one answer: refuse it rather than mix snapshots.
		w.partial = nil
		w.put(&pmv1.WebSocketMessage{MessageId: m.MessageId, Payload: &pmv1.WebSocketMessage_Error{Error: &pmv1.Error{
			Code: pm.EInternal, Message: "client: the node sent the chunks of one load from different snapshots",
		}}})
		return
	}
	joined.WorkItems = append(joined.WorkItems, chunk.WorkItems...)
	if chunk.Complete {
		joined.Complete = true
		whole := w.partial
		w.partial = nil
		w.put(whole)
	}
}

// put hands a whole answer to the caller. An answer while one is waiting
// (a duplicate answer to a re-sent request) is dropped.
func (w *waiter) put(m *pmv1.WebSocketMessage) {
	select {
	case w.answer <- m:
	default:
	}
}

// reset drops the chunks of an answer cut off by the loss of its
// connection, before the request is sent again: a load is read whole from
// one connection or not at all. Call it only once that connection's reader
// has stopped.
func (w *waiter) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = nil
}
