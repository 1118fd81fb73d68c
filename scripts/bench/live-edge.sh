#!/usr/bin/env bash
# Live-edge delay: how much later a new live segment is visible through the gateway than at its
# origin. A real ffmpeg live encoder (x264, 2 s segments, TS and fMP4 renditions) writes HLS into a
# directory that a plain nginx serves (the origin); the gateway (release build, follower on) sits in
# front of it. `loadtest edge-delay` polls the same media playlist at the origin and through the
# gateway side by side every 20 ms and reports, per rendition, the median / p99 / max of
# (seen at the gateway - seen at the origin) and the gateway's origin playlist requests per segment.
#
# Usage: scripts/bench/live-edge.sh [--quick]
#   --quick   30 s per rendition instead of 90 s (smoke run)
# Environment: BENCH_DURATION (s) [90], BENCH_SKIP_BUILD=1 (use target/release as it is),
#   BENCH_OUT (directory for the JSON reports) [a temp dir, printed].
#
# Everything listens on 127.0.0.1 and lives in a temp dir removed on exit; the system's nginx is not
# touched. Missing nginx / ffmpeg are installed with apt-get when run as root.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/../.." && pwd)"
DURATION="${BENCH_DURATION:-90}"
for arg in "$@"; do
  case "$arg" in
    --quick) DURATION=30 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { printf '[live-edge] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v curl >/dev/null 2>&1 || need+=(curl)
if ((${#need[@]})); then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing ${need[*]}"
    apt-get install -y -qq "${need[@]}" >/dev/null || { apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; }
  else
    die "missing ${need[*]}"
  fi
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  log "building gateway and loadtest (release)"
  (cd "$REPO_ROOT" && cargo build --release -q -p gateway -p loadtest)
fi
GATEWAY="$REPO_ROOT/target/release/gateway"
LOADTEST="$REPO_ROOT/target/release/loadtest"

WORK="$(mktemp -d /tmp/live-edge.XXXXXX)"
OUT="${BENCH_OUT:-$WORK/out}"
mkdir -p "$WORK/www/ts" "$WORK/www/fmp4" "$WORK/nginx" "$OUT"
# nginx's workers run as an unprivileged user: they must be able to read what ffmpeg writes.
chmod 755 "$WORK" "$WORK/www" "$WORK/www/ts" "$WORK/www/fmp4"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -n "${BENCH_OUT:-}" ]] || log "reports were in $OUT (removed)"
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ORIGIN_PORT="$(free_port)"
GW_PORT="$(free_port)"

cat >"$WORK/nginx/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
  client_body_temp_path $WORK/nginx/cb; proxy_temp_path $WORK/nginx/pt;
  fastcgi_temp_path $WORK/nginx/fc; uwsgi_temp_path $WORK/nginx/uw; scgi_temp_path $WORK/nginx/sc;
  types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; video/iso.segment m4s; video/mp4 mp4; }
  default_type application/octet-stream;
  access_log off;
  server { listen 127.0.0.1:$ORIGIN_PORT; root $WORK/www; }
}
EOF
"$NGINX" -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
PIDS+=($!)

# One encoder per rendition, in real time (-re), a keyframe every 2 s, segments of 2 s.
encode() { # DIR FORMAT-ARGS...
  local dir="$1"; shift
  ffmpeg -hide_banner -loglevel error -re -f lavfi -i "testsrc2=size=640x360:rate=30" \
    -c:v libx264 -preset ultrafast -tune zerolatency -g 60 -keyint_min 60 -sc_threshold 0 -b:v 800k \
    -f hls -hls_time 2 -hls_list_size 6 -hls_flags delete_segments+program_date_time+temp_file \
    "$@" "$WORK/www/$dir/live.m3u8" &
  PIDS+=($!)
}
encode ts -hls_segment_filename "$WORK/www/ts/seg%05d.ts"
encode fmp4 -hls_segment_type fmp4 -hls_fmp4_init_filename init.mp4 -hls_segment_filename "$WORK/www/fmp4/seg%05d.m4s"

"$GATEWAY" --listen "127.0.0.1:$GW_PORT" --origin "http://127.0.0.1:$ORIGIN_PORT/" >"$WORK/gateway.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do
  curl -fs "http://127.0.0.1:$GW_PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
for dir in ts fmp4; do
  for _ in $(seq 50); do [[ -s "$WORK/www/$dir/live.m3u8" ]] && break; sleep 0.2; done
  [[ -s "$WORK/www/$dir/live.m3u8" ]] || die "the $dir encoder wrote no playlist"
done

# The renditions one after the other (each run is the only load on the machine).
for dir in ts fmp4; do
  log "$dir: ${DURATION}s"
  "$LOADTEST" edge-delay \
    --origin "http://127.0.0.1:$ORIGIN_PORT/$dir/live.m3u8" \
    --gateway "http://127.0.0.1:$GW_PORT/$dir/live.m3u8" \
    --metrics "http://127.0.0.1:$GW_PORT/metrics" \
    --duration "${DURATION}s" --warmup 10s >"$OUT/$dir.json"
  python3 - "$dir" "$OUT/$dir.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[2]))
rps = r["origin_requests_per_segment"]
print(f"{sys.argv[1]}: segments {r['segments']} (missed {r['missed']}), gateway - origin: "
      f"median {r['median_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, max {r['max_ms']:.0f} ms; "
      f"origin playlist requests per segment {rps:.2f}" if rps is not None else "n/a")
PY
done
log "machine: $(nproc) cores, $(uname -r); date: $(date -u +%Y-%m-%dT%H:%MZ); commit $(git -C "$REPO_ROOT" rev-parse --short HEAD)"
