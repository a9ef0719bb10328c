"""What runs against each target, and how long."""

import subprocess
import sys
import time

from stacks import Stack

# id, layouts, load generator arguments[, the only targets it runs on]. Sizes from issue 11;
# windows set per run (plan()).
WORKLOADS = [
    ("pub-100B-1deep", "unpinned pinned",
     ["pub", "--connections", "1", "--depth", "1", "--size", "100"]),
    ("pub-100B-8x32", "unpinned pinned",
     ["pub", "--connections", "8", "--depth", "32", "--size", "100"]),
    ("mpub-100x100B", "unpinned pinned",
     ["pub", "--connections", "2", "--depth", "2", "--size", "100", "--batch", "100"]),
    ("pub-1KiB-8x32", "unpinned pinned",
     ["pub", "--connections", "8", "--depth", "32", "--size", "1024"]),
    ("mpub-20x1KiB", "unpinned",
     ["pub", "--connections", "2", "--depth", "2", "--size", "1024", "--batch", "20"]),
    ("pub-64KiB-4x4", "unpinned pinned",
     ["pub", "--connections", "4", "--depth", "4", "--size", "65536"]),
    ("sub-fanout-1ch", "unpinned pinned", ["sub", "--channels", "1"]),
    ("sub-fanout-4ch", "unpinned", ["sub", "--channels", "4"]),
    ("sub-fanout-16ch", "unpinned", ["sub", "--channels", "16"]),
    ("latency-10k", "pinned", ["pub", "--connections", "4", "--size", "100", "--rate", "10000"]),
    ("latency-50k", "pinned", ["pub", "--connections", "4", "--size", "100", "--rate", "50000"]),
    ("connect-full", "unpinned", ["connect", "--workers", "4"]),
    ("connect-resumed", "unpinned", ["connect", "--workers", "4", "--resume"]),
    # HTTP(S) POST /pub, 8 kept-alive connections with one request in flight each: nsqd's own
    # --http-address (D0) and --https-address (D1), HAProxy and stunnel in front of its
    # --http-address, nsqgate's HTTPS front in front of its --https-address (not P0: nsqgate's
    # HTTP fronts are HTTPS only).
    ("https-pub-100B", "unpinned",
     ["http-pub", "--connections", "8", "--size", "100"]),
]

# Compression on the client leg (IDENTIFY snappy/deflate) against nsqd's own (D1: inside its
# TLS) and nsqgate's (P1: nsqgate compresses, its leg to nsqd stays plain), with JSON-like
# 1 KiB bodies (one repeated byte would flatter both), and the same bodies uncompressed.
COMPRESSED_TARGETS = ("D1", "P1")
TEXT_1KIB = ["--size", "1024", "--body", "text"]
for kind, shape in (("pub-1KiB-text-8x32", ["pub", "--connections", "8", "--depth", "32"]),
                    ("sub-1KiB-text-1ch", ["sub", "--channels", "1"])):
    for codec in ("none", "snappy", "deflate"):
        WORKLOADS.append((kind if codec == "none" else f"{kind}-{codec}", "unpinned",
                          [*shape, *TEXT_1KIB, "--compression", codec], COMPRESSED_TARGETS))

# Deliveries per fan-out run (over all channels): the fill is this divided by the channels.
FANOUT_DELIVERIES = {False: 300_000, True: 60_000}
# The same for 1 KiB bodies (fills of 300 MB would take longer than the window).
FANOUT_DELIVERIES_1KIB = {False: 100_000, True: 30_000}


def plan(quick, only):
    warmup, seconds = ("0.2", "0.6") if quick else ("0.4", "1.2")
    chosen = []
    for name, layouts, args, *targets in WORKLOADS:
        if only and name not in only.split(","):
            continue
        args = list(args)
        if args[0] == "sub":
            channels = int(args[args.index("--channels") + 1])
            deliveries = FANOUT_DELIVERIES_1KIB if "1024" in args else FANOUT_DELIVERIES
            fill = deliveries[quick] // channels
            # Compressed reads may run at a few thousand msg/s: a rate over 3 s is enough, and
            # waiting for the whole fill would cost the full run most of a minute.
            limit = "3" if "--compression" in args else "10"
            args += ["--prefill", str(fill), "--topic", name, "--seconds", limit]
        else:
            window = seconds if "--rate" not in args else str(float(seconds) * 1.5)
            args += ["--warmup", warmup, "--seconds", window]
            if args[0] in ("pub", "http-pub"):
                args += ["--topic", name]
        chosen.append({"workload": name, "layouts": layouts.split(), "args": args,
                       "targets": targets[0] if targets else None})
    return chosen


def spent(timings, key, since):
    """Adds the wall time since `since` to `timings[key]`, where the run's time went."""
    timings[key] = round(timings.get(key, 0.0) + time.monotonic() - since, 1)


def run_layout(env, plan, layout, targets, reps, timings):
    """Every target's stack in turn, `reps` times over (A B C ... A B C ...). `timings` gets
    the wall seconds per workload and for setting stacks up and down."""
    rows = []
    work = [w for w in plan if layout in w["layouts"]]
    if not work:
        return rows
    for rep in range(reps):
        for target in targets:
            since = time.monotonic()
            stack = Stack(env, target, layout)
            spent(timings, f"{layout} stacks", since)
            try:
                for w in work:
                    if w["targets"] is not None and target not in w["targets"]:
                        continue
                    args = list(w["args"])
                    if args[0] == "sub":
                        args += ["--publish-addr", f"127.0.0.1:{stack.nsqd_tcp}"]
                    connection = stack.http_args() if args[0] == "http-pub" else stack.client_args()
                    if connection is None:
                        continue  # no HTTP front on this target
                    since = time.monotonic()
                    try:
                        result = stack.loadgen([*args, *connection], timeout=120)
                    except (RuntimeError, subprocess.TimeoutExpired) as e:
                        print(f"bench: {w['workload']} {target} {layout}: {e}", file=sys.stderr)
                        result = {"error": str(e)[:300]}
                    spent(timings, f"{layout} {w['workload']}", since)
                    rows.append({"workload": w["workload"], "target": target, "layout": layout,
                                 "rep": rep, **result})
                    print(f"  {layout} rep {rep + 1} {target:9} {w['workload']:16} "
                          f"{result.get('msgs_per_s', 0):>12,.0f}/s", file=sys.stderr)
            finally:
                since = time.monotonic()
                stack.stop()
                spent(timings, f"{layout} stacks", since)
    return rows


def run_idle(env, targets):
    """RSS slope per idle authenticated connection, once per TLS target (unpinned)."""
    steps = "200,1000" if env.quick else "1000,6000"
    rows = []
    for target in [t for t in targets if t in ("D1", "H1", "S1", "P1")]:
        stack = Stack(env, target, "unpinned")
        try:
            result = stack.loadgen(["idle", "--steps", steps, *stack.client_args()], timeout=300)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            result = {"error": str(e)[:300]}
        finally:
            stack.stop()
        rows.append({"workload": "idle", "target": target, "layout": "unpinned", **result})
        print(f"  idle {target}: {result.get('rss_kib_per_conn')}", file=sys.stderr)
    return rows
