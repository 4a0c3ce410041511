#!/usr/bin/env bash
# run.sh LABEL SERVER_BIN PORT [server flags...] -- [loadgen workload args...]
set -u
label=$1; bin=$2; port=$3; shift 3
sflags=(); while [ $# -gt 0 ] && [ "$1" != -- ]; do sflags+=("$1"); shift; done; shift
ulimit -n "$(ulimit -Hn)"
D=/work/wt-mem/target/hoard
RUST_LOG=warn taskset -c 0 "$bin" --addr 127.0.0.1:$port --max-connections-per-ip 0 --max-not-logged-in-per-ip 0 \
  --max-pending-requests-per-ip 0 --rate-limit 0 "${sflags[@]}" >"$D/server-$label.log" 2>&1 &
pid=$!
for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
taskset -c 1 timeout 300 /work/wt-mem/target/release/loadgen --url ws://127.0.0.1:$port/ --label "$label" --case "$label" --server-pid $pid "$@" 2>>"$D/loadgen-$label.log" | tail -1
kill $pid; wait $pid 2>/dev/null
