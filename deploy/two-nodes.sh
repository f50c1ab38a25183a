#!/usr/bin/env bash
# A two-node Snorky cluster on this machine, for trying a multi-node setup: one Redis, two
# `snorky serve` nodes (a supervisor and WORKERS workers each) sharing it, and nginx
# load-balancing WebSocket clients over both with deploy/nginx/snorky-lb.conf. Everything
# listens on 127.0.0.1 only and runs as the current user (root not needed).
#
#   deploy/two-nodes.sh          start, print the URLs, run until Ctrl-C
#   deploy/two-nodes.sh stop     stop a cluster started from another shell
#
# Both nodes load deploy/snorky.toml; ports, Redis and worker count come from flags. Logs,
# pid files and nginx's files go to STATE_DIR. Needs `redis-server` and `nginx` (Debian
# packages of those names) and a built `snorky` (swift build -c release).
#
# Environment knobs (defaults in brackets):
#   SNORKY         snorky executable  [.build/release/snorky, else .build/debug/snorky, else on PATH]
#   STATE_DIR      logs, pids, nginx prefix  [${TMPDIR:-/tmp}/snorky-two-nodes]
#   LB_PORT        nginx, the clients' entry point (ws://127.0.0.1:LB_PORT/ws)  [8080]
#   NODE_A_PORT / NODE_A_BACKEND_PORT   node A's WebSocket and backend ports  [5810 / 5811]
#   NODE_B_PORT / NODE_B_BACKEND_PORT   node B's  [5820 / 5821]
#   REDIS_PORT     the shared Redis  [6380]
#   WORKERS        workers per node  [2]
#   BACKEND_KEY    key of both nodes' backend API  [a random one, printed]
#   LOG_LEVEL      snorky's log level  [info]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE_DIR=${STATE_DIR:-${TMPDIR:-/tmp}/snorky-two-nodes}
LB_PORT=${LB_PORT:-8080}
NODE_A_PORT=${NODE_A_PORT:-5810}
NODE_A_BACKEND_PORT=${NODE_A_BACKEND_PORT:-5811}
NODE_B_PORT=${NODE_B_PORT:-5820}
NODE_B_BACKEND_PORT=${NODE_B_BACKEND_PORT:-5821}
REDIS_PORT=${REDIS_PORT:-6380}
WORKERS=${WORKERS:-2}
LOG_LEVEL=${LOG_LEVEL:-info}
SCRIPT_PID_FILE="$STATE_DIR/two-nodes.pid"

