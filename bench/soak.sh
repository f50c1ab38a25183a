#!/usr/bin/env bash
# Soak test of one Snorky node (minutes; not part of the test suite): a supervisor with
# WORKERS workers on a Redis bus, steady publishing to steady subscribers, and connection
# churn next to it, while the RSS of the supervisor, each worker and Redis is sampled.
#
#   - steady load: snorky-bench, STEADY_CONNECTIONS subscribers on STEADY_CHANNELS channels,
#     STEADY_RATE publications/s through the backend API for DURATION seconds; it counts
#     every delivery, so a lost or reordered message is seen;
#   - churn: bench/soak.py churn, CHURN_CONCURRENCY loops that connect, subscribe, receive
#     for up to CHURN_MAX_HOLD s, then unsubscribe and close, close, or drop the TCP
#     connection without a close frame; one more connection publishes CHURN_PUBLISH_RATE/s
#     on the churn channels;
#   - RSS of every process every SAMPLE_INTERVAL s to OUT/rss.csv.
#
# At the end it prints an RSS table and checks that no steady delivery was lost, that no
# worker restarted, that the churn clients saw no error, and that no Snorky process grew
# more than MAX_GROWTH_KIB over the second half of the run (growth during warm-up is
# expected; a leak keeps going). Exit status 0 when every check passes.
#
# Environment knobs (defaults in brackets):
#   DURATION            seconds of steady publishing                     [300]
#   WORKERS             workers of the node                              [2]
#   STEADY_CONNECTIONS / STEADY_CHANNELS / STEADY_RATE                   [200 / 20 / 200]
#   CHURN_CONCURRENCY / CHURN_MAX_HOLD / CHURN_PUBLISH_RATE              [20 / 1.0 / 50]
#   CHURN_LEAVE         how churn connections end: mix, unsubscribe, close or drop [mix]
#   SAMPLE_INTERVAL     seconds between RSS samples                      [5]
#   MAX_GROWTH_KIB      allowed second-half RSS growth per process       [1024]
#   PORT / BACKEND_PORT / REDIS_PORT                                     [6210 / 6211 / 6212]
#   SCRATCH             SwiftPM scratch path of the release build        [.build]
#   SKIP_BUILD=1        use the binaries already in SCRATCH/release
#   OUT                 CSV, reports and logs                            [bench/results/soak]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-300}
WORKERS=${WORKERS:-2}
STEADY_CONNECTIONS=${STEADY_CONNECTIONS:-200}
STEADY_CHANNELS=${STEADY_CHANNELS:-20}
STEADY_RATE=${STEADY_RATE:-200}
CHURN_CONCURRENCY=${CHURN_CONCURRENCY:-20}
CHURN_MAX_HOLD=${CHURN_MAX_HOLD:-1.0}
CHURN_PUBLISH_RATE=${CHURN_PUBLISH_RATE:-50}
CHURN_LEAVE=${CHURN_LEAVE:-mix}
SAMPLE_INTERVAL=${SAMPLE_INTERVAL:-5}
MAX_GROWTH_KIB=${MAX_GROWTH_KIB:-1024}
PORT=${PORT:-6210}
BACKEND_PORT=${BACKEND_PORT:-6211}
REDIS_PORT=${REDIS_PORT:-6212}
SCRATCH=${SCRATCH:-$ROOT/.build}
OUT=${OUT:-$ROOT/bench/results/soak}
BACKEND_KEY="soak-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"

