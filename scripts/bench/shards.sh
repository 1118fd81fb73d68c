#!/usr/bin/env bash
# The same P2P A/B run played once by one `loadtest run` process and once split into SHARDS
# processes (`--shard I/N`, started together, then `loadtest merge`), against one gateway and one
# synthetic live origin on loopback. Prints, side by side, the P2P and HTTP cohorts of both and the
# harness's own CPU (per process and in all): whether splitting changes what is measured, and what
# a simulated viewer costs the harness (docs/BENCHMARKS.md, "Harness scale").
#
# Usage: scripts/bench/shards.sh
# Environment: VIEWERS [200], DURATION [60s], RAMP [20s], SHARDS [2],
#   EMULATION ["--uplink 1M..10M --rtt 20ms..150ms --unreachable 0.2", issue 14's check],
#   BENCH_SKIP_BUILD=1, BENCH_OUT [a temp dir, printed]. Loopback only.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/../.." && pwd)"
VIEWERS="${VIEWERS:-200}"
DURATION="${DURATION:-60s}"
RAMP="${RAMP:-20s}"
SHARDS="${SHARDS:-2}"
read -r -a emulation <<<"${EMULATION:---uplink 1M..10M --rtt 20ms..150ms --unreachable 0.2}"
log() { printf '[shards] %s\n' "$*" >&2; }

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  log "building gateway and loadtest (release)"
  (cd "$REPO_ROOT" && cargo build --release -q -p gateway -p loadtest --bins)
fi
GATEWAY="$REPO_ROOT/target/release/gateway"
LOADTEST="$REPO_ROOT/target/release/loadtest"
OUT="${BENCH_OUT:-$(mktemp -d /tmp/shards.XXXXXX)}"
mkdir -p "$OUT"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

"$LOADTEST" origin --live --listen 127.0.0.1:19700 >"$OUT/origin.log" 2>&1 &
pids+=($!)
# Every simulated viewer is 127.0.0.1: raise the per-address tracker cap.
GATEWAY_P2P_MAX_PEERS_PER_ADDRESS=100000 "$GATEWAY" --listen 127.0.0.1:19701 \
  --origin http://127.0.0.1:19700/ --log-level warn >"$OUT/gateway.log" 2>&1 &
gateway_pid=$!
pids+=("$gateway_pid")
for _ in $(seq 50); do
  curl -fsS -o /dev/null http://127.0.0.1:19701/synthetic/master.m3u8 2>/dev/null && break
  sleep 0.2
done
run=(run --url http://127.0.0.1:19701/synthetic/master.m3u8 --viewers "$VIEWERS" --duration "$DURATION"
  --ramp "$RAMP" --p2p ab --gateway-pid "$gateway_pid" --quiet "${emulation[@]}")

log "one process: $VIEWERS viewers, $DURATION, ${emulation[*]}"
"$LOADTEST" "${run[@]}" --json "$OUT/single.json" >"$OUT/single.txt"
sleep 10 # the swarm of the first run leaves the tracker

log "$SHARDS processes of the same run"
shard_pids=()
for ((i = 0; i < SHARDS; i++)); do
  "$LOADTEST" "${run[@]}" --shard "$i/$SHARDS" --json "$OUT/shard-$i.json" >"$OUT/shard-$i.txt" &
  shard_pids+=($!)
done
for pid in "${shard_pids[@]}"; do wait "$pid"; done
shard_files=()
for ((i = 0; i < SHARDS; i++)); do shard_files+=("$OUT/shard-$i.json"); done
"$LOADTEST" merge "${shard_files[@]}" --json "$OUT/merged.json" >"$OUT/merged.txt"

python3 - "$OUT" "$SHARDS" <<'EOF'
import json, os, sys
out, shards = sys.argv[1], int(sys.argv[2])
def load(name):
    with open(f"{out}/{name}.json") as f:
        return json.load(f)
runs = [("one process", load("single"))] + [(f"{shards} shards, merged", load("merged"))]
print("| run | cohort | viewers | offload | stalls | startup p50 / p95 ms | avg bitrate kbit/s | segment latency p50 ms |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for name, r in runs:
    for cohort in ("p2p", "http"):
        c = r["cohorts"][cohort]
        print(f"| {name} | {cohort} | {c['viewers']} | {c['offload_ratio']*100:.1f}% | {c['stalls']} | "
              f"{c['startup_ms']['p50']:.0f} / {c['startup_ms']['p95']:.0f} | {c['average_bitrate']/1000:.0f} | "
              f"{c['segment_latency_ms']['p50']:.0f} |")
print()
print("| run | harness CPU s | harness CPU of the machine | per viewer, CPU ms/s | gateway CPU s | upload/download p99 |")
print("|---|---:|---:|---:|---:|---:|")
for name, r in runs:
    h = r["harness"]
    per = h["cpu_s"] * 1000 / (r["viewers"] * r["duration_s"]) if h["cpu_s"] else float("nan")
    g = r.get("gateway") or {}
    share = h["cpu_s"] / (r["duration_s"] * os.cpu_count())
    print(f"| {name} | {h['cpu_s']:.1f} | {share*100:.0f}% | {per:.2f} | {g.get('cpu_s', float('nan')):.1f} | "
          f"{r['upload_ratio']['p99']} |")
for i in range(shards):
    s = load(f"shard-{i}")
    print(f"shard {i}/{shards}: {s['viewers']} viewers, harness CPU {s['harness']['cpu_s']:.1f} s "
          f"({s['harness']['cpu_ratio']*100:.0f}% of the machine)")
EOF
log "reports in $OUT"
