package repo_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/repo"
	"github.com/pmhq/pm/repo/repotest"
)

var tables = []string{"project_revisions", "work_items", "project_members", "activity_log", "users"}

// TestRowLevelSecurity checks the policies with the application role and
// queries that do not filter by tenant.
func TestRowLevelSecurity(t *testing.T) {
	ctx := t.Context()
	dsn := repotest.MustMigratedDatabaseURL(t)
	s := repotest.MustOpen(t, repo.Config{DatabaseURL: dsn})
	a, b := newFixtureOn(t, s), newFixtureOn(t, s)
	a.create(t, pm.NewWorkItem{Type: pm.TypeTask})
	for range 3 {
		b.create(t, pm.NewWorkItem{Type: pm.TypeTask})
	}
	repotest.MustProject(t, s, b.admin)
	for _, actor := range []pm.Actor{a.admin, b.admin, b.editor, b.viewer} {
		if err := s.RecordProfile(ctx, actor, pm.Profile{Name: "User " + actor.User.String()[:8]}); err != nil {
			t.Fatal(err)
		}
	}
	app := repotest.MustPool(t, dsn)
	admin := repotest.MustPool(t, repotest.AdminDatabaseURL(t, dsn))

	var super, bypass bool
	if err := app.QueryRow(ctx, `SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user`).Scan(&super, &bypass); err != nil || super || bypass {
		t.Fatalf("application role: superuser %v, bypassrls %v, %v", super, bypass, err)
	}

	for _, table := range tables {
		t.Run(table, func(t *testing.T) {
			wantA := adminCount(t, admin, table, a.admin.Tenant)
			wantB := adminCount(t, admin, table, b.admin.Tenant)
			if wantA == 0 || wantB == 0 || wantA == wantB {
				t.Fatalf("test data: %d rows of A, %d of B", wantA, wantB)
			}
			for _, tc := range []struct {
				name   string
				tenant *string
				want   int64
			}{
				{"tenant A", &a.admin.Tenant, wantA},
				{"tenant B", &b.admin.Tenant, wantB},
				{"no tenant", nil, 0},
				{"empty tenant", ptr(""), 0},
			} {
				got := appCount(t, app, table, tc.tenant)
				if got != tc.want {
					t.Errorf("%s: SELECT count(*) FROM %s = %d, want %d", tc.name, table, got, tc.want)
				}
			}
		})
	}

	// Writing a row of tenant B while tenant A is selected fails the policy;
	// B's rows can be neither changed nor deleted.
	inTenant(t, app, &a.admin.Tenant, func(tx pgx.Tx) {
		_, err := tx.Exec(ctx, `INSERT INTO project_revisions (tenant_id, project_id, revision) VALUES ($1, $2, 1)`,
			b.admin.Tenant, uuid.New())
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Errorf("insert for tenant B under tenant A: %v, want SQLSTATE 42501", err)
		}
	})
	inTenant(t, app, &a.admin.Tenant, func(tx pgx.Tx) {
		_, err := tx.Exec(ctx, `UPDATE project_revisions SET tenant_id = $1 WHERE tenant_id = $2`, b.admin.Tenant, a.admin.Tenant)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Errorf("moving rows to tenant B: %v, want SQLSTATE 42501", err)
		}
	})
	inTenant(t, app, &a.admin.Tenant, func(tx pgx.Tx) {
		tag, err := tx.Exec(ctx, `UPDATE work_items SET title = 'hacked' WHERE tenant_id = $1`, b.admin.Tenant)
		if err != nil || tag.RowsAffected() != 0 {
			t.Errorf("update of B's items under A: %v rows, %v", tag.RowsAffected(), err)
		}
	})
	inTenant(t, app, nil, func(tx pgx.Tx) {
		_, err := tx.Exec(ctx, `INSERT INTO project_revisions (tenant_id, project_id, revision) VALUES ($1, $2, 1)`,
			a.admin.Tenant, uuid.New())
		if err == nil {
			t.Errorf("insert with no tenant selected succeeded")
		}
	})
}

func adminCount(t *testing.T, admin *pgxpool.Pool, table, tenant string) int64 {
	t.Helper()
	var n int64
	if err := admin.QueryRow(t.Context(), `SELECT count(*) FROM `+table+` WHERE tenant_id = $1`, tenant).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func appCount(t *testing.T, app *pgxpool.Pool, table string, tenant *string) int64 {
	t.Helper()
	var n int64
	inTenant(t, app, tenant, func(tx pgx.Tx) {
		if err := tx.QueryRow(t.Context(), `SELECT count(*) FROM `+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
	})
	return n
}

// inTenant runs fn in a transaction that selects tenant (none for nil) and
// is rolled back.
func inTenant(t *testing.T, pool *pgxpool.Pool, tenant *string, fn func(pgx.Tx)) {
	t.Helper()
	tx, err := pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(t.Context())) }()
	if tenant != nil {
		if _, err := tx.Exec(t.Context(), `SELECT set_config('app.tenant_id', $1, true)`, *tenant); err != nil {
			t.Fatal(err)
		}
	}
	fn(tx)
}
