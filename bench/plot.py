#!/usr/bin/env python3
"""plot.py: PNG plots from the benches' JSON lines.

    bench/plot.py [--dir bench/out]

Reads every *.jsonl in DIR (what `make bench-*` writes there) and draws, into the same
directory, each plot whose figures are present (the others are skipped with a note):

- cancel.png: the distribution (empirical CDF, log time axis) of cancel latency under a
  saturated tunnel, per mode (control socket, --no-control, ssh -R, direct), download and upload
  (bench=cancel lines with latencies_ms: core.py and sshpeer.py), with p50/p99 in the legend.
- throughput.png: MB/s medians with 1 and 8 parallel streams per path and direction
  (throughput_streams_summary, streams.py; direct, ~5x higher, is given as text below the
  bars), and 8 streams against the reactor count
  (throughput_scale_summary).
- requests.png: requests/s and p99 latency per path, alone and beside a bulk download
  (requests_summary, requests.py).

Lines that are not JSON objects are ignored. Headless (matplotlib's Agg backend).
"""
import argparse
import json
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

COLORS = {"control": "tab:blue", "no-control": "tab:orange", "ssh -R": "tab:red",
          "direct": "tab:gray", "tunnel": "tab:blue", "ssh": "tab:red", "relay": "tab:green"}


def load(d):
    lines = []
    for f in sorted(pathlib.Path(d).glob("*.jsonl")):
        for raw in f.read_text(errors="replace").splitlines():
            raw = raw.strip()
            if not raw.startswith("{"):
                continue
            try:
                x = json.loads(raw)
            except ValueError:
                continue
            if isinstance(x, dict) and "bench" in x:
                x["_file"] = f.name
                lines.append(x)
    return lines


def ecdf(ax, xs, label, color):
    xs = sorted(xs)
    n = len(xs)
    ax.step(xs, [(i + 1) / n for i in range(n)], where="post", label=label, color=color)


