#!/usr/bin/env bash
# Benchmarks signaling servers against each other on this machine (issue 6).
#
# For each round, for each target (order rotated every round), it starts the
# server pinned to core 0 (taskset -c 0), runs every case of the load
# generator pinned to core 1 (taskset -c 1) against it over loopback, and
# stops the server. Then `report` folds the rounds into medians:
#   OUT/raw/r<round>-<target>.jsonl   one loadgen JSON line per case
#   OUT/logs/                         server and loadgen stderr
#   OUT/retried/                      attempts --steal-retry set aside
#   OUT/results.json, OUT/results.md  medians (min–max) per target and case
#   docs/perf-latency.svg             relay latency against offered load
#                                     (OUT/perf-latency.svg with --quick)
#
# Targets:
#   ws_server     our tokio-tungstenite example  (skipped if it is not there
#   basic_server  our warp example                or does not start listening)
#   ceiling       benches' bare forwarding server (the upper bound)
#   ws_metrics    ws_server with --metrics-addr: the cost of the Prometheus
#                 metrics (every event counted)
#   node          the tutorial's Node server from shared/peers/tutorial-server,
#                 copied to the target directory and npm-installed there
#
# Usage: scripts/bench.sh [--quick] [--rounds N] [--targets "ceiling node"]
#                         [--only REGEX] [--out DIR] [--svg PATH] [--nice N]
#                         [--ws-path /ws] [--quiet-wait SECS] [--baseline REV]
#                         [--steal-retry PCT]
#                         [--cluster] [--redis-core C] [--pgo] [--pgo-bin DIR]
#   --quick       one short round of small cases: a smoke run (~2 minutes)
#   --rounds N    rounds of the full run (default 3; about 9 minutes for
#                 ceiling, node and one of ours on an idle machine, plus
#                 ~35 s a round for each of ours: the logins_10k_resumable and
#                 hoard_1k cases, each on a fresh server process; hoard_1k's
#                 keeps its queued-bytes budget)
#   --only REGEX  run only the cases whose name matches (grep -E)
#   --nice N      run server and loadgen each in a session of its own whose
#                 autogroup nice is N (N < 0 needs root). With autogroups
#                 (/proc/sys/kernel/sched_autogroup_enabled) the kernel shares
#                 CPU between sessions, so plain `nice` cannot outweigh other
#                 sessions' builds; on a shared machine -10 shields the
#                 measurement (it touches only the bench's own sessions)
#   --ws-path P   URL path of our servers' WebSocket endpoint (default /ws:
#                 basic_server serves it there, ws_server on any path)
#   --baseline REV  also measure our servers as of git revision REV, as the
#                 targets ws_server_base and basic_server_base (built from
#                 `git archive REV` into TARGET_DIR/bench-baseline), for a
#                 before/after comparison in one interleaved run (added to
#                 the targets unless --targets already names one)
#   --pgo         also measure profile-guided builds, made by
#                 scripts/pgo-build.sh into TARGET_DIR/pgo first (~12 minutes
#                 on 2 cores): ws_server_pgo, basic_server_pgo, ceiling_pgo for
#                 each of ws_server, basic_server, ceiling among the targets (all
#                 three if none is), unless --targets already names one. The
#                 ceiling is built alike, so *_pgo against ceiling_pgo is the
#                 ratio of two profile-guided builds
#   --pgo-bin DIR the same with the binaries pgo-build.sh already put in DIR
#   --quiet-wait  seconds to wait, before each server start, for the rest of
#                 the machine to go quiet (default 5; 0 = do not wait)
#   --steal-retry PCT  measure a relay or pingpong case again (up to twice)
#                 when the hypervisor took more than PCT % of the servers' core
#                 (core 0) during it, and keep the attempt with the least
#                 steal (its line gets "attempts"; the others go to
#                 OUT/retried/r<round>-<target>.jsonl). Every target gets
#                 the same rule. Cases that start from a fresh server's memory
#                 (logins, hoard) are never repeated. Default 0: off
#   --cluster     the cluster part instead (issue 11; docs/performance.md,
#                 "Cluster"): targets, rotated every round like the others,
#                   ws_single         one ws_server without Redis (the reference)
#                   ws_cluster_one    one ws_server with --redis, every client
#                                     on it: cluster mode's cost on local relays
#                                     alone (ws_cluster_same adds the cost of
#                                     two processes sharing core 0)
#                   ws_cluster_same   a throwaway redis-server (free port, no
#                                     persistence) and two ws_server nodes with
#                                     --redis on two free ports; loadgen
#                                     --spread same: both users of a pair on
#                                     one node (no message touches Redis)
#                   ws_cluster_cross  the same, --spread cross: the caller on
#                                     one node, the callee on the other (every
#                                     relay goes through Redis pub/sub)
#                   redis_publish     redis-server alone: redis-benchmark
#                                     pipelining PUBLISH of a 300-byte payload
#                                     (a relayed candidate's bus frame) to one
#                                     channel a raw subscriber reads: what Redis
#                                     itself carries (redis-benchmark has no
#                                     built-in publish test: the command is given)
#                 Cases: logins, relay_max, relay_rate_{5000..40000} (10,000 msgs/s
#                 offered is the issue's p99 figure), pingpong_{1,100};
#                 publish_p32, publish_p256 (-c 2: one publishing connection per
#                 node). Every target starts fresh processes (nodes, Redis) and
#                 stops them after its cases. --targets picks among these five;
#                 the plot goes to OUT/perf-latency.svg unless --svg says.
#                 About 2 minutes a round; with --quick one round of small
#                 cases (~30 s after the build).
#                 Placement on the 2 cores: the nodes and Redis all on core 0
#                 (--redis-core), the loadgen alone on core 1. So the cluster's
#                 whole server side gets the one core the single node gets (the
#                 ratios compare equal hardware: the price of cluster mode
#                 includes Redis's CPU), and Redis does not steal from the
#                 loadgen, whose timestamps are the latency figures (at relay_max
#                 it needs its whole core). redis_publish keeps Redis on that
#                 core and redis-benchmark with the subscriber on core 1.
#   --redis-core C  the core Redis is pinned to in --cluster (default 0)
#   --full        everything in one run (issue 13): the single-node part (all
#                 targets, with ws_metrics) into OUT/single, then the --cluster
#                 part into OUT/cluster, and OUT/results.md with both and the
#                 ratios issue 13 asks for (scripts/bench-ratios.py). The
#                 other options apply to both parts (--pgo to the single-node
#                 part only).
#
# Honours CARGO_TARGET_DIR. Every loadgen run is bounded by its own deadline
# and by `timeout`; servers are stopped by their process id.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
ROUNDS=3
QUICK=0
TARGETS="ws_server basic_server ceiling node"
ONLY=""
OUT=""
SVG=""
BASELINE=""
NICE=0
WS_PATH=/ws
QUIET_WAIT=5
QUIET_BUSY=40 # percent of one core that other processes may use
STEAL_RETRY=0
CLUSTER=0
FULL=0
ARGS=("$@")
REDIS_CORE=0
TARGETS_SET=0
PGO=0
PGO_BIN=""
CLUSTER_TARGETS="ws_single ws_cluster_one ws_cluster_same ws_cluster_cross redis_publish"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; ROUNDS=1 ;;
    --rounds) ROUNDS=$2; shift ;;
    --targets) TARGETS=$2; TARGETS_SET=1; shift ;;
    --only) ONLY=$2; shift ;;
    --out) OUT=$2; shift ;;
    --svg) SVG=$2; shift ;;
    --nice) NICE=$2; shift ;;
    --ws-path) WS_PATH=$2; shift ;;
    --quiet-wait) QUIET_WAIT=$2; shift ;;
    --steal-retry) STEAL_RETRY=$2; shift ;;
    --baseline) BASELINE=$2; shift ;;
    --cluster) CLUSTER=1 ;;
    --full) FULL=1 ;;
    --pgo) PGO=1 ;;
    --pgo-bin) PGO=1; PGO_BIN=$2; shift ;;
    --redis-core) REDIS_CORE=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

