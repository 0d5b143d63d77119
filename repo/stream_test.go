package repo_test

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/repo"
	"github.com/pmhq/pm/repo/repotest"
)

// streamed is what StreamWorkItems handed out.
type streamed struct {
	pages [][]pm.WorkItem
	snaps []pm.Snapshot
}

func (s *streamed) items() []pm.WorkItem { return slices.Concat(s.pages...) }

// stream runs StreamWorkItems and records every page (copied) and snapshot.
// after, if set, runs after each page with its number.
func stream(t *testing.T, s *repo.Store, actor pm.Actor, q pm.WorkItemQuery, after func(page int)) (*streamed, error) {
	t.Helper()
	var got streamed
	err := s.StreamWorkItems(t.Context(), actor, q, func(snap pm.Snapshot, page []pm.WorkItem) error {
		got.pages = append(got.pages, slices.Clone(page))
		got.snaps = append(got.snaps, snap)
		if after != nil {
			after(len(got.pages))
		}
		return nil
	})
	return &got, err
}

// loadOrder sorts items as a load returns them: by position, byte-wise, then id.
func loadOrder(items []pm.WorkItem) []pm.WorkItem {
	items = slices.Clone(items)
	slices.SortFunc(items, func(a, b pm.WorkItem) int {
		return cmp.Or(strings.Compare(a.Position, b.Position), strings.Compare(a.ID.String(), b.ID.String()))
	})
	return items
}

func itemIDs(items []pm.WorkItem) []uuid.UUID {
	out := make([]uuid.UUID, len(items))
	for i, w := range items {
		out[i] = w.ID
	}
	return out
}

// pagedFixture is a fixture whose store reads loads in pages of at most
// rows items and bytes of text.
func pagedFixture(t *testing.T, rows, bytes int) (*fixture, string) {
	t.Helper()
	dsn := repotest.MustMigratedDatabaseURL(t)
	s := repotest.MustOpen(t, repo.Config{DatabaseURL: dsn, LoadPageRows: rows, LoadPageBytes: bytes})
	return newFixtureOn(t, s), dsn
}

// oneSnapshot checks that every page came with the same snapshot.
func (s *streamed) oneSnapshot(t *testing.T) pm.Snapshot {
	t.Helper()
	if len(s.snaps) == 0 {
		t.Fatal("no page handed out")
	}
	for i, snap := range s.snaps {
		if snap != s.snaps[0] {
			t.Fatalf("page %d has snapshot %+v, page 0 %+v", i, snap, s.snaps[0])
		}
	}
	return s.snaps[0]
}

