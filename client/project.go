package client

import (
	"cmp"
	"context"
	"slices"
	"sync"

	"github.com/google/uuid"

	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// Project is the local replica of a subscribed project: its live work items
// (the project item included) as of Revision. The client keeps it up to date
// from events, and fetches what it missed after a gap, a ResyncRequired push
// or a reconnect. Its methods are safe for concurrent use; the work items it
// returns are shared and must be treated as read-only.
type Project struct {
	id string

	mu      sync.RWMutex
	items   map[string]*pmv1.WorkItem // live items by id
	rev     int64                     // the last revision applied
	loaded  bool                      // the first full load is done
	changed chan struct{}             // closed and replaced at every change
	ready   chan struct{}             // closed by the first load, or by end
	done    chan struct{}             // closed by end
	err     error                     // why the replica ended

	// Owned by the client's sync goroutine.
	ahead     map[int64]event // events past a gap, by revision
	needFetch bool            // a gap, a resync push or a (re)load asks for a fetch
}

func newProject(id string) *Project {
	return &Project{
		id:      id,
		items:   make(map[string]*pmv1.WorkItem),
		changed: make(chan struct{}),
		ready:   make(chan struct{}),
		done:    make(chan struct{}),
		ahead:   make(map[int64]event),
	}
}

// ID returns the project's id.
func (p *Project) ID() string { return p.id }

// Revision returns the last project revision the replica applied; 0 until
// the first load.
func (p *Project) Revision() int64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.rev
}

// Get returns the live work item with the given id, or nil.
func (p *Project) Get(id string) *pmv1.WorkItem {
	if u, err := uuid.Parse(id); err == nil {
		id = u.String()
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.items[id]
}

// Len returns the number of live work items.
func (p *Project) Len() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.items)
}

// Items returns a snapshot of the live work items ordered by position (then
// id), and the revision it reflects.
func (p *Project) Items() ([]*pmv1.WorkItem, int64) {
	p.mu.RLock()
	items := make([]*pmv1.WorkItem, 0, len(p.items))
	for _, w := range p.items {
		items = append(items, w)
	}
	rev := p.rev
	p.mu.RUnlock()
	slices.SortFunc(items, func(a, b *pmv1.WorkItem) int {
		return cmp.Or(cmp.Compare(a.Position, b.Position), cmp.Compare(a.Id, b.Id))
	})
	return items, rev
}

// Changed returns a channel that is closed at the replica's next change (or
// when it ends). It never blocks the client and any number of goroutines
// may wait on it; call it again after each wake-up:
//
//	for !cond(p) {
//		select {
//		case <-p.Changed():
//		case <-ctx.Done():
//			return ctx.Err()
//		}
//	}
//
// Check the condition after taking the channel, as WaitFor does, so that no
// change slips in between.
func (p *Project) Changed() <-chan struct{} {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.changed
}

// Done is closed when the replica ends: the subscription was revoked or
// unsubscribed, or the client stopped. Err says why.
func (p *Project) Done() <-chan struct{} { return p.done }

// Err returns why the replica ended (ErrSubscriptionRevoked, ErrUnsubscribed,
// the client's error), or nil while it is live.
func (p *Project) Err() error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.err
}

