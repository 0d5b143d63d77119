#!/bin/sh
# Postgres init script of the dev overlay and of ../../../docker-compose.yml.
# The official image runs /docker-entrypoint-initdb.d/* once, on an empty
# data directory. It creates the role pm-node connects as, pm_app (not a
# superuser, not BYPASSRLS: row-level security must bind it), with the
# password POSTGRES_APP_PASSWORD, and the database pm that pm_app owns.
set -eu
: "${POSTGRES_APP_PASSWORD:?set POSTGRES_APP_PASSWORD}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
	-v app_password="$POSTGRES_APP_PASSWORD" <<'SQL'
CREATE ROLE pm_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD :'app_password';
CREATE DATABASE pm OWNER pm_app;
SQL
