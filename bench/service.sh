#!/usr/bin/env bash
# bench/service.sh - performance figures for the chaos-lab service (a measurement, not a test).
#
# What it measures, against a release build talking to a private, throw-away redis-server:
#   1. idle RSS of the service after a short warm-up        (target <= 20 MiB)
#   2. wrk throughput and p99 latency, fixed concurrency, of
#        GET /healthz (the reference, no Redis), GET /health (cached Redis PING),
#        GET / (Redis GET), GET /chaos/status               (targets: /health >= 0.8x /healthz,
#                                                                      /       >= 0.4x /healthz)
#   3. under POST /chaos/load {"level":"high"}: the service's CPU use (utime+stime from
#      /proc/PID/stat over wall time) as a share of the CPUs it may use (target 90 +/- 5 points),
#      the p99 of a light, paced wrk on /health at the same time (target < 50 ms), and RSS during load.
# Each figure is printed with PASS/FAIL against its target; the script still exits 0 when a
# target is missed, and non-zero only when something failed to run.
#
# Run:   bash bench/service.sh
# Env:   DURATION=10        seconds per wrk run and length of the CPU window
#        CONNS=32 THREADS=2 wrk connections / threads for the throughput table
#        CHAOS_LAB_BIN=path use this binary instead of `cargo build --release --bin chaos-lab`
# Needs: wrk, redis-server (+ redis-cli), curl; installed with apt-get when missing.
# Only 127.0.0.1 is used; redis and the service are stopped on exit.
set -euo pipefail

DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d)
REDIS_PID='' SVC_PID='' LOAD_WRK_PID=''
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap 'cleanup "$WORK" LOAD_WRK_PID SVC_PID REDIS_PID' EXIT

# --- tools -------------------------------------------------------------------------------------
need_tools wrk redis-server redis-cli curl

# --- binary ------------------------------------------------------------------------------------
find_bin "$ROOT"

# --- helpers -----------------------------------------------------------------------------------
rss_mib() { awk '/^VmRSS:/ {printf "%.1f", $2/1024}' "/proc/$SVC_PID/status"; }
cpu_ticks() { sed 's/.*) //' "/proc/$SVC_PID/stat" | awk '{print $12 + $13}'; } # utime+stime
avail_cpus() { # CPU quota of this cgroup (v2, else v1), capped by the CPUs we may run on
    local n q p; n=$(nproc)
    if [[ -r /sys/fs/cgroup/cpu.max ]]; then read -r q p </sys/fs/cgroup/cpu.max
    elif [[ -r /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]]; then
        q=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us); p=$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)
        ((q > 0)) || q=max
    else q=max; fi
    if [[ $q == max ]]; then echo "$n"; else awk -v q="$q" -v p="$p" -v n="$n" 'BEGIN { c = q / p; print (c < n ? c : n) }'; fi
}

# --- start redis and the service ---------------------------------------------------------------
start_redis
start_service
echo "service pid $SVC_PID on $URL, redis on 127.0.0.1:$REDIS_PORT, binary $BIN"

# --- 1. idle RSS after warm-up -----------------------------------------------------------------
for path in /healthz /health / /chaos/status; do
    codes=$(for i in {1..20}; do curl -s -o /dev/null -w '%{http_code}\n' "$URL$path" || true; done | sort | uniq -c | xargs)
    echo "warm-up GET $path: $codes (count code)"
done
sleep 1
IDLE_RSS=$(rss_mib)
IDLE_OK=$(verdict "$IDLE_RSS <= 20")
printf '\nidle RSS: %s MiB   (target <= 20)  %s\n\n' "$IDLE_RSS" "$IDLE_OK"

# --- 2. throughput table -----------------------------------------------------------------------
declare -A RPS P99 ERR
printf 'wrk -t%s -c%s -d%ss --latency\n' "$THREADS" "$CONNS" "$DURATION"
printf '%-14s %12s %10s %8s %7s  %s\n' endpoint 'req/s' 'p99 ms' ratio errors target
for path in /healthz /health / /chaos/status; do
    f=$WORK/wrk${path//\//_}.txt
    wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "$URL$path" >"$f" || die "wrk failed on $path"
    RPS[$path]=$(wrk_field "$f" rps); P99[$path]=$(wrk_field "$f" p99); ERR[$path]=$(wrk_field "$f" errors)
    [[ -n ${RPS[$path]} ]] || die "cannot parse wrk output for $path: $(cat "$f")"
    ratio=$(awk -v a="${RPS[$path]}" -v b="${RPS[/healthz]}" 'BEGIN { printf "%.2f", a / b }')
    case $path in
        /health) target="ratio >= 0.8  $(verdict "$ratio >= 0.8")"; HEALTH_RATIO=$ratio ;;
        /) target="ratio >= 0.4  $(verdict "$ratio >= 0.4")"; ROOT_RATIO=$ratio ;;
        /healthz) target=reference ;;
        *) target=- ;;
    esac
    printf '%-14s %12.0f %10.2f %8s %7s  %s\n' "$path" "${RPS[$path]}" "${P99[$path]}" "$ratio" "${ERR[$path]}" "$target"
