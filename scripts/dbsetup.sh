#!/usr/bin/env bash
# dbsetup.sh prepares PostgreSQL for a local pm cluster: the application role
# pm_app (LOGIN, NOSUPERUSER, NOBYPASSRLS, password pm_app) and the database pm
# owned by it. It is idempotent and changes only what differs.
#
# The nodes connect as pm_app and run the migrations themselves, so pm_app owns
# the schema and FORCE ROW LEVEL SECURITY binds it too. Needs user postgres
# over TCP on 127.0.0.1:5432 without a password (scripts/services.sh).
#
# Environment: PM_DB_NAME (default pm), PM_DB_ROLE (default pm_app),
# PM_DB_PASSWORD (default pm_app).
set -euo pipefail

readonly DB_NAME="${PM_DB_NAME:-pm}"
readonly DB_ROLE="${PM_DB_ROLE:-pm_app}"
readonly DB_PASSWORD="${PM_DB_PASSWORD:-pm_app}"

log() { printf 'dbsetup: %s\n' "$*"; }

# psql_admin runs SQL as postgres; variables are passed with -v and quoted by
# psql (:'name' for literals, :"name" for identifiers).
psql_admin() {
	env -u PGPASSWORD PGPASSFILE=/nonexistent/pgpass \
		psql -X -w -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p 5432 -U postgres -d postgres \
		-v role="$DB_ROLE" -v password="$DB_PASSWORD" -v db="$DB_NAME" "$@"
}

if ! psql_admin -c 'SELECT 1' >/dev/null; then
	printf 'dbsetup: error: cannot connect to 127.0.0.1:5432 as postgres; run scripts/services.sh first\n' >&2
	exit 1
fi

if [[ -z "$(psql_admin <<<"SELECT 1 FROM pg_roles WHERE rolname = :'role'")" ]]; then
	log "creating role $DB_ROLE"
	psql_admin <<<"CREATE ROLE :\"role\" LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD :'password'"
elif [[ "$(psql_admin <<<"SELECT rolcanlogin AND NOT rolsuper AND NOT rolbypassrls FROM pg_roles WHERE rolname = :'role'")" != t ]]; then
	log "role $DB_ROLE exists with the wrong attributes: setting LOGIN NOSUPERUSER NOBYPASSRLS"
	psql_admin <<<"ALTER ROLE :\"role\" LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD :'password'"
fi

owner=$(psql_admin <<<"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :'db'")
if [[ -z "$owner" ]]; then
	log "creating database $DB_NAME owned by $DB_ROLE"
	psql_admin <<<"CREATE DATABASE :\"db\" OWNER :\"role\""
elif [[ "$owner" != "$DB_ROLE" ]]; then
	log "database $DB_NAME is owned by $owner: giving it to $DB_ROLE"
	psql_admin <<<"ALTER DATABASE :\"db\" OWNER TO :\"role\""
fi

log "database $DB_NAME and role $DB_ROLE are ready (postgres://$DB_ROLE:…@127.0.0.1:5432/$DB_NAME)"
