"""The seven scenarios of issue 7 (BuildKit v0.24 beside docker's embedded BuildKit and buildah since issue 19),
the remote one of issue 12, the fresh CI runner of issue 13 and issue 19's growth series. Each prepares untimed
(contexts, warm-up builds, cache resets), then measures its tools interleaved, run by run (rbuild, BuildKit v0.24,
docker, buildah, rbuild, ...).
A scenario measures only the tools its metrics name (`b.metric(..., tools=...)`)."""

from __future__ import annotations

import atexit
import json
import os
import random
import re
import resource
import statistics
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from . import gen
from .netns import NetPair
from .tools import BUILD_TIMEOUT, Buildkit, Rbuild, Tool
from .util import (MIB_TO_MB, BenchError, Daemon, Metric, Registry, in_netns, log, max_rss_mb, peak_rss_mb, rmtree,
                   run, timed, timed_lines, timed_quiet, timed_shell)

HERE = Path(__file__).resolve().parents[1]
SCENARIOS = HERE / "scenarios"
# The tools of scenarios 1-7 and 10, in the order of the table's columns.
TOOLS = ["rbuild", "buildkit", "docker", "buildah"]


@dataclass
class Bench:
    """What every scenario gets: the tools that run here, why the others do not, sizes, directories."""
    work: Path
    size: float
    runs: int
    tools: dict[str, Tool]
    skipped: dict[str, str]
    mirror: Registry
    push_reg: Registry
    logfile: Path
    growth_runs: int = 0  # runs of the growth series (0: --runs)
    contexts: Path = field(init=False)
    out: Path = field(init=False)

    def __post_init__(self):
        self.contexts = self.work / "contexts"
        self.out = self.work / "out"
        self.contexts.mkdir(parents=True, exist_ok=True)
        self.out.mkdir(parents=True, exist_ok=True)

    def scenario(self, name: str, context: str | None = None, extra: tuple[str, ...] = ()) -> tuple[Path, Path]:
        """(Dockerfile, generated context) of a scenario directory; `context` names the context directory when a
        scenario has several (its generator then gets the `extra` arguments)."""
        d = SCENARIOS / name
        ctx = self.contexts / (context or name)
        log(f"{context or name}: generating the context (size {self.size})")
        run(["python3", str(d / "gen"), str(ctx), "--size", str(self.size), *extra], timeout=3600)
        return d / "Dockerfile", ctx

    def metric(self, scenario: str, name: str, unit: str = "s", tools: list[str] | None = None) -> Metric:
        m = Metric(scenario, name, unit)
        for key in tools or TOOLS:
            s = m.get(key)  # the tools this metric measures: each() and warm() run only these
            if key in self.skipped:
                s.skipped = self.skipped[key]
        return m

    def each(self, m: Metric, fn: Callable[[str, Tool | None, int], float | None], only: list[str] | None = None,
             extra: tuple[str, ...] = (), runs: int | None = None) -> None:
        """Runs fn for every available tool (and the pseudo-tools in `extra`, given None), interleaved run by
        run; a failure is recorded, never a zero."""
        keys = [k for k in (list(self.tools) if only is None else only)
                if k in self.tools and k in m.series and not m.get(k).skipped] + list(extra)
        for i in range(runs or self.runs):
            for key in keys:
                s = m.get(key)
                if len(s.errors) >= 2:
                    continue
                try:
                    v = fn(key, self.tools.get(key), i)
                except BenchError as e:
                    log(f"{m.scenario} / {m.name} / {key}: FAILED: {str(e)[:2000]}")
                    s.errors.append(str(e))
                    continue
                if v is not None:
                    s.values.append(v)
                    log(f"{m.scenario} / {m.name} / {key} run {i + 1}: {v:.3f} {m.unit}")

    def warm(self, m: Metric, df: Path, ctx: Path, tag: str, args: dict | None = None) -> None:
        """An untimed build per tool (pulls the base image, fills the cache); a failing tool is marked."""
        for key, tool in self.tools.items():
            if key not in m.series or m.get(key).skipped:
                continue
            try:
                tool.build(df, ctx, tag, args or {})
            except BenchError as e:
                log(f"{m.scenario}: warm-up build with {key} FAILED: {str(e)[:2000]}")
                m.get(key).errors.append(f"warm-up build failed: {e}")
                m.get(key).skipped = "warm-up build failed (see errors)"


def gb(size: float) -> str:
    """The spec's 1 GB scaled by --size, for metric names."""
    return f"{size:g} GB" if size >= 0.1 else f"{size * 1000:g} MB"


def bust(key: str, i: int) -> str:
    return f"{key}-{i}-{time.time_ns()}"


def skip_all(metrics: list[Metric], key: str, why: str) -> None:
    """`key` measures none of `metrics`, for this reason (unless it is already skipped for another)."""
    for m in metrics:
        s = m.get(key)
        if not s.skipped:
            s.skipped = why


def busybox_rootfs(b: Bench) -> Path:
    """The busybox base image of the mirror, unpacked (skopeo, tar) into a directory: the root of the bare
    `chroot` references, the same files the builds' `FROM busybox` runs on."""
    root, layout = b.work / "busybox-rootfs", b.work / "busybox-oci"
    rmtree(root)
    rmtree(layout)
    run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{b.mirror.host}/library/busybox:latest",
         f"oci:{layout}:latest"], timeout=600, logfile=b.logfile)

    def blob(digest: str) -> Path:
        algo, hexd = digest.split(":", 1)
        return layout / "blobs" / algo / hexd

    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads(blob(index["manifests"][0]["digest"]).read_text())
    root.mkdir(parents=True)
    for layer in manifest["layers"]:
        run(["tar", "-xf", str(blob(layer["digest"])), "-C", str(root)], timeout=600)
    rmtree(layout)
    if not os.access(root / "bin" / "true", os.F_OK, follow_symlinks=False):
        raise BenchError(f"the busybox image unpacked into {root} has no /bin/true")
    return root


PER_RUN_CALLS = 25


def s1_per_run(b: Bench) -> list[Metric]:
    df, ctx = b.scenario("01-per-run")
    m = b.metric("1 per-RUN", "20 RUN steps, cold")
    m.targets = [("buildkit", 0.25, "le")]
    b.warm(m, df, ctx, "bench/s1", {"BUST": "warm"})
    b.each(m, lambda key, t, i: t.build(df, ctx, "bench/s1", {"BUST": bust(key, i)}))
    return [m, per_run_reference(b)]


