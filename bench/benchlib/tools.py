"""The builders under test: rbuild, docker's embedded BuildKit (a dockerd of our own) and buildah.

Every tool pulls its base images from the same local registry, configured as its docker.io mirror, and
keeps its state under the harness's work directory so a cold scenario can start it afresh.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from .util import BenchError, Registry, log, rmtree, run, tail, timed

BUILD_TIMEOUT = 3600


class Tool:
    """A builder: how to build, export an OCI archive, push, and forget its cache."""

    key = ""
    label = ""

    def __init__(self, work: Path, mirror: Registry, push_reg: Registry, logfile: Path):
        self.work = work / self.key
        self.mirror, self.push_reg, self.logfile = mirror, push_reg, logfile

    def missing(self) -> str | None:
        """Why the tool cannot run here, or None."""
        return None

    def start(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)

    def stop(self) -> None:
        pass

    def env(self) -> dict:
        return {}

    def build_argv(self, dockerfile: Path, context: Path, tag: str, args: dict[str, str]) -> list[str]:
        raise NotImplementedError

    def build(self, dockerfile: Path, context: Path, tag: str, args: dict[str, str] | None = None) -> float:
        """Seconds of one build that stores `tag` in the tool's image store."""
        return timed(self.build_argv(dockerfile, context, tag, args or {}), env=self.env(), logfile=self.logfile,
                     timeout=BUILD_TIMEOUT)

    def export_oci(self, dockerfile: Path, context: Path, tag: str, dest: Path, compression: str) -> float:
        """Seconds to write the (already built, cached) image as an OCI archive with this compression."""
        raise BenchError(f"{self.label} cannot export an OCI archive")

    def push(self, tag: str, ref: str) -> float:
        """Seconds to push the built image `tag` to `ref`."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forgets every cached build result and image (a cold start)."""
        raise NotImplementedError


class Rbuild(Tool):
    key = "rbuild"
    label = "rbuild"

    def __init__(self, binary: Path, *a):
        super().__init__(*a)
        self.binary = binary
        self.root = self.work / "root"

    def missing(self) -> str | None:
        if not os.access(self.binary, os.X_OK):
            return f"no rbuild binary at {self.binary} (cargo build --release -p rbuild, or --rbuild PATH)"
        return None

    def start(self) -> None:
        super().start()
        self.config = self.work / "rbuild.toml"
        m = self.mirror.host
        self.config.write_text(f'[registry."docker.io"]\nmirrors = ["{m}"]\n\n[registry."{m}"]\nhttp = true\n\n'
                               f'[registry."{self.push_reg.host}"]\nhttp = true\n')
        (self.work / "docker-config").mkdir(exist_ok=True)

    def env(self) -> dict:
        return {"DOCKER_CONFIG": str(self.work / "docker-config")}

    def argv(self, *rest: str, root: Path | None = None) -> list[str]:
        return [str(self.binary), "--root", str(root or self.root), "--config", str(self.config), *rest]

    def build_argv(self, dockerfile, context, tag, args, output: str | None = None, root: Path | None = None):
        a = ["build", "--progress", "plain", "-f", str(dockerfile)] + (["-t", tag] if tag else [])
        for k, v in args.items():
            a += ["--build-arg", f"{k}={v}"]
        if output:
            a += ["-o", output]
        return self.argv(*a, str(context), root=root)

    def export_oci(self, dockerfile, context, tag, dest, compression):
        return timed(self.build_argv(dockerfile, context, tag, {}, f"type=oci,dest={dest},compression={compression}"),
                     env=self.env(), logfile=self.logfile, timeout=BUILD_TIMEOUT)

    def push(self, tag, ref):
        if ref != tag:
            run(self.argv("tag", tag, ref), env=self.env(), logfile=self.logfile)
        return timed(self.argv("push", ref), env=self.env(), logfile=self.logfile, timeout=BUILD_TIMEOUT)

    def reset(self):
        rmtree(self.root)

    def save_root(self, name: str) -> Path:
        """Keeps a copy of the state root (e.g. right after a warm-up build) to restore before each run."""
        dest = self.work / f"saved-{name}"
        rmtree(dest)
        run(["cp", "-a", "--reflink=auto", str(self.root), str(dest)])
        return dest

    def restore_root(self, saved: Path) -> None:
        rmtree(self.root)
        run(["cp", "-a", "--reflink=auto", str(saved), str(self.root)])


