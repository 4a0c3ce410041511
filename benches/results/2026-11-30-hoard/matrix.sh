#!/usr/bin/env bash
# Two rounds: each allocator x budget, interleaved; then idle-connection RSS.
cd /work/wt-mem/target/hoard
port=18500
for round in 1 2; do
  for mib in 256 64; do
    for a in system jemalloc jemalloc-bg mimalloc; do
      port=$((port+1))
      echo "$(date +%T) $a $mib r$round load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
      if [ $a = jemalloc-bg ]; then export _RJEM_MALLOC_CONF=background_thread:true; else unset _RJEM_MALLOC_CONF; fi
      ./run.sh "hoard-$a-$mib-r$round" ./ws_server-${a%-bg} $port --max-total-queued-mib $mib -- \
        hoard --victims 1000 --size 16384 --duration 10 --settle 15 >>hoard.jsonl
      sleep 2
    done
  done
done
for round in 1 2; do
  for a in system jemalloc jemalloc-bg mimalloc; do
    port=$((port+1))
    if [ $a = jemalloc-bg ]; then export _RJEM_MALLOC_CONF=background_thread:true; else unset _RJEM_MALLOC_CONF; fi
    ./run.sh "logins-$a-r$round" ./ws_server-${a%-bg} $port -- logins --count 10000 --hold 1 >>logins.jsonl
    sleep 2
  done
done
echo "$(date +%T) done" >&2
