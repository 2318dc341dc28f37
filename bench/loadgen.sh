#!/usr/bin/env bash
# bench/loadgen.sh - loadgen against Locust and wrk on one fixed, fast loopback target.
#
#   bash bench/loadgen.sh                    # 15 s per generator, 32 users/connections, 2 rounds
#   DURATION=10 USERS=32 ROUNDS=3 RATES="5000 20000" bash bench/loadgen.sh
#
# Target: nginx (one worker) answering every path with a 20-byte JSON body, so the lab's task
# mix (/health, /, /chaos/status) costs the target the same for every generator. Generators, one
# at a time, same users/connections and duration, no think time:
#   wrk -t2 (physical reference), loadgen (goose, closed model), Locust HttpUser (LabUser, the
#   original lab's class) and Locust FastHttpUser (FastLabUser), one process each;
#   then loadgen --rate R for each R in RATES (open model): the rate nginx served (its own
#   request counter, stub_status, read before and after) against the target.
# Figures: requests/s, generator CPU-seconds (user+sys from /usr/bin/time), requests per
# generator CPU-second, and the ratios the load-generator issue sets:
#   loadgen >= 15x Locust HttpUser and >= 4x Locust FastHttpUser per CPU-second,
#   loadgen >= 0.4x wrk requests/s, --rate delivered within +-2 % of the target.
# Needs nginx and wrk (apt-get installed when missing), Python 3 (Locust goes into target/py),
# and builds loadgen in release mode (or set LOADGEN_BIN). Everything on 127.0.0.1.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/bench/lib.sh"

DURATION=${DURATION:-15}
USERS=${USERS:-32}
ROUNDS=${ROUNDS:-2}
RATES=${RATES:-5000 20000}

need_tools nginx wrk
[[ -x /usr/bin/time ]] || need_tools time
find_loadgen "$ROOT"
PY=$ROOT/target/py
if [[ ! -x $PY/bin/locust ]]; then
    python3 -m venv "$PY"
    "$PY/bin/pip" install --quiet -r "$ROOT/loadtests/locust/requirements.txt"
fi

WORK=$(mktemp -d /tmp/bench-loadgen.XXXXXX)
NGINX_PID=''
trap 'cleanup "$WORK" NGINX_PID' EXIT
PORT=$(free_port)
URL=http://127.0.0.1:$PORT
mkdir -p "$WORK/profiles" "$WORK/logs"
cat >"$WORK/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 10000000;
    client_body_temp_path $WORK/logs;
    server {
        listen 127.0.0.1:$PORT;
        location / { default_type application/json; return 200 '{"status":"healthy"}'; }
        location = /nginx_status { stub_status; }
    }
}
CONF
nginx -c "$WORK/nginx.conf" -p "$WORK" &
NGINX_PID=$!
for _ in {1..50}; do curl -fs "$URL/health" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "$URL/health" >/dev/null || die "nginx did not start (see $WORK/logs/error.log)"

cat >"$WORK/profiles/bench.toml" <<TOML
description = "bench: $USERS users, no think time, $DURATION s"
wait_seconds = [0.0, 0.0]
[[stages]]
duration_seconds = $DURATION
users = $USERS
spawn_rate = 10000
TOML

# measure NAME CMD...: run CMD under /usr/bin/time; leaves CPU seconds in $WORK/NAME.cpu.
measure() {
    local name=$1; shift
    /usr/bin/time -f '%U %S %e' -o "$WORK/$name.time" "$@" >"$WORK/$name.out" 2>&1 || true
    awk '{ printf "%.2f %.2f\n", $1 + $2, $3 }' "$WORK/$name.time" >"$WORK/$name.cpu"
}

results=$WORK/results.tsv   # round generator requests seconds cpu_seconds
for round in $(seq 1 "$ROUNDS"); do
    measure wrk wrk -t2 -c"$USERS" -d"${DURATION}s" "$URL/"
    awk -v r="$round" -v d="$DURATION" 'NR == FNR { cpu = $1; next }
        /^Requests\/sec:/ { printf "%s\twrk\t%d\t%s\t%s\n", r, $2 * d, d, cpu }' "$WORK/wrk.cpu" "$WORK/wrk.out" >>"$results"

    measure loadgen "$LOADGEN_BIN" --profiles-dir "$WORK/profiles" --profile bench --host "$URL" \
        --json "$WORK/lg.json" --report-file "$WORK/lg.html" --no-default-thresholds --quiet
    python3 - "$WORK/lg.json" "$WORK/loadgen.cpu" "$round" >>"$results" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); cpu = open(sys.argv[2]).read().split()[0]