if [ $FULL = 1 ]; then
  # The two parts, one after the other, each a run of this script; then one report.
  if [ $CLUSTER = 1 ] || [ -n "$BASELINE" ]; then
    echo "bench.sh: --full runs both parts itself (no --cluster, no --baseline)" >&2; exit 2
  fi
  OUT=${OUT:-$TARGET_DIR/bench-results/$(date +%Y%m%d-%H%M%S)-full$([ $QUICK = 1 ] && echo -quick)}
  rest=()
  pgo=()
  skip=0
  for a in "${ARGS[@]}"; do
    if [ $skip = 1 ]; then skip=0; continue; fi
    case $a in
      --full) ;;
      --out|--targets) skip=1 ;;
      --pgo) ;;
      --pgo-bin) skip=1 ;;
      *) rest+=("$a") ;;
    esac
  done
  # The profile-guided targets belong to the single-node part only.
  if [ -n "$PGO_BIN" ]; then pgo=(--pgo-bin "$PGO_BIN"); elif [ $PGO = 1 ]; then pgo=(--pgo); fi
  # The cluster part runs second: check its tools before the single-node part's minutes.
  for tool in redis-server redis-benchmark; do
    command -v $tool >/dev/null || {
      echo "bench.sh: --full needs $tool for its cluster part (apt-get install -y redis-server)" >&2; exit 1; }
  done
  single_targets="ws_server basic_server ws_metrics ceiling node"
  [ $TARGETS_SET = 1 ] && single_targets=$TARGETS
  "$0" "${rest[@]}" "${pgo[@]}" --targets "$single_targets" --out "$OUT/single"
  "$0" "${rest[@]}" --cluster --out "$OUT/cluster"
  python3 "$ROOT/scripts/bench-ratios.py" "$OUT/single/results.json" "$OUT/cluster/results.json" >"$OUT/ratios.md"
  {
    echo "# scripts/bench.sh --full ($(date -u +%Y-%m-%d), $(git -C "$ROOT" rev-parse --short HEAD))"
    echo
    cat "$OUT/ratios.md"
    echo
    echo "## Single node (\`$OUT/single\`)"
    echo
    sed 's/^### /### single: /' "$OUT/single/results.md"
    echo
    echo "## Cluster (\`$OUT/cluster\`)"
    echo
    sed 's/^### /### cluster: /' "$OUT/cluster/results.md"
  } >"$OUT/results.md"
  echo "bench: results: $OUT/results.md" >&2
  exit 0
fi

if [ $CLUSTER = 1 ]; then
  if [ -n "$BASELINE" ]; then echo "bench.sh: --baseline does not combine with --cluster" >&2; exit 2; fi
  if [ $PGO = 1 ]; then echo "bench.sh: --pgo does not combine with --cluster" >&2; exit 2; fi
  if [ $TARGETS_SET = 0 ]; then TARGETS=$CLUSTER_TARGETS; fi
  for t in $TARGETS; do
    if ! grep -qw -- "$t" <<<"$CLUSTER_TARGETS"; then
      echo "bench.sh: --cluster targets are: $CLUSTER_TARGETS (not $t)" >&2; exit 2
    fi
  done
fi
if [ -n "$BASELINE" ] && ! grep -q _base <<<"$TARGETS"; then
  TARGETS="$TARGETS ws_server_base basic_server_base"
