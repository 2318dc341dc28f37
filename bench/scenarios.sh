#!/usr/bin/env bash
# bench/scenarios.sh - timing figures for the scenario engine (a measurement, not a test).
#
# Against a release build talking to a private, throw-away redis-server (one run at a time):
#   1. POST /chaos/run -> first step started, `sleep(0);` N times each way: client-side
#      (steps[0].started_at - POST sent) and the report's steps[0].offset_s   (target p99 < 10 ms)
#   2. network_block(); redis_reset(): the first GET / issued after the reset step fails, and none
#      issued after it succeeds                                               (target < 50 ms)
#   3. network_clear(): clear step end -> first GET / answered 200            (target < 1 s)
#   4. GET /health p99 under wrk while runaway scripts (`loop {}`) are stopped (target < 50 ms)
# GET / is probed back to back; while a probe is stuck (a black-holed connect takes
# REDIS_SOCKET_CONNECT_TIMEOUT) another starts every PACE_MS, at most 32 in flight, so a change is
# seen within ~PACE_MS rather than one connect timeout later. Each figure is printed with
# PASS/FAIL; the script exits non-zero only when something failed to run.
# Run:   bash bench/scenarios.sh     Env: N=200 (figure 1), DURATION=5 (s, figure 4), PACE_MS=10,
#        CHAOS_LAB_BIN=path (instead of `cargo build --release --bin chaos-lab`)
# Needs: wrk, redis-server (+ redis-cli), curl, python3 (stdlib only); apt-get when missing. Only
# 127.0.0.1 is used; redis and the service are stopped on exit.
set -euo pipefail

N=${N:-200} DURATION=${DURATION:-5} PACE_MS=${PACE_MS:-10}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d)
REDIS_PID='' SVC_PID='' WRK_PID=''
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap 'cleanup "$WORK" WRK_PID SVC_PID REDIS_PID' EXIT

# --- tools -------------------------------------------------------------------------------------
need_tools wrk redis-server redis-cli curl python3

# --- binary ------------------------------------------------------------------------------------
find_bin "$ROOT"

