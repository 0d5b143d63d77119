package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/node"
	"github.com/pmhq/pm/node/nodetest"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// revisionGate holds the first ProjectRevision call for a project after it
// has read the database, until the test opens the gate: the window between a
// subscribe's read and the rest of the subscribe, held open.
type revisionGate struct {
	node.Store
	project uuid.UUID
	held    chan struct{} // closed when a call is held
	open    chan struct{} // close to let it return
	ended   chan struct{} // closed if the held call's context ends first
	armed   chan struct{} // one token: hold only the first call
}

func newRevisionGate(s node.Store, project uuid.UUID) *revisionGate {
	g := &revisionGate{Store: s, project: project, held: make(chan struct{}), open: make(chan struct{}), ended: make(chan struct{}), armed: make(chan struct{}, 1)}
	g.armed <- struct{}{}
	return g
}

func (g *revisionGate) ProjectRevision(ctx context.Context, actor pm.Actor, project uuid.UUID) (int64, error) {
	rev, err := g.Store.ProjectRevision(ctx, actor, project)
	if project != g.project {
		return rev, err
	}
	select {
	case <-g.armed:
	default:
		return rev, err
	}
	close(g.held)
	select {
	case <-g.open:
	case <-ctx.Done():
		close(g.ended)
		<-g.open
	}
	return rev, err
}

// gatedCluster starts one node whose store holds the first ProjectRevision of
// a project the test creates through a second, ungated node.
func gatedCluster(t *testing.T) (c *nodetest.Cluster, gate *revisionGate, project string, admin *nodetest.Conn, adminID uuid.UUID, tenant string) {
	t.Helper()
	projectID := uuid.New()
	c = nodetest.Start(t, nodetest.Options{Nodes: 2, Configure: func(cfg *node.Config) {
		if gate == nil {
			gate = newRevisionGate(cfg.Store, projectID)
			cfg.Store = gate
		}
	}})
	tenant = "acme-" + uuid.NewString()[:8]
	adminID = uuid.New()
	admin = nodetest.Dial(t, c.Nodes[1].URL(), c.Token(tenant, adminID))
	p := mustCreate(t, admin, &pmv1.CreateWorkItemRequest{WorkItemId: projectID.String(), ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT, Title: "P"})
	return c, gate, p.Id, admin, adminID, tenant
}

// waitMetricIs waits until a node's metric has a value.
func waitMetricIs(t *testing.T, n *nodetest.Node, name string, want float64) {
	t.Helper()
	waitMetric(t, fmt.Sprintf("%s = %v (now %v)", name, want, n.Metric(name)), func() bool { return n.Metric(name) == want })
}

// A member removed while its subscribe is under way must not keep the
// subscription: neither through a removal notice published before the node
// listened to the project, nor through a subscribe that failed half way.
func TestRemovalDuringSubscribeEndsTheSubscription(t *testing.T) {
	c, gate, project, admin, _, tenant := gatedCluster(t)
	viewer := uuid.New()
	addMember(t, admin, project, viewer, pmv1.ProjectRole_PROJECT_ROLE_VIEWER)
	conn := nodetest.Dial(t, c.Nodes[0].URL(), c.Token(tenant, viewer))
	id := conn.Send(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_Subscribe{Subscribe: &pmv1.Subscribe{ProjectIds: []string{project}}}})
	<-gate.held // the subscribe has read the viewer's role
	resp, _ := admin.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_RemoveProjectMemberRequest{
		RemoveProjectMemberRequest: &pmv1.RemoveProjectMemberRequest{ProjectId: project, UserId: viewer.String()}}})
	if resp.GetError() != nil {
		t.Fatal(resp)
	}
	close(gate.open)
	// The removal committed after the subscribe read the role: either the
	// subscribe fails, or it succeeds and the removal revokes it.
	var answer *pmv1.WebSocketMessage
	revoked := false
	for answer == nil {
		m := conn.Next(wait)
		revoked = revoked || m.GetSubscriptionRevoked().GetProjectId() == project
		if m.MessageId == id {
			answer = m
		}
	}
	if answer.GetSubscribeAck() != nil {
		if !revoked && conn.Next(wait).GetSubscriptionRevoked().GetProjectId() != project {
			t.Fatal("subscribe acknowledged and never revoked after the removal")
		}
	} else {
		wantError(t, answer, pm.EUnauthorized, "")
	}

	// A member's connection on the same node sees the next event; by then
	// the removed viewer would have had it too.
	member := uuid.New()
	addMember(t, admin, project, member, pmv1.ProjectRole_PROJECT_ROLE_VIEWER)
	other := nodetest.Dial(t, c.Nodes[0].URL(), c.Token(tenant, member))
	subscribe(t, other, project)
	task := mustCreate(t, admin, &pmv1.CreateWorkItemRequest{ProjectId: project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "secret"})
	if got := other.Next(wait).GetWorkItemCreated().GetWorkItem(); got.GetId() != task.Id {
		t.Fatalf("member: %v", got)
	}
	list, others := conn.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_ListProjectMembersRequest{
		ListProjectMembersRequest: &pmv1.ListProjectMembersRequest{ProjectId: project}}})
	for _, m := range others {
		if m.GetWorkItemCreated() != nil || m.GetWorkItemUpdated() != nil {
			t.Fatalf("removed member received %v", m)
		}
	}
	wantError(t, list, pm.EUnauthorized, "")
	waitMetricIs(t, c.Nodes[0], "pm_pubsub_local_subscriptions", 1) // the member's only
}

// A connection that closes while its subscribe runs leaves nothing in the
// node's subscription table.
func TestCloseDuringSubscribeLeavesNoSubscription(t *testing.T) {
	c, gate, project, _, admin, tenant := gatedCluster(t)
	// The project's admin subscribes on node 1 and hangs up meanwhile.
	conn := nodetest.Dial(t, c.Nodes[0].URL(), c.Token(tenant, admin))
	conn.Send(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_Subscribe{Subscribe: &pmv1.Subscribe{ProjectIds: []string{project}}}})
	<-gate.held
	conn.Close()
	select {
	case <-gate.ended:
	case <-time.After(wait):
		close(gate.open)
		t.Fatal("the request's context did not end with its connection")
	}
	close(gate.open)
	waitMetricIs(t, c.Nodes[0], "pm_connections", 0)
	if n := c.Nodes[0].Metric("pm_pubsub_local_subscriptions"); n != 0 {
		t.Fatalf("%v subscriptions left behind by a closed connection", n)
	}
}
