#!/bin/bash
# pr.sh LABEL BIN : perf record (cpu-clock) of the server under the closed-loop relay
label=$1; bin=$2; port=$((18900 + RANDOM % 90))
LIMITS="--rate-limit 0 --max-connections 0 --max-connections-per-ip 0 --max-pending-requests 0 --max-pending-requests-per-ip 0 --max-not-logged-in 0 --max-not-logged-in-per-ip 0 --max-total-queued-mib 0"
[[ $bin == *ceiling ]] && LIMITS=""
taskset -c 0 $bin --addr 127.0.0.1:$port $LIMITS >/dev/null 2>&1 & pid=$!
for i in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
(sleep 1.5; perf record -F 4999 -e cpu-clock -p $pid -o /work/cg/$label.perf sleep 2 2>/dev/null >/dev/null) &
out=$(taskset -c 1 /work/target-benches/release/loadgen --url ws://127.0.0.1:$port/ws relay --pairs 100 --window 16 --warmup 1 --duration 3 2>/dev/null | tail -1)
wait %2; kill $pid; wait $pid 2>/dev/null
echo "$label $(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["msgs_per_s"])' "$out")"
