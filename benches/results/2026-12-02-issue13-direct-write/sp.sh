#!/bin/bash
# sp.sh RATE N: one ws_server (no Redis), paced relay; p50/p99, steal, CPU and voluntary switches per message
WS=${WS:-target/release/examples/ws_server}; LG=${LOADGEN:-target/release/loadgen}
LIM="--rate-limit 0 --max-connections 0 --max-connections-per-ip 0 --max-pending-requests 0 --max-pending-requests-per-ip 0 --max-not-logged-in 0 --max-not-logged-in-per-ip 0 --max-total-queued-mib 0"
for i in $(seq ${2:-1}); do
  pa=$((18400 + RANDOM % 50))
  taskset -c 0 $WS --addr 127.0.0.1:$pa $LIM >/dev/null 2>&1 & a=$!
  for k in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$pa) 2>/dev/null && break; sleep 0.1; done
  s=$(awk '{print $14+$15}' /proc/$a/stat); sv=$(awk '/^voluntary_ctxt/{print $2}' /proc/$a/task/*/status | paste -sd+ | bc)
  out=$(taskset -c 1 $LG --url ws://127.0.0.1:$pa/ws --server-pid $a relay --pairs ${PAIRS:-100} --window 64 --warmup 0.3 --duration ${DUR:-5} --offered-rate $1 $LGX 2>/dev/null | tail -1)
  e=$(awk '{print $14+$15}' /proc/$a/stat); ev=$(awk '/^voluntary_ctxt/{print $2}' /proc/$a/task/*/status | paste -sd+ | bc)
  kill $a; wait $a 2>/dev/null
  python3 -c "
import json,sys
d=json.loads(sys.argv[1]); n=d['received']; l=d['latency_us']
print(f\"rate $1 msgs {n} p50 {l['p50']} p90 {l.get('p90')} p99 {l['p99']} steal {d.get('steal_pct_each')} lag99 {d.get('send_lag_us',{}).get('p99')} cpu {($e-$s)*1e4/n:.1f}us vcs {($ev-$sv)/n:.2f}\")" "$out"
done
