#!/usr/bin/env bash
# cg.sh LABEL ENV BIN : callgrind instructions per relayed message, closed loop
# (VGOPTS: more valgrind options, e.g. "--cache-sim=yes --branch-sim=yes")
label=$1 envs=$2 bin=$3
port=$((18600 + RANDOM % 300))
LIMITS="--rate-limit 0 --max-connections 0 --max-connections-per-ip 0 --max-pending-requests 0 --max-pending-requests-per-ip 0 --max-not-logged-in 0 --max-not-logged-in-per-ip 0 --max-total-queued-mib 0"
[[ $bin == *ceiling ]] && LIMITS=""
env $envs taskset -c 0 valgrind --tool=callgrind $VGOPTS --callgrind-out-file=/work/cg/$label.out $bin --addr 127.0.0.1:$port $LIMITS $EXTRA >/work/cg/$label.log 2>&1 &
pid=$!
for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done
out=$(taskset -c 1 /work/target-benches/release/loadgen --url ws://127.0.0.1:$port/ws relay --pairs 100 --window 16 --warmup 1 --duration 6 2>/dev/null | tail -1)
kill -INT $pid; sleep 1; kill $pid 2>/dev/null; wait $pid
recv=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["received"])' "$out")
total=$(grep -m1 "^summary\|^totals" /work/cg/$label.out | awk '{print $2}')
echo "$label received=$recv instr=$total per_msg=$((total / recv))"
