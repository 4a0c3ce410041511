#!/usr/bin/env bash
# ab.sh ROUNDS CASE_ARGS -- variant specs "label|env|binary|extra args" ...
# Interleaved A/B of relay throughput: server on core 0, loadgen on core 1.
set -u
ROUNDS=$1; shift
CASE=$1; shift
LOADGEN=${LOADGEN:-/work/target-benches/release/loadgen}
LIMITS="--rate-limit 0 --max-connections 0 --max-connections-per-ip 0 --max-pending-requests 0 --max-pending-requests-per-ip 0 --max-not-logged-in 0 --max-not-logged-in-per-ip 0 --max-total-queued-mib 0"
port=18400
for r in $(seq 1 $ROUNDS); do
  for spec in "$@"; do
    IFS='|' read -r label envs bin extra <<<"$spec"
    port=$((port+1))
    if [[ $bin == *ceiling ]]; then args="--addr 127.0.0.1:$port"; else args="--addr 127.0.0.1:$port $LIMITS $extra"; fi
    env $envs taskset -c 0 $bin $args >/tmp/ab-server.log 2>&1 &
    pid=$!
    for i in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
    out=$(taskset -c 1 $LOADGEN --url ws://127.0.0.1:$port/ws --label $label --server-pid $pid $CASE 2>/dev/null | tail -1)
    kill $pid; wait $pid 2>/dev/null
    echo "$r $label $(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); l=d.get("latency_us",{}); print(d.get("msgs_per_s"), "p50", l.get("p50"), "p99", l.get("p99"), "lost", d.get("lost"), "srvcpu", d.get("server_cpu_pct"), "us_per_msg", d.get("server_cpu_us_per_msg",{}).get("total"), "steal", d.get("steal_pct_each"))' "$out")"
  done
done
