package repo_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

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
	for _, want := range []string{"dirty", fmt.Sprintf("version %d", version), fmt.Sprintf("force %d", version-1)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}
