#!/usr/bin/env bash
# Tracker benchmark: N signalling peers in swarms of 200 on one gateway (release builds), reporting
# the join rate, join latency (TCP connect → first `peers` list), and the gateway's RSS and CPU per
# peer from /proc/<pid>/. Prints a markdown report; paste it into docs/BENCHMARKS.md.
#
# Usage: scripts/bench/tracker.sh
# Environment (defaults in brackets):
#   PEERS   peers to connect [19800: the gateway needs one descriptor a peer, plus its own, under
#           a hard `ulimit -n` of 20000 here]
#   RATE    joins started per second [500]
#   SWARM   peers per swarm (one rendition of a synthetic stream each) [200]
#   HOLD    how long every peer stays after the joins [10s]
#   BENCH_SKIP_BUILD=1  use the existing target/release binaries
set -euo pipefail
cd "$(dirname "$0")/../.."
PEERS=${PEERS:-19800}
RATE=${RATE:-500}
SWARM=${SWARM:-200}
HOLD=${HOLD:-10s}
ORIGIN_ADDR=127.0.0.1:19000
GATEWAY_ADDR=127.0.0.1:18080
bin=${CARGO_TARGET_DIR:-target}/release
if [[ -z "${BENCH_SKIP_BUILD:-}" ]]; then
  cargo build --release -p gateway -p loadtest
fi
ulimit -n "$(ulimit -Hn)"
renditions=$(( (PEERS + SWARM - 1) / SWARM ))
bitrates=$(seq 200 $((200 + renditions - 1)) | sed 's/$/k/' | paste -sd,)
"$bin/loadtest" origin --live --bitrate "$bitrates" --listen "$ORIGIN_ADDR" >/dev/null 2>&1 &
origin=$!
"$bin/gateway" --origin "http://$ORIGIN_ADDR/" --listen "$GATEWAY_ADDR" --log-level warn \
  --p2p-max-peers-per-address 1000000 --p2p-max-swarms-per-address 100000 >/dev/null 2>&1 &
gateway=$!
trap 'kill $origin $gateway 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -fs "http://$GATEWAY_ADDR/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
# Warm the multivariant playlist (the first join would fetch it anyway).
curl -fs "http://$GATEWAY_ADDR/synthetic/master.m3u8" >/dev/null
echo "peers=$PEERS rate=$RATE/s swarm=$SWARM hold=$HOLD renditions=$renditions ($(nproc) cores, $(date -u +%FT%TZ))"
"$bin/loadtest" tracker --gateway "$GATEWAY_ADDR" --stream /synthetic/master.m3u8 \
  --peers "$PEERS" --swarm-size "$SWARM" --rate "$RATE" --hold "$HOLD" --gateway-pid "$gateway"
