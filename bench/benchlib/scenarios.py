"""The seven scenarios of issue 7 and the remote one of issue 12. Each prepares untimed (contexts, warm-up
builds, cache resets), then measures its tools interleaved, run by run (rbuild, BuildKit, buildah, rbuild, ...).
A scenario measures only the tools its metrics name (`b.metric(..., tools=...)`)."""

from __future__ import annotations

import json
import os
import random
import statistics
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import gen
from .netns import NetPair
from .tools import BUILD_TIMEOUT, Buildah, Buildkit, Docker, Rbuild, Tool
from .util import (BenchError, Daemon, Metric, Registry, in_netns, log, max_rss_mb, rmtree, run, timed,
                   timed_shell)

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


def calibrate_loops(seconds: float) -> int:
    """Iterations of the busybox shell loop that take about `seconds` of CPU on this machine."""
    n = 300_000
    t = timed(["/bin/busybox", "sh", "-c", f"i=0; while [ $i -lt {n} ]; do i=$((i+1)); done"])
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


ALL: dict[str, Callable[[Bench], list[Metric]]] = {
    "1": s1_per_run, "2": s2_noop, "3": s3_incremental, "4": s4_parallel, "5": s5_export, "6": s6_push,
    "7": s7_memory, "8": s8_remote,
}


def uses(scenario: str) -> list[str]:
    """The tools a scenario measures (the others never run in it)."""
    return REMOTE_TOOLS if scenario == "8" else ["rbuild", "docker", "buildah"]
