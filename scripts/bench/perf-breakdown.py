#!/usr/bin/env python3
"""Splits a `perf record --call-graph dwarf` profile of the gateway into the parts of its hot path.

Usage: scripts/bench/perf-breakdown.py PERF_DATA   (e.g. target/bench-perf/perf-gateway.data,
written by `scripts/bench/gateway-vs-nginx.sh --perf`)

Every sample goes to exactly one bucket. Samples in the kernel are named after the system call the
user-space stack was making (writev, recv, epoll_wait, futex). User-space samples go to the innermost
frame that names a known part: the gateway's own modules (http::deliver `respond`, edge lookup via
moka, http::path and cache::key, metrics, http::server with tower), hyper, tokio. malloc/free/memcpy samples are
reported separately with the part that called them. Percentages are of all the process's samples.
"""

import collections
import re
import subprocess
import sys

KERNEL = [  # user-space frame of the system call -> bucket
    (r"__GI___writev|\bwritev\b", "kernel: writev (send response, incl. loopback delivery)"),
    (r"__libc_recv|recv_with_flags", "kernel: recv (read request)"),
    (r"epoll_wait", "kernel: epoll_wait (tokio I/O driver)"),
    (r"^syscall$|futex", "kernel: futex (tokio worker park/unpark)"),
    (r"clock_gettime", "kernel: clock_gettime"),
]
OWNERS = [  # innermost matching frame decides
    (r"gateway::http::deliver::not_modified|\bnot_modified\b|httpdate",
     "gateway: http/deliver.rs not_modified (parses Last-Modified on every request)"),
    (r"gateway::metrics::", "gateway: metrics.rs"),
    (r"moka::", "gateway: edge lookup -> moka get (incl. inline housekeeping)"),
    (r"gateway::http::path::|gateway::cache::key::", "gateway: http/path.rs normalize, cache/key.rs CacheKey::new"),
    (r"gateway::http::deliver::(respond|finish|content_len)|^respond$|^finish$",
     "gateway: http/deliver.rs respond (header map, response)"),
    (r"gateway::(http::service|http::deliver|edge|cache|clock)",
     "gateway: http/service.rs handle, http/deliver.rs deliver/find, other"),
    (r"tower::|gateway::http::server", "gateway: http/server.rs (tower load_shed + concurrency_limit, glue)"),
    (r"Http1Transaction>::parse|httparse", "hyper: request parse"),
    (r"Http1Transaction>::encode|hyper::proto::h1::encode", "hyper: response encode"),
    (r"tokio::runtime::time|tokio::time|TokioSleep|TokioTimer",
     "tokio: timers (hyper header_read_timeout, per request)"),
    (r"hyper", "hyper: dispatch / buffers"),
    (r"tokio|mio::", "tokio: scheduler / I/O driver"),
]
ALLOC = re.compile(r"^(malloc|_int_malloc|_int_free|cfree|free|realloc|_int_realloc|tcache_\w+|"
                   r"malloc_consolidate|unlink_chunk|__mem(move|set|cpy)\w*)")


def samples(lines):
    frames = None
    for line in lines:
        if not line.strip():
            if frames:
                yield frames
            frames = None
        elif not line[0].isspace():
            frames = []
        elif frames is not None:
            parts = line.strip().split(" ", 1)
            if len(parts) == 2:
                frames.append(parts[1])
    if frames:
        yield frames


def bucket(frames):
    syms = [re.sub(r" \([^()]*\)$", "", f) for f in frames]
    if frames and "kernel.kallsyms" in frames[0]:
        for s in syms:
            for pattern, name in KERNEL:
                if re.search(pattern, s):
                    return name
        return "kernel: other"
    owner = "other user space"
    for s in syms:
        found = next((name for pattern, name in OWNERS if re.search(pattern, s)), None)
        if found:
            owner = found
            break
    if syms and ALLOC.match(syms[0]):
        return f"libc malloc/free/memcpy (called from {owner.split(':')[0]})"
    return owner


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    script = subprocess.run(
        ["perf", "script", "-i", sys.argv[1], "-F", "comm,tid,ip,sym,dso"],
        check=True, capture_output=True, text=True, errors="replace").stdout
    counts = collections.Counter(bucket(f) for f in samples(script.splitlines()))
    total = sum(counts.values())
    if not total:
        sys.exit("no samples")
    groups = collections.Counter()
    for name, n in counts.items():
        groups[name.split(":")[0].split(" (")[0]] += n
    print(f"{total} samples\n")
    print("| part | share of the process's CPU |\n|---|---:|")
    for name, n in counts.most_common():
        print(f"| {name} | {100 * n / total:.1f}% |")
    print("\n| group | share |\n|---|---:|")
    for name, n in groups.most_common():
        print(f"| {name} | {100 * n / total:.1f}% |")


if __name__ == "__main__":
    main()
