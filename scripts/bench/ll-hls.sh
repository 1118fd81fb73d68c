#!/usr/bin/env bash
# LL-HLS live latency, P2P viewers against HTTP-only viewers in the same run. The synthetic origin
# serves LL-HLS (`loadtest origin --live --ll-hls --part 0.5s`, 2 s segments, 3 renditions); the
# gateway (release build, defaults) holds the players' blocking reloads; `loadtest run --p2p ab`
# splits the viewers into a P2P cohort (a peer-assist node each; parts over HTTP, whole segments
# through the node) and an HTTP cohort, both playing at low latency (blocking reloads, parts at the
# edge), and reports each cohort's live latency (wall clock minus EXT-X-PROGRAM-DATE-TIME at the
# playhead), stalls and offload. A second run, --p2p ab --no-low-latency, plays the same stream like
# a classic player (whole segments, one target duration behind): its P2P cohort shows whole
# segments behind the live edge going to peers.
#
# Usage: scripts/bench/ll-hls.sh
# Environment: BENCH_VIEWERS [40], BENCH_DURATION [60s], BENCH_SKIP_BUILD=1, BENCH_OUT (JSON
#   reports) [a temp dir, printed]. Loopback only; no network emulation (ideal links).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/../.." && pwd)"
VIEWERS="${BENCH_VIEWERS:-40}"
DURATION="${BENCH_DURATION:-60s}"
log() { printf '[ll-hls] %s\n' "$*" >&2; }

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  log "building gateway and loadtest (release)"
  (cd "$REPO_ROOT" && cargo build --release -q -p gateway -p loadtest)
fi
GATEWAY="$REPO_ROOT/target/release/gateway"
LOADTEST="$REPO_ROOT/target/release/loadtest"
WORK="$(mktemp -d /tmp/ll-hls.XXXXXX)"
OUT="${BENCH_OUT:-$WORK}"
mkdir -p "$OUT"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

"$LOADTEST" origin --live --ll-hls --part 0.5s --listen 127.0.0.1:19300 >"$WORK/origin.log" 2>&1 &
pids+=($!)
GATEWAY_P2P_MAX_PEERS_PER_ADDRESS=100000 "$GATEWAY" --listen 127.0.0.1:19301 \
  --origin http://127.0.0.1:19300/ --log-level warn >"$WORK/gateway.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
  curl -fsS -o /dev/null http://127.0.0.1:19301/synthetic/master.m3u8 2>/dev/null && break
  sleep 0.2
done

URL=http://127.0.0.1:19301/synthetic/master.m3u8
log "$VIEWERS viewers for $DURATION, --p2p ab, low latency"
"$LOADTEST" run --url "$URL" --viewers "$VIEWERS" --duration "$DURATION" --ramp 10s --p2p ab \
  --rendition 1 --gateway-metrics http://127.0.0.1:19301/metrics --json "$OUT/ab.json" --quiet
log "$VIEWERS viewers for $DURATION, --p2p ab, --no-low-latency"
"$LOADTEST" run --url "$URL" --viewers "$VIEWERS" --duration "$DURATION" --ramp 10s --p2p ab \
  --rendition 1 --no-low-latency --json "$OUT/classic.json" --quiet
log "reports: $OUT/ab.json $OUT/classic.json"
python3 - "$OUT/ab.json" "$OUT/classic.json" <<'PY'
import json, sys
ab = json.load(open(sys.argv[1])); classic = json.load(open(sys.argv[2]))
def row(name, q):
    l = q["live_latency_ms"]
    print(f"| {name} | {l['p50']:.0f} | {l['p95']:.0f} | {q['stalls']} | {q['stall_ratio']:.4f} | {q['offload_ratio']*100:.1f}% |")
print("| cohort | live latency p50 ms | p95 ms | stalls | stall ratio | offload |")
print("|---|---:|---:|---:|---:|---:|")
row("P2P, low latency", ab["cohorts"]["p2p"])
row("HTTP, low latency", ab["cohorts"]["http"])
row("P2P, classic (--no-low-latency)", classic["cohorts"]["p2p"])
row("HTTP, classic (--no-low-latency)", classic["cohorts"]["http"])
PY
