package node_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/node"
	"github.com/pmhq/pm/node/nodetest"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
	"github.com/pmhq/pm/pubsub"
)

// Two nodes sharing Postgres and Redis behave as one service.

func TestEventsCrossNodes(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{Nodes: 2})
	tenant, alice, bob := "acme", uuid.New(), uuid.New()
	a1 := nodetest.Dial(t, c.Nodes[0].URL(), c.Token(tenant, alice))
	b2 := nodetest.Dial(t, c.Nodes[1].URL(), c.Token(tenant, bob))
	project := mustCreate(t, a1, &pmv1.CreateWorkItemRequest{ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT, Title: "P"})
	resp, _ := a1.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_AddProjectMemberRequest{AddProjectMemberRequest: &pmv1.AddProjectMemberRequest{
		ProjectId: project.Id, UserId: bob.String(), Role: pmv1.ProjectRole_PROJECT_ROLE_EDITOR}}})
	if resp.GetProjectMemberChanged() == nil {
		t.Fatal(resp)
	}
	ack := subscribe(t, b2, project.Id)
	// Alice's second connection, on node 2 too: a user's other tabs get events.
	a2 := nodetest.Dial(t, c.Nodes[1].URL(), c.Token(tenant, alice))
	subscribe(t, a2, project.Id)

	task := mustCreate(t, a1, &pmv1.CreateWorkItemRequest{ProjectId: project.Id, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "cross"})
	for _, conn := range []*nodetest.Conn{b2, a2} {
		ev := conn.Next(wait).GetWorkItemCreated()
		if ev.GetWorkItem().GetId() != task.Id || ev.WorkItem.Revision != ack.Revisions[project.Id]+1 {
			t.Fatalf("event on node 2: %v", ev)
		}
	}

	// Concurrent conflicting updates through both nodes: exactly one wins.
	var wg sync.WaitGroup
	results := make([]*pmv1.WebSocketMessage, 2)
	for i, conn := range []*nodetest.Conn{a1, b2} {
		wg.Go(func() {
			results[i] = update(conn, &pmv1.UpdateWorkItemRequest{WorkItemId: task.Id, ExpectedVersion: 1, Title: proto.String("by " + string(rune('A'+i)))})
		})
	}
	wg.Wait()
	wins := 0
	for _, r := range results {
		switch {
		case r.GetWorkItemUpdated() != nil:
			wins++
		case r.GetError().GetCode() == pm.EConflict && r.GetError().CurrentVersion == 2:
		default:
			t.Fatalf("unexpected answer %v", r)
		}
	}
	if wins != 1 {
		t.Fatalf("%d updates won", wins)
	}
}

func TestIdempotentRetryOnAnotherNode(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{Nodes: 2})
	user := uuid.New()
	conn1 := nodetest.Dial(t, c.Nodes[0].URL(), c.Token("acme", user))
	project := mustCreate(t, conn1, &pmv1.CreateWorkItemRequest{ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT, Title: "P"})
	req := func() *pmv1.WebSocketMessage {
		return &pmv1.WebSocketMessage{MessageId: "retry-me", Payload: &pmv1.WebSocketMessage_CreateWorkItemRequest{
			CreateWorkItemRequest: &pmv1.CreateWorkItemRequest{ProjectId: project.Id, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "once"}}}
	}
	first, _ := conn1.Request(req())
	conn2 := nodetest.Dial(t, c.Nodes[1].URL(), c.Token("acme", user))
	again, _ := conn2.Request(req())
	if first.GetWorkItemCreated() == nil || !proto.Equal(first, again) {
		t.Fatalf("retry on node 2 differs:\n%v\n%v", first, again)
	}

	// Ten concurrent duplicates over both nodes: one row.
	conns := make([]*nodetest.Conn, 10)
	for i := range conns {
		conns[i] = nodetest.Dial(t, c.Nodes[i%2].URL(), c.Token("acme", user))
	}
	dup := func() *pmv1.WebSocketMessage {
		return &pmv1.WebSocketMessage{MessageId: "dup", Payload: &pmv1.WebSocketMessage_CreateWorkItemRequest{
			CreateWorkItemRequest: &pmv1.CreateWorkItemRequest{ProjectId: project.Id, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "dup"}}}
	}
	answers := make([]*pmv1.WebSocketMessage, len(conns))
	var wg sync.WaitGroup
	for i, conn := range conns {
		wg.Go(func() { answers[i], _ = conn.Request(dup()) })
	}
	wg.Wait()
	var created *pmv1.WorkItem
	for _, a := range answers {
		switch {
		case a.GetWorkItemCreated() != nil:
			if created != nil && a.GetWorkItemCreated().WorkItem.Id != created.Id {
				t.Fatalf("two different items for one message_id: %v and %v", created, a)
			}
			created = a.GetWorkItemCreated().WorkItem
		case a.GetError().GetCode() == pm.EUnavailable: // still running: the documented retryable answer
		default:
			t.Fatalf("unexpected answer %v", a)
		}
	}
	list := get(conn1, &pmv1.GetWorkItemsRequest{ProjectId: project.Id}).GetWorkItemsList()
	dups := 0
	for _, w := range list.WorkItems {
		if w.Title == "dup" {
			dups++
		}
	}
	if dups != 1 || created == nil {
		t.Fatalf("%d rows for ten duplicates", dups)
	}
}

