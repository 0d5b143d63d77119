package repo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/database"
	pgxmigrate "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/pmhq/pm/migrations"
)

// MigrateLockTimeout is how long Migrate waits for the migration lock that
// another node holds. Nodes starting together queue on it; the first applies
// the migrations and the others then find nothing to do.
const MigrateLockTimeout = 2 * time.Minute

// Migrate applies every pending migration of package migrations to the
// database. Several processes may call it at once: a Postgres advisory lock
// makes them take turns. It returns nil when the schema is already current.
//
// A migration that failed part-way leaves the schema marked dirty; Migrate
// then refuses to run and says which version to repair.
//
// Cancelling ctx stops Migrate before the next migration file; a file that
// has started runs to its end.
func Migrate(ctx context.Context, databaseURL string, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	connConfig, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		return fmt.Errorf("migrate: parse database URL: %w", err)
	}
	// The server gives up waiting for a lock after MigrateLockTimeout: for the
	// advisory lock (which golang-migrate also takes, without a timeout, while
	// it creates its version table) and for the tables a migration alters.
	connConfig.RuntimeParams["lock_timeout"] = strconv.FormatInt(MigrateLockTimeout.Milliseconds(), 10)
	db := stdlib.OpenDB(*connConfig)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return fmt.Errorf("migrate: connect: %w", err)
	}
	src, err := iofs.New(migrations.FS, ".")
	if err != nil {
		_ = db.Close()
		return fmt.Errorf("migrate: read embedded migrations: %w", err)
	}
	driver, err := pgxmigrate.WithInstance(db, &pgxmigrate.Config{})
	if err != nil {
		_ = src.Close()
		_ = db.Close()
		if lockTimedOut(err) {
			return lockTimeoutError(err)
		}
		return fmt.Errorf("migrate: open database driver: %w", err)
	}
	m, err := migrate.NewWithInstance("iofs", src, "pgx5", driver)
	if err != nil {
		_ = src.Close()
		_ = driver.Close()
		return fmt.Errorf("migrate: %w", err)
	}
	defer func() {
		if srcErr, dbErr := m.Close(); srcErr != nil || dbErr != nil {
			logger.Warn("migrate: close", "source_error", srcErr, "database_error", dbErr)
		}
	}()
	m.LockTimeout = MigrateLockTimeout + 10*time.Second // the server's lock_timeout ends the wait first
	m.Log = migrateLogger{logger}

	// Stop between migration files when ctx ends. GracefulStop is buffered.
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-ctx.Done():
			m.GracefulStop <- true
		case <-done:
		}
	})
	err = m.Up()
	close(done)
	wg.Wait()

	var dirty migrate.ErrDirty
	switch {
	case err == nil:
	case errors.Is(err, migrate.ErrNoChange):
	case errors.As(err, &dirty):
		// The version before it, which need not be one less: numbers may be skipped.
		previous := -1 // none
		if p, err := src.Prev(uint(dirty.Version)); err == nil {
			previous = int(p)
		}
		return fmt.Errorf("migrate: the schema is dirty at version %d: that migration failed part-way "+
			"(a file runs as one transaction, so its statements were rolled back, but the version stays marked dirty); "+
			"find the cause in the logs, repair the database if needed, mark the version before it clean "+
			"with the migrate CLI (`migrate -database <url> force %d`) and start again: %w", dirty.Version, previous, err)
	case errors.Is(err, migrate.ErrLockTimeout) || lockTimedOut(err):
		return lockTimeoutError(err)
	default:
		return fmt.Errorf("migrate: %w", err)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("migrate: stopped: %w", ctx.Err())
	}
	version, _, err := m.Version()
	if err != nil {
		return fmt.Errorf("migrate: read schema version: %w", err)
	}
	logger.Info("database schema is current", "version", version)
	return nil
}

// lockTimedOut reports whether err is the server's lock_timeout (55P03),
// which golang-migrate reports in a database.Error that does not unwrap.
func lockTimedOut(err error) bool {
	var dbErr database.Error
	if errors.As(err, &dbErr) {
		err = dbErr.OrigErr
	}
	var dbErrPtr *database.Error
	if errors.As(err, &dbErrPtr) {
		err = dbErrPtr.OrigErr
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == sqlLockNotAvailable
}

func lockTimeoutError(err error) error {
	return fmt.Errorf("migrate: waited more than %s for a lock: the migration lock, held by another process "+
		"applying migrations, or a table lock held by running queries: %w", MigrateLockTimeout, err)
}

// migrateLogger passes golang-migrate's messages to slog.
type migrateLogger struct{ logger *slog.Logger }

func (l migrateLogger) Printf(format string, v ...any) {
	l.logger.Info("migrate: " + trimNewline(fmt.Sprintf(format, v...)))
}

func (l migrateLogger) Verbose() bool { return false }

func trimNewline(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	return s
}
