package client_test

import (
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	"github.com/lxzan/gws"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/client"
	"github.com/pmhq/pm/node/nodetest"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
	"github.com/pmhq/pm/repo/repotest"
)

const loadProject = "6f1c2d4e-0000-4000-8000-0000000000aa"

// task is a work item of loadProject.
func task(id string, rev int64) *pmv1.WorkItem {
	return &pmv1.WorkItem{Id: id, ProjectId: loadProject, Revision: rev, Version: 1, Title: id}
}

// sendChunks answers a load with one WorkItemsList frame per group of
// items, all of revision rev; the last is marked complete when complete.
func sendChunks(t *testing.T, ws *gws.Conn, id string, rev int64, complete bool, groups ...[]*pmv1.WorkItem) {
	for i, g := range groups {
		send(t, ws, &pmv1.WebSocketMessage{MessageId: id, Payload: &pmv1.WebSocketMessage_WorkItemsList{WorkItemsList: &pmv1.WorkItemsList{
			ProjectId: loadProject, AsOfRevision: rev, AsOfTimestamp: 1000 * rev, WorkItems: g,
			Complete: complete && i == len(groups)-1,
		}}})
	}
}

func itemIDs(items []*pmv1.WorkItem) []string {
	out := make([]string, len(items))
	for i, w := range items {
		out[i] = w.Id
	}
	return out
}

func TestGetWorkItemsReadsEveryChunk(t *testing.T) {
	f := startFake(t, func(_ int, ws *gws.Conn, req *pmv1.WebSocketMessage) {
		sendChunks(t, ws, req.MessageId, 4, true,
			[]*pmv1.WorkItem{task("a", 2), task("b", 3)}, []*pmv1.WorkItem{task("c", 4)}, []*pmv1.WorkItem{task("d", 4)})
	})
	c := dialFake(t, f, client.Options{})
	list, err := c.GetWorkItems(testContext(t), &pmv1.GetWorkItemsRequest{ProjectId: loadProject})
	if err != nil {
		t.Fatal(err)
	}
	if got := itemIDs(list.WorkItems); !slices.Equal(got, []string{"a", "b", "c", "d"}) || list.AsOfRevision != 4 || !list.Complete {
		t.Fatalf("GetWorkItems = %v at %d (complete %v); want a, b, c, d at 4", got, list.AsOfRevision, list.Complete)
	}
	// Do returns the same answer as one message.
	resp, err := c.Do(testContext(t), get())
	if err != nil {
		t.Fatal(err)
	}
	if got := itemIDs(resp.GetWorkItemsList().GetWorkItems()); len(got) != 4 {
		t.Fatalf("Do: %v", got)
	}
}

// A load cut off by the loss of the connection is sent again and read
// whole from the next connection; the chunks of the first are not part of
// the answer.
func TestLoadCutByReconnectIsRetriedWhole(t *testing.T) {
	f := startFake(t, func(conn int, ws *gws.Conn, req *pmv1.WebSocketMessage) {
		if conn == 1 {
			sendChunks(t, ws, req.MessageId, 5, false, []*pmv1.WorkItem{task("old-1", 5), task("old-2", 5)})
			_ = ws.NetConn().Close()
			return
		}
		sendChunks(t, ws, req.MessageId, 6, true, []*pmv1.WorkItem{task("new-1", 6)}, []*pmv1.WorkItem{task("new-2", 6)})
	})
	c := dialFake(t, f, client.Options{})
	list, err := c.GetWorkItems(testContext(t), &pmv1.GetWorkItemsRequest{ProjectId: loadProject})
	if err != nil {
		t.Fatal(err)
	}
	if got := itemIDs(list.WorkItems); !slices.Equal(got, []string{"new-1", "new-2"}) || list.AsOfRevision != 6 {
		t.Fatalf("GetWorkItems = %v at %d; want new-1, new-2 at 6", got, list.AsOfRevision)
	}
	if ids := f.seenIDs(); len(ids) != 2 || ids[0] != ids[1] {
		t.Fatalf("requests sent: %v; want the same message_id twice", ids)
	}
}

// Chunks followed by an Error are not an answer: a busy error is retried
// and the retry's answer alone is returned.
func TestChunksThenErrorAreDiscarded(t *testing.T) {
	var n atomic.Int32
	f := startFake(t, func(_ int, ws *gws.Conn, req *pmv1.WebSocketMessage) {
		if n.Add(1) == 1 {
			sendChunks(t, ws, req.MessageId, 5, false, []*pmv1.WorkItem{task("partial", 5)})
			send(t, ws, &pmv1.WebSocketMessage{MessageId: req.MessageId, Payload: &pmv1.WebSocketMessage_Error{
				Error: &pmv1.Error{Code: pm.EUnavailable, Message: "database unavailable, retry", RetryAfterMs: 1},
			}})
			return
		}
		sendChunks(t, ws, req.MessageId, 5, true, []*pmv1.WorkItem{task("a", 5)}, []*pmv1.WorkItem{task("b", 5)})
	})
	c := dialFake(t, f, client.Options{})
	list, err := c.GetWorkItems(testContext(t), &pmv1.GetWorkItemsRequest{ProjectId: loadProject})
	if err != nil {
		t.Fatal(err)
	}
	if got := itemIDs(list.WorkItems); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("GetWorkItems = %v; want a, b", got)
	}
}

