#!/usr/bin/env python3
"""Turns bench/run.sh's results.jsonl into the Markdown tables of BENCHMARKS.md.

Every figure is the median over the interleaved rounds, with min and max, and ratios are taken between
medians measured in the same run.
"""
import json
import statistics
import sys


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def fmt(s, unit="", digits=0):
    if s is None:
        return "n/a"
    med, lo, hi = s
    return f"{med:,.{digits}f}{unit} ({lo:,.{digits}f}–{hi:,.{digits}f})"


def main():
    rows = load(sys.argv[1])
    workers, conc, rate = sys.argv[2], sys.argv[3], sys.argv[4]
    out = []
    by = lambda kind: [r for r in rows if r["kind"] == kind]

    thr = {m: stats([r["rps"] for r in by("throughput") if r["mode"] == m]) for m in ["direct", "nginx", "sg_full", "sg_fresh", "sg_first"]}
    out.append(f"### Throughput, HTTP/1.1 keep-alive, concurrency {conc}, {workers} proxy workers (requests/s)\n")
    out.append("| mode | median (min–max) | vs direct | vs nginx |")
    out.append("|---|---|---|---|")
    names = {
        "direct": "direct (no proxy)",
        "nginx": "nginx proxy_pass",
        "sg_full": "scopegate, full work",
        "sg_fresh": "scopegate, full work, assertion signed per request",
        "sg_first": "scopegate, first sight (ES256 verify per request)",
    }
    for m, s in thr.items():
        if s is None:
            continue
        vd = s[0] / thr["direct"][0] if thr["direct"] else float("nan")
        vn = s[0] / thr["nginx"][0] if thr["nginx"] else float("nan")
        out.append(f"| {names[m]} | {fmt(s)} | {vd:.2f}× | {vn:.2f}× |")

    cpu = by("cpu")
    if cpu:
        out.append("\n### CPU per proxied request during the throughput runs (µs, user + system, all of the proxy's processes)\n")
        out.append("| mode | user | system | total | total vs nginx |")
        out.append("|---|---|---|---|---|")
        per = lambda r, k: r[k] / r["clk_tck"] * 1e6 / r["requests"]
        tot = {}
        for m in ["nginx", "sg_full", "sg_fresh", "sg_first"]:
            rs = [r for r in cpu if r["mode"] == m and r["requests"]]
            if not rs:
                continue
            u = stats([per(r, "user_ticks") for r in rs])
            s_ = stats([per(r, "sys_ticks") for r in rs])
            t = stats([per(r, "user_ticks") + per(r, "sys_ticks") for r in rs])
            tot[m] = t[0]
            vs = f"{t[0] / tot['nginx']:.2f}×" if "nginx" in tot else "n/a"
            out.append(f"| {names[m]} | {fmt(u, digits=1)} | {fmt(s_, digits=1)} | {fmt(t, digits=1)} | {vs} |")

    lat = {m: ([r["p50_us"] for r in by("latency") if r["mode"] == m], [r["p99_us"] for r in by("latency") if r["mode"] == m]) for m in ["direct", "nginx", "sg_full"]}
    if any(v[0] for v in lat.values()):
        out.append(f"\n### Latency at {rate} requests/s, concurrency {conc} (µs, oha with latency correction)\n")
        out.append("| mode | p50 | p99 | added p50 over direct | p99 vs nginx |")
        out.append("|---|---|---|---|---|")
        d50 = statistics.median(lat["direct"][0]) if lat["direct"][0] else None
        n99 = statistics.median(lat["nginx"][1]) if lat["nginx"][1] else None
        for m in ["direct", "nginx", "sg_full"]:
            p50, p99 = stats(lat[m][0]), stats(lat[m][1])
            if p50 is None:
                continue
            added = f"{p50[0] - d50:+.0f}" if d50 is not None else "n/a"
            vs = f"{p99[0] / n99:.2f}×" if n99 else "n/a"
            out.append(f"| {names[m]} | {fmt(p50)} | {fmt(p99)} | {added} | {vs} |")

    sse = by("sse")
    if sse:
        out.append("\n### Server-sent events: upstream write → client read (µs), 200 events per run\n")
        out.append("| event padding | mode | first event | p50 | p99 |")
        out.append("|---|---|---|---|---|")
        for pad in sorted({r["pad"] for r in sse}):
            for m in ["direct", "nginx", "sg_full"]:
                rs = [r["result"] for r in sse if r["pad"] == pad and r["mode"] == m]
                if not rs:
                    continue
                first = stats([r["first_us"] for r in rs])
                p50 = stats([r["p50_us"] for r in rs])
                p99 = stats([r["p99_us"] for r in rs])
                n = min(r["events"] for r in rs)
                out.append(f"| {pad} B | {names[m]} ({n} events) | {fmt(first)} | {fmt(p50)} | {fmt(p99)} |")

    ws = by("ws")
    if ws:
        out.append(f"\n### WebSocket echo round trips over {conc} sockets (per second)\n")
        out.append("| mode | median (min–max) | vs direct | vs nginx |")
        out.append("|---|---|---|---|")
        w = {m: stats([r["result"]["per_sec"] for r in ws if r["mode"] == m]) for m in ["direct", "nginx", "sg_full"]}
        for m, s in w.items():
            if s is None:
                continue
            out.append(f"| {names[m]} | {fmt(s)} | {s[0] / w['direct'][0]:.2f}× | {s[0] / w['nginx'][0]:.2f}× |")

    mem = by("memory")
    idle = [r["value"] for r in mem if r["what"] == "idle_rss_kib"]
    load_rss = [r["value"] for r in mem if r["what"] == "load_rss_kib"]
    out.append("\n### Memory (scopegate)\n")
    out.append("| what | value |")
    out.append("|---|---|")
    if idle:
        out.append(f"| RSS idle, after start | {idle[0] / 1024:.1f} MiB |")
    if load_rss:
        out.append(f"| RSS peak under load (per round, median) | {statistics.median(load_rss) / 1024:.1f} MiB |")
    for r in by("ws_idle"):
        per = (r["rss_after_kib"] - r["rss_before_kib"]) * 1024 / r["count"]
        out.append(
            f"| {r['count']:,} idle WebSockets open | {r['rss_before_kib'] / 1024:.1f} → {r['rss_after_kib'] / 1024:.1f} MiB, "
            f"{per / 1024:.2f} KiB per socket |"
        )
    print("\n".join(out))


if __name__ == "__main__":
    main()
