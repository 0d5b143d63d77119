package node_test

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/node/nodetest"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
	"github.com/pmhq/pm/repo"
	"github.com/pmhq/pm/repo/repotest"
)

// Phases of the outage test.
const (
	phaseBefore = iota // Postgres reachable
	phaseOutage        // after the proxy went down, before it comes back
	phaseAfter         // from just before the proxy comes back
)

// faultWrite is one create a writer sent, and what it was told.
type faultWrite struct {
	id            uuid.UUID
	title         string
	sent, settled int32 // phase when sent, and when answered
	afterOpen     bool  // sent in the outage after its node's breaker was seen open
	revision      int64 // acknowledged: the item's revision
	code          string
	retryAfterMs  int64
	took          time.Duration
}

func (w faultWrite) acked() bool { return w.code == "" }

// Postgres stops while clients write through two nodes. Once a node's
// breaker is open its writes fail at once with UNAVAILABLE and a retry hint;
// when Postgres is back the breakers close by themselves and writes succeed
// again, with nothing restarted; and Postgres holds exactly what clients
// were told: every acknowledged write with its activity entry and revision,
// no write refused during the outage, no partial write (a write in flight
// when the connections were cut is all there or not at all), and revisions
// without gaps.
func TestPostgresOutageUnderLoad(t *testing.T) {
	const (
		writers = 4
		open    = 300 * time.Millisecond
	)
	var (
		proxyOnce sync.Once
		proxy     *repotest.Proxy
		proxyURL  string
	)
	c := nodetest.Start(t, nodetest.Options{Nodes: 2, Store: func(cfg *repo.Config) {
		proxyOnce.Do(func() { proxy, proxyURL = repotest.MustProxy(t, cfg.DatabaseURL) })
		cfg.DatabaseURL = proxyURL
		cfg.BreakerFailures, cfg.BreakerOpen = 3, open
	}})
	const tenant = "acme"
	admin := nodetest.Dial(t, c.Nodes[0].URL(), c.Token(tenant, uuid.New()))
	project := mustCreate(t, admin, &pmv1.CreateWorkItemRequest{ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT, Title: "Outage"})
	conns := make([]*nodetest.Conn, writers)
	for w := range conns {
		user := uuid.New()
		resp, _ := admin.Request(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_AddProjectMemberRequest{AddProjectMemberRequest: &pmv1.AddProjectMemberRequest{
			ProjectId: project.Id, UserId: user.String(), Role: pmv1.ProjectRole_PROJECT_ROLE_EDITOR}}})
		if resp.GetProjectMemberChanged() == nil {
			t.Fatalf("add writer %d: %v", w, resp)
		}
		conns[w] = nodetest.Dial(t, c.Nodes[w%2].URL(), c.Token(tenant, user))
	}

	var (
		phase    atomic.Int32
		openSeen [2]atomic.Bool
		mu       sync.Mutex
		writes   = make([][]faultWrite, writers)
		errs     = make(chan error, writers)
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for w := range writers {
		wg.Go(func() {
			tick := time.NewTicker(25 * time.Millisecond) // 40 requests/s, under the rate limit
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				wr := faultWrite{id: uuid.New(), title: fmt.Sprintf("w%d-%d", w, i), sent: phase.Load()}
				wr.afterOpen = wr.sent == phaseOutage && openSeen[w%2].Load()
				start := time.Now()
				resp, err := conns[w].TryRequest(&pmv1.WebSocketMessage{Payload: &pmv1.WebSocketMessage_CreateWorkItemRequest{
					CreateWorkItemRequest: &pmv1.CreateWorkItemRequest{
						WorkItemId: wr.id.String(), ProjectId: project.Id,
						ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: wr.title,
					}}}, 15*time.Second)
				wr.took, wr.settled = time.Since(start), phase.Load()
				switch {
				case err != nil:
					errs <- fmt.Errorf("writer %d: %w", w, err)
					return
				case resp.GetWorkItemCreated() != nil:
					item := resp.GetWorkItemCreated().GetWorkItem()
					if item.GetId() != wr.id.String() {
						errs <- fmt.Errorf("writer %d: created %s, asked for %s", w, item.GetId(), wr.id)
						return
					}
					wr.revision = item.GetRevision()
				case resp.GetError() != nil:
					wr.code, wr.retryAfterMs = resp.GetError().GetCode(), resp.GetError().GetRetryAfterMs()
				default:
					errs <- fmt.Errorf("writer %d: unexpected answer %v", w, resp)
					return
				}
				mu.Lock()
				writes[w] = append(writes[w], wr)
				mu.Unlock()
			}
		})
	}
	stopped := false
	stopWriters := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	t.Cleanup(stopWriters)
	// each reports whether every writer has at least n writes that match.
	each := func(n int, match func(faultWrite) bool) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, ws := range writes {
			if len(slices.DeleteFunc(slices.Clone(ws), func(w faultWrite) bool { return !match(w) })) < n {
				return false
			}
		}
		return true
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for !cond() {
			select {
			case err := <-errs:
				t.Fatal(err)
			case <-tick.C:
			}
			if time.Now().After(deadline) {
				t.Fatalf("not within 30s: %s", what)
			}
		}
	}

	waitFor("5 writes acknowledged per writer", func() bool {
		return each(5, func(w faultWrite) bool { return w.acked() })
	})
	proxy.Down()
	phase.Store(phaseOutage)
	waitFor("both nodes' breakers open", func() bool {
		for i, n := range c.Nodes {
			if n.MetricWith("pm_db_breaker_transitions_total", map[string]string{"from": "closed", "to": "open"}) >= 1 {
				openSeen[i].Store(true)
			}
		}
		return openSeen[0].Load() && openSeen[1].Load()
	})
	waitFor("10 writes refused per writer with its node's breaker open", func() bool {
		return each(10, func(w faultWrite) bool { return w.afterOpen && !w.acked() })
	})
	phase.Store(phaseAfter)
	proxy.Up()
	waitFor("5 writes acknowledged per writer after the outage", func() bool {
		return each(5, func(w faultWrite) bool { return w.sent == phaseAfter && w.acked() })
	})
	stopWriters()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	for i, n := range c.Nodes {
		if got := n.MetricWith("pm_db_breaker_state", map[string]string{"state": "closed"}); got != 1 {
			t.Errorf("node %d: breaker not closed after the outage", i+1)
		}
		if got := n.MetricWith("pm_db_breaker_transitions_total", map[string]string{"from": "half_open", "to": "closed"}); got < 1 {
			t.Errorf("node %d: no half_open→closed transition counted", i+1)
		}
		if got := n.Metric("pm_db_breaker_rejections_total"); got < 1 {
			t.Errorf("node %d: no rejection counted", i+1)
		}
	}

	// What the clients were told.
	var all []faultWrite
	var fast []time.Duration
	for _, ws := range writes {
		all = append(all, ws...)
	}
	for _, w := range all {
		if !w.acked() && (w.code != pm.EUnavailable || w.retryAfterMs <= 0) {
			t.Errorf("%s refused with %s, retry_after_ms %d; want UNAVAILABLE with a retry hint", w.title, w.code, w.retryAfterMs)
		}
		if w.sent == phaseOutage && w.settled == phaseOutage && w.acked() {
			t.Errorf("%s acknowledged while Postgres was out of reach", w.title)
		}
		if w.afterOpen {
			fast = append(fast, w.took)
		}
	}
	slices.Sort(fast)
	t.Logf("%d writes; %d refused with the breaker open: median %v, p99 %v, max %v", len(all), len(fast),
		fast[len(fast)/2], fast[len(fast)*99/100], fast[len(fast)-1])

	// What Postgres holds.
	db := repotest.MustPool(t, repotest.AdminDatabaseURL(t, c.DatabaseURL))
	ctx := t.Context()
	type row struct {
		revision int64
		title    string
	}
	rows := map[string]row{}
	r, err := db.Query(ctx, `SELECT id, revision, title FROM work_items WHERE tenant_id = $1 AND project_id = $2 AND id <> project_id`, tenant, project.Id)
	if err != nil {
		t.Fatal(err)
	}
	for r.Next() {
		var (
			id string
			x  row
		)
		if err := r.Scan(&id, &x.revision, &x.title); err != nil {
			t.Fatal(err)
		}
		rows[id] = x
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	created := map[string][]int64{} // work item → revisions of its 'created' entries
	var revisions []int64           // of every work item entry, the project's own included
	r, err = db.Query(ctx, `SELECT work_item_id, action, revision FROM activity_log
		WHERE tenant_id = $1 AND project_id = $2 AND work_item_id IS NOT NULL`, tenant, project.Id)
	if err != nil {
		t.Fatal(err)
	}
	for r.Next() {
		var (
			id, action string
			revision   int64
		)
		if err := r.Scan(&id, &action, &revision); err != nil {
			t.Fatal(err)
		}
		revisions = append(revisions, revision)
		if action != "created" {
			t.Errorf("activity %s of %s: only creates were sent", action, id)
		}
		created[id] = append(created[id], revision)
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	var head int64
	if err := db.QueryRow(ctx, `SELECT revision FROM project_revisions WHERE tenant_id = $1 AND project_id = $2`,
		tenant, project.Id).Scan(&head); err != nil {
		t.Fatal(err)
	}

	sent := map[string]bool{}
	var inDoubt, inDoubtCommitted int
	for _, w := range all {
		id := w.id.String()
		sent[id] = true
		got, present := rows[id]
		entries := created[id]
		whole := present && got.title == w.title && slices.Equal(entries, []int64{got.revision})
		switch {
		case w.acked():
			if !whole || got.revision != w.revision {
				t.Errorf("%s acknowledged at revision %d: row %v (present %v), created entries %v", w.title, w.revision, got, present, entries)
			}
		case w.settled == phaseBefore:
			t.Errorf("%s refused (%s) before the outage", w.title, w.code)
		case w.sent != phaseBefore:
			// Sent after every connection was cut: it reached Postgres only
			// if it ran after Postgres was back, and then nothing cut its
			// answer.
			if present || len(entries) > 0 {
				t.Errorf("%s refused, sent in the outage, yet row %v (present %v), created entries %v", w.title, got, present, entries)
			}
		default:
			// In flight when the connections were cut (the COMMIT may have
			// reached Postgres with its answer lost): all or nothing.
			inDoubt++
			if present {
				inDoubtCommitted++
			}
			if !whole && (present || len(entries) > 0) {
				t.Errorf("%s in doubt: partial write: row %v (present %v), created entries %v", w.title, got, present, entries)
			}
		}
	}
	for id := range rows {
		if !sent[id] {
			t.Errorf("item %s in Postgres that no writer sent", id)
		}
	}
	slices.Sort(revisions)
	for i, rev := range revisions {
		if rev != int64(i+1) {
			t.Fatalf("work item revisions %v: want 1..%d, each once", revisions, head)
		}
	}
	if int64(len(revisions)) != head {
		t.Fatalf("%d work item revisions, project head %d", len(revisions), head)
	}
	t.Logf("head revision %d; %d refusals in doubt, %d of which had committed", head, inDoubt, inDoubtCommitted)
}
