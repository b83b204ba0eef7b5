"""The seven scenarios of issue 7, the remote one of issue 12 and the fresh CI runner of issue 13. Each prepares
untimed (contexts, warm-up builds, cache resets), then measures its tools interleaved, run by run (rbuild,
BuildKit, buildah, rbuild, ...).
A scenario measures only the tools its metrics name (`b.metric(..., tools=...)`)."""

from __future__ import annotations

import json
import os
import random
import re
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
from .tools import BUILD_TIMEOUT, Buildah, Buildkit, Docker, Rbuild, Tool
from .util import (BenchError, Daemon, Metric, Registry, in_netns, log, max_rss_mb, rmtree, run, timed,
                   timed_lines, timed_shell)

HERE = Path(__file__).resolve().parents[1]
SCENARIOS = HERE / "scenarios"


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
    contexts: Path = field(init=False)
    out: Path = field(init=False)

    def __post_init__(self):
        self.contexts = self.work / "contexts"
        self.out = self.work / "out"
        self.contexts.mkdir(parents=True, exist_ok=True)
        self.out.mkdir(parents=True, exist_ok=True)

    def scenario(self, name: str) -> tuple[Path, Path]:
        """(Dockerfile, generated context) of a scenario directory."""
        d = SCENARIOS / name
        ctx = self.contexts / name
        log(f"{name}: generating the context (size {self.size})")
        run(["python3", str(d / "gen"), str(ctx), "--size", str(self.size)], timeout=3600)
        return d / "Dockerfile", ctx

    def metric(self, scenario: str, name: str, unit: str = "s", tools: list[str] | None = None) -> Metric:
        m = Metric(scenario, name, unit)
        for key in tools or ["rbuild", "docker", "buildah"]:
            s = m.get(key)  # the tools this metric measures: each() and warm() run only these
            if key in self.skipped:
                s.skipped = self.skipped[key]
        return m

    def each(self, m: Metric, fn: Callable[[str, Tool | None, int], float | None], only: list[str] | None = None,
             extra: tuple[str, ...] = ()) -> None:
        """Runs fn for every available tool (and the pseudo-tools in `extra`, given None), interleaved run by
        run; a failure is recorded, never a zero."""
        keys = [k for k in (list(self.tools) if only is None else only)
                if k in self.tools and k in m.series and not m.get(k).skipped] + list(extra)
        for i in range(self.runs):
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


def s1_per_run(b: Bench) -> list[Metric]:
    df, ctx = b.scenario("01-per-run")
    m = b.metric("1 per-RUN", "20 RUN steps, cold")
    m.targets = [("docker", 0.25, "le")]
    b.warm(m, df, ctx, "bench/s1", {"BUST": "warm"})
    b.each(m, lambda key, t, i: t.build(df, ctx, "bench/s1", {"BUST": bust(key, i)}))
    return [m]


def s2_noop(b: Bench) -> list[Metric]:
    df, ctx = b.scenario("02-noop")
    m = b.metric("2 no-op", f"rebuild, nothing changed ({round(10000 * b.size)} files, {gb(0.2 * b.size)})")
    m.targets = [("docker", 0.3, "le")]
    b.warm(m, df, ctx, "bench/s2")
    b.each(m, lambda key, t, i: t.build(df, ctx, "bench/s2"))
    return [m]


def s3_incremental(b: Bench) -> list[Metric]:
    df, ctx = b.scenario("03-incremental")
    m = b.metric("3 incremental", "rebuild after one file changed")
    m.targets = [("docker", 0.3, "le")]
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


def calibrate_loops(seconds: float, shell: tuple[str, ...] = ("/bin/busybox", "sh")) -> int:
    """Iterations of the shell loop (busybox's by default) that take about `seconds` of CPU on this machine."""
    n = 300_000
    t = timed([*shell, "-c", f"i=0; while [ $i -lt {n} ]; do i=$((i+1)); done"])
    return max(1000, int(n * seconds / max(t, 1e-3)))


def s4_parallel(b: Bench) -> list[Metric]:
    df, ctx = b.scenario("04-parallel")
    loops = calibrate_loops(2.0 * b.size)
    log(f"4 parallel: LOOPS={loops} (about {2.0 * b.size:.1f} s of CPU per stage)")
    m = b.metric("4 parallel", "4 stages of ~2 s CPU, cold")
    m.note = f"LOOPS={loops}; {os.cpu_count()} cores, so about {4 * 2.0 * b.size / (os.cpu_count() or 1):.1f} s at best"
    m.targets = [("docker", 0.9, "le")]
    b.warm(m, df, ctx, "bench/s4", {"BUST": "warm", "LOOPS": "1"})
    b.each(m, lambda key, t, i: t.build(df, ctx, "bench/s4", {"BUST": bust(key, i), "LOOPS": str(loops)}))
    return [m]


class Saved:
    """rbuild's state root right after the warm-up build, restored before each timed run so no run finds
    what an earlier one left (compressed blobs, pushed-layer records)."""

    def __init__(self, b: Bench, name: str):
        r = b.tools.get("rbuild")
        self.path = r.save_root(name) if isinstance(r, Rbuild) else None

    def restore(self, b: Bench) -> None:
        r = b.tools.get("rbuild")
        if self.path and isinstance(r, Rbuild):
            r.restore_root(self.path)


DOCKER_NO_OCI = ("dockerd's embedded BuildKit has no OCI exporter without buildx and the containerd image store; "
                 "its compression is measured by the push scenario")


