package node_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/node"
	"github.com/pmhq/pm/node/nodetest"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
	"github.com/pmhq/pm/repo/repotest"
)

// maxChunkBytes is the protocol's bound on one WorkItemsList frame.
const maxChunkBytes = 256 << 10

// loaded is a chunked answer to one GetWorkItemsRequest, read off a raw
// connection.
type loaded struct {
	chunks []*pmv1.WorkItemsList
	items  []*pmv1.WorkItem // of every chunk, in order
	others []*pmv1.WebSocketMessage
}

// load sends r and reads its answer until the chunk marked complete,
// checking the chunking rules on the way: every frame at most 256 KiB, the
// request's message_id, one snapshot, complete on the last frame only.
// Messages with other ids (events) are kept in others.
func load(t *testing.T, conn *nodetest.Conn, r *pmv1.GetWorkItemsRequest) *loaded {
	t.Helper()
	return readLoad(t, conn, sendLoad(conn, r), r)
}

func sendLoad(conn *nodetest.Conn, r *pmv1.GetWorkItemsRequest) string {
	return conn.Send(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_GetWorkItemsRequest{GetWorkItemsRequest: r}})
}

// readLoad reads the answer to the load r sent as id; see load.
func readLoad(t *testing.T, conn *nodetest.Conn, id string, r *pmv1.GetWorkItemsRequest) *loaded {
	t.Helper()
	var l loaded
	for {
		m := conn.Next(30 * time.Second)
		if m.MessageId != id {
			l.others = append(l.others, m)
			continue
		}
		if size := proto.Size(m); size > maxChunkBytes {
			t.Fatalf("chunk %d is %d bytes (%d items); the limit is %d", len(l.chunks), size, len(m.GetWorkItemsList().GetWorkItems()), maxChunkBytes)
		}
		list := m.GetWorkItemsList()
		if list == nil {
			t.Fatalf("after %d chunks: got %v, want a WorkItemsList", len(l.chunks), m)
		}
		if len(l.chunks) > 0 {
			first := l.chunks[0]
			if list.AsOfRevision != first.AsOfRevision || list.AsOfTimestamp != first.AsOfTimestamp || list.ProjectId != first.ProjectId {
				t.Fatalf("chunk %d is of revision %d at %d of %s; chunk 0 of revision %d at %d of %s",
					len(l.chunks), list.AsOfRevision, list.AsOfTimestamp, list.ProjectId,
					first.AsOfRevision, first.AsOfTimestamp, first.ProjectId)
			}
		}
		if list.ProjectId != r.ProjectId {
			t.Fatalf("chunk of project %q, want %q", list.ProjectId, r.ProjectId)
		}
		l.chunks = append(l.chunks, list)
		l.items = append(l.items, list.WorkItems...)
		if list.Complete {
			return &l
		}
	}
}

// ids returns the ids of items, in order.
func ids(items []*pmv1.WorkItem) []string {
	out := make([]string, len(items))
	for i, w := range items {
		out[i] = w.Id
	}
	return out
}

// wantItems checks that got holds exactly the ids of want, in order.
func wantItems(t *testing.T, got []*pmv1.WorkItem, want []string) {
	t.Helper()
	g := ids(got)
	if len(g) != len(want) {
		t.Fatalf("got %d items, want %d", len(g), len(want))
	}
	for i := range g {
		if g[i] != want[i] {
			t.Fatalf("item %d is %s, want %s", i, g[i], want[i])
		}
	}
}

// bigItems adds n tasks with descriptions of the largest allowed size to the
// team's project and returns the ids of the project's items in load order
// (the project first).
func bigItems(t *testing.T, tm *team, n int) []string {
	t.Helper()
	actor := pm.Actor{Tenant: tm.tenant, User: tm.admin}
	items := repotest.MustInsertItems(t, tm.c.DatabaseURL, actor, uuid.MustParse(tm.project), n, func(i int, w *pm.WorkItem) {
		w.Description = strings.Repeat(string(rune('a'+i%26)), pm.DescriptionMaxBytes)
	})
	want := []string{tm.project}
	for _, w := range items {
		want = append(want, w.ID.String())
	}
	return want
}

