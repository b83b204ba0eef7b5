#!/usr/bin/env python3
"""The rbuild GitHub Action: docker/build-push-action's inputs, run as `rbuild build`.

The runner passes inputs as INPUT_<NAME> environment variables (upper case, dashes kept:
INPUT_BUILD-ARGS); action.yml maps every input so. Outputs go to $GITHUB_OUTPUT (`imageid`, `digest`,
`metadata` with buildx's metadata keys); rbuild itself annotates Dockerfile errors and writes the job
summary (it sees GITHUB_ACTIONS=true).

rbuild comes from the `rbuild` input (a binary already on the runner), else from the project's GitHub
release named by `version`: the archive for this machine, checked against the release's checksums file,
kept in the runner's tool cache. Builds run as root (through sudo when the job is not root: GitHub's
Ubuntu runners allow it without a password).

Only the standard library: the runner's python3 is all it needs.
"""

import csv
import hashlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import uuid

# Where releases are published when the action's own repository is unknown.
DEFAULT_REPOSITORY = "rbuild/rbuild"

# build-push-action inputs that rbuild takes, with how their lists are split (True: one item per line,
# commas kept, as build-push-action's `ignoreComma`).
LIST_INPUTS = {
    "add-hosts": False,
    "allow": False,
    "annotations": True,
    "attests": True,
    "build-args": True,
    "build-contexts": True,
    "cache-from": True,
    "cache-to": True,
    "labels": True,
    "no-cache-filters": False,
    "outputs": True,
    "platforms": False,
    "secret-envs": False,
    "secret-files": True,
    "secrets": True,
    "ssh": False,
    "tags": False,
    "ulimit": True,
}

# build-push-action inputs rbuild does not support (yet): a warning, never silence.
UNSUPPORTED = {
    "call": "only `build` is supported",
    "github-token": "Git contexts are not supported: check out the repository and build its directory",
}


class ActionError(Exception):
    """A problem with the inputs or the installation, reported as an ::error and exit status 1."""


def escape_data(s):
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(s):
    return escape_data(s).replace(":", "%3A").replace(",", "%2C")


def command(cmd, message, title="rbuild action"):
    return "::%s title=%s::%s" % (cmd, escape_property(title), escape_data(message))


def get_input(env, name):
    """An input as the runner passes it (INPUT_BUILD-ARGS), or with underscores (INPUT_BUILD_ARGS)."""
    key = "INPUT_" + name.replace(" ", "_").upper()
    value = env.get(key)
    if value is None:
        value = env.get(key.replace("-", "_"), "")
    return value.strip()


def get_bool(env, name):
    return get_input(env, name).lower() == "true"


def parse_list(text, ignore_comma):
    """build-push-action's getInputList: lines, each a CSV record (quotes allowed, `#` comments);
    with ignore_comma a line is one item whatever its commas."""
    items = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = next(csv.reader([line.strip()]))
        if ignore_comma:
            items.append(",".join(fields))
        else:
            items.extend(fields)
    return [i.strip() for i in items if i.strip()]


def get_list(env, name):
    return parse_list(get_input(env, name), LIST_INPUTS[name])


def split_pair(item, what):
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ActionError("%s: %r is not KEY=VALUE" % (what, item))
    return key, value


