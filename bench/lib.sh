# shellcheck shell=bash
# bench/lib.sh - setup shared by the benchmark scripts in bench/; sourced, not run:
#     source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Conventions: the caller sets WORK to its scratch directory (start_redis and start_service write
# their logs there) and calls find_bin (which sets BIN) before start_service. Only 127.0.0.1 is used.

# die MESSAGE...: print "error: MESSAGE" to stderr and exit 1.
die() { echo "error: $*" >&2; exit 1; }

# stop_pid PID: SIGTERM, then SIGKILL after 5 s; nothing when PID is empty or already gone.
stop_pid() {
    local pid=$1
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in {1..50}; do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# cleanup DIR VAR...: stop the processes whose PIDs the named variables hold (in that order, read
# when called), then remove DIR. Meant for: trap 'cleanup "$WORK" SVC_PID REDIS_PID' EXIT
cleanup() {
    local dir=$1 var; shift
    for var in "$@"; do stop_pid "${!var:-}"; done
    rm -rf "$dir"
}

# need_tools COMMAND...: apt-get install the Debian packages of the commands that are missing
# (redis-server and redis-cli come as the pair redis-server + redis-tools).
need_tools() {
    local tool pkg pkgs missing=() SUDO=''
    for tool in "$@"; do
        command -v "$tool" >/dev/null && continue
        case $tool in
            redis-server | redis-cli) pkgs=(redis-server redis-tools) ;;
            *) pkgs=("$tool") ;;
        esac
        for pkg in "${pkgs[@]}"; do [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg"); done
    done
    ((${#missing[@]})) || return 0
    [[ $(id -u) -eq 0 ]] || SUDO=sudo
    echo "installing: ${missing[*]}"
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "${missing[@]}"
}

# find_bin ROOT: set BIN to $CHAOS_LAB_BIN, else `cargo build --release --bin chaos-lab` in ROOT
# and use the release binary; die unless it is executable.
find_bin() {
    local root=$1
    if [[ -n ${CHAOS_LAB_BIN:-} ]]; then
        BIN=$CHAOS_LAB_BIN
    else
        (cd "$root" && cargo build --release --bin chaos-lab)
        BIN=${CARGO_TARGET_DIR:-$root/target}/release/chaos-lab
    fi
    [[ -x $BIN ]] || die "no executable at $BIN"
}

# find_loadgen ROOT: set LOADGEN_BIN to $LOADGEN_BIN, else `cargo build --release --bin loadgen`
# in ROOT and use the release binary; die unless it is executable.
find_loadgen() {
    local root=$1
    if [[ -z ${LOADGEN_BIN:-} ]]; then
        (cd "$root" && cargo build --release --bin loadgen)
        LOADGEN_BIN=${CARGO_TARGET_DIR:-$root/target}/release/loadgen
    fi
    [[ -x $LOADGEN_BIN ]] || die "no executable at $LOADGEN_BIN"
}

# free_port: print a loopback port nobody answers on.
free_port() {
    local p
    for _ in {1..100}; do
        p=$((20000 + RANDOM % 40000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
    die "no free loopback port found"
}

# to_ms TIME: print a wrk time (850.00us, 1.20ms, 2.00s, 1.00m) in ms.
to_ms() {
    awk -v t="$1" 'BEGIN { v = t + 0
        if (t ~ /us$/) v /= 1000; else if (t ~ /ms$/) v *= 1; else if (t ~ /s$/) v *= 1000
        else if (t ~ /m$/) v *= 60000; else if (t ~ /h$/) v *= 3600000
        printf "%.2f", v }'
}

# verdict 'AWK CONDITION': print PASS when it holds, else FAIL.
verdict() { awk "BEGIN { print (($1) ? \"PASS\" : \"FAIL\") }"; }

# wrk_field FILE rps|p99|errors: a figure from wrk --latency output (p99 in ms; errors = non-2xx
# responses plus socket errors).
wrk_field() {
    case $2 in
        rps) awk '/^Requests\/sec:/ {print $2}' "$1" ;;
        p99) to_ms "$(awk '$1 == "99%" {print $2}' "$1")" ;;
        errors) awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(/,/, ""); n += $4 + $6 + $8 + $10} END {print n + 0}' "$1" ;;
    esac
}

# start_redis: start a throw-away redis-server (no persistence, log $WORK/redis.log) on a free
# loopback port and wait up to 5 s for PING; sets REDIS_PORT and REDIS_PID.
start_redis() {
    REDIS_PORT=$(free_port)
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
        --daemonize no --logfile "$WORK/redis.log" &
    # shellcheck disable=SC2034 # for the caller (its cleanup trap)
    REDIS_PID=$!
    for _ in {1..50}; do redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null || die "redis-server did not start: $(cat "$WORK/redis.log")"
}

# start_service [VAR=value...]: start $BIN on a free loopback port, talking to the redis of
# start_redis, LOG_LEVEL=warn, stderr to $WORK/service.log, plus (or overriding) the given
# environment settings; wait up to ~10 s for GET /healthz. Sets APP_PORT, URL and SVC_PID.
start_service() {
    local attempt
    # A port free a moment ago may be taken meanwhile (load generators open many ephemeral ports):
    # a start that loses that race is retried on another port.
    for attempt in 1 2 3 4 5; do
        APP_PORT=$(free_port)
        URL=http://127.0.0.1:$APP_PORT
        env APP_HOST=127.0.0.1 APP_PORT="$APP_PORT" REDIS_ENABLED=true REDIS_SSL=false REDIS_HOST=127.0.0.1 \
            REDIS_PORT="$REDIS_PORT" LOG_LEVEL=warn "$@" "$BIN" 2>"$WORK/service.log" &
        SVC_PID=$!
        for _ in {1..100}; do
            curl -fsS --max-time 1 "$URL/healthz" >/dev/null 2>&1 && return 0
            kill -0 "$SVC_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$SVC_PID" 2>/dev/null; then die "service did not answer /healthz"; fi
        grep -q "Address already in use" "$WORK/service.log" || die "service exited: $(cat "$WORK/service.log")"
        echo "   (port $APP_PORT was taken meanwhile; retrying, attempt $attempt)" >&2
    done
    die "service exited: $(cat "$WORK/service.log")"
}
