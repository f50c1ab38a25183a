#!/usr/bin/env bash
# Runs the same pub/sub workloads against Snorky and Nchan, on this machine, in one run,
# and writes a Markdown comparison to bench/results/latest.md (raw JSON reports next to it).
#
#   Snorky: `snorky serve` supervisor with 2 workers on a Redis bus.
#   Nchan:  nginx with libnginx-mod-nchan, 2 worker processes, the same Redis via nchan_redis_pass.
#
# Both servers get the same Redis (a private redis-server on 127.0.0.1:$REDIS_PORT started
# here), the same client (snorky-bench), and are started fresh for every workload, one at a
# time, so neither runs while the other is measured. The latency workload is measured in
# alternating rounds (Snorky, Nchan, Snorky, Nchan, ...): a p99 of a few hundred
# microseconds on a shared machine moves with whatever else the machine does, and
# alternating keeps a busy spell from landing on one server only. Each server's median
# round (by p99) is the one reported, next to every round's p99.
#
# Environment knobs (defaults in brackets):
#   WORKLOADS     which of: fanout channels idle latency          [all four]
#   TARGETS       snorky and/or nchan                              [snorky nchan]
#   SCALE         multiplies every connection count (0.1 = smoke)  [1]
#   DURATION      seconds of publishing per workload               [10]
#   LATENCY_RATE  publications/s of the latency workload           [1000]
#   LATENCY_ROUNDS  alternating rounds of the latency workload     [3]
#   SNORKY_BUS    redis: `--workers 2 --redis ...` (the comparison);
#                 memory: `--workers 1 --bus memory`, for while the Redis bus is unfinished [redis]
#   NCHAN_REDIS_MODE  nchan_redis_storage_mode: nostore (Redis as a pure broadcast bus, like
#                 Snorky's) or distributed (Nchan's default: messages stored in Redis) [nostore]
#   REDIS_PORT / SNORKY_PORT / SNORKY_BACKEND_PORT / NCHAN_PORT   [6390 / 5800 / 5801 / 8090]
#   SKIP_INSTALL=1, SKIP_BUILD=1   use what is there
#   SNORKY_BIN / BENCH_BIN   binaries to use instead of $SCRATCH/release/{snorky,snorky-bench}
#   SCRATCH       SwiftPM scratch path                             [.build-bench]
#   OUT           where results go                                  [bench/results]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-$ROOT/bench/results}
SCRATCH=${SCRATCH:-$ROOT/.build-bench}
WORKLOADS=${WORKLOADS:-"fanout channels idle latency"}
TARGETS=${TARGETS:-"snorky nchan"}
SCALE=${SCALE:-1}
DURATION=${DURATION:-10}
LATENCY_RATE=${LATENCY_RATE:-1000}
LATENCY_ROUNDS=${LATENCY_ROUNDS:-3}
SNORKY_BUS=${SNORKY_BUS:-redis}
NCHAN_REDIS_MODE=${NCHAN_REDIS_MODE:-nostore}
REDIS_PORT=${REDIS_PORT:-6390}
SNORKY_PORT=${SNORKY_PORT:-5800}
SNORKY_BACKEND_PORT=${SNORKY_BACKEND_PORT:-5801}
NCHAN_PORT=${NCHAN_PORT:-8090}
NCHAN_MODULE=/usr/lib/nginx/modules/ngx_nchan_module.so

WORK=$(mktemp -d /tmp/snorky-compare.XXXXXX)
RAW="$OUT/raw"
LOG="$OUT/latest.log"
mkdir -p "$RAW"
: > "$LOG"
BACKEND_KEY="bench-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"