// A project whose answer is larger than gws's 16 MiB write limit loads in
// chunks, completely, and the connection survives it.
func TestLoadLargeProjectInChunks(t *testing.T) {
	tm := newTeam(t, nodetest.Options{})
	before := get(tm.viewerConn, &pmv1.GetWorkItemsRequest{ProjectId: tm.project}).GetWorkItemsList().GetAsOfRevision()
	want := bigItems(t, tm, 270)

	full := load(t, tm.viewerConn, &pmv1.GetWorkItemsRequest{ProjectId: tm.project})
	wantItems(t, full.items, want)
	if len(full.chunks) < 2 {
		t.Fatalf("%d chunks for %d items of 64 KiB", len(full.chunks), len(want))
	}
	for _, w := range full.items[1:] {
		if len(w.Description) != pm.DescriptionMaxBytes {
			t.Fatalf("item %s has a description of %d bytes", w.Id, len(w.Description))
		}
	}
	if full.chunks[0].AsOfRevision != before+1 {
		t.Fatalf("as_of_revision %d, want %d", full.chunks[0].AsOfRevision, before+1)
	}

	// The deltas are chunked the same way.
	delta := load(t, tm.viewerConn, &pmv1.GetWorkItemsRequest{ProjectId: tm.project, SinceRevision: before})
	wantItems(t, delta.items, want[1:])
	// Everything, the project included, changed within the last minute.
	byTime := load(t, tm.viewerConn, &pmv1.GetWorkItemsRequest{ProjectId: tm.project, SinceTimestamp: full.chunks[0].AsOfTimestamp - 60_000})
	wantItems(t, byTime.items, want)

	// Nothing changed since: one empty chunk, complete.
	none := load(t, tm.viewerConn, &pmv1.GetWorkItemsRequest{ProjectId: tm.project, SinceRevision: full.chunks[0].AsOfRevision})
	if len(none.chunks) != 1 || len(none.items) != 0 {
		t.Fatalf("empty delta: %d chunks, %d items; want one empty chunk", len(none.chunks), len(none.items))
	}
	if n := tm.c.Nodes[0].Metric("pm_connection_closes_total"); n != 0 {
		t.Fatalf("the node closed %v connections", n)
	}
}

// A project of many small items loads within the default 4 MiB send queue.
func TestLoadManySmallItems(t *testing.T) {
	tm := newTeam(t, nodetest.Options{})
	const n = 20_500
	items := repotest.MustInsertItems(t, tm.c.DatabaseURL, pm.Actor{Tenant: tm.tenant, User: tm.admin}, uuid.MustParse(tm.project), n, nil)
	want := []string{tm.project}
	for _, w := range items {
		want = append(want, w.ID.String())
	}
	subscribe(t, tm.viewerConn, tm.project)
	got := load(t, tm.viewerConn, &pmv1.GetWorkItemsRequest{ProjectId: tm.project})
	wantItems(t, got.items, want)
	for i, w := range got.items[1:] {
		if w.Title != fmt.Sprintf("Task %d", i) {
			t.Fatalf("item %d: title %q", i, w.Title)
		}
	}
	if n := tm.c.Nodes[0].Metric("pm_slow_consumer_disconnects_total"); n != 0 {
		t.Fatalf("%v slow consumers", n)
	}
}

