#!/usr/bin/env bash
# bench/safety.sh - figures for the safety kernel (issue 10): the fault ledger, the kill-switch
# latch, run footprint caps and loadgen children (a measurement, not a test).
#
# Against a release build with the local network backend, talking to a private, throw-away
# redis-server (one run at a time):
#   1. log flood (the issue's row 6): a script logs a 32 KiB string 5 000 times. Service RSS
#      growth (VmHWM after minus VmRSS before, target < 150 MB), journal size (< 20 MB), and the
#      report's `truncated`.
#   2. kill switch with 10 active local faults (3 network_block, 4 network_latency, a load, a
#      loadgen child and a request hang, all from one run), KS_REPS times: POST /chaos/stop to all
#      clear, as the answer's all_clear_ms and as curl times the request   (target p99 < 100 ms)
#   3. torture: TRIALS runs that apply a block, a latency, a load, a loadgen child and a request
#      hang, each ended at a random moment by one of: cancel, kill switch (then resume), timeout,
#      SIGTERM (then restart), kill -9 (then restart on the same RUNS_DIR), a throwing rollback, a
#      looping rollback (ROLLBACK_TIMEOUT_SECONDS=1). After each (and each restart) the world is
#      checked from outside: /chaos/status (network, latency, load, hang, ledger, runs), a Redis
#      PING through the proxy, no loadgen process                      (target: 0 leftovers)
# The azure backend needs an ARM to talk to; tests/torture.rs tortures it against the fake ARM.
# Each figure is printed with PASS/FAIL; the script exits non-zero only when something failed to
# run.
# Run:   bash bench/safety.sh     Env: TRIALS=210, KS_REPS=50, SEED (replays a torture sequence),
#        CHAOS_LAB_BIN, LOADGEN_BIN (instead of `cargo build --release`)
# Needs: redis-server (+ redis-cli), curl, jq; apt-get when missing. Only 127.0.0.1 is used; redis,
# the service and any loadgen child of this run are stopped on exit.
set -euo pipefail

TRIALS=${TRIALS:-210} KS_REPS=${KS_REPS:-50}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d)
RUNS_DIR=$WORK/runs
REDIS_PID='' SVC_PID=''
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# loadgen_count: loadgen children of this bench's service, found by the report path their command
# line names (--json $RUNS_DIR/loadgen/...). Builtins only, so no helper process matches itself.
loadgen_count() {
    local f args n=0
    for f in /proc/[0-9]*/cmdline; do
        mapfile -d '' args 2>/dev/null <"$f" || continue
        if [[ " ${args[*]} " == *"$RUNS_DIR/loadgen/"* ]]; then n=$((n + 1)); fi
    done
    echo "$n"
}

