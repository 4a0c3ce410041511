#!/bin/bash
# cpu.sh ROUNDS BIN... : server CPU µs per relayed message (loadgen's server_cpu_us_per_msg), interleaved
rounds=$1; shift
for r in $(seq $rounds); do for b in "$@"; do
  port=$((18950 + RANDOM % 40)); LIM="--rate-limit 0 --max-connections 0 --max-connections-per-ip 0 --max-pending-requests 0 --max-pending-requests-per-ip 0 --max-not-logged-in 0 --max-not-logged-in-per-ip 0 --max-total-queued-mib 0"; [[ $b == *ceiling ]] && LIM=""
  taskset -c 0 $b --addr 127.0.0.1:$port $LIM >/dev/null 2>&1 & pid=$!
  for i in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  out=$(taskset -c 1 /work/target-benches/release/loadgen --url ws://127.0.0.1:$port/ws --server-pid $pid relay --pairs 100 ${CASE:---window 16} --warmup 1 --duration 4 2>/dev/null | tail -1)
  kill $pid; wait $pid 2>/dev/null
  echo "$r $(basename $b) $(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); c=d.get("server_cpu_us_per_msg",{}); print(int(d["msgs_per_s"]), c.get("total"), c.get("user"), c.get("system"), d.get("server_cpu_pct"), d.get("other_cpu_pct"))' "$out")"
done; done
