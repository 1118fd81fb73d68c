#!/usr/bin/env bash
# Our engine against the open-source anchor, hls.js + p2p-media-loader 2.3 (with a local
# bittorrent-tracker on loopback), in Debian's Chromium: the same live stream of a fresh gateway,
# the same viewers, joins and duration, taking turns (scripts/bench/anchor/run.mjs says how each
# viewer is measured). Prints per-viewer offload, stalls, startup and live latency
# (docs/BENCHMARKS.md, "Against p2p-media-loader").
#
# Usage: scripts/bench/anchor.sh
# Environment: VIEWERS [4], JOIN_EVERY [10] s, WATCH [60] s after the last join, ROUNDS [1],
#   SETUPS [ours,pml-default,pml-live; also ours-http: our page without the engine],
#   STREAM [/demo/live/master.m3u8], BENCH_SKIP_BUILD=1,
#   BENCH_OUT [a temp dir, printed]. Needs chromium (apt) and the npm registry (first run).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/../.." && pwd)"
HERE="$SCRIPT_DIR/anchor"
OUT="${BENCH_OUT:-$(mktemp -d /tmp/anchor.XXXXXX)}"
mkdir -p "$OUT"
log() { printf '[anchor] %s\n' "$*" >&2; }

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  log "building the gateway (release)"
  (cd "$REPO_ROOT" && cargo build --release -q -p gateway --bins)
fi
command -v chromium >/dev/null || { echo "anchor.sh needs Debian's chromium (apt-get install chromium)" >&2; exit 1; }
# The tracker's optional native WebRTC (node-datachannel) is for Node peers, not needed here.
(cd "$HERE" && npm ci --ignore-scripts --no-audit --no-fund --silent)
(cd "$HERE" && ./node_modules/.bin/esbuild pml-page.js --bundle --format=iife --log-level=error \
  --alias:p2p-media-loader-core=./node_modules/p2p-media-loader-core/dist/p2p-media-loader-core.es.js \
  --outfile="$OUT/pml.bundle.js")
cp "$HERE/pml.html" "$OUT/"
GATEWAY_BIN="$REPO_ROOT/target/release/gateway" PAGE_DIR="$OUT" OUT="$OUT/anchor.json" \
  node "$HERE/run.mjs" | tee "$OUT/table.md"
log "results in $OUT"