# kill_loadgens: kill -9 every loadgen child of this bench (on exit: a leftover must not outlive it).
kill_loadgens() {
    local f args pid
    for f in /proc/[0-9]*/cmdline; do
        mapfile -d '' args 2>/dev/null <"$f" || continue
        if [[ " ${args[*]} " == *"$RUNS_DIR/loadgen/"* ]]; then
            pid=${f#/proc/}
            kill -KILL "${pid%/cmdline}" 2>/dev/null || true
        fi
    done
}

trap 'kill_loadgens; cleanup "$WORK" SVC_PID REDIS_PID' EXIT
# The bench talks to the service without a token.
unset CHAOS_API_TOKEN
SEED=${SEED:-$$}
RANDOM=$SEED

# --- tools and binaries ------------------------------------------------------------------------
need_tools redis-server redis-cli curl jq
find_bin "$ROOT"
find_loadgen "$ROOT"

# --- helpers -----------------------------------------------------------------------------------
# svc_up: start the service (lib.sh's start_service) on RUNS_DIR; sets SVC_PID and URL.
svc_up() {
    start_service RUNS_DIR="$RUNS_DIR" SCENARIOS_DIR="$WORK/scenarios" NETWORK_FAULT_BACKEND=local \
        LOADGEN_BIN="$LOADGEN_BIN" LOADGEN_PROFILES_DIR="$ROOT/loadtests/profiles" ROLLBACK_TIMEOUT_SECONDS=1 \
        MAX_CONCURRENT_RUNS=1 REDIS_MAX_RETRIES=0 REDIS_SOCKET_TIMEOUT=1 REDIS_SOCKET_CONNECT_TIMEOUT=1 \
        HEALTH_CACHE_TTL_SECONDS=0
}

# req METHOD PATH [JSON]: one request to the service; the body goes to $WORK/body, the status to
# CODE (000 when nothing answered).
req() {
    local args=(-s -o "$WORK/body" -w '%{http_code}' -m 30 -X "$1")
    if [[ $# -ge 3 ]]; then args+=(-H 'content-type: application/json' --data-binary "$3"); fi
    CODE=$(curl "${args[@]}" "$URL$2") || CODE=000
}
body() { cat "$WORK/body"; }

# secs MS: print MS milliseconds as seconds (1.234).
secs() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }

# no_loadgen_within SECONDS: succeed once no loadgen child is left, fail if one still is then.
no_loadgen_within() {
    local end=$((SECONDS + $1))
    while (($(loadgen_count) > 0)); do
        ((SECONDS < end)) || return 1
        sleep 0.05
    done
}

# vm PID FIELD: a /proc/PID/status figure (VmRSS, VmHWM) in KiB.
vm() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }

# wait_exit PID SECONDS: wait up to SECONDS for our child PID to exit, then reap it and set RC
# to its exit status; fail if it is still running. (kill -0 cannot tell: a zombie answers it.)
wait_exit() {
    local pid=$1 end=$((SECONDS + $2)) state=''
    while ((SECONDS < end)); do
        { read -r _ _ state _ <"/proc/$pid/stat"; } 2>/dev/null || state=Z
        [[ $state == Z ]] && break
        sleep 0.05
    done
    [[ $state == Z ]] || return 1
    RC=0
    wait "$pid" 2>/dev/null || RC=$?
}

# wait_ended ID SECONDS: print the status run ID ended with (its report in $WORK/report), or
# "never" if it is still running after SECONDS.
wait_ended() {
    local end=$((SECONDS + $2)) st
    while ((SECONDS < end)); do
        req GET "/chaos/runs/$1"
        if [[ $CODE == 200 ]]; then
            st=$(jq -r .status "$WORK/body")
            if [[ $st != running ]]; then
                cp "$WORK/body" "$WORK/report"
                echo "$st"
                return 0
            fi
        fi
        sleep 0.05
    done
    echo never
}

# leftovers: print what is still broken, one line each; nothing when the world is clean.
leftovers() {
    local s listen t0 ms n
    if ! s=$(curl -fsS -m 3 "$URL/chaos/status" 2>&1); then
        echo "GET /chaos/status failed: $s"
        return 0
    fi
    jq -r '
        (if .network.blocked != false then "network.blocked is \(.network.blocked)" else empty end),
        (if (.network.faults | length) > 0
         then "network faults in force: \([.network.faults[].id] | join(", "))" else empty end),
        (if (.network.proxy.latency_ms // 0) > 0 then "the proxy adds \(.network.proxy.latency_ms) ms" else empty end),
        (if .load.active != false then "load active" else empty end),
        (if .hang.active != false then "hang active" else empty end),
        (if .faults == null then "status has no faults list (the fault ledger)"
         elif (.faults | length) > 0
         then "ledger entries not undone: \([.faults[] | "\(.id) \(.kind) \(.state)"] | join("; "))"
         else empty end),
        (if (.runs.active // 0) > 0 then "\(.runs.active) run(s) still active" else empty end)
    ' <<<"$s"
    listen=$(jq -r '.network.proxy.listen // empty' <<<"$s")
    if [[ -n $listen ]]; then
        t0=$(date +%s%N)
        if timeout 1 redis-cli -h "${listen%:*}" -p "${listen##*:}" ping >/dev/null 2>&1; then
            ms=$((($(date +%s%N) - t0) / 1000000))
            if ((ms > 200)); then echo "PING through the proxy took $ms ms (latency)"; fi
        else
            echo "no PONG through the proxy $listen within 1 s (blocked)"
        fi
    fi
    n=$(loadgen_count)
    if ((n > 0)); then echo "$n loadgen process(es) still running"; fi
}

# settle: print what is left once the world is clean or 5 s have passed.
settle() {
    local end=$((SECONDS + 5)) left
    while :; do
        left=$(leftovers)
        if [[ -z $left ]] || ((SECONDS >= end)); then break; fi
        sleep 0.1
    done
    if [[ -n $left ]]; then echo "$left"; fi
}

# pct FILE COLUMN P: the P-th percentile (nearest rank) of a column of numbers.
pct() {
    awk -v c="$2" '{print $c}' "$1" | sort -n |
        awk -v p="$3" '{v[NR] = $1} END {i = int((NR * p + 99) / 100); if (i < 1) i = 1; print v[i]}'
}

# --- start redis and the service ---------------------------------------------------------------
start_redis
mkdir -p "$RUNS_DIR" "$WORK/scenarios"
svc_up
echo "service pid $SVC_PID on $URL, redis on 127.0.0.1:$REDIS_PORT, binary $BIN, loadgen $LOADGEN_BIN"

# --- 1. log flood ------------------------------------------------------------------------------
echo; echo "1. log flood: a 32 KiB string logged 5 000 times (row 6)"
FLOOD='let s = "x";
for i in 0..15 { s += s; }
for i in 0..5000 { log(s); }
s.len()'
RSS0=$(vm "$SVC_PID" VmRSS)
curl -s -m 300 -o "$WORK/flood.json" -H 'content-type: application/json' \
    --data-binary "$(jq -n --arg s "$FLOOD" '{script: $s}')" "$URL/chaos/run?wait=true" >/dev/null ||
    die "the flood run did not answer"
RSS1=$(vm "$SVC_PID" VmRSS) HWM=$(vm "$SVC_PID" VmHWM)
FLOOD_ID=$(jq -r .run_id "$WORK/flood.json")
[[ $FLOOD_ID != null ]] || die "flood run: $(cat "$WORK/flood.json")"
JOURNAL=$(stat -c %s "$RUNS_DIR/$FLOOD_ID.json")
TRUNCATED=$(jq -c '.truncated // null' "$WORK/flood.json")
FLOOD_STATUS=$(jq -r .status "$WORK/flood.json")
GROWTH=$(awk -v a="$RSS0" -v b="$HWM" 'BEGIN {printf "%.1f", (b - a) / 1024}')
JOURNAL_MB=$(awk -v j="$JOURNAL" 'BEGIN {printf "%.1f", j / 1048576}')
TRUNC_OK=0
if [[ $TRUNCATED != null ]]; then TRUNC_OK=1; fi
F1_OK=$(verdict "$GROWTH < 150 && $JOURNAL < 20000000 && $TRUNC_OK == 1")
printf '   run %s: %s; RSS %s MiB before, %s MiB after, peak %s MiB: +%s MiB   (target < 150)\n' "$FLOOD_ID" \
    "$FLOOD_STATUS" $((RSS0 / 1024)) $((RSS1 / 1024)) $((HWM / 1024)) "$GROWTH"
printf '   journal %s MiB (target < 20 MB); truncated %s   %s\n' "$JOURNAL_MB" "$TRUNCATED" "$F1_OK"

# --- 2. kill switch with 10 active faults ------------------------------------------------------
echo; echo "2. kill switch with 10 active local faults, $KS_REPS times"
KS_SCRIPT='network_block();
network_block();
network_block();
network_latency(50);
network_latency(50);
network_latency(50);
network_latency(50);
load("low", 600);
loadgen_start(#{profile: "sustained", scale: 0.01, time_scale: 1});
hang(0, "request");'
KS_BODY=$(jq -n --arg s "$KS_SCRIPT" '{script: $s}')
: >"$WORK/ks.txt"
KS_LEFT=0
for ((r = 0; r < KS_REPS; r++)); do
    req POST /chaos/run "$KS_BODY"
    [[ $CODE == 202 ]] || die "kill-switch run refused: $CODE $(body)"
    KS_ID=$(jq -r .run_id "$WORK/body")
    active=0
    for _ in {1..200}; do
        req GET /chaos/status
        active=$(jq '[.faults[]? | select(.state == "active")] | length' "$WORK/body")
        ((active >= 10)) && break
        sleep 0.05
    done
    ((active >= 10)) || die "only $active of the 10 faults became active: $(body)"
    t=$(curl -s -o "$WORK/stop.json" -w '%{time_total}' -m 30 -X POST "$URL/chaos/stop")
    # A missing all_clear_ms counts as 999999 ms, so it cannot pass.
    echo "$(jq -r '.all_clear_ms // 999999' "$WORK/stop.json") $(awk -v t="$t" 'BEGIN {printf "%.2f", t * 1000}')" \
        >>"$WORK/ks.txt"
    left=$(settle)
    if [[ -n $left ]]; then
        KS_LEFT=$((KS_LEFT + 1))
        echo "   rep $r: left behind: ${left//$'\n'/; }"
    fi
    req POST /chaos/resume
    [[ $CODE == 200 ]] || die "resume: $CODE $(body)"
    [[ $(wait_ended "$KS_ID" 10) != never ]] || die "the kill-switch run $KS_ID did not end"
done
KS_P50=$(pct "$WORK/ks.txt" 1 50) KS_P99=$(pct "$WORK/ks.txt" 1 99) KS_MAX=$(pct "$WORK/ks.txt" 1 100)
KC_P50=$(pct "$WORK/ks.txt" 2 50) KC_P99=$(pct "$WORK/ks.txt" 2 99) KC_MAX=$(pct "$WORK/ks.txt" 2 100)
F2_OK=$(verdict "$KS_P99 < 100 && $KC_P99 < 100 && $KS_LEFT == 0")
printf '   all_clear_ms (service): p50 %s  p99 %s  max %s ms\n' "$KS_P50" "$KS_P99" "$KS_MAX"
printf '   POST /chaos/stop (curl): p50 %s  p99 %s  max %s ms   (target p99 < 100)  %s\n' "$KC_P50" "$KC_P99" "$KC_MAX" \
    "$F2_OK"
echo "   reps with something left after the stop: $KS_LEFT"

# --- 3. torture --------------------------------------------------------------------------------
echo; echo "3. torture: $TRIALS trials (SEED=$SEED)"
MODES=(cancel kill-switch timeout sigterm kill9 throwing-rollback looping-rollback)
declare -A N_TRIALS N_LEFT N_ODD
for m in "${MODES[@]}"; do N_TRIALS[$m]=0 N_LEFT[$m]=0 N_ODD[$m]=0; done
LOADGEN_CALL='loadgen_start(#{profile: "sustained", scale: 0.01, time_scale: 1});'

# make_trial MODE: set SCRIPT, TIMEOUT (empty: none) and AFTER_MS (when an outside interruption
# comes, after the run was accepted: half in the first 150 ms, among the applies).
make_trial() {
    local rollback pre='' ending
    case $1 in
        throwing-rollback) rollback='on_rollback(|| { throw "this rollback fails on purpose"; });' ;;
        looping-rollback) rollback='on_rollback(|| { loop { sleep(0.2); } });' ;;
        *) rollback='on_rollback(|| { log("rollback ran"); network_clear(); });' ;;
    esac
    local pre_ms=$((600 + RANDOM % 600)) end_ms=$((RANDOM % 1000))
    TIMEOUT=''
    if [[ $1 == timeout ]]; then
        TIMEOUT=1
        pre="sleep($(secs "$pre_ms"));"
    fi
    # The request hang is last: it stalls the script itself.
    case $1 in
        throwing-rollback | looping-rollback) ending="sleep($(secs "$end_ms")); hang(1, \"request\");" ;;
        *) ending='hang(0, "request");' ;;
    esac
    printf -v SCRIPT '%s\n%s\nnetwork_block();\nnetwork_latency(300);\nload("low", 600);\n%s\n%s\n' \
        "$rollback" "$pre" "$LOADGEN_CALL" "$ending"
    if ((RANDOM % 2)); then AFTER_MS=$((RANDOM % 150)); else AFTER_MS=$((150 + RANDOM % 1350)); fi
}

# trial N MODE: one trial; counts it and prints a line when something is wrong.
trial() {
    local n=$1 mode=$2 id st expect left='' odd='' reqbody
    make_trial "$mode"
    if [[ -n $TIMEOUT ]]; then
        reqbody=$(jq -n --arg s "$SCRIPT" --argjson t "$TIMEOUT" '{script: $s, timeout_seconds: $t}')
    else
        reqbody=$(jq -n --arg s "$SCRIPT" '{script: $s}')
    fi
    req POST /chaos/run "$reqbody"
    [[ $CODE == 202 ]] || die "trial $n: POST /chaos/run answered $CODE: $(body)"
    id=$(jq -r .run_id "$WORK/body")
    case $mode in cancel | kill-switch | sigterm | kill9) sleep "$(secs "$AFTER_MS")" ;; esac
    case $mode in
        cancel)
            req POST "/chaos/runs/$id/cancel"
            [[ $CODE == 200 ]] || odd+="cancel answered $CODE; "
            st=$(wait_ended "$id" 30) expect=cancelled
            ;;
        kill-switch)
            req POST /chaos/stop
            [[ $CODE == 200 ]] || odd+="the kill switch answered $CODE; "
            jq -e '(.undo_failed // []) | length == 0' "$WORK/body" >/dev/null || odd+="failed undos: $(body); "
            st=$(wait_ended "$id" 30) expect=cancelled
            left+=$(settle) # while halted
            req POST /chaos/resume
            [[ $CODE == 200 ]] || odd+="resume answered $CODE; "
            ;;
        timeout) st=$(wait_ended "$id" 30) expect=timed_out ;;
        throwing-rollback | looping-rollback) st=$(wait_ended "$id" 30) expect=failed ;;
        sigterm)
            kill -TERM "$SVC_PID"
            if ! wait_exit "$SVC_PID" 20; then
                odd+="still running 20 s after SIGTERM; "
                kill -KILL "$SVC_PID"
                { wait_exit "$SVC_PID" 5; } 2>/dev/null || die "kill -9 did not end $SVC_PID"
            elif ((RC != 0)); then
                odd+="exit status $RC after SIGTERM; "
            fi
            no_loadgen_within 5 || left+="a loadgen child survived SIGTERM of the service"$'\n'
            svc_up
            st=$(wait_ended "$id" 10) expect=cancelled
            if [[ $st == interrupted ]]; then expect=interrupted; fi # it could not end before the exit
            ;;
        kill9)
            kill -KILL "$SVC_PID"
            # (braces: bash's "Killed" notice of the job goes to /dev/null too)
            { wait_exit "$SVC_PID" 5; } 2>/dev/null || die "kill -9 did not end $SVC_PID"
            no_loadgen_within 5 || left+="a loadgen child survived kill -9 of the service"$'\n'
            svc_up
            st=$(wait_ended "$id" 10) expect=interrupted
            if [[ $st != never ]] && ! jq -e 'all((.recovered // [])[]; .ok == true)' \
                "$WORK/report" >/dev/null; then
                odd+="recovered: $(jq -c .recovered "$WORK/report"); "
            fi
            ;;
    esac
    [[ $st == "$expect" ]] || odd+="run ended $st, expected $expect; "
    if [[ $st != never ]]; then
        if [[ $mode == *rollback ]] &&
            ! jq -e '[.undo[] | select(.action | startswith("on_rollback"))][0].ok == false' "$WORK/report" >/dev/null; then
            odd+="the rollback was not reported failed; "
        fi
        jq -e 'all(.undo[] | select(.fault_id != null); .ok == true)' "$WORK/report" >/dev/null ||
            odd+="fault undos failed: $(jq -c '[.undo[] | select(.ok != true)]' "$WORK/report"); "
    fi
    left+=$(settle)
    req GET /chaos/status
    if ! jq -e '.halted == false' "$WORK/body" >/dev/null 2>&1; then
        odd+="halted after the trial; "
        req POST /chaos/resume
    fi
    N_TRIALS[$mode]=$((${N_TRIALS[$mode]} + 1))
    if [[ -n $left ]]; then
        N_LEFT[$mode]=$((${N_LEFT[$mode]} + 1))
        echo "   trial $n ($mode, +${AFTER_MS} ms): LEFT BEHIND: ${left//$'\n'/; }"
    fi
    if [[ -n $odd ]]; then
        N_ODD[$mode]=$((${N_ODD[$mode]} + 1))
        echo "   trial $n ($mode, +${AFTER_MS} ms): unexpected: $odd"
    fi
}