func TestMemberRemovalRevokesOnEveryNode(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{Nodes: 2})
	admin, viewer := uuid.New(), uuid.New()
	adminConn := nodetest.Dial(t, c.Nodes[0].URL(), c.Token("acme", admin))
	project := mustCreate(t, adminConn, &pmv1.CreateWorkItemRequest{ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT, Title: "P"})
	member := func(m *pmv1.WebSocketMessage) {
		t.Helper()
		if resp, _ := adminConn.Request(m); resp.GetProjectMemberChanged() == nil {
			t.Fatal(resp)
		}
	}
	member(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_AddProjectMemberRequest{AddProjectMemberRequest: &pmv1.AddProjectMemberRequest{
		ProjectId: project.Id, UserId: viewer.String(), Role: pmv1.ProjectRole_PROJECT_ROLE_VIEWER}}})
	v1 := nodetest.Dial(t, c.Nodes[0].URL(), c.Token("acme", viewer))
	v2 := nodetest.Dial(t, c.Nodes[1].URL(), c.Token("acme", viewer))
	subscribe(t, v1, project.Id)
	subscribe(t, v2, project.Id)
	member(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_RemoveProjectMemberRequest{RemoveProjectMemberRequest: &pmv1.RemoveProjectMemberRequest{
		ProjectId: project.Id, UserId: viewer.String()}}})
	for _, conn := range []*nodetest.Conn{v1, v2} {
		if got := conn.Next(wait).GetSubscriptionRevoked(); got.GetProjectId() != project.Id {
			t.Fatalf("want SubscriptionRevoked, got %v", got)
		}
	}
	// No further events reach them.
	mustCreate(t, adminConn, &pmv1.CreateWorkItemRequest{ProjectId: project.Id, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "secret"})
	for _, conn := range []*nodetest.Conn{v1, v2} {
		resp, others := conn.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_ListProjectMembersRequest{
			ListProjectMembersRequest: &pmv1.ListProjectMembersRequest{ProjectId: project.Id}}})
		if len(others) != 0 {
			t.Fatalf("removed member still got %v", others)
		}
		wantError(t, resp, pm.EUnauthorized, "")
	}
}

