#!/usr/bin/env bash
# Benchmarks the gateway against a tuned nginx 1.22 proxy_cache, side by side on this machine, with wrk.
#
# Both proxies sit in front of ONE origin (a plain nginx static server) and are measured on cache HITS
# for two objects: a 1 MiB segment (seg.ts) and a small VOD media playlist (index.m3u8). They take
# turns: for each object and each round, the gateway and nginx each get one wrk run, and the order
# alternates every round. Medians over the rounds, and the gateway/nginx ratios, are printed and
# written into docs/BENCHMARKS.md between markers (other sections of that file are kept).
#
# Usage: scripts/bench/gateway-vs-nginx.sh [--quick] [--no-doc | --doc] [--perf] [--help]
#
#   --quick     smoke run: 2 s per wrk run, 1 round; does NOT write the doc unless --doc is given
#   --no-doc    do not touch docs/BENCHMARKS.md (print only)
#   --doc       write docs/BENCHMARKS.md even with --quick
#   --perf      afterwards, profile the gateway and nginx's workers while wrk loads the playlist:
#               `perf stat` (CPU time, syscalls, context switches per request) and `perf record -g`,
#               reports saved under $BENCH_PERF_DIR (breakdown-gateway.md: scripts/bench/perf-breakdown.py)
#
# Environment (defaults in brackets):
#   BENCH_DURATION     seconds per wrk run [10; 2 with --quick]
#   BENCH_CONNECTIONS  wrk connections (-c) [32]
#   BENCH_THREADS      wrk threads (-t) [2]
#   BENCH_ROUNDS       rounds per object [3; 1 with --quick]
#   BENCH_QUICK=1      same as --quick
#   BENCH_OBJECTS      which objects to measure ["segment playlist"]
#   BENCH_RAW_DIR      if set, every wrk output (and raw.tsv) is copied there
#   BENCH_DOC          the file to write [<repo>/docs/BENCHMARKS.md]
#   BENCH_SKIP_BUILD=1 do not run cargo build (use the existing target/release/gateway)
#   GATEWAY_BIN        gateway binary to run [<repo>/target/release/gateway]
#   (the gateway inherits the environment: e.g. TOKIO_WORKER_THREADS=1 sets its runtime's worker count)
#   BENCH_PERF_SECONDS perf record duration with --perf [5]
#   BENCH_PERF_DIR     where --perf writes its reports [<repo>/target/bench-perf]
#   BENCH_PERF_CALLGRAPH, BENCH_PERF_FREQ  perf record --call-graph / -F [dwarf,16384 / 499]
#   BENCH_IDLE_WAIT    seconds to wait in all, at most, for other jobs to leave the CPUs [600; 0 with --quick]
#   BENCH_IDLE_BUSY_MAX  CPU busy percentage (1 s sample, servers idle) that counts as quiet [15]
#   BENCH_FOREIGN_MAX  % of all CPUs other processes may use during a run before it is redone [4]
#   BENCH_RETRIES      how many times a disturbed run is redone [5; 0 with --quick]
#
# Everything listens on 127.0.0.1 only, lives in a fresh temp dir, and is stopped and removed on exit.
# The system's nginx service and /etc/nginx are never touched. When run as root, missing nginx / wrk
# are installed with apt-get. Exit status: 0 ok, 1 setup failure, 3 a wrk run reported errors.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/../.." && pwd)"
SCRIPT_REL="scripts/bench/$(basename "${BASH_SOURCE[0]}")"

QUICK="${BENCH_QUICK:-0}"
WRITE_DOC=""
PERF=0
ORIG_ARGS=("$@")
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    --no-doc) WRITE_DOC=0 ;;
    --doc) WRITE_DOC=1 ;;
    --perf) PERF=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "unknown argument: $arg (try --help)" >&2
      exit 1
      ;;
  esac
done
if [[ "$QUICK" == 1 ]]; then
  DURATION="${BENCH_DURATION:-2}"
  ROUNDS="${BENCH_ROUNDS:-1}"
  WRITE_DOC="${WRITE_DOC:-0}"
else
  DURATION="${BENCH_DURATION:-10}"
  ROUNDS="${BENCH_ROUNDS:-3}"
  WRITE_DOC="${WRITE_DOC:-1}"
fi
CONNECTIONS="${BENCH_CONNECTIONS:-32}"
THREADS="${BENCH_THREADS:-2}"
DOC="${BENCH_DOC:-${REPO_ROOT}/docs/BENCHMARKS.md}"
GATEWAY_BIN="${GATEWAY_BIN:-${REPO_ROOT}/target/release/gateway}"
PERF_SECONDS="${BENCH_PERF_SECONDS:-5}"
PERF_DIR="${BENCH_PERF_DIR:-${REPO_ROOT}/target/bench-perf}"
# DWARF unwinding: the Rust release build and Debian's nginx have no frame pointers.
PERF_CALLGRAPH="${BENCH_PERF_CALLGRAPH:-dwarf,16384}"
PERF_FREQ="${BENCH_PERF_FREQ:-499}"
for v in DURATION ROUNDS CONNECTIONS THREADS PERF_SECONDS PERF_FREQ; do
  if ! [[ "${!v}" =~ ^[1-9][0-9]*$ ]]; then
    echo "$v must be a positive integer, got '${!v}'" >&2
    exit 1
  fi