def build_command(env, temp, warn):
    """The `rbuild build` arguments for the inputs, the files it writes, and the secret files to remove.

    Returns (args, iidfile or None, metadata file, secret files)."""
    for name, why in sorted(UNSUPPORTED.items()):
        if get_input(env, name):
            warn('input "%s" is not supported by rbuild: %s; it is ignored' % (name, why))
    args = ["build", "--progress", "plain"]
    path = get_input(env, "file")
    if path:
        args += ["--file", path]
    for a in get_list(env, "build-args"):
        args += ["--build-arg", a]
    for c in get_list(env, "build-contexts"):
        args += ["--build-context", c]
    for label in get_list(env, "labels"):
        args += ["--label", label]
    for tag in get_list(env, "tags"):
        args += ["--tag", tag]
    target = get_input(env, "target")
    if target:
        args += ["--target", target]
    platforms = get_list(env, "platforms")
    if platforms:
        # Several platforms build one image index, as build-push-action does.
        args += ["--platform", ",".join(platforms)]
    outputs = get_list(env, "outputs")
    for o in outputs:
        args += ["--output", o]
    for c in get_list(env, "cache-from"):
        args += ["--cache-from", c]
    for c in get_list(env, "cache-to"):
        args += ["--cache-to", c]
    if get_bool(env, "no-cache"):
        args.append("--no-cache")
    for f in get_list(env, "no-cache-filters"):
        args += ["--no-cache-filter", f]
    if get_bool(env, "pull"):
        args.append("--pull")
    if get_bool(env, "push"):
        args.append("--push")
    if get_bool(env, "load"):
        args.append("--load")
    network = get_input(env, "network")
    if network:
        args += ["--network", network]
    for h in get_list(env, "add-hosts"):
        args += ["--add-host", h]
    for a in get_list(env, "allow"):
        args += ["--allow", a]
    # Attestations as build-push-action passes them: provenance and sbom win over attests of their type.
    # Unlike build-push-action, no provenance is added when none is asked for (rbuild's default).
    for name in ("builder", "provenance", "sbom"):
        value = get_input(env, name)
        if value:
            args += ["--" + name, value]
    for a in get_list(env, "attests"):
        kind = next((f[5:] for f in a.split(",") if f.strip().startswith("type=")), "")
        if kind in ("provenance", "sbom") and get_input(env, kind):
            continue
        args += ["--attest", a]
    for a in get_list(env, "annotations"):
        args += ["--annotation", a]
    # RUN settings (build-push-action: ulimit one per line; shm-size and cgroup-parent as given).
    for u in get_list(env, "ulimit"):
        args += ["--ulimit", u]
    for name in ("shm-size", "cgroup-parent"):
        value = get_input(env, name)
        if value:
            args += ["--" + name, value]
    secret_files = []
    for s in get_list(env, "secrets"):
        key, value = split_pair(s, "secrets")
        fd, p = tempfile.mkstemp(prefix="rbuild-secret-", dir=temp)
        with os.fdopen(fd, "w") as f:
            f.write(value)
        secret_files.append(p)
        args += ["--secret", "id=%s,src=%s" % (key, p)]
    for s in get_list(env, "secret-envs"):
        key, var = split_pair(s, "secret-envs")
        args += ["--secret", "id=%s,env=%s" % (key, var)]
    for s in get_list(env, "secret-files"):
        key, p = split_pair(s, "secret-files")
        args += ["--secret", "id=%s,src=%s" % (key, p)]
    for s in get_list(env, "ssh"):
        args += ["--ssh", s]
    # As build-push-action: no image ID where the only outputs are files.
    files_only = outputs and all(re.search(r"(^|,)type=(local|tar)(,|$)", o) for o in outputs)
    iidfile = None if files_only else os.path.join(temp, "rbuild-iidfile-%s" % uuid.uuid4().hex)
    if iidfile:
        args += ["--iidfile", iidfile]
    metadata = os.path.join(temp, "rbuild-metadata-%s.json" % uuid.uuid4().hex)
    args += ["--metadata-file", metadata]
    args.append(get_input(env, "context") or ".")
    return args, iidfile, metadata, secret_files


def machine_arch():
    m = platform.machine().lower()
    if m in ("x86_64", "amd64"):
        return "x86_64"
    if m in ("aarch64", "arm64"):
        return "aarch64"
    raise ActionError("no rbuild release for this machine (%s): pass a binary with the `rbuild` input" % m)