// A change that never reached Redis (here: written straight to the store)
// is caught by the periodic head check; the resync notice also makes the
// node check the subscriber's role again, so a removal whose notice was
// lost still ends the subscription.
func TestHeadCheckRepairsLostEvents(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{Nodes: 2, HeadCheckInterval: 100 * time.Millisecond})
	admin, viewer := uuid.New(), uuid.New()
	adminConn := nodetest.Dial(t, c.Nodes[0].URL(), c.Token("acme", admin))
	project := mustCreate(t, adminConn, &pmv1.CreateWorkItemRequest{ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT, Title: "P"})
	projectID := uuid.MustParse(project.Id)
	actor := pm.Actor{Tenant: "acme", User: admin}
	ctx := context.Background()
	if _, err := c.Store.PutMember(ctx, actor, projectID, viewer, pm.RoleViewer); err != nil {
		t.Fatal(err)
	}
	v := nodetest.Dial(t, c.Nodes[1].URL(), c.Token("acme", viewer))
	subscribe(t, v, project.Id)

	// Lost: a create nobody published.
	if _, _, err := c.Store.CreateWorkItem(ctx, actor, pm.NewWorkItem{ProjectID: projectID, Type: pm.TypeTask, Title: "silent"}); err != nil {
		t.Fatal(err)
	}
	if got := v.Next(wait).GetResyncRequired(); len(got.GetProjectIds()) != 1 || got.ProjectIds[0] != project.Id {
		t.Fatalf("want ResyncRequired, got %v", got)
	}

	// Lost: a removal nobody published, then another silent change.
	if _, err := c.Store.RemoveMember(ctx, actor, projectID, viewer); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Store.CreateWorkItem(ctx, actor, pm.NewWorkItem{ProjectID: projectID, Type: pm.TypeTask, Title: "silent 2"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(wait)
	for {
		m := v.Next(time.Until(deadline))
		if r := m.GetSubscriptionRevoked(); r != nil {
			if r.ProjectId != project.Id {
				t.Fatalf("revoked %v", r)
			}
			break
		}
		if m.GetResyncRequired() == nil {
			t.Fatalf("unexpected %v", m)
		}
	}
}

// With Redis out of reach, writes still commit, subscribers on the writer's
// node still see them, and creates stay idempotent through client ids.
func TestRedisDownDegradesGracefully(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := ln.Addr().String()
	ln.Close()
	dead := redis.NewClient(&redis.Options{Addr: deadAddr, DialTimeout: 100 * time.Millisecond, MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = dead.Close() })
	c := nodetest.Start(t, nodetest.Options{Configure: func(cfg *node.Config) {
		hub, err := pubsub.NewHub(pubsub.HubConfig{Redis: dead, Prefix: nodetest.RandomPrefix(), HeadCheckInterval: -1, Logger: cfg.Logger, Registerer: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = hub.Close() })
		ledger, err := pubsub.NewLedger(pubsub.LedgerConfig{Redis: dead, Logger: cfg.Logger, Registerer: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Fanout, cfg.Idempotency = hub, ledger
	}})
	user := uuid.New()
	author := nodetest.Dial(t, c.Nodes[0].URL(), c.Token("acme", user))
	watcher := nodetest.Dial(t, c.Nodes[0].URL(), c.Token("acme", user))
	project := mustCreate(t, author, &pmv1.CreateWorkItemRequest{ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT, Title: "P"})
	subscribe(t, watcher, project.Id) // degraded: served before Redis confirms

	req := func() *pmv1.WebSocketMessage {
		return &pmv1.WebSocketMessage{MessageId: "same", Payload: &pmv1.WebSocketMessage_CreateWorkItemRequest{CreateWorkItemRequest: &pmv1.CreateWorkItemRequest{
			WorkItemId: "0b8f6c1e-3a52-4c1b-9a55-6d1e7f3a2b10", ProjectId: project.Id, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "offline"}}}
	}
	first, _ := author.Request(req())
	again, _ := author.Request(req())
	if first.GetWorkItemCreated() == nil || again.GetWorkItemCreated().GetWorkItem().GetId() != first.GetWorkItemCreated().WorkItem.Id {
		t.Fatalf("creates without Redis: %v / %v", first, again)
	}
	if ev := watcher.Next(wait).GetWorkItemCreated(); ev.GetWorkItem().GetId() != first.GetWorkItemCreated().WorkItem.Id {
		t.Fatalf("local subscriber: %v", ev)
	}
	list := get(author, &pmv1.GetWorkItemsRequest{ProjectId: project.Id}).GetWorkItemsList()
	if len(list.WorkItems) != 2 {
		t.Fatalf("%d items, want project and one task", len(list.WorkItems))
	}
}

// Two nodes started on one host without PM_NODE_ID share a node name (the
// host name); subscriber ids must still differ, or the author-skip of one
// node's writer drops a subscriber on the other node with the same sequence
// number.
func TestUnnamedNodesOnOneHostDeliverToEachOther(t *testing.T) {
	c := nodetest.Start(t, nodetest.Options{Nodes: 2, Configure: func(cfg *node.Config) { cfg.NodeID = "same-host" }})
	tenant, alice, bob := "acme", uuid.New(), uuid.New()
	// The first connection of each node: the same sequence number on both.
	a1 := nodetest.Dial(t, c.Nodes[0].URL(), c.Token(tenant, alice))
	project := mustCreate(t, a1, &pmv1.CreateWorkItemRequest{ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT, Title: "P"})
	addMember(t, a1, project.Id, bob, pmv1.ProjectRole_PROJECT_ROLE_EDITOR)
	b2 := nodetest.Dial(t, c.Nodes[1].URL(), c.Token(tenant, bob))
	subscribe(t, a1, project.Id)
	subscribe(t, b2, project.Id)

	task := mustCreate(t, a1, &pmv1.CreateWorkItemRequest{ProjectId: project.Id, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "seen on node 2"})
	if got := b2.Next(wait).GetWorkItemCreated().GetWorkItem(); got.GetId() != task.Id {
		t.Fatalf("subscriber on the other node: want the create of %s, got %v", task.Id, got)
	}
	upd := update(a1, &pmv1.UpdateWorkItemRequest{WorkItemId: task.Id, ExpectedVersion: 1, Title: proto.String("renamed")})
	if upd.GetWorkItemUpdated() == nil {
		t.Fatal(upd)
	}
	if got := b2.Next(wait).GetWorkItemUpdated().GetWorkItem(); got.GetTitle() != "renamed" {
		t.Fatalf("subscriber on the other node: want the update, got %v", got)
	}
}