fi
if [ $PGO = 1 ] && ! grep -q _pgo <<<"$TARGETS"; then
  pgo_targets=""
  for t in ws_server basic_server ceiling; do
    if grep -qw -- "$t" <<<"$TARGETS"; then pgo_targets="$pgo_targets ${t}_pgo"; fi
  done
  TARGETS="$TARGETS ${pgo_targets:-ws_server_pgo basic_server_pgo ceiling_pgo}"
fi
PGO_DIR=${PGO_BIN:-$TARGET_DIR/pgo}
OUT=${OUT:-$TARGET_DIR/bench-results/$(date +%Y%m%d-%H%M%S)$([ $CLUSTER = 1 ] && echo -cluster)$([ $QUICK = 1 ] && echo -quick)}
if [ -z "$SVG" ]; then
  if [ $QUICK = 1 ] || [ $CLUSTER = 1 ]; then SVG=$OUT/perf-latency.svg; else SVG=$ROOT/docs/perf-latency.svg; fi
fi
mkdir -p "$OUT/raw" "$OUT/logs" "$OUT/retried"
log() { echo "bench: $*" >&2; }

# Cases: "name|loadgen arguments". The relay_rate_* cases draw the plot.
FRESH_CASES=()
# --cluster's redis_publish cases: "name|redis-benchmark arguments".
REDIS_CASES=()
PUBLISH_BYTES=300
if [ $CLUSTER = 1 ] && [ $QUICK = 1 ]; then
  CASES=(
    "logins_1k|logins --count 1000 --hold 0.5"
    "relay_max|relay --pairs 10 --window 16 --warmup 0.3 --duration 1"
    "relay_rate_10000|relay --pairs 10 --window 64 --warmup 0.3 --duration 1 --offered-rate 10000"
    "pingpong_1|pingpong --pairs 1 --warmup 0.3 --duration 1"
  )
  REDIS_CASES=("publish_p32|-c 2 -P 32 -n 100000")
elif [ $CLUSTER = 1 ]; then
  CASES=(
    "logins_5k|logins --count 5000 --hold 1"
    "relay_max|relay --pairs 100 --window 16 --warmup 1 --duration 3"
  )
  for rate in 5000 10000 20000 40000; do
    CASES+=("relay_rate_$rate|relay --pairs 100 --window 64 --warmup 0.5 --duration 2 --offered-rate $rate")
  done
  CASES+=(
    "pingpong_1|pingpong --pairs 1 --warmup 0.5 --duration 2"
    "pingpong_100|pingpong --pairs 100 --warmup 0.5 --duration 2"
  )
  REDIS_CASES=(
    "publish_p32|-c 2 -P 32 -n 1000000"
    "publish_p256|-c 2 -P 256 -n 2000000"
  )
elif [ $QUICK = 1 ]; then
  CASES=(
    "logins_1k|logins --count 1000 --hold 0.5"
    "relay_max|relay --pairs 10 --window 16 --warmup 0.3 --duration 1"
    "relay_rate_5000|relay --pairs 10 --window 64 --warmup 0.3 --duration 1 --offered-rate 5000"
    "relay_rate_20000|relay --pairs 10 --window 64 --warmup 0.3 --duration 1 --offered-rate 20000"
    "pingpong_1|pingpong --pairs 1 --warmup 0.3 --duration 1"
    "pingpong_100|pingpong --pairs 100 --warmup 0.3 --duration 1"
    "relay_idle1k|relay --pairs 10 --window 64 --offered-rate 2000 --idle 1000 --warmup 0.3 --duration 1"
  )
else
  CASES=(
    "logins_10k|logins --count 10000 --hold 1"
    "relay_max|relay --pairs 100 --window 16 --warmup 1 --duration 3"
  )
  for rate in 5000 10000 20000 40000 80000 160000; do
    CASES+=("relay_rate_$rate|relay --pairs 100 --window 64 --warmup 0.5 --duration 1.5 --offered-rate $rate")
  done
  CASES+=(
    "pingpong_1|pingpong --pairs 1 --warmup 0.5 --duration 2"
    "pingpong_100|pingpong --pairs 100 --warmup 0.5 --duration 2"
    # Resumable sessions (issue 10): seq on every message, a history per session. Servers
    # without them ignore the field.
    "relay_max_resumable|relay --pairs 100 --window 16 --warmup 1 --duration 3 --resumable"
    "relay_idle19k|relay --pairs 100 --window 64 --offered-rate 10000 --idle 19000 --warmup 1 --duration 3"
  )
  # Our servers only, each on a fresh process with its default queued-bytes budget (the others
  # have no budget: a flood of non-reading clients would take gigabytes). Issue 9.
  # Cases for our servers only, each on a fresh server process of its own: the idle memory of
  # resumable sessions (issue 10; after logins_10k the process would reuse what those freed),
  # and a flood of non-reading clients under the default queued-bytes budget (issue 9; the
  # other servers have no budget: it would take gigabytes). "name|loadgen arguments|budget"
  # (keep-budget: the server keeps its default budget).
  FRESH_CASES=(
    "logins_10k_resumable|logins --count 10000 --hold 1 --resumable|"
    "hoard_1k|hoard --victims 1000 --size 16384 --duration 5 --settle 12|keep-budget"
  )
fi

