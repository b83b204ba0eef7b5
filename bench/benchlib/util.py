"""Processes, timing, the local registry and statistics shared by the scenarios."""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

SEED_STORAGE = Path(os.environ.get("RBUILD_TEST_CACHE", "/var/cache/rbuild-test")) / "registry"
LOG_TAIL = 40


class BenchError(Exception):
    """A step of the harness failed; the message says which command and shows its output's tail."""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def tail(text: str, n: int = LOG_TAIL) -> str:
    return "\n".join(text.splitlines()[-n:])


def run(argv: list[str], *, env: dict | None = None, cwd: Path | None = None, timeout: float = 3600,
        check: bool = True, logfile: Path | None = None) -> subprocess.CompletedProcess:
    """Runs a command to completion, output captured (and appended to logfile when given)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    try:
        p = subprocess.run(argv, env=full_env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout, text=True, errors="replace")
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"{' '.join(argv)} did not finish within {timeout:.0f}s") from e
    if logfile:
        with open(logfile, "a") as f:
            f.write(f"$ {' '.join(argv)}\n{p.stdout}\n[exit {p.returncode}]\n")
    if check and p.returncode != 0:
        raise BenchError(f"`{' '.join(argv)}` exited with {p.returncode}:\n{tail(p.stdout)}")
    return p


def settle() -> None:
    """Writes back what earlier runs left dirty (untimed), so a timed run does not pay, in its first fsync or
    journal commit, for the previous tool's writeback: each tool starts from the same clean disk."""
    os.sync()


def timed(argv: list[str], **kw) -> float:
    """Wall-clock seconds of one successful run of argv (after `settle`)."""
    settle()
    t0 = time.monotonic()
    run(argv, **kw)
    return time.monotonic() - t0


def timed_lines(argv: list[str], *, env: dict | None = None, timeout: float = 3600,
                logfile: Path | None = None) -> tuple[float, list[tuple[float, str]]]:
    """(wall-clock seconds, output lines each with the second it arrived at) of one successful run of argv,
    stderr merged into stdout: for timing a phase of a build from its progress lines. Runs `settle` first."""
    settle()
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    t0 = time.monotonic()
    p = subprocess.Popen(argv, env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    killer = threading.Timer(timeout, p.kill)
    killer.start()
    lines: list[tuple[float, str]] = []
    try:
        assert p.stdout is not None
        for raw in iter(p.stdout.readline, b""):
            lines.append((time.monotonic() - t0, raw.decode(errors="replace").rstrip("\n")))
        code = p.wait()
    finally:
        killer.cancel()
        if p.poll() is None:
            p.kill()
            p.wait()
    secs = time.monotonic() - t0
    text = "\n".join(line for _, line in lines)
    if logfile:
        with open(logfile, "a") as f:
            f.write(f"$ {' '.join(argv)}\n{text}\n[exit {code}, {secs:.3f} s]\n")
    if secs >= timeout:
        raise BenchError(f"{' '.join(argv)} did not finish within {timeout:.0f}s")
    if code != 0:
        raise BenchError(f"`{' '.join(argv)}` exited with {code}:\n{tail(text)}")
    return secs, lines


def timed_shell(script: str, **kw) -> float:
    """Wall-clock seconds of a bash pipeline (with pipefail)."""
    return timed(["bash", "-o", "pipefail", "-c", script], **kw)


def max_rss_mb(argv: list[str], **kw) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of argv under GNU time -v (the largest process of the tree it waited for)."""
    settle()
    t0 = time.monotonic()
    p = run(["/usr/bin/time", "-v", *argv], **kw)
    secs = time.monotonic() - t0
    for line in p.stdout.splitlines():
        if "Maximum resident set size" in line:
            return secs, int(line.rsplit(":", 1)[1]) / 1024
    raise BenchError(f"/usr/bin/time -v printed no 'Maximum resident set size' for {' '.join(argv)}")


MIB_TO_MB = 1024 * 1024 / 1e6


def peak_rss_mb(pid: int) -> float:
    """A running process's peak RSS so far (VmHWM of /proc/PID/status), in MB (10^6 bytes)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError as e:
        raise BenchError(f"cannot read the peak RSS of process {pid}: {e}") from e
    raise BenchError(f"/proc/{pid}/status has no VmHWM line")


def timed_quiet(argv: list[str], timeout: float = 60) -> float:
    """Wall-clock seconds of one successful run of a short command, output discarded unless it fails (for
    per-invocation microbenchmarks, where capturing and logging would be part of what is measured)."""
    t0 = time.perf_counter()
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=timeout)
    secs = time.perf_counter() - t0
    if p.returncode != 0:
        raise BenchError(f"`{' '.join(argv)}` exited with {p.returncode}:\n"
                         f"{tail(p.stderr.decode(errors='replace'))}")
    return secs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_netns(netns: str | None, argv: list[str]) -> list[str]:
    """argv run inside a network namespace (`ip netns exec`), or as is."""
    return ["ip", "netns", "exec", netns, *argv] if netns else argv