done

log() { printf '[bench %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# ---------------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------------
need_install=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need_install+=(nginx)
command -v wrk >/dev/null 2>&1 || need_install+=(wrk)
command -v curl >/dev/null 2>&1 || need_install+=(curl)
if [[ "$PERF" == 1 ]] && ! command -v perf >/dev/null 2>&1; then need_install+=(linux-perf); fi
if ((${#need_install[@]})); then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing ${need_install[*]}"
    apt-get update -qq
    apt-get install -y -qq "${need_install[@]}" >/dev/null
  else
    die "missing ${need_install[*]}; install them (Debian 12: apt-get install -y ${need_install[*]})"
  fi
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
NGINX_VERSION="$("$NGINX" -v 2>&1 | sed 's|^nginx version: ||')"
case "$NGINX_VERSION" in
  nginx/1.22.*) ;;
  *) log "warning: expected nginx 1.22 (Debian 12), found $NGINX_VERSION" ;;
esac

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  log "building the gateway (cargo build --release -p gateway)"
  (cd "$REPO_ROOT" && cargo build --release -p gateway) || die "cargo build failed"
fi
[[ -x "$GATEWAY_BIN" ]] || die "no gateway binary at $GATEWAY_BIN"
# Recorded now, next to the build.
GIT_COMMIT="$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
# What the binary is built from: the gateway crate and the workspace's Cargo files.
CHANGED="$(git -C "$REPO_ROOT" status --porcelain -- gateway Cargo.toml Cargo.lock 2>/dev/null | wc -l | tr -d ' ')"
if [[ "${BENCH_SKIP_BUILD:-0}" == 1 ]]; then
  GIT_STATE="prebuilt binary \`${GATEWAY_BIN#"$REPO_ROOT"/}\` (not rebuilt by this run, so its source is not known; HEAD had $CHANGED uncommitted change(s) under gateway/ or in Cargo files)"
elif ((CHANGED > 0)); then
  GIT_STATE="plus $CHANGED uncommitted change(s) under gateway/ or in Cargo files (the binary includes them)"
else
  GIT_STATE="no uncommitted changes under gateway/ or in Cargo files"
fi

# ---------------------------------------------------------------------------------------------------
# Temp dir, processes, cleanup
# ---------------------------------------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gateway-bench.XXXXXX")"
# nginx workers run as an unprivileged user when started by root: they must be able to read the files.
chmod 755 "$WORK"
if [[ -d /dev/shm && -w /dev/shm ]]; then
  CACHE_ROOT="$(mktemp -d /dev/shm/gateway-bench-cache.XXXXXX)"
  CACHE_FS="tmpfs (/dev/shm)"
else
  CACHE_ROOT="$WORK/nginx-cache-root"
  mkdir -p "$CACHE_ROOT"
  CACHE_FS="$(df -PT "$WORK" | awk 'NR==2 {print $2}') ($WORK; no /dev/shm)"
fi
chmod 755 "$CACHE_ROOT"
PIDS=()

stop_pid() {
  local pid="$1" children i
  kill -0 "$pid" 2>/dev/null || return 0
  children="$(pgrep -P "$pid" 2>/dev/null || true)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    # The workers of an nginx master that had to be killed would be left running.
    for c in $children; do kill -KILL "$c" 2>/dev/null || true; done
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  local pid
  for pid in "${PIDS[@]+"${PIDS[@]}"}"; do stop_pid "$pid"; done
  rm -rf "$WORK" "$CACHE_ROOT"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() { # first free port in [$1, $1 + 100)
  local p
  for ((p = $1; p < $1 + 100; p++)); do
    if port_free "$p"; then
      echo "$p"
      return 0
    fi
  done
  die "no free port in $1..$(($1 + 99))"
}
ORIGIN_PORT="$(pick_port 18181)"
NGINX_PORT="$(pick_port 18281)"
GATEWAY_PORT="$(pick_port 18381)"

# ---------------------------------------------------------------------------------------------------
# Content
# ---------------------------------------------------------------------------------------------------
mkdir -p "$WORK/www" "$WORK/origin" "$WORK/proxy"
head -c 1048576 /dev/urandom >"$WORK/www/seg.ts"
# A VOD media playlist (#EXT-X-ENDLIST): the gateway caches VOD playlists long (min of 24 h and the
# origin's max-age), whereas a live playlist would be fresh for only half a target duration and the
# benchmark would measure refreshes instead of hits.
{
  printf '#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-PLAYLIST-TYPE:VOD\n'
  printf '#EXT-X-TARGETDURATION:6\n#EXT-X-MEDIA-SEQUENCE:2680\n'
  printf '#EXT-X-PROGRAM-DATE-TIME:2024-05-01T12:00:00.000Z\n'
  for i in 0 1 2 3 4 5; do
    printf '#EXTINF:6.006,\nmedia_2500k/segment_%05d.ts?token=0123456789abcdef\n' $((2680 + i))
  done
  printf '#EXT-X-ENDLIST\n'
} >"$WORK/www/index.m3u8"
chmod 644 "$WORK/www/"*
SEG_BYTES="$(stat -c %s "$WORK/www/seg.ts")"
PLAYLIST_BYTES="$(stat -c %s "$WORK/www/index.m3u8")"

temp_paths() {
  local d="$1"
  cat <<EOF
  client_body_temp_path $d/client_body;
  proxy_temp_path $d/proxy_temp;
  fastcgi_temp_path $d/fastcgi;
  uwsgi_temp_path $d/uwsgi;
  scgi_temp_path $d/scgi;
EOF
}

cat >"$WORK/origin/nginx.conf" <<EOF
# The origin: a plain static server. Both caches fetch from it.
daemon off;
worker_processes 1;
pid $WORK/origin/nginx.pid;
error_log $WORK/origin/error.log warn;
events { worker_connections 1024; }
http {
$(temp_paths "$WORK/origin")
  types {
    application/vnd.apple.mpegurl m3u8;
    video/mp2t ts;
  }
  default_type application/octet-stream;
  access_log $WORK/origin/access.log;
  sendfile on;
  server {
    listen 127.0.0.1:$ORIGIN_PORT;
    root $WORK/www;
    # Cache-Control: max-age=3600 (and Expires) on everything: both caches keep both objects for the run.
    expires 1h;
  }
}
EOF

cat >"$WORK/proxy/nginx.conf" <<EOF
# nginx as an operator would tune it for HLS edge caching.
daemon off;
worker_processes auto;
pid $WORK/proxy/nginx.pid;
error_log $WORK/proxy/error.log warn;
events { worker_connections 4096; }
http {
$(temp_paths "$WORK/proxy")
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 65;
  keepalive_requests 100000;

  proxy_cache_path $CACHE_ROOT/cache levels=1:2 keys_zone=hls:16m max_size=1g inactive=1h use_temp_path=off;
  open_file_cache max=10000 inactive=60s;
  open_file_cache_valid 60s;
  open_file_cache_min_uses 1;
  open_file_cache_errors on;

  upstream origin {
    server 127.0.0.1:$ORIGIN_PORT;
    keepalive 32;
  }

  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache hls;
      proxy_cache_lock on;
      proxy_cache_valid 200 1h;
      add_header X-Cache-Status \$upstream_cache_status always;
    }
  }
}
EOF

start_nginx() { # dir name -> sets STARTED_PID
  local dir="$1" name="$2"
  "$NGINX" -t -q -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf" ||
    die "$name: nginx -t failed (see above)"
  # daemon off: $! is the master; it stops its workers on SIGTERM.
  "$NGINX" -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf" >"$dir/stdout.log" 2>&1 &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
}

wait_ready() {
  local url="$1" name="$2" pid="$3" i code
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || die "$name exited during startup"
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)"
    if [[ "$code" == 200 ]]; then return 0; fi
    sleep 0.1
  done
  die "$name not ready at $url after 10 s (last status $code)"
}

