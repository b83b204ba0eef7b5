"""The results: a markdown table (median, min-max per tool, ratios rbuild/peer, targets), the raw numbers
as JSON, and the PNG chart (bench/chart.py under bench/.venv's matplotlib)."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
from dataclasses import asdict
from pathlib import Path

from .util import Metric, log

# The table's columns in order; their headers name each engine and version (labels()).
KEYS = ["rbuild", "buildkit", "docker", "buildah", "ref"]
# Columns shown only when some metric measured them (older results keep their table).
OPTIONAL = {"buildkit"}
# Ratio columns: rbuild over each peer.
RATIO_KEYS = ["buildkit", "docker", "buildah", "ref"]
# dockerd's embedded BuildKit by docker release (docker's vendored github.com/moby/buildkit).
DOCKER_BUILDKIT = {"20.10": "v0.8", "23.0": "v0.11", "24.0": "v0.11", "25.0": "v0.12", "26.0": "v0.13",
                   "26.1": "v0.13", "27.0": "v0.14"}


def version_of(text: str | None) -> str | None:
    m = re.search(r"v?(\d+\.\d+(?:\.\d+)?)", text or "")
    return m[1] if m else None


def labels(meta: dict) -> dict[str, str]:
    """Each column's header: the engine and its version as this run found them."""
    v = meta.get("versions", {})
    bk = version_of(v.get("buildkit"))
    dk = version_of(v.get("docker"))
    dk_minor = ".".join(dk.split(".")[:2]) if dk else None
    ba = version_of(v.get("buildah"))
    return {"rbuild": "rbuild",
            "buildkit": f"BuildKit v{bk}" if bk else "BuildKit (buildctl)",
            "docker": (f"docker {dk_minor} (BuildKit {DOCKER_BUILDKIT[dk_minor]})" if dk_minor in DOCKER_BUILDKIT
                       else f"docker {dk_minor} (embedded BuildKit)" if dk_minor else "BuildKit (docker)"),
            "buildah": f"buildah {ba}" if ba else "buildah",
            "ref": "reference"}


def legend(meta: dict, shown: list[str]) -> str:
    """One line saying which engine each column is, and how the bench drives it."""
    lb = labels(meta)
    what = {
        "rbuild": "the CLI under test, building in-process on its own state root",
        "buildkit": "a buildkitd of the bench's own (OCI worker, overlayfs, own root) driven by buildctl with the "
                    "dockerfile.v0 frontend, images kept in its store (`--output type=image`)",
        "docker": "the BuildKit embedded in a dockerd of the bench's own (`DOCKER_BUILDKIT=1 docker build "
                  "--network host`)",
        "buildah": "`buildah bud --isolation chroot --layers`",
        "ref": "the raw commands named in the metric's note (the physical limit of that work)",
    }
    return "Columns (versions above): " + "; ".join(f"**{lb[k]}** = {what[k]}" for k in shown) + "."


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
    if unit in ("MiB", "MB"):
        return f"{v:.0f} {unit}"
    if unit == "ms":
        return f"{v:.1f} ms" if v < 100 else f"{v:.0f} ms"
    if unit == "B":
        div, name = byte_scale(v if like is None else like)
        x = v / div
        return f"{x:.0f} {name}" if div == 1 or x >= 100 else f"{x:.1f} {name}"
    return f"{v:.2f} s" if v < 100 else f"{v:.0f} s"


def cell(m: Metric, key: str, notes: list[str], lb: dict[str, str]) -> str:
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
        return f"skipped[^{note(notes, f'{lb[key]}: skipped: {s.skipped}')}]"
    if s.errors:
        err = " ".join(s.errors[0].split())[:400]
        return f"failed[^{note(notes, f'{m.scenario} / {m.name} / {lb[key]}: failed: {err}')}]"
    return ""


def note(notes: list[str], text: str) -> int:
    """The footnote number of text, added once."""
    if text not in notes:
        notes.append(text)
    return notes.index(text) + 1


def target_text(m: Metric, lb: dict[str, str]) -> tuple[str, str]:
    texts, met = [], []
    for ref, goal, how in m.targets:
        op = "≤" if how == "le" else "≥"
        if ref == "abs":
            texts.append(f"{op} {goal:g} {m.unit}")
            med = m.series.get("rbuild").median() if m.series.get("rbuild") else None
            val = med
        else:
            texts.append(f"rbuild/{lb[ref]} {op} {goal:.2f}")
            val = m.ratio(ref)
        if val is None:
            met.append("n/a")
        else:
            met.append("yes" if (val <= goal if how == "le" else val >= goal) else "**no**")
    return "; ".join(texts), "; ".join(met)


def short(label: str) -> str:
    """A column's header without its parenthesis, for the ratio headers."""
    return label.split(" (")[0]


def ratio(m: Metric, ref: str) -> str:
    r = m.ratio(ref) if ref in m.series else None
    return f"{r:.2f}" if r is not None else ""