done

# --- 3. CPU load -------------------------------------------------------------------------------
AVAIL=$(avail_cpus)
TCK=$(getconf CLK_TCK)
echo
echo "POST /chaos/load high for $((DURATION + 6)) s: $(curl -fsS -X POST -H 'Content-Type: application/json' \
    -d "{\"level\":\"high\",\"duration_seconds\":$((DURATION + 6))}" "$URL/chaos/load")"
sleep 3 # let the 1000 MiB allocation finish
f=$WORK/wrk_load_health.txt
# Paced (10 ms pause per connection, ~400 req/s): an unpaced wrk would itself take most of a CPU
# away from the load threads on a small machine and the CPU figure would measure wrk, not the service.
echo 'function delay() return 10 end' >"$WORK/pace.lua"
wrk -t1 -c4 -d"${DURATION}s" --latency -s "$WORK/pace.lua" "$URL/health" >"$f" &
LOAD_WRK_PID=$!
t0=$(date +%s.%N); c0=$(cpu_ticks); LOAD_RSS=0
for ((i = 0; i < DURATION; i++)); do
    sleep 1
    LOAD_RSS=$(awk -v a="$LOAD_RSS" -v b="$(rss_mib)" 'BEGIN { print (b > a ? b : a) }')
done
c1=$(cpu_ticks); t1=$(date +%s.%N)
wait "$LOAD_WRK_PID" || die "wrk under load failed"; LOAD_WRK_PID=''
CPU_PCT=$(awk -v c="$((c1 - c0))" -v k="$TCK" -v w="$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" \
    -v n="$AVAIL" 'BEGIN { printf "%.1f", c / k / w / n * 100 }')
LOAD_P99=$(wrk_field "$f" p99); LOAD_RPS=$(wrk_field "$f" rps); LOAD_ERR=$(wrk_field "$f" errors)
CPU_OK=$(verdict "($CPU_PCT - 90) <= 5 && (90 - $CPU_PCT) <= 5")
P99_OK=$(verdict "$LOAD_P99 < 50")
printf 'process CPU:         %s %% of %s available CPUs   (target 90 +/- 5)  %s\n' "$CPU_PCT" "$AVAIL" "$CPU_OK"
printf '/health p99 (load):  %s ms  (%.0f req/s, %s errors, wrk -t1 -c4 paced)   (target < 50)  %s\n' \
    "$LOAD_P99" "$LOAD_RPS" "$LOAD_ERR" "$P99_OK"
printf 'RSS during load:     %s MiB (max of 1 s samples; load holds 1000 MiB)\n' "$LOAD_RSS"
[[ -s $WORK/service.log ]] && { echo "service stderr (LOG_LEVEL=warn):"; tail -n 20 "$WORK/service.log"; }

# --- summary -----------------------------------------------------------------------------------
cat <<EOF

===== chaos-lab service benchmark summary =====
date:            $(date -u '+%Y-%m-%d %H:%M:%S UTC')
machine:         nproc $(nproc), available CPUs $AVAIL, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r)
binary:          $BIN
wrk:             -t$THREADS -c$CONNS -d${DURATION}s
idle RSS:        $IDLE_RSS MiB (<= 20) $IDLE_OK
/healthz:        ${RPS[/healthz]} req/s, p99 ${P99[/healthz]} ms, errors ${ERR[/healthz]} (reference)
/health:         ${RPS[/health]} req/s, p99 ${P99[/health]} ms, errors ${ERR[/health]}, ${HEALTH_RATIO}x (>= 0.8) $(verdict "$HEALTH_RATIO >= 0.8")
/:               ${RPS[/]} req/s, p99 ${P99[/]} ms, errors ${ERR[/]}, ${ROOT_RATIO}x (>= 0.4) $(verdict "$ROOT_RATIO >= 0.4")
/chaos/status:   ${RPS[/chaos/status]} req/s, p99 ${P99[/chaos/status]} ms, errors ${ERR[/chaos/status]}
load CPU:        $CPU_PCT % of available (90 +/- 5) $CPU_OK
load /health:    p99 $LOAD_P99 ms (< 50) $P99_OK
load RSS:        $LOAD_RSS MiB
EOF
