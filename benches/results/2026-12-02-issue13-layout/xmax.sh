#!/bin/bash
# xmax.sh N "PREFIX" : cross-node closed-loop relay N times (fresh redis + 2 nodes on core 0 each time); PREFIX wraps nodes and redis (e.g. "chrt -f 10")
WS=${WS:-target/release/examples/ws_server}
LG=${LG:-target/release/loadgen}
LIM="--rate-limit 0 --max-connections 0 --max-connections-per-ip 0 --max-pending-requests 0 --max-pending-requests-per-ip 0 --max-not-logged-in 0 --max-not-logged-in-per-ip 0 --max-total-queued-mib 0"
for i in $(seq $1); do
  rp=$((26400 + RANDOM % 100)); pa=$((18400 + RANDOM % 50)); pb=$((18460 + RANDOM % 50))
  $2 taskset -c ${RCORE:-0} redis-server --port $rp --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 & r=$!
  sleep 0.3
  $2 taskset -c 0 $WS --addr 127.0.0.1:$pa $LIM --redis redis://127.0.0.1:$rp --node-id xa$i >/dev/null 2>&1 & a=$!
  $2 taskset -c 0 $WS --addr 127.0.0.1:$pb $LIM --redis redis://127.0.0.1:$rp --node-id xb$i >/dev/null 2>&1 & b=$!
  for p in $pa $pb; do for k in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done; done
  out=$(taskset -c 1 $LG --url ws://127.0.0.1:$pa/ws,ws://127.0.0.1:$pb/ws --server-pid $a,$b --redis-pid $r --spread cross relay --pairs 100 --window 16 --warmup 0.3 --duration ${DUR:-2} 2>/dev/null | tail -1)
  kill $a $b; sleep 0.2; kill $r; wait $a $b $r 2>/dev/null
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); l=d["latency_us"]; print(sys.argv[2], d.get("msgs_per_s"), "p50",l["p50"],"p99",l["p99"],"steal",d.get("steal_pct_each"),"lost",d.get("lost"))' "$out" $(basename $WS)
done
