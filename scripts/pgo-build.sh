#!/usr/bin/env bash
# Builds servers profile-guided (PGO): an instrumented build, a training run of
# the load generator against each server, one merged profile, and the build
# that uses it. On this project's 2-core machine a profile-guided ws_server
# spends 10-17 % less CPU per relayed message than the plain build (its hot code
# no longer overflows the 32 KiB instruction cache; docs/performance.md,
# "Profile-guided builds").
#
#   OUT/<target>          the profile-guided binaries
#   OUT/merged.profdata   the profile they were built with
#   OUT/logs/             build, server and load generator output
#
# Usage: scripts/pgo-build.sh [--targets "ws_server basic_server ceiling"]
#                             [--out DIR] [--server-args "ARGS"] [--server-cores LIST]
#                             [--duration SECS] [--profdata PATH] [--bolt]
#   --targets T       what to build: ws_server, basic_server (the examples) and
#                     ceiling (benches' bare forwarder, for a comparison built
#                     alike). Default: ws_server basic_server
#   --out DIR         where the binaries go (default TARGET_DIR/pgo)
#   --server-args A   flags the training runs give our servers. Default: every
#                     limit off (--rate-limit 0 --max-connections 0 ...), as
#                     scripts/bench.sh runs them. For a deployment, give its own
#                     flags (limits set but not tripped by the load, --redis ...)
#                     so that the checks it runs are profiled as hot
#   --server-cores L  the cores the servers run on during training (taskset -c;
#                     default 0 when the machine has 2 or more, and the load
#                     generator on the others; with L the load generator is not
#                     pinned). The runtime follows: one core is the
#                     current-thread runtime, more the multi-threaded one
#   --duration SECS   seconds of the closed-loop relay, the main training case
#                     (default 8)
#   --profdata PATH   the llvm-profdata to merge with. It must read the raw
#                     profiles of this rustc's LLVM (`rustc -vV`). Default: the
#                     first that does of rustup's llvm-tools component, then
#                     llvm-profdata-NN / /usr/lib/llvm-NN on PATH, newest first
#                     (Debian 12: apt-get install llvm-19; its default llvm, 14,
#                     is too old for rustc 1.95)
#
#   --bolt            then lay each binary out anew with LLVM's BOLT: linked with
#                     its relocations, instrumented by llvm-bolt, trained again,
#                     and rewritten from that profile (another ~6 minutes; needs
#                     llvm-bolt: Debian 12's apt-get install bolt-19). On this
#                     machine it halved ws_server's remaining instruction-cache
#                     misses and took ~6 % off its CPU per message. The
#                     rewritten binaries have no debug info (backtraces show
#                     addresses). A target whose instrumented run fails keeps
#                     its profile-guided build, with a SKIPPED line (so far
#                     basic_server: BOLT 19's runtime cannot write warp's long
#                     function names)
#
# The training: logins (2,000), the closed-loop relay of 100 pairs (plain and
# with resumable sessions), and round trips of 1 and 100 pairs, by
# TARGET_DIR/release/loadgen over loopback. Code it does not run (errors,
# TLS, the cluster unless --server-args has --redis) is laid out as cold: still
# correct, a little slower than in a plain build. The profile favours this
# workload; retrain when the code or the traffic changes.
#
# Honours CARGO_TARGET_DIR (instrumented build in TARGET_DIR/pgo-gen, the
# profile-guided one in TARGET_DIR/pgo-use, so the plain build is untouched).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TARGETS="ws_server basic_server"
OUT=""
SERVER_ARGS="--rate-limit 0 --max-connections 0 --max-connections-per-ip 0 --max-pending-requests 0 --max-pending-requests-per-ip 0 --max-not-logged-in 0 --max-not-logged-in-per-ip 0 --max-total-queued-mib 0"
SERVER_CORES=""
DURATION=8
PROFDATA=""
BOLT=""

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --targets) TARGETS=$2; shift ;;
    --out) OUT=$2; shift ;;
    --server-args) SERVER_ARGS=$2; shift ;;
    --server-cores) SERVER_CORES=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --profdata) PROFDATA=$2; shift ;;
    --bolt) BOLT=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "pgo-build.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
