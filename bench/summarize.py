#!/usr/bin/env python3
"""Turns bench/run.sh's results.jsonl into the Markdown tables of BENCHMARKS.md.

Every figure is the median over the interleaved rounds, with min and max, and ratios are taken between
medians measured in the same run; the pair table also gives the ratio round by round.

Usage: summarize.py results.jsonl WORKERS CONC RATE
"""
import json
import statistics
import sys

NAMES = {
    "direct": "direct (no proxy)",
    "relay": "floor: a tokio byte pump, no HTTP at all (`sgbench relay`)",
    "nginx": "nginx proxy_pass, access log off",
    "nginx_log": "nginx proxy_pass, buffered JSON access log",
    "haproxy": "HAProxy, plain forwarding",
    "haproxy_jwt": "HAProxy, jwt_verify ES256 every request + claim checks + headers",
    "haproxy_jwt_cached": "HAProxy, JWT checks, verified tokens cached (stick table)",
    "sg_full": "scopegate, default config (audit line on)",
    "sg_noaudit": "scopegate, full work, audit off",
    "sg_fresh": "scopegate, audit off, assertion signed per request",
    "sg_first": "scopegate, audit off, first sight (ES256 verify per request)",
    "sg_limits_off": "scopegate, default config, `[limits] enabled = false`",
    "ub_direct": "upstream-bound: direct",
    "ub_nginx": "upstream-bound: nginx, access log off",
    "ub_sg": "upstream-bound: scopegate, audit off",
    "stream_direct": "direct (no proxy)",
    "sg_stream": "scopegate, full work, audit off",
}
HEADLINE = ["direct", "relay", "nginx", "nginx_log", "haproxy", "haproxy_jwt", "haproxy_jwt_cached",
            "sg_noaudit", "sg_full", "sg_fresh", "sg_first", "sg_limits_off"]
UPSTREAM_BOUND = ["ub_direct", "ub_nginx", "ub_sg"]
# (a, b, why): ratios a / b of CPU per request and of requests/s.
PAIRS = [
    ("sg_noaudit", "nginx", "full auth, no log vs plain proxy, no log"),
    ("sg_full", "nginx_log", "full auth + audit line vs plain proxy + JSON access log"),
    ("haproxy", "nginx", "the two plain proxies"),
    ("sg_noaudit", "haproxy", "full auth, no log vs the fastest plain peer"),
    ("sg_noaudit", "haproxy_jwt", "scopegate (token cache) vs HAProxy verifying every request"),
    ("sg_noaudit", "haproxy_jwt_cached", "both cache verified tokens, no log"),
    ("sg_first", "haproxy_jwt", "both verify ES256 on every request, no log"),
    ("relay", "nginx", "the floor (bytes copied, no HTTP) vs plain proxy"),
    ("sg_noaudit", "relay", "what HTTP and the whole job add over the floor"),
    ("sg_full", "sg_noaudit", "what the audit line costs scopegate"),
    ("nginx_log", "nginx", "what the access log costs nginx"),
    ("sg_limits_off", "sg_full", "what the [limits] checks cost (issue 15)"),
    ("ub_sg", "ub_nginx", "upstream-bound: scopegate vs nginx"),
]


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


def ratio(a, b):
    return f"{a / b:.2f}×" if a is not None and b else "n/a"


def name(m):
    return NAMES.get(m, m)