# Both the servers and the loadgen hold thousands of sockets.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
PRIO=()
if [ "$NICE" != 0 ]; then
  # setsid may fork, so the inner bash tells its pid (kept through the execs
  # of nice, taskset and the server) in $PIDFILE when that is set.
  # shellcheck disable=SC2016 # expanded by the inner bash
  PRIO=(setsid bash -c 'n=$1; shift; echo "$n" >/proc/self/autogroup 2>/dev/null || true
    if [ -n "${PIDFILE:-}" ]; then echo $$ >"$PIDFILE"; fi; exec nice -n "$n" "$@"' prio "$NICE")
fi
if ! command -v taskset >/dev/null; then
  log "taskset not found (util-linux); cannot pin cores"; exit 1
fi
if [ "$(nproc)" -lt 2 ]; then
  log "needs 2 cores (server on 0, loadgen on 1); nproc says $(nproc)"; exit 1
fi
if [ $CLUSTER = 1 ]; then
  for tool in redis-server redis-benchmark; do
    command -v $tool >/dev/null || { log "--cluster needs $tool (redis 7)"; exit 1; }
  done
fi

# ---- build -------------------------------------------------------------
log "building release binaries into $TARGET_DIR"
(cd "$ROOT" && cargo build --release -p signaling-benches --bins) >&2
LOADGEN=$TARGET_DIR/release/loadgen
declare -A AVAILABLE=()
if [ $PGO = 1 ] && [ -z "$PGO_BIN" ]; then
  pgo_build=""
  for t in $TARGETS; do [[ $t == *_pgo ]] && pgo_build="$pgo_build ${t%_pgo}"; done
  if [ -n "$pgo_build" ]; then
    log "building profile-guided$pgo_build into $PGO_DIR (scripts/pgo-build.sh; see $OUT/logs/pgo-build.log)"
    "$ROOT/scripts/pgo-build.sh" --targets "${pgo_build# }" --out "$PGO_DIR" >"$OUT/logs/pgo-build.log" 2>&1 \
      || log "skip the profile-guided targets: scripts/pgo-build.sh failed (see $OUT/logs/pgo-build.log)"
  fi
fi
for t in $TARGETS; do
  case $t in
    ws_server|basic_server)
      if [ ! -f "$ROOT/examples/examples/$t.rs" ]; then
        log "skip $t: examples/examples/$t.rs does not exist"; continue
      fi
      if (cd "$ROOT" && cargo build --release -p signaling-examples --example "$t") >"$OUT/logs/build-$t.log" 2>&1; then
        AVAILABLE[$t]=1
      else
        log "skip $t: build failed (see $OUT/logs/build-$t.log)"
      fi ;;
    ws_server_base|basic_server_base)
      [ -n "$BASELINE" ] || continue
      BASE_SRC=$TARGET_DIR/bench-baseline-src
      rm -rf "$BASE_SRC" && mkdir -p "$BASE_SRC"
      # `tar -x` dates each file at the revision's commit: older than an earlier baseline
      # build in the same target dir, cargo (which compares times) would keep that build.
      if git -C "$ROOT" archive "$BASELINE" | tar -x -m -C "$BASE_SRC" \
        && (cd "$BASE_SRC" && CARGO_TARGET_DIR=$TARGET_DIR/bench-baseline \
          cargo build --release -p signaling-examples --example "${t%_base}") >"$OUT/logs/build-$t.log" 2>&1; then
        AVAILABLE[$t]=1
      else
        log "skip $t: no build of $BASELINE (see $OUT/logs/build-$t.log)"
      fi ;;
    ws_metrics|ws_single|ws_cluster_one|ws_cluster_same|ws_cluster_cross)
      if [ -n "${AVAILABLE[ws_server]:-}" ] || (cd "$ROOT" && cargo build --release -p signaling-examples --example ws_server) >"$OUT/logs/build-ws_server.log" 2>&1; then
        AVAILABLE[ws_server]=1; AVAILABLE[$t]=1
      else
        log "skip $t: build failed (see $OUT/logs/build-ws_server.log)"
      fi ;;
    redis_publish) AVAILABLE[$t]=1 ;;
    ws_server_pgo|basic_server_pgo|ceiling_pgo)
      if [ -x "$PGO_DIR/${t%_pgo}" ]; then
        AVAILABLE[$t]=1
      else
        log "skip $t: no $PGO_DIR/${t%_pgo} (scripts/pgo-build.sh makes it)"
      fi ;;
    ceiling) AVAILABLE[$t]=1 ;;
    node)
      NODE_DIR=$TARGET_DIR/bench-node-peer
      if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        log "skip node: node/npm not installed"; continue
      fi
      mkdir -p "$NODE_DIR"
      PEER=$ROOT/../shared/peers/tutorial-server
      cp "$PEER/server.js" "$PEER/package.json" "$NODE_DIR/" 2>/dev/null \
        || { log "skip node: $PEER not found"; continue; }
      if [ -d "$NODE_DIR/node_modules/ws" ] || (cd "$NODE_DIR" && npm install --no-audit --no-fund) >"$OUT/logs/npm.log" 2>&1; then
        AVAILABLE[$t]=1
      else
        log "skip node: npm install failed (see $OUT/logs/npm.log)"
      fi ;;
    *) log "unknown target $t"; exit 2 ;;
  esac
