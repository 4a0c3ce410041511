#!/usr/bin/env bash
# Benchmarks signaling servers against each other on this machine (issue 6).
#
# For each round, for each target (order rotated every round), it starts the
# server pinned to core 0 (taskset -c 0), runs every case of the load
# generator pinned to core 1 (taskset -c 1) against it over loopback, and
# stops the server. Then `report` folds the rounds into medians:
#   OUT/raw/r<round>-<target>.jsonl   one loadgen JSON line per case
#   OUT/logs/                         server and loadgen stderr
#   OUT/results.json, OUT/results.md  medians (min–max) per target and case
#   docs/perf-latency.svg             relay latency against offered load
#                                     (OUT/perf-latency.svg with --quick)
#
# Targets:
#   ws_server     our tokio-tungstenite example  (skipped if it is not there
#   basic_server  our warp example                or does not start listening)
#   ceiling       benches' bare forwarding server (the upper bound)
#   node          the tutorial's Node server from shared/peers/tutorial-server,
#                 copied to the target directory and npm-installed there
#
# Usage: scripts/bench.sh [--quick] [--rounds N] [--targets "ceiling node"]
#                         [--only REGEX] [--out DIR] [--svg PATH] [--nice N]
#                         [--ws-path /ws] [--quiet-wait SECS] [--baseline REV]
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
#   --quiet-wait  seconds to wait, before each server start, for the rest of
#                 the machine to go quiet (default 5; 0 = do not wait)
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

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; ROUNDS=1 ;;
    --rounds) ROUNDS=$2; shift ;;
    --targets) TARGETS=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --out) OUT=$2; shift ;;
    --svg) SVG=$2; shift ;;
    --nice) NICE=$2; shift ;;
    --ws-path) WS_PATH=$2; shift ;;
    --quiet-wait) QUIET_WAIT=$2; shift ;;
    --baseline) BASELINE=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

if [ -n "$BASELINE" ] && ! grep -q _base <<<"$TARGETS"; then
  TARGETS="$TARGETS ws_server_base basic_server_base"
fi
OUT=${OUT:-$TARGET_DIR/bench-results/$(date +%Y%m%d-%H%M%S)$([ $QUICK = 1 ] && echo -quick)}
if [ -z "$SVG" ]; then
  if [ $QUICK = 1 ]; then SVG=$OUT/perf-latency.svg; else SVG=$ROOT/docs/perf-latency.svg; fi
fi
mkdir -p "$OUT/raw" "$OUT/logs"
log() { echo "bench: $*" >&2; }

# Cases: "name|loadgen arguments". The relay_rate_* cases draw the plot.
FRESH_CASES=()
if [ $QUICK = 1 ]; then
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

# ---- build -------------------------------------------------------------
log "building release binaries into $TARGET_DIR"
(cd "$ROOT" && cargo build --release -p signaling-benches --bins) >&2
LOADGEN=$TARGET_DIR/release/loadgen
declare -A AVAILABLE=()
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
      if git -C "$ROOT" archive "$BASELINE" | tar -x -C "$BASE_SRC" \
        && (cd "$BASE_SRC" && CARGO_TARGET_DIR=$TARGET_DIR/bench-baseline \
          cargo build --release -p signaling-examples --example "${t%_base}") >"$OUT/logs/build-$t.log" 2>&1; then
        AVAILABLE[$t]=1
      else
        log "skip $t: no build of $BASELINE (see $OUT/logs/build-$t.log)"
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
  echo "rustc: $(rustc --version)"
  echo "node: $(node --version 2>/dev/null || echo none)"
  echo "kernel: $(uname -sr); cores: $(nproc); $(grep -m1 'model name' /proc/cpuinfo || true)"
  echo "rounds: $ROUNDS; quick: $QUICK; nice: $NICE; targets: ${TARGET_LIST[*]}"
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
      log "machine still busy (${busy}% of a core used by others); measuring anyway (see other_cpu_pct; --nice -10 helps)"
      return 0
    fi
    waited=$(( waited + 1 ))
  done
}