def main():
    rows = load(sys.argv[1])
    workers, conc, rate = sys.argv[2], sys.argv[3], sys.argv[4]
    out = []
    by = lambda kind: [r for r in rows if r["kind"] == kind]
    if not by("versions"):
        # results.jsonl from before the fast upstream (no "versions" record): sg_full had audit off.
        NAMES["sg_full"] = "scopegate, full work, audit off (the sg_full of runs before the fast upstream)"
        PAIRS.insert(0, ("sg_full", "nginx", "full auth, no log vs plain proxy, no log"))

    up = by("upstream")
    ver = by("versions")
    if up or ver:
        out.append("### Setup\n")
        if ver:
            v = ver[0]
            out.append(f"- nginx {v['nginx']}, HAProxy {v['haproxy']}; {v['rounds']} interleaved rounds of {v['dur_s']} s per mode.")
        if up:
            u = up[0]
            probe = ""
            if "nginx_rps" in u:
                cn = "/".join(f"{c:.1f}" for c in u.get("nginx_cpu_us", []))
                cs = "/".join(f"{c:.1f}" for c in u.get("sgbench_cpu_us", []))
                probe = (f" (direct probe, best of two {u['probe_s']} s windows: nginx, 1 worker, {u['nginx_rps']:,.0f} requests/s"
                         + (f", {cn} µs CPU per request" if cn else "")
                         + f"; sgbench, {u['sgbench_threads']} threads, {u['sgbench_rps']:,.0f} requests/s"
                         + (f", {cs} µs" if cs else "") + ")")
            kind = "nginx, worker_processes 1, `return 200` with 1 KiB" if u["chosen"] == "nginx" else f"sgbench upstream, {u['sgbench_threads']} threads, 1 KiB"
            out.append(f"- Headline upstream: {kind}{probe}.")
        out.append("")

    thr = {}
    for r in by("throughput"):
        thr.setdefault(r["mode"], {})[r["round"]] = r
    cpu = {}
    for r in by("cpu"):
        cpu.setdefault(r["mode"], {})[r["round"]] = r

    def cpu_per(r, keys=("user_ticks", "sys_ticks")):
        if r is None or not r.get("requests") or r.get(keys[0]) is None:
            return None
        return sum(r[k] for k in keys) / r["clk_tck"] * 1e6 / r["requests"]

    def rps_stats(m):
        return stats([r["rps"] for r in thr.get(m, {}).values()])

    def cpu_stats(m, keys=("user_ticks", "sys_ticks")):
        return stats([cpu_per(r, keys) for r in cpu.get(m, {}).values()])

    def table(modes, title):
        modes = [m for m in modes if m in thr]
        if not modes:
            return
        base_cpu = cpu_stats("nginx")
        base_rps = rps_stats("nginx")
        if modes[0].startswith("ub_"):
            base_cpu, base_rps = cpu_stats("ub_nginx"), rps_stats("ub_nginx")
        out.append(title + "\n")
        base = "ub_nginx" if modes[0].startswith("ub_") else "nginx"
        out.append(f"| mode | CPU per request, µs (user + system) | user | system | CPU vs {base} | requests/s | requests/s vs {base} | log bytes per request | upstream busy (one core) |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for m in modes:
            c, u, s_ = cpu_stats(m), cpu_stats(m, ("user_ticks",)), cpu_stats(m, ("sys_ticks",))
            rp = rps_stats(m)
            lb = stats([r["log_bytes"] / r["requests"] for r in cpu.get(m, {}).values() if r.get("log_bytes") is not None and r["requests"]])
            busy = stats([r["upstream_ticks"] / r["clk_tck"] / r["wall_s"] * 100 for r in cpu.get(m, {}).values()
                          if r.get("upstream_ticks") is not None and r.get("wall_s")])
            c_txt = f"**{fmt(c, digits=1)}**" if c else "—"
            out.append(
                f"| {name(m)} | {c_txt} | {fmt(u, digits=1) if u else '—'} | {fmt(s_, digits=1) if s_ else '—'} | "
                f"{ratio(c[0] if c else None, base_cpu[0] if base_cpu else None) if c else '—'} | {fmt(rp)} | "
                f"{ratio(rp[0] if rp else None, base_rps[0] if base_rps else None)} | "
                f"{fmt(lb) if lb else '—'} | {fmt(busy, '%') if busy else 'n/a'} |"
            )
        errs = [(m, r["round"], r.get("non2xx", 0), r["errors"]) for m in modes for r in thr[m].values() if r.get("errors")]
        if errs:
            out.append("\nErrors reported by wrk: " + "; ".join(f"{m} round {rd}: {e.strip()}" for m, rd, _, e in errs))
        out.append("")

    table(HEADLINE, f"### CPU per request and throughput, HTTP/1.1 keep-alive, concurrency {conc}, {workers} proxy workers\n\n"
          "CPU per request: user + system time of all of the proxy's processes during the window, divided by the "
          "requests completed. Upstream busy: the headline upstream's CPU during the window, in % of one core.")
    table(UPSTREAM_BOUND, "### Upstream-bound rows (the one-thread sgbench upstream; ratios against ub_nginx)")

    pair_rows = []
    for a, b, why in PAIRS:
        if a not in thr or b not in thr:
            continue
        ca, cb = cpu_stats(a), cpu_stats(b)
        ra, rb = rps_stats(a), rps_stats(b)
        rounds = sorted(set(thr[a]) & set(thr[b]))
        by_round_cpu = []
        by_round_rps = []
        for rd in rounds:
            x, y = cpu_per(cpu.get(a, {}).get(rd)), cpu_per(cpu.get(b, {}).get(rd))
            by_round_cpu.append(f"{x / y:.2f}" if x is not None and y else "–")
            x, y = thr[a][rd]["rps"], thr[b][rd]["rps"]
            by_round_rps.append(f"{x / y:.2f}" if y else "–")
        pair_rows.append(
            f"| {a} / {b} | {why} | {ratio(ca[0] if ca else None, cb[0] if cb else None)} ({', '.join(by_round_cpu)}) | "
            f"{ratio(ra[0] if ra else None, rb[0] if rb else None)} ({', '.join(by_round_rps)}) |"
        )
    if pair_rows:
        out.append("### Like for like: ratios of medians (and round by round)\n")
        out.append("CPU per request below 1.00× means the first uses less; requests/s above 1.00× means it forwards more.\n")
        out.append("| pair | what it compares | CPU per request | requests/s |")
        out.append("|---|---|---|---|")
        out.extend(pair_rows)
        out.append("")

    lat_rows = by("latency")
    lat_modes = [m for m in dict.fromkeys(r["mode"] for r in lat_rows)]
    if lat_modes:
        lat = {m: ([r["p50_us"] for r in lat_rows if r["mode"] == m], [r["p99_us"] for r in lat_rows if r["mode"] == m]) for m in lat_modes}
        out.append(f"### Latency at {rate} requests/s, concurrency {conc} (µs, oha with latency correction)\n")
        out.append("| mode | p50 | p99 | added p50 over direct | p99 vs nginx |")
        out.append("|---|---|---|---|---|")
        d50 = statistics.median(lat["direct"][0]) if lat.get("direct", ([], []))[0] else None
        n99 = statistics.median(lat["nginx"][1]) if lat.get("nginx", ([], []))[1] else None
        for m in lat_modes:
            p50, p99 = stats(lat[m][0]), stats(lat[m][1])
            if p50 is None:
                continue
            added = f"{p50[0] - d50:+.0f}" if d50 is not None else "n/a"
            vs = f"{p99[0] / n99:.2f}×" if n99 else "n/a"
            out.append(f"| {name(m)} | {fmt(p50)} | {fmt(p99)} | {added} | {vs} |")
        out.append("")

    # SSE and WebSocket: the one-thread sgbench upstream (older results name the modes direct/sg_full).
    sse = by("sse")
    stream_modes = lambda rs: [m for m in ["stream_direct", "direct", "nginx", "sg_stream", "sg_full"] if any(r["mode"] == m for r in rs)]
    if sse:
        out.append("### Server-sent events: upstream write → client read (µs), 200 events per run (one-thread sgbench upstream)\n")
        out.append("| event padding | mode | first event | p50 | p99 |")
        out.append("|---|---|---|---|---|")
        for pad in sorted({r["pad"] for r in sse}):
            for m in stream_modes(sse):
                rs = [r["result"] for r in sse if r["pad"] == pad and r["mode"] == m]
                if not rs:
                    continue
                first = stats([r["first_us"] for r in rs])
                p50 = stats([r["p50_us"] for r in rs])
                p99 = stats([r["p99_us"] for r in rs])
                n = min(r["events"] for r in rs)
                out.append(f"| {pad} B | {name(m)} ({n} events) | {fmt(first)} | {fmt(p50)} | {fmt(p99)} |")
        out.append("")

    ws = by("ws")
    if ws:
        out.append(f"### WebSocket echo round trips over {conc} sockets (per second, one-thread sgbench upstream)\n")
        out.append("| mode | median (min–max) | vs direct | vs nginx |")
        out.append("|---|---|---|---|")
        w = {m: stats([r["result"]["per_sec"] for r in ws if r["mode"] == m]) for m in stream_modes(ws)}
        wd = (w.get("stream_direct") or w.get("direct") or (None,))[0]
        wn = (w.get("nginx") or (None,))[0]
        for m, s in w.items():
            out.append(f"| {name(m)} | {fmt(s)} | {ratio(s[0], wd)} | {ratio(s[0], wn)} |")
        out.append("")

    mem = by("memory")
    idle = [r for r in mem if r["what"] == "idle_rss_kib"]
    load_rss = [r["value"] for r in mem if r["what"] == "load_rss_kib"]
    out.append("### Memory\n")
    out.append("| what | value |")
    out.append("|---|---|")
    for r in idle:
        m = r.get("mode", "sg_full")
        if r.get("pss_kib"):
            out.append(f"| idle after start, {name(m)}: RSS / PSS summed over its processes | {r['value'] / 1024:.1f} / {r['pss_kib'] / 1024:.1f} MiB |")
        else:
            out.append(f"| RSS idle after start, {name(m)} | {r['value'] / 1024:.1f} MiB |")
    if load_rss:
        out.append(f"| RSS peak under load, {name('sg_full')} (per round, median) | {statistics.median(load_rss) / 1024:.1f} MiB |")
    for r in by("ws_idle"):
        per = (r["rss_after_kib"] - r["rss_before_kib"]) * 1024 / r["count"]
        out.append(
            f"| {r['count']:,} idle WebSockets open (scopegate) | {r['rss_before_kib'] / 1024:.1f} → {r['rss_after_kib'] / 1024:.1f} MiB, "
            f"{per / 1024:.2f} KiB per socket |"
        )
    print("\n".join(out))


if __name__ == "__main__":
    main()