// WaitFor waits until cond holds for the replica, the replica ends (its
// error is returned) or ctx ends. cond runs on the caller's goroutine and
// may call the Project's methods.
func (p *Project) WaitFor(ctx context.Context, cond func(*Project) bool) error {
	for {
		ch := p.Changed()
		if cond(p) {
			return nil
		}
		if err := p.Err(); err != nil {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// WaitRevision waits until the replica has applied revision rev.
func (p *Project) WaitRevision(ctx context.Context, rev int64) error {
	return p.WaitFor(ctx, func(p *Project) bool { return p.Revision() >= rev })
}

// notifyLocked wakes the waiters of Changed. p.mu must be held for writing.
func (p *Project) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// end stops the replica with err; later calls do nothing.
func (p *Project) end(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return
	}
	p.err = err
	close(p.done)
	if !p.loaded {
		close(p.ready)
	}
	p.notifyLocked()
}

// event is a work item change of a project, from a push or from the
// response to one of the client's own writes (the node does not echo a
// change to the connection that made it).
type event struct {
	project  string
	revision int64
	item     *pmv1.WorkItem // the new state; a tombstone (deleted_at set) for a delete
	itemID   string
}

// eventOf extracts the work item change from a message; ok is false for
// messages that are not one.
func eventOf(m *pmv1.WebSocketMessage) (ev event, ok bool) {
	switch p := m.Payload.(type) {
	case *pmv1.WebSocketMessage_WorkItemCreated:
		w := p.WorkItemCreated.GetWorkItem()
		if w == nil {
			return ev, false
		}
		return event{project: w.ProjectId, revision: w.Revision, item: w, itemID: w.Id}, true
	case *pmv1.WebSocketMessage_WorkItemUpdated:
		w := p.WorkItemUpdated.GetWorkItem()
		if w == nil {
			return ev, false
		}
		return event{project: w.ProjectId, revision: w.Revision, item: w, itemID: w.Id}, true
	case *pmv1.WebSocketMessage_WorkItemDeleted:
		d := p.WorkItemDeleted
		ev = event{project: d.ProjectId, revision: d.Revision, item: d.WorkItem, itemID: d.WorkItemId}
		if w := d.WorkItem; w != nil {
			ev.project = cmp.Or(ev.project, w.ProjectId)
			ev.revision = cmp.Or(ev.revision, w.Revision)
			ev.itemID = cmp.Or(ev.itemID, w.Id)
		}
		if ev.item == nil || ev.item.DeletedAt == 0 {
			// Only the id is known: a minimal tombstone removes the item.
			ev.item = &pmv1.WorkItem{Id: ev.itemID, ProjectId: ev.project, Revision: ev.revision, DeletedAt: -1}
		}
		return ev, ev.project != "" && ev.itemID != ""
	}
	return ev, false
}

// outcome says what applying an event did.
type outcome int

const (
	applied  outcome = iota // revision was last+1: applied (with any buffered successors)
	stale                   // revision <= last: already reflected, ignored
	gapped                  // revision > last+1: buffered; the replica needs a fetch
	unloaded                // the first load has not happened: the load will cover it
)

// apply applies an event by the sync rule: revision last+1 is applied (and
// then any buffered events that follow on), revision <= last is ignored, a
// later revision is buffered and reported as a gap.
func (p *Project) apply(ev event) outcome {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case !p.loaded:
		return unloaded
	case ev.revision <= p.rev:
		return stale
	case ev.revision > p.rev+1:
		p.ahead[ev.revision] = ev
		return gapped
	}
	p.putLocked(ev.item)
	p.rev = ev.revision
	p.drainLocked()
	p.notifyLocked()
	return applied
}

// drainLocked applies buffered events that now follow on, and drops the
// ones already covered.
func (p *Project) drainLocked() {
	for {
		ev, ok := p.ahead[p.rev+1]
		if !ok {
			break
		}
		delete(p.ahead, ev.revision)
		p.putLocked(ev.item)
		p.rev = ev.revision
	}
	for rev := range p.ahead {
		if rev <= p.rev {
			delete(p.ahead, rev)
		}
	}
}

// gap reports whether events are buffered past a missing revision.
func (p *Project) gap() bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.ahead) > 0
}

// putLocked stores an item's new state; a tombstone removes it.
func (p *Project) putLocked(w *pmv1.WorkItem) {
	if w.DeletedAt != 0 {
		delete(p.items, w.Id)
		return
	}
	p.items[w.Id] = w
}

// since returns the revision to fetch after: 0 (everything) before the
// first load.
func (p *Project) since() int64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if !p.loaded {
		return 0
	}
	return p.rev
}

// applyList applies the answer to GetWorkItems{since_revision: since}. With
// since 0 it is the full set of live items and replaces the replica; else
// it holds every item changed after since, tombstones included. Buffered
// events at or below the list's revision are dropped, later ones applied if
// they follow on. It reports whether the list was applied: a list older
// than the replica (a stale answer) is not.
func (p *Project) applyList(since int64, list *pmv1.WorkItemsList) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return false
	}
	if since > 0 && (!p.loaded || since != p.rev) || list.AsOfRevision < p.rev {
		return false
	}
	if since == 0 {
		clear(p.items)
	}
	for _, w := range list.WorkItems {
		if w.DeletedAt != 0 {
			delete(p.items, w.Id)
			continue
		}
		if cur := p.items[w.Id]; cur == nil || cur.Revision <= w.Revision {
			p.items[w.Id] = w
		}
	}
	p.rev = list.AsOfRevision
	p.drainLocked()
	if !p.loaded {
		p.loaded = true
		close(p.ready)
	}
	p.notifyLocked()
	return true
}
