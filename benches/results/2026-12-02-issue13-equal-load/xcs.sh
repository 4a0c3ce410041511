#!/bin/bash
# xcs.sh RATE [N]: cross-node paced relay; per process (node a, node b, redis): CPU µs and context switches per relayed message
# RCORE=C: the core Redis is pinned to (default 0, with the nodes); DUR=S: seconds measured (default 3)
WS=${WS:-target/release/examples/ws_server}
LG=${LOADGEN:-target/release/loadgen}
LIM="--rate-limit 0 --max-connections 0 --max-connections-per-ip 0 --max-pending-requests 0 --max-pending-requests-per-ip 0 --max-not-logged-in 0 --max-not-logged-in-per-ip 0 --max-total-queued-mib 0"
snap() { # pid -> "ticks vol nonvol"
  local t=$(awk '{print $14+$15}' /proc/$1/stat); local v=0 n=0
  for s in /proc/$1/task/*/status; do v=$((v+$(awk '/^voluntary_ctxt/{print $2}' $s))); n=$((n+$(awk '/^nonvoluntary_ctxt/{print $2}' $s))); done
  echo "$t $v $n"; }
for i in $(seq ${2:-1}); do
  rp=$((26400 + RANDOM % 100)); pa=$((18400 + RANDOM % 50)); pb=$((18460 + RANDOM % 50))
  taskset -c ${RCORE:-0} redis-server --port $rp --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 & r=$!
  sleep 0.3
  taskset -c 0 $WS --addr 127.0.0.1:$pa $LIM --redis redis://127.0.0.1:$rp --node-id xa$i >/dev/null 2>&1 & a=$!
  taskset -c 0 $WS --addr 127.0.0.1:$pb $LIM --redis redis://127.0.0.1:$rp --node-id xb$i >/dev/null 2>&1 & b=$!
  for p in $pa $pb; do for k in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done; done
  sa=$(snap $a); sb=$(snap $b); sr=$(snap $r)
  out=$(taskset -c 1 $LG --url ws://127.0.0.1:$pa/ws,ws://127.0.0.1:$pb/ws --server-pid $a,$b --redis-pid $r --spread ${SPREAD:-cross} relay --pairs 100 --window 64 --warmup 0.3 --duration ${DUR:-3} --offered-rate $1 2>/dev/null | tail -1)
  ea=$(snap $a); eb=$(snap $b); er=$(snap $r)
  kill $a $b; sleep 0.2; kill $r; wait $a $b $r 2>/dev/null
  python3 - "$out" "$sa" "$ea" "$sb" "$eb" "$sr" "$er" <<'PY'
import json,sys
d=json.loads(sys.argv[1]); n=d["received"]; l=d["latency_us"]
parts=[]
for name,s,e in (("a",sys.argv[2],sys.argv[3]),("b",sys.argv[4],sys.argv[5]),("redis",sys.argv[6],sys.argv[7])):
    s=list(map(int,s.split())); e=list(map(int,e.split()))
    parts.append(f"{name}: cpu {(e[0]-s[0])*1e4/n:.1f}us vcs {(e[1]-s[1])/n:.2f} ics {(e[2]-s[2])/n:.2f}")
print(f"msgs {n} p50 {l['p50']} p99 {l['p99']} steal {d.get('steal_pct_each')} | "+" | ".join(parts))
PY
done
