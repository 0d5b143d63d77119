#!/usr/bin/env bash
# services.sh makes sure the services pm's tests and local cluster need are
# installed and answering:
#
#   PostgreSQL on 127.0.0.1:5432, user postgres, no password over TCP
#   Redis      on 127.0.0.1:6379
#   redis-server and haproxy installed: the end-to-end tests start their own
#              (`make run` uses HAProxy too; outside CI HAProxy is optional)
#   node and npm (Node.js), for the board's build and tests in web/
#   chromium   Debian's, for the browser tests (never a downloaded browser)
#
# It is idempotent: when everything already answers it changes nothing. As root
# it installs missing packages with apt-get and starts stopped services; as
# another user it prints the exact commands to run instead.
#
# Environment:
#   SERVICES_WAIT  seconds to wait for each service to answer (default 60)
#   CI             when set (non-empty), HAProxy, Node.js and Chromium are required:
#                  failing to install them is an error
set -euo pipefail

readonly PG_HOST=127.0.0.1 PG_PORT=5432
readonly REDIS_HOST=127.0.0.1 REDIS_PORT=6379
readonly WAIT_SECONDS="${SERVICES_WAIT:-60}"

export DEBIAN_FRONTEND=noninteractive

log() { printf 'services: %s\n' "$*"; }
warn() { printf 'services: warning: %s\n' "$*" >&2; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

is_root() { [[ "$(id -u)" -eq 0 ]]; }

# need_root explains what the user has to run, then fails.
need_root() {
	local what=$1
	shift
	printf 'services: error: %s, and only root can fix that. Run:\n' "$what" >&2
	local cmd
	for cmd in "$@"; do printf '    sudo %s\n' "$cmd" >&2; done
	printf 'then run this script again.\n' >&2
	exit 1
}

apt_updated=false

# apt_install installs Debian packages, running apt-get update once per run.
apt_install() {
	if ! $apt_updated; then
		log "apt-get update"
		apt-get update -q </dev/null >/dev/null || return 1
		apt_updated=true
	fi
	log "apt-get install $*"
	apt-get install -y -q --no-install-recommends "$@" </dev/null >/dev/null
}

# wait_for polls a command until it succeeds or WAIT_SECONDS pass.
wait_for() {
	local deadline=$((SECONDS + WAIT_SECONDS))
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			return 1
		fi
		sleep 0.5
	done
}

# ---------------------------------------------------------------- PostgreSQL

pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }

# pg_trusts says whether user postgres can connect over TCP without a password.
pg_trusts() {
	env -u PGPASSWORD PGPASSFILE=/nonexistent/pgpass PGCONNECT_TIMEOUT=5 \
		psql -X -w -q -At -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres \
		-c 'SELECT 1' >/dev/null 2>&1
}

# pg_version prints the newest PostgreSQL major version with a cluster
# configuration (Debian layout), or nothing.
pg_version() {
	local v
	# shellcheck disable=SC2012 # version directories: plain names
	v=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
	if [[ -n "$v" && -d "/etc/postgresql/$v/main" ]]; then
		printf '%s\n' "$v"
	fi
}

ensure_postgres() {
	if command -v pg_isready >/dev/null && pg_ready; then
		log "PostgreSQL answers on $PG_HOST:$PG_PORT"
	else
		if ! command -v pg_ctlcluster >/dev/null || ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
			is_root || need_root "PostgreSQL is not installed" \
				"apt-get update" "apt-get install -y postgresql"
			apt_install postgresql
		fi
		local ver
		ver=$(pg_version)
		if [[ -z "$ver" ]]; then
			# Installed without a cluster: make the default one.
			ver=$(compgen -G '/usr/lib/postgresql/*/bin/postgres' | sort -V | tail -n 1 | cut -d/ -f5)
			is_root || need_root "PostgreSQL $ver has no cluster" "pg_createcluster $ver main"
			log "creating cluster $ver/main"
			pg_createcluster "$ver" main >/dev/null
		fi
		if ! pg_ready; then
			is_root || need_root "PostgreSQL is not running" \
				"pg_ctlcluster --skip-systemctl-redirect $ver main start"
			log "starting PostgreSQL $ver/main"
			pg_ctlcluster --skip-systemctl-redirect "$ver" main start ||
				warn "pg_ctlcluster start failed; waiting in case it is starting anyway"
		fi
		if ! wait_for pg_ready; then
			pg_lsclusters >&2 || true
			die "PostgreSQL did not answer on $PG_HOST:$PG_PORT within ${WAIT_SECONDS}s (clusters above; logs in /var/log/postgresql/)"
		fi
		log "PostgreSQL is up on $PG_HOST:$PG_PORT"
	fi

	if pg_trusts; then
		return
	fi
	# A fresh Debian cluster asks for a password over TCP (scram-sha-256).
	# Local development and the tests connect as postgres without one.
	local ver hba
	ver=$(pg_version)
	hba="/etc/postgresql/$ver/main/pg_hba.conf"
	[[ -n "$ver" && -f "$hba" ]] ||
		die "user postgres cannot connect to $PG_HOST:$PG_PORT without a password, and no pg_hba.conf was found under /etc/postgresql to fix it"
	is_root || need_root "user postgres cannot connect over TCP without a password" \
		"sed -i -E 's#^(host[[:space:]]+all[[:space:]]+all[[:space:]]+(127\\.0\\.0\\.1/32|::1/128)[[:space:]]+)[^[:space:]]+#\\1trust#' $hba" \
		"pg_ctlcluster --skip-systemctl-redirect $ver main reload"
	log "switching TCP connections from 127.0.0.1/32 and ::1/128 to trust in $hba (copy kept as $hba.pm-orig)"
	[[ -f "$hba.pm-orig" ]] || cp -p "$hba" "$hba.pm-orig"
	sed -i -E 's#^(host[[:space:]]+all[[:space:]]+all[[:space:]]+(127\.0\.0\.1/32|::1/128)[[:space:]]+)[^[:space:]]+#\1trust#' "$hba"
	if ! grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
		# No such line to switch: add one ahead of the others (first match wins).
		sed -i '1i host all all 127.0.0.1/32 trust  # added by pm scripts/services.sh' "$hba"
	fi
	pg_ctlcluster --skip-systemctl-redirect "$ver" main reload
	wait_for pg_trusts ||
		die "user postgres still cannot connect to $PG_HOST:$PG_PORT without a password; check $hba"
	log "user postgres connects over TCP without a password now"
}

