"""The results: a markdown table (median, min-max per tool, ratios rbuild/peer, targets), the raw numbers
as JSON, and the PNG chart (bench/chart.py under bench/.venv's matplotlib)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from dataclasses import asdict
from pathlib import Path

from .util import Metric, log

COLUMNS = [("rbuild", "rbuild"), ("docker", "BuildKit (docker)"), ("buildkit", "BuildKit (buildctl)"),
           ("buildah", "buildah"), ("ref", "reference")]
# Columns shown only when some metric measured them (older results keep their table).
OPTIONAL = {"buildkit"}
# Ratio columns: (peer, header).
RATIOS = [("docker", "rbuild/BuildKit"), ("buildkit", "rbuild/BuildKit (buildctl)"), ("buildah", "rbuild/buildah"),
          ("ref", "rbuild/ref")]


def machine() -> dict:
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "ram_mib": mem, "kernel": platform.release(), "cpu": cpu}


def versions(rbuild: Path, buildkitd: str | None = None) -> dict:
    def first_line(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "not installed"
    git = subprocess.run(["git", "-C", str(Path(__file__).resolve().parents[2]), "log", "-1", "--format=%h %s"],
                         capture_output=True, text=True).stdout.strip()
    return {"rbuild": f"{first_line([str(rbuild), '--version'])} (commit {git[:72]})",
            "docker": first_line(["dockerd", "--version"]), "buildah": first_line(["buildah", "--version"]),
            "skopeo": first_line(["skopeo", "--version"]), "gzip": first_line(["gzip", "--version"]),
            "zstd": first_line(["zstd", "--version"]),
            **({"buildkit": first_line([buildkitd, "--version"])} if buildkitd else {})}


def byte_scale(v: float) -> tuple[float, str]:
    """The decimal unit bytes near v read best in."""
    for div, name in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if v >= div:
            return div, name
    return 1, "B"


def fmt(v: float, unit: str, like: float | None = None) -> str:
    """v in its unit; bytes in the unit that suits `like` (default v), so a range shares one unit."""
    if unit == "MiB":
        return f"{v:.0f} MiB"
    if unit == "B":
        div, name = byte_scale(v if like is None else like)
        x = v / div
        return f"{x:.0f} {name}" if div == 1 or x >= 100 else f"{x:.1f} {name}"
    return f"{v:.2f} s" if v < 100 else f"{v:.0f} s"


def cell(m: Metric, key: str, notes: list[str]) -> str:
    s = m.series.get(key)
    if s is None:
        return ""
    if s.values:
        like = max(s.values)
        med = fmt(s.median(), m.unit, like)
        if len(s.values) > 1:
            med += f" ({fmt(min(s.values), m.unit, like).split()[0]}–{fmt(max(s.values), m.unit, like)})"
        if s.errors:
            med += f" [{len(s.errors)} failed]"
        return med
    if s.skipped:
        return f"skipped[^{note(notes, f'{dict(COLUMNS)[key]}: skipped: {s.skipped}')}]"
    if s.errors:
        err = " ".join(s.errors[0].split())[:400]
        return f"failed[^{note(notes, f'{m.scenario} / {m.name} / {dict(COLUMNS)[key]}: failed: {err}')}]"
    return ""


def note(notes: list[str], text: str) -> int:
    """The footnote number of text, added once."""
    if text not in notes:
        notes.append(text)
    return notes.index(text) + 1


def target_text(m: Metric) -> tuple[str, str]:
    texts, met = [], []
    for ref, goal, how in m.targets:
        op = "≤" if how == "le" else "≥"
        if ref == "abs":
            texts.append(f"{op} {goal:g} {m.unit}")
            med = m.series.get("rbuild").median() if m.series.get("rbuild") else None
            val = med
        else:
            label = dict(COLUMNS)[ref]
            texts.append(f"rbuild/{label} {op} {goal:.2f}")
            val = m.ratio(ref)
        if val is None:
            met.append("n/a")
        else:
            met.append("yes" if (val <= goal if how == "le" else val >= goal) else "**no**")
    return "; ".join(texts), "; ".join(met)


def ratio(m: Metric, ref: str) -> str:
    r = m.ratio(ref) if ref in m.series else None
    return f"{r:.2f}" if r is not None else ""


def markdown(metrics: list[Metric], meta: dict, notes_md: str = "") -> str:
    mc = meta["machine"]
    out = [f"# rbuild benchmarks, {meta['date']}", "",
           f"Machine: {mc['nproc']} cores ({mc['cpu']}), {mc['ram_mib'] / 1024:.1f} GiB RAM, Linux {mc['kernel']}. "
           f"Load average at start {meta['load_start']}, at end {meta.get('load_end', '?')}. "
           f"{meta['runs']} runs per tool, interleaved; size factor {meta['size']}.", ""]
    out += ["Versions: " + "; ".join(f"{k}: {v}" for k, v in meta["versions"].items()), ""]
    if meta.get("warning"):
        out += [f"**Note:** {meta['warning']}", ""]
    notes: list[str] = []
    shown = {k for k, _ in COLUMNS if k not in OPTIONAL or any(k in m.series for m in metrics)}
    cols = [(k, lbl) for k, lbl in COLUMNS if k in shown]
    ratios = [(k, lbl) for k, lbl in RATIOS if k in shown]
    out += ["| Scenario | Metric | " + " | ".join(lbl for _, lbl in cols + ratios) + " | Target | Met |",
            "|---|---|" + "---|" * (len(cols) + len(ratios) + 2)]
    for m in metrics:
        cells = [cell(m, k, notes) for k, _ in cols] + [ratio(m, k) for k, _ in ratios]
        tgt, met = target_text(m)
        out.append(f"| {m.scenario} | {m.name.replace('|', '&#124;')} | " + " | ".join(cells) + f" | {tgt} | {met} |")
    out += ["", "Cells: median (min–max) over the runs. Ratios compare medians; below 1 means rbuild is faster "
            "(or smaller)."]
    extra = [f"- {m.scenario} / {m.name}: {m.note}" for m in metrics if m.note]
    if extra:
        out += ["", *extra]
    if notes:
        out += [""] + [f"[^{i + 1}]: {n}" for i, n in enumerate(notes)]
    if notes_md:
        out += ["", notes_md.strip()]
    return "\n".join(out) + "\n"


def write(results: Path, metrics: list[Metric], meta: dict, notes_md: str, chart: bool) -> Path:
    results.mkdir(parents=True, exist_ok=True)
    stem = results / meta["date"]
    data = {"meta": meta, "metrics": [asdict(m) for m in metrics]}
    stem.with_suffix(".json").write_text(json.dumps(data, indent=1))
    md = markdown(metrics, meta, notes_md)
    if chart:
        png = stem.with_suffix(".png")
        py = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "python"
        if py.exists():
            p = subprocess.run([str(py), str(Path(__file__).resolve().parents[1] / "chart.py"),
                                str(stem.with_suffix(".json")), str(png)], capture_output=True, text=True)
            if p.returncode == 0:
                md += f"\n![chart]({png.name})\n"
            else:
                log(f"chart failed: {p.stderr[-2000:]}")
        else:
            log("no bench/.venv with matplotlib (bench/setup makes it): no chart")
    stem.with_suffix(".md").write_text(md)
    shutil.copyfile(stem.with_suffix(".md"), results / "latest.md")
    if (stem.with_suffix(".png")).exists():
        shutil.copyfile(stem.with_suffix(".png"), results / "latest.png")
    return stem.with_suffix(".md")


README_HEADING = "## Benchmarks"


def update_readme(readme: Path, md_path: Path, meta: dict) -> None:
    """Rewrites the README's last section, "## Benchmarks", with the latest table and chart (it owns only
    that section, which must stay last; it is appended when missing)."""
    text = readme.read_text()
    at = text.find("\n" + README_HEADING + "\n")
    head = text if at < 0 else text[:at]
    results = md_path.read_text().splitlines()
    # The results file without its title: machine line, versions, table, notes.
    rel = md_path.parent.relative_to(readme.parent)
    body = []
    for line in results[1:]:
        if line.startswith("## "):  # the notes (profiles) stay in the results file, linked below
            body += [f"Where rbuild misses a target, [the results file]({rel}/{md_path.name}) says where its time "
                     "goes (profiles)."]
            break
        if not line.startswith("![chart]"):
            body.append(line)
    rel = md_path.parent.relative_to(readme.parent)
    mc = meta["machine"]
    section = [README_HEADING, "",
               "`bench/` measures rbuild beside docker's embedded BuildKit and buildah on the same Dockerfiles "
               "and generated contexts (issue 7's seven scenarios), interleaved run by run, and rbuild's daemon "
               "beside buildkitd for a client in another network namespace (scenario 8, issue 12):", "",
               "```sh", "bench/setup          # as root: peers, compressors, matplotlib venv, release build, base images",
               "bench/run            # all scenarios, 5 runs each; --scenario 1,4 --runs 1 --size 0.1 for a quick look",
               "```", "",
               f"Latest run: {meta['date']} on {mc['nproc']} cores, {mc['ram_mib'] / 1024:.0f} GiB RAM, Linux "
               f"{mc['kernel']} ([full results]({rel}/{md_path.name}), raw numbers in `{rel}/{meta['date']}.json`).",
               *body]
    png = md_path.with_suffix(".png")
    if png.exists():
        section += ["", f"![benchmark chart]({rel}/{png.name})"]
    readme.write_text(head.rstrip("\n") + "\n\n" + "\n".join(section).rstrip() + "\n")
