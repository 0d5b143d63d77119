package pubsub

import (
	"sync/atomic"

	"github.com/google/uuid"

	"github.com/pmhq/pm"
)

// member is one local subscriber of a topic, with its id and user cached so
// that the fan-out does not call the interface for them.
type member struct {
	id   string
	user uuid.UUID
	sub  pm.Subscriber
}

// subscriber is a local subscriber's row in the table: the topics it is in,
// by channel name.
type subscriber struct {
	topics map[string]*topic
}

// topic is a project's channel as this node sees it: the local subscribers,
// and where the Redis subscription stands.
//
// The Redis side is a small state machine driven by the reconciler (which
// sends (S)SUBSCRIBE and (S)UNSUBSCRIBE) and the reader (which sees Redis
// confirm them). requested mirrors the channel's presence in the go-redis
// PubSub's own set, which go-redis resubscribes after every reconnect.
// pending counts commands sent on conn whose confirmation has not come back:
// Redis answers a connection's commands in order, one confirmation per
// channel, so the channel is live exactly when it is requested, the last
// confirmation said "subscribed" and nothing is pending. When a connection
// breaks, everything it carried is reset and waits for go-redis's
// resubscription.
type topic struct {
	key  pm.ProjectKey
	name string
	slot int // Redis Cluster hash slot of name

	// subs is a copy-on-write snapshot, replaced under Hub.mu and read
	// without locks.
	subs atomic.Pointer[[]member]
	// seen is the highest revision this node has seen for the project.
	seen atomic.Int64
	// headPrev is the head read at the previous head check, valid once
	// headBase is set (by the head-check goroutine).
	headPrev atomic.Int64
	headBase atomic.Bool

	// Under Hub.mu.
	conn      *subConn      // the PubSub it is requested or pending on
	requested bool          // in conn's subscription set
	confirmed bool          // the last confirmation from conn said subscribed
	pending   int           // commands sent on conn and not yet confirmed
	resend    bool          // (S)SUBSCRIBE it on conn again
	live      bool          // requested && confirmed && pending == 0
	ready     chan struct{} // closed while live
	resync    string        // ResyncRequired reason owed when it goes live
	dirty     bool          // listed in Hub.dirty
}

func newTopic(key pm.ProjectKey, name string) *topic {
	return &topic{key: key, name: name, slot: slot(name), ready: make(chan struct{})}
}

// members returns the current snapshot of local subscribers; callers must
// not modify it.
func (t *topic) members() []member {
	if p := t.subs.Load(); p != nil {
		return *p
	}
	return nil
}

func (t *topic) wanted() bool { return len(t.members()) > 0 }

// add appends m to a new snapshot. Callers hold Hub.mu.
func (t *topic) add(m member) {
	old := t.members()
	next := make([]member, len(old), len(old)+1)
	copy(next, old)
	next = append(next, m)
	t.subs.Store(&next)
}

// remove drops member id in a new snapshot. Callers hold Hub.mu.
func (t *topic) remove(id string) {
	old := t.members()
	next := make([]member, 0, len(old))
	for _, m := range old {
		if m.id != id {
			next = append(next, m)
		}
	}
	t.subs.Store(&next)
}

// observe raises seen to rev.
func (t *topic) observe(rev int64) {
	for {
		cur := t.seen.Load()
		if rev <= cur || t.seen.CompareAndSwap(cur, rev) {
			return
		}
	}
}

// settleLocked recomputes whether t is live, owes a resync notice, needs the
// reconciler, or can leave the table. Every change to a topic ends with it.
func (h *Hub) settleLocked(t *topic) {
	wanted := t.wanted()
	if !wanted {
		t.resync = "" // nobody left to tell
	}
	live := t.requested && t.confirmed && t.pending == 0
	switch {
	case live && !t.live:
		t.live = true
		close(t.ready)
		if t.resync != "" {
			h.noticeLocked(t, t.resync)
			t.resync = ""
		}
	case !live && t.live:
		// Only Redis takes a wanted channel away; an unwanted one is
		// being unsubscribed.
		t.live = false
		t.ready = make(chan struct{})
		if wanted && t.resync == "" {
			t.resync = ReasonRedisReconnected
		}
	}
	if wanted != t.requested || t.resend {
		h.markDirtyLocked(t)
	}
	if !wanted && !t.requested && t.pending == 0 && h.topics[t.name] == t {
		delete(h.topics, t.name)
		if t.conn != nil {
			t.conn.refs--
			t.conn = nil
			h.wake(h.wakeSync) // it may leave an idle shard connection
		}
	}
}

func (h *Hub) markDirtyLocked(t *topic) {
	if !t.dirty {
		t.dirty = true
		h.dirty = append(h.dirty, t)
	}
	h.wake(h.wakeSync)
}

// noticeLocked queues ResyncRequired(reason) for t's subscribers.
func (h *Hub) noticeLocked(t *topic, reason string) {
	if !t.wanted() {
		return
	}
	if _, ok := h.notices[t]; !ok {
		h.notices[t] = reason
	}
	h.wake(h.wakeNotify)
}

func (h *Hub) wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// confirmed applies a (un)subscribe confirmation read from sc.
func (h *Hub) confirmed(sc *subConn, kind, channel string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.topics[channel]
	if t == nil || t.conn != sc {
		return // about a channel we no longer track there
	}
	switch kind {
	case "subscribe", "ssubscribe":
		if t.pending > 0 {
			t.pending--
		} else if t.confirmed {
			// Nobody asked: go-redis replaced the connection and
			// resubscribed without an error reaching the reader.
			h.noticeLocked(t, ReasonRedisReconnected)
		}
		t.confirmed = true
	case "unsubscribe", "sunsubscribe":
		if t.pending > 0 {
			t.pending--
		} else if t.requested {
			// Redis ended a subscription we hold (a slot moved away):
			// ask again; a MOVED answer reroutes it.
			t.resend = true
		}
		t.confirmed = false
	default:
		return
	}
	h.settleLocked(t)
}

// resetLocked forgets what sc's broken connection had confirmed: every topic
// on it waits for go-redis's resubscription, and its subscribers will be
// told to resync once it is live again.
func (h *Hub) resetLocked(sc *subConn) {
	for _, t := range h.topics {
		if t.conn == sc {
			t.pending = 0
			t.confirmed = false
			t.resend = false
			h.settleLocked(t)
		}
	}
}

// detachLocked takes t off its shard connection so that the reconciler routes
// it again (its slot has moved to another master).
func (h *Hub) detachLocked(t *topic) {
	sc := t.conn
	if sc == nil {
		return
	}
	if t.requested {
		// Drop it from the old PubSub's resubscribe set too.
		h.detached[sc] = append(h.detached[sc], t.name)
		t.requested = false
		h.m.channels.Dec()
	}
	t.conn = nil
	sc.refs--
	t.pending = 0
	t.confirmed = false
	t.resend = false
	h.reload = true
	h.settleLocked(t)
}
