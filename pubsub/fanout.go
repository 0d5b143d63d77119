package pubsub

import (
	"context"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/pmhq/pm"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// fanoutLoop delivers what the readers hand off, in order.
func (h *Hub) fanoutLoop() {
	defer h.wg.Done()
	for {
		var it handoff
		select {
		case <-h.done:
			return
		case it = <-h.queue:
		}
		if h.gate != nil {
			select {
			case <-h.gate:
			case <-h.done:
				return
			}
		}
		h.dispatch(it)
	}
}

// dispatch decodes one message once and hands it to the topic's subscribers.
func (h *Hub) dispatch(it handoff) {
	t := h.lookup(it.channel)
	if t == nil {
		return // nobody here listens any more
	}
	// A fresh event each time: subscribers keep the frame it holds.
	ev := new(pmv1.BusEvent)
	if err := proto.Unmarshal([]byte(it.payload), ev); err != nil {
		h.log.Warn("pubsub: undecodable bus event", "channel", it.channel, "err", err)
		return
	}
	switch k := ev.Kind.(type) {
	case *pmv1.BusEvent_Frame:
		h.fanOut(t, ev, k.Frame)
	case *pmv1.BusEvent_RemovedUserId:
		h.applyRemoval(t, k.RemovedUserId)
	}
}

func (h *Hub) applyRemoval(t *topic, user string) {
	id, err := uuid.Parse(user)
	if err != nil {
		h.log.Warn("pubsub: bad removed_user_id in bus event", "channel", t.name, "user", user)
		return
	}
	h.revoke(t, id)
}

// notifyLoop sends the queued ResyncRequired notices. Subscribers do not
// block, so one goroutine serves every source of notices, and none of them
// calls a subscriber while holding the hub's lock.
func (h *Hub) notifyLoop() {
	defer h.wg.Done()
	for {
		select {
		case <-h.done:
			return
		case <-h.wakeNotify:
		}
		h.mu.Lock()
		batch := h.notices
		if len(batch) == 0 {
			h.mu.Unlock()
			continue
		}
		h.notices = make(map[*topic]string)
		h.mu.Unlock()
		for t, reason := range batch {
			members := t.members()
			if len(members) == 0 {
				continue
			}
			// Their catch-up read covers the head of the last check.
			if t.headBase.Load() {
				t.observe(t.headPrev.Load())
			}
			for _, m := range members {
				m.sub.ResyncRequired(t.key.Project, reason)
			}
			h.m.resyncs.WithLabelValues(reason).Inc()
		}
	}
}

// headCheckLoop runs the head check every headEvery.
func (h *Hub) headCheckLoop() {
	defer h.wg.Done()
	tick := time.NewTicker(h.headEvery)
	defer tick.Stop()
	for {
		select {
		case <-h.done:
			return
		case <-tick.C:
		}
		h.checkHeads()
	}
}

// checkHeads compares the heads of the locally subscribed projects with the
// revisions seen through Redis (the two-tick rule of the package doc).
func (h *Hub) checkHeads() {
	h.mu.RLock()
	topics := make([]*topic, 0, len(h.topics))
	for _, t := range h.topics {
		if t.wanted() {
			topics = append(topics, t)
		}
	}
	h.mu.RUnlock()
	if len(topics) == 0 {
		return
	}
	keys := make([]pm.ProjectKey, len(topics))
	for i, t := range topics {
		keys[i] = t.key
	}
	ctx, cancel := context.WithTimeout(h.ctx, min(h.headEvery, commandTimeout))
	heads, err := h.heads.ProjectHeads(ctx, keys)
	cancel()
	if err != nil {
		if h.ctx.Err() == nil {
			h.log.Warn("pubsub: head check failed", "projects", len(keys), "err", err)
		}
		return
	}
	var missed []*topic
	for _, t := range topics {
		head, ok := heads[t.key]
		if !ok {
			continue
		}
		if t.headBase.CompareAndSwap(false, true) {
			t.observe(head)
			t.headPrev.Store(head)
			continue
		}
		if t.seen.Load() < t.headPrev.Load() {
			missed = append(missed, t)
		}
		t.headPrev.Store(head)
	}
	if len(missed) == 0 {
		return
	}
	h.mu.Lock()
	for _, t := range missed {
		h.noticeLocked(t, ReasonMissedEvents)
	}
	h.mu.Unlock()
}
