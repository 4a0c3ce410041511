#!/usr/bin/env bash
# Writes src/scan.rs and src/scan_old.rs, the two scanners measured, from the repository's
# history (they are not kept here twice). Run it inside the repository, then
# `cargo build --release && taskset -c 1 target/release/sonicbench`.
set -euo pipefail
cd "$(dirname "$0")"
extract() { # REV OUT: the scanner's code without its tests, its items public
  git show "$1:signaling-core/src/scan.rs" | python3 -c '
import sys
s = sys.stdin.read()
body = s[s.index("pub(crate) const MAX_DEPTH"):s.index("#[cfg(test)]\nmod tests {")]
body = body.replace("#[cfg(test)]\n", "").replace("pub(crate) ", "pub ")
sys.stdout.write("#![allow(dead_code)]\n" + body)
' >"$2"
}
extract 39d4e5e src/scan.rs
extract 3d3dbb9 src/scan_old.rs