SERVER_PID=""
start_server() { # target port logfile [keep-budget]
  local t=$1 port=$2 logf=$3 keep_budget=${4:-} cmd=()
  case $t in
    ws_server|basic_server|ws_server_base|basic_server_base)
      local bin=$TARGET_DIR/release/examples/$t
      case $t in *_base) bin=$TARGET_DIR/bench-baseline/release/examples/${t%_base} ;; esac
      cmd=("$bin" --addr "127.0.0.1:$port")
      # Limits off, for the flags this build has (a missing one is logged:
      # its default limit may then shape the figures).
      local help flag
      help=$("$bin" --help 2>&1 || true)
      for flag in --rate-limit --max-connections --max-connections-per-ip \
          --max-pending-requests --max-pending-requests-per-ip \
          --max-not-logged-in --max-not-logged-in-per-ip --max-total-queued-mib; do
        if [ "$flag" = --max-total-queued-mib ] && [ -n "$keep_budget" ]; then continue; fi
        if grep -qE -- "$flag[ =]" <<<"$help"; then
          cmd+=("$flag" 0)
        else
          log "$t has no $flag option; running with its default"
        fi
      done ;;
    ceiling) cmd=("$TARGET_DIR/release/ceiling" --addr "127.0.0.1:$port") ;;
    node) cmd=(env PORT="$port" QUIET=1 node "$NODE_DIR/server.js") ;;
  esac
  local i pidfile=$OUT/logs/server.pid
  if [ ${#PRIO[@]} -gt 0 ]; then
    rm -f "$pidfile"
    PIDFILE=$pidfile "${PRIO[@]}" taskset -c 0 "${cmd[@]}" >"$logf" 2>&1 &
    for i in $(seq 50); do [ -s "$pidfile" ] && break; sleep 0.1; done
    SERVER_PID=$(cat "$pidfile" 2>/dev/null || true)
    if [ -z "$SERVER_PID" ]; then log "$t: no pid from the priority wrapper"; return 1; fi
  else
    taskset -c 0 "${cmd[@]}" >"$logf" 2>&1 &
    SERVER_PID=$!
  fi
  # Every wrapper execs, so SERVER_PID is the server itself; wait until it listens.
  for i in $(seq 150); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      log "$t exited before listening (see $logf)"; SERVER_PID=""; return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$t did not listen on $port within 15 s"; stop_server; return 1
}

stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill "$SERVER_PID" 2>/dev/null || true
  local i
  for i in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
trap stop_server EXIT

summary() { # one loadgen JSON line -> a few figures for the console
  grep -oE '"(logins_per_s|msgs_per_s|round_trips_per_s|p50|p99|failures|lost|other_cpu_pct|server_rss_per_conn_bytes|server_rss_peak_kib|server_rss_after_close_kib|refused_server_overloaded|error)":("[^"]*"|[0-9.]+)' \
    <<<"$1" | awk -F'":' '!seen[$1]++' | tr '\n' ' '
}

run_case() { # target url round "name|loadgen arguments"
  local t=$1 url=$2 round=$3 c=$4 name args line raw=$OUT/raw/r$3-$1.jsonl
  name=${c%%|*}
  args=${c#*|}
  if [ -n "$ONLY" ] && ! grep -qE "$ONLY" <<<"$name"; then return 0; fi
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "{\"label\":\"$t\",\"case\":\"$name\",\"workload\":\"${args%% *}\",\"error\":\"server died earlier\"}" >>"$raw"
    return 0
  fi
  # shellcheck disable=SC2086 # args is a list of words
  line=$("${PRIO[@]}" taskset -c 1 timeout 600 "$LOADGEN" --url "$url" --label "$t" --case "$name" \
    --server-pid "$SERVER_PID" $args 2>>"$OUT/logs/loadgen-r$round-$t.log" | tail -1) || true
  if [ -z "$line" ]; then
    line="{\"label\":\"$t\",\"case\":\"$name\",\"workload\":\"${args%% *}\",\"error\":\"loadgen printed nothing\"}"
  fi
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
        if start_server "$t" "$port" "$OUT/logs/server-r$round-$t-$name.log" $budget; then
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
