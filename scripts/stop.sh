#!/usr/bin/env bash
# stop.sh stops what scripts/run.sh started: every process with a pid file in
# .run/ (the nodes and HAProxy). It sends SIGTERM so nodes drain (close their
# WebSockets with 1001), waits up to STOP_WAIT seconds (default 20), then
# sends SIGKILL to what is left. A pid whose process is no longer the one
# run.sh started (pm-node or haproxy) is left alone. PM_RUN_DIR (default
# .run) names the folder of pid files, as for run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly RUN_DIR="${PM_RUN_DIR:-.run}" WAIT_SECONDS="${STOP_WAIT:-20}"

# ours PID NAME: is PID alive and running the program NAME?
ours() {
	local cmd
	[[ -r "/proc/$1/cmdline" ]] || return 1
	cmd=$(tr '\0' '\n' <"/proc/$1/cmdline" | head -n 1)
	[[ "$(basename "$cmd")" == "$2" ]]
}

# alive PID: has PID not exited? (A zombie has: this machine's init may be
# slow to reap orphans.)
alive() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ "${stat%% *}" != Z ]]
}

pids=() names=()
shopt -s nullglob
for file in "$RUN_DIR"/*.pid; do
	name=$(basename "$file" .pid)
	pid=$(<"$file")
	case "$name" in
	haproxy) prog=haproxy ;;
	*) prog=pm-node ;;
	esac
	if [[ "$pid" =~ ^[0-9]+$ ]] && ours "$pid" "$prog"; then
		kill -TERM "$pid" 2>/dev/null || true
		pids+=("$pid") names+=("$name")
	fi
	rm -f "$file"
done

if ((${#pids[@]} == 0)); then
	echo "stop: nothing running"
	exit 0
fi

deadline=$((SECONDS + WAIT_SECONDS))
for i in "${!pids[@]}"; do
	while alive "${pids[$i]}"; do
		if ((SECONDS >= deadline)); then
			echo "stop: ${names[$i]} (pid ${pids[$i]}) still running after ${WAIT_SECONDS}s: SIGKILL"
			kill -KILL "${pids[$i]}" 2>/dev/null || true
			break
		fi
		sleep 0.2
	done
	echo "stop: stopped ${names[$i]} (pid ${pids[$i]})"
done