def per_run_reference(b: Bench) -> Metric:
    """One trivial RUN without a build around it: `rbuild debug run --network none -- true` beside the bare
    namespaces and chroot it cannot do with less (`unshare ... chroot ROOT /bin/true`), on the same unpacked
    busybox image, the two commands alternating call by call; each run's value is the median of its calls."""
    m = b.metric("1 per-RUN", "one trivial RUN: `rbuild debug run --network none -- true`; ref: bare `unshare … "
                  "chroot ROOT /bin/true`", "ms", tools=["rbuild", "ref"])
    m.targets = [("ref", 2.5, "le")]
    try:
        root = busybox_rootfs(b)
    except BenchError as e:
        for k in ("rbuild", "ref"):
            m.get(k).errors.append(f"could not unpack the busybox image: {e}")
        return m
    m.note = (f"ref = `unshare --fork --pid --mount --uts --ipc --net chroot ROOT /bin/true`, rbuild = `rbuild "
              "debug run --rootfs ROOT --network none -- true` (ROOT read-only under its throwaway overlay); ROOT = "
              f"the mirror's busybox image unpacked; median of {PER_RUN_CALLS} calls per run, the two commands "
              "alternating call by call, after one untimed call each; wall time from fork to exit as the harness "
              "sees it")
    argvs = {"ref": ["unshare", "--fork", "--pid", "--mount", "--uts", "--ipc", "--net", "chroot", str(root),
                     "/bin/true"]}
    rb = b.tools.get("rbuild")
    if isinstance(rb, Rbuild) and not m.get("rbuild").skipped:
        argvs["rbuild"] = rb.argv("debug", "run", "--rootfs", str(root), "--network", "none", "--", "true")
    keys = [k for k in ("rbuild", "ref") if k in argvs]
    for k in list(keys):
        try:
            timed_quiet(argvs[k])
        except BenchError as e:
            log(f"1 per-RUN / trivial RUN / {k}: FAILED: {str(e)[:2000]}")
            m.get(k).errors.append(str(e))
            keys.remove(k)
    for i in range(b.runs):
        calls: dict[str, list[float]] = {k: [] for k in keys}
        for _ in range(PER_RUN_CALLS):
            for k in keys:
                if len(m.get(k).errors) >= 2:
                    continue
                try:
                    calls[k].append(timed_quiet(argvs[k]) * 1000)
                except BenchError as e:
                    log(f"1 per-RUN / trivial RUN / {k}: FAILED: {str(e)[:2000]}")
                    m.get(k).errors.append(str(e))
        for k, xs in calls.items():
            if xs:
                m.get(k).values.append(statistics.median(xs))
                log(f"1 per-RUN / trivial RUN / {k} run {i + 1}: {statistics.median(xs):.2f} ms "
                    f"(median of {len(xs)})")
    return m


def s2_noop(b: Bench) -> list[Metric]:
    df, ctx = b.scenario("02-noop")
    m = b.metric("2 no-op", f"rebuild, nothing changed ({round(10000 * b.size)} files, {gb(0.2 * b.size)})")
    m.targets = [("buildkit", 0.3, "le")]
    b.warm(m, df, ctx, "bench/s2")
    b.each(m, lambda key, t, i: t.build(df, ctx, "bench/s2"))
    return [m]


def s3_incremental(b: Bench) -> list[Metric]:
    df, ctx = b.scenario("03-incremental")
    m = b.metric("3 incremental", "rebuild after one file changed")
    m.targets = [("buildkit", 0.3, "le")]
    victim = ctx / "src" / "d000" / "f00000.c"
    original = victim.read_bytes()
    b.warm(m, df, ctx, "bench/s3")

    def one(key, t, i):
        victim.write_bytes(original + f"// {key} run {i} {time.time_ns()}\n".encode())
        return t.build(df, ctx, "bench/s3")

    try:
        b.each(m, one)
    finally:
        victim.write_bytes(original)
    return [m]


# The stages' loop, word for word as their RUN lines have it: the count comes from the LOOPS variable, whose
# expansion on every iteration costs about 2% more than a literal number would.
LOOP_SCRIPT = "i=0; while [ $i -lt $LOOPS ]; do i=$((i+1)); done"


def loop_env(loops: int) -> dict[str, str]:
    return {**os.environ, "LOOPS": str(loops)}


def calibrate_loops(seconds: float, shell: tuple[str, ...] = ("/bin/busybox", "sh")) -> int:
    """Iterations of the stages' shell loop (busybox's by default) that take about `seconds` of CPU here."""
    n = 300_000
    t = timed([*shell, "-c", LOOP_SCRIPT], env=loop_env(n))
    return max(1000, int(n * seconds / max(t, 1e-3)))


