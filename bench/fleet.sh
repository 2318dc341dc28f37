#!/usr/bin/env bash
# bench/fleet.sh - figures for the fleet (issue 11): three replicas of the release build sharing
# one chaos store on the Azurite emulator (a measurement, not a test).
#   1. a fault applied on r1 for r3 (POST /chaos/load {"replicas": ["r3"]} on r1) → active on r3:
#      REPS times, p50/p99                                              (goal p99 <= 1.5 s)
#   2. the kill switch on r1 → r3 halted with its load undone: p50/p99 of the same REPS
#   3. storage calls per replica per second at idle, over IDLE_S seconds  (goal <= 2)
# Run:   bash bench/fleet.sh          Env: REPS=20, IDLE_S=30, CHAOS_LAB_BIN (instead of
#        `cargo build --release`). Needs: redis-server, curl, jq, openssl, Azurite (`bash
#        tests/run.sh` installs it into target/node). Only 127.0.0.1 is used; everything this
#        script starts is stopped on exit.
set -euo pipefail

REPS=${REPS:-20} IDLE_S=${IDLE_S:-30}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d)
REDIS_PID='' AZ_PID='' R1='' R2='' R3=''
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap 'cleanup "$WORK" R1 R2 R3 AZ_PID REDIS_PID' EXIT

need_tools redis-server redis-cli curl jq openssl
AZURITE=$ROOT/target/node/node_modules/.bin/azurite-blob
[[ -x $AZURITE ]] || die "Azurite is missing: run bash tests/run.sh (it installs it into target/node)"
find_bin "$ROOT"
start_redis

# Azurite, in memory, and an account SAS signed with the emulator's well-known key.
AZ_PORT=$(free_port)
(cd "$WORK" && exec "$AZURITE" --blobHost 127.0.0.1 --blobPort "$AZ_PORT" --inMemoryPersistence --loose \
    --skipApiVersionCheck --disableTelemetry >"$WORK/azurite.log" 2>&1) &
AZ_PID=$!
for _ in {1..100}; do (exec 3<>"/dev/tcp/127.0.0.1/$AZ_PORT") 2>/dev/null && break; sleep 0.1; done
KEY=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==
SE=$(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%SZ)
SIG=$(printf 'devstoreaccount1\nracwdlup\nb\nsco\n\n%s\n\nhttps,http\n2019-12-12\n' "$SE" |
    openssl dgst -sha256 -mac HMAC -macopt "hexkey:$(echo "$KEY" | base64 -d | od -An -tx1 | tr -d " \n")" -binary | base64 -w0)
SAS="sv=2019-12-12&ss=b&srt=sco&sp=racwdlup&se=${SE//:/%3A}&spr=https,http&sig=$(jq -rn --arg s "$SIG" '$s|@uri')"
STORE="http://127.0.0.1:$AZ_PORT/devstoreaccount1/bench?$SAS"

# replica NAME VAR: start a replica; sets VAR (its pid) and URL_<NAME>.
replica() {
    start_service REPLICA_NAME="$1" CHAOS_STORE_URL="$STORE" RUNS_DIR="$WORK/runs-$1" SCENARIOS_DIR="$WORK/sc" \
        NETWORK_FAULT_BACKEND=local HEALTH_CACHE_TTL_SECONDS=0
    printf -v "$2" '%s' "$SVC_PID"
    printf -v "URL_$1" '%s' "$URL"
}
mkdir -p "$WORK/sc"
replica r1 R1; replica r2 R2; replica r3 R3
for _ in {1..100}; do
    [[ $(curl -fsS "$URL_r1/chaos/status" | jq '.fleet.replicas | length') == 3 ]] && break; sleep 0.1
done
echo "3 replicas on $URL_r1 $URL_r2 $URL_r3; store on Azurite 127.0.0.1:$AZ_PORT; binary $BIN"

now_ms() { date +%s%3N; }
# wait_for URL JQ: poll every 20 ms until the status matches; print the ms it took.
wait_for() {
    local start; start=$(now_ms)
    for _ in {1..1500}; do
        [[ $(curl -fsS --max-time 2 "$1/chaos/status" | jq -r "$2") == true ]] && { echo $(($(now_ms) - start)); return; }
        sleep 0.02
    done
    die "timed out waiting for $2 on $1"
}
pct() { sort -n | awk -v p="$1" '{a[NR] = $1} END {i = int((NR - 1) * p / 100) + 1; print a[i]}'; }

echo; echo "1.-2. apply on r1 → effect on r3, and the kill switch on r1 → r3 clear, $REPS times"
: >"$WORK/apply" ; : >"$WORK/stop"
for _ in $(seq "$REPS"); do
    curl -fsS -X POST "$URL_r1/chaos/load" -d '{"level": "low", "duration_seconds": 60, "replicas": ["r3"]}' >/dev/null
    wait_for "$URL_r3" '.load.active' >>"$WORK/apply"
    curl -fsS -X POST "$URL_r1/chaos/stop" >/dev/null
    wait_for "$URL_r3" '.halted and (.load.active | not) and (.faults | length == 0)' >>"$WORK/stop"
    curl -fsS -X POST "$URL_r1/chaos/resume" >/dev/null
    wait_for "$URL_r3" '.halted | not' >/dev/null
done
A50=$(pct 50 <"$WORK/apply") A99=$(pct 99 <"$WORK/apply") S50=$(pct 50 <"$WORK/stop") S99=$(pct 99 <"$WORK/stop")
echo "   apply r1 → r3:        p50 $A50 ms  p99 $A99 ms"
echo "   kill switch r1 → r3:  p50 $S50 ms  p99 $S99 ms"

echo; echo "3. storage calls at idle, over $IDLE_S s"
calls() { curl -fsS "$1/chaos/status" | jq '.fleet.store_calls'; }
B1=$(calls "$URL_r1") B2=$(calls "$URL_r2") B3=$(calls "$URL_r3")
sleep "$IDLE_S"
E1=$(calls "$URL_r1") E2=$(calls "$URL_r2") E3=$(calls "$URL_r3")
RATE=$(awk -v a="$((E1 - B1))" -v b="$((E2 - B2))" -v c="$((E3 - B3))" -v s="$IDLE_S" 'BEGIN {printf "%.2f", (a + b + c) / 3 / s}')
echo "   per replica: r1 $((E1 - B1)), r2 $((E2 - B2)), r3 $((E3 - B3)) calls → $RATE calls/s"

echo
echo "===== chaos-lab fleet benchmark summary ====="
echo "date:              $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "machine:           nproc $(nproc), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "apply r1 → r3:     p50 $A50 ms / p99 $A99 ms over $REPS (p99 <= 1500)  $(verdict "$A99 <= 1500")"
echo "kill switch:       r1 → r3 halted and clear: p50 $S50 ms / p99 $S99 ms"
echo "idle storage:      $RATE calls per replica per second (<= 2)  $(verdict "$RATE <= 2")"
