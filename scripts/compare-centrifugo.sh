#!/usr/bin/env bash
# compare-centrifugo.sh (make compare) measures pm side by side with
# Centrifugo v6.9.1 on this machine, with the same client (bin/pm-loadgen,
# -target pm or centrifugo), and prints a table: min–max of each figure per
# target over REPS runs, and the ratio pm/Centrifugo of their medians.
#
#   Centrifugo   CENTRIFUGO_BIN, or installed with `go install` into a
#                temporary folder that is removed at the end (never vendored,
#                never committed); 2 nodes on the Redis engine (127.0.0.1:6379,
#                its own key prefix), HS256 tokens with a generated secret,
#                client publish allowed in namespace loadgen
#   pm           2 nodes through scripts/run.sh with their own database, Redis
#                prefix, ports and PM_RUN_DIR (a `make run` cluster is left
#                alone), PM_RATE_PER_SECOND=-1 so closed loops are not limited,
#                PM_CONNECT_RATE=-1 so S5/S6 open their 5,000 connections as
#                fast as on Centrifugo (which has no upgrade rate limit)
#   pm-loadgen   built into the temporary folder; subscribers connect to the
#                nodes directly, round-robin over the two, for both targets
#
# Each scenario runs for pm and for Centrifugo alternately (the order flips
# every repetition), REPS times:
#
#   S1  100 subscribers, 1 channel/project, 200 writes/s open loop: delivery p50/p99
#   S2  1,000 subscribers, 100 writes/s open loop: delivery p50/p99
#   S3  1,000 subscribers, 8 closed-loop writers: deliveries/s, delivery p99
#   S4  1,000 subscribers, 32 closed-loop writers: deliveries/s, delivery p99
#   S5  5,000 idle subscribed connections: node RSS (VmRSS, both nodes) after
#       minus before (read once the tenant is seeded, just before the subscribers
#       connect), per connection; the target's nodes are restarted first
#   S6  time to open and subscribe 5,000 connections
#
# Every run also reports losses, errors and lost connections: a figure from
# a run that lost or failed anything is not comparable. Results: OUT/summary.md,
# OUT/summary.json, and per run OUT/runs/<scenario>-<target>-<rep>.{json,txt}.
#
# Environment (defaults in brackets):
#   CENTRIFUGO_BIN [go install github.com/centrifugal/centrifugo/v6@CENTRIFUGO_VERSION]
#   CENTRIFUGO_VERSION [v6.9.1]
#   SCENARIOS [S1,S2,S3,S4,S5,S6], REPS [3]
#   DURATION [10s] measured, WARMUP [2s], DRAIN [5s] per load run;
#   HOLD [10s] S5's idle hold, SETTLE [2] seconds before reading RSS, COOLDOWN [2] seconds between runs
#   S1_CONNS [100] S1_RATE [200] S1_WRITERS [8]   S2_CONNS [1000] S2_RATE [100] S2_WRITERS [8]
#   S3_CONNS [1000] S3_WRITERS [8]                S4_CONNS [1000] S4_WRITERS [32]
#   S5_CONNS [5000]                               S6_CONNS [5000]
#   OUT [/tmp/pm-compare-<date>-<time>]
#   COMPARE_DB_NAME [pm_compare] (dropped at the end if this script created it),
#   COMPARE_REDIS_PREFIX [pm_compare:] (pm), COMPARE_CF_REDIS_PREFIX [pm_compare_centrifugo] (Centrifugo)
#   COMPARE_PM_NODE_BASE_PORT [18180], COMPARE_PM_ADMIN_BASE_PORT [19190] (nodes on +1, +2),
#   COMPARE_PM_LB_ADDR [127.0.0.1:18080], COMPARE_PM_LB_STATS_ADDR [127.0.0.1:18404] (HAProxy, if installed),
#   COMPARE_CF_BASE_PORT [18000] (Centrifugo nodes on +1, +2)
#
# Needs go, jq, PostgreSQL and Redis (scripts/services.sh). It stops
# everything it started when it ends, also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly CENTRIFUGO_VERSION="${CENTRIFUGO_VERSION:-v6.9.1}"
readonly SCENARIOS="${SCENARIOS:-S1,S2,S3,S4,S5,S6}" REPS="${REPS:-3}"
readonly DURATION="${DURATION:-10s}" WARMUP="${WARMUP:-2s}" DRAIN="${DRAIN:-5s}" HOLD="${HOLD:-10s}"
readonly SETTLE="${SETTLE:-2}" COOLDOWN="${COOLDOWN:-2}"
readonly S1_CONNS="${S1_CONNS:-100}" S1_RATE="${S1_RATE:-200}" S1_WRITERS="${S1_WRITERS:-8}"
readonly S2_CONNS="${S2_CONNS:-1000}" S2_RATE="${S2_RATE:-100}" S2_WRITERS="${S2_WRITERS:-8}"
readonly S3_CONNS="${S3_CONNS:-1000}" S3_WRITERS="${S3_WRITERS:-8}"
readonly S4_CONNS="${S4_CONNS:-1000}" S4_WRITERS="${S4_WRITERS:-32}"
readonly S5_CONNS="${S5_CONNS:-5000}" S6_CONNS="${S6_CONNS:-5000}"
OUT="${OUT:-/tmp/pm-compare-$(date +%Y%m%d-%H%M%S)}"
readonly DB_NAME="${COMPARE_DB_NAME:-pm_compare}"
readonly PM_PREFIX="${COMPARE_REDIS_PREFIX:-pm_compare:}" CF_PREFIX="${COMPARE_CF_REDIS_PREFIX:-pm_compare_centrifugo}"
readonly PM_NODE_BASE="${COMPARE_PM_NODE_BASE_PORT:-18180}" PM_ADMIN_BASE="${COMPARE_PM_ADMIN_BASE_PORT:-19190}"
readonly PM_LB="${COMPARE_PM_LB_ADDR:-127.0.0.1:18080}" PM_LB_STATS="${COMPARE_PM_LB_STATS_ADDR:-127.0.0.1:18404}"
readonly CF_BASE="${COMPARE_CF_BASE_PORT:-18000}"
readonly NODES=2

