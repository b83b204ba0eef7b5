"""The builders under test: rbuild, docker's embedded BuildKit (a dockerd of our own), buildah, and
BuildKit v0.24 itself (a buildkitd of our own, driven with buildctl).

Every tool pulls its base images from the same local registry, configured as its docker.io mirror, and
keeps its state under the harness's work directory so a cold scenario can start it afresh.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from .util import BenchError, Daemon, Registry, in_netns, log, rmtree, run, tail, timed

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

    def build_cache_only(self, dockerfile: Path, context: Path, args: dict[str, str] | None = None) -> float:
        """Seconds of a build that fills the build cache but stores no image (nothing compressed)."""
        raise BenchError(f"{self.label} has no build without an image")


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

    def build_cache_only(self, dockerfile, context, args=None):
        return timed(self.build_argv(dockerfile, context, "", args or {}), env=self.env(), logfile=self.logfile,
                     timeout=BUILD_TIMEOUT)

    def push(self, tag, ref):
        if ref != tag:
            run(self.argv("tag", tag, ref), env=self.env(), logfile=self.logfile)
        return timed(self.argv("push", ref), env=self.env(), logfile=self.logfile, timeout=BUILD_TIMEOUT)

    def reset(self):
        rmtree(self.root)

    def serve(self, root: Path, addr: str, registry_host: str, netns: str | None = None) -> Daemon:
        """`rbuild serve --addr ADDR` on `root`, pulling docker.io from `registry_host` (plain HTTP); over
        TCP without TLS (--insecure-tcp), for private network namespaces only."""
        root.parent.mkdir(parents=True, exist_ok=True)
        config = root.parent / f"{root.name}.toml"
        config.write_text(f'[registry."docker.io"]\nmirrors = ["{registry_host}"]\n\n'
                          f'[registry."{registry_host}"]\nhttp = true\n')
        argv = [str(self.binary), "--root", str(root), "--config", str(config), "serve", "--addr", addr]
        if addr.startswith("tcp://"):
            argv.append("--insecure-tcp")
        d = Daemon(f"rbuild serve {addr}", argv, root.parent / f"{root.name}.log", netns=netns, env=self.env())
        d.start(lambda: "serving" in d.log_text())
        return d

    def remote_argv(self, host: str, *rest: str) -> list[str]:
        """A client command against the daemon at `host` (no local root or config)."""
        return [str(self.binary), "--host", host, *rest]

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


BUILDKIT_BIN = Path("/opt/buildkit-v0.24/bin")


class Buildkit(Tool):
    """BuildKit itself: a buildkitd of our own (OCI worker, overlayfs, own root, the mirror as docker.io),
    driven with buildctl's dockerfile.v0 frontend. Images stay in buildkitd's store (--output type=image).

    By default the daemon listens on a unix socket in the work directory and starts with the first build;
    `serve` starts one elsewhere instead (e.g. on TCP in another network namespace)."""

    key = "buildkit"
    label = "BuildKit v0.24 (buildctl)"

    def __init__(self, bindir: Path, *a):
        super().__init__(*a)
        self.bindir = bindir
        self.daemon: Daemon | None = None
        self.addr = f"unix://{self.work}/buildkitd.sock"
        self.client_netns: str | None = None
        # What each tag was built from: buildctl pushes only as the output of a build, so push() builds again.
        self.built: dict[str, tuple[Path, Path, dict[str, str]]] = {}

    def binary(self, name: str) -> str:
        p = self.bindir / name
        return str(p) if os.access(p, os.X_OK) else (shutil.which(name) or str(p))

    def missing(self):
        for b in ("buildkitd", "buildctl"):
            if not os.access(self.binary(b), os.X_OK):
                return f"no {b} in {self.bindir} or on $PATH (BuildKit v0.24: /opt/buildkit-v0.24/bin, or --buildkit DIR)"
        if not shutil.which("runc"):
            return "runc is not installed (buildkitd's OCI worker runs steps with it)"
        if os.geteuid() != 0:
            return "buildkitd's OCI worker needs root here"
        return None

    def version(self) -> str:
        p = run([self.binary("buildkitd"), "--version"], check=False)
        return p.stdout.strip().splitlines()[0] if p.returncode == 0 and p.stdout.strip() else "not installed"

    def buildctl(self, *rest: str) -> list[str]:
        return in_netns(self.client_netns, [self.binary("buildctl"), "--addr", self.addr, *rest])

    def serve(self, root: Path, addr: str, registry_host: str, netns: str | None = None,
              client_netns: str | None = None, http_hosts: tuple[str, ...] = ()) -> Daemon:
        """buildkitd on `root` listening on `addr` (in `netns`), pulling docker.io from `registry_host`; later
        buildctl commands run in `client_netns`. Without TLS on TCP: for private network namespaces only.
        `http_hosts`: more registries spoken to over plain HTTP (e.g. a cache's)."""
        self.stop()
        root.mkdir(parents=True, exist_ok=True)
        config = root.parent / f"{root.name}.toml"
        # The shape of /opt/buildkit-v0.24/buildkitd.toml, with our root, address and mirror.
        config.write_text(
            f'root = "{root}"\ninsecure-entitlements = ["network.host"]\n\n[grpc]\n  address = ["{addr}"]\n\n'
            '[worker.oci]\n  enabled = true\n  snapshotter = "overlayfs"\n\n[worker.containerd]\n  enabled = false\n\n'
            f'[registry."docker.io"]\n  mirrors = ["{registry_host}"]\n'
            + "".join(f'\n[registry."{h}"]\n  http = true\n  insecure = true\n'
                      for h in dict.fromkeys((registry_host, *http_hosts))))
        argv = [self.binary("buildkitd"), "--config", str(config), "--root", str(root), "--addr", addr]
        self.addr, self.client_netns = addr, client_netns
        d = Daemon(f"buildkitd {addr}", argv, root.parent / f"{root.name}.log", netns=netns)
        d.start(lambda: run(self.buildctl("debug", "workers"), check=False, timeout=30).returncode == 0)
        self.daemon = d
        return d

    def ensure(self) -> None:
        """The default daemon (unix socket in the work directory, the shared mirror; the push registry over
        plain HTTP), started once."""
        if self.daemon is None:
            self.serve(self.work / "root", f"unix://{self.work}/buildkitd.sock", self.mirror.host,
                       http_hosts=(self.push_reg.host,))

    def daemon_pid(self) -> int:
        """The pid of the default daemon (started when needed)."""
        self.ensure()
        assert self.daemon is not None and self.daemon.proc is not None
        return self.daemon.proc.pid

    def stop(self):
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None
        self.addr, self.client_netns = f"unix://{self.work}/buildkitd.sock", None

    def build_argv(self, dockerfile, context, tag, args, output: str | None = None):
        """`output` None: the image `tag` in buildkitd's store; "": no output at all (the build cache only)."""
        a = ["build", "--progress", "plain", "--frontend", "dockerfile.v0", "--local", f"context={context}",
             "--local", f"dockerfile={dockerfile.parent}", "--opt", f"filename={dockerfile.name}"]
        for k, v in args.items():
            a += ["--opt", f"build-arg:{k}={v}"]
        if output is None:
            output = f"type=image,name={tag}"
        if output:
            a += ["--output", output]
        return self.buildctl(*a)

    def build(self, dockerfile, context, tag, args=None):
        self.ensure()
        self.built[tag] = (dockerfile, context, dict(args or {}))
        return super().build(dockerfile, context, tag, args)

    def build_cache_only(self, dockerfile, context, args=None):
        self.ensure()
        return timed(self.build_argv(dockerfile, context, "", args or {}, ""), logfile=self.logfile,
                     timeout=BUILD_TIMEOUT)

    def export_oci(self, dockerfile, context, tag, dest, compression):
        self.ensure()
        out = f"type=oci,dest={dest},compression={compression},force-compression=true"
        return timed(self.build_argv(dockerfile, context, tag, {}, out), logfile=self.logfile, timeout=BUILD_TIMEOUT)

    def push(self, tag, ref):
        """buildctl pushes only as the output of a build: the (cached) build of `tag` again, with
        `--output type=image,name=REF,push=true`; the time includes that cached solve."""
        if tag not in self.built:
            raise BenchError(f"buildctl can push {tag} only by building it again, and it was not built here")
        self.ensure()
        df, ctx, args = self.built[tag]
        out = f"type=image,name={ref},push=true,registry.insecure=true"
        return timed(self.build_argv(df, ctx, tag, args, out), logfile=self.logfile, timeout=BUILD_TIMEOUT)

    def reset(self):
        self.stop()
        rmtree(self.work / "root")
        self.built.clear()

    def save_root(self, name: str) -> Path:
        """Keeps a copy of the daemon's root (stopped for the copy; started again when next needed)."""
        self.stop()
        dest = self.work / f"saved-{name}"
        rmtree(dest)
        run(["cp", "-a", "--reflink=auto", str(self.work / "root"), str(dest)], timeout=3600)
        return dest

    def restore_root(self, saved: Path) -> None:
        self.stop()
        rmtree(self.work / "root")
        run(["cp", "-a", "--reflink=auto", str(saved), str(self.work / "root")], timeout=3600)
