#!/bin/bash
# pgo.sh: how the profile-guided builds of this folder were made (ws_server and the ceiling).
# Needs an llvm-profdata that reads rustc's raw profiles (rustc 1.95 / LLVM 22: Debian 12's
# llvm-19 does: apt-get install llvm-19). Run from the repository root.
set -eu
PROFDATA=${PROFDATA:-/usr/lib/llvm-19/bin/llvm-profdata}
LOADGEN=${LOADGEN:-target/release/loadgen}
DATA=/tmp/pgo-data; rm -rf "$DATA"; mkdir -p "$DATA"
LIM="--rate-limit 0 --max-connections 0 --max-connections-per-ip 0 --max-pending-requests 0 --max-pending-requests-per-ip 0 --max-not-logged-in 0 --max-not-logged-in-per-ip 0 --max-total-queued-mib 0"
# 1. Instrumented builds.
CARGO_TARGET_DIR=/tmp/pgo-gen RUSTFLAGS="-Cprofile-generate=$DATA" \
  cargo build --release -p signaling-examples --example ws_server -p signaling-benches --bin ceiling
# 2. The closed-loop relay against each (the ceiling stops by itself with --exit-after, so that
#    its profile is written; it was a temporary change of the same effect when these were made).
LLVM_PROFILE_FILE=$DATA/ws-%p-%m.profraw taskset -c 0 /tmp/pgo-gen/release/examples/ws_server --addr 127.0.0.1:18990 $LIM & pid=$!
sleep 1; taskset -c 1 "$LOADGEN" --url ws://127.0.0.1:18990/ws relay --pairs 100 --window 16 --warmup 1 --duration 8 >/dev/null
taskset -c 1 "$LOADGEN" --url ws://127.0.0.1:18990/ws pingpong --pairs 1 --duration 2 >/dev/null
kill -INT $pid; wait $pid || true
LLVM_PROFILE_FILE=$DATA/ceil-%p-%m.profraw taskset -c 0 /tmp/pgo-gen/release/ceiling --addr 127.0.0.1:18993 --exit-after 14 & pid=$!
sleep 1; taskset -c 1 "$LOADGEN" --url ws://127.0.0.1:18993/ws relay --pairs 100 --window 16 --warmup 1 --duration 8 >/dev/null
wait $pid || true
# 3. One profile each, and the builds that use it (separate target directories).
"$PROFDATA" merge -o /tmp/pgo-ws.profdata "$DATA"/ws-*.profraw
"$PROFDATA" merge -o /tmp/pgo-ceil.profdata "$DATA"/ceil-*.profraw
CARGO_TARGET_DIR=/tmp/pgo-ws RUSTFLAGS="-Cprofile-use=/tmp/pgo-ws.profdata" \
  cargo build --release -p signaling-examples --example ws_server
CARGO_TARGET_DIR=/tmp/pgo-ceil RUSTFLAGS="-Cprofile-use=/tmp/pgo-ceil.profdata" \
  cargo build --release -p signaling-benches --bin ceiling