log "temp dir $WORK, nginx cache on $CACHE_FS"
start_nginx "$WORK/origin" origin
ORIGIN_PID="$STARTED_PID"
wait_ready "http://127.0.0.1:$ORIGIN_PORT/index.m3u8" origin "$ORIGIN_PID"
start_nginx "$WORK/proxy" "nginx proxy"
NGINX_PID="$STARTED_PID"
"$GATEWAY_BIN" --listen "127.0.0.1:$GATEWAY_PORT" --origin "http://127.0.0.1:$ORIGIN_PORT/" \
  --log-level warn >"$WORK/gateway.log" 2>&1 &
GATEWAY_PID=$!
PIDS+=("$GATEWAY_PID")
wait_ready "http://127.0.0.1:$NGINX_PORT/index.m3u8" "nginx proxy" "$NGINX_PID"
wait_ready "http://127.0.0.1:$GATEWAY_PORT/healthz" gateway "$GATEWAY_PID"
log "origin :$ORIGIN_PORT (pid $ORIGIN_PID), nginx :$NGINX_PORT (pid $NGINX_PID), gateway :$GATEWAY_PORT (pid $GATEWAY_PID)"

url_of() { # server object
  local port
  case "$1" in gateway) port="$GATEWAY_PORT" ;; nginx) port="$NGINX_PORT" ;; esac
  case "$2" in segment) echo "http://127.0.0.1:$port/seg.ts" ;; playlist) echo "http://127.0.0.1:$port/index.m3u8" ;; esac
}
file_of() { case "$1" in segment) echo "$WORK/www/seg.ts" ;; playlist) echo "$WORK/www/index.m3u8" ;; esac; }
origin_requests() { wc -l <"$WORK/origin/access.log" | tr -d ' '; }

# ---------------------------------------------------------------------------------------------------
# Warm both caches and check they serve hits with the right bytes
# ---------------------------------------------------------------------------------------------------
read -r -a OBJECTS <<<"${BENCH_OBJECTS:-segment playlist}"
for object in "${OBJECTS[@]}"; do
  [[ "$object" == segment || "$object" == playlist ]] || die "BENCH_OBJECTS: unknown object '$object'"
