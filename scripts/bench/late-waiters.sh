#!/usr/bin/env bash
# Time to first byte for a viewer that joins an origin fetch already under way. A plain nginx is the
# origin and sends each 2 MiB segment at 1 MB/s (`limit_rate`), so one transfer takes about 2 s;
# the gateway (release build, defaults) sits in front. Each round asks the gateway for a segment no
# one asked for before (the fetch starts), then 20 late viewers ask for the same segment at
# evenly spread moments of the transfer (0.1 to 1.9 s after it started). For each late viewer:
# the time from its request to the first body byte (TTFB), to the last byte, and how much of the
# transfer was left when it joined; for reference, the origin's own TTFB for a fresh request at the
# same moment. Without streaming to waiters, a late viewer's first byte would come only with the
# whole object (the remaining transfer time).
#
# Usage: scripts/bench/late-waiters.sh   Environment: BENCH_ROUNDS [10], BENCH_SKIP_BUILD=1.
# Loopback only; everything lives in a temp dir removed on exit.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/../.." && pwd)"
ROUNDS="${BENCH_ROUNDS:-10}"
log() { printf '[late-waiters] %s\n' "$*" >&2; }
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
[[ -x "$NGINX" ]] || { log "needs nginx (apt-get install nginx)"; exit 1; }
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  log "building the gateway (release)"
  (cd "$REPO_ROOT" && cargo build --release -q -p gateway)
fi
GATEWAY="$REPO_ROOT/target/release/gateway"

WORK="$(mktemp -d /tmp/late-waiters.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/www/slow" "$WORK/nginx"
chmod 755 "$WORK" "$WORK/www" "$WORK/www/slow"
head -c $((2 * 1024 * 1024)) /dev/urandom >"$WORK/seg.bin"
for i in $(seq "$ROUNDS"); do cp "$WORK/seg.bin" "$WORK/www/slow/seg$i.ts"; done
chmod 644 "$WORK"/www/slow/*

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ORIGIN_PORT="$(free_port)"
GW_PORT="$(free_port)"
cat >"$WORK/nginx/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
  client_body_temp_path $WORK/nginx/cb; proxy_temp_path $WORK/nginx/pt;
  fastcgi_temp_path $WORK/nginx/fc; uwsgi_temp_path $WORK/nginx/uw; scgi_temp_path $WORK/nginx/sc;
  types { video/mp2t ts; }
  access_log off;
  server {
    listen 127.0.0.1:$ORIGIN_PORT; root $WORK/www;
    location /slow/ { limit_rate 1m; limit_rate_after 0; add_header Cache-Control "max-age=3600"; }
  }
}
CONF
"$NGINX" -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
PIDS+=($!)
"$GATEWAY" --listen "127.0.0.1:$GW_PORT" --origin "http://127.0.0.1:$ORIGIN_PORT/" >"$WORK/gateway.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do
  curl -fs "http://127.0.0.1:$GW_PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done

python3 - "$GW_PORT" "$ORIGIN_PORT" "$ROUNDS" <<'PY'
import http.client, statistics, sys, threading, time
gw, origin, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
WAITERS = 20

def fetch(port, path, out, first_only=False):
    sent = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    resp = conn.getresponse()
    first = resp.read(1)
    ttfb = time.monotonic() - sent
    rest = b"" if first_only else resp.read()
    done = time.monotonic() - sent
    out.append((sent, ttfb, done, resp.status, len(first) + len(rest)))
    conn.close()

ttfbs, dones, lefts, origin_ttfbs = [], [], [], []
for r in range(1, rounds + 1):
    path = f"/slow/seg{r}.ts"
    starter = []
    t = threading.Thread(target=fetch, args=(gw, path, starter))
    start = time.monotonic()
    t.start()
    waiters, threads = [], []
    for i in range(WAITERS):
        at = start + 0.1 + 1.8 * i / (WAITERS - 1)
        time.sleep(max(0.0, at - time.monotonic()))
        th = threading.Thread(target=fetch, args=(gw, path, waiters))
        th.start(); threads.append(th)
        if i % 5 == 0:
            ref = []
            fetch(origin, "/slow/seg1.ts", ref, first_only=True)  # the origin's own TTFB
            origin_ttfbs.append(ref[0][1])
    for th in threads + [t]:
        th.join()
    end = start + starter[0][2]
    for sent, ttfb, done, status, size in waiters:
        assert status == 200 and size == 2 * 1024 * 1024, (status, size)
        ttfbs.append(ttfb); dones.append(done); lefts.append(max(0.0, end - sent))

def q(xs, p):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(p * len(xs)))]
ms = lambda s: f"{s * 1000:.1f}"
print(f"late waiters: {len(ttfbs)} over {rounds} rounds (2 MiB at 1 MB/s, joined 0.1-1.9 s into the transfer)")
print("| | median ms | p99 ms | max ms |")
print("|---|---:|---:|---:|")
print(f"| late waiter TTFB through the gateway | {ms(statistics.median(ttfbs))} | {ms(q(ttfbs, 0.99))} | {ms(max(ttfbs))} |")
print(f"| origin TTFB, fresh request (reference) | {ms(statistics.median(origin_ttfbs))} | {ms(q(origin_ttfbs, 0.99))} | {ms(max(origin_ttfbs))} |")
print(f"| transfer left when the waiter joined | {ms(statistics.median(lefts))} | {ms(q(lefts, 0.99))} | {ms(max(lefts))} |")
print(f"| late waiter, request to last byte | {ms(statistics.median(dones))} | {ms(q(dones, 0.99))} | {ms(max(dones))} |")
PY
log "machine: $(nproc) cores, $(uname -r); date: $(date -u +%Y-%m-%dT%H:%MZ); commit $(git -C "$REPO_ROOT" rev-parse --short HEAD)"
