package repo_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pmhq/pm"
	"github.com/pmhq/pm/repo"
	"github.com/pmhq/pm/repo/repotest"
)

func TestOpenRefusesRLSBypass(t *testing.T) {
	ctx := t.Context()
	adminDSN := repotest.AdminDatabaseURL(t, repotest.MustMigratedDatabaseURL(t))
	s, err := repo.Open(ctx, repo.Config{DatabaseURL: adminDSN})
	if !errors.Is(err, repo.ErrRLSBypass) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("Open as superuser = %v, want ErrRLSBypass", err)
	}
	for _, want := range []string{`"postgres"`, "superuser", "AllowRLSBypass"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}

	var logs syncBuffer
	s, err = repo.Open(ctx, repo.Config{
		DatabaseURL: adminDSN, AllowRLSBypass: true, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatalf("Open with AllowRLSBypass: %v", err)
	}
	defer s.Close()
	if out := logs.String(); !strings.Contains(out, "level=WARN") || !strings.Contains(out, "ROW-LEVEL SECURITY") {
		t.Errorf("no loud warning logged: %q", out)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func TestOpenUnavailable(t *testing.T) {
	closedPort := func(t *testing.T) string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		_ = l.Close()
		return addr
	}
	tests := []struct {
		name string
		addr func(t *testing.T) string
	}{
		{"closed port", closedPort},
		{"silent server", silentServer},
	}
	const acquire = 300 * time.Millisecond
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dsn := fmt.Sprintf("postgres://%s:%s@%s/pm?sslmode=disable", repotest.AppRole, repotest.AppPassword, tc.addr(t))
			start := time.Now()
			s, err := repo.Open(t.Context(), repo.Config{DatabaseURL: dsn, AcquireTimeout: acquire})
			elapsed := time.Since(start)
			if s != nil {
				s.Close()
			}
			e := wantCode(t, err, pm.EUnavailable, "")
			if e.RetryAfterMillis <= 0 {
				t.Errorf("RetryAfterMillis = %d", e.RetryAfterMillis)
			}
			if elapsed > acquire+time.Second {
				t.Errorf("Open took %s with an acquire timeout of %s", elapsed, acquire)
			}
		})
	}
}

// silentServer accepts connections and never answers; it returns its address.
func silentServer(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		_ = l.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return l.Addr().String()
}

func TestUnavailableDatabaseGone(t *testing.T) {
	dsn := repotest.MustMigratedDatabaseURL(t)
	s := repotest.MustOpen(t, repo.Config{DatabaseURL: dsn, AcquireTimeout: time.Second})
	f := newFixtureOn(t, s)

	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := pgx.Connect(t.Context(), repotest.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = admin.Close(context.WithoutCancel(t.Context())) }()
	if _, err := admin.Exec(t.Context(), `DROP DATABASE `+pgx.Identifier{cfg.Database}.Sanitize()+` WITH (FORCE)`); err != nil {
		t.Fatal(err)
	}
	// The pooled connections were terminated, then new ones find no database.
	for i := range 3 {
		start := time.Now()
		_, err := f.s.ProjectRevision(t.Context(), f.admin, f.project.ID)
		wantCode(t, err, pm.EUnavailable, "")
		if elapsed := time.Since(start); elapsed > 3*time.Second {
			t.Errorf("call %d took %s", i, elapsed)
		}
	}
	wantCode(t, f.s.Ping(t.Context()), pm.EUnavailable, "")
}

// holdProjectLock locks the project's counter row from another connection
// until the test ends or release is called.
func holdProjectLock(t *testing.T, dsn string, f *fixture) (release func()) {
	t.Helper()
	pool := repotest.MustPool(t, dsn)
	tx, err := pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	release = func() { _ = tx.Rollback(context.WithoutCancel(t.Context())) }
	t.Cleanup(release)
	if _, err := tx.Exec(t.Context(), `SELECT set_config('app.tenant_id', $1, true)`, f.admin.Tenant); err != nil {
		t.Fatal(err)
	}
	tag, err := tx.Exec(t.Context(), `SELECT 1 FROM project_revisions WHERE tenant_id = $1 AND project_id = $2 FOR UPDATE`,
		f.admin.Tenant, f.project.ID)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("lock project: %v rows, %v", tag.RowsAffected(), err)
	}
	return release
}