done
for object in "${OBJECTS[@]}"; do
  for server in gateway nginx; do
    url="$(url_of "$server" "$object")"
    for _ in 1 2 3; do curl -fsS -o /dev/null "$url" || die "warm-up request to $url failed"; done
    curl -fsS -D "$WORK/headers" -o "$WORK/body" "$url" || die "request to $url failed"
    cmp -s "$WORK/body" "$(file_of "$object")" || die "$server served wrong bytes for $object"
    if [[ "$server" == gateway ]]; then hdr='x-cache'; else hdr='x-cache-status'; fi
    status="$(awk -v h="$hdr" 'BEGIN{IGNORECASE=1} tolower($1)==h":" {gsub("\r",""); print $2}' "$WORK/headers")"
    [[ "$status" == HIT ]] || die "$server does not serve $object from its cache ($hdr: '${status:-none}')"
  done
done
ORIGIN_AFTER_WARMUP="$(origin_requests)"
log "both caches warm and serving HITs; origin has seen $ORIGIN_AFTER_WARMUP requests"

# ---------------------------------------------------------------------------------------------------
# Measure
# ---------------------------------------------------------------------------------------------------
# wrk latency text (e.g. 512.00us, 1.23ms, 2.00s, 1.00m) -> milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v; sub(/[a-z]+$/, "", n); u = v; sub(/^[0-9.]+/, "", u)
    f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : -1
    if (f < 0 || n == "") { print "NaN"; exit }
    printf "%.3f", n * f
  }'
}

busy_procs() { # compilers and linkers that would steal CPU from the benchmark
  local n=0 p
  for p in rustc cargo cc1 cc1plus ld; do n=$((n + $(pgrep -c -x "$p" 2>/dev/null || true))); done
  echo "$n"
}

# Percentage of CPU time used by anything over one second. Sampled while the servers are idle (between
# wrk runs) it measures what other jobs take from the benchmark.
cpu_busy_pct() {
  local a b
  read -r -a a < <(head -1 /proc/stat)
  sleep 1
  read -r -a b < <(head -1 /proc/stat)
  awk -v a="${a[*]:1:8}" -v b="${b[*]:1:8}" 'BEGIN {
    split(a, x, " "); split(b, y, " "); t = 0
    for (i = 1; i <= 8; i++) t += y[i] - x[i]
    idle = (y[4] - x[4]) + (y[5] - x[5])
    printf "%.0f", (t > 0 ? 100 * (t - idle) / t : 0)
  }'
}

# Other jobs on this shared machine (compiles, test suites) distort the numbers. Before every run we
# wait, within a total budget, for a quiet machine; during every run we measure the CPU time taken by
# processes other than wrk, the proxies and the origin, and redo the run when it is too much.
IDLE_WAIT="${BENCH_IDLE_WAIT:-$([[ "$QUICK" == 1 ]] && echo 0 || echo 600)}"
IDLE_BUSY_MAX="${BENCH_IDLE_BUSY_MAX:-15}"
FOREIGN_MAX="${BENCH_FOREIGN_MAX:-4}"
RETRIES="${BENCH_RETRIES:-$([[ "$QUICK" == 1 ]] && echo 0 || echo 5)}"
for v in IDLE_WAIT IDLE_BUSY_MAX FOREIGN_MAX RETRIES; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, got '${!v}'"
done
CLK_TCK="$(getconf CLK_TCK)"
WAITED=0
RETRIED=0
NOISY_RUNS=0

wait_idle() {
  local busy procs
  while :; do
    busy="$(cpu_busy_pct)"
    procs="$(busy_procs)"
    if ((busy <= IDLE_BUSY_MAX && procs == 0)); then return 0; fi
    if ((WAITED >= IDLE_WAIT)); then
      ((IDLE_WAIT == 0)) || log "warning: still busy (${busy}% CPU, $procs compiler processes) after waiting ${WAITED} s in all"
      return 0
    fi
    log "machine busy (${busy}% CPU, $procs compiler processes): waiting 10 s (${WAITED}/${IDLE_WAIT} s used)"
    sleep 9
    WAITED=$((WAITED + 10))
  done
}

cpu_total() { awk 'NR == 1 { t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $5 + $6; exit }' /proc/stat; }
# utime + stime (clock ticks) of the processes we run: the gateway and both nginx masters and workers.
own_ticks() {
  local p pids="$GATEWAY_PID $ORIGIN_PID $NGINX_PID $(pgrep -P "$ORIGIN_PID" || true) $(pgrep -P "$NGINX_PID" || true)"
  for p in $pids; do cat "/proc/$p/stat" 2>/dev/null || true; done |
    awk '{ sub(/^.*\) /, ""); s += $12 + $13 } END { print s + 0 }'
}
# CPU time of this shell's finished children (wrk), in clock ticks, into CHILDREN_TICKS. `times` must
# run in this shell, not in a $(...) subshell (whose children's times start from zero).
children_ticks() {
  times >"$WORK/times"
  CHILDREN_TICKS="$(awk -v hz="$CLK_TCK" '
    function sec(x, m) { m = x; sub(/m.*/, "", m); sub(/^[0-9]+m/, "", x); sub(/s$/, "", x); return 60 * m + x }
    NR == 2 { printf "%.0f", (sec($1) + sec($2)) * hz }' "$WORK/times")"
}

