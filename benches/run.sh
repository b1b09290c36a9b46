#!/usr/bin/env bash
# Side-by-side benchmarks: builds tetherd, tether-load, the peer echo
# servers, loopback-floor and the runner in release mode, installs the
# uWebSockets.js peer of the fan-out scenarios (npm, into benches/peers),
# then runs them all and writes benches/RESULTS.md. Arguments go to the runner (`--help` lists
# them), e.g.
#   bash benches/run.sh --rounds 1 --duration 3 --note "quick look"
# Everything is built into one target directory: $CARGO_TARGET_DIR, or the
# main workspace's target/.
set -euo pipefail

benches="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$benches")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

command -v taskset >/dev/null || { echo "run.sh: taskset (util-linux) is required" >&2; exit 1; }
cargo build --release --manifest-path "$root/Cargo.toml" -p tetherd -p tether-load
cargo build --release --manifest-path "$benches/Cargo.toml"
command -v node >/dev/null || { echo "run.sh: node (20) is required for the uws.js peer" >&2; exit 1; }
if [ ! -d "$benches/peers/node_modules/@trufflesuite/uws-js-unofficial" ] \
    || [ "$benches/peers/package-lock.json" -nt "$benches/peers/node_modules" ]; then
    (cd "$benches/peers" && npm ci --no-audit --no-fund)
fi

# The idle scenario holds 15,000 connections in one server process, and
# loopback-floor 9,000 loopback pairs (18,000 descriptors) in one.
ulimit -n "$(ulimit -Hn)"
exec "$CARGO_TARGET_DIR/release/bench-runner" "$@"