log() { printf 'compare: %s\n' "$*"; }
die() {
	printf 'compare: error: %s\n' "$*" >&2
	exit 1
}

# A PM_LOADGEN_* variable of the caller's shell would change every run.
unset "${!PM_LOADGEN_@}"

[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive number, not '$REPS'"
[[ "$SETTLE" =~ ^[0-9]+$ && "$COOLDOWN" =~ ^[0-9]+$ ]] || die "SETTLE and COOLDOWN are whole seconds"
# S5 reads the RSS SETTLE seconds after the last subscription: the hold must outlast that.
if ! [[ "$HOLD" =~ ^([0-9]+)s$ ]] || ((BASH_REMATCH[1] <= SETTLE)); then
	die "HOLD must be whole seconds, more than SETTLE ($SETTLE): not '$HOLD'"
fi
[[ "$DB_NAME" != pm ]] || die "COMPARE_DB_NAME must not be make run's database 'pm'"
# The prefixes' keys are deleted at the end: never make run's, never all.
[[ -n "$PM_PREFIX" && "$PM_PREFIX" != pm: ]] || die "COMPARE_REDIS_PREFIX must be set and not make run's 'pm:'"
[[ -n "$CF_PREFIX" && "$CF_PREFIX" != centrifugo ]] || die "COMPARE_CF_REDIS_PREFIX must be set and not Centrifugo's default"
for s in ${SCENARIOS//,/ }; do
	[[ "$s" =~ ^S[1-6]$ ]] || die "unknown scenario '$s' in SCENARIOS (S1 … S6)"
done
for tool in go jq psql; do
	command -v "$tool" >/dev/null || die "$tool is not installed"
done

# ------------------------------------------------------------------ helpers

# alive PID: is the process running (not exited, not a zombie)?
alive() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ "${stat%% *}" != Z ]]
}

# port_busy HOST PORT: does something listen there already?
# shellcheck disable=SC2016 # expanded by the inner bash
port_busy() { timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null; }

# http_status HOST PORT PATH prints the status code of GET PATH, or nothing.
http_status() {
	# shellcheck disable=SC2016 # expanded by the inner bash
	timeout 3 bash -c '
		exec 3<>"/dev/tcp/$0/$1" || exit 1
		printf "GET %s HTTP/1.0\r\nHost: %s:%s\r\nConnection: close\r\n\r\n" "$2" "$0" "$1" >&3
		IFS=" " read -r _ code _ <&3 && printf "%s\n" "$code"' "$1" "$2" "$3" 2>/dev/null || true
}