RAW="$WORK/raw.tsv" # object round order server rps p50 p99 errors foreign% attempts
: >"$RAW"
ANY_ERRORS=0
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

run_wrk() { # server object round order
  local server="$1" object="$2" round="$3" order="$4" url out rps p50 p99 sock non2xx errors
  local attempt t0 i0 t1 i1 o0 o1 c0 c1 foreign
  url="$(url_of "$server" "$object")"
  out="$WORK/wrk-$object-$round-$server.txt"
  for ((attempt = 1; ; attempt++)); do
    wait_idle
    read -r t0 i0 < <(cpu_total)
    o0="$(own_ticks)"
    children_ticks
    c0="$CHILDREN_TICKS"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$url" >"$out" 2>&1 ||
      die "wrk failed: $(cat "$out")"
    children_ticks
    c1="$CHILDREN_TICKS"
    o1="$(own_ticks)"
    read -r t1 i1 < <(cpu_total)
    # Share of all CPUs' time used by other processes during the run, in %.
    foreign="$(awk -v t="$((t1 - t0))" -v busy="$(((t1 - t0) - (i1 - i0)))" -v own="$(((o1 - o0) + (c1 - c0)))" \
      'BEGIN { f = t > 0 ? 100 * (busy - own) / t : 0; printf "%.0f", (f < 0 ? 0 : f) }')"
    if ((foreign <= FOREIGN_MAX)); then break; fi
    if ((attempt > RETRIES)); then
      NOISY_RUNS=$((NOISY_RUNS + 1))
      log "warning: other jobs used ${foreign}% of the CPUs during this run; keeping it after $attempt attempts"
      break
    fi
    RETRIED=$((RETRIED + 1))
    log "other jobs used ${foreign}% of the CPUs during the $server $object run: redoing it in 20 s"
    # Test suites come in bursts: a quiet second is no promise; give the burst time to end.
    sleep 20
    WAITED=$((WAITED + 20))
  done
  rps="$(awk '/^Requests\/sec:/ {print $2}' "$out")"
  p50="$(to_ms "$(awk '/Latency Distribution/ {d=1} d && $1=="50%" {print $2; exit}' "$out")")"
  p99="$(to_ms "$(awk '/Latency Distribution/ {d=1} d && $1=="99%" {print $2; exit}' "$out")")"
  sock="$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$out")"
  non2xx="$(awk '/Non-2xx or 3xx responses:/ {print $4}' "$out")"
  errors=$((${sock:-0} + ${non2xx:-0}))
  [[ -n "$rps" ]] || die "cannot parse wrk output: $(cat "$out")"
  if ((errors > 0)); then
    ANY_ERRORS=1
    log "warning: $server $object round $round: $errors errors (socket ${sock:-0}, non-2xx ${non2xx:-0})"
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
    "$object" "$round" "$order" "$server" "$rps" "$p50" "$p99" "$errors" "$foreign" "$attempt" >>"$RAW"
  log "$(printf '%-8s %-7s round %s: %10.0f req/s  p50 %8.3f ms  p99 %8.3f ms  errors %s  other jobs %s%%' \
    "$object" "$server" "$round" "$rps" "$p50" "$p99" "$errors" "$foreign")"
}

STARTED="$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
for object in "${OBJECTS[@]}"; do
  for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2 == 1)); then order=(gateway nginx); else order=(nginx gateway); fi
    for i in 0 1; do run_wrk "${order[$i]}" "$object" "$round" "$((i + 1))"; done
  done
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
ORIGIN_AFTER_RUN="$(origin_requests)"
ORIGIN_DURING_RUN=$((ORIGIN_AFTER_RUN - ORIGIN_AFTER_WARMUP))
if ((ORIGIN_DURING_RUN > 10)); then
  log "warning: the origin saw $ORIGIN_DURING_RUN requests during the measurement: not all hits"
fi

# Still hits after the run?
for object in "${OBJECTS[@]}"; do
  g="$(curl -s -D - -o /dev/null "$(url_of gateway "$object")" | awk 'tolower($1)=="x-cache:" {gsub("\r",""); print $2}')"
  n="$(curl -s -D - -o /dev/null "$(url_of nginx "$object")" | awk 'tolower($1)=="x-cache-status:" {gsub("\r",""); print $2}')"
  [[ "$g" == HIT && "$n" == HIT ]] || log "warning: after the run $object is gateway '$g', nginx '$n' (expected HIT)"
done

# ---------------------------------------------------------------------------------------------------
# Summarise
# ---------------------------------------------------------------------------------------------------
median() { # object server column -> median
  awk -F'\t' -v o="$1" -v s="$2" -v c="$3" '$1==o && $4==s {print $c}' "$RAW" | sort -g |
    awk '{v[NR]=$1} END { if (NR==0) {print "NaN"; exit}
      if (NR%2) printf "%.3f", v[(NR+1)/2]; else printf "%.3f", (v[NR/2]+v[NR/2+1])/2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b+0 == 0) print "n/a"; else printf "%.2f", a/b }'; }

