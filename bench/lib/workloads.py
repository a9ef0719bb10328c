"""What runs against each target, how long, and the checks of the load generator itself."""

import re
import subprocess
import sys
import time

from stacks import Stack

# id, layouts, load generator arguments. Sizes from issue 11; windows set per run (plan()).
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
]

# Deliveries per fan-out run (over all channels): the fill is this divided by the channels.
FANOUT_DELIVERIES = {False: 300_000, True: 60_000}


def plan(quick, only):
    warmup, seconds = ("0.2", "0.6") if quick else ("0.4", "1.2")
    chosen = []
    for name, layouts, args in WORKLOADS:
        if only and name not in only.split(","):
            continue
        args = list(args)
        if args[0] == "sub":
            channels = int(args[args.index("--channels") + 1])
            fill = FANOUT_DELIVERIES[quick] // channels
            args += ["--prefill", str(fill), "--topic", name, "--seconds", "10"]
        else:
            window = seconds if "--rate" not in args else str(float(seconds) * 1.5)
            args += ["--warmup", warmup, "--seconds", window]
            if args[0] == "pub":
                args += ["--topic", name]
        chosen.append({"workload": name, "layouts": layouts.split(), "args": args})
    return chosen


def run_layout(env, plan, layout, targets, reps):
    """Every target's stack in turn, `reps` times over (A B C ... A B C ...)."""
    rows = []
    work = [w for w in plan if layout in w["layouts"]]
    if not work:
        return rows
    for rep in range(reps):
        for target in targets:
            stack = Stack(env, target, layout)
            try:
                for w in work:
                    args = list(w["args"])
                    if args[0] == "sub":
                        args += ["--publish-addr", f"127.0.0.1:{stack.nsqd_tcp}"]
                    try:
                        result = stack.loadgen([*args, *stack.client_args()], timeout=120)
                    except (RuntimeError, subprocess.TimeoutExpired) as e:
                        print(f"bench: {w['workload']} {target} {layout}: {e}", file=sys.stderr)
                        result = {"error": str(e)[:300]}
                    rows.append({"workload": w["workload"], "target": target, "layout": layout,
                                 "rep": rep, **result})
                    print(f"  {layout} rep {rep + 1} {target:9} {w['workload']:16} "
                          f"{result.get('msgs_per_s', 0):>12,.0f}/s", file=sys.stderr)
            finally:
                stack.stop()
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


OPS = re.compile(r"([0-9.]+)ops/s")


def stock_tool(stack, tool, args, timeout=60):
    done = subprocess.run([str(stack.env.tools / tool),
                           f"--nsqd-tcp-address=127.0.0.1:{stack.nsqd_tcp}", *args],
                          capture_output=True, text=True, timeout=timeout)
    found = OPS.search(done.stderr + done.stdout)
    if not found:
        raise RuntimeError(f"{tool}: no ops/s in {done.stderr.strip()[-300:]}")
    return float(found.group(1))


def validate(env, reps):
    """On D0, the load generator against nsqd's own bench_writer (MPUB 200 x 200 B, one
    connection per core, 1 deep) and bench_reader (RDY 2500, one connection per core, on a
    pre-filled topic): each pair run back to back, `reps` times."""
    runfor = 1.0 if env.quick else 2.0
    pairs = []
    for rep in range(reps):
        stack = Stack(env, "D0", "unpinned")
        try:
            w = stock_tool(stack, "bench_writer", [f"--runfor={runfor}s", "--size=200",
                                                   "--batch-size=200", "--topic=vw"])
            ours = stack.loadgen(["pub", "--connections", "2", "--depth", "1", "--size", "200",
                                  "--batch", "200", "--topic", "vl", "--warmup", "0",
                                  "--seconds", str(runfor), *stack.client_args()], timeout=60)
            # Fill two topics alike, then read each for the same time.
            for topic in ("rw", "rl"):
                stock_tool(stack, "bench_writer", [f"--runfor={runfor}s", "--size=200",
                                                   "--batch-size=200", f"--topic={topic}"])
            time.sleep(0.2)
            r = stock_tool(stack, "bench_reader", [f"--runfor={runfor / 2}s", "--size=200",
                                                   "--topic=rw", "--channel=ch0", "--rdy=2500"])
            ours_r = stack.loadgen(["sub", "--topic", "rl", "--channels", "1",
                                    "--connections-per-channel", "2", "--seconds",
                                    str(runfor / 2), *stack.client_args()], timeout=60)
        finally:
            stack.stop()
        pairs.append({"bench_writer": w, "loadgen_pub": ours["msgs_per_s"],
                      "bench_reader": r, "loadgen_sub": ours_r["msgs_per_s"]})
        print(f"  validation rep {rep + 1}: {pairs[-1]}", file=sys.stderr)
    return pairs
