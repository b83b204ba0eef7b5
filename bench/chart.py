"""Draws bench/results/<date>.png from <date>.json: one panel per metric, a bar per tool (median) with
min-max whiskers, skipped or failed tools get no bar and say so; and the growth series (scenario 10) as lines over
the work (files or bytes; time log-log, memory from zero), one panel per measure, a line per tool, into
<date>-growth.png when that second path is given (else into the same figure). Tools are named by engine and
version (benchlib.report.labels). Run by bench/run with bench/.venv's python:

    chart.py RESULTS.json OUT.png [GROWTH_OUT.png]
"""

import json
import math
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib.report import labels  # noqa: E402

COLORS = {"rbuild": "#d95f02", "buildkit": "#66a61e", "docker": "#1b9e77", "buildah": "#7570b3", "ref": "#999999"}
KEYS = list(COLORS)


def byte_scale(v):
    for div, name in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if v >= div:
            return div, name
    return 1, "B"


def median(vals):
    vals = sorted(vals)
    n = len(vals)
    return vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2


def work_label(axis, x):
    """A point of a growth series as the table names it: 1k files, 100 MB."""
    if axis == "files":
        return f"{x // 1000}k" if x >= 1000 and x % 1000 == 0 else str(x)
    div, name = byte_scale(x)
    return f"{x / div:.3g} {name}"


def short(label):
    return label.split(" (")[0]


def bars(ax, m, lb):
    unit, div = m["unit"], 1
    if unit == "B":  # bytes: in the decimal unit of the largest value
        div, unit = byte_scale(max([v for s in m["series"].values() for v in s["values"]] or [0]))
    keys = [k for k in KEYS if k in m["series"]]
    meds, lo, hi = [], [], []
    for key in keys:
        vals = [v / div for v in m["series"][key]["values"]]
        med = median(vals) if vals else 0
        meds.append(med)
        lo.append(med - min(vals) if vals else 0)
        hi.append(max(vals) - med if vals else 0)
    x = range(len(keys))
    ax.bar(x, meds, color=[COLORS[k] for k in keys], yerr=[lo, hi], capsize=3)
    for i, key in enumerate(keys):
        s = m["series"][key]
        if not s["values"]:
            ax.text(i, 0, "skipped" if s["skipped"] else "failed", ha="center", va="bottom", rotation=90, fontsize=7)
        else:
            ax.text(i, meds[i], f"{meds[i]:.0f}" if m["unit"] in ("MiB", "MB") else f"{meds[i]:.2f}",
                    ha="center", va="bottom", fontsize=7)
    ax.set_xticks(list(x))
    ax.set_xticklabels([short(lb[k]).replace("BuildKit ", "BuildKit\n") for k in keys], fontsize=7)
    ax.set_title("\n".join(textwrap.wrap(f"{m['scenario']}: {m['name']}", 70)), fontsize=7)
    ax.set_ylabel(unit, fontsize=8)
    ax.tick_params(axis="y", labelsize=7)


def lines(ax, axis, measure, ms, lb):
    """One measure of a growth series: x = files or bytes, a line per tool through its medians."""
    unit = ms[0]["unit"]
    for key in KEYS:
        pts = []
        for m in ms:
            s = m["series"].get(key)
            if s and s["values"]:
                pts.append((m["growth"]["x"], median(s["values"]), min(s["values"]), max(s["values"])))
        if not pts:
            continue
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
        ax.errorbar(xs, ys, yerr=err, color=COLORS[key], marker="o", markersize=3, capsize=2, linewidth=1.2,
                    label=short(lb[key]))
        for x, y in zip(xs, ys):
            ax.annotate(f"{y:.0f}" if unit in ("MB", "MiB") else f"{y:.2g}", (x, y), textcoords="offset points",
                        xytext=(0, 4), ha="center", fontsize=6, color=COLORS[key])
    ax.set_xscale("log")
    xs = [m["growth"]["x"] for m in ms]
    ax.xaxis.set_major_locator(FixedLocator(xs))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: work_label(axis, int(round(v)))))
    if unit in ("MB", "MiB"):  # memory: from zero, so a flat line reads as flat
        ax.set_ylim(bottom=0, top=ax.get_ylim()[1] * 1.15)
    else:  # time: log-log, so a line's slope is how it grows with the work (1 = linear)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:e}"[0] in "25" else ""))
    ax.set_xlabel("files in the context" if axis == "files" else "bytes in the image", fontsize=7)
    ax.set_ylabel(unit, fontsize=8)
    ax.set_title(f"{ms[0]['scenario']}: {measure} vs {'files' if axis == 'files' else 'image size'}", fontsize=7)
    ax.tick_params(which="both", labelsize=7)
    ax.legend(fontsize=6)


def figure(panels, groups, lb, title, out):
    cols = 3
    rows = max(1, math.ceil(len(panels) / cols))
    height = rows * 3.3 + 0.5
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 4.6, height), squeeze=False)
    for ax, (kind, what) in zip(axes.flat, panels):
        if kind == "bars":
            bars(ax, what, lb)
        else:
            ms = sorted(groups[what], key=lambda m: m["growth"]["x"])
            lines(ax, what[0], what[1], ms, lb)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / height))
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main():
    data = json.load(open(sys.argv[1]))
    growth_out = sys.argv[3] if len(sys.argv) > 3 else None
    lb = labels(data["meta"])
    metrics = [m for m in data["metrics"] if not m.get("growth")]
    groups = {}
    for m in data["metrics"]:
        g = m.get("growth")
        if g:
            groups.setdefault((g["axis"], g["measure"]), []).append(m)
    bar_panels = [("bars", m) for m in metrics]
    line_panels = [("lines", k) for k in groups]
    meta, mc = data["meta"], data["meta"]["machine"]
    where = f"on {mc['nproc']} cores, load {meta['load_start']} at the start"
    if growth_out and line_panels:
        figure(bar_panels or line_panels, groups, lb,
               f"rbuild benchmarks {meta['date']} (median, min-max; lower is better) {where}", sys.argv[2])
        figure(line_panels, groups, lb, f"rbuild growth series {meta['date']}: time and peak RSS as the work grows "
               f"(median, min-max) {where}", growth_out)
    else:
        figure(bar_panels + line_panels, groups, lb,
               f"rbuild benchmarks {meta['date']} (median, min-max; lower is better) {where}", sys.argv[2])


if __name__ == "__main__":
    main()