func TestStatementTimeout(t *testing.T) {
	dsn := repotest.MustMigratedDatabaseURL(t)
	const timeout = 200 * time.Millisecond
	s := repotest.MustOpen(t, repo.Config{DatabaseURL: dsn, StatementTimeout: timeout})
	f := newFixtureOn(t, s)
	task := f.create(t, pm.NewWorkItem{Type: pm.TypeTask})
	release := holdProjectLock(t, dsn, f)

	start := time.Now()
	_, _, err := s.UpdateWorkItem(t.Context(), f.editor, task.ID, 1, pm.WorkItemPatch{Title: ptr("blocked")})
	elapsed := time.Since(start)
	wantCode(t, err, pm.EUnavailable, "")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57014" {
		t.Errorf("cause = %v, want SQLSTATE 57014 in the chain", err)
	}
	if elapsed < timeout || elapsed > timeout+2*time.Second {
		t.Errorf("update failed after %s with a statement timeout of %s", elapsed, timeout)
	}
	release()
	// Nothing was written; the store works again.
	w, _, err := s.UpdateWorkItem(t.Context(), f.editor, task.ID, 1, pm.WorkItemPatch{Title: ptr("free")})
	if err != nil || w.Version != 2 || w.Revision != task.Revision+1 {
		t.Errorf("update after release = %+v, %v", w, err)
	}
}

// TestCancelStopsServerQuery checks that a cancelled context stops the
// query on the server too, not only the client's wait, and that the
// connection survives the cancellation (a cancel request, not a hang-up).
func TestCancelStopsServerQuery(t *testing.T) {
	dsn := repotest.MustMigratedDatabaseURL(t)
	s := repotest.MustOpen(t, repo.Config{DatabaseURL: dsn, StatementTimeout: time.Minute, MaxConns: 1})
	f := newFixtureOn(t, s)
	task := f.create(t, pm.NewWorkItem{Type: pm.TypeTask})
	holdProjectLock(t, dsn, f)

	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := s.UpdateWorkItem(ctx, f.editor, task.ID, 1, pm.WorkItemPatch{Title: ptr("blocked")})
	wantCode(t, err, pm.EUnavailable, "")
	if elapsed := time.Since(start); elapsed < 300*time.Millisecond || elapsed > 3*time.Second {
		t.Errorf("cancelled update returned after %s, want about 300ms (blocked, then cancelled)", elapsed)
	}

	// While the lock is still held, the store's only connection is idle:
	// its query was cancelled on the server, and the connection kept.
	admin := repotest.MustPool(t, repotest.AdminDatabaseURL(t, dsn))
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var idle, waiting int
		err := admin.QueryRow(t.Context(), `SELECT count(*) FILTER (WHERE state = 'idle'),
				count(*) FILTER (WHERE wait_event_type = 'Lock')
			FROM pg_stat_activity WHERE datname = $1 AND application_name = 'pm'`, cfg.Database).Scan(&idle, &waiting)
		if err != nil {
			t.Fatal(err)
		}
		if idle == 1 && waiting == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("store backends: %d idle, %d waiting for the lock; want 1 and 0", idle, waiting)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestClose(t *testing.T) {
	f := newFixture(t)
	if err := f.s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	f.s.Close()
	f.s.Close()
	_, err := f.s.ProjectRevision(t.Context(), f.admin, f.project.ID)
	wantCode(t, err, pm.EUnavailable, "")
	wantCode(t, f.s.Ping(t.Context()), pm.EUnavailable, "")
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
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
