"""bench/roles' markdown: medians over the repetitions, each rate with its spread in brackets
((max - min) / median), one table per role."""

from report import median, spread_pct


def group(doc, part):
    out = {}
    for run in doc["runs"]:
        if run["part"] == part and "error" not in run:
            out.setdefault((run["workload"], run["side"]), []).append(run)
    return out


def rate(runs):
    values = [r.get("msgs_per_s", r.get("ops_per_s")) for r in runs]
    return median(values), spread_pct(values)


def cpu_us(runs, *processes):
    """Median CPU-us per message/operation of the named processes together."""
    values = []
    for r in runs:
        count = r.get("messages", r.get("operations"))
        cpu = [r.get("cpu_s", {}).get(p) for p in processes]
        if count and None not in cpu:
            values.append(sum(cpu) * 1e6 / count)
    return median(values)


def fmt_rate(pair):
    value, spread = pair
    if value is None:
        return "–"
    text = f"{value / 1000:.1f}k" if value >= 1000 else f"{value:.0f}"
    return f"{text} ({spread:.0f}%)" if spread is not None else text


def fmt(value, digits=2):
    return "–" if value is None else f"{value:.{digits}f}"


def latency(runs):
    p50 = median([r.get("p50_us") for r in runs])
    p99 = median([r.get("p99_us") for r in runs])
    return p50, p99


def integrity(doc):
    runs = group(doc, "integrity")
    lines = ["**integrity**: same nsqgate, a topic `[integrity]` signs vs one it does not "
             "(msg/s (spread) · nsqgate CPU-µs per message)", "",
             "| workload | unsigned | signed | signed / unsigned | added CPU-µs/msg |",
             "|---|---|---|---|---|"]
    for workload in dict.fromkeys(w for w, _ in runs if w != "counters"):
        plain, signed = runs.get((workload, "plain"), []), runs.get((workload, "signed"), [])
        (r0, _), (r1, _) = rate(plain), rate(signed)
        c0, c1 = cpu_us(plain, "nsqgate"), cpu_us(signed, "nsqgate")
        ratio = f"{r1 / r0:.2f}×" if r0 and r1 else "–"
        added = f"{c1 - c0:+.2f}" if c0 is not None and c1 is not None else "–"
        lines.append(f"| {workload} | {fmt_rate(rate(plain))} · {fmt(c0)} | "
                     f"{fmt_rate(rate(signed))} · {fmt(c1)} | {ratio} | {added} |")
    counters = runs.get(("counters", "signed"), [])
    if counters:
        c = counters[-1]
        lines += ["", f"nsqgate's counters after the last repetition: sealed "
                  f"{c.get('sealed', 0):,.0f}, verified {c.get('verified', 0):,.0f}, "
                  f"quarantined {c.get('quarantined', 0):,.0f}."]
    return lines


def registry(doc):
    runs = group(doc, "registry")
    lines = ["**registration**: nsqlookupd direct (L0) vs sidecar → mutual TLS → guard → "
             "nsqlookupd (L1)", "",
             "| workload | L0 per s | L1 per s | L0 p50 / p99 µs | L1 p50 / p99 µs | "
             "CPU-µs each: nsqlookupd L0 · L1; guard + sidecar |",
             "|---|---|---|---|---|---|"]
    for workload in dict.fromkeys(w for w, _ in runs):
        l0, l1 = runs.get((workload, "L0"), []), runs.get((workload, "L1"), [])
        if workload.startswith("datapath"):
            lines.append(f"| {workload} (PUB to nsqd) | {fmt_rate(rate(l0))} | "
                         f"{fmt_rate(rate(l1))} | – | – | nsqd {fmt(cpu_us(l0, 'nsqd'))} · "
                         f"{fmt(cpu_us(l1, 'nsqd'))}; {fmt(cpu_us(l1, 'guard', 'sidecar'))} |")
            continue
        (a50, a99), (b50, b99) = latency(l0), latency(l1)
        lines.append(
            f"| {workload} | {fmt_rate(rate(l0))} | {fmt_rate(rate(l1))} | "
            f"{fmt(a50, 0)} / {fmt(a99, 0)} | {fmt(b50, 0)} / {fmt(b99, 0)} | "
            f"{fmt(cpu_us(l0, 'nsqlookupd'))} · {fmt(cpu_us(l1, 'nsqlookupd'))}; "
            f"{fmt(cpu_us(l1, 'guard', 'sidecar'))} |")
    return lines


def authsvc(doc):
    runs = group(doc, "authsvc")
    lines = ["**auth service**: GET /auth as nsqd sends it (new connection each)", "",
             "| workload | answers/s | p50 / p99 µs | nsqgate CPU-µs per answer |",
             "|---|---|---|---|"]
    for (workload, side), found in runs.items():
        if side != "nsqgate":
            continue
        p50, p99 = latency(found)
        lines.append(f"| {workload} | {fmt_rate(rate(found))} | {fmt(p50, 0)} / "
                     f"{fmt(p99, 0)} | {fmt(cpu_us(found, 'nsqgate'))} |")
    lines += ["", "stock nsqd without (A0) and with (A1) `--auth-http-address` at nsqgate: "
              "4 workers, each TCP (+ TLS) + IDENTIFY + AUTH + 1 PUB + close", "",
              "| mode | A0 conn/s | A1 conn/s | A1 / A0 | added ms per connection "
              "(4 / rate) | CPU-µs per connection: nsqd A0 · A1; nsqgate |",
              "|---|---|---|---|---|---|"]
    for workload in dict.fromkeys(w for w, s in runs if s in ("A0", "A1")):
        a0, a1 = runs.get((workload, "A0"), []), runs.get((workload, "A1"), [])
        (r0, _), (r1, _) = rate(a0), rate(a1)
        added = f"{(4 / r1 - 4 / r0) * 1000:+.2f}" if r0 and r1 else "–"
        ratio = f"{r1 / r0:.2f}×" if r0 and r1 else "–"
        lines.append(f"| {workload} | {fmt_rate(rate(a0))} | {fmt_rate(rate(a1))} | {ratio} | "
                     f"{added} | {fmt(cpu_us(a0, 'nsqd'), 0)} · {fmt(cpu_us(a1, 'nsqd'), 0)}; "
                     f"{fmt(cpu_us(a1, 'nsqgate'), 0)} |")
    return lines


def markdown(doc):
    m = doc["machine"]
    lines = [f"nsqgate roles bench ({doc['command']}; {doc['reps']} repetition(s), "
             f"{m['cores']} cores, {m['cpu_model']}, {doc['started']}, load average "
             f"{' '.join(m['loadavg_at_start'])} at start, {' '.join(m['loadavg_at_end'])} "
             f"at end; {doc['versions'].get('git')})", ""]
    parts = {r["part"] for r in doc["runs"]}
    for part, table in (("integrity", integrity), ("registry", registry),
                        ("authsvc", authsvc)):
        if part in parts:
            lines += table(doc) + [""]
    failed = [r for r in doc["runs"] if "error" in r]
    for r in failed:
        lines.append(f"FAILED: {r['part']} {r['workload']} {r['side']} rep {r['rep'] + 1}: "
                     f"{r['error']}")
    return "\n".join(lines)