SUMMARY="$WORK/summary.md"
VERDICT="$WORK/verdict.md"
: >"$VERDICT"
{
  echo "| object | server | req/s (median) | p50 ms (median) | p99 ms (median) |"
  echo "|---|---|---:|---:|---:|"
} >"$SUMMARY"
RATIOS="$WORK/ratios.md"
{
  echo "| object | req/s gateway ÷ nginx | p99 gateway ÷ nginx | target (≥ 1.10× req/s, p99 ≤ 1.00×) |"
  echo "|---|---:|---:|---|"
} >"$RATIOS"
ALL_MET=1
for object in "${OBJECTS[@]}"; do
  for server in gateway nginx; do
    printf '| %s | %s | %.0f | %.3f | %.3f |\n' "$object" "$server" \
      "$(median "$object" "$server" 5)" "$(median "$object" "$server" 6)" "$(median "$object" "$server" 7)" >>"$SUMMARY"
  done
  rps_ratio="$(ratio "$(median "$object" gateway 5)" "$(median "$object" nginx 5)")"
  p99_ratio="$(ratio "$(median "$object" gateway 7)" "$(median "$object" nginx 7)")"
  met="$(awk -v r="$rps_ratio" -v p="$p99_ratio" 'BEGIN { print ((r >= 1.10 && p <= 1.00) ? "met" : "NOT met") }')"
  [[ "$met" == met ]] || ALL_MET=0
  printf '| %s | %s× | %s× | %s |\n' "$object" "$rps_ratio" "$p99_ratio" "$met" >>"$RATIOS"
  reasons=()
  awk -v r="$rps_ratio" 'BEGIN { exit !(r < 1.10) }' && reasons+=("req/s is ${rps_ratio}× nginx's (target 1.10×)")
  awk -v p="$p99_ratio" 'BEGIN { exit !(p > 1.00) }' && reasons+=("p99 is ${p99_ratio}× nginx's (target ≤ 1.00×)")
  if ((${#reasons[@]})); then
    joined="${reasons[0]}"
    if ((${#reasons[@]} > 1)); then joined="$joined; ${reasons[1]}"; fi
    echo "- **$object: target not met** — $joined." >>"$VERDICT"
  else
    echo "- **$object: target met** — ${rps_ratio}× nginx's req/s with ${p99_ratio}× its p99." >>"$VERDICT"
  fi
done

if ((NOISY_RUNS > 0)); then
  echo "- **Noise:** in $NOISY_RUNS run(s) other jobs took more than ${FOREIGN_MAX}% of the CPUs even after retries; rerun on a quiet machine before trusting these numbers." >>"$VERDICT"
fi

RAW_MD="$WORK/raw.md"
{
  echo "| object | round | turn | server | req/s | p50 ms | p99 ms | errors | other jobs, % CPU | attempts |"
  echo "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"
  awk -F'\t' '{printf "| %s | %s | %s | %s | %.0f | %.3f | %.3f | %s | %s | %s |\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10}' "$RAW"
} >"$RAW_MD"

echo
echo "Medians over $ROUNDS round(s), wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s:"
echo
cat "$SUMMARY"
echo
cat "$RATIOS"
echo
cat "$VERDICT"
echo
echo "Origin requests during the measurement: $ORIGIN_DURING_RUN (after warm-up: $ORIGIN_AFTER_WARMUP)"
echo
if [[ -n "${BENCH_RAW_DIR:-}" ]]; then
  mkdir -p "$BENCH_RAW_DIR"
  cp "$WORK"/wrk-*.txt "$RAW" "$BENCH_RAW_DIR"/
  log "raw wrk outputs copied to $BENCH_RAW_DIR"
fi

# ---------------------------------------------------------------------------------------------------
# Optional profile
# ---------------------------------------------------------------------------------------------------
if [[ "$PERF" == 1 ]]; then
  mkdir -p "$PERF_DIR"
  rm -f "$PERF_DIR"/*
  server_pids() { # the processes that serve requests: the gateway, or nginx's workers
    case "$1" in
      gateway) echo "$GATEWAY_PID" ;;
      nginx) pgrep -P "$NGINX_PID" | paste -sd, ;;
    esac
  }
  background_wrk() { # server seconds out
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$2s" --latency "$(url_of "$1" playlist)" >"$3" 2>&1 &
    WRK_PID=$!
    PIDS+=("$WRK_PID")
  }
  COST="$PERF_DIR/cost-per-request.md"
  {
    echo "Playlist hits, wrk -t$THREADS -c$CONNECTIONS, counted over ${PERF_SECONDS} s of a $((PERF_SECONDS + 3)) s run:"
    echo
    echo "| server | req/s | CPU µs per request | syscalls per request | context switches per request |"
    echo "|---|---:|---:|---:|---:|"
  } >"$COST"
  for server in gateway nginx; do
    pids="$(server_pids "$server")"
    # 1. Cost per request: perf stat (cheap) over the middle of a wrk run.
    log "perf stat of $server (pids $pids) under the playlist load"
    wait_idle
    background_wrk "$server" "$((PERF_SECONDS + 3))" "$PERF_DIR/wrk-stat-$server.txt"
    sleep 1.5
    perf stat -x, -e task-clock,context-switches,raw_syscalls:sys_enter -p "$pids" -o "$PERF_DIR/stat-$server.csv" \
      -- sleep "$PERF_SECONDS" >/dev/null 2>&1 || log "warning: perf stat failed for $server"
    top -b -H -n1 -d1 -w 200 >"$PERF_DIR/top-threads-$server.txt" 2>&1 || true
    wait "$WRK_PID" || true
    rps="$(awk '/^Requests\/sec:/ {print $2}' "$PERF_DIR/wrk-stat-$server.txt")"
    awk -F, -v rps="$rps" -v secs="$PERF_SECONDS" -v name="$server" '
      $3 == "task-clock" { cpu_ms = $1 }
      $3 == "context-switches" { cs = $1 }
      $3 == "raw_syscalls:sys_enter" { sc = $1 }
      END {
        n = rps * secs
        if (n > 0) printf "| %s | %.0f | %.1f | %.2f | %.3f |\n", name, rps, 1000 * cpu_ms / n, sc / n, cs / n
      }' "$PERF_DIR/stat-$server.csv" >>"$COST"
    # 2. Where the time goes: perf record with call graphs (cpu-clock: works without a hardware PMU).
    log "perf record of $server for ${PERF_SECONDS}s under the playlist load"
    wait_idle
    background_wrk "$server" "$((PERF_SECONDS + 3))" "$PERF_DIR/wrk-record-$server.txt"
    sleep 1.5
    perf record -e cpu-clock -F "$PERF_FREQ" --call-graph "$PERF_CALLGRAPH" -p "$pids" -o "$PERF_DIR/perf-$server.data" -- sleep "$PERF_SECONDS" \
      >"$PERF_DIR/perf-record-$server.log" 2>&1 || log "warning: perf record failed for $server"
    wait "$WRK_PID" || true
    if [[ -s "$PERF_DIR/perf-$server.data" ]]; then
      report() { perf report -i "$PERF_DIR/perf-$server.data" --stdio "$@" 2>/dev/null || true; }
      report --no-children --sort dso -g none >"$PERF_DIR/report-$server-dso.txt"
      report --no-children --sort symbol -g none >"$PERF_DIR/report-$server-self.txt"
      report --no-children --sort symbol -g caller,0.5,callee --percent-limit 2 >"$PERF_DIR/report-$server-self-callers.txt"
      report --children --sort symbol -g none >"$PERF_DIR/report-$server-children.txt"
      if [[ "$server" == gateway ]] && command -v python3 >/dev/null 2>&1; then
        python3 "$SCRIPT_DIR/perf-breakdown.py" "$PERF_DIR/perf-$server.data" >"$PERF_DIR/breakdown-gateway.md" 2>&1 ||
          log "warning: perf-breakdown.py failed, see $PERF_DIR/breakdown-gateway.md"
      fi
    fi
  done
  echo
  cat "$COST"
  echo
  log "perf reports in $PERF_DIR (cost-per-request.md, breakdown-gateway.md, report-<server>-{dso,self,self-callers,children}.txt, top-threads-<server>.txt)"
fi

# ---------------------------------------------------------------------------------------------------
# Write docs/BENCHMARKS.md
# ---------------------------------------------------------------------------------------------------
if [[ "$WRITE_DOC" == 1 ]]; then
  CMD="$SCRIPT_REL${ORIG_ARGS[*]+ ${ORIG_ARGS[*]}}"
  for v in BENCH_DURATION BENCH_CONNECTIONS BENCH_THREADS BENCH_ROUNDS BENCH_QUICK BENCH_OBJECTS TOKIO_WORKER_THREADS; do
    if [[ -n "${!v:-}" ]]; then CMD="$v=${!v} $CMD"; fi
  done
  CPU_MODEL="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
  MEM_TOTAL="$(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  SECTION="$WORK/section.md"
  {
    echo "<!-- bench:gateway-vs-nginx:start -->"
    echo "<!-- Generated by $SCRIPT_REL; rerun it to replace this section. -->"
    echo "## Gateway vs. nginx 1.22 proxy_cache: cache hits"
    echo
    echo "Command: \`$CMD\`"
    echo
    echo "- Date: $STARTED (measurement start)"
    echo "- Machine: $(nproc) CPUs ($CPU_MODEL), $MEM_TOTAL RAM, Linux $(uname -r)"
    echo "- Other jobs: before every run the script waits for a quiet machine (a 1 s sample at most"
    echo "  ${IDLE_BUSY_MAX}% busy, no compiler running; ${WAITED} s of waiting in all, budget ${IDLE_WAIT} s) and"
    echo "  measures the CPU time that processes other than wrk, the proxies and the origin take during the"
    echo "  run (\"other jobs\" below, in % of all CPUs); a run above ${FOREIGN_MAX}% is redone, at most"
    echo "  $RETRIES times. Runs redone: $RETRIED; runs kept above the bound: $NOISY_RUNS."
    echo "  Load average before / after: $LOAD_BEFORE / $LOAD_AFTER (it counts the benchmark's own threads)."
    echo "- nginx: $NGINX_VERSION; gateway: release build of commit \`$GIT_COMMIT\`, $GIT_STATE"
    echo "- wrk: \`wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency URL\`, $ROUNDS round(s) per object; in"
    echo "  each round both servers get one run, taking turns, and the order alternates every round. wrk,"
    echo "  the proxy under test and the (idle) origin share the same $(nproc) CPUs."
    echo "- Objects: \`seg.ts\`, $SEG_BYTES bytes of random data; \`index.m3u8\`, a $PLAYLIST_BYTES-byte media playlist"
    echo "  (6 segments, \`#EXT-X-ENDLIST\`, i.e. VOD: the gateway keeps it fresh for min(24 h, origin max-age),"
    echo "  where a live playlist would be fresh for only half a target duration and the run would measure"
    echo "  refreshes, not hits). The origin (a plain nginx static server) sends \`Cache-Control: max-age=3600\`."
    echo "- Hits verified before measuring (gateway \`X-Cache: HIT\`, nginx \`X-Cache-Status: HIT\`, bodies"
    echo "  byte-identical to the origin's files) and after. Origin requests during the measurement: $ORIGIN_DURING_RUN."
    echo "- Gateway: \`gateway --listen 127.0.0.1:PORT --origin http://127.0.0.1:ORIGIN/ --log-level warn\`, all other"
    echo "  settings default (in-memory cache)."
    echo "- nginx, as an operator would tune it: \`worker_processes auto\`, \`worker_connections 4096\`, \`sendfile on\`,"
    echo "  \`tcp_nopush on\`, \`tcp_nodelay on\`, \`keepalive_requests 100000\`, \`access_log off\`, \`proxy_cache\` with"
    echo "  \`proxy_cache_lock on\`, \`proxy_cache_valid 200 1h\`, \`use_temp_path=off\`, \`open_file_cache\`, HTTP/1.1"
    echo "  upstream keepalive; \`proxy_cache_path\` on $CACHE_FS."
    echo
    echo "### Medians"
    echo
    cat "$SUMMARY"
    echo
    cat "$RATIOS"
    echo
    cat "$VERDICT"
    echo
    echo "### Every run"
    echo
    cat "$RAW_MD"
    echo
    if [[ "$PERF" == 1 && -s "${COST:-}" ]]; then
      echo "### Cost per request (\`--perf\`)"
      echo
      cat "$COST"
      echo
      echo "CPU time of the gateway process or of nginx's worker processes (\`perf stat -e task-clock\`), over"
      echo "the requests wrk counted. Reports from \`perf record\` were saved under \`${PERF_DIR#"$REPO_ROOT"/}\`."
      echo
      if [[ -s "$PERF_DIR/breakdown-gateway.md" ]]; then
        echo "Where the gateway's CPU time goes under this load (\`scripts/bench/perf-breakdown.py\`, $(head -1 "$PERF_DIR/breakdown-gateway.md")):"
        echo
        tail -n +3 "$PERF_DIR/breakdown-gateway.md"
        echo
      fi
    fi
    if [[ "$ANY_ERRORS" == 1 ]]; then
      echo "**Some wrk runs reported socket errors or non-2xx answers: those numbers are not valid.**"
      echo
    fi
    echo "<!-- bench:gateway-vs-nginx:end -->"
  } >"$SECTION"

  mkdir -p "$(dirname "$DOC")"
  if [[ ! -f "$DOC" ]]; then
    cat >"$DOC" <<'EOF'
# Benchmarks

Every number here comes from a script in this repository (`scripts/bench/`), so anyone can rerun it
and replace the section it wrote. Read the medians and above all the side-by-side ratios: the servers
compared are measured on the same machine, taking turns, in the same few minutes. The absolute numbers
mean little: these are shared 2-core virtual machines where the load generator competes with the
server for the CPUs and other jobs may be running.

EOF
  fi
  if grep -q '<!-- bench:gateway-vs-nginx:start -->' "$DOC"; then
    awk -v section="$SECTION" '
      /<!-- bench:gateway-vs-nginx:start -->/ { while ((getline line < section) > 0) print line; skip = 1; next }
      /<!-- bench:gateway-vs-nginx:end -->/ { skip = 0; next }
      !skip { print }
    ' "$DOC" >"$WORK/doc.new"
    cat "$WORK/doc.new" >"$DOC"
  else
    { echo; cat "$SECTION"; } >>"$DOC"
  fi
  log "wrote the results into $DOC"
fi

if [[ "$ANY_ERRORS" == 1 ]]; then
  log "some wrk runs reported errors (see the table)"
  exit 3
fi
if [[ "$ALL_MET" == 1 ]]; then log "done; target met on every object"; else log "done; target NOT met (see the table)"; fi
