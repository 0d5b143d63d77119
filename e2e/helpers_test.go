package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/client"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
)

// convergeWait bounds how long a replica may take to catch up with the
// database once writers have stopped.
const convergeWait = 20 * time.Second

// user is a person using pm: a user id in a tenant.
type user struct {
	name   string
	tenant string
	id     uuid.UUID
}

func newUser(tenant, name string) user { return user{name: name, tenant: tenant, id: uuid.New()} }

// newTenant returns a tenant id of its own for a test.
func newTenant() string { return "e2e-" + randomHex(4) }

// token returns a valid token of u for the cluster.
func (c *cluster) token(u user) string {
	c.t.Helper()
	tok, err := client.NewToken(c.secret, u.tenant, u.id, time.Hour)
	if err != nil {
		c.t.Fatalf("e2e: token: %v", err)
	}
	return tok
}

// dial connects an SDK client as u to url (a node or HAProxy), closed when
// the test ends. Reconnects are quick; its log goes to the test's output.
func (c *cluster) dial(t *testing.T, url string, u user, mods ...func(*client.Options)) *client.Client {
	t.Helper()
	opts := client.Options{
		Token:     c.token(u),
		Reconnect: client.Backoff{Min: 20 * time.Millisecond, Max: 500 * time.Millisecond},
		Logger:    slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})).With("client", u.name),
	}
	for _, m := range mods {
		m(&opts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, url, opts)
	if err != nil {
		t.Fatalf("e2e: %s dials %s: %v", u.name, url, err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// tctx returns a context for one call, ended with the test.
func tctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// subscribe subscribes cl to project and returns its loaded replica.
func subscribe(t *testing.T, cl *client.Client, project string) *client.Project {
	t.Helper()
	ps, err := cl.Subscribe(tctx(t), project)
	if err != nil {
		t.Fatalf("e2e: subscribe to %s: %v", project, err)
	}
	return ps[0]
}

// createProject creates a project; its creator becomes its admin.
func createProject(t *testing.T, cl *client.Client, title string) *pmv1.WorkItem {
	t.Helper()
	p, err := cl.CreateWorkItem(tctx(t), &pmv1.CreateWorkItemRequest{ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_PROJECT, Title: title})
	if err != nil {
		t.Fatalf("e2e: create project: %v", err)
	}
	return p
}

// addMember gives u a role in project.
func addMember(t *testing.T, cl *client.Client, project string, u user, role pmv1.ProjectRole) {
	t.Helper()
	if _, err := cl.AddProjectMember(tctx(t), &pmv1.AddProjectMemberRequest{ProjectId: project, UserId: u.id.String(), Role: role}); err != nil {
		t.Fatalf("e2e: add %s as %v: %v", u.name, role, err)
	}
}

// create creates an item of type typ under parent ("" for the project).
func create(t *testing.T, cl *client.Client, project, parent string, typ pmv1.WorkItemType, title string) *pmv1.WorkItem {
	t.Helper()
	w, err := cl.CreateWorkItem(tctx(t), &pmv1.CreateWorkItemRequest{ProjectId: project, ParentId: parent, ItemType: typ, Title: title})
	if err != nil {
		t.Fatalf("e2e: create %q: %v", title, err)
	}
	return w
}

// retitle renames w at its current version and returns the new state.
func retitle(t *testing.T, cl *client.Client, w *pmv1.WorkItem, title string) *pmv1.WorkItem {
	t.Helper()
	up, err := cl.UpdateWorkItem(tctx(t), &pmv1.UpdateWorkItemRequest{WorkItemId: w.Id, ExpectedVersion: w.Version, Title: &title})
	if err != nil {
		t.Fatalf("e2e: retitle %s: %v", w.Id, err)
	}
	return up.WorkItem
}

// remove deletes w (any version).
func remove(t *testing.T, cl *client.Client, w *pmv1.WorkItem) *pmv1.WorkItemDeleted {
	t.Helper()
	d, err := cl.DeleteWorkItem(tctx(t), &pmv1.DeleteWorkItemRequest{WorkItemId: w.Id})
	if err != nil {
		t.Fatalf("e2e: delete %s: %v", w.Id, err)
	}
	return d
}

// wantCode fails the test unless err is a *pm.Error with code.
func wantCode(t *testing.T, err error, code string) *pm.Error {
	t.Helper()
	perr, ok := errors.AsType[*pm.Error](err)
	if !ok || perr.Code != code {
		t.Fatalf("e2e: got error %v, want %s", err, code)
	}
	return perr
}

// ---------------------------------------------------------------- the truth

// row is a work item as stored in Postgres.
type row struct {
	Version  int64
	Revision int64
	Title    string
	Deleted  bool
}

// dbProject reads a project's revision and every one of its items,
// tombstones included, straight from Postgres (as the superuser, past the
// nodes and row-level security).
func (c *cluster) dbProject(t *testing.T, project string) (head int64, rows map[string]row) {
	t.Helper()
	ctx := tctx(t)
	if err := c.admin.QueryRow(ctx, `SELECT revision FROM project_revisions WHERE project_id = $1`, project).Scan(&head); err != nil {
		t.Fatalf("e2e: read revision of %s: %v", project, err)
	}
	res, err := c.admin.Query(ctx, `SELECT id::text, version, revision, title, deleted_at IS NOT NULL FROM work_items WHERE project_id = $1`, project)
	if err != nil {
		t.Fatalf("e2e: read items of %s: %v", project, err)
	}
	defer res.Close()
	rows = make(map[string]row)
	for res.Next() {
		var id string
		var r row
		if err := res.Scan(&id, &r.Version, &r.Revision, &r.Title, &r.Deleted); err != nil {
			t.Fatalf("e2e: scan: %v", err)
		}
		rows[id] = r
	}
	if err := res.Err(); err != nil {
		t.Fatalf("e2e: read items of %s: %v", project, err)
	}
	return head, rows
}

// diffDB describes how a replica (its items at revision rev) differs from
// the database's live items at revision head; "" when it matches.
func diffDB(items []*pmv1.WorkItem, rev, head int64, rows map[string]row) string {
	var d []string
	if rev != head {
		d = append(d, fmt.Sprintf("replica at revision %d, database at %d", rev, head))
	}
	got := make(map[string]*pmv1.WorkItem, len(items))
	for _, w := range items {
		got[w.Id] = w
	}
	for _, id := range slices.Sorted(maps.Keys(rows)) {
		r, w := rows[id], got[id]
		switch {
		case r.Deleted && w != nil:
			d = append(d, fmt.Sprintf("%s deleted in the database but live in the replica", id))
		case r.Deleted:
		case w == nil:
			d = append(d, fmt.Sprintf("%s (%q v%d) missing from the replica", id, r.Title, r.Version))
		case w.Version != r.Version || w.Revision != r.Revision || w.Title != r.Title:
			d = append(d, fmt.Sprintf("%s: replica %q v%d r%d, database %q v%d r%d", id, w.Title, w.Version, w.Revision, r.Title, r.Version, r.Revision))
		}
	}
	for id := range got {
		if _, ok := rows[id]; !ok {
			d = append(d, fmt.Sprintf("%s in the replica is not in the database", id))
		}
	}
	return strings.Join(d, "\n")
}

// assertConverged waits until replica p equals the database exactly:
// same revision, same live items at the same versions and revisions, no
// deleted item. Then it compares every field of every item with a fresh
// read through reader. Writers must have stopped.
func (c *cluster) assertConverged(t *testing.T, p *client.Project, reader *client.Client) {
	t.Helper()
	head, rows := c.dbProject(t, p.ID())
	wctx, cancel := context.WithTimeout(t.Context(), convergeWait)
	defer cancel()
	err := p.WaitFor(wctx, func(p *client.Project) bool {
		items, rev := p.Items()
		return diffDB(items, rev, head, rows) == ""
	})
	items, rev := p.Items()
	if err != nil {
		t.Fatalf("e2e: replica did not converge to the database (%v):\n%s", err, diffDB(items, rev, head, rows))
	}
	list, err := reader.GetWorkItems(tctx(t), &pmv1.GetWorkItemsRequest{ProjectId: p.ID()})
	if err != nil {
		t.Fatalf("e2e: read project: %v", err)
	}
	if list.AsOfRevision != head {
		t.Fatalf("e2e: the project changed while checking (revision %d, then %d)", head, list.AsOfRevision)
	}
	if d := diffItems(list.WorkItems, items); d != "" {
		t.Fatalf("e2e: replica and a fresh read differ:\n%s", d)
	}
}

// diffItems compares two sets of items field by field; "" when equal.
func diffItems(want, got []*pmv1.WorkItem) string {
	byID := make(map[string]*pmv1.WorkItem, len(got))
	for _, w := range got {
		byID[w.Id] = w
	}
	var d []string
	for _, w := range want {
		g := byID[w.Id]
		delete(byID, w.Id)
		if !proto.Equal(w, g) {
			d = append(d, fmt.Sprintf("want %v\n got %v", w, g))
		}
	}
	for _, g := range byID {
		d = append(d, fmt.Sprintf("unexpected %v", g))
	}
	return strings.Join(d, "\n")
}

// waitFor waits until cond holds for p.
func waitFor(t *testing.T, p *client.Project, what string, cond func(*client.Project) bool) {
	t.Helper()
	wctx, cancel := context.WithTimeout(t.Context(), convergeWait)
	defer cancel()
	if err := p.WaitFor(wctx, cond); err != nil {
		t.Fatalf("e2e: waiting for %s: %v", what, err)
	}
}

// logWatch shows a client's log in the test's output and counts its
// connection changes (Options.OnConnectionChange).
type logWatch struct {
	mu          sync.Mutex
	lost, found int
}

// watchLog returns a logWatch and the option that installs it.
func watchLog(t *testing.T, name string) (*logWatch, func(*client.Options)) {
	w := &logWatch{}
	return w, func(o *client.Options) {
		o.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})).With("client", name)
		o.OnConnectionChange = func(connected bool, _ string) {
			w.mu.Lock()
			defer w.mu.Unlock()
			if connected {
				w.found++
			} else {
				w.lost++
			}
		}
	}
}

// lostCount returns how often the client lost its connection.
func (w *logWatch) lostCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lost
}

// reconnectCount returns how often the client reconnected.
func (w *logWatch) reconnectCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.found
}
