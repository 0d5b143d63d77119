package e2e

import (
	"maps"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/pmhq/pm/client"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// 8a. A client that was away asks for everything after its last revision
// and, applying the answer to what it had, holds exactly the database:
// new and changed items at their versions, and the tombstones of the items
// deleted meanwhile — including one it never saw.
func TestResyncSinceRevisionAfterDisconnect(t *testing.T) {
	c := startCluster(t, options{})
	tenant := newTenant()
	alice, carol := newUser(tenant, "alice"), newUser(tenant, "carol")
	a := c.dial(t, c.nodes[0].URL(), alice)
	project := createProject(t, a, "Away")
	addMember(t, a, project.Id, carol, viewer)
	epic := create(t, a, project.Id, "", epicType, "epic")
	var stories []*pmv1.WorkItem
	for i := range 4 {
		stories = append(stories, create(t, a, project.Id, epic.Id, storyType, "story "+strconv.Itoa(i)))
	}

	cc := c.dial(t, c.nodes[1].URL(), carol)
	pc := subscribe(t, cc, project.Id)
	had, since := pc.Items()
	if err := cc.Close(); err != nil {
		t.Fatal(err)
	}

	// While carol is away.
	fresh := create(t, a, project.Id, epic.Id, storyType, "new story")
	create(t, a, project.Id, fresh.Id, taskType, "new task")
	stories[0] = retitle(t, a, stories[0], "renamed once")
	stories[0] = retitle(t, a, stories[0], "renamed twice")
	stories[1] = retitle(t, a, stories[1], "renamed")
	remove(t, a, stories[2])
	remove(t, a, create(t, a, project.Id, "", taskType, "born and gone while away"))

	// Back: a new connection asks for what changed after her revision.
	back := c.dial(t, c.nodes[1].URL(), carol)
	list, err := back.GetWorkItems(tctx(t), &pmv1.GetWorkItemsRequest{ProjectId: project.Id, SinceRevision: since})
	if err != nil {
		t.Fatal(err)
	}
	head, rows := c.dbProject(t, project.Id)
	if list.AsOfRevision != head {
		t.Fatalf("as_of_revision %d, database at %d", list.AsOfRevision, head)
	}
	// Exactly the items changed after `since`, deleted ones as tombstones.
	wantLive, wantGone := map[string]bool{}, map[string]bool{}
	for id, r := range rows {
		switch {
		case r.Revision <= since:
		case r.Deleted:
			wantGone[id] = true
		default:
			wantLive[id] = true
		}
	}
	gotLive, gotGone := map[string]bool{}, map[string]bool{}
	for _, w := range list.WorkItems {
		if w.Revision <= since {
			t.Errorf("since_revision %d returned %q at revision %d", since, w.Title, w.Revision)
		}
		if w.DeletedAt != 0 {
			gotGone[w.Id] = true
		} else {
			gotLive[w.Id] = true
		}
	}
	if !maps.Equal(gotLive, wantLive) || !maps.Equal(gotGone, wantGone) {
		t.Fatalf("since_revision %d returned live %v and tombstones %v; the database changed %v and deleted %v",
			since, slices.Sorted(maps.Keys(gotLive)), slices.Sorted(maps.Keys(gotGone)),
			slices.Sorted(maps.Keys(wantLive)), slices.Sorted(maps.Keys(wantGone)))
	}
	if len(wantGone) != 2 || len(wantLive) != 4 {
		t.Fatalf("the database changed %d and deleted %d items while carol was away, want 4 and 2", len(wantLive), len(wantGone))
	}

	// Applied to what she had, the answer is the database, field by field.
	replica := make(map[string]*pmv1.WorkItem, len(had))
	for _, w := range had {
		replica[w.Id] = w
	}
	for _, w := range list.WorkItems {
		if w.DeletedAt != 0 {
			delete(replica, w.Id)
		} else {
			replica[w.Id] = w
		}
	}
	resynced := slices.Collect(maps.Values(replica))
	if d := diffDB(resynced, list.AsOfRevision, head, rows); d != "" {
		t.Fatalf("resynced replica differs from the database:\n%s", d)
	}
	full, err := back.GetWorkItems(tctx(t), &pmv1.GetWorkItemsRequest{ProjectId: project.Id})
	if err != nil {
		t.Fatal(err)
	}
	if d := diffItems(full.WorkItems, resynced); d != "" {
		t.Fatalf("resynced replica differs from a full read:\n%s", d)
	}
	// And the SDK, subscribing again, agrees.
	c.assertConverged(t, subscribe(t, back, project.Id), back)
}

// 8b. The SDK's own reconnect: carol's node shuts down (close 1001), she
// reconnects to the other node by herself and resyncs, including the
// changes made while she was disconnected. The node then comes back.
func TestReconnectAfterNodeShutdown(t *testing.T) {
	c := startCluster(t, options{})
	tenant := newTenant()
	alice, carol := newUser(tenant, "alice"), newUser(tenant, "carol")
	a := c.dial(t, c.nodes[0].URL(), alice)
	project := createProject(t, a, "Reconnect")
	addMember(t, a, project.Id, carol, viewer)
	var items []*pmv1.WorkItem
	for i := range 4 {
		items = append(items, create(t, a, project.Id, "", taskType, "task "+strconv.Itoa(i)))
	}

	watch, logTo := watchLog(t, "carol")
	cc := c.dial(t, c.nodes[1].URL(), carol, logTo, func(o *client.Options) {
		o.URLs = []string{c.nodes[0].URL()} // where to go when node 2 is gone
		// Long enough a pause that the writes below land while she is away.
		o.Reconnect = client.Backoff{Min: time.Second, Max: 2 * time.Second}
	})
	pc := subscribe(t, cc, project.Id)

	c.nodes[1].stop()
	eventually(t, 5*time.Second, func() bool { return watch.lostCount() > 0 }, "carol notices node 2 is gone")
	awayWrites := 0
	for i, w := range items {
		if !cc.Connected() {
			awayWrites++
		}
		switch i % 3 {
		case 0:
			items[i] = retitle(t, a, w, w.Title+" (changed while carol was away)")
		case 1:
			remove(t, a, w)
		}
		create(t, a, project.Id, "", taskType, "added while carol was away "+strconv.Itoa(i))
	}
	t.Logf("%d of %d write rounds started while carol was disconnected", awayWrites, len(items))
	if awayWrites == 0 {
		t.Fatal("carol reconnected before any write: the test proved nothing")
	}
	eventually(t, 10*time.Second, func() bool { return watch.reconnectCount() > 0 }, "carol reconnects to node 1")
	c.assertConverged(t, pc, a)
	if err := pc.Err(); err != nil {
		t.Fatalf("the replica ended: %v", err)
	}

	// Node 2 comes back on its address and serves again.
	c.nodes[1].restart()
	back := c.dial(t, c.nodes[1].URL(), carol)
	c.assertConverged(t, subscribe(t, back, project.Id), back)
}