done
TARGET_LIST=()
for t in $TARGETS; do [ -n "${AVAILABLE[$t]:-}" ] && TARGET_LIST+=("$t"); done
if [ ${#TARGET_LIST[@]} = 0 ]; then log "no target available"; exit 1; fi

{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo ?)"
  [ -z "$BASELINE" ] || echo "baseline: $(git -C "$ROOT" rev-parse --short "$BASELINE" 2>/dev/null || echo "$BASELINE")"
  [ $PGO = 0 ] || echo "profile-guided: $PGO_DIR (scripts/pgo-build.sh$([ -z "$PGO_BIN" ] || echo ", made before this run"))"
  echo "rustc: $(rustc --version)"
  echo "node: $(node --version 2>/dev/null || echo none)"
  echo "kernel: $(uname -sr); cores: $(nproc); $(grep -m1 'model name' /proc/cpuinfo || true)"
  echo "rounds: $ROUNDS; quick: $QUICK; nice: $NICE; targets: ${TARGET_LIST[*]}"
  if [ $CLUSTER = 1 ]; then
    echo "cluster: nodes on core 0, redis on core $REDIS_CORE, loadgen on core 1; $(redis-server --version)"
  fi
} >"$OUT/env.txt"
log "targets: ${TARGET_LIST[*]}; rounds: $ROUNDS; cases: ${#CASES[@]}; out: $OUT"

# ---- helpers ------------------------------------------------------------
# Busy percent (of one core, summed over cores) of the whole machine over 1 s.
host_busy() {
  local a b
  read -r -a a < <(head -1 /proc/stat)
  sleep 1
  read -r -a b < <(head -1 /proc/stat)
  local busy=0 total=0 i d
  for i in 1 2 3 4 5 6 7 8; do
    d=$(( b[i] - a[i] )); total=$(( total + d ))
    if [ $i != 4 ] && [ $i != 5 ]; then busy=$(( busy + d )); fi
  done
  echo $(( total > 0 ? busy * 100 * $(nproc) / total : 0 ))
}

wait_quiet() {
  [ "$QUIET_WAIT" -gt 0 ] || return 0
  local waited=0 busy
  while :; do
    busy=$(host_busy)
    if [ "$busy" -le "$QUIET_BUSY" ]; then return 0; fi
    if [ "$waited" -ge "$QUIET_WAIT" ]; then
      log "machine still busy (${busy}% of a core used by others or taken by the hypervisor); measuring anyway (see other_cpu_pct and steal_pct; --nice -10 helps)"
      return 0
    fi
    waited=$(( waited + 1 ))
  done
}

# Starts a command pinned to a core in the background (in a priority session
# of its own with --nice); LAUNCHED_PID is then the process itself (every
# wrapper execs).
LAUNCHED_PID=""
launch() { # core logfile command...
  local core=$1 logf=$2 i pidfile=$OUT/logs/server.pid
  shift 2
  LAUNCHED_PID=""
  if [ ${#PRIO[@]} -gt 0 ]; then
    rm -f "$pidfile"
    PIDFILE=$pidfile "${PRIO[@]}" taskset -c "$core" "$@" >"$logf" 2>&1 &
    for i in $(seq 50); do [ -s "$pidfile" ] && break; sleep 0.1; done
    LAUNCHED_PID=$(cat "$pidfile" 2>/dev/null || true)
    if [ -z "$LAUNCHED_PID" ]; then log "$1: no pid from the priority wrapper"; return 1; fi
  else
    taskset -c "$core" "$@" >"$logf" 2>&1 &
    LAUNCHED_PID=$!
  fi
}

# Waits until process PID listens on PORT (up to 15 s).
wait_listen() { # pid port name logfile
  local pid=$1 port=$2 name=$3 logf=$4 i
  for i in $(seq 150); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$name exited before listening (see $logf)"; return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$name did not listen on $port within 15 s"; return 1
}

# Stops one process we started, by its id: TERM, up to 5 s, then KILL.
stop_pid() { # pid
  [ -n "$1" ] || return 0
  kill "$1" 2>/dev/null || true
  local i
  for i in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# A port at or above FIRST that nothing on 127.0.0.1 listens on.
free_port() { # first
  local p=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$(( p + 1 )); done
  echo "$p"
}

SERVER_CMD=()
server_cmd() { # target [keep-budget] -> SERVER_CMD
  local t=$1 keep_budget=${2:-} cmd=()
  case $t in
    ws_server|basic_server|ws_server_base|basic_server_base|ws_metrics|ws_server_pgo|basic_server_pgo)
      local bin=$TARGET_DIR/release/examples/$t
      case $t in
        *_base) bin=$TARGET_DIR/bench-baseline/release/examples/${t%_base} ;;
        *_pgo) bin=$PGO_DIR/${t%_pgo} ;;
        ws_metrics) bin=$TARGET_DIR/release/examples/ws_server ;;
      esac
      cmd=("$bin")
      # Limits off, for the flags this build has (a missing one is logged:
      # its default limit may then shape the figures).
      local help flag
      help=$("$bin" --help 2>&1 || true)
      for flag in --rate-limit --max-connections --max-connections-per-ip \
          --max-pending-requests --max-pending-requests-per-ip \
          --max-not-logged-in --max-not-logged-in-per-ip --max-total-queued-mib; do
        if [ "$flag" = --max-total-queued-mib ] && [ -n "$keep_budget" ]; then continue; fi
        if grep -qE -- "${flag}[ =]" <<<"$help"; then
          cmd+=("$flag" 0)
        else
          log "$t has no $flag option; running with its default"
        fi
      done
      # Prometheus metrics on (issue 12): what counting every event costs.
      if [ "$t" = ws_metrics ]; then cmd+=(--metrics-addr 127.0.0.1:0); fi ;;
    ceiling) cmd=("$TARGET_DIR/release/ceiling") ;;
    ceiling_pgo) cmd=("$PGO_DIR/ceiling") ;;
    node) cmd=(env QUIET=1 node "$NODE_DIR/server.js") ;;
  esac
  SERVER_CMD=("${cmd[@]}")
}

SERVER_PID=""
start_server() { # target port logfile [keep-budget]
  local t=$1 port=$2 logf=$3
  server_cmd "$t" "${4:-}"
  case $t in
    node) SERVER_CMD=(env PORT="$port" "${SERVER_CMD[@]:1}") ;;
    *) SERVER_CMD+=(--addr "127.0.0.1:$port") ;;
  esac
  launch 0 "$logf" "${SERVER_CMD[@]}" || return 1
  SERVER_PID=$LAUNCHED_PID
  if ! wait_listen "$SERVER_PID" "$port" "$t" "$logf"; then stop_server; return 1; fi
}

stop_server() {
  stop_pid "$SERVER_PID"
  SERVER_PID=""
}

