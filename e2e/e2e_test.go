package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"io"
	"io/fs"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/client"
	"github.com/pmhq/pm/migrations"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// Short names for the enums the tests use most.
const (
	epicType  = pmv1.WorkItemType_WORK_ITEM_TYPE_EPIC
	storyType = pmv1.WorkItemType_WORK_ITEM_TYPE_STORY
	taskType  = pmv1.WorkItemType_WORK_ITEM_TYPE_TASK
	viewer    = pmv1.ProjectRole_PROJECT_ROLE_VIEWER
	editor    = pmv1.ProjectRole_PROJECT_ROLE_EDITOR
)

// Several nodes starting at once against an empty database all come up:
// they take turns on the migration lock, and the schema ends up at the
// newest version, clean.
func TestConcurrentStartMigratesOnce(t *testing.T) {
	c := startCluster(t, options{nodes: 3})
	want := 0
	entries, err := fs.Glob(migrations.FS, "*.up.sql")
	if err != nil || len(entries) == 0 {
		t.Fatalf("no migrations embedded (%v)", err)
	}
	for _, e := range entries {
		v, err := strconv.Atoi(e[:strings.IndexByte(e, '_')])
		if err != nil {
			t.Fatalf("migration file %s: %v", e, err)
		}
		want = max(want, v)
	}
	var version int
	var dirty bool
	var rows int
	if err := c.admin.QueryRow(tctx(t), `SELECT max(version), bool_or(dirty), count(*) FROM schema_migrations`).Scan(&version, &dirty, &rows); err != nil {
		t.Fatal(err)
	}
	if version != want || dirty || rows != 1 {
		t.Fatalf("schema_migrations: version %d dirty %v (%d rows), want version %d clean", version, dirty, rows, want)
	}
	// And the cluster serves: a write through one node is read through another.
	u := newUser(newTenant(), "alice")
	p := createProject(t, c.dial(t, c.nodes[2].URL(), u), "after migration")
	if _, err := c.dial(t, c.nodes[0].URL(), u).GetWorkItems(tctx(t), &pmv1.GetWorkItemsRequest{ProjectId: p.Id}); err != nil {
		t.Fatal(err)
	}
}

// 1. A client that subscribes to a project with a history loads exactly
// what the database holds.
func TestInitialLoad(t *testing.T) {
	c := startCluster(t, options{})
	tenant := newTenant()
	alice, bob := newUser(tenant, "alice"), newUser(tenant, "bob")
	a := c.dial(t, c.nodes[0].URL(), alice)
	project := createProject(t, a, "Initial load")
	addMember(t, a, project.Id, bob, viewer)

	// A board with a history: a hierarchy, renames, deletions.
	var tasks []*pmv1.WorkItem
	for e := range 2 {
		epic := create(t, a, project.Id, "", epicType, "epic "+strconv.Itoa(e))
		for s := range 2 {
			story := create(t, a, project.Id, epic.Id, storyType, "story "+strconv.Itoa(s))
			for k := range 3 {
				tasks = append(tasks, create(t, a, project.Id, story.Id, taskType, "task "+strconv.Itoa(k)))
			}
		}
	}
	for i, w := range tasks[:4] {
		tasks[i] = retitle(t, a, w, w.Title+" (renamed)")
	}
	remove(t, a, tasks[0])
	remove(t, a, tasks[5])

	b := c.dial(t, c.nodes[1].URL(), bob)
	p := subscribe(t, b, project.Id)
	// Subscribe returns once the replica is loaded: no waiting.
	head, rows := c.dbProject(t, project.Id)
	items, rev := p.Items()
	if d := diffDB(items, rev, head, rows); d != "" {
		t.Fatalf("replica after Subscribe differs from the database:\n%s", d)
	}
	if want := 1 + 2 + 4 + 12 - 2; len(items) != want {
		t.Fatalf("replica has %d items, want %d", len(items), want)
	}
	c.assertConverged(t, p, a)
}

