#!/usr/bin/env bash
# pgbench-write.sh runs, with pgbench, the SQL transaction of one pm update
# (repo.UpdateWorkItem changing a task's title) and prints its TPS: the
# database's own rate for the writes of one project, against which pm's
# BenchmarkUpdateWorkItem/parallel/project=shared (updates/s) is compared
# (docs/performance.md, "The write path").
#
# The transaction is pm's, statement for statement and round trip for round
# trip: a pipeline with the BEGIN, the tenant's selection for row-level
# security, the writer's membership row FOR SHARE and the task's row FOR NO
# KEY UPDATE; then a pipeline with the statement that bumps the project's
# revision, writes the task and its activity entry, and the COMMIT. Prepared
# (-M prepared, as pgx caches statements), CLIENTS clients, each updating a
# task of its own, all tasks in ONE project, as a NOSUPERUSER NOBYPASSRLS role
# so that row-level security applies as in pm. repo's TestPgbenchWriteScript
# checks that the statements below are still pm's.
#
# It drops and re-creates a scratch database (owned by that role, made with
# scripts/dbsetup.sh), applies migrations/*.up.sql with psql, seeds a tenant,
# a project, its admin and CLIENTS tasks, runs pgbench, checks that every
# counted transaction wrote its update (revision, versions, activity
# entries), and drops the database unless KEEP=1. Needs user postgres over
# TCP on 127.0.0.1:5432 without a password (scripts/services.sh) and pgbench
# (Debian's postgresql-client, or the PostgreSQL 15 install).
#
# Environment: CLIENTS (8), DURATION (seconds, 10), THREADS (pgbench -j, 2),
# PM_BENCH_DB (pm_pgbench_write), PM_BENCH_ROLE (pm_bench), KEEP (0).
set -euo pipefail

readonly CLIENTS="${CLIENTS:-8}"
readonly DURATION="${DURATION:-10}"
readonly THREADS="${THREADS:-2}"
readonly DB="${PM_BENCH_DB:-pm_pgbench_write}"
readonly ROLE="${PM_BENCH_ROLE:-pm_bench}"
readonly KEEP="${KEEP:-0}"
readonly ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

readonly TENANT=bench
readonly PROJECT=00000000-0000-4000-8000-aaaaaaaaaaaa
readonly USER_ID=00000000-0000-4000-8000-bbbbbbbbbbbb

log() { printf 'pgbench-write: %s\n' "$*" >&2; }

command -v pgbench >/dev/null || {
	log "error: pgbench not found (Debian: apt-get install postgresql-client)"
	exit 1
}

psql_admin() {
	env -u PGPASSWORD PGPASSFILE=/nonexistent/pgpass \
		psql -X -w -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p 5432 -U postgres -d postgres "$@"
}
# psql_app runs SQL in the scratch database as the application role.
psql_app() {
	PGPASSWORD="$ROLE" PGPASSFILE=/nonexistent/pgpass \
		psql -X -w -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p 5432 -U "$ROLE" -d "$DB" "$@"
}

drop_db() { psql_admin -v db="$DB" <<<'DROP DATABASE IF EXISTS :"db" WITH (FORCE)'; }
script=$(mktemp)
cleanup() {
	rm -f "$script"
	if [[ "$KEEP" != 1 ]]; then drop_db || true; fi
}
trap cleanup EXIT

drop_db
PM_DB_NAME="$DB" PM_DB_ROLE="$ROLE" PM_DB_PASSWORD="$ROLE" "$ROOT/scripts/dbsetup.sh" >&2