# psql_admin runs the SQL on stdin as postgres, like scripts/dbsetup.sh;
# :'db' and :"db" are DB_NAME, quoted by psql.
psql_admin() {
	env -u PGPASSWORD PGPASSFILE=/nonexistent/pgpass \
		psql -X -w -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p 5432 -U postgres -d postgres -v db="$DB_NAME"
}

# rss_kib PID...: the sum of their VmRSS, in KiB.
rss_kib() {
	local pid sum=0 kib
	for pid in "$@"; do
		kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status") || die "cannot read the RSS of pid $pid"
		sum=$((sum + kib))
	done
	printf '%s\n' "$sum"
}

# ours_centrifugo PID: is PID a Centrifugo this script started?
ours_centrifugo() {
	alive "$1" && [[ "$(tr '\0' '\n' <"/proc/$1/cmdline" | head -n 1)" == "$CF_BIN" ]]
}

# stop_centrifugo stops the Centrifugo nodes: SIGTERM, SIGKILL after 15 s.
stop_centrifugo() {
	local pid deadline
	for pid in "${cf_pids[@]}"; do
		if ours_centrifugo "$pid"; then kill -TERM "$pid" 2>/dev/null || true; fi
	done
	deadline=$((SECONDS + 15))
	for pid in "${cf_pids[@]}"; do
		while ours_centrifugo "$pid"; do
			if ((SECONDS >= deadline)); then
				kill -KILL "$pid" 2>/dev/null || true
				break
			fi
			sleep 0.2
		done
	done
	cf_pids=()
}

# ------------------------------------------------------------ cleanup (trap)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pm-compare-work.XXXXXX")
readonly WORK PM_RUN_DIR_OURS="$WORK/pm-run"
cf_pids=() loadgen_pid="" db_created=false pm_started=false CF_BIN=""

