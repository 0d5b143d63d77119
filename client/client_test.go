package client_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"go.uber.org/goleak"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/client"
	"github.com/pmhq/pm/node"
	"github.com/pmhq/pm/node/nodetest"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

const tenant = "acme"

// timeout bounds every wait of these tests.
const timeout = 30 * time.Second

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	t.Cleanup(cancel)
	return ctx
}

// connectCounts counts the connections of the clients mustDial made
// (*client.Client → *atomic.Int32), through their token source.
var connectCounts sync.Map

// mustDial connects a client for user and closes it when the test ends.
func mustDial(t *testing.T, cl *nodetest.Cluster, url string, user uuid.UUID, opts client.Options) *client.Client {
	t.Helper()
	var n *atomic.Int32
	if opts.Token == "" && opts.TokenSource == nil {
		n = new(atomic.Int32)
		token := cl.Token(tenant, user)
		opts.TokenSource = func(context.Context) (string, error) { n.Add(1); return token, nil }
	}
	c, err := client.Dial(testContext(t), url, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	if n != nil {
		connectCounts.Store(c, n)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// requireOneConnection fails the test if c reconnected: the behaviour
// under test must not rely on a reconnect's resync.
func requireOneConnection(t *testing.T, c *client.Client) {
	t.Helper()
	n, ok := connectCounts.Load(c)
	if !ok {
		t.Fatal("requireOneConnection: client not made by mustDial")
	}
	if got := n.(*atomic.Int32).Load(); got != 1 {
		t.Fatalf("the client connected %d times; want 1", got)
	}
}

// mustProject creates a project owned by c's user.
func mustProject(t *testing.T, c *client.Client) string {
	t.Helper()
	w, err := c.CreateWorkItem(testContext(t), &pmv1.CreateWorkItemRequest{
		ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT, Title: "Project " + t.Name(),
	})
	if err != nil {
		t.Fatalf("create project: %v", err)
	}
	return w.Id
}

func mustAddMember(t *testing.T, c *client.Client, project string, user uuid.UUID, role pmv1.ProjectRole) {
	t.Helper()
	_, err := c.AddProjectMember(testContext(t), &pmv1.AddProjectMemberRequest{ProjectId: project, UserId: user.String(), Role: role})
	if err != nil {
		t.Fatalf("add member: %v", err)
	}
}

func mustCreate(t *testing.T, c *client.Client, project, parent string, typ pmv1.WorkItemType, title string) *pmv1.WorkItem {
	t.Helper()
	w, err := c.CreateWorkItem(testContext(t), &pmv1.CreateWorkItemRequest{
		ProjectId: project, ParentId: parent, ItemType: typ, Title: title,
	})
	if err != nil {
		t.Fatalf("create %q: %v", title, err)
	}
	return w
}

func mustSubscribe(t *testing.T, c *client.Client, project string) *client.Project {
	t.Helper()
	ps, err := c.Subscribe(testContext(t), project)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	return ps[0]
}

// state is a project's live items (id → version) at a revision.
type state struct {
	items    map[string]int64
	revision int64
}

func (s state) String() string { return fmt.Sprintf("rev %d, %d items", s.revision, len(s.items)) }

// storeState reads the truth from Postgres.
func storeState(t *testing.T, cl *nodetest.Cluster, user uuid.UUID, project string) state {
	t.Helper()
	items, snap, err := cl.Store.ListWorkItems(testContext(t), pm.Actor{Tenant: tenant, User: user},
		pm.WorkItemQuery{ProjectID: uuid.MustParse(project)})
	if err != nil {
		t.Fatalf("list from the store: %v", err)
	}
	s := state{items: make(map[string]int64, len(items)), revision: snap.Revision}
	for _, w := range items {
		s.items[w.ID.String()] = w.Version
	}
	return s
}

func replicaState(p *client.Project) state {
	items, rev := p.Items()
	s := state{items: make(map[string]int64, len(items)), revision: rev}
	for _, w := range items {
		s.items[w.Id] = w.Version
	}
	return s
}

// waitConverged waits until the replica equals what Postgres holds. Call it
// once the writes are done.
func waitConverged(t *testing.T, cl *nodetest.Cluster, user uuid.UUID, p *client.Project) {
	t.Helper()
	want := storeState(t, cl, user, p.ID())
	err := p.WaitFor(testContext(t), func(p *client.Project) bool {
		got := replicaState(p)
		return got.revision == want.revision && maps.Equal(got.items, want.items)
	})
	if err != nil {
		t.Fatalf("replica did not converge to the store's %v: has %v: %v", want, replicaState(p), err)
	}
}

func TestCorrelationUnderConcurrency(t *testing.T) {
	cl := nodetest.Start(t, nodetest.Options{})
	owner := uuid.New()
	c := mustDial(t, cl, cl.Nodes[0].URL(), owner, client.Options{})
	project := mustProject(t, c)
	p := mustSubscribe(t, c, project)

	const n = 100
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			id := uuid.NewString()
			title := fmt.Sprintf("task %03d", i)
			w, err := c.CreateWorkItem(testContext(t), &pmv1.CreateWorkItemRequest{
				WorkItemId: id, ProjectId: project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: title,
			})
			switch {
			case err != nil:
				errs <- fmt.Errorf("request %d: %w", i, err)
			case w.Id != id || w.Title != title:
				errs <- fmt.Errorf("request %d got the answer to another request: %s %q", i, w.Id, w.Title)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// The client's own writes reach its replica (the node does not echo them).
	waitConverged(t, cl, owner, p)
	if p.Len() != n+1 {
		t.Fatalf("replica has %d items, want %d tasks and the project", p.Len(), n)
	}
	requireOneConnection(t, c)
}

func TestErrorsArePMErrors(t *testing.T) {
	cl := nodetest.Start(t, nodetest.Options{})
	c := mustDial(t, cl, cl.Nodes[0].URL(), uuid.New(), client.Options{})
	project := mustProject(t, c)
	task := mustCreate(t, c, project, "", pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, "task")
	ctx := testContext(t)

	title := "new title"
	if _, err := c.UpdateWorkItem(ctx, &pmv1.UpdateWorkItemRequest{WorkItemId: task.Id, ExpectedVersion: task.Version, Title: &title}); err != nil {
		t.Fatal(err)
	}
	_, err := c.UpdateWorkItem(ctx, &pmv1.UpdateWorkItemRequest{WorkItemId: task.Id, ExpectedVersion: task.Version, Title: &title})
	var perr *pm.Error
	if !errors.As(err, &perr) {
		t.Fatalf("stale update: error %v (%T), want a *pm.Error", err, err)
	}
	if perr.Code != pm.EConflict || perr.Field != "expected_version" || perr.CurrentVersion != task.Version+1 {
		t.Fatalf("stale update: %+v; want CONFLICT on expected_version with current version %d", perr, task.Version+1)
	}

	_, err = c.CreateWorkItem(ctx, &pmv1.CreateWorkItemRequest{ProjectId: project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "  "})
	if !errors.As(err, &perr) || perr.Code != pm.EValidation || perr.Field != "title" {
		t.Fatalf("empty title: %v; want VALIDATION_ERROR on title", err)
	}

	story := mustCreate(t, c, project, "", pmv1.WorkItemType_WORK_ITEM_TYPE_STORY, "story")
	mustCreate(t, c, project, story.Id, pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, "child")
	_, err = c.DeleteWorkItem(ctx, &pmv1.DeleteWorkItemRequest{WorkItemId: story.Id})
	if pm.ErrorCode(err) != pm.EDeleteBlocked {
		t.Fatalf("delete with a live child: %v; want DELETE_BLOCKED", err)
	}

	// The connection survives errors.
	if _, err := c.GetWorkItems(ctx, &pmv1.GetWorkItemsRequest{ProjectId: project}); err != nil {
		t.Fatalf("after errors: %v", err)
	}
	// A project of nobody's is NOT_FOUND, and subscribing to it subscribes nothing.
	if _, err := c.Subscribe(ctx, uuid.NewString()); pm.ErrorCode(err) != pm.ENotFound {
		t.Fatalf("subscribe to an unknown project: %v; want NOT_FOUND", err)
	}
}

func TestRetriedCreateReturnsTheSameItem(t *testing.T) {
	cl := nodetest.Start(t, nodetest.Options{})
	owner := uuid.New()
	c := mustDial(t, cl, cl.Nodes[0].URL(), owner, client.Options{})
	project := mustProject(t, c)
	ctx := testContext(t)

	r := &pmv1.CreateWorkItemRequest{ProjectId: project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_EPIC, Title: "epic"}
	first, err := c.CreateWorkItem(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if r.WorkItemId == "" || r.WorkItemId != first.Id {
		t.Fatalf("the request's work_item_id %q is not the created item's %q", r.WorkItemId, first.Id)
	}
	before := storeState(t, cl, owner, project)
	// The caller retries the same request (new message_id, same work_item_id).
	again, err := c.CreateWorkItem(ctx, r)
	if err != nil {
		t.Fatalf("retried create: %v", err)
	}
	if again.Id != first.Id || again.Version != first.Version || again.Revision != first.Revision {
		t.Fatalf("retried create returned %v, want the first item %v", again, first)
	}
	// The same message sent again (same message_id) is answered from the ledger.
	m := &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_CreateWorkItemRequest{CreateWorkItemRequest: &pmv1.CreateWorkItemRequest{
		ProjectId: project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "once",
	}}}
	a, err := c.Do(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Do(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	if a.GetWorkItemCreated().GetWorkItem().GetId() != b.GetWorkItemCreated().GetWorkItem().GetId() {
		t.Fatalf("a replayed message_id created another item: %v vs %v", a, b)
	}
	after := storeState(t, cl, owner, project)
	if after.revision != before.revision+1 || len(after.items) != len(before.items)+1 {
		t.Fatalf("store went from %v to %v; want exactly one more item", before, after)
	}
}

func TestListProjects(t *testing.T) {
	cl := nodetest.Start(t, nodetest.Options{})
	c := mustDial(t, cl, cl.Nodes[0].URL(), uuid.New(), client.Options{})
	project := mustProject(t, c)
	mustCreate(t, c, project, "", pmv1.WorkItemType_WORK_ITEM_TYPE_EPIC, "epic")
	projects, err := c.ListProjects(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(projects) != 1 || projects[0].GetProject().GetId() != project || projects[0].GetRole() != pmv1.ProjectRole_PROJECT_ROLE_ADMIN ||
		len(projects[0].GetCounts()) != 1 || projects[0].GetCounts()[0].GetCount() != 1 {
		t.Fatalf("ListProjects = %v", projects)
	}
}

func TestClientsOnTwoNodesConverge(t *testing.T) {
	cl := nodetest.Start(t, nodetest.Options{Nodes: 2})
	alice, bob := uuid.New(), uuid.New()
	a := mustDial(t, cl, cl.Nodes[0].URL(), alice, client.Options{})
	b := mustDial(t, cl, cl.Nodes[1].URL(), bob, client.Options{})
	project := mustProject(t, a)
	mustAddMember(t, a, project, bob, pmv1.ProjectRole_PROJECT_ROLE_EDITOR)
	pa, pb := mustSubscribe(t, a, project), mustSubscribe(t, b, project)

	// Both write at once: creates, updates and deletes interleave across nodes.
	var wg sync.WaitGroup
	for _, c := range []*client.Client{a, b} {
		for w := range 3 {
			wg.Go(func() { burst(t, c, project, w) })
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	waitConverged(t, cl, alice, pa)
	waitConverged(t, cl, bob, pb)
	if !maps.Equal(replicaState(pa).items, replicaState(pb).items) {
		t.Fatal("replicas differ")
	}
	requireOneConnection(t, a)
	requireOneConnection(t, b)
}

// burst creates, moves and deletes items of a project.
func burst(t *testing.T, c *client.Client, project string, worker int) {
	ctx := testContext(t)
	status := pmv1.WorkItemStatus_WORK_ITEM_STATUS_IN_PROGRESS
	for i := range 8 {
		w, err := c.CreateWorkItem(ctx, &pmv1.CreateWorkItemRequest{
			ProjectId: project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: fmt.Sprintf("w%d-%d", worker, i),
		})
		if err != nil {
			t.Errorf("create: %v", err)
			return
		}
		u, err := c.UpdateWorkItem(ctx, &pmv1.UpdateWorkItemRequest{WorkItemId: w.Id, ExpectedVersion: w.Version, Status: &status})
		if err != nil {
			t.Errorf("update: %v", err)
			return
		}
		if i%3 == 0 {
			if _, err := c.DeleteWorkItem(ctx, &pmv1.DeleteWorkItemRequest{WorkItemId: w.Id, ExpectedVersion: u.WorkItem.Version}); err != nil {
				t.Errorf("delete: %v", err)
				return
			}
		}
	}
}

func TestReconnectsToAnotherNodeAndCatchesUp(t *testing.T) {
	cl := nodetest.Start(t, nodetest.Options{Nodes: 2})
	owner, viewer := uuid.New(), uuid.New()
	w := mustDial(t, cl, cl.Nodes[1].URL(), owner, client.Options{})
	project := mustProject(t, w)
	mustAddMember(t, w, project, viewer, pmv1.ProjectRole_PROJECT_ROLE_EDITOR)

	var connects atomic.Int32
	var changes struct {
		sync.Mutex
		seen []string
	}
	v := mustDial(t, cl, cl.Nodes[0].URL(), viewer, client.Options{
		URLs:        []string{cl.Nodes[1].URL()},
		TokenSource: func(context.Context) (string, error) { connects.Add(1); return cl.Token(tenant, viewer), nil },
		OnConnectionChange: func(connected bool, url string) {
			changes.Lock()
			defer changes.Unlock()
			changes.seen = append(changes.seen, fmt.Sprintf("%v %s", connected, url))
		},
	})
	p := mustSubscribe(t, v, project)
	for i := range 5 {
		mustCreate(t, w, project, "", pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, fmt.Sprintf("before %d", i))
	}
	waitConverged(t, cl, viewer, p)

	// The writer keeps writing while the viewer's node goes away.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 30 {
			mustCreate(t, w, project, "", pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, fmt.Sprintf("during %d", i))
		}
	}()
	cl.Nodes[0].Stop()
	// A request made while the client reconnects goes out on the new connection.
	mine, err := v.CreateWorkItem(testContext(t), &pmv1.CreateWorkItemRequest{
		ProjectId: project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "from the viewer",
	})
	if err != nil {
		t.Fatalf("create during failover: %v", err)
	}
	<-done
	waitConverged(t, cl, viewer, p)
	if p.Get(mine.Id) == nil {
		t.Fatal("the viewer's own item is missing from its replica")
	}
	if connects.Load() < 2 {
		t.Fatalf("token source asked %d times; want a reconnect", connects.Load())
	}
	changes.Lock()
	defer changes.Unlock()
	if want := []string{"false " + cl.Nodes[0].URL(), "true " + cl.Nodes[1].URL()}; !slices.Equal(changes.seen, want) {
		t.Fatalf("connection changes %q, want %q", changes.seen, want)
	}
	if err := p.Err(); err != nil {
		t.Fatalf("replica ended: %v", err)
	}
}

func TestResyncAfterGap(t *testing.T) {
	cl := nodetest.Start(t, nodetest.Options{})
	owner := uuid.New()
	c := mustDial(t, cl, cl.Nodes[0].URL(), owner, client.Options{})
	project := mustProject(t, c)
	p := mustSubscribe(t, c, project)
	other := mustDial(t, cl, cl.Nodes[0].URL(), owner, client.Options{})

	// A write that publishes no event (straight to Postgres) leaves a hole in
	// the revisions the client sees; the next event reveals it.
	hidden, _, err := cl.Store.CreateWorkItem(testContext(t), pm.Actor{Tenant: tenant, User: owner}, pm.NewWorkItem{
		ProjectID: uuid.MustParse(project), Type: pm.TypeTask, Title: "written behind the nodes' back",
	})
	if err != nil {
		t.Fatal(err)
	}
	seen := mustCreate(t, other, project, "", pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, "published")
	if seen.Revision != hidden.Revision+1 {
		t.Fatalf("revisions %d, %d: the test needs adjacent writes", hidden.Revision, seen.Revision)
	}
	waitConverged(t, cl, owner, p)
	if p.Get(hidden.ID.String()) == nil {
		t.Fatal("the item behind the gap is missing")
	}
	requireOneConnection(t, c)
}

func TestSlowConsumerReconnectsAndResyncs(t *testing.T) {
	// node-2 closes any connection whose queue exceeds 4 KiB (4000); node-1
	// has the default limit.
	cl := nodetest.Start(t, nodetest.Options{Nodes: 2, Configure: func(cfg *node.Config) {
		if cfg.NodeID == "node-2" {
			cfg.SendQueueBytes = 4 << 10
		}
	}})
	owner := uuid.New()
	w := mustDial(t, cl, cl.Nodes[0].URL(), owner, client.Options{})
	project := mustProject(t, w)
	v := mustDial(t, cl, cl.Nodes[1].URL(), owner, client.Options{URLs: []string{cl.Nodes[0].URL()}})
	p := mustSubscribe(t, v, project)

	// An event bigger than node-2's queue: it drops the viewer with 4000.
	_, err := w.CreateWorkItem(testContext(t), &pmv1.CreateWorkItemRequest{
		ProjectId: project, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "big",
		Description: strings.Repeat("x", 8<<10),
	})
	if err != nil {
		t.Fatal(err)
	}
	waitConverged(t, cl, owner, p)
}

func TestRefusedToken(t *testing.T) {
	cl := nodetest.Start(t, nodetest.Options{})
	_, err := client.Dial(testContext(t), cl.Nodes[0].URL(), client.Options{Token: "not-a-token"})
	if pm.ErrorCode(err) != pm.EUnauthorized {
		t.Fatalf("dial with a bad token: %v; want UNAUTHORIZED", err)
	}
	if _, err := client.Dial(testContext(t), cl.Nodes[0].URL(), client.Options{}); err == nil {
		t.Fatal("dial without a token succeeded")
	}
}

func TestExpiredTokenStopsTheClient(t *testing.T) {
	cl := nodetest.Start(t, nodetest.Options{})
	user := uuid.New()
	short := func() string {
		return cl.TokenWith(jwt.MapClaims{
			"sub": user.String(), "tenant_id": tenant,
			"iat": time.Now().Unix(), "exp": time.Now().Add(1500 * time.Millisecond).Unix(),
		})
	}
	c := mustDial(t, cl, cl.Nodes[0].URL(), user, client.Options{Token: short()})
	select {
	case <-c.Done():
	case <-testContext(t).Done():
		t.Fatal("the client kept running after its token expired")
	}
	var ce *client.CloseError
	if !errors.As(c.Err(), &ce) || ce.Code != 4500 {
		t.Fatalf("Err = %v; want a CloseError 4500", c.Err())
	}
	if _, err := c.GetWorkItems(testContext(t), &pmv1.GetWorkItemsRequest{ProjectId: uuid.NewString()}); !errors.As(err, &ce) {
		t.Fatalf("call after the stop: %v; want the CloseError", err)
	}

	// With a token source, the client gets a new token (in band, before
	// the expiry) and carries on.
	var calls atomic.Int32
	refreshed := make(chan struct{})
	r := mustDial(t, cl, cl.Nodes[0].URL(), user, client.Options{TokenSource: func(context.Context) (string, error) {
		switch calls.Add(1) {
		case 1:
			return short(), nil
		case 2:
			close(refreshed)
		}
		return cl.Token(tenant, user), nil
	}})
	project := mustProject(t, r)
	select {
	case <-refreshed:
	case <-testContext(t).Done():
		t.Fatal("the token source was not asked again")
	}
	if _, err := r.GetWorkItems(testContext(t), &pmv1.GetWorkItemsRequest{ProjectId: project}); err != nil {
		t.Fatalf("after a token refresh: %v", err)
	}
	if r.Err() != nil {
		t.Fatalf("client stopped: %v", r.Err())
	}
}

func TestRevokedSubscriptionEndsTheReplica(t *testing.T) {
	cl := nodetest.Start(t, nodetest.Options{})
	admin, member := uuid.New(), uuid.New()
	a := mustDial(t, cl, cl.Nodes[0].URL(), admin, client.Options{})
	project := mustProject(t, a)
	mustAddMember(t, a, project, member, pmv1.ProjectRole_PROJECT_ROLE_VIEWER)
	m := mustDial(t, cl, cl.Nodes[0].URL(), member, client.Options{})
	p := mustSubscribe(t, m, project)
	if _, err := a.RemoveProjectMember(testContext(t), &pmv1.RemoveProjectMemberRequest{ProjectId: project, UserId: member.String()}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-testContext(t).Done():
		t.Fatal("replica still live after the member was removed")
	}
	if !errors.Is(p.Err(), client.ErrSubscriptionRevoked) {
		t.Fatalf("replica ended with %v; want ErrSubscriptionRevoked", p.Err())
	}
	if m.Project(project) != nil {
		t.Fatal("the client still lists the revoked project")
	}
}

func TestUnsubscribe(t *testing.T) {
	cl := nodetest.Start(t, nodetest.Options{})
	owner := uuid.New()
	c := mustDial(t, cl, cl.Nodes[0].URL(), owner, client.Options{})
	project := mustProject(t, c)
	p := mustSubscribe(t, c, project)
	if again := mustSubscribe(t, c, project); again != p {
		t.Fatal("a second Subscribe made a second replica")
	}
	if err := c.Unsubscribe(testContext(t), project); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(p.Err(), client.ErrUnsubscribed) || c.Project(project) != nil {
		t.Fatalf("after Unsubscribe: replica err %v, listed %v", p.Err(), c.Project(project) != nil)
	}
}

func TestCloseLeaksNoGoroutines(t *testing.T) {
	cl := nodetest.Start(t, nodetest.Options{Nodes: 2})
	owner := uuid.New()
	setup := mustDial(t, cl, cl.Nodes[0].URL(), owner, client.Options{})
	project := mustProject(t, setup)
	ignore := goleak.IgnoreCurrent()

	c, err := client.Dial(testContext(t), cl.Nodes[0].URL(), client.Options{
		Token: cl.Token(tenant, owner), URLs: []string{cl.Nodes[1].URL()},
	})
	if err != nil {
		t.Fatal(err)
	}
	p := mustSubscribe(t, c, project)
	mustCreate(t, c, project, "", pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, "task")
	// A call in flight when Close comes ends with ErrClosed.
	blocked := make(chan error, 1)
	go func() {
		_, err := c.Do(context.Background(), &pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_Subscribe{
			Subscribe: &pmv1.Subscribe{ProjectIds: []string{project}},
		}})
		blocked <- err
	}()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := <-blocked; err != nil && !errors.Is(err, client.ErrClosed) {
		t.Fatalf("call during Close: %v; want nil or ErrClosed", err)
	}
	if !errors.Is(p.Err(), client.ErrClosed) || !errors.Is(c.Err(), client.ErrClosed) {
		t.Fatalf("after Close: replica %v, client %v", p.Err(), c.Err())
	}
	if _, err := c.GetWorkItems(testContext(t), &pmv1.GetWorkItemsRequest{ProjectId: project}); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("call after Close: %v", err)
	}
	goleak.VerifyNone(t, ignore)
}

func TestIdleConnectionSurvivesPings(t *testing.T) {
	cl := nodetest.Start(t, nodetest.Options{Configure: func(cfg *node.Config) { cfg.WriteTimeout = 100 * time.Millisecond }})
	owner := uuid.New()
	c := mustDial(t, cl, cl.Nodes[0].URL(), owner, client.Options{PingInterval: 50 * time.Millisecond})
	mustProject(t, c)
	// Idle for several write timeouts: what is tested is that nothing happens.
	idle := time.NewTimer(time.Second)
	defer idle.Stop()
	select {
	case <-idle.C:
	case <-c.Done():
		t.Fatalf("client stopped: %v", c.Err())
	}
	requireOneConnection(t, c)
}

// A node refusing the upgrade for a limit is reported as a *RefusedError
// with its status and Retry-After, which reconnects wait out.
func TestRefusalForALimit(t *testing.T) {
	cl := nodetest.Start(t, nodetest.Options{Configure: func(cfg *node.Config) { cfg.MaxConnections = 1 }})
	mustDial(t, cl, cl.Nodes[0].URL(), uuid.New(), client.Options{})
	_, err := client.Dial(testContext(t), cl.Nodes[0].URL(), client.Options{Token: cl.Token(tenant, uuid.New())})
	ref, ok := errors.AsType[*client.RefusedError](err)
	if !ok {
		t.Fatalf("dial to a full node: %v; want a *client.RefusedError", err)
	}
	if ref.Status != http.StatusServiceUnavailable || ref.RetryAfter < time.Second || ref.RetryAfter > 5*time.Second {
		t.Fatalf("refusal: HTTP %d, retry after %v; want 503 after 1–5s", ref.Status, ref.RetryAfter)
	}
}
