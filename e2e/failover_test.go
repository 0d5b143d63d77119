package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/pmhq/pm/client"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// writer keeps changing a project through one client until stopped: it
// creates tasks, renames every third one and deletes every fifth, and
// records what the node acknowledged.
type writer struct {
	cl      *client.Client
	project string

	stop chan struct{}
	done chan struct{}

	mu     sync.Mutex
	acks   []ack
	errs   []error
	latest map[string]*pmv1.WorkItem // live items it made, latest state
}

// ack is one acknowledged write.
type ack struct {
	start, end time.Time
	item       *pmv1.WorkItem // the state the answer carried (a tombstone for a delete)
}

func startWriter(t *testing.T, cl *client.Client, project string) *writer {
	w := &writer{cl: cl, project: project, stop: make(chan struct{}), done: make(chan struct{}), latest: map[string]*pmv1.WorkItem{}}
	go w.run()
	t.Cleanup(w.halt)
	return w
}

func (w *writer) run() {
	defer close(w.done)
	var made []*pmv1.WorkItem
	for i := 0; ; i++ {
		select {
		case <-w.stop:
			return
		default:
		}
		start := time.Now()
		item, err := w.step(i, &made)
		w.mu.Lock()
		if err != nil {
			w.errs = append(w.errs, fmt.Errorf("write %d at %s: %w", i, start.Format("15:04:05.000"), err))
		} else {
			w.acks = append(w.acks, ack{start: start, end: time.Now(), item: item})
			if item.DeletedAt != 0 {
				delete(w.latest, item.Id)
			} else {
				w.latest[item.Id] = item
			}
		}
		w.mu.Unlock()
	}
}

// step makes write number i: a delete of the oldest item it made, a rename
// of the newest, or a create.
func (w *writer) step(i int, made *[]*pmv1.WorkItem) (*pmv1.WorkItem, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	switch {
	case i%5 == 4 && len(*made) > 0:
		victim := (*made)[0]
		*made = (*made)[1:]
		d, err := w.cl.DeleteWorkItem(ctx, &pmv1.DeleteWorkItemRequest{WorkItemId: victim.Id})
		return d.GetWorkItem(), err
	case i%3 == 2 && len(*made) > 0:
		last := (*made)[len(*made)-1]
		title := last.Title + " (renamed)"
		up, err := w.cl.UpdateWorkItem(ctx, &pmv1.UpdateWorkItemRequest{WorkItemId: last.Id, ExpectedVersion: last.Version, Title: &title})
		if err != nil {
			return nil, err
		}
		(*made)[len(*made)-1] = up.WorkItem
		return up.WorkItem, nil
	}
	item, err := w.cl.CreateWorkItem(ctx, &pmv1.CreateWorkItemRequest{ProjectId: w.project, ItemType: taskType, Title: fmt.Sprintf("w-%d", i)})
	if err == nil {
		*made = append(*made, item)
	}
	return item, err
}

// halt stops the writer and waits for it. Safe to call twice.
func (w *writer) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// acked counts the writes that started after t and were acknowledged.
func (w *writer) acked(after time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, a := range w.acks {
		if a.start.After(after) {
			n++
		}
	}
	return n
}

// slowest returns the longest time a write that started between from and
// to waited for its answer.
func (w *writer) slowest(from, to time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var d time.Duration
	for _, a := range w.acks {
		if a.start.After(from) && a.start.Before(to) {
			d = max(d, a.end.Sub(a.start))
		}
	}
	return d
}

// check fails the test if a write failed, and returns the live items the
// writer made, at the state it was last told.
func (w *writer) check(t *testing.T) map[string]*pmv1.WorkItem {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.errs) > 0 {
		t.Errorf("%d of %d writes failed; first: %v", len(w.errs), len(w.errs)+len(w.acks), w.errs[0])
	}
	return w.latest
}

// resyncLog records the ResyncRequired pushes a client gets.
type resyncLog struct {
	mu      sync.Mutex
	reasons []string
}

func (r *resyncLog) option(o *client.Options) {
	o.OnEvent = func(m *pmv1.WebSocketMessage) {
		if rr := m.GetResyncRequired(); rr != nil {
			r.mu.Lock()
			r.reasons = append(r.reasons, rr.Reason)
			r.mu.Unlock()
		}
	}
}

func (r *resyncLog) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reasons)
}

