#!/usr/bin/env python3
"""Plots of mop's validation experiments, drawn from each experiment's data.json.

Usage: plot.py EXPERIMENT RESULTS_DIR
Writes PNG files into RESULTS_DIR and prints each file name on its own line (the report
embeds them). Every plot carries its own title, axis labels, units and legend, so that it
reads without the report's text.
"""

import json
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {
    "baseline": "#888888",
    "floor": "#9ecae1",
    "mop": "#3182bd",
    "otel-sdk": "#e6550d",
}


def med(v):
    v = [x for x in v if x == x]
    return statistics.median(v) if v else float("nan")


def save(fig, out, name):
    fig.tight_layout()
    fig.savefig(os.path.join(out, name), dpi=110)
    plt.close(fig)
    print(name)


def rate_label(rate):
    return "saturation" if rate == 0 else f"{rate:.0f}/s"


def overhead(data, out):
    runs = data["runs"]
    ratios = data["ratios"]
    servers = [s for s in ["nginx", "python-wsgi", "grpcio"] if any(r["server"] == s for r in runs)]

    # 1. Throughput ratio at saturation.
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.25
    variants = ["floor", "mop", "otel-sdk"]
    for i, v in enumerate(variants):
        xs, ys, lo, hi = [], [], [], []
        for j, s in enumerate(servers):
            r = [x for x in ratios if x["server"] == s and x["rate"] == 0 and x["variant"] == v]
            if not r:
                continue
            vals = r[0]["rps_ratio"]
            m = med(vals)
            xs.append(j + (i - 1) * width)
            ys.append(m)
            lo.append(m - min(vals))
            hi.append(max(vals) - m)
        if xs:
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=v, color=COLORS[v])
            for x, y in zip(xs, ys):
                ax.text(x, y + 0.02, f"{y:.2f}", ha="center", fontsize=8)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(servers)))
    ax.set_xticklabels(servers)
    ax.set_ylabel("throughput / baseline throughput (same round)")
    ax.set_ylim(0, 1.2)
    ax.set_title("Saturation throughput relative to no instrumentation\n(median of rounds, bars: min-max; 1.0 = no cost)")
    ax.legend(title="variant", loc="lower right")
    save(fig, out, "throughput_saturation.png")

    # 2. p99 latency per offered load, per server.
    fig, axes = plt.subplots(1, len(servers), figsize=(4.2 * len(servers), 4), squeeze=False)
    for ax, s in zip(axes[0], servers):
        rates = sorted({r["rate"] for r in runs if r["server"] == s}, key=lambda x: (x == 0, x))
        for v in ["baseline", "floor", "mop", "otel-sdk"]:
            ys = []
            for rate in rates:
                vals = [r["p99_ms"] for r in runs if r["server"] == s and r["rate"] == rate and r["variant"] == v]
                ys.append(med(vals) if vals else float("nan"))
            if any(y == y for y in ys):
                ax.plot(range(len(rates)), ys, marker="o", label=v, color=COLORS[v])
        ax.set_xticks(range(len(rates)))
        ax.set_xticklabels([rate_label(r) for r in rates])
        ax.set_yscale("log")
        ax.set_xlabel("offered load (requests/s)")
        ax.set_ylabel("p99 latency (ms, log)")
        ax.set_title(f"{s}: client p99 latency")
        ax.legend(fontsize=8)
    save(fig, out, "latency_p99.png")

    # 3. CPU per request: server, plus the agent stacked on top for mop.
    fig, axes = plt.subplots(1, len(servers), figsize=(4.2 * len(servers), 4), squeeze=False)
    for ax, s in zip(axes[0], servers):
        rates = sorted({r["rate"] for r in runs if r["server"] == s}, key=lambda x: (x == 0, x))
        vs = [v for v in ["baseline", "floor", "mop", "otel-sdk"] if any(r["server"] == s and r["variant"] == v for r in runs)]
        width = 0.8 / max(1, len(vs))
        for i, v in enumerate(vs):
            srv, agt, xs = [], [], []
            for j, rate in enumerate(rates):
                sel = [r for r in runs if r["server"] == s and r["rate"] == rate and r["variant"] == v]
                if not sel:
                    continue
                xs.append(j + (i - (len(vs) - 1) / 2) * width)
                srv.append(med([r["server_cpu_s"] / max(1, r["requests"]) * 1e6 for r in sel]))
                agt.append(med([r["agent_cpu_s"] / max(1, r["requests"]) * 1e6 for r in sel]))
            ax.bar(xs, srv, width, color=COLORS[v], label=f"{v}: server")
            if v in ("mop", "floor"):
                ax.bar(xs, agt, width, bottom=srv, color=COLORS[v], alpha=0.45, hatch="//", label=f"{v}: agent")
        ax.set_xticks(range(len(rates)))
        ax.set_xticklabels([rate_label(r) for r in rates])
        ax.set_xlabel("offered load (requests/s)")
        ax.set_ylabel("CPU microseconds per request")
        ax.set_title(f"{s}: CPU per request")
        ax.legend(fontsize=7)
    save(fig, out, "cpu_per_request.png")

    # 4. Agent CPU per 1k requests and peak RSS.
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for s in servers:
        rates = sorted({r["rate"] for r in runs if r["server"] == s and r["variant"] == "mop"}, key=lambda x: (x == 0, x))
        xs, ys, rss = [], [], []
        for rate in rates:
            sel = [r for r in runs if r["server"] == s and r["rate"] == rate and r["variant"] == "mop"]
            xs.append(med([r["rps"] for r in sel]))
            ys.append(med([r["agent_cpu_s"] * 1e6 / max(1, r["requests"]) for r in sel]))
            rss.append(max(r["agent_rss_peak_kib"] for r in sel) / 1024)
        ax1.plot(xs, ys, marker="o", label=s)
        ax2.plot(xs, rss, marker="o", label=s)
    ax1.set_xscale("log")
    ax1.set_xlabel("achieved requests/s (log)")
    ax1.set_ylabel("agent CPU ms per 1000 requests")
    ax1.set_title("mop agent CPU per 1k requests")
    ax1.legend()
    ax2.set_xscale("log")
    ax2.set_xlabel("achieved requests/s (log)")
    ax2.set_ylabel("agent peak RSS (MiB)")
    ax2.set_ylim(bottom=0)
    ax2.set_title("mop agent peak resident memory")
    ax2.legend()
    save(fig, out, "agent_cost.png")