def fetch(url):
    req = urllib.request.Request(url, headers={"User-Agent": "rbuild-action"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.read()
    except (urllib.error.URLError, OSError) as e:
        raise ActionError("cannot download %s: %s" % (url, e)) from e


def parse_checksums(text):
    """sha256sum lines: `<hex>  <name>` (or `<hex> *<name>`)."""
    sums = {}
    for line in text.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and re.fullmatch(r"[0-9a-f]{64}", parts[0]):
            sums[parts[1].strip().lstrip("*")] = parts[0]
    return sums


def releases_url(env):
    if env.get("RBUILD_RELEASES_URL"):
        return env["RBUILD_RELEASES_URL"].rstrip("/")
    server = env.get("GITHUB_SERVER_URL") or "https://github.com"
    repo = env.get("GITHUB_ACTION_REPOSITORY") or DEFAULT_REPOSITORY
    return "%s/%s/releases" % (server.rstrip("/"), repo)


def safe_extract(archive, dest):
    """Extracts regular files and directories only, none outside `dest`."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for m in tar.getmembers():
            name = os.path.normpath(m.name)
            if name.startswith("..") or os.path.isabs(name):
                raise ActionError("the release archive holds an unsafe path: %s" % m.name)
            if not (m.isfile() or m.isdir()):
                continue
            target = os.path.join(dest, name)
            if m.isdir():
                os.makedirs(target, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with tar.extractfile(m) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            os.chmod(target, 0o755 if m.mode & 0o111 else 0o644)


def install(env, version, log):
    """rbuild of `version` (`latest` or a tag) for this machine: from the tool cache, else downloaded from
    the release, checked against its checksums file and put in the tool cache. Returns the binary's path."""
    arch = machine_arch()
    base = releases_url(env)
    cache_root = env.get("RUNNER_TOOL_CACHE") or os.path.join(env.get("RUNNER_TEMP") or tempfile.gettempdir(), "tool-cache")
    version = version or "latest"

    def cached(v):
        d = os.path.join(cache_root, "rbuild", v.lstrip("v"), arch)
        return d, os.path.join(d, "rbuild"), d + ".complete"

    if version == "latest":
        sums_url = "%s/latest/download/checksums.txt" % base
    else:
        tag = version if version.startswith("v") else "v" + version
        d, binary, marker = cached(tag)
        if os.path.isfile(marker) and os.access(binary, os.X_OK):
            log("rbuild %s found in the tool cache: %s" % (tag, binary))
            return binary
        sums_url = "%s/download/%s/checksums.txt" % (base, tag)
    sums = parse_checksums(fetch(sums_url).decode("utf-8", "replace"))
    pattern = re.compile(r"^rbuild-(v.+)-linux-%s\.tar\.gz$" % re.escape(arch))
    assets = [(n, pattern.match(n).group(1)) for n in sums if pattern.match(n)]
    if version != "latest":
        assets = [(n, t) for n, t in assets if t == tag]
    if len(assets) != 1:
        raise ActionError(
            "%s lists no single rbuild archive for linux-%s (found: %s)" % (sums_url, arch, ", ".join(sorted(sums)) or "nothing")
        )
    name, tag = assets[0]
    d, binary, marker = cached(tag)
    if os.path.isfile(marker) and os.access(binary, os.X_OK):
        log("rbuild %s found in the tool cache: %s" % (tag, binary))
        return binary
    url = "%s/download/%s/%s" % (base, tag, name)
    log("downloading %s" % url)
    archive = fetch(url)
    got = hashlib.sha256(archive).hexdigest()
    if got != sums[name]:
        raise ActionError("%s: sha256 %s does not match the release's checksums file (%s)" % (url, got, sums[name]))
    staging = tempfile.mkdtemp(prefix="rbuild-install-", dir=env.get("RUNNER_TEMP") or None)
    try:
        safe_extract(archive, staging)
        found = [os.path.join(r, f) for r, _, fs in os.walk(staging) for f in fs if f == "rbuild"]
        if len(found) != 1:
            raise ActionError("%s holds no single `rbuild` binary" % name)
        if os.path.isdir(d):
            shutil.rmtree(d)
        os.makedirs(os.path.dirname(d), exist_ok=True)
        shutil.move(os.path.dirname(found[0]), d)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    os.chmod(binary, 0o755)
    with open(marker, "w") as f:
        f.write(got + "\n")
    log("rbuild %s installed in %s" % (tag, d))
    return binary


def write_outputs(path, outputs):
    """$GITHUB_OUTPUT lines; values in the heredoc form, which holds any text."""
    with open(path, "a") as f:
        for k, v in outputs.items():
            delim = "ghadelimiter_%s" % uuid.uuid4()
            f.write("%s<<%s\n%s\n%s\n" % (k, delim, v, delim))


def as_root(cmd, env):
    """The command run as root: directly when root, else through passwordless sudo, keeping the
    environment (the runner's GITHUB_* and ACTIONS_* variables, DOCKER_CONFIG for registry logins)."""
    if os.geteuid() == 0:
        return cmd
    if not shutil.which("sudo"):
        raise ActionError("rbuild builds as root: run the job as root, or on a runner with passwordless sudo")
    env.setdefault("DOCKER_CONFIG", os.path.join(os.path.expanduser("~"), ".docker"))
    return ["sudo", "--preserve-env", "env", "PATH=%s" % env.get("PATH", "")] + cmd


def main(env=None):
    env = dict(os.environ if env is None else env)

    def log(m):
        print(m, flush=True)

    def warn(m):
        print(command("warning", m), flush=True)

    temp = env.get("RUNNER_TEMP") or tempfile.gettempdir()
    secret_files = []
    try:
        binary = get_input(env, "rbuild")
        if binary:
            resolved = binary if os.sep in binary else shutil.which(binary, path=env.get("PATH"))
            if not resolved or not os.access(resolved, os.X_OK):
                raise ActionError("rbuild: %s is not an executable" % binary)
            binary = resolved
        else:
            binary = install(env, get_input(env, "version"), log)
            if env.get("GITHUB_PATH"):
                with open(env["GITHUB_PATH"], "a") as f:
                    f.write(os.path.dirname(binary) + "\n")
        args, iidfile, metadata_file, secret_files = build_command(env, temp, warn)
        cmd = as_root([binary] + args, env)
        log("$ " + " ".join(cmd))
        status = subprocess.run(cmd, env=env).returncode
        if status != 0:
            return status
        outputs = {}
        if iidfile and os.path.isfile(iidfile):
            with open(iidfile) as f:
                outputs["imageid"] = f.read().strip()
        metadata = {}
        if os.path.isfile(metadata_file):
            with open(metadata_file) as f:
                metadata = json.load(f)
        outputs["digest"] = metadata.get("containerimage.digest", "")
        outputs["metadata"] = json.dumps(metadata, indent=2, sort_keys=True)
        if env.get("GITHUB_OUTPUT"):
            write_outputs(env["GITHUB_OUTPUT"], outputs)
        for f in (iidfile, metadata_file):
            if f and os.path.exists(f):
                os.remove(f)
        return 0
    except ActionError as e:
        print(command("error", str(e)), flush=True)
        return 1
    finally:
        for p in secret_files:
            try:
                os.remove(p)
            except OSError:
                pass


if __name__ == "__main__":
    sys.exit(main())