def plot_cancel(lines, out):
    cs = [x for x in lines if x["bench"] == "cancel" and x.get("latencies_ms")]
    if not cs:
        return False
    dirs = ["download", "upload"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, direction in zip(axes, dirs):
        shown = 0
        for mode in ("control", "no-control", "ssh -R", "direct"):
            xs = [x for x in cs if x.get("mode") == mode
                  and x.get("direction", "download") == direction]
            if not xs:
                continue
            x = xs[-1]  # the latest run of that mode
            lat = [max(v, 1e-3) for v in x["latencies_ms"]]
            ecdf(ax, lat, f"{mode}: p50 {x['p50_ms']:.2f} ms, p99 {x['p99_ms']:.2f} ms "
                 f"(n={x['trials']})", COLORS.get(mode))
            shown += 1
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("client reset -> service sees it (ms, log)")
        ax.set_title(f"cancel under load, {direction}")
        ax.grid(True, which="both", alpha=0.3)
        ax.axhline(0.99, color="k", lw=0.5, ls=":")
        ax.axhline(0.5, color="k", lw=0.5, ls=":")
        if shown:
            ax.legend(fontsize=8, loc="lower right")
        else:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center")
    axes[0].set_ylabel("fraction of trials")
    fig.tight_layout()
    fig.savefig(out / "cancel.png", dpi=110)
    plt.close(fig)
    return True


def bars(ax, groups, series, value, colors, fmt="{:.0f}"):
    """groups: x labels; series: [(label, {group: value})]."""
    n = len(series)
    width = 0.8 / max(n, 1)
    for i, (label, vals) in enumerate(series):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        ys = [vals.get(g, 0) for g in groups]
        b = ax.bar(xs, ys, width, label=label, color=colors.get(label))
        for rect, y in zip(b, ys):
            if y:
                ax.annotate(fmt.format(y), (rect.get_x() + rect.get_width() / 2, y),
                            ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)
    ax.set_ylabel(value)
    ax.grid(True, axis="y", alpha=0.3)


def plot_throughput(lines, out):
    ts = [x for x in lines if x["bench"] == "throughput_streams_summary"]
    sc = [x for x in lines if x["bench"] == "throughput_scale_summary"]
    if not ts and not sc:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [2, 1]})
    ax = axes[0]
    if ts:
        def label(x):
            return f"{x['direction']}, {x['streams']} stream{'s' if x['streams'] > 1 else ''}"

        groups = sorted({label(x) for x in ts})
        series = []
        for path in ("tunnel", "ssh", "relay"):
            vals = {label(x): x["mb_per_s_median"] for x in ts if x["path"] == path}
            if vals:
                series.append((path, vals))
        bars(ax, groups, series, "MB/s (median)", COLORS)
        direct = {label(x): x["mb_per_s_median"] for x in ts if x["path"] == "direct"}
        if direct:  # an order of magnitude above: as text, so the other bars stay readable
            ax.set_xlabel("direct (no tunnel, the floor): " + ", ".join(
                f"{g}: {direct[g]:.0f}" for g in groups if g in direct) + " MB/s", fontsize=8)
        ax.set_ylim(0, max(v for _, vals in series for v in vals.values()) * 1.2)
        ax.set_title("throughput by path, streams moving 2 GiB together")
        ax.legend(fontsize=8, loc="upper left")
    ax = axes[1]
    if sc:
        threads = sorted({x["threads"] for x in sc})
        groups = [f"{t} reactor{'s' if t > 1 else ''}" for t in threads]
        series = []
        for direction in ("download", "upload"):
            vals = {f"{x['threads']} reactor{'s' if x['threads'] > 1 else ''}":
                    x["mb_per_s_median"] for x in sc if x["direction"] == direction}
            series.append((direction, vals))
        bars(ax, groups, series, "MB/s (median)",
             {"download": "tab:blue", "upload": "tab:cyan"})
        n = sc[0]["streams"]
        ax.set_title(f"tunnel, {n} streams, --threads N (2 cores)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)
    return True


def plot_requests(lines, out):
    rs = [x for x in lines if x["bench"] == "requests_summary"]
    if not rs:
        return False
    loads = [load for load in ("none", "bulk100M", "bulk") if any(x["load"] == load for x in rs)]
    names = {"none": "alone", "bulk100M": "+ download at 100 MiB/s",
             "bulk": "+ download at full speed"}
    groups = [names[load] for load in loads]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for ax, key, label, fmt in ((axes[0], "rps_median", "requests/s (median)", "{:.0f}"),
                                (axes[1], "p99_ms_median", "p99 latency, ms (median)", "{:.1f}")):
        series = []
        for path in ("tunnel", "ssh", "direct"):
            vals = {names[x["load"]]: x[key] for x in rs if x["path"] == path and x["load"] in names}
            if vals:
                series.append((path, vals))
        bars(ax, groups, series, label, COLORS, fmt)
        ax.legend(fontsize=8)
    axes[0].axhline(27000, color="k", lw=0.7, ls="--")
    axes[0].annotate("rathole ~27,000", (0, 27000), xytext=(-0.4, 28000), fontsize=7)
    axes[1].axhline(5.5, color="k", lw=0.7, ls="--")
    axes[1].annotate("target 5.5 ms", (0, 5.5), xytext=(-0.4, 5.8), fontsize=7)
    axes[1].set_yscale("log")
    axes[1].yaxis.set_major_locator(matplotlib.ticker.FixedLocator(
        [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]))
    axes[1].yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    axes[1].yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axes[0].set_title("wrk, 64 keep-alive connections, 1 KiB from nginx")
    axes[1].set_title("p99 latency (log scale)")
    fig.tight_layout()
    fig.savefig(out / "requests.png", dpi=110)
    plt.close(fig)
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=str(pathlib.Path(__file__).resolve().parent / "out"))
    a = ap.parse_args()
    out = pathlib.Path(a.dir)
    lines = load(out)
    if not lines:
        sys.exit(f"plot.py: no JSON lines in {out}/*.jsonl (run make bench-* first)")
    for name, fn in (("cancel.png", plot_cancel), ("throughput.png", plot_throughput),
                     ("requests.png", plot_requests)):
        if fn(lines, out):
            print(f"plot.py: wrote {out / name}")
        else:
            print(f"plot.py: {name} skipped: no figures for it in {out}")


if __name__ == "__main__":
    main()