def s5_export(b: Bench) -> list[Metric]:
    df, ctx = b.scenario("05-export")
    raw = {"gzip": "gzip -6", "zstd": "zstd -3 -q -T0"}
    metrics = {}
    for comp in raw:
        m = b.metric("5 export", f"{gb(b.size)} layer to OCI tar, {comp}", tools=["rbuild", "docker", "buildah", "ref"])
        m.note = f"ref = `tar -cf - data | {raw[comp]} > file` on the same tree (the physical limit)"
        m.targets = [("ref", 1 / 0.8, "le")]
        if "docker" not in b.skipped:
            m.get("docker").skipped = DOCKER_NO_OCI
        metrics[comp] = m
    # rbuild's warm-up build fills only the cache (no -t: tagging would compress and store the layer), so
    # the timed export has to compress it; the other tools keep their images uncompressed anyway.
    rb = b.tools.pop("rbuild", None)
    if rb is not None and not metrics["gzip"].get("rbuild").skipped:
        try:
            rb.build(df, ctx, "")
        except BenchError as e:
            metrics["gzip"].get("rbuild").errors.append(f"warm-up build failed: {e}")
            metrics["gzip"].get("rbuild").skipped = "warm-up build failed (see errors)"
    b.warm(metrics["gzip"], df, ctx, "bench/s5")
    if rb is not None:
        b.tools = {"rbuild": rb, **b.tools}
    for k, s in metrics["gzip"].series.items():
        if s.skipped:
            metrics["zstd"].get(k).skipped = s.skipped
            metrics["zstd"].get(k).errors = list(s.errors)
    saved = Saved(b, "s5")
    for comp, m in metrics.items():
        dest = b.out / f"s5-{comp}.tar"

        def one(key, t, i, comp=comp, dest=dest):
            dest.unlink(missing_ok=True)
            try:
                if key == "ref":
                    return timed_shell(f"tar -C {ctx} -cf - data | {raw[comp]} > {dest}")
                if key == "rbuild":
                    saved.restore(b)
                return t.export_oci(df, ctx, "bench/s5", dest, comp)
            finally:
                dest.unlink(missing_ok=True)

        b.each(m, one, extra=("ref",))
    pigz = b.metric("5 export", "reference: tar | pigz -6 (all cores)", tools=["ref"])
    dest = b.out / "s5.tgz"
    b.each(pigz, lambda key, t, i: timed_shell(f"tar -C {ctx} -cf - data | pigz -6 > {dest}"), only=[], extra=("ref",))
    dest.unlink(missing_ok=True)
    return [metrics["gzip"], metrics["zstd"], pigz]


def s6_push(b: Bench) -> list[Metric]:
    df, ctx = b.scenario("06-push")
    first = b.metric("6 push", f"push {gb(b.size)} image to an empty registry", tools=["rbuild", "docker", "buildah", "ref"])
    again = b.metric("6 push", "push again (nothing to send)", tools=["rbuild", "docker", "buildah", "ref"])
    for m in (first, again):
        m.note = "ref = `skopeo copy` of the same image (gzip layers already compressed) from an OCI layout"
        m.targets = [("ref", 1.0, "le")]
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

    b.each(first, one, extra=("ref",) if not first.get("ref").skipped else ())
    reg.stop()
    return [first, again]


def s7_memory(b: Bench) -> list[Metric]:
    df, ctx = b.scenario("07-memory")
    cold = b.metric("7 memory", f"peak RSS, first build ({gb(b.size)} context)", "MiB", tools=["rbuild", "docker", "buildah"])
    noop = b.metric("7 memory", f"peak RSS, no-op rebuild ({gb(b.size)} context)", "MiB", tools=["rbuild", "docker", "buildah"])
    for m in (cold, noop):
        m.targets = [("abs", 64, "le")]
        if "docker" not in b.skipped:
            m.get("docker").skipped = "the build runs inside dockerd; the client's RSS says nothing"

    def one(key, t, i):
        t.reset()
        argv = t.build_argv(df, ctx, "bench/s7", {})
        _, rss = max_rss_mb(argv, env=t.env(), timeout=3600, logfile=b.logfile)
        _, rss2 = max_rss_mb(argv, env=t.env(), timeout=3600, logfile=b.logfile)
        noop.get(key).values.append(rss2)
        return rss

    b.each(cold, one, only=[k for k in ("rbuild", "buildah") if k in b.tools])
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

    def blob_bytes() -> int:
        return du_bytes(reg.workdir / "data" / "docker" / "registry" / "v2" / "blobs")

    def fresh_build(key: str, cache_from: bool, cache_to: bool) -> tuple[float, list[tuple[float, str]], int]:
        """(seconds, progress lines, state root bytes) of one build on an empty state root."""
        root = scratch / f"{key}-root"
        rmtree(root)
        root.parent.mkdir(parents=True, exist_ok=True)
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
            rmtree(root)
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


ALL: dict[str, Callable[[Bench], list[Metric]]] = {
    "1": s1_per_run, "2": s2_noop, "3": s3_incremental, "4": s4_parallel, "5": s5_export, "6": s6_push,
    "7": s7_memory, "8": s8_remote, "9": s9_fresh_runner,
}


def uses(scenario: str) -> list[str]:
    """The tools a scenario measures (the others never run in it)."""
    return {"8": REMOTE_TOOLS, "9": FRESH_TOOLS}.get(scenario, ["rbuild", "docker", "buildah"])
