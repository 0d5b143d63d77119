#!/usr/bin/env bash
# run.sh starts a local pm cluster (make run) and returns once it serves:
#
#   PostgreSQL + Redis     scripts/services.sh, database pm and role pm_app (scripts/dbsetup.sh)
#   NODES pm-node processes node-N: clients on 127.0.0.1:(PM_NODE_BASE_PORT+N),
#                          admin (/metrics, /healthz, /readyz) on 127.0.0.1:(PM_ADMIN_BASE_PORT+N)
#   HAProxy                PM_LB_ADDR in front of them, stats on PM_LB_STATS_ADDR
#   demo data              tenant demo: alice (admin), bob (editor), carol (viewer), one project
#
# It prints, for each demo user, a URL that opens the board signed in
# (http://<entry>/#token=<jwt>&project=<id>, also in .run/<user>.url).
#
# Processes keep running in the background; `make stop` (scripts/stop.sh)
# stops them, and a new run stops the previous one first. Logs, pid files, the
# rendered HAProxy config and the JWT secret live in .run/.
#
# Environment (defaults in brackets):
#   NODES [2], PM_LB_ADDR [127.0.0.1:8080], PM_LB_STATS_ADDR [127.0.0.1:8404],
#   PM_NODE_BASE_PORT [8180], PM_ADMIN_BASE_PORT [9190],
#   PM_JWT_SECRET [generated once, kept in .run/jwt-secret], READY_WAIT [60 seconds],
#   PM_DB_NAME [pm] (the database: clusters side by side need one each, and a
#   PM_REDIS_PREFIX each), PM_RUN_DIR [.run] (pid files, logs, secret: a second
#   cluster needs its own, or this run stops the first; scripts/stop.sh reads
#   the same variable).
#   Other PM_* variables (PM_LOG_LEVEL, PM_REDIS_PREFIX, …) pass through to the nodes.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly NODES="${NODES:-2}"
readonly NODE_BASE_PORT="${PM_NODE_BASE_PORT:-8180}" ADMIN_BASE_PORT="${PM_ADMIN_BASE_PORT:-9190}"
export PM_LB_ADDR="${PM_LB_ADDR:-127.0.0.1:8080}"
export PM_LB_STATS_ADDR="${PM_LB_STATS_ADDR:-127.0.0.1:8404}"
readonly READY_WAIT="${READY_WAIT:-60}"
export PM_DB_NAME="${PM_DB_NAME:-pm}" # scripts/dbsetup.sh makes it
readonly RUN_DIR="${PM_RUN_DIR:-.run}"
export PM_RUN_DIR="$RUN_DIR" # scripts/stop.sh stops what this run starts

# The demo tenant: fixed ids, so tokens and links survive restarts.
readonly TENANT=demo
readonly ALICE=a11ce000-0000-4000-8000-000000000001 # admin (creates the project)
readonly BOB=b0b00000-0000-4000-8000-000000000002   # editor
readonly CAROL=ca201000-0000-4000-8000-000000000003 # viewer
readonly PROJECT=de300000-0000-4000-8000-000000000001
# Their names and emails, as the board shows them (the tokens' claims).
readonly ALICE_NAME="Alice Adams" BOB_NAME="Bob Brown" CAROL_NAME="Carol Clark"

log() { printf 'run: %s\n' "$*"; }
warn() { printf 'run: warning: %s\n' "$*" >&2; }
die() {
	printf 'run: error: %s\n' "$*" >&2
	scripts/stop.sh >&2 || true
	exit 1
}

[[ "$NODES" =~ ^[1-9][0-9]*$ ]] || die "NODES must be a positive number, not '$NODES'"

# http_status HOST PORT PATH prints the status code of GET PATH, or nothing
# when nobody answers. Plain bash, so it needs neither curl nor wget.
http_status() {
	# shellcheck disable=SC2016 # expanded by the inner bash
	timeout 3 bash -c '
		exec 3<>"/dev/tcp/$0/$1" || exit 1
		printf "GET %s HTTP/1.0\r\nHost: %s:%s\r\nConnection: close\r\n\r\n" "$2" "$0" "$1" >&3
		IFS=" " read -r _ code _ <&3 && printf "%s\n" "$code"' "$1" "$2" "$3" 2>/dev/null || true
}

# port_busy HOST PORT: does something listen there already?
# shellcheck disable=SC2016 # expanded by the inner bash
port_busy() { timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null; }

# host_of / port_of split HOST:PORT; an empty or wildcard host becomes 127.0.0.1
# (for URLs and probes).
host_of() {
	local h=${1%:*}
	case "$h" in "" | 0.0.0.0 | "*" | "[::]") h=127.0.0.1 ;; esac
	printf '%s\n' "$h"
}
port_of() { printf '%s\n' "${1##*:}"; }

# alive PID: is the process running (not exited, not a zombie)?
alive() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ "${stat%% *}" != Z ]]
}

# start NAME LOGFILE CMD...: run CMD in the background, in its own session so
# that a Ctrl-C in this terminal doesn't reach it, and record its pid.
start() {
	local name=$1 logfile=$2
	shift 2
	setsid "$@" >"$logfile" 2>&1 </dev/null &
	echo $! >"$RUN_DIR/$name.pid"
}