for f in "$ROOT"/migrations/*.up.sql; do # in version order
	psql_app -1 -f "$f"
done

# The seed, as pm makes it: the project at revision 1 with its item and its
# admin, and task i (id ...-<i, 12 digits>) under it at version 1.
psql_app -v tenant="$TENANT" -v project="$PROJECT" -v user="$USER_ID" -v clients="$CLIENTS" <<'SQL'
BEGIN;
SELECT set_config('app.tenant_id', :'tenant', true) \gset
INSERT INTO project_revisions (tenant_id, project_id, revision) VALUES (:'tenant', :'project', 1);
INSERT INTO work_items (tenant_id, id, project_id, parent_id, item_type, title, status, priority, position,
		version, revision, created_by, updated_by)
	VALUES (:'tenant', :'project', :'project', NULL, 'project', 'Bench', 'backlog', 'medium', 'a0', 1, 1, :'user', :'user');
INSERT INTO project_members (tenant_id, project_id, user_id, role, added_by)
	VALUES (:'tenant', :'project', :'user', 'admin', :'user');
INSERT INTO work_items (tenant_id, id, project_id, parent_id, item_type, title, status, priority, position,
		version, revision, created_by, updated_by)
	SELECT :'tenant', ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, :'project', :'project',
		'task', 'Task 0', 'backlog', 'medium', 'a1', 1, 1, :'user', :'user'
	FROM generate_series(0, :clients - 1) AS i;
COMMIT;
SQL

cat >"$script" <<'PGBENCH'
\if :init = 0
SELECT '00000000-0000-4000-8000-' || lpad(:client_id::text, 12, '0') AS item \gset
\set init 1
\endif
\startpipeline
BEGIN ISOLATION LEVEL READ COMMITTED;
SELECT set_config('app.tenant_id', :tenant, true);
SELECT user_id, role FROM project_members
		WHERE tenant_id = :tenant AND user_id = ANY(:users)
			AND project_id = (SELECT project_id FROM work_items WHERE tenant_id = :tenant AND id = :item)
		ORDER BY user_id FOR SHARE;
SELECT id, project_id, parent_id, item_type, title, description, status, priority,
	assignee_id, position, story_points, version, revision, created_at, updated_at, deleted_at,
	created_by, updated_by, now() FROM work_items WHERE tenant_id = :tenant AND id = :item FOR NO KEY UPDATE;
\endpipeline
\startpipeline
WITH r AS (
			UPDATE project_revisions SET revision = revision + 1
			WHERE tenant_id = :tenant AND project_id = :project
				AND EXISTS (SELECT 1 FROM work_items WHERE tenant_id = :tenant AND id = :item AND version = :version)
			RETURNING revision
		), u AS (
			UPDATE work_items SET title = :title, description = '', status = :status, priority = :priority,
				assignee_id = NULL::uuid, parent_id = :project, position = :position, story_points = NULL::integer,
				version = version + 1, revision = (SELECT revision FROM r), updated_at = now(), updated_by = :user
			WHERE tenant_id = :tenant AND id = :item AND version = :version
			RETURNING id, project_id, parent_id, item_type, title, description, status, priority,
	assignee_id, position, story_points, version, revision, created_at, updated_at, deleted_at,
	created_by, updated_by
		), a AS (
			INSERT INTO activity_log (tenant_id, project_id, work_item_id, actor_id, action, changes, revision)
			SELECT :tenant, project_id, id, :user, :action, :changes::jsonb, revision FROM u
		)
		SELECT id, project_id, parent_id, item_type, title, description, status, priority,
	assignee_id, position, story_points, version, revision, created_at, updated_at, deleted_at,
	created_by, updated_by FROM u;
COMMIT;
\endpipeline
\set version :version + 1
PGBENCH

log "pgbench: $CLIENTS clients, $THREADS threads, ${DURATION}s, -M prepared, one project"
out=$(PGPASSWORD="$ROLE" PGPASSFILE=/nonexistent/pgpass pgbench -h 127.0.0.1 -p 5432 -U "$ROLE" -n \
	-M prepared -c "$CLIENTS" -j "$THREADS" -T "$DURATION" -f "$script" \
	-D init=0 -D version=1 -D tenant="$TENANT" -D project="$PROJECT" -D user="$USER_ID" -D users="{$USER_ID}" \
	-D title="Task 1" -D status=backlog -D priority=medium -D position=a1 -D action=updated \
	-D changes='[{"field":"title","old":"Task 0","new":"Task 1"}]' \
	"$DB")
printf '%s\n' "$out" >&2

# Every counted transaction must have written: the revision moved once per
# transaction, and each task's version and the activity log with it.
processed=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
read -r head versions entries < <(psql_app -F ' ' -v tenant="$TENANT" -v project="$PROJECT" <<'SQL'
SELECT set_config('app.tenant_id', :'tenant', false) \gset
SELECT (SELECT revision - 1 FROM project_revisions WHERE project_id = :'project'),
	(SELECT sum(version - 1) FROM work_items WHERE item_type = 'task'),
	(SELECT count(*) FROM activity_log);
SQL
)
if [[ "$processed" != "$head" || "$processed" != "$versions" || "$processed" != "$entries" ]]; then
	log "error: $processed transactions counted, but $head revisions, $versions versions and $entries activity entries written"
	exit 1
fi
tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out")
log "$processed updates written, all checked"
printf 'tps %s\n' "$tps"