def concurrent_loops(shell: tuple[str, ...], loops: int, n: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of `n` copies of the stages' shell loop started at once and all waited for."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    procs = [subprocess.Popen([*shell, "-c", LOOP_SCRIPT], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env=loop_env(loops)) for _ in range(n)]
    errs = [(p.wait(), p.stderr.read().decode(errors="replace") if p.stderr else "") for p in procs]
    secs = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    bad = [e for code, e in errs if code != 0]
    if bad:
        raise BenchError(f"the bare loops failed: {bad[0][-2000:]}")
    return secs, (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)


def s4_parallel(b: Bench) -> list[Metric]:
    df, ctx = b.scenario("04-parallel")
    m = b.metric("4 parallel", "4 stages of ~2 s CPU, cold", tools=TOOLS + ["ref"])
    try:
        shell: tuple[str, ...] = ("chroot", str(busybox_rootfs(b)), "/bin/sh")
        where = "`chroot ROOT /bin/sh -c LOOP` on the busybox image unpacked"
    except BenchError as e:
        log(f"4 parallel: no unpacked busybox image ({e}); the reference loops run in the host's /bin/busybox sh")
        shell, where = ("/bin/busybox", "sh"), "the host's `/bin/busybox sh -c LOOP`"
    loops = calibrate_loops(2.0 * b.size, shell)
    log(f"4 parallel: LOOPS={loops} (about {2.0 * b.size:.1f} s of CPU per stage)")
    cores = os.cpu_count() or 1
    m.targets = [("ref", 1.02, "le")]
    cpu: list[float] = []
    b.warm(m, df, ctx, "bench/s4", {"BUST": "warm", "LOOPS": "1"})

    def one(key, t, i):
        if key == "ref":
            secs, c = concurrent_loops(shell, loops, 4)
            cpu.append(c)
            return secs
        return t.build(df, ctx, "bench/s4", {"BUST": bust(key, i), "LOOPS": str(loops)})

    b.each(m, one, extra=("ref",))
    m.note = (f"LOOPS={loops}; ref = the CPU limit: the four stages' loops with nothing around them, 4 processes "
              f"started at once on {cores} cores ({where}, the loop of the RUN lines with LOOPS in the "
              f"environment)")
    if cpu:
        m.note += (f"; their CPU time / cores: median {statistics.median(cpu) / cores:.2f} s "
                   f"({statistics.median(cpu):.2f} s of CPU)")
    return [m]


class Saved:
    """The state roots of rbuild and BuildKit v0.24 right after the warm-up build, restored before each timed run
    so no run finds what an earlier one left (compressed blobs, pushed-layer records)."""

    def __init__(self, b: Bench, name: str, keys: tuple[str, ...] = ("rbuild",)):
        self.paths: dict[str, Path] = {}
        for k in keys:
            t = b.tools.get(k)
            if isinstance(t, (Rbuild, Buildkit)):
                self.paths[k] = t.save_root(name)

    def restore(self, b: Bench, key: str = "rbuild") -> None:
        t = b.tools.get(key)
        if key in self.paths and isinstance(t, (Rbuild, Buildkit)):
            t.restore_root(self.paths[key])

    def drop(self) -> None:
        for p in self.paths.values():
            rmtree(p)


DOCKER_NO_OCI = ("dockerd's embedded BuildKit has no OCI exporter without buildx and the containerd image store; "
                 "its compression is measured by the push scenario")


def s5_export(b: Bench) -> list[Metric]:
    """Per tool and run, from the state right after an untimed warm-up build that filled the cache and stored
    nothing compressed: (a) the cached build that stores the image under a tag, then (b) its export to an OCI
    tar with gzip or zstd layers, timed separately; the target is on their sum."""
    df, ctx = b.scenario("05-export")
    raw = {"gzip": "gzip -6", "zstd": "zstd -3 -q -T0"}
    size = gb(b.size)
    build, export, total = {}, {}, {}
    for comp in raw:
        build[comp] = b.metric("5 export", f"{size} layer: cached build storing the image ({comp} run)")
        export[comp] = b.metric("5 export", f"{size} layer: export of the built image to an OCI tar, {comp}",
                                tools=TOOLS + ["ref"])
        total[comp] = b.metric("5 export", f"{size} layer: cached build + export, {comp}")
        export[comp].note = f"ref = `tar -cf - data | {raw[comp]} > file` on the same tree (the physical limit)"
    build["gzip"].note = (
        "each run starts from the state right after an untimed warm-up that filled the build cache and stored "
        "no image (rbuild: a build without -t; BuildKit v0.24: buildctl build without --output; both state roots "
        "restored from a copy before every run, buildkitd restarted on it untimed; buildah: its cached image), "
        "then times the build that stores the image under a tag (rbuild -t, buildctl --output type=image, buildah "
        "bud -t) and, separately, the export (rbuild and buildctl: the same build with an OCI tar output, "
        "BuildKit with force-compression=true; buildah push oci-archive:)")
    total["gzip"].targets = [("buildkit", 0.4, "le")]
    total["zstd"].targets = [("buildkit", 0.5, "le")]
    export["gzip"].targets = [("ref", 1.25, "le")]
    export["zstd"].targets = [("ref", 1.3, "le")]
    metrics = [m for comp in raw for m in (build[comp], export[comp], total[comp])]
    skip_all(metrics, "docker", DOCKER_NO_OCI)
    for key, t in b.tools.items():
        if key == "docker" or build["gzip"].get(key).skipped:
            continue
        try:
            if key in ("rbuild", "buildkit"):
                t.build_cache_only(df, ctx)
            else:
                t.build(df, ctx, "bench/s5")
        except BenchError as e:
            log(f"5 export: warm-up build with {key} FAILED: {str(e)[:2000]}")
            for m in metrics:
                m.get(key).errors.append(f"warm-up build failed: {e}")
            skip_all(metrics, key, "warm-up build failed (see errors)")
    saved = Saved(b, "s5", ("rbuild", "buildkit"))
    try:
        for comp in raw:
            dest = b.out / f"s5-{comp}.tar"

            def one(key, t, i, comp=comp, dest=dest):
                dest.unlink(missing_ok=True)
                try:
                    if key == "ref":
                        return timed_shell(f"tar -C {ctx} -cf - data | {raw[comp]} > {dest}")
                    saved.restore(b, key)
                    try:
                        tb = t.build(df, ctx, "bench/s5")
                        build[comp].get(key).values.append(tb)
                        te = t.export_oci(df, ctx, "bench/s5", dest, comp)
                    except BenchError as e:
                        total[comp].get(key).errors.append(str(e))
                        raise
                    total[comp].get(key).values.append(tb + te)
                    log(f"5 export / {comp} / {key} run {i + 1}: build {tb:.3f} s + export {te:.3f} s")
                    return te
                finally:
                    dest.unlink(missing_ok=True)

            b.each(export[comp], one, extra=("ref",))
    finally:
        saved.drop()
    pigz = b.metric("5 export", "reference: tar | pigz -6 (all cores)", tools=["ref"])
    if shutil.which("pigz"):
        dest = b.out / "s5.tgz"
        b.each(pigz, lambda key, t, i: timed_shell(f"tar -C {ctx} -cf - data | pigz -6 > {dest}"), only=[],
               extra=("ref",))
        dest.unlink(missing_ok=True)
    else:
        pigz.get("ref").skipped = "pigz is not installed (bench/setup installs it)"
    return metrics + [pigz]


def s6_push(b: Bench) -> list[Metric]:
    df, ctx = b.scenario("06-push")
    first = b.metric("6 push", f"push {gb(b.size)} image to an empty registry", tools=TOOLS + ["ref"])
    again = b.metric("6 push", "push again (nothing to send)", tools=TOOLS + ["ref"])
    for m in (first, again):
        m.note = "ref = `skopeo copy` of the same image (gzip layers already compressed) from an OCI layout"
        m.targets = [("ref", 1.0, "le")]
    first.note += ("; BuildKit v0.24: buildctl pushes only as a build's output, so its push is the cached build "
                   "again with `--output type=image,name=REF,push=true` (that solve included)")
    b.warm(first, df, ctx, "bench/s6")
    for k, s in first.series.items():
        if s.skipped:
            again.get(k).skipped = s.skipped
    saved = Saved(b, "s6")
    # The reference image: an OCI layout with gzip layers, made by whichever tool can write one.
    layout = b.out / "s6-layout"
    rmtree(layout)
    archive = b.out / "s6.tar"
    src = next((k for k in ("rbuild", "buildah") if k in b.tools and not first.get(k).skipped), None)
    if src is None:
        first.get("ref").skipped = again.get("ref").skipped = "no tool here wrote the image as an OCI archive"
    else:
        b.tools[src].export_oci(df, ctx, "bench/s6", archive, "gzip")
        run(["skopeo", "copy", "--quiet", f"oci-archive:{archive}", f"oci:{layout}:latest"], timeout=3600)
        archive.unlink(missing_ok=True)
        saved.restore(b)
    reg = b.push_reg

    def one(key, t, i):
        reg.start()  # empty storage: the first push must send every blob
        ref = f"{reg.host}/bench/{key}-{i}:latest"
        if key == "ref":
            cmd = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:latest", f"docker://{ref}"]
            secs = timed(cmd, timeout=3600, logfile=b.logfile)
            again.get(key).values.append(timed(cmd, timeout=3600, logfile=b.logfile))
            return secs
        if key == "rbuild":
            saved.restore(b)
        secs = t.push("bench/s6", ref)
        try:
            again.get(key).values.append(t.push("bench/s6", ref))
        except BenchError as e:
            again.get(key).errors.append(str(e))
        return secs

    try:
        b.each(first, one, extra=("ref",) if not first.get("ref").skipped else ())
    finally:
        reg.stop()
        saved.drop()
        rmtree(layout)
    return [first, again]


def peak(b: Bench, key: str, t: Tool, df: Path, ctx: Path, tag: str, parts: dict[str, list]) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one build. rbuild, buildah: the largest process GNU time waited for.
    BuildKit v0.24: buildkitd is a daemon, so it is started afresh for the build (untimed) and the value is its
    peak RSS (VmHWM: its start, its idle footprint and this build) plus buildctl's (the client, which sends the
    context); `parts` keeps the daemon's, the client's and the daemon's idle footprint right after its start."""
    if isinstance(t, Buildkit):
        t.stop()
        pid = t.daemon_pid()
        parts.setdefault("idle", []).append(peak_rss_mb(pid))
        secs, client = max_rss_mb(t.build_argv(df, ctx, tag, {}), timeout=BUILD_TIMEOUT, logfile=b.logfile)
        daemon = peak_rss_mb(pid)
        t.built[tag] = (df, ctx, {})
        parts.setdefault("daemon", []).append(daemon)
        parts.setdefault("client", []).append(client * MIB_TO_MB)
        return secs, daemon + client * MIB_TO_MB
    secs, mib = max_rss_mb(t.build_argv(df, ctx, tag, {}), env=t.env(), timeout=BUILD_TIMEOUT, logfile=b.logfile)
    return secs, mib * MIB_TO_MB