// The load waits for room in the send queue instead of filling it: with a
// queue of 512 KiB, 17 MiB load without the connection being dropped as a
// slow consumer, and events to the connection still get through.
func TestLoadWaitsForRoomInTheSendQueue(t *testing.T) {
	tm := newTeam(t, nodetest.Options{Configure: func(cfg *node.Config) { cfg.SendQueueBytes = 512 << 10 }})
	want := bigItems(t, tm, 270)
	subscribe(t, tm.viewerConn, tm.project)
	for range 3 {
		got := load(t, tm.viewerConn, &pmv1.GetWorkItemsRequest{ProjectId: tm.project})
		wantItems(t, got.items, want)
	}
	// The connection is alive and subscribed.
	task := mustCreate(t, tm.editorConn, &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "after"})
	ev := tm.viewerConn.Next(wait)
	if ev.GetWorkItemCreated().GetWorkItem().GetId() != task.Id {
		t.Fatalf("event after the loads: %v", ev)
	}
	if n := tm.c.Nodes[0].Metric("pm_slow_consumer_disconnects_total"); n != 0 {
		t.Fatalf("%v slow consumers", n)
	}
}

// hookStore is the node's real store with a hook that runs after each page
// a load hands to the node, in the loading connection's worker.
type hookStore struct {
	node.Store
	mu        sync.Mutex
	afterPage func(page int)
}

func hooked(h *hookStore) func(*node.Config) {
	return func(cfg *node.Config) { h.Store, cfg.Store = cfg.Store, h }
}

func (h *hookStore) setHook(f func(page int)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.afterPage = f
}

func (h *hookStore) StreamWorkItems(ctx context.Context, actor pm.Actor, q pm.WorkItemQuery, page func(pm.Snapshot, []pm.WorkItem) error) error {
	h.mu.Lock()
	after := h.afterPage
	h.mu.Unlock()
	n := 0
	return h.Store.StreamWorkItems(ctx, actor, q, func(snap pm.Snapshot, items []pm.WorkItem) error {
		if err := page(snap, items); err != nil {
			return err
		}
		n++
		if after != nil {
			after(n)
		}
		return nil
	})
}

// pauseAfterFirstPage makes the next load stop after its first page until
// the returned resume is called; paused is closed when it stops there.
func pauseAfterFirstPage(t *testing.T, h *hookStore) (paused <-chan struct{}, resume func()) {
	p, r := make(chan struct{}), make(chan struct{})
	h.setHook(func(page int) {
		if page != 1 {
			return
		}
		h.setHook(nil)
		close(p)
		select {
		case <-r:
		case <-t.Context().Done():
		}
	})
	return p, sync.OnceFunc(func() { close(r) })
}

// Writes that commit while a load is under way, between its chunks, do not
// show in it, and reach the loading connection as events after it.
func TestLoadIsOneSnapshot(t *testing.T) {
	h := &hookStore{}
	tm := newTeam(t, nodetest.Options{Configure: hooked(h)})
	want := bigItems(t, tm, 100) // about 7 pages of 1 MiB, 26 chunks
	subscribe(t, tm.viewerConn, tm.project)
	before := get(tm.adminConn, &pmv1.GetWorkItemsRequest{ProjectId: tm.project, SinceRevision: 1 << 40}).GetWorkItemsList().AsOfRevision

	paused, resume := pauseAfterFirstPage(t, h)
	r := &pmv1.GetWorkItemsRequest{ProjectId: tm.project}
	id := sendLoad(tm.viewerConn, r)
	<-paused
	// The first task (sent already) moves to the end, the last to the
	// front (behind the load's cursor), one goes, one comes.
	created := mustCreate(t, tm.editorConn, &pmv1.CreateWorkItemRequest{ProjectId: tm.project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "new"})
	for _, move := range []struct{ id, to string }{{want[1], "c000"}, {want[len(want)-1], "a0V"}} {
		if got := update(tm.editorConn, &pmv1.UpdateWorkItemRequest{WorkItemId: move.id, ExpectedVersion: 1, Position: &move.to}); got.GetWorkItemUpdated() == nil {
			t.Fatalf("move: %v", got)
		}
	}
	if got := del(tm.editorConn, want[50], 1); got.GetWorkItemDeleted() == nil {
		t.Fatalf("delete: %v", got)
	}
	resume()

	got := readLoad(t, tm.viewerConn, id, r)
	wantItems(t, got.items, want)
	for _, w := range got.items {
		if w.Version != 1 || w.Revision > before {
			t.Fatalf("item %s at version %d, revision %d: a write after revision %d leaked into the load", w.Id, w.Version, w.Revision, before)
		}
	}
	if got.chunks[0].AsOfRevision != before {
		t.Fatalf("as_of_revision %d, want %d", got.chunks[0].AsOfRevision, before)
	}
	// The four changes arrive as events (during or after the load).
	events := got.others
	for len(events) < 4 {
		events = append(events, tm.viewerConn.Next(wait))
	}
	for i, ev := range events {
		var rev int64
		switch p := ev.Payload.(type) {
		case *pmv1.WebSocketMessage_WorkItemCreated:
			rev = p.WorkItemCreated.WorkItem.Revision
		case *pmv1.WebSocketMessage_WorkItemUpdated:
			rev = p.WorkItemUpdated.WorkItem.Revision
		case *pmv1.WebSocketMessage_WorkItemDeleted:
			rev = p.WorkItemDeleted.Revision
		}
		if rev != before+1+int64(i) {
			t.Fatalf("event %d: %v; want revision %d", i, ev, before+1+int64(i))
		}
	}
	if created.Revision != before+1 {
		t.Fatalf("the create is at revision %d, want %d", created.Revision, before+1)
	}
}