cleanup() {
	local status=$? prefix
	trap - EXIT INT TERM
	set +e
	if [[ -n "$loadgen_pid" ]] && alive "$loadgen_pid"; then
		kill -TERM "$loadgen_pid" 2>/dev/null
		wait "$loadgen_pid" 2>/dev/null
	fi
	stop_centrifugo
	if $pm_started; then
		log "stopping the pm cluster"
		PM_RUN_DIR="$PM_RUN_DIR_OURS" scripts/stop.sh >>"$OUT/pm-cluster.log" 2>&1
	fi
	if $db_created; then
		# The nodes are stopped; nothing else uses this database.
		psql_admin <<<"DROP DATABASE IF EXISTS :\"db\"" >/dev/null 2>&1 && log "dropped database $DB_NAME"
	fi
	if command -v redis-cli >/dev/null; then
		for prefix in "$PM_PREFIX" "$CF_PREFIX"; do
			redis-cli -h 127.0.0.1 -p 6379 --scan --pattern "$prefix*" 2>/dev/null |
				xargs -r -n 500 redis-cli -h 127.0.0.1 -p 6379 del >/dev/null 2>&1
		done
	fi
	rm -rf "$WORK"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$OUT/runs"
OUT=$(cd "$OUT" && pwd)
readonly OUT
log "results in $OUT"

# ---------------------------------------------------------------- Centrifugo

if [[ -n "${CENTRIFUGO_BIN:-}" ]]; then
	CF_BIN=$(realpath "$CENTRIFUGO_BIN") || die "CENTRIFUGO_BIN=$CENTRIFUGO_BIN does not exist"
	[[ -f "$CF_BIN" && -x "$CF_BIN" ]] || die "CENTRIFUGO_BIN=$CENTRIFUGO_BIN is not an executable"
else
	log "installing Centrifugo $CENTRIFUGO_VERSION into $WORK/centrifugo (go install; log in $OUT/centrifugo-install.log)"
	# Outside this module: go install pkg@version builds the module's own
	# go.mod, and pm's go.mod stays as it is.
	if ! (cd "$WORK" && GOBIN="$WORK/centrifugo" GOFLAGS='' go install "github.com/centrifugal/centrifugo/v6@$CENTRIFUGO_VERSION") \
		>"$OUT/centrifugo-install.log" 2>&1; then
		tail -n 20 "$OUT/centrifugo-install.log" >&2
		die "go install of Centrifugo $CENTRIFUGO_VERSION failed"
	fi
	CF_BIN="$WORK/centrifugo/centrifugo"
fi
# A go-installed binary says version 0.0.0; its module version is in the build info.
cf_version=$(go version -m "$CF_BIN" 2>/dev/null | awk '$1 == "mod" && $2 == "github.com/centrifugal/centrifugo/v6" {print $3}')
[[ -n "$cf_version" ]] || cf_version=$("$CF_BIN" version 2>/dev/null | awk '{print $2}')
if [[ "$cf_version" != "$CENTRIFUGO_VERSION" && "$cf_version" != "${CENTRIFUGO_VERSION#v}" ]]; then
	printf 'compare: warning: %s is Centrifugo %s, not %s\n' "$CF_BIN" "${cf_version:-(unknown)}" "$CENTRIFUGO_VERSION" >&2
fi
log "Centrifugo: $CF_BIN (${cf_version:-version unknown})"

CF_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
readonly CF_SECRET
for ((i = 1; i <= NODES; i++)); do
	(umask 077 && cat >"$WORK/centrifugo-$i.json") <<EOF
{
  "http_server": {"address": "127.0.0.1", "port": $((CF_BASE + i))},
  "client": {"token": {"hmac_secret_key": "$CF_SECRET"}},
  "channel": {"namespaces": [{"name": "loadgen", "allow_subscribe_for_client": true, "allow_publish_for_client": true}]},
  "engine": {"type": "redis", "redis": {"address": ["redis://127.0.0.1:6379"], "prefix": "$CF_PREFIX"}},
  "http_api": {"disabled": true},
  "admin": {"enabled": false},
  "health": {"enabled": true},
  "usage_stats": {"disabled": true}
}
EOF
	"$CF_BIN" checkconfig --config "$WORK/centrifugo-$i.json" >/dev/null || die "centrifugo checkconfig refuses $WORK/centrifugo-$i.json"
done

start_centrifugo() {
	local i pid deadline
	for ((i = 1; i <= NODES; i++)); do
		if port_busy 127.0.0.1 $((CF_BASE + i)); then
			die "127.0.0.1:$((CF_BASE + i)) is in use (set COMPARE_CF_BASE_PORT)"
		fi
	done
	cf_pids=()
	for ((i = 1; i <= NODES; i++)); do
		setsid "$CF_BIN" --config "$WORK/centrifugo-$i.json" >>"$OUT/centrifugo-$i.log" 2>&1 </dev/null &
		cf_pids+=("$!")
	done
	deadline=$((SECONDS + 30))
	for ((i = 1; i <= NODES; i++)); do
		pid=${cf_pids[$((i - 1))]}
		until [[ "$(http_status 127.0.0.1 $((CF_BASE + i)) /health)" == 200 ]]; do
			if ! alive "$pid" || ((SECONDS >= deadline)); then
				tail -n 20 "$OUT/centrifugo-$i.log" >&2
				die "Centrifugo node $i did not come up on 127.0.0.1:$((CF_BASE + i))"
			fi
			sleep 0.2
		done
	done
	log "Centrifugo: ${NODES} nodes on 127.0.0.1:$((CF_BASE + 1))…$((CF_BASE + NODES)) (pids ${cf_pids[*]}), Redis prefix $CF_PREFIX"
}

# ------------------------------------------------------------------------ pm

PM_SECRET=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
readonly PM_SECRET

start_pm() {
	log "starting pm: ${NODES} nodes on 127.0.0.1:$((PM_NODE_BASE + 1))…$((PM_NODE_BASE + NODES)), database $DB_NAME, Redis prefix $PM_PREFIX (log in $OUT/pm-cluster.log)"
	pm_started=true
	if ! env NODES="$NODES" PM_RUN_DIR="$PM_RUN_DIR_OURS" PM_DB_NAME="$DB_NAME" PM_REDIS_PREFIX="$PM_PREFIX" \
		PM_NODE_BASE_PORT="$PM_NODE_BASE" PM_ADMIN_BASE_PORT="$PM_ADMIN_BASE" \
		PM_LB_ADDR="$PM_LB" PM_LB_STATS_ADDR="$PM_LB_STATS" PM_JWT_SECRET="$PM_SECRET" PM_RATE_PER_SECOND=-1 PM_CONNECT_RATE=-1 \
		scripts/run.sh >>"$OUT/pm-cluster.log" 2>&1; then
		tail -n 30 "$OUT/pm-cluster.log" >&2
		die "scripts/run.sh failed"
	fi
}

pm_pids() {
	local i
	for ((i = 1; i <= NODES; i++)); do
		cat "$PM_RUN_DIR_OURS/node-$i.pid"
	done
}

# -------------------------------------------------------------------- setup

scripts/services.sh >>"$OUT/pm-cluster.log" 2>&1 || die "scripts/services.sh failed (see $OUT/pm-cluster.log)"
exists=$(psql_admin <<<"SELECT 1 FROM pg_database WHERE datname = :'db'") || die "cannot query PostgreSQL as postgres"
if [[ -z "$exists" ]]; then
	db_created=true # by scripts/run.sh (dbsetup.sh), below
fi
start_pm
start_centrifugo

log "building pm-loadgen"
go build -o "$WORK/pm-loadgen" ./cmd/pm-loadgen
readonly LOADGEN="$WORK/pm-loadgen"

max_conns=$S1_CONNS
for n in "$S2_CONNS" "$S3_CONNS" "$S4_CONNS" "$S5_CONNS" "$S6_CONNS"; do
	if ((n > max_conns)); then max_conns=$n; fi
done
if (($(ulimit -Hn) < max_conns + 1000)); then
	printf 'compare: warning: the open files limit (ulimit -Hn %s) is low for %s connections\n' "$(ulimit -Hn)" "$max_conns" >&2
fi

urls_of() {
	local i urls=""
	for ((i = 1; i <= NODES; i++)); do
		if [[ "$1" == pm ]]; then
			urls+="${urls:+,}ws://127.0.0.1:$((PM_NODE_BASE + i))/ws"
		else
			urls+="${urls:+,}ws://127.0.0.1:$((CF_BASE + i))/connection/websocket"
		fi
	done
	printf '%s\n' "$urls"
}

# ------------------------------------------------------------------ running

failed=0
: >"$WORK/results.tsv"

# result SCENARIO TARGET REP METRIC VALUE
result() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$WORK/results.tsv"; }

# loadgen TXT SECRET ARGS...: runs pm-loadgen with its output in TXT and
# returns its status. In the background, so that a signal reaches the trap
# at once (bash runs traps only between foreground commands); the trap
# stops it.
loadgen() {
	local txt=$1 secret=$2 status=0
	shift 2
	PM_LOADGEN_SECRET="$secret" "$LOADGEN" "$@" >"$txt" 2>&1 &
	loadgen_pid=$!
	wait "$loadgen_pid" || status=$?
	loadgen_pid=""
	return "$status"
}

# run_scenario SCENARIO TARGET REP: one run of pm-loadgen, its figures into results.tsv.
run_scenario() {
	local scen=$1 target=$2 rep=$3 args=() name secret before="" after="" pids ready seeded
	name="$scen-$target-$rep"
	local json="$OUT/runs/$name.json" txt="$OUT/runs/$name.txt"
	secret=$PM_SECRET
	if [[ "$target" == centrifugo ]]; then secret=$CF_SECRET; fi
	local load=(-duration "$DURATION" -warmup "$WARMUP" -drain "$DRAIN")
	case "$scen" in
	S1) args=(-conns "$S1_CONNS" -writers "$S1_WRITERS" -rate "$S1_RATE" "${load[@]}") ;;
	S2) args=(-conns "$S2_CONNS" -writers "$S2_WRITERS" -rate "$S2_RATE" "${load[@]}") ;;
	S3) args=(-conns "$S3_CONNS" -writers "$S3_WRITERS" -inflight "$S3_WRITERS" "${load[@]}") ;;
	S4) args=(-conns "$S4_CONNS" -writers "$S4_WRITERS" -inflight "$S4_WRITERS" "${load[@]}") ;;
	S5) args=(-conns "$S5_CONNS" -writers 0 -hold "$HOLD") ;;
	S6) args=(-conns "$S6_CONNS" -writers 0) ;;
	esac
	args+=(-target "$target" -url "$(urls_of "$target")" -projects 1 -quiet -json "$json")

	if [[ "$scen" == S5 ]]; then
		# A fresh cluster, so that the baseline is an idle node's.
		if [[ "$target" == pm ]]; then start_pm; else
			stop_centrifugo
			start_centrifugo
		fi
		if [[ "$target" == pm ]]; then mapfile -t pids < <(pm_pids); else pids=("${cf_pids[@]}"); fi
		# The baseline is taken once the tenant is seeded (pm's seeding
		# goes through the nodes), just before the subscribers connect.
		ready="$WORK/$name.ready" seeded="$WORK/$name.seeded"
		rm -f "$ready" "$seeded"
		PM_LOADGEN_SECRET="$secret" "$LOADGEN" "${args[@]}" -seeded-file "$seeded" -ready-file "$ready" >"$txt" 2>&1 &
		loadgen_pid=$!
		while [[ ! -e "$seeded" ]] && alive "$loadgen_pid"; do sleep 0.2; done
		sleep "$SETTLE"
		before=$(rss_kib "${pids[@]}")
		rm -f "$seeded"
		while [[ ! -e "$ready" ]] && alive "$loadgen_pid"; do sleep 0.2; done
		if [[ -e "$ready" ]]; then
			sleep "$SETTLE"
			after=$(rss_kib "${pids[@]}")
		fi
		if ! wait "$loadgen_pid"; then
			loadgen_pid=""
			log "$name: pm-loadgen failed (see $txt)"
			failed=$((failed + 1))
			return
		fi
		loadgen_pid=""
		if [[ -z "$before" || -z "$after" ]]; then
			log "$name: could not read the nodes' RSS"
			failed=$((failed + 1))
			return
		fi
		printf '\nnode RSS: %s KiB before, %s KiB after %s idle subscribed connections\n' "$before" "$after" "$S5_CONNS" >>"$txt"
		result "$scen" "$target" "$rep" rss_kib_per_conn "$(awk -v a="$after" -v b="$before" -v n="$S5_CONNS" 'BEGIN {printf "%.2f", (a - b) / n}')"
	elif ! loadgen "$txt" "$secret" "${args[@]}"; then
		log "$name: pm-loadgen failed (see $txt)"
		failed=$((failed + 1))
		return
	fi

	case "$scen" in
	S1 | S2)
		result "$scen" "$target" "$rep" delivery_p50_ms "$(jq '.delivery_latency.p50_ms' "$json")"
		result "$scen" "$target" "$rep" delivery_p99_ms "$(jq '.delivery_latency.p99_ms' "$json")"
		;;
	S3 | S4)
		result "$scen" "$target" "$rep" deliveries_per_s "$(jq '.deliveries_per_s | round' "$json")"
		result "$scen" "$target" "$rep" delivery_p99_ms "$(jq '.delivery_latency.p99_ms' "$json")"
		result "$scen" "$target" "$rep" writes_per_s "$(jq '.writes_per_s * 10 | round / 10' "$json")"
		;;
	S6) result "$scen" "$target" "$rep" connect_s "$(jq '.connect_s * 1000 | round / 1000' "$json")" ;;
	esac
	# What makes a figure not comparable.
	result "$scen" "$target" "$rep" lost "$(jq '.losses' "$json")"
	result "$scen" "$target" "$rep" errors "$(jq '[.errors[]] | add // 0' "$json")"
	result "$scen" "$target" "$rep" disconnects "$(jq '.disconnects' "$json")"
	log "$name: $(jq -r '"connected \(.conns) in \(.connect_s | . * 1000 | round / 1000)s, \(.writes) writes, \(.deliveries) deliveries (expected \(.expected_deliveries)), delivery p50 \(.delivery_latency.p50_ms) ms p99 \(.delivery_latency.p99_ms) ms, lost \(.losses), errors \([.errors[]] | add // 0), disconnects \(.disconnects)"' "$json")"
}

