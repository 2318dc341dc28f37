#!/usr/bin/env bash
# bench/telemetry.sh - what exporting telemetry costs (a measurement, not a test).
#
# GET / requests/s with OpenTelemetry export to a loopback OTLP/HTTP collector enabled
# (OTEL_EXPORTER_OTLP_ENDPOINT set, every request traced: the default always-on sampler) vs
# disabled, in the same run, alternating A/B/A/B so drift hits both. Target: enabled >= 0.9x.
# The collector is a small python3 HTTP server that accepts and counts every export.
#
# Run:   bash bench/telemetry.sh
# Env:   DURATION=10 CONNS=32 THREADS=2, CHAOS_LAB_BIN=path (else cargo build --release)
# Only 127.0.0.1 is used; everything started is stopped on exit.
set -euo pipefail

DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d)
REDIS_PID='' SVC_PID='' COLLECTOR_PID=''
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap 'cleanup "$WORK" SVC_PID COLLECTOR_PID REDIS_PID' EXIT

need_tools wrk redis-server redis-cli curl python3
find_bin "$ROOT"
start_redis

COLLECTOR_PORT=$(free_port)
cat >"$WORK/collector.py" <<'PY'
import http.server, sys, threading
counts, lock = {}, threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get('Content-Length', 0)))
        with lock: counts[self.path] = counts.get(self.path, 0) + 1
        self.send_response(200); self.send_header('Content-Type', 'application/json'); self.end_headers(); self.wfile.write(b'{}')
    def do_GET(self):
        with lock: body = ' '.join(f'{k}={v}' for k, v in sorted(counts.items())).encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
PY
python3 "$WORK/collector.py" "$COLLECTOR_PORT" & COLLECTOR_PID=$!
sleep 0.5

run() { # run on|off -> req/s of GET /
    if [[ $1 == on ]]; then
        start_service OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$COLLECTOR_PORT" OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf \
            RUNS_DIR="$WORK/runs"
    else
        start_service RUNS_DIR="$WORK/runs"
    fi
    wrk -t2 -c8 -d2s "$URL/" >/dev/null   # warm-up
    wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "$URL/" >"$WORK/wrk-$1.txt"
    stop_pid "$SVC_PID"; SVC_PID=''
    wrk_field "$WORK/wrk-$1.txt" rps
}

declare -a off on
for round in 1 2; do
    off+=("$(run off)"); on+=("$(run on)")
    echo "round $round: export off ${off[-1]} req/s, export on ${on[-1]} req/s"
done
off_avg=$(printf '%s\n' "${off[@]}" | awk '{s += $1} END {printf "%.0f", s / NR}')
on_avg=$(printf '%s\n' "${on[@]}" | awk '{s += $1} END {printf "%.0f", s / NR}')
ratio=$(awk -v a="$on_avg" -v b="$off_avg" 'BEGIN {printf "%.2f", a / b}')
received=$(curl -fsS "http://127.0.0.1:$COLLECTOR_PORT/")

echo
echo "===== chaos-lab telemetry export benchmark summary ====="
echo "date:            $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "machine:         nproc $(nproc), $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
echo "wrk:             -t$THREADS -c$CONNS -d${DURATION}s GET /, 2 rounds each"
echo "export off:      $off_avg req/s (${off[*]})"
echo "export on:       $on_avg req/s (${on[*]}), OTLP/HTTP protobuf to a loopback collector, every request traced"
echo "ratio:           ${ratio}x (>= 0.9) $(verdict "$ratio >= 0.9")"
echo "collector got:   $received"