// Keyset pages walk (position, id) across ties in position without skipping
// or repeating an item.
func TestStreamPagesThroughTies(t *testing.T) {
	f, dsn := pagedFixture(t, 4, 1<<20)
	// 30 tasks on 7 positions: runs of equal positions longer than a page.
	positions := []string{"a1", "a2", "a2V", "a3", "a4", "a5", "a6"}
	items := repotest.MustInsertItems(t, dsn, f.admin, f.project.ID, 30, func(i int, w *pm.WorkItem) {
		w.Position = positions[i*i%len(positions)]
	})
	want := loadOrder(append(items, f.project))

	got, err := stream(t, f.s, f.viewer, pm.WorkItemQuery{ProjectID: f.project.ID}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(itemIDs(got.items()), itemIDs(want)) {
		t.Fatalf("streamed %v\nwant     %v", itemIDs(got.items()), itemIDs(want))
	}
	for i, p := range got.pages {
		if len(p) == 0 || len(p) > 4 {
			t.Fatalf("page %d holds %d items; want 1..4", i, len(p))
		}
	}
	if len(got.pages) != 8 { // 31 items, 4 a page
		t.Fatalf("%d pages, want 8", len(got.pages))
	}
	if snap := got.oneSnapshot(t); snap.Revision != items[0].Revision {
		t.Fatalf("snapshot revision %d, want %d", snap.Revision, items[0].Revision)
	}
	// ListWorkItems reads the same, in one slice.
	all, _, err := f.s.ListWorkItems(t.Context(), f.viewer, pm.WorkItemQuery{ProjectID: f.project.ID})
	if err != nil || !slices.Equal(itemIDs(all), itemIDs(want)) {
		t.Fatalf("ListWorkItems = %v, %v", itemIDs(all), err)
	}
}

// A page holds about LoadPageBytes of text, and at least one item however
// large.
func TestStreamPagesAreBoundedInBytes(t *testing.T) {
	const budget = 40 << 10
	f, dsn := pagedFixture(t, 1000, budget)
	items := repotest.MustInsertItems(t, dsn, f.admin, f.project.ID, 40, func(i int, w *pm.WorkItem) {
		w.Description = strings.Repeat("x", (i%4)*pm.DescriptionMaxBytes/3) // 0, 21, 43 or 64 KiB
	})
	got, err := stream(t, f.s, f.viewer, pm.WorkItemQuery{ProjectID: f.project.ID}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := loadOrder(append(items, f.project)); !slices.Equal(itemIDs(got.items()), itemIDs(want)) {
		t.Fatalf("streamed %d items, want %d in load order", len(got.items()), len(want))
	}
	size := func(w pm.WorkItem) int { return len(w.Title) + len(w.Description) + len(w.Position) + 256 }
	for i, p := range got.pages {
		before := 0
		for _, w := range p[:len(p)-1] {
			before += size(w)
		}
		if before >= budget {
			t.Fatalf("page %d: %d bytes before its last item; the budget is %d", i, before, budget)
		}
		if i < len(got.pages)-1 && before+size(p[len(p)-1]) < budget {
			t.Fatalf("page %d ends early: the next item would have fit", i)
		}
	}
}

// Deltas page the same way and include tombstones; an empty result is one
// empty page.
func TestStreamDeltaWithTombstones(t *testing.T) {
	f, _ := pagedFixture(t, 2, 1<<20)
	ctx := t.Context()
	var tasks []pm.WorkItem
	for i := range 9 {
		tasks = append(tasks, f.create(t, pm.NewWorkItem{Type: pm.TypeTask, Position: []string{"a1", "a2", "a3"}[i%3]}))
	}
	_, before, err := f.s.ListWorkItems(ctx, f.viewer, pm.WorkItemQuery{ProjectID: f.project.ID})
	if err != nil {
		t.Fatal(err)
	}
	since := before.Revision
	var changed []pm.WorkItem
	for _, w := range tasks[:5] {
		tomb, err := f.s.DeleteWorkItem(ctx, f.editor, w.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		changed = append(changed, tomb)
	}
	moved, _, err := f.s.UpdateWorkItem(ctx, f.editor, tasks[7].ID, tasks[7].Version, pm.WorkItemPatch{Position: ptr("a1")})
	if err != nil {
		t.Fatal(err)
	}
	changed = append(changed, moved)
	fresh := f.create(t, pm.NewWorkItem{Type: pm.TypeTask, Position: "a2"})
	changed = append(changed, fresh)

	got, err := stream(t, f.s, f.viewer, pm.WorkItemQuery{ProjectID: f.project.ID, SinceRevision: since}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := loadOrder(changed); !slices.Equal(itemIDs(got.items()), itemIDs(want)) {
		t.Fatalf("delta %v\nwant  %v", itemIDs(got.items()), itemIDs(want))
	}
	tombs := 0
	for _, w := range got.items() {
		if w.Deleted() {
			tombs++
		}
	}
	if snap := got.oneSnapshot(t); tombs != 5 || snap.Revision != fresh.Revision || len(got.pages) != 4 {
		t.Fatalf("%d tombstones, revision %d, %d pages; want 5, %d, 4", tombs, snap.Revision, len(got.pages), fresh.Revision)
	}
	byTime, err := stream(t, f.s, f.viewer, pm.WorkItemQuery{ProjectID: f.project.ID, SinceTime: before.Time}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := loadOrder(changed); !slices.Equal(itemIDs(byTime.items()), itemIDs(want)) {
		t.Fatalf("since time %v\nwant       %v", itemIDs(byTime.items()), itemIDs(want))
	}

	none, err := stream(t, f.s, f.viewer, pm.WorkItemQuery{ProjectID: f.project.ID, SinceRevision: fresh.Revision}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(none.pages) != 1 || len(none.pages[0]) != 0 || none.snaps[0].Revision != fresh.Revision {
		t.Fatalf("empty delta: %d pages (%v) at %d; want one empty page", len(none.pages), none.pages, none.snaps[0].Revision)
	}
}

// Writes that commit while a load is between pages do not show in it: the
// load is one snapshot, even for items that move across the keyset cursor.
func TestStreamIsOneSnapshot(t *testing.T) {
	f, dsn := pagedFixture(t, 3, 1<<20)
	ctx := t.Context()
	items := repotest.MustInsertItems(t, dsn, f.admin, f.project.ID, 12, nil)
	want := loadOrder(append(slices.Clone(items), f.project))
	first, last := want[1], want[len(want)-1] // the first page holds the project and first

	got, err := stream(t, f.s, f.viewer, pm.WorkItemQuery{ProjectID: f.project.ID}, func(page int) {
		if page != 1 {
			return
		}
		// Between the first and second page: move the first task behind the
		// cursor to the end, the last task in front of it, delete one, add one.
		if _, _, err := f.s.UpdateWorkItem(ctx, f.editor, first.ID, first.Version, pm.WorkItemPatch{Position: ptr("b00")}); err != nil {
			t.Error(err)
		}
		if _, _, err := f.s.UpdateWorkItem(ctx, f.editor, last.ID, last.Version, pm.WorkItemPatch{Position: ptr("a0V")}); err != nil {
			t.Error(err)
		}
		if _, err := f.s.DeleteWorkItem(ctx, f.editor, want[6].ID, 0); err != nil {
			t.Error(err)
		}
		f.create(t, pm.NewWorkItem{Type: pm.TypeTask, Position: "a5"})
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(itemIDs(got.items()), itemIDs(want)) {
		t.Fatalf("streamed %v\nwant     %v (the snapshot before the writes)", itemIDs(got.items()), itemIDs(want))
	}
	if snap := got.oneSnapshot(t); snap.Revision != items[0].Revision {
		t.Fatalf("snapshot revision %d, want %d", snap.Revision, items[0].Revision)
	}
	for _, w := range got.items() {
		if w.Version != 1 {
			t.Fatalf("item %s at version %d: a write leaked into the snapshot", w.ID, w.Version)
		}
	}
	// The next load sees the writes.
	if after := f.live(t); len(after) != len(want) || after[1].ID != last.ID || after[len(after)-1].ID != first.ID {
		t.Fatalf("after the writes: %v", itemIDs(after))
	}
}

// An error from the page function ends the read: it is returned and the
// read does not run again, whatever the error.
func TestStreamStopsAtPageError(t *testing.T) {
	f, dsn := pagedFixture(t, 2, 1<<20)
	repotest.MustInsertItems(t, dsn, f.admin, f.project.ID, 10, nil)
	stop := &pgconn.PgError{Code: "40001", Message: "looks like a serialization failure"}
	calls := 0
	err := f.s.StreamWorkItems(t.Context(), f.viewer, pm.WorkItemQuery{ProjectID: f.project.ID}, func(pm.Snapshot, []pm.WorkItem) error {
		calls++
		return stop
	})
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("StreamWorkItems = %v after %d calls; want the page's error after 1", err, calls)
	}
}

// A database failure after a page was handed out is UNAVAILABLE, and the
// read does not start over.
func TestStreamFailsAfterAPageWithoutRetry(t *testing.T) {
	f, dsn := pagedFixture(t, 2, 1<<20)
	repotest.MustInsertItems(t, dsn, f.admin, f.project.ID, 10, nil)
	admin := repotest.MustPool(t, repotest.AdminDatabaseURL(t, dsn))
	got, err := stream(t, f.s, f.viewer, pm.WorkItemQuery{ProjectID: f.project.ID}, func(page int) {
		if page != 1 {
			return
		}
		// The load's connection sits idle in its transaction while the page is handled.
		var n int
		err := admin.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE datname = current_database() AND state = 'idle in transaction' AND usename = $1`, repotest.AppRole).Scan(&n)
		if err != nil || n != 1 {
			t.Errorf("terminate the load's backend: %d terminated, %v", n, err)
		}
	})
	wantCode(t, err, pm.EUnavailable, "")
	if len(got.pages) != 1 {
		t.Fatalf("%d pages handed out; want 1 (no second attempt)", len(got.pages))
	}
}

// Loads that hold their connections (their caller is slow to take the
// pages) take at most MaxConcurrentLoads of them: writes still get one, and
// the other loads wait for a turn instead of failing.
func TestSlowLoadsLeaveConnectionsToWrites(t *testing.T) {
	dsn := repotest.MustMigratedDatabaseURL(t)
	s := repotest.MustOpen(t, repo.Config{DatabaseURL: dsn, MaxConns: 2, AcquireTimeout: 500 * time.Millisecond, LoadPageRows: 2})
	f := newFixtureOn(t, s)
	repotest.MustInsertItems(t, dsn, f.admin, f.project.ID, 10, nil)
	q := pm.WorkItemQuery{ProjectID: f.project.ID}

	// Two loads stop in their first page until released.
	release := make(chan struct{})
	releaseAll := sync.OnceFunc(func() { close(release) })
	defer releaseAll() // also when the test fails: the loads hold connections
	var (
		started = make(chan struct{}, 2)
		wg      sync.WaitGroup
		errs    = make([]error, 2)
	)
	for i := range 2 {
		wg.Go(func() {
			first := true
			errs[i] = s.StreamWorkItems(t.Context(), f.viewer, q, func(pm.Snapshot, []pm.WorkItem) error {
				if first {
					first = false
					started <- struct{}{}
					<-release
				}
				return nil
			})
		})
	}
	<-started // one load holds the only turn (half of 2 connections)
	select {
	case <-started:
		t.Fatal("both loads run at once on a pool of 2")
	default:
	}
	// A write gets the other connection.
	if _, _, err := s.CreateWorkItem(t.Context(), f.editor, pm.NewWorkItem{Type: pm.TypeTask, ProjectID: f.project.ID, Title: "during"}); err != nil {
		t.Fatalf("write while a load holds a connection: %v", err)
	}
	// A load that cannot wait gives up with UNAVAILABLE.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	err := s.StreamWorkItems(ctx, f.viewer, q, func(pm.Snapshot, []pm.WorkItem) error { return nil })
	wantCode(t, err, pm.EUnavailable, "")

	releaseAll()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("load %d: %v", i, err)
		}
	}
}

// BenchmarkStreamWorkItems10k reads a project of 10,000 tasks in pages.
func BenchmarkStreamWorkItems10k(b *testing.B) {
	dsn := repotest.MustMigratedDatabaseURL(b)
	s := repotest.MustOpen(b, repo.Config{DatabaseURL: dsn})
	actor := repotest.NewActor()
	project := repotest.MustProject(b, s, actor)
	repotest.MustInsertItems(b, dsn, actor, project.ID, 10_000, func(i int, w *pm.WorkItem) {
		w.Description = "A description of a typical length for a task of the benchmark."
	})
	q := pm.WorkItemQuery{ProjectID: project.ID}
	b.ReportAllocs()
	var loads, pages int
	for b.Loop() {
		n := 0
		err := s.StreamWorkItems(b.Context(), actor, q, func(_ pm.Snapshot, page []pm.WorkItem) error {
			n += len(page)
			pages++
			return nil
		})
		if err != nil || n != 10_001 {
			b.Fatalf("streamed %d items: %v", n, err)
		}
		loads++
	}
	b.ReportMetric(float64(pages)/float64(loads), "pages/op")
}