T0=$SECONDS
for ((i = 0; i < TRIALS; i++)); do
    trial "$i" "${MODES[i % ${#MODES[@]}]}"
    if (((i + 1) % 10 == 0)); then echo "   ... $((i + 1)) trials, $((SECONDS - T0)) s"; fi
done
T_LEFT=0 T_ODD=0
printf '   %-20s %6s %10s %10s\n' mode trials leftovers unexpected
for m in "${MODES[@]}"; do
    printf '   %-20s %6d %10d %10d\n' "$m" "${N_TRIALS[$m]}" "${N_LEFT[$m]}" "${N_ODD[$m]}"
    T_LEFT=$((T_LEFT + ${N_LEFT[$m]})) T_ODD=$((T_ODD + ${N_ODD[$m]}))
done
F3_OK=$(verdict "$T_LEFT == 0 && $T_ODD == 0")
echo "   trials with leftovers: $T_LEFT, with unexpected outcomes: $T_ODD   (target 0)  $F3_OK"
[[ -s $WORK/service.log ]] && { echo; echo "service stderr (LOG_LEVEL=warn, last 20 lines):"; tail -n 20 "$WORK/service.log"; }

# --- summary -----------------------------------------------------------------------------------
cat <<EOF

===== chaos-lab safety kernel benchmark summary =====
date:              $(date -u '+%Y-%m-%d %H:%M:%S UTC')
machine:           nproc $(nproc), $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)
binary:            $BIN
log flood:         RSS +$GROWTH MiB (< 150), journal $JOURNAL_MB MiB (< 20), truncated $TRUNCATED  $F1_OK
kill switch:       10 local faults, $KS_REPS reps: all_clear_ms p50 $KS_P50 / p99 $KS_P99; curl p50 $KC_P50 / p99 $KC_P99 ms (p99 < 100); $KS_LEFT reps left something  $F2_OK
torture:           $TRIALS trials (SEED=$SEED), $T_LEFT with leftovers, $T_ODD unexpected, in $((SECONDS - T0)) s  $F3_OK
azure backend:     not run here (no ARM); tests/torture.rs runs it against the fake ARM
EOF