say() { printf 'two-nodes: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# ---------------------------------------------------------------- stop
is_running() { [ -f "$SCRIPT_PID_FILE" ] && kill -0 "$(cat "$SCRIPT_PID_FILE")" 2>/dev/null; }

if [ "${1:-start}" = stop ]; then
    is_running || die "no cluster running with STATE_DIR=$STATE_DIR"
    pid=$(cat "$SCRIPT_PID_FILE")
    say "stopping the cluster of pid $pid"
    kill -TERM "$pid"
    for _ in $(seq 600); do
        kill -0 "$pid" 2>/dev/null || { say "stopped"; exit 0; }
        sleep 0.1
    done
    die "pid $pid still running after 60 s"
fi
[ "${1:-start}" = start ] || die "usage: $0 [start|stop]"

# ---------------------------------------------------------------- checks
command -v redis-server >/dev/null || die "redis-server not found (apt-get install redis-server)"
NGINX=$(command -v nginx || true)
[ -z "$NGINX" ] && [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx
[ -n "$NGINX" ] || die "nginx not found (apt-get install nginx)"
if [ -z "${SNORKY:-}" ]; then
    for candidate in "$ROOT/.build/release/snorky" "$ROOT/.build/debug/snorky" "$(command -v snorky || true)"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then SNORKY=$candidate; break; fi
    done
fi
[ -n "${SNORKY:-}" ] && [ -x "$SNORKY" ] || die "no snorky executable: build it (swift build -c release) or set SNORKY"
if [ -z "${BACKEND_KEY:-}" ]; then
    BACKEND_KEY=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
fi

mkdir -p "$STATE_DIR"
is_running && die "a cluster is already running with STATE_DIR=$STATE_DIR (stop it with: $0 stop)"
rm -rf "$STATE_DIR/nginx"
rm -f "$STATE_DIR"/*.log "$STATE_DIR"/*.pid
echo $$ >"$SCRIPT_PID_FILE"

# ---------------------------------------------------------------- processes we own
# Each child runs in its own session (setsid), so a Ctrl-C in the terminal reaches only
# this script, which then stops the children in order: the nodes first (their clients get
# a 1001 close through nginx), then nginx, then Redis. Only these pids are signalled.
CHILD_PIDS=()
CHILD_NAMES=()

start_child() {  # start_child NAME COMMAND...; the child's output goes to STATE_DIR/NAME.log
    local name=$1
    shift
    setsid "$@" >>"$STATE_DIR/$name.log" 2>&1 </dev/null &
    CHILD_PIDS+=($!)
    CHILD_NAMES+=("$name")
    echo $! >"$STATE_DIR/$name.pid"
}

# shellcheck source=../scripts/lib/stop-process.sh
source "$ROOT/scripts/lib/stop-process.sh"
stop_child() {  # stop_child INDEX GRACE-SECONDS
    stop_process "${CHILD_PIDS[$1]}" "$2" "${CHILD_NAMES[$1]} (pid ${CHILD_PIDS[$1]})"
}

cleanup() {
    local status=$? index
    trap - EXIT INT TERM
    if [ ${#CHILD_PIDS[@]} -gt 0 ]; then
        say "stopping"
        # Started in the order redis, node-a, node-b, nginx; stopped nodes, nginx, redis.
        for name in node-a node-b nginx redis; do
            for index in "${!CHILD_NAMES[@]}"; do
                [ "${CHILD_NAMES[$index]}" = "$name" ] && stop_child "$index" 30
            done
        done
    fi
    rm -f "$SCRIPT_PID_FILE" "$STATE_DIR"/*.pid
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail_with_log() {  # fail_with_log NAME MESSAGE
    say "$2; last lines of $STATE_DIR/$1.log:"
    tail -n 30 "$STATE_DIR/$1.log" >&2 || true
    exit 1
}

child_alive() {  # child_alive NAME
    local index
    for index in "${!CHILD_NAMES[@]}"; do
        [ "${CHILD_NAMES[$index]}" = "$1" ] && { kill -0 "${CHILD_PIDS[$index]}" 2>/dev/null; return; }
    done
    return 1
}

# ---------------------------------------------------------------- redis
redis_answers() {
    local reply
    reply=$(timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" && printf "PING\r\n" >&3 && head -c 5 <&3' "$REDIS_PORT" 2>/dev/null) || return 1
    [ "$reply" = "+PONG" ]
}

start_child redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$STATE_DIR" --loglevel warning
for _ in $(seq 100); do
    redis_answers && break
    child_alive redis || fail_with_log redis "redis-server exited"
    sleep 0.1
done
redis_answers || fail_with_log redis "redis-server does not answer PING on port $REDIS_PORT"

# ---------------------------------------------------------------- the two nodes
start_node() {  # start_node NAME PORT BACKEND-PORT
    SNORKY_BACKEND_KEY=$BACKEND_KEY start_child "$1" "$SNORKY" serve \
        --config "$ROOT/deploy/snorky.toml" \
        --host 127.0.0.1 --port "$2" --backend-host 127.0.0.1 --backend-port "$3" \
        --workers "$WORKERS" --redis "redis://127.0.0.1:$REDIS_PORT" --log-level "$LOG_LEVEL"
}

wait_for_node() {  # wait_for_node NAME: until its supervisor logs that every worker is ready
    for _ in $(seq 600); do
        grep -q "cluster ready" "$STATE_DIR/$1.log" 2>/dev/null && return 0
        child_alive "$1" || fail_with_log "$1" "$1 exited during startup"
        sleep 0.1
    done
    fail_with_log "$1" "$1 not ready within 60 s"
}

start_node node-a "$NODE_A_PORT" "$NODE_A_BACKEND_PORT"
start_node node-b "$NODE_B_PORT" "$NODE_B_BACKEND_PORT"
wait_for_node node-a
wait_for_node node-b

# ---------------------------------------------------------------- nginx
# deploy/nginx/snorky-lb.conf as shipped, with its example addresses replaced by the two
# local nodes, inside a minimal nginx.conf whose every path is under STATE_DIR.
NGINX_DIR="$STATE_DIR/nginx"
mkdir -p "$NGINX_DIR/tmp"
replace_once() {  # replace_once FILE FROM TO: fails when FROM is not there exactly once
    local count
    count=$(grep -cF -- "$2" "$1" || true)
    [ "$count" = 1 ] || die "expected '$2' once in deploy/nginx/snorky-lb.conf, found it $count times"
    local text
    text=$(<"$1")
    printf '%s\n' "${text/"$2"/"$3"}" >"$1"
}
cp "$ROOT/deploy/nginx/snorky-lb.conf" "$NGINX_DIR/snorky-lb.conf"
replace_once "$NGINX_DIR/snorky-lb.conf" "server 10.0.0.11:5800" "server 127.0.0.1:$NODE_A_PORT"
replace_once "$NGINX_DIR/snorky-lb.conf" "server 10.0.0.12:5800" "server 127.0.0.1:$NODE_B_PORT"
replace_once "$NGINX_DIR/snorky-lb.conf" "listen 80;" "listen 127.0.0.1:$LB_PORT;"

cat >"$NGINX_DIR/nginx.conf" <<CONF
# Generated by deploy/two-nodes.sh.
worker_processes 1;
pid $NGINX_DIR/nginx.pid;
error_log $NGINX_DIR/error.log notice;
daemon off;

events {
    worker_connections 4096;
}

http {
    access_log $NGINX_DIR/access.log;
    client_body_temp_path $NGINX_DIR/tmp/client_body;
    proxy_temp_path $NGINX_DIR/tmp/proxy;
    fastcgi_temp_path $NGINX_DIR/tmp/fastcgi;
    uwsgi_temp_path $NGINX_DIR/tmp/uwsgi;
    scgi_temp_path $NGINX_DIR/tmp/scgi;

    include $NGINX_DIR/snorky-lb.conf;
}
CONF
# Started by root, nginx's workers run as an unprivileged user that must reach its temp
# directories.
if [ "$(id -u)" = 0 ]; then chmod 0711 "$STATE_DIR" "$NGINX_DIR"; fi
"$NGINX" -t -q -p "$NGINX_DIR" -e "$NGINX_DIR/error.log" -c "$NGINX_DIR/nginx.conf" >>"$STATE_DIR/nginx.log" 2>&1 \
    || fail_with_log nginx "nginx rejects $NGINX_DIR/nginx.conf"
start_child nginx "$NGINX" -p "$NGINX_DIR" -e "$NGINX_DIR/error.log" -c "$NGINX_DIR/nginx.conf"

lb_answers() {  # whether a request through nginx reaches a node (Snorky answers 426 on /ws)
    local reply
    reply=$(timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" && printf "GET /ws HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" >&3 && head -n1 <&3' "$LB_PORT" 2>/dev/null) || return 1
    [[ $reply == *" 426 "* ]]
}
for _ in $(seq 100); do
    lb_answers && break
    child_alive nginx || fail_with_log nginx "nginx exited during startup"
    sleep 0.1
done
lb_answers || fail_with_log nginx "nginx on port $LB_PORT does not reach the nodes"

# ---------------------------------------------------------------- running
cat <<EOF
two-node Snorky cluster ready
  clients (through nginx):  ws://127.0.0.1:$LB_PORT/ws
  node A:  ws://127.0.0.1:$NODE_A_PORT/ws   backend http://127.0.0.1:$NODE_A_BACKEND_PORT/backend
  node B:  ws://127.0.0.1:$NODE_B_PORT/ws   backend http://127.0.0.1:$NODE_B_BACKEND_PORT/backend
  redis:   redis://127.0.0.1:$REDIS_PORT
  backend key: $BACKEND_KEY
  logs: $STATE_DIR/{redis,node-a,node-b,nginx}.log
Publish on either node's backend, e.g.
  curl -s http://127.0.0.1:$NODE_B_BACKEND_PORT/backend -H 'X-Backend-Key: $BACKEND_KEY' \\
    -d '{"service":"pubsub_backend","message":{"command":"publish","params":{"channel":"news","message":"hi"}}}'
Ctrl-C (or $0 stop) stops everything.
EOF

# Until a signal arrives (the traps stop everything) or a child dies on its own.
set +e
wait -n "${CHILD_PIDS[@]}"
for index in "${!CHILD_NAMES[@]}"; do
    kill -0 "${CHILD_PIDS[$index]}" 2>/dev/null || say "${CHILD_NAMES[$index]} exited unexpectedly (see $STATE_DIR/${CHILD_NAMES[$index]}.log)"
done
exit 1
