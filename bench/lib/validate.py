"""The load generator checked against nsqd's own tools on D0, like for like.

What nsqd v1.3.0's tools do (bench/bench_writer, bench/bench_reader in its source):
- bench_writer: GOMAXPROCS connections, each IDENTIFY then MPUB of --batch-size messages, one
  in flight (write, flush, wait for OK), until --runfor has passed since that connection's
  IDENTIFY reply; rate = every message acknowledged / (go signal -> last connection done), so
  its window holds the IDENTIFY round trip, the topic's creation and the last MPUB's overshoot.
- bench_reader: GOMAXPROCS connections on one channel, IDENTIFY + SUB + RDY --rdy sent at the
  go signal, FIN per message (buffered; flushed per message once a connection is past 3/4 of
  its RDY), each connection closed --runfor after its start; rate = messages read / (go signal
  -> last connection closed).

The generator runs the same shape: `pub` with as many connections, depth 1, MPUB of the same
batch and size, no warm-up, window --runfor; `sub` with as many connections on one channel,
the same RDY, FIN per message, window --runfor. Each run gets its own fresh nsqd; the reader's
topic is filled with the same number of messages beforehand into an existing channel, and the
run starts only once the channel holds all of them, so no topic-to-channel copying happens
inside either window. Order alternates per repetition (tool first, then generator first),
medians over the repetitions. Besides msg/s, each run records the CPU of nsqd and of the
client over the client's whole life (both from the kernel), per message, so a difference can
be told apart: nsqd doing more work per message, or the client taking a core's share from it.
"""

import json
import os
import re
import resource
import subprocess
import sys
import time
import urllib.request

from stacks import HOP_CPU, Stack

OPS = re.compile(r"([0-9.]+)ops/s")
SIZE, BATCH, RDY = 200, 200, 2500
TICKS_PER_SEC = os.sysconf("SC_CLK_TCK")