def memory_note(parts: dict[str, list], brief: bool = False) -> str:
    """What the BuildKit v0.24 peak RSS values are made of (empty when it measured none)."""
    if not parts.get("daemon"):
        return ""
    med = {k: statistics.median(v) for k, v in parts.items() if v}
    if brief:
        return (f"BuildKit v0.24: {med['daemon']:.0f} MB buildkitd ({med['idle']:.0f} MB of it before the build) + "
                f"{med['client']:.0f} MB buildctl (medians)")
    return (f"BuildKit v0.24 = peak RSS (VmHWM) of a buildkitd started afresh for the build + buildctl's peak RSS: "
            f"medians {med['daemon']:.0f} MB buildkitd (of which {med['idle']:.0f} MB already right after its "
            f"start, before any build) + {med['client']:.0f} MB buildctl")


def s7_memory(b: Bench) -> list[Metric]:
    df, ctx = b.scenario("07-memory")
    cold = b.metric("7 memory", f"peak RSS, first build ({gb(b.size)} context)", "MB")
    noop = b.metric("7 memory", f"peak RSS, no-op rebuild ({gb(b.size)} context)", "MB")
    for m in (cold, noop):
        m.targets = [("abs", 64, "le")]
    skip_all([cold, noop], "docker", "the build runs inside dockerd; the client's RSS says nothing")
    parts: dict[str, dict[str, list]] = {"cold": {}, "noop": {}}

    def one(key, t, i):
        t.reset()
        _, rss = peak(b, key, t, df, ctx, "bench/s7", parts["cold"])
        _, rss2 = peak(b, key, t, df, ctx, "bench/s7", parts["noop"])
        noop.get(key).values.append(rss2)
        return rss

    b.each(cold, one, only=[k for k in ("rbuild", "buildkit", "buildah") if k in b.tools])
    for m, kind in ((cold, "cold"), (noop, "noop")):
        m.note = "; ".join(x for x in ("rbuild, buildah: the largest process of the build (GNU time -v)",
                                       memory_note(parts[kind])) if x)
    return [cold, noop]


NO_REMOTE = {
    "docker": "no remote mode here: the bench's dockerd serves only a local unix socket; scenario 8 "
              "compares with BuildKit's own daemon (buildkitd on TCP, buildctl) instead",
    "buildah": "buildah has no daemon: it cannot build for a client on another machine",
}
REMOTE_TOOLS = ["rbuild", "buildkit", "docker", "buildah"]


def s8_remote(b: Bench) -> list[Metric]:
    """rbuild serve and buildkitd in one network namespace, their clients in another (veth between them);
    a cold build, then no-op and one-file rebuilds of the 10,000-file context, interleaved run by run. Bytes:
    what the client's veth sent during the build (TCP/IP headers included), the same measure for both."""
    df, base = b.scenario("08-remote")
    files, size = round(10000 * b.size), gb(0.2 * b.size)
    s = "8 remote"
    cold = b.metric(s, f"first build, cold ({files} files, {size})", tools=REMOTE_TOOLS)
    noop = b.metric(s, "no-op rebuild", tools=REMOTE_TOOLS)
    one = b.metric(s, "rebuild after one 4 kB file changed", tools=REMOTE_TOOLS)
    cold_b = b.metric(s, "bytes sent, first build", "B", tools=REMOTE_TOOLS)
    noop_b = b.metric(s, "bytes sent, no-op rebuild", "B", tools=REMOTE_TOOLS)
    one_b = b.metric(s, "bytes sent, one 4 kB file changed", "B", tools=REMOTE_TOOLS)
    metrics = [cold, noop, one, cold_b, noop_b, one_b]
    for m in metrics:
        for k, why in NO_REMOTE.items():
            m.get(k).skipped = why
    for m in (noop, one):
        m.targets = [("buildkit", 0.3, "le")]
    cold.note = ("daemons and clients in two network namespaces joined by a veth pair; daemons on plain TCP "
                 "(rbuild serve --insecure-tcp, buildkitd --addr tcp://) inside those private namespaces, "
                 "their docker.io mirror on the daemon namespace's loopback; both daemons run throughout "
                 "(one idles while the other builds); one cold build per tool")
    cold_b.note = "TX bytes of the client's veth during the build (`ip -s link`), IP/TCP headers included"
    active = [k for k in ("rbuild", "buildkit") if k in b.tools and not noop.get(k).skipped]
    if not active:
        return metrics

    def fail(key: str, err: str) -> None:
        """The tool failed before its runs: every metric it has no value for says so (never a zero)."""
        for m in metrics:
            if not m.get(key).values and not m.get(key).skipped and err not in m.get(key).errors:
                m.get(key).errors.append(err)
        if key in active:
            active.remove(key)

    # One copy of the context per tool: each daemon keeps the previous state of its own client's directory,
    # so one tool's changed file must not make the other tool's next no-op a real change.
    ctxs = {k: b.contexts / f"08-remote.{k}" for k in active}
    # The victim: the context's file nearest 4 kB, made exactly 4096 bytes (before the cold build).
    victim_rel = min((base / "src").rglob("*.c"), key=lambda p: (abs(p.stat().st_size - 4096), str(p))).relative_to(base)
    one.note = (f"the file: {victim_rel}, 4096 bytes of new text each run; `COPY . /app` runs again and both "
                "tools compress its whole layer again to store the tagged image, which takes most of the time")

    def four_kb(tag: str) -> bytes:
        return gen.text_bytes(random.Random(tag), 4096)

    net = NetPair()
    servers: list[Daemon] = []
    counters: dict[str, list[int]] = {"cold": [], "noop": [], "one": []}
    reg = None
    try:
        for k, c in ctxs.items():
            rmtree(c)
            run(["cp", "-a", "--reflink=auto", str(base), str(c)], timeout=3600)
            (c / victim_rel).write_bytes(four_kb(f"{k}-initial"))
        net.up()
        # The base images' mirror inside the daemons' namespace, the same one for both.
        reg = Registry(b.work / "s8-mirror", 5000, seed=True, netns=net.daemon)
        reg.start()
        hosts = {"rbuild": f"tcp://{net.daemon_ip}:1234", "buildkit": f"tcp://{net.daemon_ip}:1235"}
        rb, bk = b.tools.get("rbuild"), b.tools.get("buildkit")
        client_env = {"XDG_STATE_HOME": str(b.work / "s8-client-state")}  # rbuild's client id
        for key in list(active):
            root = b.work / "s8" / f"{key}-root"
            rmtree(root)
            rmtree(root.parent / f"{key}-root.log")
            try:
                if key == "rbuild":
                    servers.append(rb.serve(root, hosts["rbuild"], reg.host, netns=net.daemon))
                else:
                    bk.serve(root, hosts["buildkit"], reg.host, netns=net.daemon, client_netns=net.client)
            except BenchError as e:
                log(f"{s}: could not start the {key} daemon: {str(e)[:2000]}")
                fail(key, f"the daemon did not start: {e}")

        def rbuild_bytes() -> int:
            p = run(in_netns(net.client, rb.remote_argv(hosts["rbuild"], "info")), env=client_env, timeout=60)
            try:  # stderr (a no-TLS warning) is mixed in: the JSON object starts at the first brace
                info, _ = json.JSONDecoder().raw_decode(p.stdout[p.stdout.index("{"):])
                return int(info["context_bytes"])
            except (ValueError, KeyError) as e:
                raise BenchError(f"`rbuild info` printed no context_bytes: {p.stdout[:500]}") from e

        def build(key: str, kind: str) -> tuple[float, int]:
            """(seconds, client TX bytes) of one client build; rbuild's own counter goes to `counters`."""
            if key == "rbuild":
                argv = in_netns(net.client, rb.remote_argv(hosts["rbuild"], "build", "--progress", "plain",
                                                           "-f", str(df), "-t", "bench/s8", str(ctxs[key])))
                env = client_env
                before = rbuild_bytes()
            else:
                argv, env = bk.build_argv(df, ctxs[key], "bench/s8", {}), {}
            tx0 = net.client_tx_bytes()
            secs = timed(argv, env=env, logfile=b.logfile, timeout=BUILD_TIMEOUT)
            sent = net.client_tx_bytes() - tx0
            if key == "rbuild":
                counters[kind].append(rbuild_bytes() - before)
            return secs, sent

        for key in list(active):
            try:
                secs, sent = build(key, "cold")
            except BenchError as e:
                log(f"{s}: the first build with {key} FAILED: {str(e)[:2000]}")
                fail(key, f"the first build failed: {e}")
                continue
            cold.get(key).values.append(secs)
            cold_b.get(key).values.append(sent)
            log(f"{s} / first build / {key}: {secs:.3f} s, {sent} bytes sent")

        def each_run(key, t, i):
            secs, sent = build(key, "noop")
            noop_b.get(key).values.append(sent)
            log(f"{s} / no-op / {key} run {i + 1}: {sent} bytes sent")
            (ctxs[key] / victim_rel).write_bytes(four_kb(f"{key}-{i}"))
            try:
                secs1, sent1 = build(key, "one")
            except BenchError as e:
                log(f"{s} / one file / {key}: FAILED: {str(e)[:2000]}")
                one.get(key).errors.append(str(e))
            else:
                one.get(key).values.append(secs1)
                one_b.get(key).values.append(sent1)
                log(f"{s} / one file / {key} run {i + 1}: {secs1:.3f} s, {sent1} bytes sent")
            return secs

        b.each(noop, each_run, only=list(active))
    finally:
        for d in servers:
            d.stop()
        if isinstance(b.tools.get("buildkit"), Buildkit):
            b.tools["buildkit"].stop()  # back to its default (local) daemon, started when next needed
        if reg is not None:
            reg.stop()
        net.down()
        for c in ctxs.values():
            rmtree(c)
        rmtree(b.work / "s8")
    if any(counters.values()):
        noop_b.note = "rbuild's own counter (`rbuild info` context_bytes, payload only), median: " + ", ".join(
            f"{kind} {statistics.median(v):.0f} B" for kind, v in counters.items() if v)
    return metrics