class Docker(Tool):
    """dockerd's embedded BuildKit, through a daemon of our own (own data root, socket, mirror flags)."""

    key = "docker"
    label = "BuildKit (docker)"

    _cli: str | None = None

    @classmethod
    def cli(cls) -> str:
        """The docker CLI of dockerd's own version (docker.io's /usr/bin/docker builds with the daemon's
        BuildKit; a newer CLI elsewhere on $PATH wants the buildx plugin instead)."""
        if cls._cli is None:
            def version(b):
                p = run([b, "--version"], check=False)
                return p.stdout.split(",")[0] if p.returncode == 0 else None
            d = shutil.which("dockerd")
            want = version(d) if d else None
            cands = [str(Path(d).parent / "docker")] if d else []
            cands += ["/usr/bin/docker", shutil.which("docker") or "docker"]
            cands = [c for c in cands if os.access(c, os.X_OK)]
            cls._cli = next((c for c in cands if want and version(c) == want), cands[0] if cands else "docker")
        return cls._cli

    def missing(self):
        for b in ("docker", "dockerd"):
            if not shutil.which(b):
                return f"{b} is not installed (bench/setup installs docker.io)"
        if os.geteuid() != 0:
            return "dockerd needs root"
        return None

    def env(self):
        return {"DOCKER_HOST": f"unix://{self.work}/docker.sock", "DOCKER_BUILDKIT": "1",
                "DOCKER_CONFIG": str(self.work / "docker-config")}

    def start(self):
        super().start()
        (self.work / "docker-config").mkdir(exist_ok=True)
        sock = self.work / "docker.sock"
        pidfile = self.work / "dockerd.pid"
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text().strip()), 15)
                time.sleep(2)
            except (ProcessLookupError, ValueError):
                pass
            pidfile.unlink(missing_ok=True)
        sock.unlink(missing_ok=True)
        logf = self.work / "dockerd.log"
        argv = ["dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none",
                "--data-root", str(self.work / "data"), "--exec-root", str(self.work / "exec"),
                "--pidfile", str(pidfile), "-H", f"unix://{sock}",
                "--registry-mirror", f"http://{self.mirror.host}", "--insecure-registry", self.mirror.host,
                "--insecure-registry", self.push_reg.host]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=open(logf, "a"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if run([self.cli(), "version", "--format", "{{.Server.Version}}"], env=self.env(), check=False).returncode == 0:
                log(f"dockerd up on {sock}")
                return
            time.sleep(0.3)
        raise BenchError(f"our dockerd did not answer on {sock}:\n{tail(logf.read_text(errors='replace'))}")

    def stop(self):
        p = getattr(self, "proc", None)
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.proc = None

    def build_argv(self, dockerfile, context, tag, args):
        a = [self.cli(), "build", "--network", "host", "--progress", "plain", "-f", str(dockerfile), "-t", tag]
        for k, v in args.items():
            a += ["--build-arg", f"{k}={v}"]
        return a + [str(context)]

    def push(self, tag, ref):
        if ref != tag:
            run([self.cli(), "tag", tag, ref], env=self.env(), logfile=self.logfile)
        return timed([self.cli(), "push", ref], env=self.env(), logfile=self.logfile, timeout=BUILD_TIMEOUT)

    def reset(self):
        run([self.cli(), "builder", "prune", "-af"], env=self.env(), logfile=self.logfile)
        ids = run([self.cli(), "images", "-aq"], env=self.env()).stdout.split()
        if ids:
            run([self.cli(), "rmi", "-f", *sorted(set(ids))], env=self.env(), logfile=self.logfile, check=False)


class Buildah(Tool):
    """buildah bud --isolation chroot --layers, with its own storage root and registries.conf."""

    key = "buildah"
    label = "buildah"

    def missing(self):
        if not shutil.which("buildah"):
            return "buildah is not installed (bench/setup installs it)"
        return None

    def start(self):
        super().start()
        auth = self.work / "auth.json"
        if not auth.exists():
            auth.write_text('{"auths": {}}\n')
        conf = self.work / "registries.conf"
        conf.write_text(
            'unqualified-search-registries = ["docker.io"]\nshort-name-mode = "permissive"\n\n'
            f'[[registry]]\nlocation = "docker.io"\n\n[[registry.mirror]]\nlocation = "{self.mirror.host}"\n'
            f'insecure = true\n\n[[registry]]\nlocation = "{self.push_reg.host}"\ninsecure = true\n')

    def env(self):
        return {"CONTAINERS_REGISTRIES_CONF": str(self.work / "registries.conf"),
                "REGISTRY_AUTH_FILE": str(self.work / "auth.json"), "BUILDAH_ISOLATION": "chroot"}

    def argv(self, *rest: str) -> list[str]:
        return ["buildah", "--root", str(self.work / "root"), "--runroot", str(self.work / "run"),
                "--storage-driver", "overlay", *rest]

    def build_argv(self, dockerfile, context, tag, args):
        a = ["bud", "--isolation", "chroot", "--layers", "--network", "host", "-f", str(dockerfile), "-t", tag]
        for k, v in args.items():
            a += ["--build-arg", f"{k}={v}"]
        return self.argv(*a, str(context))

    def export_oci(self, dockerfile, context, tag, dest, compression):
        dest.unlink(missing_ok=True)
        return timed(self.argv("push", "--compression-format", compression, tag, f"oci-archive:{dest}"),
                     env=self.env(), logfile=self.logfile, timeout=BUILD_TIMEOUT)

    def push(self, tag, ref):
        return timed(self.argv("push", "--tls-verify=false", tag, f"docker://{ref}"), env=self.env(),
                     logfile=self.logfile, timeout=BUILD_TIMEOUT)

    def reset(self):
        run(self.argv("rm", "-a"), env=self.env(), check=False, logfile=self.logfile)
        run(self.argv("rmi", "-af"), env=self.env(), check=False, logfile=self.logfile)
        rmtree(self.work / "root")
        rmtree(self.work / "run")

    def stop(self):
        # buildah leaves its overlay mounts' home mounted; unmount so the work directory can be removed.
        run(["bash", "-c", f"grep -o ' {self.work}/[^ ]*' /proc/self/mounts | sort -r | xargs -r -n1 umount -l"],
            check=False)
