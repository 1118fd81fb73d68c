#!/usr/bin/env bash
# Does the harness's in-process network model (`loadtest run --uplink/--downlink/--rtt/--loss`,
# peer_assist::net) agree with the kernel's? The same small P2P swarm plays the same live stream
# twice through one gateway:
#   1. the kernel: each viewer is a `loadtest run --viewers 1 --p2p on` in a network namespace of
#      its own, on a bridge with the gateway's namespace; its link shaped by tc (uplink on its veth,
#      downlink on the bridge port towards it): `netem` (rate, delay, loss) when the kernel has it,
#      else `tbf` (rate only: no delay, no loss);
#   2. in-process: one `loadtest run --viewers N --p2p on` with the same rates (and delay and loss
#      when netem was used), in the gateway's namespace.
# It prints offload, stalls, startup and segment latency of both side by side.
#
# Namespaces (pa-hub, pa-gw, pa-v1..N) and their 10.77.0.0/24 addresses exist only inside this
# machine, are created here and removed on exit. Needs root, iproute2 (ip, tc) and the release
# binaries (built unless BENCH_SKIP_BUILD=1).
#
# Usage: scripts/bench/netns-agreement.sh
# Environment: VIEWERS [8], DURATION [60s], RAMP_S [8], UPLINK [4M], DOWNLINK [20M], RTT [60ms],
#   LOSS [0.5%] (RTT and LOSS apply only where netem exists), BENCH_OUT [a temp dir, printed].
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/../.." && pwd)"
VIEWERS="${VIEWERS:-8}"
DURATION="${DURATION:-60s}"
RAMP_S="${RAMP_S:-8}"
UPLINK="${UPLINK:-4M}"
DOWNLINK="${DOWNLINK:-20M}"
RTT="${RTT:-60ms}"
LOSS="${LOSS:-0.5%}"
PATH=$PATH:/usr/sbin:/sbin
log() { printf '[netns] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[[ $EUID -eq 0 ]] || die "needs root (network namespaces)"
command -v ip >/dev/null && command -v tc >/dev/null || die "needs iproute2 (apt-get install iproute2)"
[[ $VIEWERS =~ ^[1-9][0-9]?$ && $VIEWERS -le 60 ]] || die "VIEWERS must be 1 to 60"
[[ $RAMP_S =~ ^[0-9]+$ ]] || die "RAMP_S must be whole seconds"

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  log "building gateway and loadtest (release)"
  (cd "$REPO_ROOT" && cargo build --release -q -p gateway -p loadtest --bins)
fi
GATEWAY="$REPO_ROOT/target/release/gateway"
LOADTEST="$REPO_ROOT/target/release/loadtest"
OUT="${BENCH_OUT:-$(mktemp -d /tmp/netns-agreement.XXXXXX)}"
mkdir -p "$OUT"

namespaces=(pa-hub pa-gw)
for i in $(seq "$VIEWERS"); do namespaces+=("pa-v$i"); done
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT
for ns in "${namespaces[@]}"; do
  ip netns del "$ns" 2>/dev/null || true
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done

# Rates for tc: loadtest's grammar (4M, 400k) is tc's (4mbit, 400kbit).
tc_rate() { local r=${1,,}; r=${r/k/kbit}; r=${r/m/mbit}; r=${r/g/gbit}; [[ $r == *bit ]] || r="${r}bit"; echo "$r"; }
half_ms() { local ms; ms=$(sed -E 's/ms$//; s/s$/*1000/' <<<"$1" | bc); echo "$(bc <<<"scale=1; $ms / 2")ms"; }

# Does this kernel have netem? (Firecracker-style kernels often lack it.)
if ip netns exec pa-hub tc qdisc add dev lo root netem delay 1ms 2>/dev/null; then
  ip netns exec pa-hub tc qdisc del dev lo root
  netem=1
  log "shaping with netem: rate, delay ${RTT} round trip, loss ${LOSS}"
else
  netem=0
  log "this kernel has no netem: shaping rates only (tbf); both runs without delay and loss"
fi
shape() { # NS DEV RATE
  if [[ $netem == 1 ]]; then
    ip netns exec "$1" tc qdisc add dev "$2" root netem rate "$(tc_rate "$3")" \
      delay "$(half_ms "$RTT")" loss "${4:-0%}" limit 10000
  else
    ip netns exec "$1" tc qdisc add dev "$2" root tbf rate "$(tc_rate "$3")" burst 16kb latency 250ms
  fi
}

ip -n pa-hub link add br0 type bridge
ip -n pa-hub link set br0 up
ip link add gw0 netns pa-gw type veth peer name gwp netns pa-hub
ip -n pa-gw addr add 10.77.0.1/24 dev gw0
ip -n pa-gw link set gw0 up
ip -n pa-hub link set gwp master br0 up
for i in $(seq "$VIEWERS"); do
  ip link add v0 netns "pa-v$i" type veth peer name "vp$i" netns pa-hub
  ip -n "pa-v$i" addr add "10.77.0.$((10 + i))/24" dev v0
  ip -n "pa-v$i" link set v0 up
  ip -n pa-hub link set "vp$i" master br0 up
  shape "pa-v$i" v0 "$UPLINK" "$LOSS"     # the viewer's uplink
  shape pa-hub "vp$i" "$DOWNLINK" 0%      # its downlink (the bridge port's egress)
done

ip netns exec pa-gw "$LOADTEST" origin --live --listen 0.0.0.0:19500 >"$OUT/origin.log" 2>&1 &
pids+=($!)
ip netns exec pa-gw "$GATEWAY" --listen 0.0.0.0:19501 --origin http://127.0.0.1:19500/ \
  --log-level warn >"$OUT/gateway.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
  ip netns exec pa-gw curl -fsS -o /dev/null http://127.0.0.1:19501/synthetic/master.m3u8 2>/dev/null && break
  sleep 0.2
done

log "kernel: $VIEWERS viewers in their own namespaces for $DURATION"
runs=()
for i in $(seq "$VIEWERS"); do
  ip netns exec "pa-v$i" "$LOADTEST" run --url http://10.77.0.1:19501/synthetic/master.m3u8 \
    --allow-remote --viewers 1 --p2p on --rendition 1 --duration "$DURATION" --quiet \
    --p2p-bind "10.77.0.$((10 + i))" --json "$OUT/kernel-$i.json" >"$OUT/kernel-$i.log" 2>&1 &
  runs+=($!)
  sleep "$(bc <<<"scale=3; $RAMP_S / $VIEWERS")"
done
for pid in "${runs[@]}"; do wait "$pid" || die "a namespaced viewer failed: see $OUT/kernel-*.log"; done
sleep 5 # the swarm of the first run leaves the tracker

log "in-process: $VIEWERS viewers in one harness for $DURATION"
emulation=(--uplink "$UPLINK" --downlink "$DOWNLINK")
[[ $netem == 1 ]] && emulation+=(--rtt "$RTT" --loss "$LOSS")
ip netns exec pa-gw "$LOADTEST" run --url http://127.0.0.1:19501/synthetic/master.m3u8 \
  --viewers "$VIEWERS" --ramp "${RAMP_S}s" --p2p on --rendition 1 --duration "$DURATION" --quiet \
  "${emulation[@]}" --json "$OUT/inprocess.json" >"$OUT/inprocess.log" 2>&1
log "reports in $OUT"

python3 - "$OUT" "$VIEWERS" "$netem" <<'PY'
import json, statistics, sys
out, n, netem = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
kernel = [json.load(open(f"{out}/kernel-{i}.json")) for i in range(1, n + 1)]
inproc = json.load(open(f"{out}/inprocess.json"))
def http(r): return r["bytes"]["http"] if isinstance(r["bytes"], dict) else 0
def peer(r): return r["bytes"]["peer"] if isinstance(r["bytes"], dict) else 0
k_peer, k_all = sum(peer(r) for r in kernel), sum(peer(r) + http(r) for r in kernel)
rows = [
    ("offload", f"{k_peer / max(k_all, 1):.1%}", f"{inproc['offload_ratio']:.1%}"),
    ("stalls", sum(r["stalls"] for r in kernel), inproc["stalls"]),
    ("startup p50 ms", round(statistics.median(r["startup_ms"]["p50"] for r in kernel)), round(inproc["startup_ms"]["p50"])),
    ("segment latency p50 ms", round(statistics.median(r["segment_latency_ms"]["p50"] for r in kernel)), round(inproc["segment_latency_ms"]["p50"])),
    ("segment latency p95 ms", round(statistics.median(r["segment_latency_ms"]["p95"] for r in kernel)), round(inproc["segment_latency_ms"]["p95"])),
    ("P2P timeouts (fallbacks)", sum(r["fallbacks"]["timeout"] for r in kernel), inproc["fallbacks"]["timeout"]),
]
print(f"shaping: {'netem (rate, delay, loss)' if netem else 'tbf (rates only)'}")
print("| measure | kernel (namespaces, tc) | in-process model |")
print("|---|---:|---:|")
for name, a, b in rows:
    print(f"| {name} | {a} | {b} |")
PY
