# Shared by the scripts that start servers (bench/compare.sh, bench/soak.sh,
# deploy/two-nodes.sh); source it after defining `say MESSAGE`.

# stop_process PID GRACE-SECONDS LABEL [group]
#
# Asks PID to stop with SIGTERM (its whole process group with `group`: every process
# these scripts start leads its own group), waits up to GRACE seconds, then kills the
# group. Reaps PID. Returns at once if it has already exited.
stop_process() {
    local pid=$1 grace=$2 label=$3 target=$1
    [ "${4:-}" = group ] && target="-$1"
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM -- "$target" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq $((grace * 10))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$label did not stop within ${grace} s; killing its process group"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
