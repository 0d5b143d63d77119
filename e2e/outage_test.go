package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pmhq/pm/client"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// A node's readiness must not depend on Redis: without Redis the nodes
// still serve (writes commit, without replay and without cross-node
// events), so taking every node out of the load balancer turns a Redis
// blip into a full outage for new and reconnecting clients.
func TestRedisOutageKeepsNodesReady(t *testing.T) {
	c := startCluster(t, options{lb: true})
	u := newUser(newTenant(), "alice")
	a := c.dial(t, c.URL(), u)
	project := createProject(t, a, "Redis outage")
	c.redis.stop()

	create(t, a, project.Id, "", taskType, "written without Redis")
	for _, n := range c.nodes {
		if status, body, err := httpGet(tctx(t), "http://"+n.admin+"/readyz"); status != http.StatusOK {
			t.Errorf("%s /readyz without Redis: %d %q %v", n.id, status, body, err)
		}
	}
	if c.lb != nil {
		// For five of HAProxy's check intervals no node may go down.
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for watch := time.Now(); time.Since(watch) < time.Second; <-tick.C {
			st, err := c.lb.serverStatus()
			if err != nil {
				t.Fatal(err)
			}
			for id, s := range st {
				if s != "UP" {
					t.Fatalf("HAProxy marked %s %s while Redis was down", id, s)
				}
			}
		}
		cl := c.dial(t, c.URL(), u)
		create(t, cl, project.Id, "", taskType, "from a client that connected without Redis")
	}
}

// A write in flight when its node dies is retried on another node and
// succeeds within the SDK's request timeout: the SDK re-sends it under the
// same message_id, and the dead node's idempotency claim (a lease it can no
// longer renew) lapses in time.
func TestWriteInFlightWhenNodeDies(t *testing.T) {
	c := startCluster(t, options{})
	tenant := newTenant()
	alice := newUser(tenant, "alice")
	a := c.dial(t, c.nodes[0].URL(), alice, func(o *client.Options) { o.URLs = []string{c.nodes[1].URL()} })
	project := createProject(t, a, "In flight")

	// Hold the project's revision row so that the create waits inside the
	// node, after it claimed its message_id.
	tx, err := c.admin.Begin(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(tctx(t), `SELECT 1 FROM project_revisions WHERE project_id = $1 FOR UPDATE`, project.Id); err != nil {
		t.Fatal(err)
	}
	id := uuid.NewString()
	done := make(chan error, 1)
	go func() {
		_, err := a.CreateWorkItem(context.Background(), &pmv1.CreateWorkItemRequest{ProjectId: project.Id, ItemType: taskType, Title: "in flight", WorkItemId: id})
		done <- err
	}()
	eventually(t, 10*time.Second, func() bool {
		var waiting int
		err := c.admin.QueryRow(tctx(t), `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting)
		return err == nil && waiting > 0
	}, "the create waits for the row lock in node 1")
	c.nodes[0].kill()
	if err := tx.Rollback(tctx(t)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := <-done; err != nil {
		t.Fatalf("the write in flight when node 1 died failed after %v on node 2: %v", time.Since(start).Round(time.Millisecond), err)
	}
	t.Logf("the write in flight when node 1 died succeeded on node 2 %v later", time.Since(start).Round(time.Millisecond))
	_, rows := c.dbProject(t, project.Id)
	if _, ok := rows[id]; !ok {
		t.Fatal("the write succeeded but is not in the database")
	}
}
