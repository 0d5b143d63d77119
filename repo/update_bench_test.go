package repo_test

import (
	"context"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/repo"
	"github.com/pmhq/pm/repo/repotest"
)

// BenchmarkUpdateWorkItem measures UpdateWorkItem on Postgres: a versioned
// title change of a task (row locks, revision bump, update, activity entry).
//
//   - sequential: one caller updates one item.
//   - parallel/project=shared: each goroutine updates an item of its own,
//     all in one project, so the project's revision lock orders them.
//   - parallel/project=own: the same, each item in a project of its own:
//     the contrast shows what the per-project serialization costs.
//
// The parallel variants run 4 goroutines per GOMAXPROCS (the work is mostly
// waiting on Postgres) on a pool large enough for all of them.
func BenchmarkUpdateWorkItem(b *testing.B) {
	s := repotest.MustOpen(b, repo.Config{DatabaseURL: repotest.MustMigratedDatabaseURL(b), MaxConns: 32})
	b.Run("sequential", func(b *testing.B) {
		actor := repotest.NewActor()
		project := repotest.MustProject(b, s, actor)
		u := newUpdater(b, s, actor, project.ID)
		b.ReportAllocs()
		for b.Loop() {
			u.update(b)
		}
		reportRate(b)
	})
	const parallelism = 4
	for _, shared := range []bool{true, false} {
		name := "parallel/project=own"
		if shared {
			name = "parallel/project=shared"
		}
		b.Run(name, func(b *testing.B) {
			actor := repotest.NewActor()
			var project pm.WorkItem
			updaters := make([]*updater, parallelism*runtime.GOMAXPROCS(0))
			for i := range updaters {
				if i == 0 || !shared {
					project = repotest.MustProject(b, s, actor)
				}
				updaters[i] = newUpdater(b, s, actor, project.ID)
			}
			var next atomic.Int64
			b.SetParallelism(parallelism)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				u := updaters[next.Add(1)-1]
				for pb.Next() {
					u.update(b)
				}
			})
			b.StopTimer()
			reportRate(b)
			b.ReportMetric(float64(len(updaters)), "goroutines")
		})
	}
}

// updater changes the title of one task, version after version.
type updater struct {
	s     *repo.Store
	actor pm.Actor
	item  pm.WorkItem
	n     int
}

func newUpdater(b *testing.B, s *repo.Store, actor pm.Actor, project uuid.UUID) *updater {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	item, _, err := s.CreateWorkItem(ctx, actor, pm.NewWorkItem{Type: pm.TypeTask, ProjectID: project, Title: "Task 0"})
	if err != nil {
		b.Fatalf("create task: %v", err)
	}
	return &updater{s: s, actor: actor, item: item}
}

// update sets a new title at the version last seen. Only u's goroutine may
// call it; it reports a failure with Errorf, which RunParallel's goroutines
// may call (Fatal they may not).
func (u *updater) update(b *testing.B) {
	u.n++
	title := "Task " + strconv.Itoa(u.n)
	item, changes, err := u.s.UpdateWorkItem(context.Background(), u.actor, u.item.ID, u.item.Version, pm.WorkItemPatch{Title: &title})
	if err != nil || len(changes) != 1 {
		b.Errorf("update %s at version %d: %v (%d changes)", u.item.ID, u.item.Version, err, len(changes))
		return
	}
	u.item = item
}

// reportRate reports the operations per second of wall-clock time.
func reportRate(b *testing.B) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N)/s, "updates/s")
	}
}
