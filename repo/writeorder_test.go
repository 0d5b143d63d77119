package repo_test

// What the write path guarantees when writes to one project run at once:
// revisions gap-free and in commit order, no live item under a deleted
// parent, role and assignee checks ordered against membership changes, and
// no deadlock on the way. Real goroutines on a real Postgres; the races that
// matter are forced with a gate (see race), never with sleeps.

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/repo"
	"github.com/pmhq/pm/repo/repotest"
)

// raceFixture is a fixture whose store logs at debug level (so that a retried
// transaction shows), with what a gate needs: the database's name, a pool of
// the application role and one of the administrator.
type raceFixture struct {
	*fixture
	logs       *syncBuffer
	db         string
	app, super *pgxpool.Pool
}

func newRaceFixture(t *testing.T, maxConns int32) *raceFixture {
	t.Helper()
	dsn := repotest.MustMigratedDatabaseURL(t)
	var logs syncBuffer
	s := repotest.MustOpen(t, repo.Config{
		DatabaseURL: dsn, MaxConns: maxConns,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return &raceFixture{
		fixture: newFixtureOn(t, s), logs: &logs, db: cfg.Database,
		app: repotest.MustPool(t, dsn), super: repotest.MustPool(t, repotest.AdminDatabaseURL(t, dsn)),
	}
}

// noRetries fails when the store ran a transaction again: a deadlock or a
// serialization failure happened on the way.
func (f *raceFixture) noRetries(t *testing.T) {
	t.Helper()
	if out := f.logs.String(); strings.Contains(out, "retrying transaction") {
		t.Errorf("transactions were retried:\n%s", out)
	}
}

// race runs ops at once while a connection of the test holds the project's
// revision row, so that none of them can commit a write. It lets go once
// every op either waits for a lock (on that row, or on a row another op
// holds) or has returned, then waits for the ops to end. So the ops are all
// in flight together, whichever locks they take first.
func (f *raceFixture) race(t *testing.T, ops ...func()) {
	t.Helper()
	ctx := t.Context()
	hold, err := f.app.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	release := func() { _ = hold.Rollback(context.WithoutCancel(ctx)) }
	defer release()
	if _, err := hold.Exec(ctx, `SELECT set_config('app.tenant_id', $1, true)`, f.fixture.admin.Tenant); err != nil {
		t.Fatal(err)
	}
	tag, err := hold.Exec(ctx, `SELECT 1 FROM project_revisions WHERE tenant_id = $1 AND project_id = $2 FOR UPDATE`,
		f.fixture.admin.Tenant, f.project.ID)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("hold the project's revision row: %d rows, %v", tag.RowsAffected(), err)
	}
	var (
		wg       sync.WaitGroup
		returned atomic.Int64
	)
	for _, op := range ops {
		wg.Go(func() {
			defer returned.Add(1)
			op()
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var waiting int64
		err := f.super.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = $1 AND application_name = 'pm' AND wait_event_type = 'Lock'`, f.db).Scan(&waiting)
		if err != nil {
			release()
			wg.Wait()
			t.Fatalf("read waiting backends: %v", err)
		}
		if waiting+returned.Load() >= int64(len(ops)) {
			break
		}
		if time.Now().After(deadline) {
			release()
			wg.Wait()
			t.Fatalf("after 10s, %d of %d ops wait for a lock and %d returned", waiting, len(ops), returned.Load())
		}
		time.Sleep(2 * time.Millisecond) // polling the server's view, not ordering the ops
	}
	release()
	wg.Wait()
}

// rounds runs round gated times with its ops raced by f.race (all in
// flight before any can write), then free times released together.
func (f *raceFixture) rounds(t *testing.T, gated, free int, round func(t *testing.T, run func(...func()))) {
	t.Helper()
	t.Run("gated", func(t *testing.T) {
		for range gated {
			round(t, func(ops ...func()) { f.race(t, ops...) })
		}
	})
	t.Run("free", func(t *testing.T) {
		for range free {
			round(t, together)
		}
	})
}

// together runs ops at once, released by one start signal, and waits for them.
func together(ops ...func()) {
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, op := range ops {
		wg.Go(func() {
			<-start
			op()
		})
	}
	close(start)
	wg.Wait()
}

// noLiveOrphans fails when a live item of the project has a deleted parent.
func (f *raceFixture) noLiveOrphans(t *testing.T) {
	t.Helper()
	all, _, err := f.s.ListWorkItems(t.Context(), f.viewer, pm.WorkItemQuery{ProjectID: f.project.ID, SinceRevision: 1})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[uuid.UUID]pm.WorkItem{f.project.ID: f.project}
	for _, w := range all {
		byID[w.ID] = w
	}
	for _, w := range all {
		if w.Deleted() || w.Type == pm.TypeProject {
			continue
		}
		if p, ok := byID[w.ParentID]; !ok || p.Deleted() {
			t.Errorf("live %s %q (revision %d) is under %s, which is deleted (revision %d)", w.Type, w.Title, w.Revision, w.ParentID, p.Revision)
		}
	}
}

// TestWritesCommitInRevisionOrder runs writers of every kind in one project
// while a reader checks, snapshot after snapshot, that what has committed is
// exactly revisions 1..head, and a client keeps a replica by
// since_revision deltas. Membership changes run alongside: their entries
// carry the head they saw, which must sit between the item writes that
// committed before and after them.
func TestWritesCommitInRevisionOrder(t *testing.T) {
	const writers, rounds = 6, 10
	f := newRaceFixture(t, writers+6)
	ctx := t.Context()
	epics := []pm.WorkItem{f.create(t, pm.NewWorkItem{Type: pm.TypeEpic}), f.create(t, pm.NewWorkItem{Type: pm.TypeEpic})}
	base := f.revision(t)

	var (
		mu        sync.Mutex
		revisions []int64 // of every committed write after base
	)
	committed := func(w pm.WorkItem, err error, what string) bool {
		if err != nil {
			t.Errorf("%s: %v", what, err)
			return false
		}
		mu.Lock()
		revisions = append(revisions, w.Revision)
		mu.Unlock()
		return true
	}
	writer := func(i int) {
		story, _, err := f.s.CreateWorkItem(ctx, f.editor, pm.NewWorkItem{Type: pm.TypeStory, ParentID: epics[i%2].ID, Title: fmt.Sprint("story ", i)})
		if !committed(story, err, "create story") {
			return
		}
		for r := range rounds {
			task, _, err := f.s.CreateWorkItem(ctx, f.editor, pm.NewWorkItem{Type: pm.TypeTask, ParentID: story.ID, Title: fmt.Sprintf("task %d.%d", i, r)})
			if !committed(task, err, "create task") {
				return
			}
			task, _, err = f.s.UpdateWorkItem(ctx, f.editor, task.ID, task.Version, pm.WorkItemPatch{Title: ptr(fmt.Sprintf("task %d.%d renamed", i, r))})
			if !committed(task, err, "update task") {
				return
			}
			story, _, err = f.s.UpdateWorkItem(ctx, f.editor, story.ID, story.Version, pm.WorkItemPatch{ParentID: ptr(epics[(i+r+1)%2].ID)})
			if !committed(story, err, "move story") {
				return
			}
			task, err = f.s.DeleteWorkItem(ctx, f.editor, task.ID, task.Version)
			if !committed(task, err, "delete task") {
				return
			}
		}
	}

	// A reader's snapshot: the head, the revisions of the item entries in
	// the activity log in id order, and which membership entries it saw.
	type snapshot struct {
		head    int64
		items   []int64
		members map[int64]bool
	}
	var snaps []snapshot
	read := func() {
		tx, err := f.app.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
		if err != nil {
			t.Error(err)
			return
		}
		defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
		sn := snapshot{members: map[int64]bool{}}
		err = tx.QueryRow(ctx, `SELECT set_config('app.tenant_id', $1, true),
			(SELECT revision FROM project_revisions WHERE tenant_id = $1 AND project_id = $2)`,
			f.fixture.admin.Tenant, f.project.ID).Scan(new(string), &sn.head)
		if err != nil {
			t.Error(err)
			return
		}
		rows, err := tx.Query(ctx, `SELECT id, revision, work_item_id IS NOT NULL FROM activity_log
			WHERE tenant_id = $1 AND project_id = $2 ORDER BY id`, f.fixture.admin.Tenant, f.project.ID)
		if err != nil {
			t.Error(err)
			return
		}
		var (
			id, revision, last int64
			item               bool
		)
		_, err = pgx.ForEachRow(rows, []any{&id, &revision, &item}, func() error {
			if revision < last {
				return fmt.Errorf("activity entry %d has revision %d, after an entry at %d", id, revision, last)
			}
			last = revision
			if item {
				sn.items = append(sn.items, revision)
			} else {
				sn.members[id] = true
			}
			return nil
		})
		if err != nil {
			t.Error(err)
			return
		}
		snaps = append(snaps, sn)
	}

	// The client: a full load, then since_revision deltas.
	replica := map[uuid.UUID]pm.WorkItem{}
	items, snap, err := f.s.ListWorkItems(ctx, f.viewer, pm.WorkItemQuery{ProjectID: f.project.ID})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range items {
		replica[w.ID] = w
	}
	cursor := snap.Revision
	catchUp := func() {
		items, snap, err := f.s.ListWorkItems(ctx, f.viewer, pm.WorkItemQuery{ProjectID: f.project.ID, SinceRevision: cursor})
		if err != nil {
			t.Error(err)
			return
		}
		for _, w := range items {
			if w.Revision <= cursor || w.Revision > snap.Revision {
				t.Errorf("delta since %d at head %d holds %s at revision %d", cursor, snap.Revision, w.ID, w.Revision)
			}
			replica[w.ID] = w
		}
		cursor = snap.Revision
	}

	done := make(chan struct{})
	var observers, wg sync.WaitGroup
	observers.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			read()
			catchUp()
		}
	})
	spare := uuid.New()
	observers.Go(func() {
		roles := []pm.Role{pm.RoleViewer, pm.RoleEditor}
		for n := 0; ; n++ {
			select {
			case <-done:
				return
			default:
			}
			var err error
			if n%3 == 2 {
				_, err = f.s.RemoveMember(ctx, f.fixture.admin, f.project.ID, spare)
			} else {
				_, err = f.s.PutMember(ctx, f.fixture.admin, f.project.ID, spare, roles[n%3])
			}
			if err != nil {
				t.Errorf("membership change %d: %v", n, err)
				return
			}
		}
	})
	for i := range writers {
		wg.Go(func() { writer(i) })
	}
	wg.Wait()
	close(done)
	observers.Wait()
	read()
	catchUp()
	if t.Failed() {
		return
	}

	// Every committed write has its own revision, and together they fill
	// base+1..head.
	head := f.revision(t)
	slices.Sort(revisions)
	if want := writers * (1 + 4*rounds); len(revisions) != want {
		t.Fatalf("%d writes committed, want %d", len(revisions), want)
	}
	for i, r := range revisions {
		if r != base+1+int64(i) {
			t.Fatalf("revisions of the writes are not %d..%d without gaps or repeats: at %d, %d", base+1, head, i, r)
		}
	}
	if last := revisions[len(revisions)-1]; last != head {
		t.Errorf("head = %d, the last write's revision %d", head, last)
	}

	// Each snapshot saw exactly the item writes 1..its head, in order.
	if len(snaps) < 3 {
		t.Errorf("only %d snapshots were read while the writers ran", len(snaps))
	}
	for _, sn := range snaps {
		for i, r := range sn.items {
			if r != int64(i)+1 {
				t.Fatalf("a snapshot at head %d saw item writes at revisions %v, want 1..%d", sn.head, sn.items, sn.head)
			}
		}
		if int64(len(sn.items)) != sn.head {
			t.Fatalf("a snapshot at head %d saw %d item writes", sn.head, len(sn.items))
		}
	}

	// A membership entry at revision m committed after the write at m and
	// before the one at m+1: a snapshot saw it only if its head was at m or
	// later, and missed it only if its head was at m or earlier.
	entries, err := f.s.ListActivity(ctx, f.viewer, pm.ActivityQuery{ProjectID: f.project.ID, Limit: pm.ActivityPageMax})
	if err != nil {
		t.Fatal(err)
	}
	members := 0
	for _, e := range entries {
		if e.MemberUserID != spare {
			continue
		}
		members++
		for _, sn := range snaps {
			if sn.members[e.ID] && e.Revision > sn.head || !sn.members[e.ID] && e.Revision < sn.head {
				t.Errorf("%s of the spare member at revision %d: seen %v by a snapshot at head %d", e.Action, e.Revision, sn.members[e.ID], sn.head)
			}
		}
	}
	if members == 0 {
		t.Errorf("no membership change ran alongside the writers")
	}

	// The client's replica is what a fresh load returns.
	final, _, err := f.s.ListWorkItems(ctx, f.viewer, pm.WorkItemQuery{ProjectID: f.project.ID})
	if err != nil {
		t.Fatal(err)
	}
	var live []pm.WorkItem
	for _, w := range replica {
		if !w.Deleted() {
			live = append(live, w)
		}
	}
	if !slices.Equal(loadOrder(live), loadOrder(final)) {
		t.Errorf("the replica kept by deltas has %d live items, a fresh load %d; they differ", len(live), len(final))
	}
	f.noRetries(t)
}

// TestDeleteRacesChildCreate deletes an item while a child is created under
// it: one of the two wins, and no live child is left under a deleted parent.
func TestDeleteRacesChildCreate(t *testing.T) {
	f := newRaceFixture(t, 4)
	ctx := t.Context()
	check := func(t *testing.T, delErr, createErr error) {
		t.Helper()
		switch {
		case delErr == nil && createErr == nil:
			t.Errorf("both the delete and the create of a child committed")
		case delErr == nil:
			wantMessage(t, wantCode(t, createErr, pm.EValidation, "parent_id"), "deleted")
		case createErr == nil:
			wantCode(t, delErr, pm.EDeleteBlocked, "")
		default:
			t.Errorf("both failed: delete %v; create %v", delErr, createErr)
		}
	}
	round := func(t *testing.T, run func(...func())) {
		epic := f.create(t, pm.NewWorkItem{Type: pm.TypeEpic})
		var delErr, createErr error
		run(
			func() { _, delErr = f.s.DeleteWorkItem(ctx, f.editor, epic.ID, 0) },
			func() {
				_, _, createErr = f.s.CreateWorkItem(ctx, f.editor, pm.NewWorkItem{Type: pm.TypeStory, ParentID: epic.ID, Title: "child"})
			},
		)
		check(t, delErr, createErr)
	}
	f.rounds(t, 4, 20, round)
	f.noLiveOrphans(t)
	f.noRetries(t)
}

// TestReparentRacesParentDelete moves an item under a new parent while that
// parent is deleted: one of the two wins, and the item never ends up live
// under a deleted parent.
func TestReparentRacesParentDelete(t *testing.T) {
	f := newRaceFixture(t, 4)
	ctx := t.Context()
	epic := f.create(t, pm.NewWorkItem{Type: pm.TypeEpic})
	round := func(t *testing.T, run func(...func())) {
		from := f.create(t, pm.NewWorkItem{Type: pm.TypeStory, ParentID: epic.ID})
		to := f.create(t, pm.NewWorkItem{Type: pm.TypeStory, ParentID: epic.ID})
		task := f.create(t, pm.NewWorkItem{Type: pm.TypeTask, ParentID: from.ID})
		var delErr, moveErr error
		run(
			func() { _, delErr = f.s.DeleteWorkItem(ctx, f.editor, to.ID, 0) },
			func() {
				_, _, moveErr = f.s.UpdateWorkItem(ctx, f.editor, task.ID, task.Version, pm.WorkItemPatch{ParentID: ptr(to.ID)})
			},
		)
		switch {
		case delErr == nil && moveErr == nil:
			t.Errorf("both the delete of the new parent and the move under it committed")
		case delErr == nil:
			wantMessage(t, wantCode(t, moveErr, pm.EValidation, "parent_id"), "deleted")
		case moveErr == nil:
			wantCode(t, delErr, pm.EDeleteBlocked, "")
		default:
			t.Errorf("both failed: delete %v; move %v", delErr, moveErr)
		}
	}
	f.rounds(t, 4, 20, round)
	f.noLiveOrphans(t)
	f.noRetries(t)
}

// TestMembershipChangeRacesMembersWrite removes a member, or demotes them to
// viewer, while they write; and removes a member while an item is assigned
// to them. The write either commits first, at a revision no later than the
// one the membership entry records, or is refused; it never commits after
// the change.
func TestMembershipChangeRacesMembersWrite(t *testing.T) {
	f := newRaceFixture(t, 4)
	ctx := t.Context()
	// lastEntry returns the newest membership entry of user.
	lastEntry := func(t *testing.T, user uuid.UUID) pm.ActivityEntry {
		t.Helper()
		entries, err := f.s.ListActivity(ctx, f.viewer, pm.ActivityQuery{ProjectID: f.project.ID, Limit: pm.ActivityPageMax})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.MemberUserID == user {
				return e
			}
		}
		t.Fatalf("no membership entry of %s", user)
		return pm.ActivityEntry{}
	}
	changes := []struct {
		name   string
		change func(user uuid.UUID) error
		refuse string // the code and field a refused write gets
		field  string
		assign bool // the member is the assignee of an editor's create, not the writer
	}{
		{"removed while writing", func(u uuid.UUID) error {
			_, err := f.s.RemoveMember(ctx, f.fixture.admin, f.project.ID, u)
			return err
		}, pm.EUnauthorized, "", false},
		{"demoted while writing", func(u uuid.UUID) error {
			_, err := f.s.PutMember(ctx, f.fixture.admin, f.project.ID, u, pm.RoleViewer)
			return err
		}, pm.EUnauthorized, "", false},
		{"removed while assigned", func(u uuid.UUID) error {
			_, err := f.s.RemoveMember(ctx, f.fixture.admin, f.project.ID, u)
			return err
		}, pm.EValidation, "assignee_id", true},
	}
	for _, tc := range changes {
		t.Run(tc.name, func(t *testing.T) {
			round := func(t *testing.T, run func(...func())) {
				member := pm.Actor{Tenant: f.fixture.admin.Tenant, User: uuid.New()}
				repotest.MustMember(t, f.s, f.fixture.admin, f.project.ID, member.User, pm.RoleEditor)
				task := f.create(t, pm.NewWorkItem{Type: pm.TypeTask})
				var (
					w                   pm.WorkItem
					changeErr, writeErr error
				)
				write := func() {
					w, _, writeErr = f.s.UpdateWorkItem(ctx, member, task.ID, task.Version, pm.WorkItemPatch{Title: ptr("written by the member")})
				}
				if tc.assign {
					write = func() {
						w, _, writeErr = f.s.CreateWorkItem(ctx, f.editor, pm.NewWorkItem{
							Type: pm.TypeTask, ProjectID: f.project.ID, Title: "assigned", AssigneeID: member.User,
						})
					}
				}
				run(func() { changeErr = tc.change(member.User) }, write)
				if changeErr != nil {
					t.Fatalf("membership change: %v", changeErr)
				}
				entry := lastEntry(t, member.User)
				if writeErr != nil {
					wantCode(t, writeErr, tc.refuse, tc.field)
					return
				}
				if w.Revision > entry.Revision {
					t.Errorf("the write committed at revision %d, after the membership change at %d", w.Revision, entry.Revision)
				}
			}
			f.rounds(t, 4, 15, round)
		})
	}
	f.noRetries(t)
}