// 9. Redis restarts while a writer keeps changing a project through node 1:
// writes keep committing, subscribers on node 2 are told to resync and end
// up exactly at the database with nothing lost, and idempotency degrades to
// client-chosen ids while Redis is away.
func TestRedisRestartMidStream(t *testing.T) {
	// The head check is pushed out of the way: the resync must come from the
	// hub noticing its Redis connection broke.
	c := startCluster(t, options{headCheck: time.Hour})
	tenant := newTenant()
	alice, bob, carol := newUser(tenant, "alice"), newUser(tenant, "bob"), newUser(tenant, "carol")
	a1 := c.dial(t, c.nodes[0].URL(), alice)
	a2 := c.dial(t, c.nodes[1].URL(), alice)
	project := createProject(t, a1, "Redis restart")
	addMember(t, a1, project.Id, bob, viewer)
	addMember(t, a1, project.Id, carol, viewer)

	var bobLog, carolLog resyncLog
	b := c.dial(t, c.nodes[1].URL(), bob, bobLog.option)
	cc := c.dial(t, c.nodes[1].URL(), carol, carolLog.option)
	pb, pc := subscribe(t, b, project.Id), subscribe(t, cc, project.Id)
	pa := subscribe(t, a2, project.Id) // alice's other tab, on node 2 too
	dave := newUser(tenant, "dave")
	addMember(t, a1, project.Id, dave, viewer)

	w := startWriter(t, a1, project.Id)
	begin := time.Now()
	eventually(t, 20*time.Second, func() bool { return w.acked(begin) >= 10 }, "writes before the restart")
	waitFor(t, pb, "events before the restart", func(p *client.Project) bool { return p.Len() > 5 })

	c.redis.stop()
	down := time.Now()
	eventually(t, 30*time.Second, func() bool { return w.acked(down) >= 3 }, "writes while Redis is down")

	// dave opens the board while Redis is down: his node cannot confirm the
	// subscription yet, serves him anyway and repairs it later.
	var daveLog resyncLog
	dc := c.dial(t, c.nodes[1].URL(), dave, daveLog.option)
	pd := subscribe(t, dc, project.Id)

	// Without Redis a re-sent create runs again, and its client-chosen id
	// keeps it from making a second item.
	id := uuid.NewString()
	msg := func() *pmv1.WebSocketMessage {
		return &pmv1.WebSocketMessage{MessageId: "e2e-" + id, Payload: &pmv1.WebSocketMessage_CreateWorkItemRequest{
			CreateWorkItemRequest: &pmv1.CreateWorkItemRequest{ProjectId: project.Id, ItemType: taskType, Title: "sent twice without Redis", WorkItemId: id}}}
	}
	a3 := c.dial(t, c.nodes[0].URL(), alice) // not queued behind the writer's requests
	r1, err := a3.Do(tctx(t), msg())
	if err != nil {
		t.Fatalf("create without Redis: %v", err)
	}
	r2, err := a2.Do(tctx(t), msg())
	if err != nil {
		t.Fatalf("re-sent create without Redis: %v", err)
	}
	if !proto.Equal(r1.GetWorkItemCreated().GetWorkItem(), r2.GetWorkItemCreated().GetWorkItem()) || r1.GetWorkItemCreated().GetWorkItem().GetId() != id {
		t.Fatalf("re-sent create without Redis answered %v, first %v", r2, r1)
	}
	var copies int
	if err := c.admin.QueryRow(tctx(t), `SELECT count(*) FROM work_items WHERE title = 'sent twice without Redis'`).Scan(&copies); err != nil || copies != 1 {
		t.Fatalf("%d rows for a create sent twice without Redis (%v), want 1", copies, err)
	}

	if err := c.redis.start(); err != nil {
		t.Fatalf("restart redis-server: %v", err)
	}
	up := time.Now()
	t.Logf("Redis was down %v; %d writes were acknowledged meanwhile, the slowest after %v",
		up.Sub(down).Round(time.Millisecond), w.acked(down)-w.acked(up), w.slowest(down, up).Round(time.Millisecond))
	eventually(t, 30*time.Second, func() bool { return w.acked(up) >= 10 }, "writes after the restart")
	w.halt()
	made := w.check(t)

	// Every subscriber holds exactly the database, with every write the
	// writer was told about.
	for name, p := range map[string]*client.Project{"bob": pb, "carol": pc, "alice on node 2": pa, "dave": pd} {
		t.Run(name, func(t *testing.T) { c.assertConverged(t, p, a1) })
	}
	for id, item := range made {
		if got := pb.Get(id); got.GetVersion() != item.Version {
			t.Errorf("acknowledged %q v%d: bob has %v", item.Title, item.Version, got)
		}
	}
	for name, l := range map[string]*resyncLog{"bob": &bobLog, "carol": &carolLog, "dave": &daveLog} {
		reasons := l.get()
		t.Logf("%s got ResyncRequired: %q", name, reasons)
		if len(reasons) == 0 {
			t.Errorf("%s on node 2 got no ResyncRequired although Redis restarted", name)
		}
	}

	// With Redis back, a message_id is remembered across nodes again.
	id2 := "e2e-" + uuid.NewString()
	m2 := func() *pmv1.WebSocketMessage {
		return &pmv1.WebSocketMessage{MessageId: id2, Payload: &pmv1.WebSocketMessage_CreateWorkItemRequest{
			CreateWorkItemRequest: &pmv1.CreateWorkItemRequest{ProjectId: project.Id, ItemType: taskType, Title: "after the restart"}}}
	}
	first, err := a1.Do(tctx(t), m2())
	if err != nil {
		t.Fatal(err)
	}
	again, err := a2.Do(tctx(t), m2())
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(first, again) {
		t.Fatalf("after the restart a re-sent create was not replayed:\n%v\n%v", first, again)
	}
	for _, n := range c.nodes {
		status, body, err := httpGet(tctx(t), "http://"+n.admin+"/readyz")
		if status != http.StatusOK {
			t.Errorf("%s /readyz after the restart: %d %s %v", n.id, status, strings.TrimSpace(body), err)
		}
	}
}