# ------------------------------------------------------------- preparations

scripts/stop.sh
rm -f "$RUN_DIR"/node-*.log "$RUN_DIR"/haproxy.*
scripts/services.sh
scripts/dbsetup.sh

log "building bin/pm-node"
go build -o bin/ ./cmd/pm-node
have_pmctl=false
if [[ -d cmd/pmctl ]]; then
	log "building bin/pmctl"
	go build -o bin/ ./cmd/pmctl
	have_pmctl=true
else
	warn "cmd/pmctl does not exist yet: no tokens or demo data"
fi

mkdir -p "$RUN_DIR"
if [[ -z "${PM_JWT_SECRET:-}" ]]; then
	if [[ ! -s "$RUN_DIR/jwt-secret" ]]; then
		log "generating a JWT secret in $RUN_DIR/jwt-secret"
		(umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$RUN_DIR/jwt-secret")
	fi
	PM_JWT_SECRET=$(<"$RUN_DIR/jwt-secret")
fi
export PM_JWT_SECRET

lb_enabled=false
command -v haproxy >/dev/null && lb_enabled=true

busy=()
for ((i = 1; i <= NODES; i++)); do
	for port in $((NODE_BASE_PORT + i)) $((ADMIN_BASE_PORT + i)); do
		port_busy 127.0.0.1 "$port" && busy+=("127.0.0.1:$port")
	done
done
if $lb_enabled; then
	for addr in "$PM_LB_ADDR" "$PM_LB_STATS_ADDR"; do
		port_busy "$(host_of "$addr")" "$(port_of "$addr")" && busy+=("$addr")
	done
fi
((${#busy[@]} == 0)) || die "already in use: ${busy[*]} (another cluster not started by make run? set PM_NODE_BASE_PORT, PM_ADMIN_BASE_PORT, PM_LB_ADDR)"

# -------------------------------------------------------------------- nodes

for ((i = 1; i <= NODES; i++)); do
	# All nodes start at once: their migrations serialise on an advisory lock.
	start "node-$i" "$RUN_DIR/node-$i.log" env \
		PM_DATABASE_URL="postgres://pm_app:pm_app@127.0.0.1:5432/$PM_DB_NAME?sslmode=disable" \
		PM_REDIS_URL="redis://127.0.0.1:6379/0" \
		PM_LISTEN_ADDR="127.0.0.1:$((NODE_BASE_PORT + i))" \
		PM_ADMIN_ADDR="127.0.0.1:$((ADMIN_BASE_PORT + i))" \
		PM_NODE_ID="node-$i" \
		PM_MIGRATE=true \
		bin/pm-node
	log "started node-$i (pid $(<"$RUN_DIR/node-$i.pid")), log in $RUN_DIR/node-$i.log"
done

deadline=$((SECONDS + READY_WAIT))
for ((i = 1; i <= NODES; i++)); do
	pid=$(<"$RUN_DIR/node-$i.pid")
	until [[ "$(http_status 127.0.0.1 $((ADMIN_BASE_PORT + i)) /readyz)" == 200 ]]; do
		if ! alive "$pid" || ((SECONDS >= deadline)); then
			why="exited"
			alive "$pid" && why="not ready after ${READY_WAIT}s"
			printf 'run: node-%d %s; last lines of %s:\n' "$i" "$why" "$RUN_DIR/node-$i.log" >&2
			tail -n 30 "$RUN_DIR/node-$i.log" >&2
			die "node-$i did not become ready"
		fi
		sleep 0.2
	done
	log "node-$i is ready (http://127.0.0.1:$((ADMIN_BASE_PORT + i))/readyz)"
done

# ------------------------------------------------------------------ HAProxy

if $lb_enabled; then
	servers=""
	for ((i = 1; i <= NODES; i++)); do
		servers+="    server node-$i 127.0.0.1:$((NODE_BASE_PORT + i)) check port $((ADMIN_BASE_PORT + i))"$'\n'
	done
	# Keep deploy/haproxy.cfg as is, with the server lines between its markers
	# replaced by this run's nodes.
	SERVERS="$servers" awk -v nodes="$NODES" '
		NR == 1 { print "# Rendered by scripts/run.sh from deploy/haproxy.cfg for " nodes " node(s): edit that file, not this one.\n" }
		/# BEGIN pm_nodes servers/ { print; printf "%s", ENVIRON["SERVERS"]; skip = 1; next }
		/# END pm_nodes servers/ { skip = 0 }
		!skip { print }' deploy/haproxy.cfg >"$RUN_DIR/haproxy.cfg"
	grep -q "server node-$NODES " "$RUN_DIR/haproxy.cfg" ||
		die "could not render $RUN_DIR/haproxy.cfg: markers missing in deploy/haproxy.cfg?"
	haproxy -c -q -f "$RUN_DIR/haproxy.cfg" || die "HAProxy refuses $RUN_DIR/haproxy.cfg"
	start haproxy "$RUN_DIR/haproxy.log" haproxy -db -f "$RUN_DIR/haproxy.cfg"
	lb_host=$(host_of "$PM_LB_ADDR") lb_port=$(port_of "$PM_LB_ADDR")
	# HAProxy answers /readyz itself (monitor-uri): 200 once a node is up.
	until [[ "$(http_status "$lb_host" "$lb_port" /readyz)" == 200 ]]; do
		if ! alive "$(<"$RUN_DIR/haproxy.pid")" || ((SECONDS >= deadline)); then
			tail -n 30 "$RUN_DIR/haproxy.log" >&2
			die "HAProxy did not come up on $PM_LB_ADDR"
		fi
		sleep 0.2
	done
	log "HAProxy is up on $PM_LB_ADDR (pid $(<"$RUN_DIR/haproxy.pid")), log in $RUN_DIR/haproxy.log"
	entry="$lb_host:$lb_port"
else
	warn "HAProxy is not installed (sudo apt-get install -y haproxy): use node-1 directly"
	entry="127.0.0.1:$((NODE_BASE_PORT + 1))"
fi

# ---------------------------------------------------------------- demo data

status=0
if $have_pmctl; then
	# token USER NAME EMAIL
	token() {
		bin/pmctl token --secret "$PM_JWT_SECRET" --tenant "$TENANT" --user "$1" --ttl 24h -name "$2" -email "$3"
	}
	if ! { alice_token=$(token "$ALICE" "$ALICE_NAME" alice@demo.test) &&
		bob_token=$(token "$BOB" "$BOB_NAME" bob@demo.test) &&
		carol_token=$(token "$CAROL" "$CAROL_NAME" carol@demo.test); }; then
		die "bin/pmctl token failed"
	fi
	# The board reads the token from the URL's fragment, which browsers
	# never send: it stays out of every request line and log.
	alice_url="http://$entry/#token=$alice_token&project=$PROJECT"
	bob_url="http://$entry/#token=$bob_token&project=$PROJECT"
	carol_url="http://$entry/#token=$carol_token&project=$PROJECT"
	for user in alice bob carol; do
		token_var="${user}_token" url_var="${user}_url"
		printf '%s\n' "${!token_var}" >"$RUN_DIR/$user.token"
		printf '%s\n' "${!url_var}" >"$RUN_DIR/$user.url"
	done
	if bin/pmctl demo -h >/dev/null 2>&1; then
		log "seeding tenant $TENANT, project $PROJECT"
		if ! bin/pmctl demo --url "ws://$entry/ws" --token "$alice_token" \
			--project "$PROJECT" --editor "$BOB" --viewer "$CAROL"; then
			warn "bin/pmctl demo failed (the cluster is running; see above and $RUN_DIR/node-*.log)"
			status=1
		fi
		# A node records a user's name when the user connects: bob and carol
		# connect once, so that the board shows their names before they sign in.
		for t in "$bob_token" "$carol_token"; do
			bin/pmctl get --url "ws://$entry/ws" --token "$t" --project "$PROJECT" >/dev/null ||
				warn "bin/pmctl get failed: the board may show a member without a name"
		done
	else
		warn "bin/pmctl has no demo command yet: no demo project was created"
	fi
fi

# -------------------------------------------------------------------- usage

echo
echo "pm is running: $NODES node(s)$($lb_enabled && echo " behind HAProxy")."
if $have_pmctl; then
	cat <<EOF

  The board:         http://$entry/   (sign in with a token, or open a user's link, valid 24h:)
    alice (admin)    $alice_url
    bob (editor)     $bob_url
    carol (viewer)   $carol_url
  WebSocket:         ws://$entry/ws   (Authorization: Bearer <token>, or ?access_token=<token>)
  The board as text: bin/pmctl get --url ws://$entry/ws --token "\$(cat $RUN_DIR/alice.token)" --project $PROJECT

  Tenant $TENANT, project $PROJECT; tokens valid 24h:
    alice (admin)  $ALICE  $ALICE_NAME <alice@demo.test>
      $alice_token
    bob (editor)   $BOB  $BOB_NAME <bob@demo.test>
      $bob_token
    carol (viewer) $CAROL  $CAROL_NAME <carol@demo.test>
      $carol_token
EOF
else
	echo
	echo "  The board:         http://$entry/"
	echo "  WebSocket:         ws://$entry/ws"
fi
echo
echo "  Metrics:"
for ((i = 1; i <= NODES; i++)); do
	echo "    node-$i          http://127.0.0.1:$((ADMIN_BASE_PORT + i))/metrics"
done
if $lb_enabled; then
	echo "    HAProxy         http://$PM_LB_STATS_ADDR/metrics  (stats page: http://$PM_LB_STATS_ADDR/)"
fi
stop_cmd="make stop"
[[ "$RUN_DIR" == .run ]] || stop_cmd="PM_RUN_DIR=$RUN_DIR scripts/stop.sh"
cat <<EOF

  Tail a project's events:  bin/pmctl tail --tenant $TENANT --project $PROJECT
  Logs:                     $RUN_DIR/*.log
  Stop everything:          $stop_cmd
EOF
exit "$status"