def _connects(port: int, netns: str | None) -> bool:
    if netns:  # this process stays in its own namespace: probe from inside the other one
        probe = f"exec 3<>/dev/tcp/127.0.0.1/{port}"
        return subprocess.run(in_netns(netns, ["bash", "-c", probe]), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode == 0
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(port: int, what: str, timeout: float = 30, proc: subprocess.Popen | None = None,
              logfile: Path | None = None, netns: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        if _connects(port, netns):
            return
        time.sleep(0.1)
    detail = tail(logfile.read_text(errors="replace")) if logfile and logfile.exists() else ""
    where = f" in network namespace {netns}" if netns else ""
    raise BenchError(f"{what} did not listen on 127.0.0.1:{port}{where}\n{detail}")


class Daemon:
    """A background server (optionally in a network namespace), its output in a log file; `ready()` says
    when it serves."""

    def __init__(self, what: str, argv: list[str], logf: Path, netns: str | None = None,
                 env: dict | None = None):
        self.what, self.argv, self.logf, self.netns, self.env = what, argv, logf, netns, env
        self.proc: subprocess.Popen | None = None

    def start(self, ready, timeout: float = 60) -> None:
        full_env = dict(os.environ)
        full_env.update(self.env or {})
        self.logf.parent.mkdir(parents=True, exist_ok=True)
        # `ip netns exec` execs the command, so the pid is the server's own.
        self.proc = subprocess.Popen(in_netns(self.netns, self.argv), stdin=subprocess.DEVNULL,
                                     stdout=open(self.logf, "w"), stderr=subprocess.STDOUT, env=full_env,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if ready():
                log(f"{self.what} up" + (f" (network namespace {self.netns})" if self.netns else ""))
                return
            time.sleep(0.2)
        code = self.proc.poll()
        self.stop()
        state = f"exited with {code}" if code is not None else f"did not serve within {timeout:.0f}s"
        raise BenchError(f"{self.what} {state}:\n{tail(self.logf.read_text(errors='replace'))}")

    def log_text(self) -> str:
        return self.logf.read_text(errors="replace") if self.logf.exists() else ""

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def rmtree(path: Path) -> None:
    """Removes a tree, unmounting anything a crashed tool left mounted under it first."""
    if not path.exists():
        return
    mounts = []
    with open("/proc/self/mounts") as f:
        for line in f:
            mp = line.split()[1].replace("\\040", " ")
            if mp == str(path) or mp.startswith(str(path) + "/"):
                mounts.append(mp)
    for mp in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], stderr=subprocess.DEVNULL)
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        subprocess.run(["rm", "-rf", str(path)])


class Registry:
    """A docker-registry on a fixed loopback port, over a copy of the seeded storage or empty storage; with
    `netns`, on that network namespace's loopback."""

    def __init__(self, workdir: Path, port: int, seed: bool, netns: str | None = None):
        self.workdir, self.port, self.seed, self.netns = workdir, port, seed, netns
        self.proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """(Re)starts the registry on fresh storage."""
        self.stop()
        rmtree(self.workdir)
        data = self.workdir / "data"
        self.workdir.mkdir(parents=True)
        if self.seed:
            if not (SEED_STORAGE / "seeded-v1").is_file():
                raise BenchError(f"no seeded base images in {SEED_STORAGE}: run bench/setup (scripts/seed-images)")
            shutil.copytree(SEED_STORAGE, data, symlinks=True)
        else:
            data.mkdir()
        cfg = self.workdir / "registry.yml"
        cfg.write_text(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {data}\n  delete:\n    enabled: true\nhttp:\n  addr: {self.host}\n"
            "  secret: rbuild-bench\n")
        binary = shutil.which("docker-registry") or shutil.which("registry")
        if not binary:
            raise BenchError("docker-registry is not installed: run bench/setup")
        logf = self.workdir / "registry.log"
        self.proc = subprocess.Popen(in_netns(self.netns, [binary, "serve", str(cfg)]), stdin=subprocess.DEVNULL,
                                     stdout=open(logf, "w"), stderr=subprocess.STDOUT)
        wait_port(self.port, "docker-registry", proc=self.proc, logfile=logf, netns=self.netns)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


@dataclass
class Series:
    """The measurements of one metric for one tool; `skipped` says why there are none."""
    values: list[float] = field(default_factory=list)
    skipped: str | None = None
    errors: list[str] = field(default_factory=list)

    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None


@dataclass
class Metric:
    """One row of the results table: a quantity measured for several tools."""
    scenario: str
    name: str
    unit: str  # "s", "ms", "MB" (10^6 bytes), "MiB" (older results) or "B"
    series: dict[str, Series] = field(default_factory=dict)
    # (reference tool, target ratio, "le" | "ge" meaning rbuild/ref must be <= or >= the target)
    targets: list[tuple[str, float, str]] = field(default_factory=list)
    note: str = ""
    # A point of a growth series (scenario 10): {"axis": "files" | "bytes", "x": N, "measure": "..."}; the chart
    # draws these as lines over x instead of bars.
    growth: dict | None = None

    def get(self, tool: str) -> Series:
        return self.series.setdefault(tool, Series())

    def ratio(self, ref: str) -> float | None:
        a = self.series.get("rbuild")
        b = self.series.get(ref)
        if not a or not b or a.median() is None or b.median() in (None, 0):
            return None
        return a.median() / b.median()