// 10. A node dies (SIGKILL) under clients connected through HAProxy: they
// reconnect through HAProxy to the surviving node and converge to the
// database, including the changes made while they were reconnecting. The
// node comes back and HAProxy sends it clients again.
func TestNodeKilledBehindHAProxy(t *testing.T) {
	if why := haproxyMissing(); why != "" {
		missing(t, why)
	}
	c := startCluster(t, options{lb: true})
	tenant := newTenant()
	alice := newUser(tenant, "alice")
	// alice writes through node 2 directly: it survives.
	a := c.dial(t, c.nodes[1].URL(), alice)
	project := createProject(t, a, "Failover")
	for i := range 5 {
		create(t, a, project.Id, "", taskType, fmt.Sprintf("before %d", i))
	}

	type viewerClient struct {
		name  string
		cl    *client.Client
		p     *client.Project
		watch *logWatch
	}
	var viewers []viewerClient
	for i := range 4 {
		u := newUser(tenant, fmt.Sprintf("viewer-%d", i))
		addMember(t, a, project.Id, u, viewer)
		watch, logTo := watchLog(t, u.name)
		cl := c.dial(t, c.URL(), u, logTo, func(o *client.Options) {
			// A first pause long enough for writes to land while away.
			o.Reconnect = client.Backoff{Min: 200 * time.Millisecond, Max: time.Second}
		})
		viewers = append(viewers, viewerClient{u.name, cl, subscribe(t, cl, project.Id), watch})
	}
	// leastconn spread them: node 1 holds some.
	var onVictim float64
	eventually(t, 5*time.Second, func() bool {
		n1, err1 := c.nodes[0].metric("pm_connections")
		n2, err2 := c.nodes[1].metric("pm_connections")
		onVictim = n1
		return err1 == nil && err2 == nil && n1+n2 == 5
	}, "node metrics count the five connections")
	if onVictim == 0 {
		t.Fatal("HAProxy sent no client to node 1: nothing to fail over")
	}
	t.Logf("%v of the 4 clients behind HAProxy are on node 1", onVictim)
	lost := func() (n int) {
		for _, v := range viewers {
			n += v.watch.lostCount()
		}
		return n
	}
	back := func() (n int) {
		for _, v := range viewers {
			n += v.watch.reconnectCount()
		}
		return n
	}

	c.nodes[0].kill()
	killed := time.Now()
	var made []*pmv1.WorkItem
	away := 0
	for i := 0; back() < int(onVictim) || i < 5; i++ {
		if time.Since(killed) > 30*time.Second {
			t.Fatalf("after 30s only %d of %v clients reconnected", back(), onVictim)
		}
		if l := lost(); l > back() {
			away++
		}
		switch {
		case i%4 == 3:
			remove(t, a, made[0])
			made = made[1:]
		case i%4 == 2:
			made[len(made)-1] = retitle(t, a, made[len(made)-1], fmt.Sprintf("renamed %d", i))
		default:
			made = append(made, create(t, a, project.Id, "", taskType, fmt.Sprintf("during failover %d", i)))
		}
	}
	t.Logf("clients reconnected %v after the kill; %d writes landed while some were away", time.Since(killed).Round(time.Millisecond), away)
	if lost() != int(onVictim) {
		t.Errorf("%d clients lost their connection, %v were on node 1", lost(), onVictim)
	}
	if away == 0 {
		t.Error("no write landed while clients were reconnecting: the test proved less than it says")
	}
	for _, v := range viewers {
		t.Run(v.name, func(t *testing.T) {
			c.assertConverged(t, v.p, a)
			if err := v.p.Err(); err != nil {
				t.Fatalf("replica ended: %v", err)
			}
		})
	}
	if n, err := c.nodes[1].metric("pm_connections"); err != nil || n != 5 {
		t.Errorf("node 2 holds %v connections (%v), want all 5", n, err)
	}
	eventually(t, 5*time.Second, func() bool {
		st, err := c.lb.serverStatus()
		return err == nil && strings.HasPrefix(st["node-1"], "DOWN")
	}, "HAProxy marks node 1 down")

	// Node 1 comes back: HAProxy checks it up and hands it new clients.
	c.nodes[0].restart()
	eventually(t, 10*time.Second, c.lb.allUp, "HAProxy marks node 1 up again")
	late := newUser(tenant, "late")
	addMember(t, a, project.Id, late, viewer)
	for range 2 { // leastconn: node 1 has none, so the first goes there
		cl := c.dial(t, c.URL(), late)
		c.assertConverged(t, subscribe(t, cl, project.Id), cl)
	}
	if n, err := c.nodes[0].metric("pm_connections"); err != nil || n < 1 {
		t.Errorf("restarted node 1 holds %v connections (%v), want new clients", n, err)
	}
}