def accuracy(data, out):
    phases = data["phases"]
    # 1. Distribution of the duration error (client - span), one curve per phase.
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for ph in phases:
        err = sorted(ph["client_minus_span_us"])
        if not err:
            continue
        ys = [(i + 1) / len(err) for i in range(len(err))]
        ax.plot(err, ys, label=f"{ph['server']} @ {ph['rate']:.0f}/s (n={len(err)})")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("client-measured duration - span duration (microseconds, symlog)")
    ax.set_ylabel("fraction of requests (CDF)")
    ax.axvline(0, color="black", linewidth=0.8, linestyle="--")
    ax.set_title("Span duration error against the client's measurement\n(> 0: span inside the client's window, as expected; < 0 would be wrong)")
    ax.legend(fontsize=8)
    save(fig, out, "duration_error_cdf.png")

    # 2. Span duration against client duration.
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    lo, hi = float("inf"), 0
    for ph in phases:
        c, sp = ph["client_us"], ph["span_us"]
        if not c:
            continue
        ax.scatter(c, sp, s=4, alpha=0.4, label=f"{ph['server']} @ {ph['rate']:.0f}/s")
        lo, hi = min(lo, min(c), min(sp) or 1), max(hi, max(c))
    if hi:
        lo = max(lo, 1)
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.8, linestyle="--", label="span = client")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("client-measured duration (us, log)")
    ax.set_ylabel("span duration (us, log)")
    ax.set_title("Each request: span duration vs client duration")
    ax.legend(fontsize=8, markerscale=3)
    save(fig, out, "duration_scatter.png")

    # 3. Exactness per phase.
    fig, ax = plt.subplots(figsize=(9, 4.5))
    checks = [
        ("span found", lambda p: (p["matched"], p["requests"])),
        ("status", lambda p: (p["status_exact"], p["matched"])),
        ("path", lambda p: (p["path_exact"], p["matched"])),
        ("req body", lambda p: (p["request_body_exact"], p["matched"])),
        ("resp body", lambda p: (p["response_body_exact"], p["matched"])),
        ("RED count", lambda p: (min(p["red_count"], p["requests"]), p["requests"])),
    ]
    width = 0.8 / max(1, len(phases))
    for i, ph in enumerate(phases):
        ys = []
        for _, f in checks:
            n, d = f(ph)
            ys.append(100.0 * n / d if d else 0)
        xs = [j + (i - (len(phases) - 1) / 2) * width for j in range(len(checks))]
        ax.bar(xs, ys, width, label=f"{ph['server']} @ {ph['rate']:.0f}/s")
    ax.set_xticks(range(len(checks)))
    ax.set_xticklabels([c for c, _ in checks])
    ax.set_ylabel("% of requests exact (body sizes: of all spans, unreported counts as not exact)")
    ax.set_ylim(0, 105)
    ax.set_title("What the spans got exactly right")
    ax.legend(fontsize=8, loc="lower left")
    save(fig, out, "exactness.png")