for t in $TARGETS; do
  case $t in
    ws_server|basic_server|ceiling) ;;
    *) echo "pgo-build.sh: targets are ws_server, basic_server, ceiling (not $t)" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-$TARGET_DIR/pgo}
GEN_DIR=$TARGET_DIR/pgo-gen
USE_DIR=$TARGET_DIR/pgo-use
DATA=$GEN_DIR/profraw # the path is built into the instrumented binaries
mkdir -p "$OUT/logs"
log() { echo "pgo-build: $*" >&2; }

# ---- llvm-profdata ----------------------------------------------------------
LLVM_VERSION=$(rustc -vV | awk '/^LLVM version:/ { print $3 }')
candidates=()
if [ -n "$PROFDATA" ]; then
  candidates=("$PROFDATA")
else
  sysroot=$(rustc --print sysroot)
  host=$(rustc -vV | awk '/^host:/ { print $2 }')
  candidates+=("$sysroot/lib/rustlib/$host/bin/llvm-profdata")
  for n in $(seq 30 -1 14); do
    candidates+=("llvm-profdata-$n" "/usr/lib/llvm-$n/bin/llvm-profdata")
  done
  candidates+=(llvm-profdata)
fi
# A raw profile of this rustc to try each candidate on, so that one that cannot
# read them is passed over before the long builds, not after.
PROBE=$OUT/probe
rm -rf "$PROBE" && mkdir -p "$PROBE"
printf 'fn main() {}\n' >"$PROBE/main.rs"
rustc -O -Cprofile-generate="$PROBE" -o "$PROBE/main" "$PROBE/main.rs" 2>"$OUT/logs/probe.log" \
  || { log "rustc cannot build with -Cprofile-generate (see $OUT/logs/probe.log)"; exit 1; }
(cd "$PROBE" && LLVM_PROFILE_FILE="$PROBE/main-%p.profraw" ./main)
MERGE=""
for c in "${candidates[@]}"; do
  command -v "$c" >/dev/null 2>&1 || continue
  if "$c" merge -o "$PROBE/main.profdata" "$PROBE"/main-*.profraw >>"$OUT/logs/probe.log" 2>&1; then
    MERGE=$(command -v "$c"); break
  fi
  log "$c cannot read rustc's raw profiles (LLVM $LLVM_VERSION); trying the next"
done
rm -rf "$PROBE"
if [ -z "$MERGE" ]; then
  log "no llvm-profdata that reads rustc's raw profiles (LLVM $LLVM_VERSION): \
rustup component add llvm-tools, or apt-get install llvm-19 (Debian 12), or --profdata PATH"
  exit 1
fi
log "profiles will be merged by $MERGE ($("$MERGE" --version 2>/dev/null | grep -m1 -o 'LLVM version [0-9.]*'))"

if [ -n "$BOLT" ]; then
  BOLT=""
  for n in "" $(seq 30 -1 14); do
    for c in "llvm-bolt${n:+-$n}" "/usr/lib/llvm-$n/bin/llvm-bolt"; do
      # Resolved: llvm-bolt finds its instrumentation runtime relative to its own path.
      if command -v "$c" >/dev/null 2>&1; then BOLT=$(readlink -f "$(command -v "$c")"); break 2; fi
    done
  done
  [ -n "$BOLT" ] || { log "--bolt needs llvm-bolt (Debian 12: apt-get install bolt-19)"; exit 1; }
  log "binaries will be rewritten by $BOLT"
fi