mkdir -p "$OUT"
rm -f "$OUT"/*.csv "$OUT"/*.json "$OUT"/*.log "$OUT"/summary.md
say() { printf '== %s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# ---------------------------------------------------------------- processes we own
# Each runs in its own session (setsid), so its pid is its process group id and stopping
# it takes its children along; only these pids are ever signalled.
STARTED_PIDS=()

# shellcheck source=../scripts/lib/stop-process.sh
source "$ROOT/scripts/lib/stop-process.sh"
stop_group() { stop_process "$1" "$2" "pid $1"; }  # stop_group PID GRACE-SECONDS

cleanup() {
    local status=$? index
    trap - EXIT INT TERM
    for ((index = ${#STARTED_PIDS[@]} - 1; index >= 0; index--)); do stop_group "${STARTED_PIDS[index]}" 30; done
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() {  # start LOG COMMAND...; sets STARTED_PID
    local log=$1
    shift
    setsid "$@" >>"$OUT/$log" 2>&1 </dev/null &
    STARTED_PID=$!
    STARTED_PIDS+=("$STARTED_PID")
}

forget() {  # forget PID: it was stopped already
    local kept=() pid
    for pid in "${STARTED_PIDS[@]}"; do [ "$pid" = "$1" ] || kept+=("$pid"); done
    STARTED_PIDS=("${kept[@]}")
}

# ---------------------------------------------------------------- setup
command -v redis-server >/dev/null || die "redis-server not found (apt-get install redis-server)"
python3 -c 'import websockets.asyncio.client' 2>/dev/null || {
    say "installing the websockets package for the churn client"
    python3 -m pip install --quiet websockets || die "cannot install websockets (pip install websockets)"
}
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    say "building snorky and snorky-bench (release)"
    (cd "$ROOT" && swift build -c release --scratch-path "$SCRATCH" --product snorky >>"$OUT/build.log" 2>&1) || die "build failed (see $OUT/build.log)"
    (cd "$ROOT" && swift build -c release --scratch-path "$SCRATCH" --product snorky-bench >>"$OUT/build.log" 2>&1) || die "build failed (see $OUT/build.log)"
fi
SNORKY=$SCRATCH/release/snorky
BENCH=$SCRATCH/release/snorky-bench
[ -x "$SNORKY" ] && [ -x "$BENCH" ] || die "no release build in $SCRATCH/release"
ulimit -n "$(ulimit -Hn)"

start redis.log redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$OUT"
REDIS_PID=$STARTED_PID
for _ in $(seq 100); do
    reply=$(timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" && printf "PING\r\n" >&3 && head -c 5 <&3' "$REDIS_PORT" 2>/dev/null || true)
    [ "$reply" = "+PONG" ] && break
    kill -0 "$REDIS_PID" 2>/dev/null || die "redis-server exited (see $OUT/redis.log)"
    sleep 0.1
done
[ "$reply" = "+PONG" ] || die "redis-server does not answer on port $REDIS_PORT"

SNORKY_BACKEND_KEY=$BACKEND_KEY start snorky.log "$SNORKY" serve --workers "$WORKERS" \
    --port "$PORT" --backend-port "$BACKEND_PORT" --redis "redis://127.0.0.1:$REDIS_PORT" --log-level info
SERVER_PID=$STARTED_PID
for _ in $(seq 600); do
    grep -q "cluster ready" "$OUT/snorky.log" 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "snorky exited during startup (see $OUT/snorky.log)"
    sleep 0.1
done
grep -q "cluster ready" "$OUT/snorky.log" || die "snorky not ready within 60 s (see $OUT/snorky.log)"
WORKER_PIDS_BEFORE=$(python3 "$ROOT/bench/soak.py" children "$SERVER_PID")
say "snorky supervisor $SERVER_PID, workers $WORKER_PIDS_BEFORE; redis $REDIS_PID"

# ---------------------------------------------------------------- the run
start sampler.log python3 "$ROOT/bench/soak.py" sample --pid "$SERVER_PID" --extra-pid "$REDIS_PID" \
    --interval "$SAMPLE_INTERVAL" --csv "$OUT/rss.csv"
SAMPLER_PID=$STARTED_PID
start churn.log python3 "$ROOT/bench/soak.py" churn "ws://127.0.0.1:$PORT/ws" --stats "$OUT/churn.json" \
    --concurrency "$CHURN_CONCURRENCY" --max-hold "$CHURN_MAX_HOLD" --publish-rate "$CHURN_PUBLISH_RATE" --leave "$CHURN_LEAVE"
CHURN_PID=$STARTED_PID

say "steady load for $DURATION s: $STEADY_CONNECTIONS subscribers on $STEADY_CHANNELS channels, $STEADY_RATE publications/s; churn: $CHURN_CONCURRENCY loops"
SNORKY_BACKEND_KEY=$BACKEND_KEY start bench.log "$BENCH" --port "$PORT" --publish-port "$BACKEND_PORT" \
    --connections "$STEADY_CONNECTIONS" --channels "$STEADY_CHANNELS" --rate "$STEADY_RATE" --duration "$DURATION" \
    --payload 100 --quiet --label soak --json-file "$OUT/bench.json"
BENCH_PID=$STARTED_PID
bench_status=0
wait "$BENCH_PID" || bench_status=$?
forget "$BENCH_PID"
[ "$bench_status" = 0 ] || say "snorky-bench failed with status $bench_status (see $OUT/bench.log)"

stop_group "$CHURN_PID" 30 && forget "$CHURN_PID"
WORKER_PIDS_AFTER=$(python3 "$ROOT/bench/soak.py" children "$SERVER_PID")
stop_group "$SAMPLER_PID" 10 && forget "$SAMPLER_PID"
[ "$WORKER_PIDS_BEFORE" = "$WORKER_PIDS_AFTER" ] || say "worker pids changed: $WORKER_PIDS_BEFORE -> $WORKER_PIDS_AFTER"

# ---------------------------------------------------------------- report
cat "$OUT/bench.log"
{
    echo "Soak run of $(date -u '+%Y-%m-%d %H:%M UTC'): snorky $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?') (release), $WORKERS workers, Redis bus;"
    echo "$DURATION s; steady $STEADY_CONNECTIONS subscribers / $STEADY_CHANNELS channels / $STEADY_RATE publications/s; churn $CHURN_CONCURRENCY loops, hold ≤ $CHURN_MAX_HOLD s, leaving by $CHURN_LEAVE, $CHURN_PUBLISH_RATE churn publications/s;"
    echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), load before the run $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
} >"$OUT/summary.md"
summary_status=0
python3 "$ROOT/bench/soak.py" summarize --csv "$OUT/rss.csv" --bench "$OUT/bench.json" --churn "$OUT/churn.json" \
    --interval "$SAMPLE_INTERVAL" --max-growth-kib "$MAX_GROWTH_KIB" --markdown "$OUT/summary.body.md" || summary_status=$?
cat "$OUT/summary.body.md" >>"$OUT/summary.md" && rm -f "$OUT/summary.body.md"
if [ "$WORKER_PIDS_BEFORE" != "$WORKER_PIDS_AFTER" ]; then
    echo "FAIL: worker pids changed: $WORKER_PIDS_BEFORE -> $WORKER_PIDS_AFTER" | tee -a "$OUT/summary.md"
    summary_status=1
fi
[ "$bench_status" = 0 ] || summary_status=1
say "summary in $OUT/summary.md, samples in $OUT/rss.csv"
exit "$summary_status"