FRESH_TOOLS = ["rbuild", "buildkit", "docker", "buildah"]
NO_FRESH = {
    "docker": "dockerd 20.10's embedded BuildKit exports no registry cache (its docker driver has inline cache "
              "only; --cache-to type=registry needs buildx and a docker-container builder); scenario 9 compares "
              "with BuildKit v0.24 itself (buildkitd, buildctl)",
    "buildah": "issue 13 compares with BuildKit's registry cache; buildah's --cache-to pushes layer images instead",
}
VERTEX = re.compile(r"^#(\d+) (.*)$")
SENT = re.compile(r"^exporting cache to (\S+): (\d+) results, (\d+) layers, (\d+) new, (\S+) sent")


def vertices(key: str, lines: list[tuple[float, str]]) -> dict:
    """The steps of a build's progress: id -> name, cached, start and end second, duration.
    rbuild's plain progress (`#N name`, `#N CACHED`, `#N DONE 1.2s`): start and end are when the step's first
    and last lines arrived. buildctl's rawjson progress (one SolveStatus object a line): BuildKit's own
    started and completed times of each vertex."""
    vs: dict = {}
    if key == "buildkit":
        for _, line in lines:
            try:
                status = json.loads(line)
            except ValueError:
                continue
            for v in status.get("vertexes") or []:
                e = vs.setdefault(v["digest"], {"name": v.get("name", ""), "cached": False, "start": None,
                                                "end": None, "done": None})
                e["cached"] = e["cached"] or bool(v.get("cached"))
                if v.get("started"):
                    e["start"] = rfc3339(v["started"])
                if v.get("completed"):
                    e["end"] = rfc3339(v["completed"])
                if e["start"] is not None and e["end"] is not None:
                    e["done"] = e["end"] - e["start"]
        return vs
    for t, line in lines:
        m = VERTEX.match(line)
        if not m:
            continue
        n, rest = int(m[1]), m[2]
        e = vs.setdefault(n, {"name": rest, "cached": False, "start": t, "end": t, "done": None})
        e["end"] = t
        if rest.startswith("CACHED"):
            e["cached"] = True
        elif rest.startswith("DONE "):
            try:
                e["done"] = float(rest.split()[1].rstrip("s"))
            except (IndexError, ValueError):
                pass
    return vs


