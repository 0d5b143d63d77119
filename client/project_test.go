package client

import (
	"context"
	"errors"
	"testing"
	"time"

	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

const testProject = "6f1c2d4e-0000-4000-8000-000000000001"

func item(id string, rev int64, pos string) *pmv1.WorkItem {
	return &pmv1.WorkItem{Id: id, ProjectId: testProject, Revision: rev, Position: pos, Title: id}
}

func created(w *pmv1.WorkItem) *pmv1.WebSocketMessage {
	return &pmv1.WebSocketMessage{MessageId: "srv-x", Payload: &pmv1.WebSocketMessage_WorkItemCreated{
		WorkItemCreated: &pmv1.WorkItemCreated{WorkItem: w},
	}}
}

func updated(w *pmv1.WorkItem) *pmv1.WebSocketMessage {
	return &pmv1.WebSocketMessage{MessageId: "srv-x", Payload: &pmv1.WebSocketMessage_WorkItemUpdated{
		WorkItemUpdated: &pmv1.WorkItemUpdated{WorkItem: w},
	}}
}

func deleted(id string, rev int64) *pmv1.WebSocketMessage {
	tomb := item(id, rev, "")
	tomb.DeletedAt = 1700000000000
	return &pmv1.WebSocketMessage{MessageId: "srv-x", Payload: &pmv1.WebSocketMessage_WorkItemDeleted{
		WorkItemDeleted: &pmv1.WorkItemDeleted{WorkItemId: id, Revision: rev, ProjectId: testProject, WorkItem: tomb},
	}}
}

func mustEvent(t *testing.T, m *pmv1.WebSocketMessage) event {
	t.Helper()
	ev, ok := eventOf(m)
	if !ok {
		t.Fatalf("eventOf(%v) = not an event", m)
	}
	return ev
}

// loaded returns a replica after a full load at revision rev with items.
func loaded(t *testing.T, rev int64, items ...*pmv1.WorkItem) *Project {
	t.Helper()
	p := newProject(testProject)
	if !p.applyList(0, &pmv1.WorkItemsList{WorkItems: items, AsOfRevision: rev, ProjectId: testProject}) {
		t.Fatal("full load not applied")
	}
	return p
}

func ids(p *Project) []string {
	items, _ := p.Items()
	out := make([]string, len(items))
	for i, w := range items {
		out[i] = w.Id
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestApplyNextRevision(t *testing.T) {
	p := loaded(t, 3, item("a", 2, "a0"))
	if got := p.apply(mustEvent(t, created(item("b", 4, "Zz")))); got != applied {
		t.Fatalf("revision last+1: got outcome %v, want applied", got)
	}
	if p.Revision() != 4 {
		t.Fatalf("revision = %d, want 4", p.Revision())
	}
	if got := ids(p); !equal(got, []string{"b", "a"}) {
		t.Fatalf("items by position = %v, want [b a]", got)
	}
	up := item("a", 5, "a0")
	up.Title = "renamed"
	if got := p.apply(mustEvent(t, updated(up))); got != applied {
		t.Fatalf("update: outcome %v", got)
	}
	if p.Get("a").Title != "renamed" {
		t.Fatalf("update not applied: %v", p.Get("a"))
	}
	if got := p.apply(mustEvent(t, deleted("b", 6))); got != applied {
		t.Fatalf("delete: outcome %v", got)
	}
	if p.Get("b") != nil || p.Len() != 1 || p.Revision() != 6 {
		t.Fatalf("after delete: b=%v len=%d rev=%d", p.Get("b"), p.Len(), p.Revision())
	}
}

func TestApplyIgnoresOldRevisions(t *testing.T) {
	p := loaded(t, 5, item("a", 5, "a0"))
	old := item("a", 4, "a0")
	old.Title = "old"
	if got := p.apply(mustEvent(t, updated(old))); got != stale {
		t.Fatalf("revision below last: outcome %v, want stale", got)
	}
	if got := p.apply(mustEvent(t, updated(item("a", 5, "a0")))); got != stale {
		t.Fatalf("revision == last: outcome %v, want stale", got)
	}
	if p.Get("a").Title != "a" || p.Revision() != 5 {
		t.Fatalf("stale event changed the replica: %v rev %d", p.Get("a"), p.Revision())
	}
}

func TestApplyGapBuffersUntilFilled(t *testing.T) {
	p := loaded(t, 1)
	if got := p.apply(mustEvent(t, created(item("c", 3, "a2")))); got != gapped {
		t.Fatalf("revision last+2: outcome %v, want gapped", got)
	}
	if !p.gap() || p.Revision() != 1 || p.Get("c") != nil {
		t.Fatalf("a gapped event must wait: gap=%v rev=%d", p.gap(), p.Revision())
	}
	// The missing revision arrives late (another node published it later):
	// it and the buffered one apply, no fetch needed.
	if got := p.apply(mustEvent(t, created(item("b", 2, "a1")))); got != applied {
		t.Fatalf("filling revision: outcome %v", got)
	}
	if p.gap() || p.Revision() != 3 || !equal(ids(p), []string{"b", "c"}) {
		t.Fatalf("after fill: gap=%v rev=%d items=%v", p.gap(), p.Revision(), ids(p))
	}
}

func TestFetchAfterGapDropsCoveredEvents(t *testing.T) {
	p := loaded(t, 10, item("a", 10, "a0"))
	p.apply(mustEvent(t, created(item("x", 12, "a1")))) // 11 missing
	p.apply(mustEvent(t, created(item("z", 15, "a3")))) // 13, 14 missing too
	since := p.since()
	if since != 10 {
		t.Fatalf("since = %d, want 10", since)
	}
	// The fetch saw up to 13: 11 deleted a, 12 made x, 13 made y.
	tombA := item("a", 11, "a0")
	tombA.DeletedAt = 1
	list := &pmv1.WorkItemsList{AsOfRevision: 13, WorkItems: []*pmv1.WorkItem{
		tombA, item("x", 12, "a1"), item("y", 13, "a2"),
	}}
	if !p.applyList(since, list) {
		t.Fatal("delta not applied")
	}
	if p.Revision() != 13 || !p.gap() {
		t.Fatalf("rev=%d gap=%v; want 13 with 15 still buffered", p.Revision(), p.gap())
	}
	p.apply(mustEvent(t, updated(item("y", 14, "a2"))))
	if p.Revision() != 15 || p.gap() || !equal(ids(p), []string{"x", "y", "z"}) {
		t.Fatalf("rev=%d gap=%v items=%v; want 15, no gap, [x y z]", p.Revision(), p.gap(), ids(p))
	}
}

func TestApplyListRejectsMismatchedSince(t *testing.T) {
	p := loaded(t, 7)
	if p.applyList(5, &pmv1.WorkItemsList{AsOfRevision: 9}) {
		t.Fatal("a delta since 5 must not apply to a replica at 7")
	}
	if p.applyList(7, &pmv1.WorkItemsList{AsOfRevision: 6}) {
		t.Fatal("a list older than the replica must not apply")
	}
	if p.Revision() != 7 {
		t.Fatalf("revision = %d, want 7", p.Revision())
	}
}

func TestEventsBeforeLoadAreLeftToTheLoad(t *testing.T) {
	p := newProject(testProject)
	if got := p.apply(mustEvent(t, created(item("a", 3, "a0")))); got != unloaded {
		t.Fatalf("event before load: outcome %v, want unloaded", got)
	}
	if p.since() != 0 {
		t.Fatal("a replica before its first load must fetch everything")
	}
	select {
	case <-p.ready:
		t.Fatal("ready before the load")
	default:
	}
	p.applyList(0, &pmv1.WorkItemsList{AsOfRevision: 3, WorkItems: []*pmv1.WorkItem{item("a", 3, "a0")}})
	<-p.ready
	if got := p.apply(mustEvent(t, created(item("a", 3, "a0")))); got != stale {
		t.Fatalf("event covered by the load: outcome %v, want stale", got)
	}
}

func TestFullLoadReplacesItems(t *testing.T) {
	p := loaded(t, 2, item("a", 1, "a0"), item("b", 2, "a1"))
	p.applyList(0, &pmv1.WorkItemsList{AsOfRevision: 9, WorkItems: []*pmv1.WorkItem{item("c", 9, "a0")}})
	if !equal(ids(p), []string{"c"}) {
		t.Fatalf("items = %v, want [c]", ids(p))
	}
}

func TestDeletedEventWithoutTombstone(t *testing.T) {
	p := loaded(t, 1, item("a", 1, "a0"))
	m := &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_WorkItemDeleted{
		WorkItemDeleted: &pmv1.WorkItemDeleted{WorkItemId: "a", Revision: 2, ProjectId: testProject},
	}}
	if got := p.apply(mustEvent(t, m)); got != applied || p.Get("a") != nil {
		t.Fatalf("outcome %v, item %v; want applied and removed", got, p.Get("a"))
	}
}

func TestEventOfIgnoresOtherMessages(t *testing.T) {
	for _, m := range []*pmv1.WebSocketMessage{
		{Payload: &pmv1.WebSocketMessage_SubscribeAck{SubscribeAck: &pmv1.SubscribeAck{}}},
		{Payload: &pmv1.WebSocketMessage_WorkItemCreated{WorkItemCreated: &pmv1.WorkItemCreated{}}},
		{},
	} {
		if _, ok := eventOf(m); ok {
			t.Errorf("eventOf(%v) reported an event", m)
		}
	}
}

func TestWaitForAndEnd(t *testing.T) {
	p := loaded(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.WaitRevision(ctx, 2) }()
	p.apply(mustEvent(t, created(item("a", 2, "a0"))))
	if err := <-done; err != nil {
		t.Fatalf("WaitRevision: %v", err)
	}

	go func() { done <- p.WaitRevision(ctx, 99) }()
	p.end(ErrUnsubscribed)
	if err := <-done; !errors.Is(err, ErrUnsubscribed) {
		t.Fatalf("WaitRevision after end = %v, want ErrUnsubscribed", err)
	}
	<-p.Done()
	p.end(errors.New("second")) // no effect, no panic
	if !errors.Is(p.Err(), ErrUnsubscribed) {
		t.Fatalf("Err = %v", p.Err())
	}

	short, cancelShort := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancelShort()
	q := loaded(t, 1)
	if err := q.WaitRevision(short, 5); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitRevision with no change = %v, want deadline exceeded", err)
	}
}

func TestGetCanonicalisesIDs(t *testing.T) {
	id := "0b3c0e5e-2c8f-4c1e-9a57-1d2f3a4b5c6d"
	p := loaded(t, 1, item(id, 1, "a0"))
	if p.Get("0B3C0E5E-2C8F-4C1E-9A57-1D2F3A4B5C6D") == nil {
		t.Fatal("Get with an upper-case UUID found nothing")
	}
}
