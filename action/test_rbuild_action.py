"""Tests of the action's script without a build: input parsing, the rbuild command, and installation from a
local HTTP server that serves a release as GitHub does (`download/<tag>/...`, `latest/download/...`).

Run: python3 -m unittest discover -s action -p 'test_*.py' (cli/tests/action_e2e.rs runs it in the suite).
"""

import hashlib
import http.server
import io
import os
import sys
import tarfile
import tempfile
import subprocess
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import rbuild_action as action  # noqa: E402


def inputs(**kw):
    """An environment as the runner gives it: INPUT_BUILD-ARGS for build_args."""
    return {"INPUT_" + k.replace("_", "-").upper(): v for k, v in kw.items()}


class InputLists(unittest.TestCase):
    def test_lines_commas_quotes_and_comments(self):
        self.assertEqual(action.parse_list("a,b\nc\n\n# note\n d ", False), ["a", "b", "c", "d"])
        self.assertEqual(action.parse_list('"x=1,2",y=3', False), ["x=1,2", "y=3"])
        self.assertEqual(
            action.parse_list("type=registry,ref=r/app:cache,mode=max\ntype=gha", True),
            ["type=registry,ref=r/app:cache,mode=max", "type=gha"],
        )
        self.assertEqual(action.parse_list('"MSG=hello, world"', True), ["MSG=hello, world"])

    def test_inputs_as_the_runner_names_them(self):
        env = {"INPUT_BUILD-ARGS": "A=1", "INPUT_NO_CACHE": "TRUE"}
        self.assertEqual(action.get_input(env, "build-args"), "A=1")
        self.assertTrue(action.get_bool(env, "no-cache"))
        self.assertFalse(action.get_bool(env, "push"))


