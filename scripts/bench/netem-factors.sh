#!/usr/bin/env bash
# Which network condition hurts P2P? The same swarm of simulated P2P viewers plays the synthetic
# live stream through one gateway once on ideal loopback and once per emulated condition
# (loadtest run --uplink / --downlink / --rtt / --loss / --unreachable, one at a time), then once
# more as a P2P/HTTP A/B with all of them at once. Prints offload, P2P timeouts, segment latency
# and stalls per run, and for the A/B where the P2P viewers' HTTP bytes went (docs/BENCHMARKS.md,
# "P2P in emulated networks").
#
# Usage: scripts/bench/netem-factors.sh
# Environment: VIEWERS [20] (per factor run; 0: none), DURATION [40s], AB_VIEWERS [200] (0: skip the A/B
#   run), AB_DURATION [60s], RENDITION [auto: ABR; or an index, 0 = lowest, for every run],
#   FACTORS [the six below; or "name:flags;name:flags", e.g. "both:--uplink 1M..10M --rtt 20ms..150ms"],
#   AB_EMULATION [all five conditions; issue 14's check is "--uplink 1M..10M --rtt 20ms..150ms
#   --unreachable 0.2"], BENCH_SKIP_BUILD=1, BENCH_OUT [a temp dir, printed]. Loopback only.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/../.." && pwd)"
VIEWERS="${VIEWERS:-20}"
DURATION="${DURATION:-40s}"
AB_VIEWERS="${AB_VIEWERS:-200}"
AB_DURATION="${AB_DURATION:-60s}"
RENDITION="${RENDITION:-auto}"
log() { printf '[netem-factors] %s\n' "$*" >&2; }

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  log "building gateway and loadtest (release)"
  (cd "$REPO_ROOT" && cargo build --release -q -p gateway -p loadtest --bins)
fi
GATEWAY="$REPO_ROOT/target/release/gateway"
LOADTEST="$REPO_ROOT/target/release/loadtest"
OUT="${BENCH_OUT:-$(mktemp -d /tmp/netem-factors.XXXXXX)}"
mkdir -p "$OUT"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

"$LOADTEST" origin --live --listen 127.0.0.1:19600 >"$OUT/origin.log" 2>&1 &
pids+=($!)
# Every simulated viewer is 127.0.0.1: raise the per-address tracker cap.
GATEWAY_P2P_MAX_PEERS_PER_ADDRESS=100000 "$GATEWAY" --listen 127.0.0.1:19601 \
  --origin http://127.0.0.1:19600/ --log-level warn >"$OUT/gateway.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
  curl -fsS -o /dev/null http://127.0.0.1:19601/synthetic/master.m3u8 2>/dev/null && break
  sleep 0.2
done
URL=http://127.0.0.1:19601/synthetic/master.m3u8

factors=("none:" "rtt:--rtt 20ms..150ms" "uplink:--uplink 1M..10M" "downlink:--downlink 10M..50M"
  "loss:--loss 0..1%" "unreachable:--unreachable 0.2")
if [[ -n "${FACTORS:-}" ]]; then IFS=';' read -r -a factors <<<"$FACTORS"; fi
if [[ $VIEWERS == 0 ]]; then factors=(); fi
read -r -a ab_emulation <<<"${AB_EMULATION:---uplink 1M..10M --downlink 10M..50M --rtt 20ms..150ms --loss 0..1% --unreachable 0.2}"
names=()
for f in "${factors[@]+"${factors[@]}"}"; do
  name=${f%%:*}; read -r -a opts <<<"${f#*:}"; names+=("$name")
  log "$VIEWERS P2P viewers for $DURATION, emulation: ${f#*:}"
  "$LOADTEST" run --url "$URL" --viewers "$VIEWERS" --duration "$DURATION" --ramp 5s --p2p on --rendition "$RENDITION" \
    "${opts[@]}" --quiet --json "$OUT/factor-$name.json" >"$OUT/factor-$name.log" 2>&1
  sleep 3 # the previous swarm leaves the tracker
done
if [[ $AB_VIEWERS != 0 ]]; then
  log "$AB_VIEWERS viewers for $AB_DURATION, --p2p ab, emulation: ${ab_emulation[*]}"
  "$LOADTEST" run --url "$URL" --viewers "$AB_VIEWERS" --duration "$AB_DURATION" --ramp 20s \
    --p2p ab --rendition "$RENDITION" "${ab_emulation[@]}" --quiet --json "$OUT/ab.json" >"$OUT/ab.log" 2>&1
fi
log "reports in $OUT"
python3 - "$OUT" "${names[@]+"${names[@]}"}" <<'PY'
import json, os, sys
out = sys.argv[1]
print("| emulation | offload | P2P timeouts | segment latency p50 ms | stalls | uploaded / accepted MB | upload/download p99 |")
print("|---|---:|---:|---:|---:|---:|---:|")
for name in sys.argv[2:]:
    r = json.load(open(f"{out}/factor-{name}.json"))
    print(f"| {name} | {r['offload_ratio']:.1%} | {r['fallbacks']['timeout']} | "
          f"{r['segment_latency_ms']['p50']:.0f} | {r['stalls']} | "
          f"{r['uploaded_bytes'] / 1e6:.0f} / {r['bytes']['peer'] / 1e6:.0f} | {r['upload_ratio']['p99']} |")
if os.path.exists(f"{out}/ab.json"):
    r = json.load(open(f"{out}/ab.json"))
    for c in ["p2p", "http"]:
        q = r["cohorts"][c]
        print(f"| A/B, {c} cohort | {q['offload_ratio']:.1%} | - | "
              f"{q['segment_latency_ms']['p50']:.0f} | {q['stalls']} | - | - |")
    print(f"A/B: {r['uploaded_bytes'] / 1e6:.1f} MB uploaded by P2P viewers, "
          f"{r.get('p2p_received_bytes', 0) / 1e6:.1f} MB arrived at peers "
          f"({r.get('p2p_late_bytes', 0) / 1e6:.1f} MB after their Cancel), "
          f"{r['bytes']['peer'] / 1e6:.1f} MB accepted from peers, fallbacks {r['fallbacks']}")
    causes = r.get("http_bytes_by_cause", {})
    print("A/B: P2P viewers' HTTP MB by cause: " +
          ", ".join(f"{k} {v / 1e6:.0f}" for k, v in causes.items()))
PY