def markdown(metrics: list[Metric], meta: dict, notes_md: str = "") -> str:
    mc = meta["machine"]
    out = [f"# rbuild benchmarks, {meta['date']}", "",
           f"Machine: {mc['nproc']} cores ({mc['cpu']}), {mc['ram_mib'] / 1024:.1f} GiB RAM, Linux {mc['kernel']}. "
           f"Load average at start {meta['load_start']}, at end {meta.get('load_end', '?')}. "
           f"{meta['runs']} run{'s' if meta['runs'] != 1 else ''} per tool, interleaved"
           + (f" ({meta['growth_runs']} in the growth series)" if meta.get("growth_runs") else "")
           + f"; size factor {meta['size']}.", ""]
    out += ["Versions: " + "; ".join(f"{k}: {v}" for k, v in meta["versions"].items()), ""]
    if meta.get("warning"):
        out += [f"**Note:** {meta['warning']}", ""]
    notes: list[str] = []
    lb = labels(meta)
    cols = [k for k in KEYS if k not in OPTIONAL or any(k in m.series for m in metrics)]
    ratios = [k for k in RATIO_KEYS if k in cols]
    out += [legend(meta, cols), ""]
    out += ["| Scenario | Metric | " + " | ".join([lb[k] for k in cols] + [f"rbuild / {short(lb[k])}" for k in ratios])
            + " | Target | Met |",
            "|---|---|" + "---|" * (len(cols) + len(ratios) + 2)]
    for m in metrics:
        cells = [cell(m, k, notes, lb) for k in cols] + [ratio(m, k) for k in ratios]
        tgt, met = target_text(m, lb)
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
    png, growth_png = stem.with_suffix(".png"), growth_chart(stem.with_suffix(".md"))
    if chart:
        py = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "python"
        growth = any(m.growth for m in metrics)
        growth_png.unlink(missing_ok=True)
        if py.exists():
            p = subprocess.run([str(py), str(Path(__file__).resolve().parents[1] / "chart.py"),
                                str(stem.with_suffix(".json")), str(png)] + ([str(growth_png)] if growth else []),
                               capture_output=True, text=True)
            if p.returncode == 0:
                md += f"\n![chart]({png.name})\n"
                if growth_png.exists():
                    md += f"\n![growth series]({growth_png.name})\n"
            else:
                log(f"chart failed: {p.stderr[-2000:]}")
        else:
            log("no bench/.venv with matplotlib (bench/setup makes it): no chart")
    stem.with_suffix(".md").write_text(md)
    shutil.copyfile(stem.with_suffix(".md"), results / "latest.md")
    for src, name in ((png, "latest.png"), (growth_png, "latest-growth.png")):
        if src.exists():
            shutil.copyfile(src, results / name)
    return stem.with_suffix(".md")


def growth_chart(md_path: Path) -> Path:
    """The growth series' chart beside a results file."""
    return md_path.with_name(md_path.stem + "-growth.png")


README_HEADING = "## Benchmarks"


def update_readme(readme: Path, md_path: Path, meta: dict) -> None:
    """Rewrites the README's last section, "## Benchmarks", with the run's machine and load, table and chart (it
    owns only that section, which must stay last; it is appended when missing)."""
    text = readme.read_text()
    at = text.find("\n" + README_HEADING + "\n")
    head = text if at < 0 else text[:at]
    results = md_path.read_text().splitlines()
    rel = Path(os.path.relpath(md_path.parent, readme.parent))
    # The results file without its title: machine and load, versions, columns, table, notes.
    body = []
    for line in results[1:]:
        if line.startswith("## "):  # the notes (profiles) stay in the results file, linked below
            body += [f"Where rbuild misses a target, [the results file]({rel}/{md_path.name}) says where its time "
                     "goes (profiles)."]
            break
        if not line.startswith("![chart]") and not line.startswith("![growth series]"):
            body.append(line)
    while body and not body[-1].strip():
        body.pop()
    lb = labels(meta)
    section = [README_HEADING, "",
               f"`bench/` measures rbuild beside {lb['buildkit']} (buildkitd and buildctl), {lb['docker']} and "
               f"{lb['buildah']} on the same Dockerfiles and generated contexts, interleaved run by run: issue 7's "
               "seven scenarios, rbuild's daemon beside buildkitd for a client in another network namespace "
               "(8), a fresh CI runner importing a registry cache (9) and how time and peak memory grow with the "
               "context and the image (10):", "",
               "```sh", "bench/setup          # as root: peers, compressors, matplotlib venv, release build, base images",
               "bench/run            # all scenarios, 5 runs each; --scenario 1,4 --runs 1 --size 0.1 for a quick look",
               "bench/run --readme   # the same, then this section from its results",
               "```", "",
               f"Latest run: {meta['date']} ([full results]({rel}/{md_path.name}), raw numbers in "
               f"`{rel}/{meta['date']}.json`); the machine and its load:",
               *body]
    png, growth_png = md_path.with_suffix(".png"), growth_chart(md_path)
    if png.exists():
        section += ["", f"![benchmark chart]({rel}/{png.name})"]
    if growth_png.exists():
        section += ["", f"![growth series: time and peak RSS as the context and the image grow]({rel}/{growth_png.name})"]
    readme.write_text(head.rstrip("\n") + "\n\n" + "\n".join(section).rstrip() + "\n")
