"""Draws bench/results/<date>.png from <date>.json: one panel per metric, a bar per tool (median) with
min-max whiskers; skipped or failed tools get no bar and say so. Run by bench/run with bench/.venv's python."""

import json
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TOOLS = [("rbuild", "rbuild", "#d95f02"), ("docker", "BuildKit", "#1b9e77"), ("buildkit", "buildctl", "#66a61e"),
         ("buildah", "buildah", "#7570b3"), ("ref", "reference", "#999999")]


def byte_scale(v):
    for div, name in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if v >= div:
            return div, name
    return 1, "B"

data = json.load(open(sys.argv[1]))
metrics = data["metrics"]
cols = 3
rows = math.ceil(len(metrics) / cols)
fig, axes = plt.subplots(rows, cols, figsize=(cols * 4.4, rows * 3.2), squeeze=False)
for ax, m in zip(axes.flat, metrics):
    unit, div = m["unit"], 1
    if unit == "B":  # bytes: in the decimal unit of the largest value
        div, unit = byte_scale(max([v for s in m["series"].values() for v in s["values"]] or [0]))
    labels, meds, lo, hi, colors = [], [], [], [], []
    for key, label, color in TOOLS:
        s = m["series"].get(key)
        if s is None:
            continue
        labels.append(label)
        colors.append(color)
        vals = [v / div for v in s["values"]]
        if vals:
            vals = sorted(vals)
            med = vals[len(vals) // 2] if len(vals) % 2 else (vals[len(vals) // 2 - 1] + vals[len(vals) // 2]) / 2
            meds.append(med)
            lo.append(med - vals[0])
            hi.append(vals[-1] - med)
        else:
            meds.append(0)
            lo.append(0)
            hi.append(0)
    x = range(len(labels))
    ax.bar(x, meds, color=colors, yerr=[lo, hi], capsize=3)
    for i, key in enumerate([k for k, _, _ in TOOLS if k in m["series"]]):
        s = m["series"][key]
        if not s["values"]:
            ax.text(i, 0, "skipped" if s["skipped"] else "failed", ha="center", va="bottom", rotation=90, fontsize=8)
        else:
            ax.text(i, meds[i], f"{meds[i]:.0f}" if m["unit"] == "MiB" else f"{meds[i]:.2f}", ha="center",
                    va="bottom", fontsize=7)
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_title(f"{m['scenario']}: {m['name']}", fontsize=8)
    ax.set_ylabel(unit, fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
for ax in list(axes.flat)[len(metrics):]:
    ax.axis("off")
fig.suptitle(f"rbuild benchmarks {data['meta']['date']} (median, min-max; lower is better)", fontsize=10)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