# --- helpers -----------------------------------------------------------------------------------
# The measuring client: python3, stdlib only. Results go to $WORK/results as NAME=value lines.
cat >"$WORK/probe.py" <<'PY'
import http.client, json, os, sys, threading, time
from datetime import datetime
PORT, MODE, ARG, PACE = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), float(os.environ['PACE_MS']) / 1000
ts = lambda s: datetime.fromisoformat(s.replace('Z', '+00:00')).timestamp()  # RFC 3339 UTC -> epoch s
ms = lambda x: f'{x * 1000:.1f}'
def pct(v, p): v = sorted(v); return v[min(len(v) - 1, max(0, -(-len(v) * p // 100) - 1))]  # nearest rank
def out(**kw): open(os.environ['RESULTS'], 'a').write(''.join(f'{k}={v}\n' for k, v in kw.items()))
def fail(msg): sys.exit(f'error: {msg}')
c = http.client.HTTPConnection('127.0.0.1', PORT, timeout=30)  # keep-alive
def req(method, path, body=None, ctype='application/json'):
    try: c.request(method, path, body, {'Content-Type': ctype} if body is not None else {}); r = c.getresponse(); data = r.read()
    except (OSError, http.client.HTTPException): c.close(); raise
    return r.status, (json.loads(data) if data else None)
def report(rid, until, timeout=10):  # poll GET /chaos/runs/{id} until until(report), bounded
    end = time.time() + timeout
    while time.time() < end:
        st, r = req('GET', f'/chaos/runs/{rid}')
        if st == 200 and until(r): return r
        time.sleep(0.001)
    fail(f'run {rid}: condition not reached in {timeout} s')
def start(script):  # POST /chaos/run (JSON, no wait); retried on 409 while the previous run leaves
    busy, end = 0, time.time() + 10
    while time.time() < end:
        t0 = time.time(); st, r = req('POST', '/chaos/run', json.dumps({'script': script}))
        if st == 202: return t0, r['run_id'], busy
        if st != 409: fail(f'POST /chaos/run: {st} {r}')
        busy += 1; time.sleep(0.001)
    fail('POST /chaos/run: still 409 after 10 s')
step = lambda r, name: next((s for s in r['steps'] if s['name'] == name and s['ended_at']), None)
class Prober:  # GET / back to back; while one is stuck, another starts every PACE (<= 32 at once)
    def __init__(s):
        s.log, s.cv, s.busy, s.last, s.stop = [], threading.Condition(), 0, 0.0, False; s.t = threading.Thread(target=s.loop, daemon=True); s.t.start()
    def one(s):
        t, st = time.time(), 0
        try:
            h = http.client.HTTPConnection('127.0.0.1', PORT, timeout=3); h.request('GET', '/')
            r = h.getresponse(); r.read(); st = r.status; h.close()
        except (OSError, http.client.HTTPException): pass
        with s.cv: s.log.append((t, time.time(), st)); s.busy -= 1; s.cv.notify()
    def loop(s):
        with s.cv:
            while not s.stop:
                if s.busy == 0 or (s.busy < 32 and time.time() - s.last >= PACE):
                    s.busy += 1; s.last = time.time(); threading.Thread(target=s.one, daemon=True).start()
                else: s.cv.wait(max(0.0005, s.last + PACE - time.time()))
    def halt(s):  # stop issuing, let the stuck probes answer or time out; (sent, received, status)
        with s.cv: s.stop = True; s.cv.notify()
        s.t.join(); time.sleep(3.2); return sorted(s.log)
if MODE == 'first-step':
    off, cli, busy = [], [], 0
    for _ in range(int(ARG)):
        st, r = req('POST', '/chaos/run?wait=true', 'sleep(0);', 'text/plain')
        if st not in (200, 202) or not r['steps']: fail(f'POST /chaos/run?wait=true: {st} {r}')
        off.append(r['steps'][0]['offset_s'])
    for _ in range(int(ARG)):
        t0, rid, b = start('sleep(0);'); busy += b
        cli.append(ts(report(rid, lambda r: r['steps'])['steps'][0]['started_at']) - t0)
        report(rid, lambda r: r['status'] != 'running')
    for k, v in (('OFF', off), ('CLI', cli)):
        out(**{f'{k}_P50': ms(pct(v, 50)), f'{k}_P99': ms(pct(v, 99)), f'{k}_MAX': ms(max(v))})
    out(F1_BUSY=busy)
elif MODE in ('block-reset', 'clear'):
    p = Prober(); time.sleep(0.3)
    tail, name = ('sleep(30);', 'redis_reset') if MODE == 'block-reset' else ('sleep(2); network_clear(); sleep(30);', 'network_clear')
    _, rid, _ = start('network_block(); redis_reset(); ' + tail)
    s = step(report(rid, lambda r: step(r, name)), name); t_end = ts(s['ended_at'])
    end = time.time() + (2.5 if MODE == 'block-reset' else 10)  # clear: until a 200 after it (bounded)
    while time.time() < end and (MODE == 'block-reset' or not any(e[1] >= t_end and e[2] == 200 for e in p.log)):
        time.sleep(0.01)
    log = p.halt(); st, r = req('POST', f'/chaos/runs/{rid}/cancel')
    print(f'   run {rid}: {name} took {s["duration_ms"]} ms ({s["outcome"]}); cancel: {st} {r and r["status"]}, '
          f'undo ok: {all(u["ok"] for u in (r or {}).get("undo", []))}')
    pre, post = [e for e in log if e[0] < t_end], [e for e in log if e[0] >= t_end]
    codes = lambda es: ' '.join(f'{k}x{sum(1 for e in es if e[2] == k)}' for k in sorted({e[2] for e in es}))
    print(f'   GET / probes (status x count): {len(pre)} issued before the step ended ({codes(pre)}), {len(post)} after ({codes(post)})')
    if MODE == 'block-reset':
        bad = [e for e in post if e[2] != 200]
        if not bad: fail('no GET / issued after the reset failed')
        rx = min(e[1] for e in log if e[2] != 200 and e[1] >= t_end)
        out(F2_SENT=ms(bad[0][0] - t_end), F2_RECV=ms(rx - t_end), F2_OK_AFTER=len(post) - len(bad),
            F2_POST=len(post), F2_TOOK=ms(bad[0][1] - bad[0][0]))
    else:
        fly = [e for e in pre if e[1] >= t_end]
        print(f'   in flight at the clear: {len(fly)} ({codes(fly)}), answered within {ms(max([e[1] - t_end for e in fly] or [0]))} ms of it')
        ok = sorted((e for e in log if e[1] >= t_end and e[2] == 200), key=lambda e: e[1])
        if not ok: fail('no GET / answered 200 within 10 s of the clear')
        out(F3_RECV=ms(ok[0][1] - t_end), F3_SENT=ms(ok[0][0] - t_end))
elif MODE == 'runaway':  # back to back for ARG seconds, each with ?wait=true
    end, durs, stopped, other = time.time() + ARG, [], 0, []
    while time.time() < end:
        st, r = req('POST', '/chaos/run?wait=true', 'let x = 0; loop { x += 1; }', 'text/plain')
        if st not in (200, 202): fail(f'runaway run: {st} {r}')
        durs.append(r['duration_s']); msg = json.dumps(r.get('error'))
        if r['status'] == 'failed' and 'operation' in msg.lower(): stopped += 1
        else: other.append(f'{r["status"]}: {msg}')
    print(f'   runaway error: {msg}' + (f'; other outcomes: {other[:3]}' if other else ''))
    out(F4_RUNS=len(durs), F4_STOPPED=stopped, F4_MED=f'{pct(durs, 50):.3f}', F4_MAX=f'{max(durs):.3f}')
PY
export RESULTS=$WORK/results PACE_MS
# shellcheck source=/dev/null # $RESULTS: NAME=value lines written by probe.py
probe() { python3 "$WORK/probe.py" "$APP_PORT" "$@" || die "python probe '$1' failed"; source "$RESULTS"; }
get_root_200() { # wait up to ~15 s for GET / to answer 200
    for _ in {1..150}; do [[ $(curl -s -o /dev/null -m 3 -w '%{http_code}' "$URL/") == 200 ]] && return; sleep 0.1; done
    die "GET / does not answer 200"; }

# --- start redis and the service ---------------------------------------------------------------
start_redis
mkdir -p "$WORK/runs" "$WORK/scenarios"
start_service RUNS_DIR="$WORK/runs" SCENARIOS_DIR="$WORK/scenarios" MAX_CONCURRENT_RUNS=1 REDIS_MAX_RETRIES=0 \
    REDIS_SOCKET_TIMEOUT=1 REDIS_SOCKET_CONNECT_TIMEOUT=1 HEALTH_CACHE_TTL_SECONDS=0
echo "service pid $SVC_PID on $URL, redis on 127.0.0.1:$REDIS_PORT, binary $BIN"
get_root_200

# --- 1. POST -> first step ---------------------------------------------------------------------
echo; echo "1. POST /chaos/run -> first step started, 'sleep(0);' x $N each way"
probe first-step "$N"
F1_OK=$(verdict "$CLI_P99 < 10"); F1_OFF_OK=$(verdict "$OFF_P99 < 10")
printf '   client (started_at - POST sent): p50 %s  p99 %s  max %s ms   (target p99 < 10)  %s\n' "$CLI_P50" "$CLI_P99" "$CLI_MAX" "$F1_OK"
printf '   report steps[0].offset_s:        p50 %s  p99 %s  max %s ms   (target p99 < 10)  %s  (1 ms resolution)\n' "$OFF_P50" "$OFF_P99" "$OFF_MAX" "$F1_OFF_OK"
echo "   409 answers to a POST right after the previous run was reported ended: $F1_BUSY"

# --- 2. block + reset -> errors ----------------------------------------------------------------
echo; echo "2. network_block(); redis_reset(); sleep(30);  GET / probed, 3 s timeout each"
get_root_200; probe block-reset 0
F2_OK=$(verdict "$F2_SENT < 50 && $F2_OK_AFTER == 0")
printf '   first failing GET / issued %s ms after the reset step ended, %s of the %s issued after it got 200   (target < 50, none)  %s\n' \
    "$F2_SENT" "$F2_OK_AFTER" "$F2_POST" "$F2_OK"
echo "   first error response received $F2_RECV ms after the reset (that request took $F2_TOOK ms). Every GET / issued after"
echo "   the reset fails, but each waits out the black-holed connect (REDIS_SOCKET_CONNECT_TIMEOUT=1 s) before it answers;"
echo "   the target is on when the first failing request was issued: no request issued after the reset succeeds."

# --- 3. clear -> first 200 ---------------------------------------------------------------------
echo; echo "3. network_block(); redis_reset(); sleep(2); network_clear(); sleep(30);  GET / probed"
get_root_200; probe clear 0
F3_OK=$(verdict "$F3_RECV < 1000")
printf '   first 200 received %s ms after the clear step ended (issued at +%s ms)   (target < 1000)  %s\n' "$F3_RECV" "$F3_SENT" "$F3_OK"

# --- 4. /health while runaway scripts are stopped ----------------------------------------------
echo; echo "4. GET /health under wrk -t1 -c4 -d${DURATION}s while 'let x = 0; loop { x += 1; }' runs back to back"
get_root_200
wrk -t1 -c4 -d"${DURATION}s" --latency "$URL/health" >"$WORK/wrk.txt" &
WRK_PID=$!
probe runaway "$DURATION"
wait "$WRK_PID" || die "wrk failed"; WRK_PID=''
F4_P99=$(wrk_field "$WORK/wrk.txt" p99); F4_RPS=$(wrk_field "$WORK/wrk.txt" rps); F4_ERR=$(wrk_field "$WORK/wrk.txt" errors)
[[ -n $F4_RPS ]] || die "cannot parse wrk output: $(cat "$WORK/wrk.txt")"
F4_OK=$(verdict "$F4_P99 < 50")
printf '   /health p99 %s ms, %.0f req/s, %s errors   (target p99 < 50)  %s\n' "$F4_P99" "$F4_RPS" "$F4_ERR" "$F4_OK"
echo "   runaway runs: $F4_RUNS, stopped by the operation limit: $F4_STOPPED, duration_s median $F4_MED max $F4_MAX"
[[ -s $WORK/service.log ]] && { echo; echo "service stderr (LOG_LEVEL=warn, last 20 lines):"; tail -n 20 "$WORK/service.log"; }

# --- summary -----------------------------------------------------------------------------------
cat <<EOF

===== chaos-lab scenario engine benchmark summary =====
date:              $(date -u '+%Y-%m-%d %H:%M:%S UTC')
machine:           nproc $(nproc), $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)
binary:            $BIN
POST -> 1st step:  client p50 $CLI_P50 / p99 $CLI_P99 / max $CLI_MAX ms (p99 < 10) $F1_OK; offset_s p99 $OFF_P99 ms $F1_OFF_OK  (N=$N)
reset -> errors:   first failing request issued +$F2_SENT ms, $F2_OK_AFTER/$F2_POST later ones 200 (< 50) $F2_OK; first error received +$F2_RECV ms
clear -> first 200: +$F3_RECV ms (< 1000) $F3_OK
runaway /health:   p99 $F4_P99 ms, $F4_RPS req/s (< 50) $F4_OK; $F4_STOPPED/$F4_RUNS runs stopped, median ${F4_MED} s
EOF