# ---- builds -----------------------------------------------------------------
build_args() { # -> cargo build arguments for TARGETS
  local t
  for t in $TARGETS; do
    case $t in
      ceiling) echo "-p signaling-benches --bin ceiling" ;;
      *) echo "-p signaling-examples --example $t" ;;
    esac
  done
}
bin_path() { # dir target
  case $2 in ceiling) echo "$1/release/ceiling" ;; *) echo "$1/release/examples/$2" ;; esac
}
# shellcheck disable=SC2046 # word splitting of the cargo arguments is meant
{
  log "building the load generator (plain) into $TARGET_DIR"
  (cd "$ROOT" && cargo build --release -p signaling-benches --bin loadgen) >"$OUT/logs/build-loadgen.log" 2>&1 \
    || { log "build failed (see $OUT/logs/build-loadgen.log)"; exit 1; }
  log "building instrumented $TARGETS into $GEN_DIR (several minutes)"
  rm -rf "$DATA" && mkdir -p "$DATA"
  (cd "$ROOT" && CARGO_TARGET_DIR=$GEN_DIR RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$DATA" \
    cargo build --release $(build_args)) >"$OUT/logs/build-instrumented.log" 2>&1 \
    || { log "build failed (see $OUT/logs/build-instrumented.log)"; exit 1; }
}
LOADGEN=$TARGET_DIR/release/loadgen

# ---- training ---------------------------------------------------------------
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
SERVER_PIN=(); LOAD_PIN=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  if [ -z "$SERVER_CORES" ]; then
    SERVER_CORES=0; LOAD_PIN=(taskset -c "1-$(( $(nproc) - 1 ))")
  fi
fi
[ -n "$SERVER_CORES" ] && SERVER_PIN=(taskset -c "$SERVER_CORES")

free_port() { # first
  local p=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$(( p + 1 )); done
  echo "$p"
}
SERVER_PID=""
trap '[ -z "$SERVER_PID" ] || kill -9 "$SERVER_PID" 2>/dev/null || true' EXIT

# Runs the training against BIN (an instrumented build of target T) and stops it
# cleanly, so that it writes its profile.
train() { # target bin label
  local t=$1 bin=$2 label=$3 port logf i url
  port=$(free_port 18900)
  logf=$OUT/logs/train-$label.log
  local args=(--addr "127.0.0.1:$port")
  # shellcheck disable=SC2206 # the flags are words
  [ "$t" = ceiling ] || args+=($SERVER_ARGS)
  LLVM_PROFILE_FILE="$DATA/$t-%p-%m.profraw" "${SERVER_PIN[@]}" "$bin" "${args[@]}" >"$logf" 2>&1 &
  SERVER_PID=$!
  for i in $(seq 150); do
    kill -0 "$SERVER_PID" 2>/dev/null || { log "$t exited before listening (see $logf)"; exit 1; }
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  url=ws://127.0.0.1:$port/ws
  log "training $label on $url"
  local case line
  for case in \
      "logins --count 2000 --hold 0.5" \
      "relay --pairs 100 --window 16 --warmup 1 --duration $DURATION" \
      "relay --pairs 100 --window 16 --warmup 0.5 --duration 3 --resumable" \
      "pingpong --pairs 1 --warmup 0.5 --duration 2" \
      "pingpong --pairs 100 --warmup 0.5 --duration 2"; do
    # shellcheck disable=SC2086 # the case's arguments are words
    line=$(timeout $(( DURATION + 60 )) "${LOAD_PIN[@]}" "$LOADGEN" --url "$url" $case 2>>"$logf" | tail -1) \
      || { log "loadgen $case against $t failed (see $logf)"; exit 1; }
    echo "$line" >>"$OUT/logs/train-loadgen-$label.jsonl"
    # A refused or failing training profiles the refusals: the server's flags must let it through.
    if [ -z "$line" ] || grep -qE '"(error|failures|failed|lost|refused[a-z_]*)":("|[1-9])' <<<"$line"; then
      log "the training was refused or failed against $t ($case): lift the limits it trips"
      log "  (--server-args; the load comes from one address): $line"
      exit 1
    fi
  done
  # A clean exit writes the profile (a killed process writes none).
  kill -TERM "$SERVER_PID"
  for i in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$SERVER_PID" 2>/dev/null; then log "$t did not exit within 10 s of SIGTERM"; exit 1; fi
  wait "$SERVER_PID" || { log "$t exited with an error (see $logf)"; exit 1; }
  SERVER_PID=""
}
for t in $TARGETS; do
  train "$t" "$(bin_path "$GEN_DIR" "$t")" "$t"
  compgen -G "$DATA/$t-*.profraw" >/dev/null || { log "$t wrote no profile to $DATA"; exit 1; }
done

"$MERGE" merge -o "$OUT/merged.profdata" "$DATA"/*.profraw 2>"$OUT/logs/merge.log" \
  || { log "merge failed (see $OUT/logs/merge.log)"; exit 1; }
rm -rf "$DATA"

# ---- the profile-guided build ---------------------------------------------------
log "building profile-guided $TARGETS into $USE_DIR (several minutes)"
# shellcheck disable=SC2046 # word splitting of the cargo arguments is meant
# With --bolt the binaries keep their relocations, so that BOLT can move functions.
RELOCS=""
[ -z "$BOLT" ] || RELOCS="-Clink-arg=-Wl,--emit-relocs"
(cd "$ROOT" && CARGO_TARGET_DIR=$USE_DIR RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$OUT/merged.profdata $RELOCS" \
  cargo build --release $(build_args)) >"$OUT/logs/build-profile-guided.log" 2>&1 \
  || { log "build failed (see $OUT/logs/build-profile-guided.log)"; exit 1; }
if [ -z "$BOLT" ]; then
  for t in $TARGETS; do
    cp "$(bin_path "$USE_DIR" "$t")" "$OUT/$t"
    log "built $OUT/$t"
  done
  exit 0
fi

# ---- BOLT (--bolt) -----------------------------------------------------------------
# Each profile-guided binary instrumented by BOLT, trained again, and laid out anew from that
# profile: hot blocks together, cold ones split off, functions ordered by calls.
for t in $TARGETS; do
  built=$(bin_path "$USE_DIR" "$t")
  fdata=$OUT/bolt-$t.fdata
  rm -f "$fdata"
  "$BOLT" "$built" -instrument -instrumentation-file="$fdata" -o "$OUT/$t.bolt-instrumented" \
    >"$OUT/logs/bolt-instrument-$t.log" 2>&1 \
    || { log "llvm-bolt -instrument failed (see $OUT/logs/bolt-instrument-$t.log)"; exit 1; }
  # LLVM 19's instrumentation runtime cannot write a profile with very long function names
  # (basic_server's warp types: "buffer overflow, function name too large"): such a target
  # keeps its profile-guided build.
  if ! (trap '[ -z "$SERVER_PID" ] || kill -9 "$SERVER_PID" 2>/dev/null || true' EXIT
        train "$t" "$OUT/$t.bolt-instrumented" "$t-bolt") || [ ! -s "$fdata" ]; then
    log "SKIPPED BOLT for $t: its instrumented run failed or wrote no profile (see $OUT/logs/train-$t-bolt.log); $OUT/$t is the profile-guided build"
    cp "$built" "$OUT/$t"
    rm -f "$OUT/$t.bolt-instrumented"
    continue
  fi
  "$BOLT" "$built" -o "$OUT/$t" -data="$fdata" -reorder-blocks=ext-tsp -reorder-functions=cdsort \
    -split-functions -split-all-cold -split-eh -icf=1 -use-gnu-stack -dyno-stats \
    >"$OUT/logs/bolt-optimize-$t.log" 2>&1 \
    || { log "llvm-bolt failed (see $OUT/logs/bolt-optimize-$t.log)"; exit 1; }
  rm -f "$OUT/$t.bolt-instrumented"
  log "built $OUT/$t (profile-guided, laid out by BOLT)"
done
