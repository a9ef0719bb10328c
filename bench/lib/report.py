"""Medians, spreads and ratios over the repetitions; the JSON document and its markdown."""

import os
import platform
import statistics
import subprocess
import sys
import time

LATENCY_KEYS = ("p50_us", "p99_us", "p999_us", "max_us")


def first_line(*cmd, having=""):
    """The first line of a command's output (that contains `having`)."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        lines = (done.stdout + done.stderr).strip().splitlines()
        return next(line for line in lines if having in line)
    except (OSError, StopIteration, subprocess.TimeoutExpired):
        return None


def machine():
    model = None
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cores": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "loadavg_at_end": open("/proc/loadavg").read().split()[:3]}


def versions(env):
    return {
        "nsqd": first_line(str(env.tools / "nsqd"), "--version"),
        "haproxy": first_line("haproxy", "-v"),
        "stunnel": first_line("stunnel4", "-version", having="stunnel "),
        "nsqgate": first_line(str(env.gate), "--version"),
        "git": first_line("git", "-C", str(env.repo), "describe", "--always", "--dirty"),
        "rustc": first_line("rustc", "--version"),
        "openssl": first_line("openssl", "version"),
    }


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread_pct(values):
    values = [v for v in values if v is not None]
    mid = median(values)
    if not values or not mid:
        return None
    return round(100.0 * (max(values) - min(values)) / mid, 1)


def per_message(run, process, key="cpu_s"):
    cpu = run.get(key, {}).get(process)
    messages = run.get("messages")
    return cpu * 1e6 / messages if cpu is not None and messages else None


def by_process(runs, key):
    """The median CPU per message (`key`: cpu_s or cpu_sys_s) of each process the runs watched."""
    return {p: median([per_message(r, p, key) for r in runs])
            for p in ("loadgen", "nsqd", "hop")
            if any(p in r.get(key, {}) for r in runs)}


def aggregate(results):
    groups = {}
    for run in results:
        groups.setdefault((run["workload"], run["target"], run["layout"]), []).append(run)
    rows = []
    for (workload, target, layout), runs in groups.items():
        ok = [r for r in runs if "error" not in r]
        own = "nsqd" if target in ("D0", "D1") else "hop"  # the process the target adds
        rates = [r.get("msgs_per_s") for r in ok]
        row = {
            "workload": workload, "target": target, "layout": layout,
            "runs": len(runs), "errors": [r["error"] for r in runs if "error" in r] or None,
            "msgs_per_s": median(rates), "spread_pct": spread_pct(rates),
            "cpu_us_per_msg": median([per_message(r, own) for r in ok]),
            "cpu_us_per_msg_by_process": by_process(ok, "cpu_s"),
            # The kernel's part of that CPU (stime).
            "cpu_sys_us_per_msg_by_process": by_process(ok, "cpu_sys_s"),
            "steal_s": median([r.get("steal_s") for r in ok]),
            "wire_bytes_per_msg": median([r.get("wire_bytes_per_msg") for r in ok]),
            "ratio_to_d1": None,
        }
        for key in LATENCY_KEYS:
            row[key] = median([r.get(key) for r in ok])
        if any("reconnects" in r for r in ok):
            row["reconnects"] = median([r.get("reconnects") for r in ok])
        if any("unanswered" in r for r in ok):
            row["unanswered"] = sum(r.get("unanswered", 0) for r in ok)
        rows.append(row)
    baseline = {(r["workload"], r["layout"]): r for r in rows if r["target"] == "D1"}
    for row in rows:
        d1 = baseline.get((row["workload"], row["layout"]))
        if not d1:
            continue
        if row["p50_us"] is not None and d1["p50_us"] is not None:
            for key in LATENCY_KEYS[:3]:
                row["added_" + key] = row[key] - d1[key]
        elif row["msgs_per_s"] and d1["msgs_per_s"]:
            row["ratio_to_d1"] = round(row["msgs_per_s"] / d1["msgs_per_s"], 3)
    return rows


def validation_summary(validation):
    """Per layout and kind: the median ratio (generator / nsqd's tool), the ratio the CPU per
    message predicts, and each side's medians."""
    if not validation:
        return None
    check = dict(validation)
    check["summary"] = []
    for layout in validation["layouts"]:
        for kind in ("pub", "sub"):
            runs = [r for r in validation["runs"]
                    if r["kind"] == kind and r["layout"] == layout]
            ratio = median([r["ratio"] for r in runs])
            row = {"layout": layout, "kind": kind, "tool_name": runs[0]["tool_name"], "pairs": len(runs),
                   "ratio_median": round(ratio, 3),
                   "ratio_spread_pct": spread_pct([r["ratio"] for r in runs]),
                   "cpu_predicted_ratio_median": median([r["cpu_predicted_ratio"] for r in runs]),
                   "within_5_pct": abs(ratio - 1) <= 0.05}
            for side in ("tool", "ours"):
                for key in ("msgs_per_s", "client_cpu_us_per_msg", "nsqd_cpu_us_per_msg"):
                    row[f"{side}_{key}"] = median([r[side][key] for r in runs])
            check["summary"].append(row)
    return check


def build(env, plan, results, idle, validation, args, started, timings):
    commands = {w["workload"]: "nsqgate-bench " + " ".join(w["args"]) for w in plan}
    check = validation_summary(validation)
    return {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick, "repetitions": args.reps,
        "duration_s": round(time.time() - started),
        "seconds_spent": dict(sorted(timings.items(), key=lambda kv: -kv[1])),
        "machine": machine(), "versions": versions(env),
        "command": " ".join(["bench/run", *sys.argv[1:]]),
        "commands": commands,
        "notes": [
            "cpu_us_per_msg: the process the target adds (the hop; nsqd for D0/D1), "
            "utime+stime over the measured window divided by messages acknowledged "
            "(connect-*: per connection set up); cpu_us_per_msg_by_process has each process.",
            "ratio_to_d1: median msgs/s over D1's median in the same workload and layout; "
            "latency rows carry added_p50_us/added_p99_us/added_p999_us over D1 instead.",
            "pinned: the hop alone on CPU 0, nsqd and the load generator on CPU 1 (D0/D1 "
            "then use one CPU).",
            "idle: RSS slope per idle authenticated connection (hop: both TLS sessions), "
            "capped by the 20,000-descriptor limit of this machine.",
            "wire_bytes_per_msg: bytes through the load generator's sockets per message over "
            "the window, both directions, TLS and compression included.",
            "https-pub-*: one request in flight per kept-alive connection; reconnects counts "
            "the connections opened because the server answered Connection: close.",
            "validation: see validate.py; ratio = generator msg/s / the Go tool's, "
            "cpu_predicted_ratio = (tool + nsqd CPU per message) / (generator + nsqd CPU per "
            "message), what the ratio is when the shared cores are the limit.",
        ],
        "validation": check,
        "rows": aggregate(results) + idle,
    }


def fmt_rate(value):
    if value is None:
        return "–"
    return f"{value / 1000:.1f}k" if value >= 1000 else f"{value:.0f}"


def fmt(value, digits=2):
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(doc):
    rows = [r for r in doc["rows"] if r["workload"] != "idle"]
    targets = []
    for r in rows:
        if r["target"] not in targets:
            targets.append(r["target"])
    out = [f"nsqgate bench ({'--quick, ' if doc['quick'] else ''}{doc['repetitions']} "
           f"repetition(s), {doc['machine']['cores']} cores, {doc['machine']['cpu_model']}, "
           f"{doc['generated_at']})", ""]
    for layout in ("unpinned", "pinned"):
        here = {(r["workload"], r["target"]): r for r in rows if r["layout"] == layout}
        workloads = list(dict.fromkeys(r["workload"] for r in rows if r["layout"] == layout))
        throughput = [w for w in workloads if not w.startswith("latency")]
        if throughput:
            out += [f"**{layout}**: msg/s (spread) · ratio to D1 · CPU-µs/msg of the target's "
                    "own process (hop, or nsqd for D0/D1)", "",
                    "| workload | " + " | ".join(targets) + " |",
                    "|---|" + "---|" * len(targets)]
            for w in throughput:
                cells = []
                for t in targets:
                    r = here.get((w, t))
                    if r is None or r["msgs_per_s"] is None:
                        cells.append("–" if r is None or not r["errors"] else "error")
                        continue
                    ratio = f" · {r['ratio_to_d1']:.2f}×" if r["ratio_to_d1"] else ""
                    cells.append(f"{fmt_rate(r['msgs_per_s'])} (±{fmt(r['spread_pct'], 0)}%)"
                                 f"{ratio} · {fmt(r['cpu_us_per_msg'])}")
                out.append(f"| {w} | " + " | ".join(cells) + " |")
            out.append("")
        latency = [w for w in workloads if w.startswith("latency")]
        if latency:
            out += [f"**{layout} latency** (open loop, from intended send time): "
                    "p50 / p99 / p99.9 µs (added over D1)", "",
                    "| workload | " + " | ".join(targets) + " |",
                    "|---|" + "---|" * len(targets)]
            for w in latency:
                cells = []
                for t in targets:
                    r = here.get((w, t))
                    if r is None or r["p50_us"] is None:
                        cells.append("–")
                        continue
                    added = (f" ({r['added_p50_us']:+.0f} / {r['added_p99_us']:+.0f} / "
                             f"{r['added_p999_us']:+.0f})"
                             if "added_p50_us" in r and t != "D1" else "")
                    cells.append(f"{r['p50_us']:.0f} / {r['p99_us']:.0f} / "
                                 f"{r['p999_us']:.0f}{added}")
                out.append(f"| {w} | " + " | ".join(cells) + " |")
            out.append("")
    closing = sorted({f"{r['target']}" for r in rows if r.get("reconnects")})
    if closing:
        out += [f"HTTP /pub: {', '.join(closing)} answered `Connection: close`, so every request "
                "there opened a new connection (TCP + TLS), as a client library would.", ""]
    out += compression_markdown(rows)
    idle = [r for r in doc["rows"] if r["workload"] == "idle"]
    if idle:
        out += ["**idle connections**: RSS KiB per connection (slope)", "",
                "| target | hop | nsqd |", "|---|---|---|"]
        for r in idle:
            slope = r.get("rss_kib_per_conn") or {}
            out.append(f"| {r['target']} | {fmt(slope.get('hop'), 1)} | "
                       f"{fmt(slope.get('nsqd'), 1)} |")
        out.append("")
    v = doc.get("validation")
    if v:
        out.append(validation_markdown(v))
    return "\n".join(out)


def compression_markdown(rows):
    """Compressed runs beside the same bodies uncompressed: msg/s, CPU, bytes on the wire."""
    text = [r for r in rows if "-text-" in r["workload"] and r["layout"] == "unpinned"]
    if not text:
        return []
    out = ["**compression** (unpinned, JSON-like 1 KiB bodies): msg/s · CPU-µs/msg of the "
           "target's process · bytes per message on the load generator's sockets (both ways, "
           "TLS included)", "", "| workload | target | none | snappy | deflate |",
           "|---|---|---|---|---|"]
    here = {(r["workload"], r["target"]): r for r in text}
    bases = [w for w in dict.fromkeys(r["workload"] for r in text)
             if not w.endswith(("-snappy", "-deflate"))]
    for base in bases:
        for target in dict.fromkeys(r["target"] for r in text):
            cells = []
            for suffix in ("", "-snappy", "-deflate"):
                r = here.get((base + suffix, target))
                if r is None or r["msgs_per_s"] is None:
                    cells.append("–" if r is None or not r["errors"] else "error")
                    continue
                cells.append(f"{fmt_rate(r['msgs_per_s'])} · {fmt(r['cpu_us_per_msg'])} · "
                             f"{fmt(r['wire_bytes_per_msg'], 0)} B")
            out.append(f"| {base} | {target} | " + " | ".join(cells) + " |")
    return out + [""]


def validation_markdown(v):
    lines = [f"Load generator vs nsqd's own tools on D0 ({v['connections']} connections each, "
             f"{v['runfor_s']} s windows, each run on a fresh nsqd, order alternating; medians "
             "over the pairs; pinned: the client on CPU 0, nsqd on CPU 1):", "",
             "| layout | check | pairs | tool msg/s | generator msg/s | ratio (spread) | ratio "
             "CPU predicts | client CPU-µs/msg tool · generator | nsqd CPU-µs/msg tool · "
             "generator |", "|---|---|---|---|---|---|---|---|---|"]
    for r in v["summary"]:
        lines.append(
            f"| {r['layout']} | {r['kind']} vs {r['tool_name']} | {r['pairs']} | "
            f"{fmt_rate(r['tool_msgs_per_s'])} | {fmt_rate(r['ours_msgs_per_s'])} | "
            f"{r['ratio_median']:.3f} (±{fmt(r['ratio_spread_pct'], 0)}%) | "
            f"{fmt(r['cpu_predicted_ratio_median'], 3)} | "
            f"{fmt(r['tool_client_cpu_us_per_msg'])} · {fmt(r['ours_client_cpu_us_per_msg'])} | "
            f"{fmt(r['tool_nsqd_cpu_us_per_msg'])} · {fmt(r['ours_nsqd_cpu_us_per_msg'])} |")
    return "\n".join(lines)
