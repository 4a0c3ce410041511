#!/usr/bin/env bash
# cgr.sh LABEL BIN: callgrind of a server (BIN) under the paced relay (100 pairs, RATE msgs/s
# offered, default 1000; DUR measured seconds, default 6), on core 0, the load generator on
# core 1. Prints the messages received and the instructions. Run it with DUR=2 and DUR=8 and
# take the difference of both to leave out start-up and logins (what the folder's README does).
# VGOPTS="--cache-sim=yes" adds the simulated cache misses (the `summary:` line of OUT).
#   LOADGEN (default target/release/loadgen), OUT (default /tmp/cgr): where the profiles go.
set -u
label=$1 bin=$2
LOADGEN=${LOADGEN:-target/release/loadgen}
OUT=${OUT:-/tmp/cgr}
mkdir -p "$OUT"
port=$((18600 + RANDOM % 300))
LIMITS="--rate-limit 0 --max-connections 0 --max-connections-per-ip 0 --max-pending-requests 0 --max-pending-requests-per-ip 0 --max-not-logged-in 0 --max-not-logged-in-per-ip 0 --max-total-queued-mib 0"
[[ $bin == *ceiling ]] && LIMITS=""
taskset -c 0 valgrind --tool=callgrind ${VGOPTS:-} --callgrind-out-file="$OUT/$label.out" "$bin" --addr 127.0.0.1:$port $LIMITS >"$OUT/$label.log" 2>&1 &
pid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done
out=$(taskset -c 1 "$LOADGEN" --url ws://127.0.0.1:$port/ws relay --pairs 100 --window 64 --warmup 1 --duration "${DUR:-6}" --offered-rate "${RATE:-1000}" 2>/dev/null | tail -1)
kill -INT $pid; sleep 1; kill $pid 2>/dev/null; wait $pid
recv=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["received"])' "$out")
echo "$label received=$recv $(grep -m1 '^summary' "$OUT/$label.out")"
