#!/usr/bin/env bash
# usage: run.sh BIN OUTDIR [seconds] ; cross-node relay_max with perf on both nodes
set -u
BIN=$1; OUT=$2; DUR=${3:-8}
mkdir -p $OUT
LOADGEN=/work/target-redis/release/loadgen
RP=26391
PR=(setsid bash -c 'echo -10 >/proc/self/autogroup; exec nice -n -10 "$@"' prio)
"${PR[@]}" taskset -c 0 redis-server --port $RP --bind 127.0.0.1 --save "" --appendonly no >$OUT/redis.log 2>&1 &
sleep 0.5
RPID=$(pgrep -f "redis-server 127.0.0.1:$RP" | head -1)
LIM="--rate-limit 0 --max-connections 0 --max-connections-per-ip 0 --max-pending-requests 0 --max-pending-requests-per-ip 0 --max-not-logged-in 0 --max-not-logged-in-per-ip 0 --max-total-queued-mib 0"
"${PR[@]}" taskset -c 0 $BIN $LIM --addr 127.0.0.1:18391 --redis redis://127.0.0.1:$RP --node-id prof-a >$OUT/a.log 2>&1 &
"${PR[@]}" taskset -c 0 $BIN $LIM --addr 127.0.0.1:18392 --redis redis://127.0.0.1:$RP --node-id prof-b >$OUT/b.log 2>&1 &
sleep 1
A=$(pgrep -f "addr 127.0.0.1:18391" | grep -v bash | tail -1); B=$(pgrep -f "addr 127.0.0.1:18392" | tail -1)
echo "redis $RPID a $A b $B"
PA=""; PB=""
if [ "${PERF:-1}" = 1 ]; then
perf record -F 2000 -g --call-graph dwarf,16384 -p $A -o $OUT/a.data -- sleep $((DUR)) >$OUT/perf-a.log 2>&1 &
PA=$!
perf record -F 2000 -g --call-graph dwarf,16384 -p $B -o $OUT/b.data -- sleep $((DUR)) >$OUT/perf-b.log 2>&1 &
PB=$!
fi
"${PR[@]}" taskset -c 1 $LOADGEN --url ws://127.0.0.1:18391/ws --url ws://127.0.0.1:18392/ws --spread cross --label x --case relay_max --server-pid $A,$B --redis-pid $RPID ${CASE_ARGS:-relay --pairs 100 --window 16 --warmup 0.5 --duration $((DUR-1))} > $OUT/loadgen.json 2>$OUT/loadgen.log
[ -n "$PA" ] && wait $PA $PB 2>/dev/null
kill $A $B; sleep 0.3; kill $RPID
wait 2>/dev/null
grep -oE '"(msgs_per_s|server_cpu_pct|server_cpu_pct_each|redis_cpu_pct|other_cpu_pct|p50|p99)":(\[[^]]*\]|[0-9.]+)' $OUT/loadgen.json | awk -F'":' '!seen[$1]++' | tr '\n' ' '; echo
