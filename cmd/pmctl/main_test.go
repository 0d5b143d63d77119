package main

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/client"
	"github.com/pmhq/pm/node/nodetest"
	pmv1 "github.com/pmhq/pm/proto/pm/v1"
	"github.com/pmhq/pm/repo/repotest"
)

const tenant = "acme"

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// pmctl runs the command with env as its environment.
func pmctl(ctx context.Context, env map[string]string, args ...string) (code int, stdout, stderr string) {
	var out, errOut syncBuffer
	code = run(ctx, args, func(k string) string { return env[k] }, &out, &errOut)
	return code, out.String(), errOut.String()
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitFor waits until cond holds, re-checking whenever tick fires.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx := testContext(t)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestUsage(t *testing.T) {
	ctx := testContext(t)
	if code, _, stderr := pmctl(ctx, nil); code != 2 || !strings.Contains(stderr, "commands:") {
		t.Fatalf("no command: exit %d, stderr %q", code, stderr)
	}
	if code, _, _ := pmctl(ctx, nil, "frobnicate"); code != 2 {
		t.Fatalf("unknown command: exit %d", code)
	}
	for _, cmd := range []string{"token", "tail", "demo", "get"} {
		code, _, stderr := pmctl(ctx, nil, cmd, "-h")
		if code != 0 || !strings.Contains(stderr, "usage: pmctl "+cmd) {
			t.Errorf("%s -h: exit %d, stderr %q", cmd, code, stderr)
		}
	}
	// Secrets from the environment are never shown in help.
	_, _, stderr := pmctl(ctx, map[string]string{"PM_JWT_SECRET": "hush", "PM_TOKEN": "hush"}, "token", "-h")
	if strings.Contains(stderr, "hush") {
		t.Fatalf("help shows a secret: %s", stderr)
	}
}

func TestToken(t *testing.T) {
	ctx := testContext(t)
	user := uuid.New()
	code, stdout, stderr := pmctl(ctx, map[string]string{"PM_JWT_SECRET": "s3cret"},
		"token", "--tenant", tenant, "--user", user.String(), "--ttl", "2h")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var claims struct {
		TenantID string `json:"tenant_id"`
		jwt.RegisteredClaims
	}
	_, err := jwt.ParseWithClaims(strings.TrimSpace(stdout), &claims, func(*jwt.Token) (any, error) { return []byte("s3cret"), nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired())
	if err != nil {
		t.Fatalf("token %q does not verify: %v", stdout, err)
	}
	if claims.Subject != user.String() || claims.TenantID != tenant || time.Until(claims.ExpiresAt.Time) < 119*time.Minute {
		t.Fatalf("claims %+v", claims)
	}

	for _, args := range [][]string{
		{"token", "--tenant", tenant, "--user", user.String()},                       // no secret
		{"token", "--secret", "s", "--tenant", tenant, "--user", "nope"},             // not a UUID
		{"token", "--secret", "s", "--tenant", tenant, "--user", user.String(), "x"}, // extra argument
	} {
		if code, _, _ := pmctl(ctx, nil, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	if code, _, _ := pmctl(ctx, nil, "token", "--secret", "s", "--tenant", "a:b", "--user", user.String()); code != 1 {
		t.Errorf("bad tenant: exit %d, want 1", code)
	}

	// -name and -email: the claims the node shows as the user's name and email.
	code, stdout, stderr = pmctl(ctx, map[string]string{"PM_JWT_SECRET": "s3cret"},
		"token", "--tenant", tenant, "--user", user.String(), "-name", "Alice Adams", "-email", "alice@demo.test")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	profile := jwt.MapClaims{}
	if _, err := jwt.ParseWithClaims(strings.TrimSpace(stdout), profile, func(*jwt.Token) (any, error) { return []byte("s3cret"), nil }); err != nil {
		t.Fatal(err)
	}
	if profile["name"] != "Alice Adams" || profile["email"] != "alice@demo.test" {
		t.Errorf("claims %v, want name and email", profile)
	}
	if code, _, stderr := pmctl(ctx, nil, "token", "--secret", "s", "--tenant", tenant, "--user", user.String(), "-email", "nope"); code != 1 {
		t.Errorf("bad email: exit %d, want 1 (%s)", code, stderr)
	}
}

func TestTail(t *testing.T) {
	cl := nodetest.Start(t, nodetest.Options{})
	owner := uuid.New()
	c, err := client.Dial(testContext(t), cl.Nodes[0].URL(), client.Options{Token: cl.Token(tenant, owner)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Made in the store, not through a node: its event must not race the
	// tails' subscriptions below.
	projectItem, _, err := cl.Store.CreateWorkItem(testContext(t), pm.Actor{Tenant: tenant, User: owner},
		pm.NewWorkItem{Type: pm.TypeProject, Title: "P"})
	if err != nil {
		t.Fatal(err)
	}
	project := struct{ Id string }{projectItem.ID.String()}
	env := map[string]string{"PM_REDIS_URL": cl.RedisURL, "PM_REDIS_PREFIX": cl.Prefix}

	type tail struct {
		out, errOut syncBuffer
		done        chan int
	}
	start := func(args ...string) (*tail, context.CancelFunc) {
		tl := &tail{done: make(chan int, 1)}
		ctx, cancel := context.WithCancel(testContext(t))
		go func() {
			tl.done <- run(ctx, append([]string{"tail", "--tenant", tenant}, args...), func(k string) string { return env[k] }, &tl.out, &tl.errOut)
		}()
		waitFor(t, "tail to subscribe", func() bool {
			return strings.Contains(tl.errOut.String(), "subscribed to") || len(tl.done) > 0
		})
		return tl, cancel
	}
	human, stopHuman := start("--project", project.Id)
	asJSON, stopJSON := start("--project", project.Id, "--json")
	all, stopAll := start() // every project of the tenant

	task, err := c.CreateWorkItem(testContext(t), &pmv1.CreateWorkItemRequest{
		ProjectId: project.Id, ItemType: pmv1.WorkItemType_WORK_ITEM_TYPE_TASK, Title: "Write docs",
	})
	if err != nil {
		t.Fatal(err)
	}
	status := pmv1.WorkItemStatus_WORK_ITEM_STATUS_IN_PROGRESS
	if _, err := c.UpdateWorkItem(testContext(t), &pmv1.UpdateWorkItemRequest{WorkItemId: task.Id, ExpectedVersion: task.Version, Status: &status}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteWorkItem(testContext(t), &pmv1.DeleteWorkItemRequest{WorkItemId: task.Id}); err != nil {
		t.Fatal(err)
	}
	member := uuid.New()
	if _, err := c.AddProjectMember(testContext(t), &pmv1.AddProjectMemberRequest{ProjectId: project.Id, UserId: member.String(), Role: pmv1.ProjectRole_PROJECT_ROLE_VIEWER}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RemoveProjectMember(testContext(t), &pmv1.RemoveProjectMemberRequest{ProjectId: project.Id, UserId: member.String()}); err != nil {
		t.Fatal(err)
	}

	lines := func(b *syncBuffer) []string { return strings.Split(strings.TrimSpace(b.String()), "\n") }
	waitFor(t, "four human lines", func() bool { return len(lines(&human.out)) >= 4 })
	got := lines(&human.out)
	t.Logf("pmctl tail:\n%s", human.out.String())
	want := []*regexp.Regexp{
		regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} rev 2 created task ` + task.Id + ` "Write docs"$`),
		regexp.MustCompile(` rev 3 updated task ` + task.Id + ` "Write docs"  status: backlog → in_progress$`),
		regexp.MustCompile(` rev 4 deleted task ` + task.Id + ` "Write docs"$`),
		regexp.MustCompile(` rev 0 member removed user ` + member.String() + `$`),
	}
	for i, re := range want {
		if i >= len(got) || !re.MatchString(got[i]) {
			t.Errorf("line %d = %q, want match for %s\nall output:\n%s", i, at(got, i), re, human.out.String())
		}
	}

	waitFor(t, "four JSON lines", func() bool { return len(lines(&asJSON.out)) >= 4 })
	var ev struct {
		Channel  string `json:"channel"`
		Revision int64  `json:"revision"`
		Message  struct {
			WorkItemUpdated struct {
				Changes []struct {
					FieldName string `json:"fieldName"`
					NewValue  string `json:"newValue"`
				} `json:"changes"`
			} `json:"workItemUpdated"`
		} `json:"message"`
	}
	if err := json.Unmarshal([]byte(lines(&asJSON.out)[1]), &ev); err != nil {
		t.Fatalf("JSON line: %v", err)
	}
	if ev.Revision != 3 || ev.Channel != cl.Prefix+"events:"+tenant+":"+project.Id ||
		len(ev.Message.WorkItemUpdated.Changes) != 1 || ev.Message.WorkItemUpdated.Changes[0].NewValue != "in_progress" {
		t.Fatalf("JSON event = %+v", ev)
	}

	waitFor(t, "the all-projects tail", func() bool { return len(lines(&all.out)) >= 4 })
	if !strings.Contains(lines(&all.out)[0], " project "+project.Id+" rev 2 created") {
		t.Fatalf("all-projects line %q does not name the project", lines(&all.out)[0])
	}

	for _, stop := range []context.CancelFunc{stopHuman, stopJSON, stopAll} {
		stop()
	}
	for _, tl := range []*tail{human, asJSON, all} {
		if code := <-tl.done; code != 0 {
			t.Errorf("tail exited %d: %s", code, tl.errOut.String())
		}
	}
}

func at(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return ""
}

func TestDemoIsIdempotentAndGetPrintsIt(t *testing.T) {
	cl := nodetest.Start(t, nodetest.Options{})
	owner, editor, viewer := uuid.New(), uuid.New(), uuid.New()
	project := uuid.New()
	env := map[string]string{"PM_URL": cl.Nodes[0].URL(), "PM_TOKEN": cl.Token(tenant, owner)}
	args := []string{"demo", "--project", project.String(), "--editor", editor.String(), "--viewer", viewer.String()}
	ctx := testContext(t)
	actor := pm.Actor{Tenant: tenant, User: owner}

	code, stdout, stderr := pmctl(ctx, env, args...)
	if code != 0 || strings.TrimSpace(stdout) != project.String() {
		t.Fatalf("first run: exit %d, stdout %q, stderr %s", code, stdout, stderr)
	}
	items, first, err := cl.Store.ListWorkItems(ctx, actor, pm.WorkItemQuery{ProjectID: project})
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != len(demoItems)+1 {
		t.Fatalf("%d items after the seed, want %d and the project", len(items), len(demoItems))
	}
	statuses := map[pm.Status]bool{}
	for _, w := range items {
		if w.Type != pm.TypeProject {
			statuses[w.Status] = true
		}
	}
	if len(statuses) != len(pm.Statuses) {
		t.Fatalf("the demo uses statuses %v; want all of them", statuses)
	}
	members, err := cl.Store.ListMembers(ctx, actor, project)
	if err != nil {
		t.Fatal(err)
	}
	roles := map[uuid.UUID]pm.Role{}
	for _, m := range members {
		roles[m.UserID] = m.Role
	}
	if roles[owner] != pm.RoleAdmin || roles[editor] != pm.RoleEditor || roles[viewer] != pm.RoleViewer {
		t.Fatalf("members %v", roles)
	}

	if code, stdout, stderr := pmctl(ctx, env, args...); code != 0 || strings.TrimSpace(stdout) != project.String() {
		t.Fatalf("second run: exit %d, stdout %q, stderr %s", code, stdout, stderr)
	}
	_, second, err := cl.Store.ListWorkItems(ctx, actor, pm.WorkItemQuery{ProjectID: project})
	if err != nil {
		t.Fatal(err)
	}
	if second.Revision != first.Revision {
		t.Fatalf("the second run changed the project: revision %d → %d", first.Revision, second.Revision)
	}

	code, stdout, stderr = pmctl(ctx, env, "get", "--project", project.String())
	if code != 0 {
		t.Fatalf("get: exit %d: %s", code, stderr)
	}
	t.Logf("pmctl get:\n%s", stdout)
	for _, want := range []string{"Demo project", "BACKLOG (3)", "DONE (1)", "Compute fractional positions", "TITLE", editor.String()} {
		if !strings.Contains(stdout, want) {
			t.Errorf("get output lacks %q:\n%s", want, stdout)
		}
	}
	// Sections come in board order.
	if strings.Index(stdout, "BACKLOG") > strings.Index(stdout, "TODO") || strings.Index(stdout, "REVIEW") > strings.Index(stdout, "DONE") {
		t.Errorf("sections out of order:\n%s", stdout)
	}

	// A viewer cannot seed; the error says why.
	env["PM_TOKEN"] = cl.Token(tenant, viewer)
	code, _, stderr = pmctl(ctx, env, args...)
	if code != 1 || !strings.Contains(stderr, "CONFLICT") && !strings.Contains(stderr, "UNAUTHORIZED") {
		t.Fatalf("demo as the viewer: exit %d, stderr %s", code, stderr)
	}
}

func TestCreateUpdateDelete(t *testing.T) {
	cl := nodetest.Start(t, nodetest.Options{})
	owner := uuid.New()
	env := map[string]string{"PM_URL": cl.Nodes[0].URL(), "PM_TOKEN": cl.Token(tenant, owner)}
	ctx := testContext(t)
	idOf := regexp.MustCompile(`created \w+ ([0-9a-f-]{36}) `)
	create := func(args ...string) string {
		t.Helper()
		code, stdout, stderr := pmctl(ctx, env, append([]string{"create"}, args...)...)
		m := idOf.FindStringSubmatch(stdout)
		if code != 0 || m == nil {
			t.Fatalf("create %v: exit %d, stdout %q, stderr %s", args, code, stdout, stderr)
		}
		return m[1]
	}
	project := create("-type", "project", "-title", "Ops")
	epic := create("-project", project, "-type", "epic", "-title", "Alerts")
	task := create("-parent", epic, "-title", "Page on 5xx", "-status", "todo", "-points", "3")

	code, stdout, stderr := pmctl(ctx, env, "update", "-project", project, "-item", task, "-status", "in_progress", "-points", "none", "-assignee", owner.String())
	if code != 0 || !strings.Contains(stdout, "version 2") || !strings.Contains(stdout, "status: todo → in_progress") || !strings.Contains(stdout, "story_points: 3 → ∅") {
		t.Fatalf("update: exit %d, stdout %q, stderr %s", code, stdout, stderr)
	}
	// A stale version is refused with the current one.
	code, _, stderr = pmctl(ctx, env, "update", "-project", project, "-item", task, "-title", "late", "-version", "1")
	if code != 1 || !strings.Contains(stderr, "CONFLICT") {
		t.Fatalf("stale update: exit %d, stderr %s", code, stderr)
	}
	// Bad input is a usage error naming the flag.
	code, _, stderr = pmctl(ctx, env, "create", "-project", project, "-title", "x", "-status", "blocked")
	if code != 2 || !strings.Contains(stderr, "-status") {
		t.Fatalf("bad status: exit %d, stderr %s", code, stderr)
	}
	code, _, stderr = pmctl(ctx, env, "delete", "-item", epic)
	if code != 1 || !strings.Contains(stderr, "DELETE_BLOCKED") {
		t.Fatalf("delete with a child: exit %d, stderr %s", code, stderr)
	}
	for _, id := range []string{task, epic} {
		if code, stdout, stderr := pmctl(ctx, env, "delete", "-item", id); code != 0 || !strings.Contains(stdout, "deleted "+id) {
			t.Fatalf("delete %s: exit %d, stdout %q, stderr %s", id, code, stdout, stderr)
		}
	}
	items, _, err := cl.Store.ListWorkItems(ctx, pm.Actor{Tenant: tenant, User: owner}, pm.WorkItemQuery{ProjectID: uuid.MustParse(project)})
	if err != nil || len(items) != 1 {
		t.Fatalf("after deletes: %d live items, %v", len(items), err)
	}
}

// A project whose board is larger than one frame: get prints all of it, and
// update finds an item in the last chunk.
func TestLargeProject(t *testing.T) {
	cl := nodetest.Start(t, nodetest.Options{})
	owner := uuid.New()
	env := map[string]string{"PM_URL": cl.Nodes[0].URL(), "PM_TOKEN": cl.Token(tenant, owner)}
	ctx := testContext(t)
	code, stdout, stderr := pmctl(ctx, env, "create", "-type", "project", "-title", "Archive")
	m := regexp.MustCompile(`created \w+ ([0-9a-f-]{36}) `).FindStringSubmatch(stdout)
	if code != 0 || m == nil {
		t.Fatalf("create: exit %d, stdout %q, stderr %s", code, stdout, stderr)
	}
	project := m[1]
	items := repotest.MustInsertItems(t, cl.DatabaseURL, pm.Actor{Tenant: tenant, User: owner}, uuid.MustParse(project), 270,
		func(i int, w *pm.WorkItem) { w.Description = strings.Repeat("d", pm.DescriptionMaxBytes) })

	code, stdout, stderr = pmctl(ctx, env, "get", "--project", project)
	if code != 0 {
		t.Fatalf("get: exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "BACKLOG (270)") || strings.Count(stdout, " Task ") != 270 {
		t.Fatalf("get shows %d tasks:\n%.2000s", strings.Count(stdout, " Task "), stdout)
	}
	last := items[len(items)-1].ID.String()
	code, stdout, stderr = pmctl(ctx, env, "update", "-project", project, "-item", last, "-status", "done")
	if code != 0 || !strings.Contains(stdout, "version 2") {
		t.Fatalf("update: exit %d, stdout %q, stderr %s", code, stdout, stderr)
	}
}