for scen in ${SCENARIOS//,/ }; do
	for ((rep = 1; rep <= REPS; rep++)); do
		order=(pm centrifugo)
		if ((rep % 2 == 0)); then order=(centrifugo pm); fi
		for target in "${order[@]}"; do
			log "$scen, repetition $rep/$REPS: $target"
			run_scenario "$scen" "$target" "$rep"
			sleep "$COOLDOWN"
		done
	done
done

# ------------------------------------------------------------------ summary

# What each scenario was, with this run's sizes.
scenarios=$(jq -n \
	--arg S1 "S1: $S1_CONNS subscribers, $S1_RATE writes/s open loop ($S1_WRITERS writers)" \
	--arg S2 "S2: $S2_CONNS subscribers, $S2_RATE writes/s open loop ($S2_WRITERS writers)" \
	--arg S3 "S3: $S3_CONNS subscribers, $S3_WRITERS closed-loop writers" \
	--arg S4 "S4: $S4_CONNS subscribers, $S4_WRITERS closed-loop writers" \
	--arg S5 "S5: RSS per idle subscribed connection, $S5_CONNS connections" \
	--arg S6 "S6: open and subscribe $S6_CONNS connections" \
	'$ARGS.named')

# summary.json: per scenario and metric, each target's values, min, max and
# median, and the ratio of the medians pm/Centrifugo (not for the counts of
# losses, errors and lost connections, which should all be 0).
jq -R -s --arg version "$cf_version" --arg reps "$REPS" --arg duration "$DURATION" --arg warmup "$WARMUP" \
	--argjson scenarios "$scenarios" --arg ran "$SCENARIOS" '
	def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
	def stats: {values: ., min: min, max: max, median: median};
	[split("\n")[] | select(length > 0) | split("\t") | {scenario: .[0], target: .[1], rep: (.[2] | tonumber), metric: .[3], value: (.[4] | tonumber? // null)}]
	| group_by([.scenario, .metric])
	| map({
		scenario: .[0].scenario, metric: .[0].metric,
		pm: ([.[] | select(.target == "pm") | .value | select(. != null)] | stats),
		centrifugo: ([.[] | select(.target == "centrifugo") | .value | select(. != null)] | stats)
	  } | .ratio = (if (.metric | IN("lost", "errors", "disconnects")) or .pm.median == null or (.centrifugo.median // 0) == 0
		then null else (.pm.median / .centrifugo.median * 100 | round / 100) end))
	| {centrifugo_version: $version, reps: ($reps | tonumber), duration: $duration, warmup: $warmup,
		scenarios: ($scenarios | with_entries(select(.key as $k | $ARGS.named.ran | split(",") | index($k)))), results: .}
' "$WORK/results.tsv" >"$OUT/summary.json"

# summary.md: the table.
{
	printf '# pm and Centrifugo %s side by side\n\n' "$cf_version"
	printf '%s, %s repetition(s), %s measured after %s of warm-up; 2 nodes each, subscribers round-robin over the nodes.\n' \
		"$(date -u +%Y-%m-%dT%H:%MZ)" "$REPS" "$DURATION" "$WARMUP"
	printf 'min–max over the repetitions; ratio = pm / Centrifugo of the medians (latency, RSS, connect time: lower is better; deliveries/s, writes/s: higher is better).\n'
	printf 'lost, errors, disconnects: should be 0; a run with any is not comparable (see runs/).\n\n'
	jq -r '.scenarios | to_entries[] | "- \(.value)"' "$OUT/summary.json"
	printf '\n| Scenario | Metric | pm | Centrifugo | pm/Centrifugo |\n|---|---|---:|---:|---:|\n'
	jq -r '
		def order: {"delivery_p50_ms": 1, "delivery_p99_ms": 2, "deliveries_per_s": 0, "writes_per_s": 3, "rss_kib_per_conn": 0,
			"connect_s": 0, "lost": 7, "errors": 8, "disconnects": 9}[.] // 5;
		def span: if .min == null then "failed" elif .min == .max then "\(.min)" else "\(.min)–\(.max)" end;
		.results | sort_by(.scenario, (.metric | order))[]
		| "| \(.scenario) | \(.metric) | \(.pm | span) | \(.centrifugo | span) | \(.ratio // "–") |"
	' "$OUT/summary.json"
} >"$OUT/summary.md"

echo
cat "$OUT/summary.md"
echo
log "results: $OUT/summary.md, $OUT/summary.json, runs in $OUT/runs/"
if ((failed > 0)); then
	die "$failed run(s) failed: see $OUT/runs/*.txt"
fi
