#!/usr/bin/env bash
# bench/results.sh - figures for guardrails (issue 12): how fast a guard breach undoes every fault
# of a run, and how long the guard takes to see the outage (a measurement, not a test).
#
# Against a release build with the local network backend and a private redis-server, REPS times:
# a run starts loadgen at 40 requests/s (open model), holds itself to
# guard(#{error_rate_pct: 5.0, window_s: 5, min_requests: 10}), blocks Redis, resets the
# connections and sleeps 60 s. Read from each run's own journal:
#   - breach → last fault undone: breach.at to the latest undo[].at of a fault     (target < 1 s)
#   - block → breach: the network_block step's start to breach.at  (the guard's detection time)
#   - the run's status (aborted), and the world afterwards (no block, no loadgen child).
# Run:   bash bench/results.sh    Env: REPS=20, CHAOS_LAB_BIN, LOADGEN_BIN (instead of cargo build)
# Needs: redis-server (+ redis-cli), curl, jq; apt-get when missing. Only 127.0.0.1 is used.
set -euo pipefail

REPS=${REPS:-20}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d)
REDIS_PID='' SVC_PID=''
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap 'cleanup "$WORK" SVC_PID REDIS_PID' EXIT
unset CHAOS_API_TOKEN

need_tools redis-server redis-cli curl jq
find_bin "$ROOT"
find_loadgen "$ROOT"

start_redis
start_service RUNS_DIR="$WORK/runs" SCENARIOS_DIR="$WORK/scenarios" NETWORK_FAULT_BACKEND=local \
    LOADGEN_BIN="$LOADGEN_BIN" LOADGEN_PROFILES_DIR="$ROOT/loadtests/profiles" REDIS_MAX_RETRIES=0 \
    REDIS_SOCKET_TIMEOUT=1 REDIS_SOCKET_CONNECT_TIMEOUT=1 HEALTH_CACHE_TTL_SECONDS=0

read -r -d '' SCRIPT <<'RHAI' || true
guard(#{error_rate_pct: 5.0, window_s: 5, min_requests: 10});
let lg = loadgen_start(#{profile: "sustained", rate: 40, time_scale: 1});
sleep(3.0);
network_block();
redis_reset();
sleep(60.0);
RHAI
BODY=$(jq -n --arg s "$SCRIPT" '{script: $s}')

undo_ms=() detect_ms=() bad=0
echo "== $REPS guarded runs (loadgen 40 req/s, block + reset, guard error_rate_pct 5 over 5 s)"
for ((i = 1; i <= REPS; i++)); do
    curl -fsS -m 120 -H 'content-type: application/json' --data-binary "$BODY" "$URL/chaos/run?wait=true" >"$WORK/r.json"
    # Timestamps to epoch ms in jq: RFC 3339 with microseconds; fromdate wants whole seconds.
    read -r status undo detect < <(jq -r '
        def ms: capture("^(?<s>[^.]+)(\\.(?<f>[0-9]+))?Z$") | ((.s + "Z") | fromdate) * 1000 + (((.f // "0") + "000")[0:3] | tonumber);
        (.breach.at // empty | ms) as $b
        | ([.undo[] | select(.fault_id != null) | .at | ms] | max) as $u
        | ([.steps[] | select(.name == "network_block") | .started_at | ms] | first) as $blk
        | "\(.status) \($u - $b) \($b - $blk)"' "$WORK/r.json" || echo "none - -")
    clear=$(curl -fsS "$URL/chaos/status" | jq -r '.network.blocked == false and (.faults | length) == 0')
    if [[ $status != aborted || $clear != true ]]; then
        bad=$((bad + 1))
        echo "   run $i: status $status, clear $clear"
        continue
    fi
    undo_ms+=("$undo") detect_ms+=("$detect")
done

# stats NAME VALUES...: p50, p99 and max of integer milliseconds.
stats() {
    local name=$1; shift
    printf '%s\n' "$@" | sort -n | awk -v name="$name" '{ v[NR] = $1 } END {
        if (NR == 0) { print name ": no samples"; exit }
        p50 = v[int((NR - 1) * 0.50) + 1]; p99 = v[int((NR - 1) * 0.99) + 1]
        printf "%-34s p50 %6d ms   p99 %6d ms   max %6d ms   (n=%d)\n", name, p50, p99, v[NR], NR }'
}
stats "breach → last fault undone" "${undo_ms[@]}"
stats "block → breach (detection)" "${detect_ms[@]}"
max_undo=$(printf '%s\n' "${undo_ms[@]:-99999}" | sort -n | tail -1)
echo "breach → undone < 1000 ms in every run: $(verdict "$max_undo < 1000 && $bad == 0")  (runs not aborted or not clear: $bad)"