// A replica whose first load is cut off by a reconnect never holds the
// partial load: it loads again on the new connection and converges.
func TestReplicaLoadCutByReconnect(t *testing.T) {
	f := startFake(t, func(conn int, ws *gws.Conn, req *pmv1.WebSocketMessage) {
		switch p := req.Payload.(type) {
		case *pmv1.WebSocketMessage_Subscribe:
			rev := int64(5)
			if conn > 1 {
				rev = 6
			}
			send(t, ws, &pmv1.WebSocketMessage{MessageId: req.MessageId, Payload: &pmv1.WebSocketMessage_SubscribeAck{
				SubscribeAck: &pmv1.SubscribeAck{ProjectIds: p.Subscribe.ProjectIds, Revisions: map[string]int64{loadProject: rev}},
			}})
		case *pmv1.WebSocketMessage_GetWorkItemsRequest:
			// At revision 5 the project holds a, b and c; revision 6 deleted c.
			switch since := p.GetWorkItemsRequest.SinceRevision; {
			case conn == 1:
				sendChunks(t, ws, req.MessageId, 5, false, []*pmv1.WorkItem{task("a", 2)})
				_ = ws.NetConn().Close()
			case since == 0:
				sendChunks(t, ws, req.MessageId, 6, true, []*pmv1.WorkItem{task("a", 2)}, []*pmv1.WorkItem{task("b", 3)})
			case since < 6:
				gone := task("c", 6)
				gone.DeletedAt = 1
				sendChunks(t, ws, req.MessageId, 6, true, []*pmv1.WorkItem{gone})
			default:
				sendChunks(t, ws, req.MessageId, 6, true, nil)
			}
		}
	})
	c := dialFake(t, f, client.Options{})
	ps, err := c.Subscribe(testContext(t), loadProject)
	if err != nil {
		t.Fatal(err)
	}
	p := ps[0]
	if err := p.WaitRevision(testContext(t), 6); err != nil {
		t.Fatal(err)
	}
	items, rev := p.Items()
	if got := itemIDs(items); !slices.Equal(got, []string{"a", "b"}) || rev != 6 {
		t.Fatalf("replica holds %v at %d; want a, b at 6", got, rev)
	}
}

// Through a real node: a project too big for one frame loads into a
// replica and through GetWorkItems, on one connection.
func TestLargeProjectLoads(t *testing.T) {
	cl := nodetest.Start(t, nodetest.Options{})
	owner := uuid.New()
	c := mustDial(t, cl, cl.Nodes[0].URL(), owner, client.Options{})
	project := mustProject(t, c)
	items := repotest.MustInsertItems(t, cl.DatabaseURL, pm.Actor{Tenant: tenant, User: owner}, uuid.MustParse(project), 270,
		func(i int, w *pm.WorkItem) { w.Description = strings.Repeat("d", pm.DescriptionMaxBytes) })
	want := []string{project}
	for _, w := range items {
		want = append(want, w.ID.String())
	}

	list, err := c.GetWorkItems(testContext(t), &pmv1.GetWorkItemsRequest{ProjectId: project})
	if err != nil {
		t.Fatal(err)
	}
	if got := itemIDs(list.WorkItems); !slices.Equal(got, want) || !list.Complete {
		t.Fatalf("GetWorkItems: %d items (complete %v), want %d", len(got), list.Complete, len(want))
	}
	p := mustSubscribe(t, c, project)
	got, rev := p.Items()
	if !slices.Equal(itemIDs(got), want) || rev != list.AsOfRevision {
		t.Fatalf("replica: %d items at %d, want %d at %d", len(got), rev, len(want), list.AsOfRevision)
	}
	waitConverged(t, cl, owner, p)
	requireOneConnection(t, c)
}

// Chunks of one answer that disagree on the snapshot are refused, never
// joined.
func TestChunksOfDifferentSnapshotsAreRefused(t *testing.T) {
	f := startFake(t, func(_ int, ws *gws.Conn, req *pmv1.WebSocketMessage) {
		sendChunks(t, ws, req.MessageId, 5, false, []*pmv1.WorkItem{task("a", 5)})
		sendChunks(t, ws, req.MessageId, 6, true, []*pmv1.WorkItem{task("b", 6)})
	})
	c := dialFake(t, f, client.Options{})
	list, err := c.GetWorkItems(testContext(t), &pmv1.GetWorkItemsRequest{ProjectId: loadProject})
	if pm.ErrorCode(err) != pm.EInternal {
		t.Fatalf("GetWorkItems = %v, %v; want INTERNAL", list, err)
	}
}
