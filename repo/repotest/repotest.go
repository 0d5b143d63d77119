// Package repotest gives tests a private, migrated Postgres database reached
// through a non-superuser application role, so that row-level security
// applies and parallel test packages never share data; and a Proxy in front
// of the server that can take the database away (stopped or hung) without
// touching the shared server.
//
// It connects as an administrator through PM_TEST_ADMIN_DATABASE_URL
// (default postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable) to
// create the role pm_test_app and one database per call, dropped when the
// test ends. When Postgres is unreachable the test fails and says how to
// start it; it is never skipped.
package repotest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/position"
	"github.com/pmhq/pm/repo"
)

// AdminURLEnv names the environment variable with the administrator DSN.
const AdminURLEnv = "PM_TEST_ADMIN_DATABASE_URL"

// DefaultAdminURL is the administrator DSN when AdminURLEnv is unset.
const DefaultAdminURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// The application role the test databases belong to: LOGIN, NOSUPERUSER,
// NOBYPASSRLS.
const (
	AppRole     = "pm_test_app"
	AppPassword = "pm_test_app"
)

// setupTimeout bounds each administrative step.
const setupTimeout = 30 * time.Second

// AdminURL returns the administrator DSN of the server, for the database
// named in it.
func AdminURL() string {
	if u := os.Getenv(AdminURLEnv); u != "" {
		return u
	}
	return DefaultAdminURL
}

// MustDatabaseURL creates an empty database owned by the application role
// and returns the role's DSN for it. The database is dropped when the test
// ends.
func MustDatabaseURL(tb testing.TB) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	admin := adminConn(ctx, tb, AdminURL())
	defer func() { _ = admin.Close(context.Background()) }()

	if err := ensureAppRole(ctx, admin); err != nil {
		tb.Fatalf("repotest: create role %s: %v", AppRole, err)
	}
	name := "pm_test_" + randomHex(8)
	if err := createDatabase(ctx, admin, name); err != nil {
		tb.Fatalf("repotest: create database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
		defer cancel()
		admin := adminConn(ctx, tb, AdminURL())
		defer func() { _ = admin.Close(context.Background()) }()
		if _, err := admin.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{name}.Sanitize()+` WITH (FORCE)`); err != nil {
			tb.Errorf("repotest: drop database %s: %v", name, err)
		}
	})
	return withCredentials(tb, AdminURL(), url.UserPassword(AppRole, AppPassword), name)
}

// MustMigratedDatabaseURL is MustDatabaseURL with the migrations applied.
func MustMigratedDatabaseURL(tb testing.TB) string {
	tb.Helper()
	dsn := MustDatabaseURL(tb)
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if err := repo.Migrate(ctx, dsn, nil); err != nil {
		tb.Fatalf("repotest: migrate: %v", err)
	}
	return dsn
}

// MustStore opens a Store on a fresh migrated database with short timeouts
// (acquire 3s, statements 5s: a stuck test fails instead of hanging),
// closed when the test ends.
func MustStore(tb testing.TB) *repo.Store {
	tb.Helper()
	return MustOpen(tb, repo.Config{DatabaseURL: MustMigratedDatabaseURL(tb)})
}