// Events lost without any broken connection (here: Redis refuses node 1's
// PUBLISH) reach node 2's subscribers through the periodic head check: they
// get ResyncRequired and catch up although the project then goes quiet.
func TestLostEventsCaughtByHeadCheck(t *testing.T) {
	c := startCluster(t, options{headCheck: 500 * time.Millisecond})
	tenant := newTenant()
	alice, bob := newUser(tenant, "alice"), newUser(tenant, "bob")
	a := c.dial(t, c.nodes[0].URL(), alice)
	project := createProject(t, a, "Head check")
	addMember(t, a, project.Id, bob, viewer)
	var bobLog resyncLog
	b := c.dial(t, c.nodes[1].URL(), bob, bobLog.option)
	pb := subscribe(t, b, project.Id)
	delivered := create(t, a, project.Id, "", taskType, "delivered")
	waitFor(t, pb, "the first change on node 2", func(p *client.Project) bool { return p.Get(delivered.Id) != nil })

	if r, err := c.redis.do("ACL", "SETUSER", "default", "-publish"); err != nil || r != "+OK" {
		t.Fatalf("forbid PUBLISH: %q %v", r, err)
	}
	t.Cleanup(func() { _, _ = c.redis.do("ACL", "SETUSER", "default", "+publish") })
	lost := create(t, a, project.Id, "", taskType, "never published")
	lost = retitle(t, a, lost, "never published either")
	// The node publishes after it answered: wait for both refusals.
	eventually(t, 10*time.Second, func() bool {
		return strings.Count(c.nodes[0].out.String(), "publish failed") == 2
	}, "node 1 fails to publish both changes")
	if r, err := c.redis.do("ACL", "SETUSER", "default", "+publish"); err != nil || r != "+OK" {
		t.Fatalf("allow PUBLISH: %q %v", r, err)
	}
	// Nothing else happens in the project: only the head check can tell.
	c.assertConverged(t, pb, a)
	if got := pb.Get(lost.Id); got.GetVersion() != lost.Version {
		t.Fatalf("bob has %v, want %v", got, lost)
	}
	t.Logf("bob got ResyncRequired: %q", bobLog.get())
	if !slices.Contains(bobLog.get(), "missed events") {
		t.Errorf("bob's resyncs %q do not include the head check's", bobLog.get())
	}
}

// Writers on both nodes change one project at once; events reach Redis in
// publish order, not commit order, and every subscriber on either node
// still ends at exactly the database.
func TestConcurrentWritersConverge(t *testing.T) {
	c := startCluster(t, options{})
	tenant := newTenant()
	alice, bob, carol, dave := newUser(tenant, "alice"), newUser(tenant, "bob"), newUser(tenant, "carol"), newUser(tenant, "dave")
	a := c.dial(t, c.nodes[0].URL(), alice)
	project := createProject(t, a, "Two writers")
	addMember(t, a, project.Id, bob, editor)
	addMember(t, a, project.Id, carol, viewer)
	addMember(t, a, project.Id, dave, viewer)
	b := c.dial(t, c.nodes[1].URL(), bob)
	pc := subscribe(t, c.dial(t, c.nodes[0].URL(), carol), project.Id)
	dc := c.dial(t, c.nodes[1].URL(), dave)
	pd := subscribe(t, dc, project.Id)

	w1, w2 := startWriter(t, a, project.Id), startWriter(t, b, project.Id)
	begin := time.Now()
	eventually(t, 30*time.Second, func() bool { return w1.acked(begin) >= 40 && w2.acked(begin) >= 40 }, "both writers write")
	w1.halt()
	w2.halt()
	w1.check(t)
	w2.check(t)
	c.assertConverged(t, pc, a)
	c.assertConverged(t, pd, dc)
}
