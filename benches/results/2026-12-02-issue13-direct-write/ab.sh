#!/bin/bash
# ab.sh ROUNDS "LABEL=BIN ..." "CASE ARGS" : interleaved; per run: msgs/s, CPU us/msg (user/sys), p50/p99, steal
ROUNDS=$1; BINS=$2; CASE=$3; LG=${LOADGEN:-target/release/loadgen}
LIM="--rate-limit 0 --max-connections 0 --max-connections-per-ip 0 --max-pending-requests 0 --max-pending-requests-per-ip 0 --max-not-logged-in 0 --max-not-logged-in-per-ip 0 --max-total-queued-mib 0"
for r in $(seq $ROUNDS); do
 for lb in $BINS; do
  label=${lb%%=*}; bin=${lb#*=}
  p=$((18400 + RANDOM % 200))
  case $label in *ceiling*) args="--addr 127.0.0.1:$p";; *basic*) args="--addr 127.0.0.1:$p $LIM";; *) args="--addr 127.0.0.1:$p $LIM";; esac
  nice -n -10 taskset -c 0 $bin $args >/dev/null 2>&1 & a=$!
  for k in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
  sleep 0.3
  read su ss < <(awk '{print $14, $15}' /proc/$a/stat)
  out=$(nice -n -10 taskset -c 1 $LG --url ws://127.0.0.1:$p/ws --server-pid $a $CASE 2>/dev/null | tail -1)
  read eu es < <(awk '{print $14, $15}' /proc/$a/stat)
  kill $a; wait $a 2>/dev/null
  python3 -c "
import json,sys
d=json.loads(sys.argv[1]); n=d.get('received') or d.get('round_trips') or 1; l=d.get('latency_us') or d.get('rtt_us') or {}
u=($eu-$su)*1e4/n; s=($es-$ss)*1e4/n
print(f\"r$r {sys.argv[2]:12s} rate {d.get('msgs_per_s', d.get('round_trips_per_s',0)):>9} cpu {u+s:5.2f} (u {u:4.2f} s {s:4.2f}) p50 {l.get('p50')} p99 {l.get('p99')} steal {d.get('steal_pct_each')}\")" "$out" "$label"
 done
done