# ---- cluster (--cluster) ----------------------------------------------------
REDIS_PID=""
REDIS_PORT=""
NODE_PIDS=()
NODE_PORTS=()

# A throwaway redis-server on a free port, no persistence, pinned to REDIS_CORE.
start_redis() { # logfile
  REDIS_PORT=$(free_port 26300)
  launch "$REDIS_CORE" "$1" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
    --save "" --appendonly no || return 1
  REDIS_PID=$LAUNCHED_PID
  wait_listen "$REDIS_PID" "$REDIS_PORT" redis-server "$1" || return 1
  # The port was free a moment ago; make sure the Redis answering is ours.
  if command -v redis-cli >/dev/null \
      && ! redis-cli -p "$REDIS_PORT" info server 2>/dev/null | grep -q "^process_id:$REDIS_PID"; then
    log "the Redis on $REDIS_PORT is not ours (pid $REDIS_PID)"; return 1
  fi
}

# Redis and NODES ws_server nodes with --redis, the nodes on core 0.
start_cluster() { # round target nodes
  local round=$1 t=$2 x port logf names=(a b c d)
  start_redis "$OUT/logs/redis-r$round-$t.log" || return 1
  NODE_PIDS=(); NODE_PORTS=()
  for x in "${names[@]:0:$3}"; do
    port=$(free_port $(( 18300 + ${#NODE_PORTS[@]} * 10 )))
    logf=$OUT/logs/server-r$round-$t-$x.log
    server_cmd ws_server
    SERVER_CMD+=(--addr "127.0.0.1:$port" --redis "redis://127.0.0.1:$REDIS_PORT" --node-id "bench-$$-$x")
    launch 0 "$logf" "${SERVER_CMD[@]}" || return 1
    NODE_PIDS+=("$LAUNCHED_PID"); NODE_PORTS+=("$port")
    wait_listen "$LAUNCHED_PID" "$port" "node $x" "$logf" || return 1
  done
}

# Commands the cluster's Redis has run so far (empty without redis-cli).
redis_commands() {
  [ -n "$REDIS_PORT" ] && [ -n "$REDIS_PID" ] && command -v redis-cli >/dev/null || return 0
  redis-cli -p "$REDIS_PORT" info stats 2>/dev/null | tr -d '\r' \
    | awk -F: '$1 == "total_commands_processed" { print $2 }'
}

stop_cluster() {
  local pid
  # Nodes first: they release their names; then Redis.
  for pid in "${NODE_PIDS[@]}"; do stop_pid "$pid"; done
  NODE_PIDS=(); NODE_PORTS=()
  stop_pid "$REDIS_PID"
  REDIS_PID=""
}
trap 'stop_server; stop_cluster' EXIT

# Busy CPU ticks (1/100 s) of the whole machine, and of one process.
host_ticks() { awk 'NR == 1 { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
# Ticks the hypervisor took from the machine (steal).
steal_ticks() { awk 'NR == 1 { print $9 }' /proc/stat; }
proc_ticks() { # pid
  sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13 }'
}
pct() { # ticks seconds -> percent of one core
  awk -v t="$1" -v s="$2" 'BEGIN { printf "%.1f", (s > 0 ? t / s : 0) }'
}

# One redis_publish case on a fresh Redis: a raw subscriber (bash reading the
# socket into wc -c) on core 1, redis-benchmark pipelining PUBLISH on core 1.
run_publish() { # round "name|redis-benchmark arguments"
  local round=$1 c=$2 name args raw=$OUT/raw/r$1-redis_publish.jsonl
  name=${c%%|*}
  args=${c#*|}
  if [ -n "$ONLY" ] && ! grep -qE "$ONLY" <<<"$name"; then return 0; fi
  local err="" channel=signaling:node:bench payload bytes=$OUT/logs/sub-r$round-$name.bytes
  payload=$(printf '%*s' "$PUBLISH_BYTES" '' | tr ' ' x)
  wait_quiet
  if ! start_redis "$OUT/logs/redis-r$round-$name.log"; then
    echo "{\"label\":\"redis_publish\",\"case\":\"$name\",\"workload\":\"redis_publish\",\"error\":\"redis-server did not start\"}" >>"$raw"
    stop_cluster; return 0
  fi
  # shellcheck disable=SC2016 # expanded by the inner bash
  taskset -c 1 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf "SUBSCRIBE %s\r\n" "$2" >&3; cat <&3 | wc -c' sub "$REDIS_PORT" "$channel" >"$bytes" 2>/dev/null &
  local sub=$! i
  for i in $(seq 50); do
    if command -v redis-cli >/dev/null; then
      [ "$(redis-cli -p "$REDIS_PORT" pubsub numsub "$channel" 2>/dev/null | tail -1)" = 1 ] && break
    elif [ "$i" -ge 5 ]; then break
    fi
    sleep 0.1
  done
  local h0 r0 s0 t0 h1 r1 s1 t1 out csv own
  h0=$(host_ticks); r0=$(proc_ticks "$REDIS_PID"); s0=$(steal_ticks); t0=$(date +%s.%N)
  # `times` reports the CPU of this subshell's children: redis-benchmark.
  # shellcheck disable=SC2086 # args is a list of words
  out=$("${PRIO[@]}" taskset -c 1 timeout 300 redis-benchmark -p "$REDIS_PORT" $args --csv \
    PUBLISH "$channel" "$payload" 2>>"$OUT/logs/redis-benchmark-r$round.log"; times)
  h1=$(host_ticks); r1=$(proc_ticks "$REDIS_PID"); s1=$(steal_ticks); t1=$(date +%s.%N)
  stop_cluster # the subscriber's socket closes: wc prints
  for i in $(seq 50); do kill -0 "$sub" 2>/dev/null || break; sleep 0.1; done
  kill "$sub" 2>/dev/null || true
  wait "$sub" 2>/dev/null || true
  csv=$(grep -m1 '^"PUBLISH' <<<"$out" || true)
  own=$(tail -1 <<<"$out" | awk '{ n = 0; for (i = 1; i <= NF; i++) { split($i, a, /[ms]/); n += a[1] * 60 + a[2] } print n * 100 }')
  [ -n "$csv" ] || err="no CSV line from redis-benchmark (see logs/redis-benchmark-r$round.log)"
  local line requests
  requests=$(grep -oE -- '-n [0-9]+' <<<"$args" | awk '{ print $2 }')
  if [ -n "$err" ]; then
    line="{\"label\":\"redis_publish\",\"case\":\"$name\",\"workload\":\"redis_publish\",\"error\":\"$err\"}"
  else
    local secs sub_head msg got
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
    # What the subscriber read: its subscribe reply, then one push per message.
    # shellcheck disable=SC2016 # RESP's $ is literal
    sub_head=$(printf '*3\r\n$9\r\nsubscribe\r\n$%d\r\n%s\r\n:1\r\n' "${#channel}" "$channel" | wc -c)
    # shellcheck disable=SC2016 # RESP's $ is literal
    msg=$(printf '*3\r\n$7\r\nmessage\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n' "${#channel}" "$channel" "${#payload}" "$payload" | wc -c)
    got=$(( ($(cat "$bytes" 2>/dev/null || echo 0) - sub_head) / msg ))
    line=$(tr -d '"' <<<"$csv" | awk -F, -v name="$name" -v args="$args" -v req="$requests" \
      -v bytes="$PUBLISH_BYTES" -v got="$got" -v redis="$(pct $(( r1 - r0 )) "$secs")" \
      -v own="$(pct "$own" "$secs")" -v host="$(pct $(( h1 - h0 )) "$secs")" \
      -v steal="$(pct $(( s1 - s0 )) "$secs")" '{
        other = host - redis - own; if (other < 0) other = 0
        printf "{\"label\":\"redis_publish\",\"case\":\"%s\",\"workload\":\"redis_publish\",", name
        printf "\"redis_benchmark_args\":\"%s\",\"requests\":%d,\"payload_bytes\":%d,\"subscribers\":1,", args, req, bytes
        printf "\"publish_per_s\":%s,\"latency_ms\":{\"mean\":%s,\"min\":%s,\"p50\":%s,\"p95\":%s,\"p99\":%s,\"max\":%s},", $2, $3, $4, $5, $6, $7, $8
        printf "\"received\":%d,\"lost\":%d,\"redis_cpu_pct\":%s,\"loadgen_cpu_pct\":%s,", got, req - got, redis, own
        printf "\"host_busy_pct\":%s,\"other_cpu_pct\":%.1f,\"steal_pct\":%s}\n", host, other, steal
      }')
  fi
  echo "$line" >>"$raw"
  log "  $name: $(summary "$line")"
}

# One --cluster target for one round: fresh processes, every case, stop.
run_cluster_target() { # target round
  local t=$1 round=$2 raw=$OUT/raw/r$2-$1.jsonl port url c
  case $t in
    ws_single)
      port=$(free_port 18300)
      wait_quiet
      if ! start_server ws_server "$port" "$OUT/logs/server-r$round-$t.log"; then
        echo "{\"label\":\"$t\",\"case\":\"start\",\"workload\":\"start\",\"error\":\"server did not start\"}" >>"$raw"
        return 0
      fi
      log "round $round/$ROUNDS: $t (pid $SERVER_PID) on 127.0.0.1:$port"
      CASE_PIDS=$SERVER_PID CASE_REDIS_PID="" CASE_EXTRA=""
      for c in "${CASES[@]}"; do run_case "$t" "ws://127.0.0.1:$port$WS_PATH" "$round" "$c"; done
      stop_server ;;
    ws_cluster_one|ws_cluster_same|ws_cluster_cross)
      local nodes=2
      if [ "$t" = ws_cluster_one ]; then nodes=1; fi
      wait_quiet
      if ! start_cluster "$round" "$t" "$nodes"; then
        echo "{\"label\":\"$t\",\"case\":\"start\",\"workload\":\"start\",\"error\":\"cluster did not start\"}" >>"$raw"
        stop_cluster; return 0
      fi
      log "round $round/$ROUNDS: $t (redis $REDIS_PID on $REDIS_PORT; nodes ${NODE_PIDS[*]} on ${NODE_PORTS[*]})"
      url=$(printf "ws://127.0.0.1:%s$WS_PATH," "${NODE_PORTS[@]}")
      CASE_PIDS=$(IFS=,; echo "${NODE_PIDS[*]}") CASE_REDIS_PID=$REDIS_PID CASE_EXTRA=""
      if [ "$nodes" -gt 1 ]; then CASE_EXTRA="--spread ${t#ws_cluster_}"; fi
      url=${url%,}
      for c in "${CASES[@]}"; do run_case "$t" "$url" "$round" "$c"; done
      stop_cluster ;;
    redis_publish)
      log "round $round/$ROUNDS: $t"
      for c in "${REDIS_CASES[@]}"; do run_publish "$round" "$c"; done ;;
  esac
  CASE_PIDS="" CASE_REDIS_PID="" CASE_EXTRA=""
}

summary() { # one loadgen JSON line -> a few figures for the console
  grep -oE '"(logins_per_s|msgs_per_s|round_trips_per_s|publish_per_s|p50|p99|failures|lost|redis_cpu_pct|other_cpu_pct|steal_pct|server_rss_per_conn_bytes|server_rss_peak_kib|server_rss_after_close_kib|refused_server_overloaded|error)":("[^"]*"|[0-9.]+)' \
    <<<"$1" | awk -F'":' '!seen[$1]++' | tr '\n' ' '
}

# The servers' pids (comma list; default SERVER_PID), Redis's pid and more
# loadgen arguments for run_case (--cluster sets them).
CASE_PIDS="" CASE_REDIS_PID="" CASE_EXTRA=""
run_case() { # target url round "name|loadgen arguments"
  local t=$1 url=$2 round=$3 c=$4 name args line raw=$OUT/raw/r$3-$1.jsonl
  local pids=${CASE_PIDS:-$SERVER_PID} pid extra=()
  name=${c%%|*}
  args=${c#*|}
  if [ -n "$ONLY" ] && ! grep -qE "$ONLY" <<<"$name"; then return 0; fi
  for pid in ${pids//,/ } ${CASE_REDIS_PID:-}; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "{\"label\":\"$t\",\"case\":\"$name\",\"workload\":\"${args%% *}\",\"error\":\"server died earlier\"}" >>"$raw"
      return 0
    fi
  done
  if [ -n "${CASE_REDIS_PID:-}" ]; then extra=(--redis-pid "$CASE_REDIS_PID"); fi
  local attempt=1 tries=1 best="" best_steal="" steal cmds0 cmds1
  # Stateless cases may be measured again when the host took the servers' core (--steal-retry).
  if [ "$STEAL_RETRY" != 0 ] && [[ $name == relay_* || $name == pingpong_* ]]; then tries=3; fi
  while :; do
    cmds0=""
    if [ -n "${CASE_REDIS_PID:-}" ]; then cmds0=$(redis_commands); fi
    # shellcheck disable=SC2086 # args and CASE_EXTRA are lists of words
    line=$("${PRIO[@]}" taskset -c 1 timeout 600 "$LOADGEN" --url "$url" --label "$t" --case "$name" \
      --server-pid "$pids" "${extra[@]}" $CASE_EXTRA $args 2>>"$OUT/logs/loadgen-r$round-$t.log" | tail -1) || true
    if [ -z "$line" ]; then
      line="{\"label\":\"$t\",\"case\":\"$name\",\"workload\":\"${args%% *}\",\"error\":\"loadgen printed nothing\"}"
    fi
    cmds1=$(redis_commands)
    if [ -n "$cmds0" ] && [ -n "$cmds1" ] && [[ $line == *\} ]]; then
      # Commands Redis ran during this attempt (less our first INFO): same-node relays must add none.
      line="${line%\}},\"redis_commands\":$(( cmds1 - cmds0 - 1 ))}"
    fi
    [ "$tries" -gt 1 ] || break
    # The steal on core 0 (the servers' core) during the case; none (an error line) ends it.
    steal=$(grep -oE '"steal_pct_each":\[[0-9.]+' <<<"$line" | grep -oE '[0-9.]+$' || true)
    [ -n "$steal" ] || break
    if [ -z "$best" ] || awk -v a="$steal" -v b="$best_steal" 'BEGIN { exit !(a < b) }'; then
      [ -z "$best" ] || echo "$best" >>"$OUT/retried/r$round-$t.jsonl"
      best=$line best_steal=$steal
    else
      echo "$line" >>"$OUT/retried/r$round-$t.jsonl"
    fi
    if awk -v a="$best_steal" -v m="$STEAL_RETRY" 'BEGIN { exit !(a <= m) }' || [ "$attempt" -ge "$tries" ]; then
      line="${best%\}},\"attempts\":$attempt}"
      break
    fi
    log "  $name: steal ${steal}% of core 0 (over $STEAL_RETRY%): measuring again"
    attempt=$(( attempt + 1 ))
    sleep 0.3
  done
  echo "$line" >>"$raw"
  log "  $name: $(summary "$line")"
  sleep 0.3 # let the server reap the closed connections
}

# ---- run ----------------------------------------------------------------
STARTED=$(date +%s)
n_targets=${#TARGET_LIST[@]}
for round in $(seq "$ROUNDS"); do
  for k in $(seq 0 $(( n_targets - 1 ))); do
    idx=$(( (k + round - 1) % n_targets ))
    t=${TARGET_LIST[$idx]}
    if [ $CLUSTER = 1 ]; then run_cluster_target "$t" "$round"; continue; fi
    port=$(( 18100 + (round % 50) * 10 + idx ))
    raw=$OUT/raw/r$round-$t.jsonl
    wait_quiet
    if ! start_server "$t" "$port" "$OUT/logs/server-r$round-$t.log"; then
      echo "{\"label\":\"$t\",\"case\":\"start\",\"workload\":\"start\",\"error\":\"server did not start\"}" >>"$raw"
      continue
    fi
    log "round $round/$ROUNDS: $t (pid $SERVER_PID) on 127.0.0.1:$port"
    url=ws://127.0.0.1:$port
    case $t in ws_server*|basic_server*) url=$url$WS_PATH ;; *) url=$url/ ;; esac
    for c in "${CASES[@]}"; do
      run_case "$t" "$url" "$round" "$c"
    done
    stop_server
    for fresh in "${FRESH_CASES[@]}"; do
      name=${fresh%%|*}
      budget=${fresh##*|}
      if [[ $t == ws_server* || $t == basic_server* ]] \
          && { [ -z "$ONLY" ] || grep -qE "$ONLY" <<<"$name"; }; then
        wait_quiet
        if start_server "$t" "$port" "$OUT/logs/server-r$round-$t-$name.log" "$budget"; then
          run_case "$t" "$url" "$round" "${fresh%|*}"
        fi
        stop_server
      fi
    done
  done
done
log "measured in $(( $(date +%s) - STARTED )) s"

mkdir -p "$(dirname "$SVG")"
"$TARGET_DIR/release/report" --raw "$OUT/raw" --out "$OUT" --svg "$SVG" >/dev/null
log "results: $OUT/results.md, $OUT/results.json; plot: $SVG"