def connections():
    """GOMAXPROCS as the Go tools see it: the CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_SEC


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured(stack, cmd, timeout=120):
    """Runs a client to its end; its output, and the CPU seconds it and nsqd spent."""
    nsqd0, client0 = cpu_seconds(stack.nsqd.pid), children_cpu()
    env = dict(os.environ, GOMAXPROCS=str(connections()))
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    nsqd1, client1 = cpu_seconds(stack.nsqd.pid), children_cpu()
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {(done.stderr or done.stdout).strip()[-300:]}")
    return done, {"client": client1 - client0, "nsqd": nsqd1 - nsqd0}


def tool_rate(done, tool):
    found = OPS.search(done.stderr + done.stdout)
    if not found:
        raise RuntimeError(f"{tool}: no ops/s in {done.stderr.strip()[-300:]}")
    return float(found.group(1))


def channel_depth(stack, topic, channel):
    url = (f"http://127.0.0.1:{stack.nsqd_http}/stats?format=json&topic={topic}"
           f"&channel={channel}")
    with urllib.request.urlopen(url, timeout=5) as answer:
        stats = json.load(answer)
    for t in stats.get("topics", []):
        for c in t.get("channels", []):
            if t["topic_name"] == topic and c["channel_name"] == channel:
                return c["depth"]
    return 0


def fill_channel(stack, count):
    """Topic v, channel ch0 created first, then `count` messages; waits until ch0 holds all."""
    for path in ("topic/create?topic=v", "channel/create?topic=v&channel=ch0"):
        url = f"http://127.0.0.1:{stack.nsqd_http}/{path}"
        urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5).close()
    subprocess.run([str(stack.env.loadgen), "fill", "--addr", f"127.0.0.1:{stack.nsqd_tcp}",
                    "--topic", "v", "--count", str(count), "--size", str(SIZE)],
                   check=True, capture_output=True, timeout=120)
    deadline = time.time() + 20
    while channel_depth(stack, "v", "ch0") < count:
        if time.time() > deadline:
            raise RuntimeError(f"channel ch0 never held the {count} messages of the fill")
        time.sleep(0.05)


def writer_cmds(stack, runfor):
    tool = [str(stack.env.tools / "bench_writer"), f"--nsqd-tcp-address=127.0.0.1:{stack.nsqd_tcp}",
            f"--runfor={runfor}s", f"--size={SIZE}", f"--batch-size={BATCH}", "--topic=v"]
    ours = [str(stack.env.loadgen), "pub", "--connections", str(connections()), "--depth", "1",
            "--size", str(SIZE), "--batch", str(BATCH), "--topic", "v", "--warmup", "0",
            "--seconds", str(runfor), "--addr", f"127.0.0.1:{stack.nsqd_tcp}"]
    return tool, ours


def reader_cmds(stack, runfor):
    tool = [str(stack.env.tools / "bench_reader"), f"--nsqd-tcp-address=127.0.0.1:{stack.nsqd_tcp}",
            f"--runfor={runfor}s", f"--size={SIZE}", "--topic=v", "--channel=ch0", f"--rdy={RDY}"]
    ours = [str(stack.env.loadgen), "sub", "--topic", "v", "--channels", "1",
            "--connections-per-channel", str(connections()), "--rdy", str(RDY),
            "--seconds", str(runfor), "--addr", f"127.0.0.1:{stack.nsqd_tcp}"]
    return tool, ours


def one_run(env, side, kind, runfor, fill, layout):
    """One client (`tool` or `ours`) on a fresh D0: msg/s and CPU-µs per message. Pinned:
    nsqd alone on CPU 1, the client on CPU 0 (the Go tools told GOMAXPROCS so that they
    still open as many connections)."""
    stack = Stack(env, "D0", layout)
    try:
        if kind == "sub":
            fill_channel(stack, fill)
        tool, ours = (writer_cmds if kind == "pub" else reader_cmds)(stack, runfor)
        cmd = tool if side == "tool" else ours
        if layout == "pinned":
            cmd = ["taskset", "-c", HOP_CPU, *cmd]
        done, cpu = measured(stack, cmd)
    finally:
        stack.stop()
    if side == "tool":
        rate = tool_rate(done, tool[0])
        messages = rate * runfor
    else:
        report = json.loads(done.stdout)
        rate, messages = report["msgs_per_s"], report["messages"]
    if kind == "sub" and messages >= 0.95 * fill:
        raise RuntimeError(f"the reader nearly drained the fill ({messages:.0f} of {fill}): "
                           "raise the fill")
    return {"msgs_per_s": round(rate), "messages": round(messages),
            "client_cpu_us_per_msg": round(cpu["client"] * 1e6 / messages, 3),
            "nsqd_cpu_us_per_msg": round(cpu["nsqd"] * 1e6 / messages, 3)}


def pair(env, kind, tool, rep, layout, runfor, fill):
    """The tool and the generator back to back, the order alternating with `rep`."""
    order = ("tool", "ours") if rep % 2 == 0 else ("ours", "tool")
    sides = {side: one_run(env, side, kind, runfor, fill, layout) for side in order}
    ratio = sides["ours"]["msgs_per_s"] / sides["tool"]["msgs_per_s"]
    # When the two processes share the cores that are the limit, msg/s goes as 1 / (client +
    # nsqd CPU per message): the ratio that CPU alone predicts.
    total = {s: sides[s]["client_cpu_us_per_msg"] + sides[s]["nsqd_cpu_us_per_msg"]
             for s in sides}
    run = {"kind": kind, "tool_name": tool, "layout": layout, "rep": rep, "first": order[0],
           "ratio": round(ratio, 3), "cpu_predicted_ratio": round(total["tool"] / total["ours"], 3),
           **sides}
    print(f"  validation {layout} rep {rep + 1} {kind}: {tool} {sides['tool']['msgs_per_s']:,}/s,"
          f" generator {sides['ours']['msgs_per_s']:,}/s, ratio {ratio:.3f} (CPU predicts "
          f"{run['cpu_predicted_ratio']}; client CPU-µs/msg "
          f"{sides['tool']['client_cpu_us_per_msg']} vs {sides['ours']['client_cpu_us_per_msg']};"
          f" nsqd {sides['tool']['nsqd_cpu_us_per_msg']} vs "
          f"{sides['ours']['nsqd_cpu_us_per_msg']})", file=sys.stderr)
    return run


def validate(env, reps, layouts):
    """`reps` (at least 3) interleaved pairs per kind and layout."""
    # --quick checks the harness in its 3 minutes; a verdict needs the full windows.
    runfor = 0.5 if env.quick else 2.0
    # Twice what a reader took in the window on a quiet machine (380k/s), so it never runs dry.
    fill = 400_000 if env.quick else 1_600_000
    runs = []
    for layout in layouts:
        for rep in range(max(reps, 3)):
            for kind, tool in (("pub", "bench_writer"), ("sub", "bench_reader")):
                runs.append(pair(env, kind, tool, rep, layout, runfor, fill))
    return {"connections": connections(), "runfor_s": runfor, "size": SIZE, "batch": BATCH,
            "rdy": RDY, "fill": fill, "layouts": layouts, "runs": runs}