def completeness(data, out):
    steps = data["steps"]
    configs = []
    for s in steps:
        if s["config"] not in configs:
            configs.append(s["config"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for c in configs:
        rates = sorted({s["rate"] for s in steps if s["config"] == c}, key=lambda x: (x == 0, x))
        xs, ys, lo, hi, lost = [], [], [], [], []
        for r in rates:
            sel = [s for s in steps if s["config"] == c and s["rate"] == r]
            ratio = [s["spans"] / max(1, s["requests"]) for s in sel]
            m = med(ratio)
            xs.append(med([s["rps"] for s in sel]))
            ys.append(m)
            lo.append(m - min(ratio))
            hi.append(max(ratio) - m)
            lost.append(med([s["events_lost"] / max(1.0, s["events_read"] + s["events_lost"]) * 100 for s in sel]))
        ax1.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=c)
        ax2.plot(xs, lost, marker="o", label=c)
    ax1.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax1.set_xlabel("achieved requests/s (last point: saturation)")
    ax1.set_ylabel("spans made / requests completed")
    ax1.set_title("Spans per request as load rises (1.0 = every request)")
    ax1.legend(fontsize=8)
    ax2.set_xlabel("achieved requests/s")
    ax2.set_ylabel("kernel events lost, % of events")
    ax2.set_title("Ring buffer loss (mop_events_lost_total)")
    ax2.set_ylim(bottom=0)
    ax2.legend(fontsize=8)
    save(fig, out, "spans_per_request.png")


def coverage(data, out):
    cells = data["cells"]
    protocols = data["protocols"]
    runtimes = []
    for c in cells:
        if c["runtime"] not in runtimes:
            runtimes.append(c["runtime"])
    colors = {"seen": "#31a354", "partial": "#fdae6b", "wrong": "#fd8d3c", "not seen": "#de2d26",
              "n/a": "#f0f0f0", "not run": "#bdbdbd"}
    fig, ax = plt.subplots(figsize=(2.3 * len(protocols) + 2, 0.7 * len(runtimes) + 1.6))
    for i, r in enumerate(runtimes):
        for j, p in enumerate(protocols):
            c = next((c for c in cells if c["runtime"] == r and c["protocol"] == p), None)
            v = c["verdict"] if c else "n/a"
            ax.add_patch(plt.Rectangle((j, len(runtimes) - 1 - i), 1, 1, color=colors.get(v, "white"), ec="white", lw=2))
            label = v if v in ("n/a", "not run") else f"{v}\n{c['spans']}/5"
            ax.text(j + 0.5, len(runtimes) - 1 - i + 0.5, label, ha="center", va="center", fontsize=9)
    ax.set_xlim(0, len(protocols))
    ax.set_ylim(0, len(runtimes))
    ax.set_xticks([j + 0.5 for j in range(len(protocols))])
    ax.set_xticklabels(protocols, fontsize=9)
    ax.set_yticks([len(runtimes) - 1 - i + 0.5 for i in range(len(runtimes))])
    ax.set_yticklabels(runtimes)
    ax.xaxis.tick_top()
    ax.set_title("What mop sees: spans with the right method, status and path, per protocol and program\n(green: all 5 requests; red: none; grey: not applicable / not run)", fontsize=10, pad=28)
    for sp in ax.spines.values():
        sp.set_visible(False)
    save(fig, out, "coverage_matrix.png")


def propagation(data, out):
    sc = data["scenarios"]
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(sc) + 1.8))
    names = [s["name"] for s in sc]
    vals = [100.0 * s["complete"] / s["requests"] if s["requests"] else 0 for s in sc]
    ax.barh(range(len(sc)), vals, color=["#31a354" if v >= 99.9 else "#fd8d3c" if v > 0 else "#de2d26" for v in vals])
    for i, v in enumerate(vals):
        ax.text(min(v, 95) + 1, i, f"{v:.0f}%", va="center", fontsize=9)
    ax.set_yticks(range(len(sc)))
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 110)
    ax.set_xlabel("requests whose whole parent/child chain is linked (%)")
    ax.set_title("Complete trace chains per scenario")
    save(fig, out, "chains.png")

    cost = data["cost"]
    if cost:
        fig, ax = plt.subplots(figsize=(8, 4))
        vs = [c["variant"] for c in cost]
        m = [med(c["rps_ratio"]) for c in cost]
        lo = [mm - min(c["rps_ratio"]) if c["rps_ratio"] else 0 for mm, c in zip(m, cost)]
        hi = [max(c["rps_ratio"]) - mm if c["rps_ratio"] else 0 for mm, c in zip(m, cost)]
        ax.bar(range(len(vs)), m, yerr=[lo, hi], capsize=3, color=["#888888"] + ["#3182bd"] * (len(vs) - 1))
        for i, v in enumerate(m):
            ax.text(i, v + 0.02, f"{v:.2f}", ha="center", fontsize=9)
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_xticks(range(len(vs)))
        ax.set_xticklabels(["no agent" if v == "baseline" else f"mop, {v}" for v in vs])
        ax.set_ylabel("throughput / no-agent throughput (same round)")
        ax.set_xlabel("ebpf.context_propagation")
        ax.set_ylim(0, 1.25)
        ax.set_title("Cost of the context carriers: closed loop through curl-like client -> Python proxy -> nginx\n(median of rounds, bars: min-max)", fontsize=10)
        save(fig, out, "carrier_cost.png")


def main():
    name, out = sys.argv[1], sys.argv[2]
    with open(os.path.join(out, "data.json")) as f:
        data = json.load(f)
    fn = globals().get(name)
    if fn is None:
        sys.exit(f"no plots for experiment {name}")
    fn(data, out)


if __name__ == "__main__":
    main()