say() { printf '== %s %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$LOG" >&2; }
die() { say "error: $*"; exit 1; }

# ---------------------------------------------------------------- processes we own
# Every server is started in its own session (setsid), so its pid is also its process
# group id and stopping it takes its workers along. Only these pids are ever signalled.
STARTED_PIDS=()

# shellcheck source=../scripts/lib/stop-process.sh
source "$ROOT/scripts/lib/stop-process.sh"
stop_group() { stop_process "$1" "${2:-15}" "pid $1" group; }  # stop_group PID [grace seconds]

cleanup() {
    local status=$?
    # Newest first: servers before the Redis they use.
    local index
    for ((index = ${#STARTED_PIDS[@]} - 1; index >= 0; index--)); do stop_group "${STARTED_PIDS[index]}" 10; done
    [ -d "$WORK" ] && cp -f "$WORK"/*.log "$OUT/raw/" 2>/dev/null || true
    rm -rf "$WORK"
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() { local pid=$1 kept=(); for p in "${STARTED_PIDS[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done; STARTED_PIDS=("${kept[@]}"); }

wait_for_port() {  # wait_for_port PORT PID NAME
    for _ in $(seq 300); do
        kill -0 "$2" 2>/dev/null || die "$3 exited during startup (see $OUT/raw/$3.log)"
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "$3 did not listen on port $1 within 30 s"
}

# ---------------------------------------------------------------- setup
install_dependencies() {
    local missing=()
    command -v nginx >/dev/null || missing+=(nginx)
    [ -f "$NCHAN_MODULE" ] || missing+=(libnginx-mod-nchan)
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v redis-cli >/dev/null || missing+=(redis-tools)
    command -v jq >/dev/null || missing+=(jq)
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "${SKIP_INSTALL:-0}" = 1 ] && die "missing: ${missing[*]} (and SKIP_INSTALL=1)"
    say "installing from Debian: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$LOG" 2>&1
}

build() {
    local products=(snorky-bench)
    [[ " $TARGETS " == *" snorky "* ]] && products+=(snorky)
    if [ "${SKIP_BUILD:-0}" != 1 ]; then
        for product in "${products[@]}"; do
            say "building $product (release)"
            (cd "$ROOT" && swift build -c release --scratch-path "$SCRATCH" --product "$product" >>"$LOG" 2>&1) \
                || die "building $product failed (see $LOG)"
        done
    fi
    SNORKY=${SNORKY_BIN:-$SCRATCH/release/snorky}
    BENCH=${BENCH_BIN:-$SCRATCH/release/snorky-bench}
    [ -x "$BENCH" ] || die "no snorky-bench at $BENCH"
    if [[ " $TARGETS " == *" snorky "* ]] && [ ! -x "$SNORKY" ]; then die "no snorky at $SNORKY"; fi
}

REDIS_PID=
start_redis() {
    setsid redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --maxclients 30000 --logfile "$WORK/redis.log" --dir "$WORK" &
    REDIS_PID=$!
    STARTED_PIDS+=("$REDIS_PID")
    wait_for_port "$REDIS_PORT" "$REDIS_PID" redis
    for _ in $(seq 50); do
        [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && return 0
        sleep 0.1
    done
    die "redis on $REDIS_PORT does not answer PING"
}

SERVER_PID=
start_snorky() {
    local args=(serve --port "$SNORKY_PORT" --backend-port "$SNORKY_BACKEND_PORT" --log-level warning)
    if [ "$SNORKY_BUS" = memory ]; then
        args+=(--workers 1 --bus memory)
    else
        args+=(--workers 2 --redis "redis://127.0.0.1:$REDIS_PORT")
    fi
    SNORKY_BACKEND_KEY="$BACKEND_KEY" setsid "$SNORKY" "${args[@]}" >>"$WORK/snorky.log" 2>&1 &
    SERVER_PID=$!
    STARTED_PIDS+=("$SERVER_PID")
    wait_for_port "$SNORKY_PORT" "$SERVER_PID" snorky
    wait_for_port "$SNORKY_BACKEND_PORT" "$SERVER_PID" snorky
    # The supervisor listens before its workers run: wait until a worker answers.
    for _ in $(seq 300); do
        kill -0 "$SERVER_PID" 2>/dev/null || die "snorky exited during startup (see $OUT/raw/snorky.log)"
        http_ok "$SNORKY_BACKEND_PORT" /health && break
        sleep 0.1
    done
    http_ok "$SNORKY_BACKEND_PORT" /health || die "no snorky worker answers /health (see $OUT/raw/snorky.log)"
    sleep 1  # and give the other worker a moment to start too
}

http_ok() {  # http_ok PORT PATH: whether GET answers 200
    local reply
    reply=$(timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" && printf "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" "$1" >&3 && head -n1 <&3' "$1" "$2" 2>/dev/null) || return 1
    [[ $reply == *" 200 "* ]]
}

write_nginx_config() {
    local hard
    hard=$(ulimit -Hn)
    mkdir -p "$WORK/nginx/tmp"
    cat >"$WORK/nginx/nginx.conf" <<CONF
# Generated by bench/compare.sh.
worker_processes 2;
worker_rlimit_nofile $hard;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx-error.log warn;
daemon off;
load_module $NCHAN_MODULE;

events {
    worker_connections $((hard - 64));
    multi_accept on;
}

http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path $WORK/nginx/tmp;
    client_body_buffer_size 64k;
    # Channel and message bookkeeping lives in this shared zone; 32M (the default) is small
    # for 20,000 subscribers.
    nchan_max_reserved_memory 512M;

    upstream bench_redis {
        nchan_redis_server redis://127.0.0.1:$REDIS_PORT;
        nchan_redis_storage_mode $NCHAN_REDIS_MODE;
    }

    server {
        # One socket per worker, as Snorky's supervisor gives each worker its own.
        listen 127.0.0.1:$NCHAN_PORT reuseport backlog=4096;

        location ~ ^/pub/(.+)\$ {
            nchan_publisher http;
            nchan_channel_id \$1;
            nchan_redis_pass bench_redis;
        }

        location ~ ^/sub/(.+)\$ {
            nchan_subscriber websocket;
            nchan_channel_id \$1;
            # /sub/a,b subscribes one connection to channels a and b.
            nchan_channel_id_split_delimiter ",";
            nchan_subscriber_first_message newest;
            nchan_redis_pass bench_redis;
        }
    }
}
CONF
    nginx -t -q -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" >>"$LOG" 2>&1 || die "nginx rejects the generated config (see $LOG)"
}

start_nchan() {
    setsid nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" >>"$WORK/nginx.log" 2>&1 &
    SERVER_PID=$!
    STARTED_PIDS+=("$SERVER_PID")
    wait_for_port "$NCHAN_PORT" "$SERVER_PID" nginx
    sleep 1
}

stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    say "stopping server $SERVER_PID"
    stop_group "$SERVER_PID" 20
    forget_pid "$SERVER_PID"
    SERVER_PID=
}

# ---------------------------------------------------------------- workloads
scaled() { awk -v n="$1" -v s="$SCALE" 'BEGIN { v = int(n * s); print (v < 1 ? 1 : v) }'; }

workload_args() {
    case $1 in
        fanout)   # (a) 2,000 subscribers on 1 channel, 100-byte messages, as fast as delivery keeps up
            echo "--connections $(scaled 2000) --channels 1 --payload 100 --rate 0 --duration $DURATION" ;;
        channels) # (b) 10,000 connections, 2 channels each out of 5,000
            echo "--connections $(scaled 10000) --channels $(scaled 5000) --channels-per-connection 2 --payload 100 --rate 0 --duration $DURATION --publishers 8 --pipeline 32" ;;
        idle)     # (c) 20,000 connected, subscribed clients: memory only
            echo "--connections $(scaled 20000) --channels $(scaled 20000) --publish-via none --hold 5" ;;
        latency)  # (d) latency at a fixed moderate rate: 1,000 connections on 100 channels, 1,000 msg/s
            echo "--connections $(scaled 1000) --channels $(scaled 100) --payload 100 --rate $LATENCY_RATE --duration $DURATION" ;;
        *) die "unknown workload $1" ;;
    esac
}

run_one() {  # run_one WORKLOAD TARGET [ROUND]: results in $RAW/WORKLOAD-TARGET[-ROUND].json
    local workload=$1 target=$2 round=${3:-} target_args redis_args="--redis-pid $REDIS_PID"
    local name="$workload-$target${round:+-$round}"
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    if [ "$target" = snorky ]; then
        start_snorky
        target_args="--target snorky --port $SNORKY_PORT --publish-port $SNORKY_BACKEND_PORT"
        [ "$SNORKY_BUS" = memory ] && redis_args=""
    else
        start_nchan
        target_args="--target nchan --port $NCHAN_PORT"
    fi
    say "$workload / $target${round:+ (round $round of $LATENCY_ROUNDS)}"
    # In the background and waited for, so that a signal reaches the cleanup trap at once
    # instead of after the run.
    # shellcheck disable=SC2046,SC2086
    SNORKY_BACKEND_KEY="$BACKEND_KEY" "$BENCH" $target_args $(workload_args "$workload") \
        --server-pid-tree "$SERVER_PID" $redis_args \
        --label "$workload/$target${round:+/$round}" --json-file "$RAW/$name.json" \
        > >(tee -a "$LOG") 2>>"$LOG" &
    local bench_pid=$!
    STARTED_PIDS+=("$bench_pid")
    if ! wait "$bench_pid"; then
        say "$workload / $target failed (see $LOG)"
        rm -f "$RAW/$name.json"
    fi
    forget_pid "$bench_pid"
    stop_server
    sleep 2
}

# The rounds of WORKLOAD on TARGET, in round order.
round_files() { find "$RAW" -maxdepth 1 -name "$1-$2-*.json" | sort -V; }

# The report WORKLOAD-TARGET's rows come from: the one run, or of several rounds the one
# with the median p99 (the lower middle one of an even count).
result_file() {  # result_file WORKLOAD TARGET
    local rounds
    rounds=$(round_files "$1" "$2")
    if [ -z "$rounds" ]; then echo "$RAW/$1-$2.json"; return; fi
    echo "$rounds" | while read -r f; do
        p99=$(value "$f" '.latency.p99Micros'); [ -n "$p99" ] && echo "$p99 $f"
    done | sort -n | awk '{ line[NR] = $2 } END { if (NR) print line[int((NR + 1) / 2)] }'
}

# ---------------------------------------------------------------- report
value() {  # value FILE JQ-PATH -> number or empty
    [ -f "$1" ] || return 0
    jq -r "($2) // empty" "$1" 2>/dev/null
}

format() {  # format KIND VALUE
    [ -n "$2" ] || { echo "–"; return; }
    case $1 in
        int)   awk -v v="$2" 'BEGIN { s = sprintf("%.0f", v); n = length(s); o = ""; for (i = 1; i <= n; i++) { o = o substr(s, i, 1); if ((n - i) % 3 == 0 && i < n) o = o "," } print o }' ;;
        us)    awk -v v="$2" 'BEGIN { if (v >= 1000) printf "%.2f ms\n", v / 1000; else printf "%.0f µs\n", v }' ;;
        bytes) awk -v v="$2" 'BEGIN { if (v >= 1048576) printf "%.1f MiB\n", v / 1048576; else printf "%.1f KiB\n", v / 1024 }' ;;
        sec)   awk -v v="$2" 'BEGIN { printf "%.3f s\n", v }' ;;
        pct)   awk -v v="$2" 'BEGIN { printf "%.4f %%\n", v }' ;;
    esac
}

row() {  # row WORKLOAD METRIC KIND JQ-PATH
    local s n ratio="–"
    s=$(value "$(result_file "$1" snorky)" "$4")
    n=$(value "$(result_file "$1" nchan)" "$4")
    if [ -n "$s" ] && [ -n "$n" ]; then
        ratio=$(awk -v s="$s" -v n="$n" 'BEGIN { if (n + 0 == 0) print "–"; else printf "%.2f\n", s / n }')
    fi
    printf '| %s | %s | %s | %s | %s |\n' "$1" "$2" "$(format "$3" "$s")" "$(format "$3" "$n")" "$ratio"
}

rounds_row() {  # rounds_row WORKLOAD: every round's p99, for each server
    local cells=() target
    for target in snorky nchan; do
        cells+=("$(round_files "$1" "$target" | while read -r f; do format us "$(value "$f" '.latency.p99Micros')"; done | paste -sd, | sed 's/,/, /g')")
    done
    printf '| %s | latency p99 of each round (rows above: the median round) | %s | %s | – |\n' "$1" "${cells[0]:-–}" "${cells[1]:-–}"
}

write_report() {
    local md="$OUT/latest.md"
    {
        echo "# Snorky vs Nchan"
        echo
        echo "Generated by \`bench/compare.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'); both servers measured in the same run, one at a time, on the same machine, with the same client (\`snorky-bench\`) and the same Redis."
        echo
        echo "- Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r); load average before the run: $LOAD_BEFORE"
        echo "- Snorky: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?') (uncommitted changes: $(cd "$ROOT" && git status --porcelain 2>/dev/null | wc -l | tr -d ' ') files), $([ "$SNORKY_BUS" = memory ] && echo '1 worker, in-memory bus (Redis bus not used!)' || echo "supervisor + 2 workers, Redis bus")"
        echo "- Nchan: libnginx-mod-nchan $(dpkg-query -W -f '${Version}' libnginx-mod-nchan 2>/dev/null || echo '?'), $(nginx -v 2>&1 | sed 's/^nginx version: //'), 2 worker processes, nchan_redis_storage_mode $NCHAN_REDIS_MODE"
        echo "- Redis: $(redis-server --version | awk '{ print $3 }' | sed 's/v=//'), no persistence, on 127.0.0.1:$REDIS_PORT"
        echo "- Scale $SCALE, $DURATION s of publishing per workload; latency in $LATENCY_ROUNDS alternating rounds per server, each reported from its median round; the client shares the machine's cores with the servers."
        echo
        echo "| Workload | Metric | Snorky | Nchan | Snorky / Nchan |"
        echo "|---|---|---|---|---|"
        for workload in $WORKLOADS; do
            case $workload in
                fanout|channels)
                    row "$workload" "deliveries/s (higher is better)" int '.delivery.perSecond'
                    row "$workload" "messages lost" int '.delivery.lost'
                    row "$workload" "server CPU s per million deliveries" sec '.server.cpuSecondsPerMillionDeliveries'
                    row "$workload" "Redis CPU s per million deliveries" sec '.server.redisCPUSecondsPerMillionDeliveries'
                    row "$workload" "latency p50 at full load" us '.latency.p50Micros'
                    row "$workload" "latency p99 at full load" us '.latency.p99Micros'
                    row "$workload" "connect + subscribe rate (conn/s)" int '.connections.perSecond'
                    ;;
                idle)
                    row "$workload" "connections ready" int '.connections.ready'
                    row "$workload" "connect + subscribe rate (conn/s)" int '.connections.perSecond'
                    row "$workload" "server RSS per connection" bytes '.server.rssPerConnectionBytes'
                    row "$workload" "server PSS per connection" bytes '.server.pssPerConnectionBytes'
                    row "$workload" "server RSS, all connected" bytes '.server.rssConnectedBytes'
                    ;;
                latency)
                    row "$workload" "publications/s achieved" int '.publishing.achievedRate'
                    row "$workload" "latency p50" us '.latency.p50Micros'
                    row "$workload" "latency p99" us '.latency.p99Micros'
                    row "$workload" "latency p99.9" us '.latency.p999Micros'
                    row "$workload" "latency max" us '.latency.maxMicros'
                    row "$workload" "messages lost" int '.delivery.lost'
                    row "$workload" "server CPU s per million deliveries" sec '.server.cpuSecondsPerMillionDeliveries'
                    [ "$LATENCY_ROUNDS" -gt 1 ] && rounds_row "$workload"
                    ;;
            esac
        done
        echo
        printf 'Workloads (snorky-bench arguments):'
        for workload in $WORKLOADS; do printf ' **%s** `%s`;' "$workload" "$(workload_args "$workload")"; done
        echo " publishing is by HTTP POST for both (Snorky's backend API, Nchan's publisher location)."
        echo "\"Full load\" latencies include queueing: the publisher keeps the delivery pipeline full, so they measure the server's backlog, not its best case; the latency workload measures that. Ratios are Snorky divided by Nchan: above 1 is better for rates, below 1 is better for CPU, memory and latency."
        local warnings
        warnings=$(for f in "$RAW"/*.json; do [ -f "$f" ] && jq -r --arg f "$(basename "$f" .json)" '.warnings[]? | "- \($f): \(.)"' "$f"; done 2>/dev/null || true)
        if [ -n "$warnings" ]; then
            echo
            echo "Warnings reported by snorky-bench:"
            echo
            echo "$warnings"
        fi
    } >"$md"
    jq -n --arg generated "$(date -u +%FT%TZ)" --arg snorkyBus "$SNORKY_BUS" --arg nchanMode "$NCHAN_REDIS_MODE" \
        '{generated: $generated, snorkyBus: $snorkyBus, nchanRedisStorageMode: $nchanMode, runs: {}}' >"$OUT/latest.json"
    for f in "$RAW"/*.json; do
        [ -f "$f" ] || continue
        jq --arg key "$(basename "$f" .json)" --slurpfile run "$f" '.runs[$key] = $run[0]' "$OUT/latest.json" >"$WORK/latest.json"
        mv "$WORK/latest.json" "$OUT/latest.json"
    done
    say "wrote $md and $OUT/latest.json"
}

# ---------------------------------------------------------------- main
install_dependencies
build
ulimit -n "$(ulimit -Hn)"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
say "work directory $WORK, open-file limit $(ulimit -n), load $LOAD_BEFORE"
rm -f "$RAW"/*.json
start_redis
for target in $TARGETS; do [ "$target" = nchan ] && write_nginx_config; done
for workload in $WORKLOADS; do
    if [ "$workload" = latency ] && [ "$LATENCY_ROUNDS" -gt 1 ]; then
        for round in $(seq "$LATENCY_ROUNDS"); do
            for target in $TARGETS; do run_one "$workload" "$target" "$round"; done
        done
    else
        for target in $TARGETS; do run_one "$workload" "$target"; done
    fi
done
write_report
cat "$OUT/latest.md"
