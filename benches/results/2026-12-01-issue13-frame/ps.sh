#!/bin/bash
# ps.sh BIN : syscalls per relayed message (perf stat tracepoints), closed-loop relay
bin=$1; port=$((18900 + RANDOM % 90))
LIMITS="--rate-limit 0 --max-connections 0 --max-connections-per-ip 0 --max-pending-requests 0 --max-pending-requests-per-ip 0 --max-not-logged-in 0 --max-not-logged-in-per-ip 0 --max-total-queued-mib 0"
[[ $bin == *ceiling ]] && LIMITS=""
taskset -c 0 $bin --addr 127.0.0.1:$port $LIMITS >/dev/null 2>&1 & pid=$!
for i in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
(sleep 1.5; perf stat -x, -e 'raw_syscalls:sys_enter,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_writev,syscalls:sys_enter_write,syscalls:sys_enter_read,syscalls:sys_enter_futex' -p $pid -o /tmp/ps.$pid sleep 2) &
out=$(taskset -c 1 /work/target-benches/release/loadgen --url ws://127.0.0.1:$port/ws relay --pairs 100 ${CASE:---window 16} --warmup 1 --duration 3 2>/dev/null | tail -1)
wait %2; kill $pid; wait $pid 2>/dev/null
mps=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["msgs_per_s"])' "$out")
python3 - $mps /tmp/ps.$pid $(basename $bin) <<'PY'
import sys
mps=float(sys.argv[1]); m=mps*2
parts=[]
for l in open(sys.argv[2]):
    f=l.strip().split(',')
    if len(f)>2 and f[0].replace('.','').isdigit():
        parts.append("%s=%.3f"%(f[2].split(':')[-1].replace('sys_enter_',''), float(f[0])/m))
print("%-10s msgs/s=%d %s"%(sys.argv[3], mps, " ".join(parts)))
PY