// 2. A create through node 1 reaches a subscriber on node 2 within a second.
func TestCreateSeenOnOtherNodeWithinASecond(t *testing.T) {
	c := startCluster(t, options{})
	tenant := newTenant()
	alice, bob := newUser(tenant, "alice"), newUser(tenant, "bob")
	a := c.dial(t, c.nodes[0].URL(), alice)
	project := createProject(t, a, "Latency")
	addMember(t, a, project.Id, bob, viewer)
	p := subscribe(t, c.dial(t, c.nodes[1].URL(), bob), project.Id)

	const samples = 10
	var lat []time.Duration
	for i := range samples {
		start := time.Now()
		w := create(t, a, project.Id, "", taskType, "card "+strconv.Itoa(i))
		waitFor(t, p, "the card on node 2", func(p *client.Project) bool { return p.Get(w.Id) != nil })
		lat = append(lat, time.Since(start))
		if got := p.Get(w.Id); !proto.Equal(got, w) {
			t.Fatalf("node 2 sees %v, node 1 answered %v", got, w)
		}
	}
	slices.Sort(lat)
	t.Logf("create on node 1 → visible on node 2: min %v, median %v, max %v", lat[0], lat[samples/2], lat[samples-1])
	if lat[samples-1] >= time.Second {
		t.Fatalf("a create took %v to reach node 2, want < 1s (all: %v)", lat[samples-1], lat)
	}
}

// 3. A client that joins later converges to the replica of one that
// watched every change, and both follow each other's writes.
func TestLateJoinerConverges(t *testing.T) {
	c := startCluster(t, options{})
	tenant := newTenant()
	alice, bob := newUser(tenant, "alice"), newUser(tenant, "bob")
	a := c.dial(t, c.nodes[0].URL(), alice)
	project := createProject(t, a, "Late joiner")
	addMember(t, a, project.Id, bob, editor)
	pa := subscribe(t, a, project.Id)

	epic := create(t, a, project.Id, "", epicType, "epic")
	var last *pmv1.WorkItem
	for i := range 5 {
		last = create(t, a, project.Id, epic.Id, storyType, "story "+strconv.Itoa(i))
	}
	last = retitle(t, a, last, "renamed")
	remove(t, a, create(t, a, project.Id, "", taskType, "short-lived"))

	b := c.dial(t, c.nodes[1].URL(), bob)
	pb := subscribe(t, b, project.Id)
	head, _ := c.dbProject(t, project.Id)
	for _, p := range []*client.Project{pa, pb} {
		waitFor(t, p, "the project's head", func(p *client.Project) bool { return p.Revision() == head })
	}
	ia, _ := pa.Items()
	ib, _ := pb.Items()
	if d := diffItems(ia, ib); d != "" {
		t.Fatalf("the late joiner's replica differs from the first client's:\n%s", d)
	}

	// Now bob writes on node 2 and alice sees it on node 1.
	mine := create(t, b, project.Id, epic.Id, storyType, "bob's story")
	retitle(t, b, last, "renamed by bob")
	remove(t, b, mine)
	c.assertConverged(t, pa, a)
	c.assertConverged(t, pb, b)
	ia, _ = pa.Items()
	ib, _ = pb.Items()
	if d := diffItems(ia, ib); d != "" {
		t.Fatalf("replicas differ after bob's writes:\n%s", d)
	}
}