print(f"{sys.argv[3]}\tloadgen\t{r['totals']['requests']}\t{r['duration_s']:.2f}\t{cpu}")
PY

    for cls in LabUser FastLabUser; do
        rm -f "$WORK/loc_stats.csv"
        LOADGEN_PROFILES_DIR=$WORK/profiles measure "$cls" "$PY/bin/locust" -f "$ROOT/loadtests/locust/locustfile.py" \
            --headless --host "$URL" --profile bench --csv "$WORK/loc" --only-summary --loglevel WARNING "$cls"
        python3 - "$WORK/loc_stats.csv" "$WORK/$cls.cpu" "$round" "$cls" >>"$results" <<'PY'
import csv, sys
rows = {r["Name"]: r for r in csv.DictReader(open(sys.argv[1]))}
agg = rows["Aggregated"]; cpu, wall = open(sys.argv[2]).read().split()
n = int(agg["Request Count"]); rps = float(agg["Requests/s"])
print(f"{sys.argv[3]}\tlocust-{sys.argv[4]}\t{n}\t{n / rps if rps else float(wall):.2f}\t{cpu}")
PY
    done

    for rate in $RATES; do
        # nginx's own count of served requests (stub_status, third number of line 3) before/after.
        before=$(curl -fs "$URL/nginx_status" | awk 'NR == 3 { print $3 }')
        measure rate "$LOADGEN_BIN" --profiles-dir "$WORK/profiles" --profile bench --host "$URL" --rate "$rate" \
            --json "$WORK/rate.json" --report-file "$WORK/rate.html" --no-default-thresholds --quiet
        after=$(curl -fs "$URL/nginx_status" | awk 'NR == 3 { print $3 }')
        python3 - "$WORK/rate.json" "$WORK/rate.cpu" "$round" "$((after - before - 1))" "$DURATION" >>"$results" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); o = r["open_model"]; cpu = open(sys.argv[2]).read().split()[0]
served = int(sys.argv[4]) / float(sys.argv[5])
print(f"{sys.argv[3]}\trate\t{o['sent']}\t{sys.argv[5]}\t{cpu}\t{o['target_rps']}\t{served:.1f}\t{r['totals']['p99_ms']}\t{o['late']}\t{o['dropped']}\t{o['delivered_rps']}")
PY
    done
done

python3 - "$results" "$DURATION" "$USERS" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r[1], []).append(r)
print(f"\nbench/loadgen.sh: {sys.argv[3]} users/connections, {sys.argv[2]} s each, {len(by['wrk'])} round(s), nginx target on 127.0.0.1")
print(f"{'generator':<22}{'req/s':>10}{'CPU s':>8}{'req per CPU-s':>15}   per round (req/s)")
med = {}
for name in ["wrk", "loadgen", "locust-LabUser", "locust-FastLabUser"]:
    rps = [int(r[2]) / float(r[3]) for r in by[name]]
    eff = [int(r[2]) / max(float(r[4]), 0.01) for r in by[name]]
    cpu = [float(r[4]) for r in by[name]]
    med[name] = (statistics.median(rps), statistics.median(eff))
    print(f"{name:<22}{med[name][0]:>10.0f}{statistics.median(cpu):>8.2f}{med[name][1]:>15.0f}   {', '.join(f'{x:.0f}' for x in rps)}")
def check(label, value, target):
    print(f"{label:<52}{value:>7.2f}x  (target >= {target}x)  {'PASS' if value >= target else 'FAIL'}")
print()
check("loadgen / Locust HttpUser, requests per CPU-second", med["loadgen"][1] / med["locust-LabUser"][1], 15)
check("loadgen / Locust FastHttpUser, requests per CPU-second", med["loadgen"][1] / med["locust-FastLabUser"][1], 4)
check("loadgen / wrk, requests per second", med["loadgen"][0] / med["wrk"][0], 0.4)
for r in by["rate"]:
    target, served = float(r[5]), float(r[6])
    err = (served - target) / target * 100
    print(f"--rate {target:.0f}: nginx served {served:.1f} req/s ({err:+.2f} %, target within +-2 %) "
          f"{'PASS' if abs(err) <= 2 else 'FAIL'}; loadgen sent {r[10]} req/s; p99 {r[7]} ms from the intended start; "
          f"late {r[8]}, dropped {r[9]}; CPU {r[4]} s")
PY
