// Package migrations holds pm's Postgres schema as golang-migrate SQL files
// (NNNN_name.up.sql / .down.sql), embedded in the binary so that a node can
// apply pending migrations at start (repo.Migrate).
//
// Every table's primary key leads with tenant_id, and every table has
// row-level security forced on, with a policy that shows a transaction only
// the rows of the tenant it set with set_config('app.tenant_id', …, true).
//
// Each file is sent as one multi-statement query, which Postgres runs as one
// transaction: a file must not contain BEGIN/COMMIT or statements that cannot
// run in a transaction (CREATE INDEX CONCURRENTLY). Versions ascend; a number
// may be skipped while another branch holds it, but a database migrated past
// a number never applies a file added under it later, so no release may
// leave a gap that a later one fills.
package migrations

import "embed"

// FS holds the migration files, at its root.
//
//go:embed *.sql
var FS embed.FS