// 4. Two nodes update the same item at the same expected_version at once:
// exactly one wins, the other gets CONFLICT with the winner's version, and
// both replicas show the winner.
func TestConcurrentConflictingUpdates(t *testing.T) {
	c := startCluster(t, options{})
	tenant := newTenant()
	alice, bob := newUser(tenant, "alice"), newUser(tenant, "bob")
	a := c.dial(t, c.nodes[0].URL(), alice)
	project := createProject(t, a, "Conflicts")
	addMember(t, a, project.Id, bob, editor)
	b := c.dial(t, c.nodes[1].URL(), bob)
	pa, pb := subscribe(t, a, project.Id), subscribe(t, b, project.Id)
	item := create(t, a, project.Id, "", taskType, "contested")

	clients := []*client.Client{a, b}
	wins := [2]int{}
	for round := range 8 {
		version := item.Version
		var (
			wg      sync.WaitGroup
			start   = make(chan struct{})
			results [2]*pmv1.WorkItemUpdated
			errs    [2]error
		)
		for i, cl := range clients {
			title := "round " + strconv.Itoa(round) + " by " + []string{"alice", "bob"}[i]
			wg.Go(func() {
				<-start
				results[i], errs[i] = cl.UpdateWorkItem(tctx(t), &pmv1.UpdateWorkItemRequest{WorkItemId: item.Id, ExpectedVersion: version, Title: &title})
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i := range clients {
			if errs[i] == nil {
				if winner >= 0 {
					t.Fatalf("round %d: both updates at version %d succeeded", round, version)
				}
				winner = i
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no update won: %v, %v", round, errs[0], errs[1])
		}
		wins[winner]++
		won := results[winner].WorkItem
		perr := wantCode(t, errs[1-winner], pm.EConflict)
		if perr.CurrentVersion != won.Version || won.Version != version+1 {
			t.Fatalf("round %d: loser told current_version %d, winner wrote version %d (from %d)", round, perr.CurrentVersion, won.Version, version)
		}
		for _, p := range []*client.Project{pa, pb} {
			waitFor(t, p, "the winner's title", func(p *client.Project) bool { return proto.Equal(p.Get(item.Id), won) })
		}
		item = won
	}
	t.Logf("wins: alice (node 1) %d, bob (node 2) %d", wins[0], wins[1])
	c.assertConverged(t, pa, a)
	c.assertConverged(t, pb, b)
}

// 5. Roles and tenants are enforced on every node, and a bad token is
// refused with HTTP 401 at the upgrade, through the load balancer.
func TestUnauthorizedAccess(t *testing.T) {
	c := startCluster(t, options{lb: true})
	tenant := newTenant()
	alice, carol, dave := newUser(tenant, "alice"), newUser(tenant, "carol"), newUser(tenant, "dave")
	eve := newUser(newTenant(), "eve") // another tenant
	a := c.dial(t, c.URL(), alice)
	project := createProject(t, a, "Private")
	addMember(t, a, project.Id, carol, viewer)
	task := create(t, a, project.Id, "", taskType, "secret task")
	head, rows := c.dbProject(t, project.Id)

	// carol, a viewer, reads but cannot write.
	cc := c.dial(t, c.URL(), carol)
	pc := subscribe(t, cc, project.Id)
	if pc.Get(task.Id) == nil {
		t.Fatal("the viewer's replica lacks the task")
	}
	_, err := cc.CreateWorkItem(tctx(t), &pmv1.CreateWorkItemRequest{ProjectId: project.Id, ItemType: taskType, Title: "by a viewer"})
	wantCode(t, err, pm.EUnauthorized)
	title := "renamed by a viewer"
	_, err = cc.UpdateWorkItem(tctx(t), &pmv1.UpdateWorkItemRequest{WorkItemId: task.Id, ExpectedVersion: task.Version, Title: &title})
	wantCode(t, err, pm.EUnauthorized)
	_, err = cc.DeleteWorkItem(tctx(t), &pmv1.DeleteWorkItemRequest{WorkItemId: task.Id})
	wantCode(t, err, pm.EUnauthorized)

	// dave, of the same tenant but no member, cannot subscribe or read.
	dc := c.dial(t, c.URL(), dave)
	_, err = dc.Subscribe(tctx(t), project.Id)
	wantCode(t, err, pm.EUnauthorized)
	if dc.Project(project.Id) != nil {
		t.Fatal("a refused subscription left a replica behind")
	}
	_, err = dc.GetWorkItems(tctx(t), &pmv1.GetWorkItemsRequest{ProjectId: project.Id})
	wantCode(t, err, pm.EUnauthorized)

	// eve, of another tenant, cannot even tell the project exists.
	ec := c.dial(t, c.URL(), eve)
	_, err = ec.Subscribe(tctx(t), project.Id)
	wantCode(t, err, pm.ENotFound)
	_, err = ec.GetWorkItems(tctx(t), &pmv1.GetWorkItemsRequest{ProjectId: project.Id})
	wantCode(t, err, pm.ENotFound)
	_, err = ec.UpdateWorkItem(tctx(t), &pmv1.UpdateWorkItemRequest{WorkItemId: task.Id, ExpectedVersion: task.Version, Title: &title})
	wantCode(t, err, pm.ENotFound)
	_, err = ec.CreateWorkItem(tctx(t), &pmv1.CreateWorkItemRequest{ProjectId: project.Id, ItemType: taskType, Title: "by another tenant"})
	wantCode(t, err, pm.ENotFound)

	// Nothing of that changed anything.
	head2, rows2 := c.dbProject(t, project.Id)
	if head2 != head || len(rows2) != len(rows) {
		t.Fatalf("refused requests changed the project: revision %d → %d, %d → %d items", head, head2, len(rows), len(rows2))
	}
	c.assertConverged(t, pc, cc)

	// Bad tokens never get a WebSocket: HTTP 401 before the upgrade.
	where := "through HAProxy"
	if c.lb == nil {
		where = "on node 1 directly (" + c.lbNote + ")"
	}
	expired := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": alice.id.String(), "tenant_id": tenant,
		"iat": time.Now().Add(-2 * time.Hour).Unix(), "exp": time.Now().Add(-time.Hour).Unix(),
	})
	expiredToken, err := expired.SignedString(c.secret)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := client.NewToken([]byte("not the cluster's secret"), tenant, alice.id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, token := range map[string]string{
		"none": "", "garbage": "not-a-jwt", "forged": forged, "expired": expiredToken,
	} {
		if got := upgradeStatus(t, c.URL(), token); got != http.StatusUnauthorized {
			t.Errorf("%s token %s: HTTP %d, want 401", name, where, got)
		}
	}
	if got := upgradeStatus(t, c.URL(), c.token(alice)); got != http.StatusSwitchingProtocols {
		t.Errorf("valid token %s: HTTP %d, want 101", where, got)
	}
	_, err = client.Dial(tctx(t), c.URL(), client.Options{Token: forged})
	wantCode(t, err, pm.EUnauthorized)
	t.Logf("bad tokens refused with 401 %s", where)
}

// upgradeStatus sends a WebSocket upgrade request with token as bearer
// token ("" for none) and returns the HTTP status of the answer.
func upgradeStatus(t *testing.T, wsURL, token string) int {
	t.Helper()
	return upgradeStatusFrom(t, wsURL, token, "")
}

// upgradeStatusFrom is upgradeStatus for a page of origin ("": no Origin
// header, as sent by programs that are not browsers).
func upgradeStatusFrom(t *testing.T, wsURL, token, origin string) int {
	t.Helper()
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	req, err := http.NewRequestWithContext(tctx(t), http.MethodGet, "http"+strings.TrimPrefix(wsURL, "ws"), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", base64.StdEncoding.EncodeToString(key))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("upgrade request to %s: %v", wsURL, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<10))
	}
	_ = resp.Body.Close() // after a 101: drops the upgraded connection
	return resp.StatusCode
}

// 6. An item with live children cannot be deleted (DELETE_BLOCKED says how
// many); once they are gone it can, and every replica drops the items.
func TestDeleteWithChildren(t *testing.T) {
	c := startCluster(t, options{})
	tenant := newTenant()
	alice, bob := newUser(tenant, "alice"), newUser(tenant, "bob")
	a := c.dial(t, c.nodes[0].URL(), alice)
	project := createProject(t, a, "Deletes")
	addMember(t, a, project.Id, bob, viewer)
	epic := create(t, a, project.Id, "", epicType, "epic")
	s1 := create(t, a, project.Id, epic.Id, storyType, "story 1")
	s2 := create(t, a, project.Id, epic.Id, storyType, "story 2")
	task := create(t, a, project.Id, s1.Id, taskType, "task")
	b := c.dial(t, c.nodes[1].URL(), bob)
	pb := subscribe(t, b, project.Id)
	if pb.Len() != 5 {
		t.Fatalf("replica has %d items, want 5", pb.Len())
	}
	before, _ := c.dbProject(t, project.Id)

	for _, tc := range []struct {
		item *pmv1.WorkItem
		want string
	}{{epic, "2 live children"}, {s1, "1 live child"}} {
		_, err := a.DeleteWorkItem(tctx(t), &pmv1.DeleteWorkItemRequest{WorkItemId: tc.item.Id})
		perr := wantCode(t, err, pm.EDeleteBlocked)
		if !strings.Contains(perr.Message, tc.want) {
			t.Errorf("DELETE_BLOCKED for %q says %q, want it to mention %q", tc.item.Title, perr.Message, tc.want)
		}
	}
	if head, _ := c.dbProject(t, project.Id); head != before {
		t.Fatalf("refused deletes moved the revision from %d to %d", before, head)
	}

	var deleted []*pmv1.WorkItemDeleted
	for _, w := range []*pmv1.WorkItem{task, s1, s2, epic} {
		deleted = append(deleted, remove(t, a, w))
	}
	for i, d := range deleted {
		if d.Revision != before+int64(i)+1 || d.WorkItem.GetDeletedAt() == 0 {
			t.Errorf("delete %d answered revision %d deleted_at %d, want revision %d and a tombstone", i, d.Revision, d.WorkItem.GetDeletedAt(), before+int64(i)+1)
		}
	}
	waitFor(t, pb, "the deletes on node 2", func(p *client.Project) bool { return p.Len() == 1 })
	c.assertConverged(t, pb, b)
	_, rows := c.dbProject(t, project.Id)
	for _, w := range []*pmv1.WorkItem{task, s1, s2, epic} {
		if !rows[w.Id].Deleted {
			t.Errorf("%q is not a tombstone in the database", w.Title)
		}
	}
	// Sync after the blocked attempts hands out the four tombstones.
	list, err := b.GetWorkItems(tctx(t), &pmv1.GetWorkItemsRequest{ProjectId: project.Id, SinceRevision: before})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.WorkItems) != 4 {
		t.Fatalf("since_revision %d returned %d items, want the 4 tombstones", before, len(list.WorkItems))
	}
	for _, w := range list.WorkItems {
		if w.DeletedAt == 0 {
			t.Errorf("since_revision returned %q without deleted_at", w.Title)
		}
	}
}

// 7. A request re-sent with the same message_id — to the other node, or ten
// times at once across both — is answered identically and changes nothing
// more.
func TestIdempotencyAcrossNodes(t *testing.T) {
	c := startCluster(t, options{})
	tenant := newTenant()
	alice, bob := newUser(tenant, "alice"), newUser(tenant, "bob")
	a1 := c.dial(t, c.nodes[0].URL(), alice)
	a2 := c.dial(t, c.nodes[1].URL(), alice)
	project := createProject(t, a1, "Idempotency")
	addMember(t, a1, project.Id, bob, viewer)

	var mu sync.Mutex
	events := map[string]int{} // WorkItemCreated events bob got, by title
	b := c.dial(t, c.nodes[1].URL(), bob, func(o *client.Options) {
		o.OnEvent = func(m *pmv1.WebSocketMessage) {
			if w := m.GetWorkItemCreated().GetWorkItem(); w != nil {
				mu.Lock()
				events[w.Title]++
				mu.Unlock()
			}
		}
	})
	pb := subscribe(t, b, project.Id)

	// Without a client-chosen work_item_id only the message_id protects the
	// create.
	createMsg := func(id, title string) *pmv1.WebSocketMessage {
		return &pmv1.WebSocketMessage{MessageId: id, Payload: &pmv1.WebSocketMessage_CreateWorkItemRequest{
			CreateWorkItemRequest: &pmv1.CreateWorkItemRequest{ProjectId: project.Id, ItemType: taskType, Title: title}}}
	}
	id := "e2e-" + uuid.NewString()
	first, err := a1.Do(tctx(t), createMsg(id, "once"))
	if err != nil {
		t.Fatal(err)
	}
	head, _ := c.dbProject(t, project.Id)
	again, err := a2.Do(tctx(t), createMsg(id, "once"))
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(first, again) {
		t.Fatalf("the re-sent create on node 2 was answered differently:\nfirst %v\nagain %v", first, again)
	}
	if h, _ := c.dbProject(t, project.Id); h != head {
		t.Fatalf("the re-sent create moved the revision from %d to %d", head, h)
	}

	// An update re-sent to the other node bumps the version once.
	w := first.GetWorkItemCreated().GetWorkItem()
	title := "once, renamed"
	upd := func() *pmv1.WebSocketMessage {
		return &pmv1.WebSocketMessage{MessageId: "e2e-" + w.Id, Payload: &pmv1.WebSocketMessage_UpdateWorkItemRequest{
			UpdateWorkItemRequest: &pmv1.UpdateWorkItemRequest{WorkItemId: w.Id, ExpectedVersion: w.Version, Title: &title}}}
	}
	u1, err := a2.Do(tctx(t), upd())
	if err != nil {
		t.Fatal(err)
	}
	u2, err := a1.Do(tctx(t), upd())
	if err != nil {
		t.Fatalf("the re-sent update was not replayed: %v", err)
	}
	if !proto.Equal(u1, u2) || u2.GetWorkItemUpdated().GetWorkItem().GetVersion() != w.Version+1 {
		t.Fatalf("re-sent update answered %v, first %v", u2, u1)
	}

	// Ten copies of one create at once, five through each node.
	const copies = 10
	clients := make([]*client.Client, copies)
	for i := range clients {
		clients[i] = c.dial(t, c.nodes[i%2].URL(), alice)
	}
	id = "e2e-" + uuid.NewString()
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		answers [copies]*pmv1.WebSocketMessage
		errs    [copies]error
	)
	for i, cl := range clients {
		wg.Go(func() {
			<-start
			answers[i], errs[i] = cl.Do(tctx(t), createMsg(id, "ten"))
		})
	}
	close(start)
	wg.Wait()
	for i := range copies {
		if errs[i] != nil {
			t.Fatalf("copy %d: %v", i, errs[i])
		}
		if !proto.Equal(answers[i], answers[0]) {
			t.Fatalf("copy %d answered differently:\n%v\n%v", i, answers[i], answers[0])
		}
	}
	var n int
	if err := c.admin.QueryRow(tctx(t), `SELECT count(*) FROM work_items WHERE project_id = $1 AND title = 'ten'`, project.Id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d rows for ten copies of one create, want 1", n)
	}

	// A later change fences the events: bob heard of each create once.
	fence := create(t, a1, project.Id, "", taskType, "fence")
	waitFor(t, pb, "the fence", func(p *client.Project) bool { return p.Get(fence.Id) != nil })
	mu.Lock()
	got := map[string]int{"once": events["once"], "ten": events["ten"]}
	mu.Unlock()
	if got["once"] != 1 || got["ten"] != 1 {
		t.Fatalf("bob got %v WorkItemCreated events, want one of each", got)
	}
	c.assertConverged(t, pb, b)
}
