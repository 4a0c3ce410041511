#!/bin/bash
# steal-run.sh N BIN : the paced relay (10,000 msgs/s, 10 pairs) N times against BIN; p50/p99 and
# the steal ticks (1/100 s) of each core during each run. Uses ab.sh of the readahead folder.
AB=$(dirname "$0")/../2026-12-01-issue13-readahead/ab.sh
for i in $(seq "$1"); do
  a0=$(awk '$1=="cpu0"{print $9}' /proc/stat); b0=$(awk '$1=="cpu1"{print $9}' /proc/stat)
  out=$("$AB" 1 "relay --pairs 10 --window 64 --warmup 0.3 --duration 2 --offered-rate 10000" "x||$2|")
  a1=$(awk '$1=="cpu0"{print $9}' /proc/stat); b1=$(awk '$1=="cpu1"{print $9}' /proc/stat)
  echo "$(echo "$out" | awk '{print "p50",$5,"p99",$7}') steal_cpu0 $((a1-a0)) steal_cpu1 $((b1-b0))"
done