# --------------------------------------------------------------------- Redis

redis_ready() { [[ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }

readonly REDIS_START=(redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT"
	--save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log)

ensure_redis() {
	# The end-to-end tests start redis-server processes of their own, so the
	# program must be installed even where some other Redis answers already.
	if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
		is_root || need_root "Redis (redis-server, redis-cli) is not installed" "apt-get update" "apt-get install -y redis-server"
		apt_install redis-server
		command -v redis-server >/dev/null || die "apt-get installed redis-server, but it is not on PATH"
	fi
	if redis_ready; then
		log "Redis answers on $REDIS_HOST:$REDIS_PORT"
		return
	fi
	if ! redis_ready; then
		is_root || need_root "Redis is not running" \
			"mkdir -p /var/lib/redis /var/log/redis" "${REDIS_START[*]}"
		log "starting Redis"
		mkdir -p /var/lib/redis /var/log/redis
		"${REDIS_START[@]}" || warn "redis-server failed to start (see /var/log/redis/ci.log)"
	fi
	wait_for redis_ready ||
		die "Redis did not answer on $REDIS_HOST:$REDIS_PORT within ${WAIT_SECONDS}s (see /var/log/redis/ci.log)"
	log "Redis is up on $REDIS_HOST:$REDIS_PORT"
}

# ------------------------------------------------------------------- HAProxy

# HAProxy is optional on a developer's machine (make run then points at node 1
# and the tests of HAProxy skip), but not in CI, where those tests fail without it.
ensure_haproxy() {
	if command -v haproxy >/dev/null; then
		log "HAProxy is installed ($(haproxy -v 2>/dev/null | head -n 1))"
		return
	fi
	if ! is_root; then
		[[ -z "${CI:-}" ]] || need_root "HAProxy is not installed (CI is set: the tests need it)" \
			"apt-get update" "apt-get install -y haproxy"
		warn "HAProxy is not installed; make run and the multi-node tests need it: sudo apt-get install -y haproxy"
		return
	fi
	if apt_install haproxy && command -v haproxy >/dev/null; then
		log "HAProxy installed ($(haproxy -v 2>/dev/null | head -n 1))"
	elif [[ -n "${CI:-}" ]]; then
		die "could not install HAProxy, and CI is set: the tests through HAProxy would fail"
	else
		warn "could not install HAProxy; make run will point at node 1 directly and the tests through HAProxy will skip"
	fi
}

# ---------------------------------------------------- Node.js and Chromium

# ensure_tool makes sure command cmd exists, installing Debian packages pkgs as
# root; what it is needed for is said in why. Under CI a missing tool is an
# error, elsewhere a warning (the tests that need it then skip).
ensure_tool() {
	local cmd=$1 why=$2
	shift 2
	if command -v "$cmd" >/dev/null; then
		log "$cmd is installed ($("$cmd" --version 2>/dev/null | head -n 1))"
		return
	fi
	if ! is_root; then
		[[ -z "${CI:-}" ]] || need_root "$cmd is not installed (CI is set: $why)" \
			"apt-get update" "apt-get install -y $*"
		warn "$cmd is not installed ($why): sudo apt-get install -y $*"
		return
	fi
	if apt_install "$@" && command -v "$cmd" >/dev/null; then
		log "$cmd installed ($("$cmd" --version 2>/dev/null | head -n 1))"
	elif [[ -n "${CI:-}" ]]; then
		die "could not install $*, and CI is set: $why"
	else
		warn "could not install $*: $why"
	fi
}

ensure_postgres
ensure_redis
ensure_haproxy
ensure_tool node "the board is built and tested with Node.js" nodejs
ensure_tool npm "the board's packages come through npm ci" npm
ensure_tool chromium "the browser tests drive Debian's Chromium" chromium