def rfc3339(ts: str) -> float:
    """Seconds since the epoch of a Go RFC 3339 time (nanoseconds, Z or an offset)."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", ts)
    if not m:
        raise BenchError(f"not an RFC 3339 time: {ts}")
    base = datetime.fromisoformat(m[1] + ("+00:00" if m[3] == "Z" else m[3]))
    return base.timestamp() + (float(m[2]) if m[2] else 0.0)


def ran_steps(key: str, lines: list[tuple[float, str]]) -> list[str]:
    """The Dockerfile RUN and COPY steps that ran (were not cache hits), by name."""
    return sorted({v["name"] for v in vertices(key, lines).values()
                   if re.search(r"\] (RUN|COPY) ", v["name"]) and not v["cached"]})


def export_phase(key: str, lines: list[tuple[float, str]]) -> float:
    """Seconds of the cache export. rbuild: from `naming to ... done` (the image is stored; the cache export
    starts) to `exporting cache to REF: ...` (written), as the lines arrive (its progress is printed in-process,
    unbuffered). BuildKit: its own started-to-completed time of the `exporting cache to registry` vertex
    (buildctl's plain printer batches lines, so their arrival times would be too coarse)."""
    if key == "rbuild":
        start = next((t for t, line in lines if line.startswith("naming to ")), None)
        end = next((t for t, line in lines if SENT.match(line)), None)
        if start is None or end is None:
            raise BenchError("rbuild printed no `naming to` or no `exporting cache to REF: N results, ...` line")
        return end - start
    v = next((v for v in vertices(key, lines).values() if v["name"].startswith("exporting cache to")), None)
    if v is None or v["done"] is None:
        raise BenchError("buildctl reported no completed `exporting cache to registry` vertex")
    return v["done"]


def du_bytes(path: Path) -> int:
    """Bytes of the files under path (apparent sizes, each inode once)."""
    p = run(["du", "-sb", str(path)], check=False)
    try:
        return int(p.stdout.split()[0])
    except (IndexError, ValueError):
        return 0


class Trash:
    """Finished state roots of scenario 9, moved aside (a rename) instead of deleted between timed builds, and
    deleted when the bench process ends, after every timed build of every scenario.

    Why: on an ext4 without a journal (this VM's disk: /sys/fs/ext4/<dev>/journal_task is <none>) the kernel
    avoids reusing an inode freed less than 60 s ago, or 360 s ago when its inode-table block is dirty (as
    the build's own new inodes make it), and each new inode's allocation scans again past every such inode of
    its block group with a buffer-cache lookup each (fs/ext4/ialloc.c: find_inode_bit calls recently_deleted
    only without a journal; RECENTCY_MIN 60, RECENTCY_DIRTY 300). A build that starts right after `rm -rf` of
    the previous build's root (10-15k inodes) pays that scan for every file it writes: perf of rbuild's
    one-file build (12k new inodes) put 24% of its samples in find_get_block_common under recently_deleted,
    with 11-12 s of system time against 2.4 s for the same build with no deletion before it. Both tools paid
    it (this scenario on the same machine, deleting vs moving aside: BuildKit's one-file build 20.3 s vs
    9.4 s, its cold build 25.1 s vs 12.0 s; rbuild's 12.0 s vs 5.5 s and 16.2 s vs 7.1 s). A fresh CI runner
    has freed no inodes, so neither tool pays for the bench's own deletions.

    The trash is emptied early only when it holds more than `limit` bytes or the disk has less than
    `min_free` bytes free, then followed by a wait out of that window. Deleting a root whose blocks were
    written back takes ~25 s (the `discard` mount option makes each freed extent a synchronous discard), so
    the roots are deleted several at once."""

    WINDOW = 365.0

    def __init__(self, path: Path, limit: float = 8e9, min_free: float = 15e9):
        self.path, self.limit, self.min_free, self.n = path, limit, min_free, 0
        self.bytes = du_bytes(path) if path.exists() else 0  # left by a bench that was killed
        atexit.register(self.empty, wait=False)

    def discard(self, root: Path, size: int | None = None) -> None:
        """Moves `root` (a finished build's state root, nothing mounted under it) into the trash."""
        if not root.exists():
            return
        self.path.mkdir(parents=True, exist_ok=True)
        self.n += 1
        dest = self.path / f"{root.name}-{time.time_ns()}-{self.n}"
        root.rename(dest)
        self.bytes += du_bytes(dest) if size is None else size
        st = os.statvfs(self.path)
        if self.bytes > self.limit or st.f_bavail * st.f_frsize < self.min_free:
            self.empty(wait=True)

    def empty(self, wait: bool) -> None:
        if not self.path.exists():
            return
        t0 = time.monotonic()
        roots = sorted(self.path.iterdir())
        # Processes, not threads: this also runs at exit, when concurrent.futures takes no more work.
        for p in [subprocess.Popen(["rm", "-rf", str(r)]) for r in roots]:
            p.wait()
        rmtree(self.path)  # what rm left (mounts of a tool that crashed)
        log(f"deleted {len(roots)} finished state roots of scenario 9 ({self.bytes / 1e6:.0f} MB) in "
            f"{time.monotonic() - t0:.0f} s" + (f"; waiting {self.WINDOW:.0f} s (untimed) until ext4 reuses "
                                                "their inodes" if wait else ""))
        self.bytes = 0
        if wait:
            os.sync()
            time.sleep(self.WINDOW)


def s9_fresh_runner(b: Bench) -> list[Metric]:
    """A fresh CI runner (issue 13): each measured build starts on an empty state root (rbuild: a new --root;
    BuildKit: buildkitd started on a new --root, stopped and removed after the build) and imports a mode=max
    registry cache that the tool exported (untimed) before the runs. Per tool and run: (a) a cold build without
    any cache (the reference), (b) the unchanged project with --cache-from, (c) one source file changed with
    --cache-from, (d) the unchanged project with --cache-from and --cache-to (the cache's unchanged re-export,
    timed from the progress lines; later runs import what it wrote, as the next CI job would)."""
    df, ctx = b.scenario("09-fresh-runner")
    s = "9 fresh runner"
    files = round(4000 * b.size)
    cold = b.metric(s, f"cold build, empty root, no cache ({files} files, {gb(0.04 * b.size)})", tools=FRESH_TOOLS)
    hit = b.metric(s, "empty root, --cache-from, unchanged", tools=FRESH_TOOLS)
    one = b.metric(s, "empty root, --cache-from, one file changed", tools=FRESH_TOOLS)
    exp = b.metric(s, "export of the unchanged mode=max cache", tools=FRESH_TOOLS)
    both = b.metric(s, "empty root, --cache-from and --cache-to, unchanged (whole build)", tools=FRESH_TOOLS)
    root_b = b.metric(s, "state root after the --cache-from build, unchanged", "B", tools=FRESH_TOOLS)
    reg_b = b.metric(s, "new bytes in the registry after the re-export", "B", tools=FRESH_TOOLS)
    metrics = [cold, hit, one, exp, both, root_b, reg_b]
    for m in metrics:
        for k, why in NO_FRESH.items():
            m.get(k).skipped = why
    for m in (hit, one, exp):
        m.targets = [("buildkit", 0.5, "le")]
    active = [k for k in ("rbuild", "buildkit") if k in b.tools and not hit.get(k).skipped]
    if not active:
        return metrics

    loops = calibrate_loops(2.0 * b.size, ("/bin/dash",) if os.access("/bin/dash", os.X_OK) else ("/bin/busybox", "sh"))
    args = {"LOOPS": str(loops), "DEPFILES": str(max(1, round(2000 * b.size)))}
    log(f"{s}: LOOPS={loops} (about {3.0 * b.size:.1f} s of CPU in the deps stage), DEPFILES={args['DEPFILES']}")
    victim = ctx / "src" / "d000" / "f00000.c"
    original = victim.read_bytes()
    cold.note = (f"debian:bookworm-slim build stages (deps: two RUNs, LOOPS={loops}, about {3.0 * b.size:.1f} s of "
                 f"shell CPU, {args['DEPFILES']} files; build: COPY of the {files}-file source tree, gzip -6 per "
                 "directory and sha256sum of every file), busybox runtime stage; each build on an empty state "
                 "root, base images from the local mirror; BuildKit: buildkitd (OCI worker, overlayfs) started on "
                 "a new --root before the timed buildctl command and stopped after it, its start untimed")
    one.note = (f"{victim.relative_to(ctx)} gets one more line each run: COPY src, the compile RUN and the runtime "
                "stage's COPY --from=build run again; the deps stage is a hit. Run 1 imports the first export, "
                "later runs what the previous run's re-export (d) wrote")
    exp.note = ("in the build of `--cache-from and --cache-to`: rbuild from its `naming to ... done` line to its "
                "`exporting cache to REF: ...` line as they arrive (printed in-process, unbuffered); BuildKit: "
                "the started-to-completed time buildkitd reports for its `exporting cache to registry` step "
                "(buildctl --progress rawjson)")
    root_b.note = "`du -sb` of the state root after the build (BuildKit: after buildkitd stopped)"
    reg_b.note = "growth of the registry's blob storage during the `--cache-from and --cache-to` build"

    reg = b.push_reg
    reg.start()  # empty storage; both tools' caches live here, each in its own repository
    refs = {k: f"{reg.host}/cache/app-{k}:main" for k in active}
    rb, bk = b.tools.get("rbuild"), b.tools.get("buildkit")
    scratch = b.work / "s9"
    tag = "bench/s9"
    counters: dict[str, list[str]] = {"seed": [], "reexport": [], "import": []}
    misses: list[str] = []
    seed_results: dict[str, int] = {}
    trash = Trash(b.work / "s9-trash")

    def blob_bytes() -> int:
        return du_bytes(reg.workdir / "data" / "docker" / "registry" / "v2" / "blobs")

    def fresh_build(key: str, cache_from: bool, cache_to: bool) -> tuple[float, list[tuple[float, str]], int]:
        """(seconds, progress lines, state root bytes) of one build on an empty state root."""
        root = scratch / f"{key}-root"
        trash.discard(root)
        root.parent.mkdir(parents=True, exist_ok=True)
        size = None
        ref = refs[key]
        try:
            if key == "rbuild":
                argv = rb.build_argv(df, ctx, tag, args, root=root)
                flags = (["--cache-from", f"type=registry,ref={ref}"] if cache_from else []) + \
                    (["--cache-to", f"type=registry,ref={ref},mode=max"] if cache_to else [])
                argv = argv[:-1] + flags + argv[-1:]
                secs, lines = timed_lines(argv, env=rb.env(), logfile=b.logfile, timeout=BUILD_TIMEOUT)
            else:
                bk.serve(root, f"unix://{scratch}/buildkitd.sock", b.mirror.host, http_hosts=(reg.host,))
                argv = bk.build_argv(df, ctx, tag, args)
                argv[argv.index("--progress") + 1] = "rawjson"  # BuildKit's own step times (export_phase)
                if cache_from:
                    argv += ["--import-cache", f"type=registry,ref={ref}"]
                if cache_to:
                    argv += ["--export-cache", f"type=registry,ref={ref},mode=max"]
                secs, lines = timed_lines(argv, logfile=b.logfile, timeout=BUILD_TIMEOUT)
                bk.stop()
            size = du_bytes(root)
        finally:
            if key == "buildkit":
                bk.stop()
            trash.discard(root, size)
            rmtree(scratch / f"{key}-root.log")
        return secs, lines, size

    def note_import(key: str, lines, kind: str) -> None:
        """Keeps rbuild's own import and export lines; a re-export with fewer results than the first export
        (a mode=max cache that lost steps) is reported."""
        for _, line in lines:
            if key == "rbuild" and line.startswith("importing cache manifest from"):
                counters["import"].append(line.split(": ", 1)[-1])
            m = SENT.match(line) if key == "rbuild" else None
            if m:
                counters[kind].append(line.split(": ", 1)[-1])
                if kind == "seed":
                    seed_results[key] = int(m[2])
                elif int(m[2]) < seed_results.get(key, 0):
                    misses.append(f"{key}: the re-export wrote {m[2]} results, the first export "
                                  f"{seed_results[key]} (`{line}`)")
                    log(f"{s}: {key}: RE-EXPORT LOST RESULTS: {line}")

    def record(m: Metric, key: str, i: int, what: Callable[[], float]) -> float | None:
        try:
            v = what()
        except BenchError as e:
            log(f"{s} / {m.name} / {key}: FAILED: {str(e)[:2000]}")
            m.get(key).errors.append(str(e))
            return None
        m.get(key).values.append(v)
        log(f"{s} / {m.name} / {key} run {i + 1}: {v:.3f} {m.unit}")
        return v

    try:
        victim.write_bytes(original)
        for key in list(active):  # the registry cache of the unchanged project, exported by each tool (untimed)
            try:
                secs, lines, _ = fresh_build(key, cache_from=False, cache_to=True)
            except BenchError as e:
                log(f"{s}: the seeding build with {key} FAILED: {str(e)[:2000]}")
                for m in metrics:
                    m.get(key).errors.append(f"the seeding build (cold, --cache-to) failed: {e}")
                active.remove(key)
                continue
            note_import(key, lines, "seed")
            log(f"{s}: {key} exported its cache to {refs[key]} in a cold build of {secs:.1f} s "
                f"(registry now {blob_bytes()} bytes of blobs)")

        def each_run(key, t, i):
            # (a) the reference: a cold build without any cache
            record(cold, key, i, lambda: fresh_build(key, False, False)[0])

            # (b) the unchanged project, importing the cache
            def unchanged() -> float:
                secs, lines, size = fresh_build(key, True, False)
                note_import(key, lines, "import")
                ran = ran_steps(key, lines)
                if ran:
                    misses.append(f"{key} run {i + 1}, unchanged: ran {'; '.join(r[:60] for r in ran)}")
                    log(f"{s}: {key}: CACHE MISS on an unchanged project: {ran}")
                root_b.get(key).values.append(size)
                return secs
            record(hit, key, i, unchanged)

            # (c) one source file changed, importing the unchanged project's cache (from run 2 on: as the previous
            # run's re-export left it, the chain a CI runner sees)
            def changed() -> float:
                victim.write_bytes(original + f"// {key} run {i} {time.time_ns()}\n".encode())
                try:
                    secs, lines, _ = fresh_build(key, True, False)
                finally:
                    victim.write_bytes(original)
                ran = ran_steps(key, lines)
                deps = [r for r in ran if "LOOPS" in r or "[deps" in r]
                if deps:
                    misses.append(f"{key} run {i + 1}, one file changed: the deps stage ran ({deps[0][:60]})")
                return secs
            record(one, key, i, changed)

            # (d) the unchanged project with --cache-from and --cache-to: the unchanged cache's re-export
            def reexport() -> float:
                before = blob_bytes()
                secs, lines, _ = fresh_build(key, True, True)
                reg_b.get(key).values.append(blob_bytes() - before)
                note_import(key, lines, "reexport")
                phase = export_phase(key, lines)
                both.get(key).values.append(secs)
                log(f"{s} / whole build with --cache-to / {key} run {i + 1}: {secs:.3f} s")
                return phase
            record(exp, key, i, reexport)

            return None  # each measure recorded its own value above

        b.each(hit, each_run, only=list(active))
    finally:
        victim.write_bytes(original)
        if isinstance(bk, Buildkit):
            bk.stop()  # back to its default (local) daemon, started when next needed
        reg.stop()
        rmtree(scratch)

    for key in ("rbuild", "buildkit"):
        a, h, c = cold.get(key).median(), hit.get(key).median(), one.get(key).median()
        if a and h and c:
            hit.note = (hit.note + "; " if hit.note else "") + \
                f"{dict(FRESH_LABELS)[key]}: {h / a:.2f} of its cold build unchanged, {c / a:.2f} with one file changed"
    diffs = {k: both.get(k).median() - hit.get(k).median() for k in active
             if both.get(k).median() is not None and hit.get(k).median() is not None}
    if diffs:
        both.note = "minus the --cache-from build's median (the export's cost as the whole build sees it): " + \
            ", ".join(f"{dict(FRESH_LABELS)[k]} {d:+.2f} s" for k, d in diffs.items())
    if counters["reexport"]:
        reg_b.note += "; rbuild's own report of the re-export: " + counters["reexport"][-1]
    if counters["import"]:
        root_b.note += "; rbuild's import: " + counters["import"][-1]
    if misses:
        hit.note = (hit.note + "; " if hit.note else "") + "CACHE MISSES: " + " | ".join(misses)
    return metrics


FRESH_LABELS = [("rbuild", "rbuild"), ("buildkit", "BuildKit")]


# The growth series of issue 19: contexts of 1k, 10k and 100k files (4 kB each on average: the work grows with
# the number of files) and images of 100 MB, 1 GB and 4 GB (16 MB files: it grows with the bytes), all scaled by
# --size, each built cold (`COPY . /app`) and then rebuilt with nothing changed.
GROWTH_FILES = (1_000, 10_000, 100_000)
GROWTH_BYTES = (100e6, 1e9, 4e9)
GROWTH_FILE_BYTES = 4096
GROWTH_TOOLS = ["rbuild", "buildkit", "docker", "buildah"]
NO_GROWTH = "the growth series compares rbuild with BuildKit v0.24 only (it is the longest scenario)"


def count(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def decimal_bytes(n: float) -> str:
    for div, name in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if n >= div:
            return f"{n / div:.3g} {name}"
    return f"{n:g} B"


def s10_growth(b: Bench) -> list[Metric]:
    """Per point of each series, tool and run: a cold build on an empty state root (BuildKit v0.24: buildkitd
    started afresh on an empty root, untimed) measured for time and peak RSS, then a no-op rebuild. The state
    roots are emptied after each point (the 4 GB point needs about 4 × 4 GB of disk while it runs)."""
    s = "10 growth"
    points = [("files", n) for n in GROWTH_FILES] + [("bytes", n) for n in GROWTH_BYTES]
    runs = b.growth_runs or b.runs
    metrics: list[Metric] = []
    summary: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    for axis, spec in points:
        n = max(1, round(spec * b.size))  # as the generator scales it
        if axis == "files":
            label = f"context of {count(n)} files ({decimal_bytes(n * GROWTH_FILE_BYTES)})"
            extra = ("--files", str(spec), "--file-bytes", str(GROWTH_FILE_BYTES))
            ctx_name = f"10-growth-files-{n}"
        else:
            label = f"image of {decimal_bytes(n)}"
            extra = ("--bytes", f"{spec:.0f}")
            ctx_name = f"10-growth-bytes-{n}"
        try:
            df, ctx = b.scenario("10-growth", ctx_name, extra)
        except BenchError as e:
            m = b.metric(s, f"{label}: context generation failed", tools=GROWTH_TOOLS)
            for k in ("rbuild", "buildkit"):
                m.get(k).errors.append(str(e))
            metrics.append(m)
            continue
        cold = b.metric(s, f"{label}: cold build", tools=GROWTH_TOOLS)
        noop = b.metric(s, f"{label}: no-op rebuild", tools=GROWTH_TOOLS)
        rss = b.metric(s, f"{label}: peak RSS, cold build", "MB", tools=GROWTH_TOOLS)
        for m, measure in ((cold, "cold build"), (noop, "no-op rebuild"), (rss, "peak RSS, cold build")):
            m.growth = {"axis": axis, "x": n, "measure": measure}
            for k in ("docker", "buildah"):
                if not m.get(k).skipped:
                    m.get(k).skipped = NO_GROWTH
        parts: dict[str, list] = {}
        tag = "bench/s10"

        def one(key, t, i):
            t.reset()
            secs, mb = peak(b, key, t, df, ctx, tag, parts)
            rss.get(key).values.append(mb)
            log(f"{s} / {label}: peak RSS / {key} run {i + 1}: {mb:.0f} MB")
            try:
                v = t.build(df, ctx, tag)
            except BenchError as e:
                log(f"{s} / {label}: no-op rebuild / {key}: FAILED: {str(e)[:2000]}")
                noop.get(key).errors.append(str(e))
            else:
                noop.get(key).values.append(v)
                log(f"{s} / {label}: no-op rebuild / {key} run {i + 1}: {v:.3f} s")
            return secs

        try:
            b.each(cold, one, only=["rbuild", "buildkit"], runs=runs)
        finally:
            for k in ("rbuild", "buildkit"):  # the next point starts empty, and the disk is needed
                t = b.tools.get(k)
                if t is not None:
                    try:
                        t.reset()
                    except BenchError as e:
                        log(f"{s}: resetting {k}: {e}")
        rss.note = memory_note(parts, brief=any(m.growth and m.unit == "MB" and m.note for m in metrics))
        for m in (cold, noop, rss):
            for k in ("rbuild", "buildkit"):
                med = m.get(k).median()
                if med is not None:
                    summary.setdefault((axis, m.growth["measure"], k), []).append((n, med))
        metrics += [cold, noop, rss]
    # How each measure grew from the series' first point to its last, beside how the work grew.
    for axis in ("files", "bytes"):
        per_tool = []
        for k, name in (("rbuild", "rbuild"), ("buildkit", "BuildKit v0.24")):
            grew = [f"{measure} ×{pts[-1][1] / pts[0][1]:.1f}" for (ax, measure, kk), pts in summary.items()
                    if ax == axis and kk == k and len(pts) >= 2 and pts[0][1] > 0]
            if grew:
                per_tool.append(f"{name}: " + ", ".join(grew))
        first = next((m for m in metrics if m.growth and m.growth["axis"] == axis), None)
        if first is not None and per_tool:
            xs = [m.growth["x"] for m in metrics if m.growth and m.growth["axis"] == axis]
            first.note = (f"from the series' first point to its last the work grows ×{xs[-1] / xs[0]:.0f} "
                          f"({'files' if axis == 'files' else 'bytes'}); " + "; ".join(per_tool))
    return metrics


PLATFORMS = "linux/amd64,linux/arm64"


def multiplatform_argv(t: Tool, df: Path, ctx: Path, dest: Path) -> list[str]:
    """One build of `df` for both PLATFORMS into an OCI archive (an image index), as each tool spells it."""
    argv = t.build_argv(df, ctx, "", {}, f"type=oci,dest={dest}")
    if isinstance(t, Rbuild):
        return argv[:-1] + ["--platform", PLATFORMS, argv[-1]]
    return argv + ["--opt", f"platform={PLATFORMS}"]


def s11_multiplatform(b: Bench) -> list[Metric]:
    """Issue 15: the same two-platform build (cross-compilation: a native build stage, a FROM scratch result per
    platform) into an OCI archive holding the index, from a cold cache and again with nothing changed."""
    df, ctx = b.scenario("11-multiplatform")
    tools = ["rbuild", "buildkit"]
    cold = b.metric("11 multi-platform", f"{PLATFORMS} build, cold cache ({gb(0.1 * b.size)} context)", tools=tools)
    warm = b.metric("11 multi-platform", f"{PLATFORMS} build again, nothing changed", tools=tools)
    for m in (cold, warm):
        m.note = ("one build for both platforms into `type=oci` (the image index); the build stage runs natively "
                  "and its step that does not read TARGETARCH runs once for both")
        m.targets = [("buildkit", 1.0, "le")]
    dest = b.out / "s11.tar"

    def one(key, t, i):
        t.reset()
        if isinstance(t, Buildkit):
            t.ensure()
        argv = multiplatform_argv(t, df, ctx, dest)
        env = t.env()
        secs = timed(argv, env=env, logfile=b.logfile, timeout=BUILD_TIMEOUT)
        warm.get(key).values.append(timed(argv, env=env, logfile=b.logfile, timeout=BUILD_TIMEOUT))
        index = json.loads(run(["tar", "-xOf", str(dest), "index.json"]).stdout)
        if len(index.get("manifests", [])) != 1:
            raise BenchError(f"{key}: the OCI archive's index.json does not name one image index: {index}")
        return secs

    try:
        b.each(cold, one, only=[k for k in tools if k in b.tools])
    finally:
        dest.unlink(missing_ok=True)
    return [cold, warm]


ALL: dict[str, Callable[[Bench], list[Metric]]] = {
    "1": s1_per_run, "2": s2_noop, "3": s3_incremental, "4": s4_parallel, "5": s5_export, "6": s6_push,
    "7": s7_memory, "8": s8_remote, "9": s9_fresh_runner, "10": s10_growth, "11": s11_multiplatform,
}


def uses(scenario: str) -> list[str]:
    """The tools a scenario measures (the others never run in it)."""
    return {"8": REMOTE_TOOLS, "9": FRESH_TOOLS, "10": ["rbuild", "buildkit"], "11": ["rbuild", "buildkit"]}.get(
        scenario, TOOLS)