// requests returns the node's pm_requests_total for an operation and outcome.
func requests(t *testing.T, n *nodetest.Node, op, outcome string) float64 {
	t.Helper()
	families, err := n.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "pm_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			if label(m, "op") == op && label(m, "outcome") == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// waitMetric waits until cond holds, checking it again every few
// milliseconds: the node counts a request after its connection is gone, so
// nothing the test can wait on says when.
func waitMetric(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// A load whose connection closes before the answer is out is logged and
// counted as undelivered, not ok.
func TestLoadCutOffIsUndelivered(t *testing.T) {
	h := &hookStore{}
	tm := newTeam(t, nodetest.Options{Configure: hooked(h)})
	bigItems(t, tm, 100)
	n := tm.c.Nodes[0]
	paused, resume := pauseAfterFirstPage(t, h)
	sendLoad(tm.viewerConn, &pmv1.GetWorkItemsRequest{ProjectId: tm.project})
	<-paused
	tm.viewerConn.Close()
	resume()
	waitMetric(t, "the load to be counted", func() bool { return requests(t, n, "get_work_items", "undelivered") == 1 })
	if ok := requests(t, n, "get_work_items", "ok"); ok != 0 {
		t.Fatalf("%v loads counted ok", ok)
	}
}

// A write that fails (here: the client stopped reading and the write timed
// out) is logged and counted, drops the connection, and the load it cut
// off is counted undelivered.
func TestFailedWriteIsCounted(t *testing.T) {
	tm := newTeam(t, nodetest.Options{Configure: func(cfg *node.Config) { cfg.WriteTimeout = 200 * time.Millisecond }})
	bigItems(t, tm, 270) // 17 MiB: more than the socket buffers hold
	n := tm.c.Nodes[0]
	tm.viewerConn.Pause()
	t.Cleanup(tm.viewerConn.Resume) // before the connection's Close
	sendLoad(tm.viewerConn, &pmv1.GetWorkItemsRequest{ProjectId: tm.project})
	waitMetric(t, "a failed write", func() bool { return n.Metric("pm_write_errors_total") >= 1 })
	waitMetric(t, "the load to be counted", func() bool { return requests(t, n, "get_work_items", "undelivered") == 1 })
	tm.viewerConn.Resume()
	if code := tm.viewerConn.WaitClosed(wait); code == node.CloseSlowConsumer {
		t.Fatalf("closed as a slow consumer (%d): the load must wait for room instead", code)
	}
}

// BenchmarkLoad loads a project of n tasks through a real node and
// connection, reading chunks until the complete one; with loaders=k, k
// connections load it at once and an op ends when the last one has it all.
// Allocations count the node's and the test clients' (decoding every chunk).
// peak-heap-MB is the process's highest heap during the loads, node and
// clients together, sampled every 10 ms; peak-RSS-MB the process's peak
// resident set so far.
func BenchmarkLoad(b *testing.B) {
	for _, tc := range []struct{ items, loaders int }{{10_000, 1}, {100_000, 1}, {100_000, 100}} {
		b.Run(fmt.Sprintf("items=%d/loaders=%d", tc.items, tc.loaders), func(b *testing.B) {
			c := nodetest.Start(b, nodetest.Options{Configure: func(cfg *node.Config) { cfg.RequestTimeout = 5 * time.Minute }})
			actor := pm.Actor{Tenant: "bench", User: uuid.New()}
			admin := nodetest.Dial(b, c.Nodes[0].URL(), c.Token(actor.Tenant, actor.User))
			resp, _ := admin.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_CreateWorkItemRequest{CreateWorkItemRequest: &pmv1.CreateWorkItemRequest{
				ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT, Title: "Bench",
			}}})
			project := resp.GetWorkItemCreated().GetWorkItem().GetId()
			repotest.MustInsertItems(b, c.DatabaseURL, actor, uuid.MustParse(project), tc.items, func(i int, w *pm.WorkItem) {
				w.Description = fmt.Sprintf("Task %d of the benchmark: a description of a typical length.", i)
			})
			conns := []*nodetest.Conn{admin}
			for len(conns) < tc.loaders {
				conns = append(conns, nodetest.Dial(b, c.Nodes[0].URL(), c.Token(actor.Tenant, actor.User)))
			}
			r := &pmv1.GetWorkItemsRequest{ProjectId: project}
			var chunks, wire atomic.Int64
			load := func(conn *nodetest.Conn) error {
				id := sendLoad(conn, r)
				items := 0
				for {
					m := conn.Next(5 * time.Minute)
					if m.MessageId != id {
						continue
					}
					list := m.GetWorkItemsList()
					if list == nil {
						return fmt.Errorf("got %v", m)
					}
					items += len(list.WorkItems)
					chunks.Add(1)
					wire.Add(int64(proto.Size(m)))
					if list.Complete {
						break
					}
				}
				if items != tc.items+1 {
					return fmt.Errorf("loaded %d items", items)
				}
				return nil
			}
			peak := sampleHeap()
			b.ReportAllocs()
			loads := 0
			for b.Loop() {
				errs := make(chan error, len(conns))
				for _, conn := range conns {
					go func() { errs <- load(conn) }()
				}
				for range conns {
					if err := <-errs; err != nil {
						b.Fatal(err)
					}
				}
				loads += len(conns)
			}
			b.ReportMetric(float64(chunks.Load())/float64(loads), "chunks/load")
			b.ReportMetric(float64(wire.Load())/float64(loads), "wire-B/load")
			b.ReportMetric(float64(peak())/(1<<20), "peak-heap-MB")
			if hwm, ok := peakRSS(); ok {
				b.ReportMetric(float64(hwm)/(1<<20), "peak-RSS-MB")
			}
		})
	}
}

// peakRSS returns the process's peak resident set (VmHWM, Linux only): an
// upper bound for a sub-benchmark, since it counts the whole process's life.
func peakRSS() (uint64, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err == nil
		}
	}
	return 0, false
}

// sampleHeap samples the live heap every 10 ms until the returned function
// is called, which stops it and returns the highest sample in bytes.
func sampleHeap() func() uint64 {
	stop, done := make(chan struct{}), make(chan uint64)
	go func() {
		var high uint64
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			high = max(high, m.HeapAlloc)
			select {
			case <-stop:
				done <- high
				return
			case <-tick.C:
			}
		}
	}()
	return func() uint64 { close(stop); return <-done }
}