class Command(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.warnings = []

    def tearDown(self):
        self.tmp.cleanup()

    def build(self, env):
        return action.build_command(env, self.tmp.name, self.warnings.append)

    def test_inputs_become_build_push_action_flags(self):
        env = inputs(
            context="ctx",
            file="ctx/prod.Dockerfile",
            tags="r/app:1,r/app:latest",
            labels="a=b",
            build_args="V=1\nMSG=hello, world",
            build_contexts="lib=../lib",
            target="runtime",
            platforms="linux/amd64\nlinux/arm64",
            push="true",
            cache_from="type=gha,scope=main",
            cache_to="type=gha,scope=main,mode=max",
            no_cache_filters="build,test",
            pull="true",
            secrets='token=s3cr=t\n"npmrc=a,b"',
            secret_envs="gh=GITHUB_TOKEN",
            secret_files="key=/etc/key",
            ssh="default",
            network="host",
            add_hosts="db:10.0.0.2",
            allow="network.host",
        )
        args, iid, meta, secrets = self.build(env)
        self.assertEqual(args[:3], ["build", "--progress", "plain"])
        self.assertEqual(args[-1], "ctx")
        pairs = list(zip(args, args[1:]))
        for pair in [
            ("--file", "ctx/prod.Dockerfile"),
            ("--build-arg", "V=1"),
            ("--build-arg", "MSG=hello, world"),
            ("--build-context", "lib=../lib"),
            ("--label", "a=b"),
            ("--tag", "r/app:1"),
            ("--tag", "r/app:latest"),
            ("--target", "runtime"),
            ("--platform", "linux/amd64,linux/arm64"),
            ("--cache-from", "type=gha,scope=main"),
            ("--cache-to", "type=gha,scope=main,mode=max"),
            ("--no-cache-filter", "build"),
            ("--no-cache-filter", "test"),
            ("--network", "host"),
            ("--add-host", "db:10.0.0.2"),
            ("--allow", "network.host"),
            ("--secret", "id=gh,env=GITHUB_TOKEN"),
            ("--secret", "id=key,src=/etc/key"),
            ("--ssh", "default"),
            ("--iidfile", iid),
            ("--metadata-file", meta),
        ]:
            self.assertIn(pair, pairs)
        self.assertIn("--push", args)
        self.assertIn("--pull", args)
        self.assertNotIn("--load", args)
        self.assertEqual(len(secrets), 2)
        with open(secrets[0]) as f:
            self.assertEqual(f.read(), "s3cr=t")
        with open(secrets[1]) as f:
            self.assertEqual(f.read(), "a,b")
        self.assertIn(("--secret", "id=token,src=%s" % secrets[0]), pairs)
        self.assertIn(("--secret", "id=npmrc,src=%s" % secrets[1]), pairs)
        self.assertEqual(self.warnings, [])

    def test_run_settings_become_flags(self):
        env = inputs(ulimit="nofile=1024:2048\nnproc=512", shm_size="128m", cgroup_parent="ci-builds")
        args, _, _, _ = self.build(env)
        pairs = list(zip(args, args[1:]))
        for pair in [
            ("--ulimit", "nofile=1024:2048"),
            ("--ulimit", "nproc=512"),
            ("--shm-size", "128m"),
            ("--cgroup-parent", "ci-builds"),
        ]:
            self.assertIn(pair, pairs)
        self.assertEqual(self.warnings, [])

    def test_attestation_inputs_become_flags(self):
        env = inputs(
            provenance="mode=max",
            sbom="true",
            attests="type=provenance,mode=min\ntype=sbom,generator=x\ntype=custom,a=b",
            annotations="index:org.opencontainers.image.description=an app, with commas\nmanifest:k=v",
            builder="ci",
        )
        args, _, _, _ = self.build(env)
        pairs = list(zip(args, args[1:]))
        for pair in [
            ("--provenance", "mode=max"),
            ("--sbom", "true"),
            ("--attest", "type=custom,a=b"),
            ("--annotation", "index:org.opencontainers.image.description=an app, with commas"),
            ("--annotation", "manifest:k=v"),
            ("--builder", "ci"),
        ]:
            self.assertIn(pair, pairs)
        # The provenance and sbom inputs win over attests of their type, as in build-push-action.
        self.assertNotIn(("--attest", "type=provenance,mode=min"), pairs)
        self.assertNotIn(("--attest", "type=sbom,generator=x"), pairs)
        self.assertEqual(self.warnings, [])
        args, _, _, _ = self.build(inputs(attests="type=provenance,mode=min"))
        self.assertIn(("--attest", "type=provenance,mode=min"), list(zip(args, args[1:])))
        self.assertNotIn("--provenance", args, "no default provenance: rbuild attaches none unless asked")

    def test_unsupported_inputs_warn_and_bad_ones_fail(self):
        self.build(inputs(call="check", github_token="t"))
        self.assertEqual(len(self.warnings), 2)
        self.assertIn('input "call" is not supported by rbuild', self.warnings[0])
        self.assertIn('input "github-token" is not supported by rbuild', self.warnings[1])
        with self.assertRaisesRegex(action.ActionError, "is not KEY=VALUE"):
            self.build(inputs(secrets="novalue"))

    def test_file_outputs_get_no_iidfile(self):
        args, iid, _, _ = self.build(inputs(outputs="type=local,dest=out"))
        self.assertIsNone(iid)
        self.assertNotIn("--iidfile", args)
        self.assertEqual(args[-1], ".")

    def test_outputs_file_uses_the_heredoc_form(self):
        out = os.path.join(self.tmp.name, "out")
        action.write_outputs(out, {"digest": "sha256:x", "metadata": '{\n  "a": 1\n}'})
        with open(out) as f:
            lines = f.read().splitlines()
        self.assertTrue(lines[0].startswith("digest<<ghadelimiter_"))
        self.assertEqual(lines[1], "sha256:x")
        self.assertEqual(lines[2], lines[0].split("<<")[1])
        self.assertEqual(lines[4:7], ["{", '  "a": 1', "}"])


class FakeReleases:
    """A local HTTP server with a release laid out as GitHub serves it; stops when closed."""

    def __init__(self, root):
        class Quiet(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass

        self.requests = []
        outer = self

        class Logging(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **k):
                super().__init__(*a, directory=root, **k)

            def log_message(self, fmt, *args):
                outer.requests.append(self.path)

        self.server = Quiet(("127.0.0.1", 0), Logging)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = "http://127.0.0.1:%d/releases" % self.server.server_address[1]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def release_archive(tag, arch, script):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        name = "rbuild-%s-linux-%s" % (tag, arch)
        for path, data, mode in [("%s/rbuild" % name, script, 0o755), ("%s/README.md" % name, b"rbuild\n", 0o644)]:
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Install(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = os.path.join(self.tmp.name, "web")
        self.arch = action.machine_arch()
        self.tag = "v1.2.3"
        self.archive = release_archive(self.tag, self.arch, b"#!/bin/sh\necho rbuild 1.2.3\n")
        self.name = "rbuild-%s-linux-%s.tar.gz" % (self.tag, self.arch)
        sums = "%s  %s\n%s  rbuild-%s-linux-other.tar.gz\n" % (
            hashlib.sha256(self.archive).hexdigest(),
            self.name,
            "0" * 64,
            self.tag,
        )
        for d in ("releases/download/%s" % self.tag, "releases/latest/download"):
            os.makedirs(os.path.join(self.root, d))
            with open(os.path.join(self.root, d, "checksums.txt"), "w") as f:
                f.write(sums)
        with open(os.path.join(self.root, "releases/download", self.tag, self.name), "wb") as f:
            f.write(self.archive)
        os.makedirs(os.path.join(self.root, "releases/download/v2.0.0"))
        with open(os.path.join(self.root, "releases/download/v2.0.0/checksums.txt"), "w") as f:
            f.write("%s  rbuild-v2.0.0-linux-other.tar.gz\n" % ("1" * 64))
        self.server = FakeReleases(self.root)
        self.env = {
            "RBUILD_RELEASES_URL": self.server.url,
            "RUNNER_TOOL_CACHE": os.path.join(self.tmp.name, "toolcache"),
            "RUNNER_TEMP": self.tmp.name,
        }
        self.log = []

    def tearDown(self):
        self.server.close()
        self.tmp.cleanup()

    def test_a_pinned_release_is_checked_cached_and_reused_offline(self):
        binary = action.install(self.env, "1.2.3", self.log.append)
        self.assertEqual(binary, os.path.join(self.env["RUNNER_TOOL_CACHE"], "rbuild", "1.2.3", self.arch, "rbuild"))
        self.assertTrue(os.path.isfile(os.path.dirname(binary) + ".complete"))
        self.assertEqual(subprocess.run([binary], capture_output=True, text=True).stdout, "rbuild 1.2.3\n")
        self.assertIn("/releases/download/v1.2.3/%s" % self.name, self.server.requests)
        self.server.close()
        self.server = FakeReleases(self.root)  # a new port: the old URL no longer answers
        self.assertEqual(action.install(self.env, "v1.2.3", self.log.append), binary)
        self.assertEqual(self.server.requests, [], "the tool cache answered")

    def test_latest_is_resolved_from_its_checksums_file(self):
        binary = action.install(self.env, "latest", self.log.append)
        self.assertIn(os.path.join("rbuild", "1.2.3", self.arch), binary)
        self.assertIn("/releases/latest/download/checksums.txt", self.server.requests)

    def test_a_corrupted_archive_is_refused(self):
        with open(os.path.join(self.root, "releases/download", self.tag, self.name), "wb") as f:
            f.write(self.archive[:-1] + b"x")
        with self.assertRaisesRegex(action.ActionError, "does not match the release's checksums file"):
            action.install(self.env, "v1.2.3", self.log.append)
        self.assertFalse(os.path.exists(os.path.join(self.env["RUNNER_TOOL_CACHE"], "rbuild", "1.2.3")))

    def test_a_release_without_this_machine_or_at_all_says_so(self):
        with self.assertRaisesRegex(action.ActionError, "lists no single rbuild archive"):
            action.install(self.env, "v2.0.0", self.log.append)
        with self.assertRaisesRegex(action.ActionError, "cannot download .*v9.9.9/checksums.txt"):
            action.install(self.env, "v9.9.9", self.log.append)

    def test_unsafe_archives_are_refused(self):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tarfile.TarInfo("../escape")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
        with self.assertRaisesRegex(action.ActionError, "unsafe path"):
            action.safe_extract(buf.getvalue(), os.path.join(self.tmp.name, "x"))


class Main(unittest.TestCase):
    def test_a_missing_rbuild_input_binary_is_an_error_annotation(self):
        with tempfile.TemporaryDirectory() as t:
            env = {"INPUT_RBUILD": os.path.join(t, "nope"), "RUNNER_TEMP": t, "PATH": os.environ.get("PATH", "")}
            out = io.StringIO()
            real = sys.stdout
            sys.stdout = out
            try:
                status = action.main(env)
            finally:
                sys.stdout = real
            self.assertEqual(status, 1)
            self.assertIn("::error title=rbuild action::rbuild: %s is not an executable" % env["INPUT_RBUILD"], out.getvalue())


if __name__ == "__main__":
    unittest.main()