// MustOpen opens a Store with cfg, closed when the test ends. Unset
// timeouts default to those of MustStore.
func MustOpen(tb testing.TB, cfg repo.Config) *repo.Store {
	tb.Helper()
	if cfg.AcquireTimeout == 0 {
		cfg.AcquireTimeout = 3 * time.Second
	}
	if cfg.StatementTimeout == 0 {
		cfg.StatementTimeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	s, err := repo.Open(ctx, cfg)
	if err != nil {
		tb.Fatalf("repotest: open store: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

// AdminDatabaseURL returns the administrator (superuser) DSN for the
// database of databaseURL, for tests that must get around row-level security.
func AdminDatabaseURL(tb testing.TB, databaseURL string) string {
	tb.Helper()
	cfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		tb.Fatalf("repotest: parse %s: %v", redact(databaseURL), err)
	}
	admin, err := url.Parse(AdminURL())
	if err != nil {
		tb.Fatalf("repotest: parse %s: %v", AdminURLEnv, err)
	}
	return withCredentials(tb, AdminURL(), admin.User, cfg.Database)
}

// MustPool opens a pgx pool on databaseURL, closed when the test ends.
func MustPool(tb testing.TB, databaseURL string) *pgxpool.Pool {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	pool, err := pgxpool.New(ctx, databaseURL)
	if err != nil {
		tb.Fatalf("repotest: open pool: %v", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		tb.Fatalf("repotest: ping %s: %v", redact(databaseURL), err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// NewActor returns a new user of a new tenant.
func NewActor() pm.Actor {
	return pm.Actor{Tenant: "t-" + randomHex(6), User: uuid.New()}
}

// MustProject creates a project with actor as its admin.
func MustProject(tb testing.TB, s *repo.Store, actor pm.Actor) pm.WorkItem {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	p, _, err := s.CreateWorkItem(ctx, actor, pm.NewWorkItem{Type: pm.TypeProject, Title: "Project " + randomHex(3)})
	if err != nil {
		tb.Fatalf("repotest: create project: %v", err)
	}
	return p
}

// MustMember adds user to project with role, as admin.
func MustMember(tb testing.TB, s *repo.Store, admin pm.Actor, project, user uuid.UUID, role pm.Role) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if _, err := s.PutMember(ctx, admin, project, user, role); err != nil {
		tb.Fatalf("repotest: add member: %v", err)
	}
}

func adminConn(ctx context.Context, tb testing.TB, dsn string) *pgx.Conn {
	tb.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatalf("repotest: Postgres is not reachable at %s: %v\n"+
			"Start it with `make services` (Postgres on 127.0.0.1:5432, user postgres, trust auth), "+
			"or point %s at a server where that user may create roles and databases.",
			redact(dsn), err, AdminURLEnv)
	}
	return conn
}

// ensureAppRole creates the application role unless it exists. Parallel
// test processes take turns on an advisory lock; a duplicate is ignored all
// the same.
func ensureAppRole(ctx context.Context, admin *pgx.Conn) (err error) {
	const lock = `hashtext('pm repotest role')`
	if _, err := admin.Exec(ctx, `SELECT pg_advisory_lock(`+lock+`)`); err != nil {
		return err
	}
	defer func() {
		if _, unlockErr := admin.Exec(ctx, `SELECT pg_advisory_unlock(`+lock+`)`); unlockErr != nil && err == nil {
			err = unlockErr
		}
	}()
	var exists bool
	if err := admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, AppRole).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	_, err = admin.Exec(ctx, `CREATE ROLE `+pgx.Identifier{AppRole}.Sanitize()+
		` LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD '`+AppPassword+`'`)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42710" || pgErr.Code == "23505") { // duplicate_object, unique_violation
		return nil
	}
	return err
}

// createDatabase creates a database owned by the application role, retrying
// while another session holds the template database (55006).
func createDatabase(ctx context.Context, admin *pgx.Conn, name string) error {
	for {
		_, err := admin.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{name}.Sanitize()+` OWNER `+pgx.Identifier{AppRole}.Sanitize())
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "55006" {
			return err
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		}
	}
}

// withCredentials returns base with its user and database replaced.
func withCredentials(tb testing.TB, base string, user *url.Userinfo, database string) string {
	tb.Helper()
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		tb.Fatalf("repotest: %s must be a postgres:// URL", AdminURLEnv)
	}
	u.User = user
	u.Path = "/" + database
	q := u.Query()
	if q.Get("sslmode") == "" {
		q.Set("sslmode", "disable")
	}
	u.RawQuery = q.Encode()
	return u.String()
}

func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	return u.Redacted()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// MustInsertItems inserts n tasks under a project with one multi-row
// INSERT, as the application role in actor's tenant (row-level security
// applies, which rules COPY out), in one transaction that bumps the
// project's revision once: every new item carries that revision. It is for
// tests that need large projects fast; it writes no activity entries.
//
// Each item starts as a task titled "Task <i>", backlog, medium priority,
// at version 1, its position after the previous item's (starting after the
// project's "a0"); fill, if not nil, may change the i-th item's ID, title,
// description, status, priority and position before it is written. It
// returns the items with the fields it wrote (not the timestamps).
func MustInsertItems(tb testing.TB, databaseURL string, actor pm.Actor, project uuid.UUID, n int, fill func(i int, w *pm.WorkItem)) []pm.WorkItem {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*setupTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		tb.Fatalf("repotest: insert items: connect: %v", err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	tx, err := conn.Begin(ctx)
	if err != nil {
		tb.Fatalf("repotest: insert items: begin: %v", err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(ctx, `SELECT set_config('app.tenant_id', $1, true)`, actor.Tenant); err != nil {
		tb.Fatalf("repotest: insert items: select tenant: %v", err)
	}
	var revision int64
	err = tx.QueryRow(ctx, `UPDATE project_revisions SET revision = revision + 1
		WHERE tenant_id = $1 AND project_id = $2 RETURNING revision`, actor.Tenant, project).Scan(&revision)
	if err != nil {
		tb.Fatalf("repotest: insert items: bump the revision of project %s: %v", project, err)
	}
	items := make([]pm.WorkItem, n)
	var (
		ids                                                   = make([]uuid.UUID, n)
		titles, descriptions, statuses, priorities, positions = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	)
	pos := position.First
	for i := range items {
		if pos, err = position.Between(pos, ""); err != nil {
			tb.Fatalf("repotest: insert items: position: %v", err)
		}
		w := pm.WorkItem{
			ID: uuid.New(), ProjectID: project, ParentID: project, Type: pm.TypeTask,
			Title: fmt.Sprintf("Task %d", i), Status: pm.StatusBacklog, Priority: pm.PriorityMedium,
			Position: pos, Version: 1, Revision: revision, CreatedBy: actor.User, UpdatedBy: actor.User,
		}
		if fill != nil {
			fill(i, &w)
		}
		items[i] = w
		ids[i], titles[i], descriptions[i] = w.ID, w.Title, w.Description
		statuses[i], priorities[i], positions[i] = string(w.Status), string(w.Priority), w.Position
	}
	_, err = tx.Exec(ctx, `INSERT INTO work_items (tenant_id, id, project_id, parent_id, item_type, title,
			description, status, priority, position, version, revision, created_by, updated_by)
		SELECT $1, u.id, $2, $2, 'task', u.title, u.description, u.status, u.priority, u.position, 1, $3, $4, $4
		FROM unnest($5::uuid[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])
			AS u (id, title, description, status, priority, position)`,
		actor.Tenant, project, revision, actor.User, ids, titles, descriptions, statuses, priorities, positions)
	if err != nil {
		tb.Fatalf("repotest: insert items: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		tb.Fatalf("repotest: insert items: commit: %v", err)
	}
	return items
}
