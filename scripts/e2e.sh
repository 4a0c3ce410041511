#!/usr/bin/env bash
# Browser end-to-end tests: the demo page (examples/demo) served by basic_server, two or more
# headless Chromium instances holding real WebRTC calls through it (see e2e/e2e.mjs).
#
#   bash scripts/e2e.sh
#
# Installs Debian's chromium and coturn if they are missing (needs root or sudo), installs the Node test
# dependencies (playwright-core only; it never downloads a browser), builds basic_server, runs the
# tests against it on a free loopback port. Screenshots go to e2e/artifacts/. Exits non-zero on
# any failure. Honours CARGO_TARGET_DIR, CHROMIUM (browser path) and E2E_ARTIFACTS.
set -euo pipefail
cd "$(dirname "$0")/.."

export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

if [ ! -x "$CHROMIUM" ]; then
  echo "e2e: $CHROMIUM not found; installing Debian's chromium"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
"$CHROMIUM" --version 2>/dev/null | head -n1 || true

# coturn for the TURN relay test (e2e.mjs starts its own on a free port); without it that test is
# skipped with one SKIPPED line, except under CI=true.
if ! command -v "${TURNSERVER:-turnserver}" >/dev/null; then
  echo "e2e: turnserver not found; installing Debian's coturn"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  if $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq coturn >/dev/null; then
    # The package may start a system TURN server: stop it, the test starts its own.
    $sudo service coturn stop >/dev/null 2>&1 || true
  else
    echo "e2e: could not install coturn"
  fi
fi

if ! command -v node >/dev/null; then
  echo "e2e: node (>= 20) is required" >&2
  exit 1
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "e2e: node >= 20 is required, found $(node --version)" >&2
  exit 1
fi

echo "e2e: npm ci (e2e/)"
(cd e2e && npm ci --no-audit --no-fund --loglevel=error)

echo "e2e: cargo build --example basic_server"
cargo build --example basic_server
target_dir="$(cargo metadata --format-version 1 --no-deps | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')"
server="$target_dir/debug/examples/basic_server"
if [ ! -x "$server" ]; then
  echo "e2e: $server was not built" >&2
  exit 1
fi

# The test bounds itself (about a minute when green, 4 minutes at most); this is a backstop.
timeout --kill-after=10 300 node e2e/e2e.mjs -- "$server"
