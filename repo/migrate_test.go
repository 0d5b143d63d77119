package repo_test

import (
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/pmhq/pm/migrations"
	"github.com/pmhq/pm/repo"
	"github.com/pmhq/pm/repo/repotest"
)

func TestMigrateConcurrent(t *testing.T) {
	dsn := repotest.MustDatabaseURL(t)
	const n = 4
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = repo.Migrate(t.Context(), dsn, nil) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Migrate %d: %v", i, err)
		}
	}
	// Current: nothing to do, and the store works.
	if err := repo.Migrate(t.Context(), dsn, nil); err != nil {
		t.Errorf("Migrate again: %v", err)
	}
	s := repotest.MustOpen(t, repo.Config{DatabaseURL: dsn})
	if err := s.Ping(t.Context()); err != nil {
		t.Error(err)
	}
	var version int64
	var dirty bool
	pool := repotest.MustPool(t, dsn)
	if err := pool.QueryRow(t.Context(), `SELECT version, dirty FROM schema_migrations`).Scan(&version, &dirty); err != nil || version < 1 || dirty {
		t.Errorf("schema_migrations = %d dirty=%v, %v", version, dirty, err)
	}
}

func TestMigrateDirty(t *testing.T) {
	dsn := repotest.MustMigratedDatabaseURL(t)
	pool := repotest.MustPool(t, dsn)
	var version int64
	if err := pool.QueryRow(t.Context(), `UPDATE schema_migrations SET dirty = true RETURNING version`).Scan(&version); err != nil {
		t.Fatal(err)
	}
	err := repo.Migrate(t.Context(), dsn, nil)
	if err == nil {
		t.Fatal("Migrate on a dirty schema succeeded")
	}
	for _, want := range []string{"dirty at version", "force"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// A dirty version's hint names the version before it that exists, which
// need not be one less: numbers may be skipped.
func TestMigrateDirtyNamesThePreviousVersion(t *testing.T) {
	names, err := fs.Glob(migrations.FS, "*.up.sql")
	if err != nil || len(names) < 2 {
		t.Fatalf("want at least two migrations, got %v, %v", names, err)
	}
	slices.Sort(names)
	version := func(name string) int {
		v, err := strconv.Atoi(name[:4])
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	last, previous := version(names[len(names)-1]), version(names[len(names)-2])
	dsn := repotest.MustMigratedDatabaseURL(t)
	pool := repotest.MustPool(t, dsn)
	if _, err := pool.Exec(t.Context(), `UPDATE schema_migrations SET version = $1, dirty = true`, last); err != nil {
		t.Fatal(err)
	}
	err = repo.Migrate(t.Context(), dsn, nil)
	if err == nil {
		t.Fatal("Migrate on a dirty schema succeeded")
	}
	if want := fmt.Sprintf("force %d`", previous); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
}
