//! End-to-end builds: real Dockerfiles from testdata/build, built by the rbuild binary against base images
//! served by a local docker-registry configured as the docker.io mirror (seeded by scripts/seed-images),
//! checked with independent tools (skopeo, umoci) and by running the result in the sandbox.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::TestRegistry;

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/build").join(name)
}

/// Copies a testdata context into a temp dir, so tests can change files.
fn context(name: &str) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let st =
        Command::new("cp").arg("-a").arg(format!("{}/.", testdata(name).display())).arg(t.path()).status().unwrap();
    assert!(st.success());
    t
}

struct Env {
    reg: TestRegistry,
    root: tempfile::TempDir,
}

impl Env {
    fn new() -> Option<Env> {
        if !rustix_is_root() {
            support::skip("end-to-end builds need root (overlay mounts and namespaces)");
            return None;
        }
        let reg = TestRegistry::seeded()?;
        Some(Env { reg, root: tempfile::tempdir().unwrap() })
    }

    fn rbuild(&self, args: &[&str], cwd: Option<&Path>) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rbuild"));
        c.arg("--root").arg(self.root.path()).arg("--config").arg(self.reg.config_path());
        c.args(args);
        c.env_remove("SOURCE_DATE_EPOCH");
        if let Some(d) = cwd {
            c.current_dir(d);
        }
        let out = c.output().unwrap();
        eprintln!(
            "$ rbuild {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn build_ok(&self, args: &[&str]) -> Steps {
        let mut full = vec!["build", "--progress", "plain"];
        full.extend_from_slice(args);
        let out = self.rbuild(&full, None);
        assert!(out.status.success(), "build failed: {}", String::from_utf8_lossy(&out.stderr));
        Steps::parse(&String::from_utf8_lossy(&out.stderr))
    }
}

fn rustix_is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// What a plain-progress build did: which steps ran and which came from the cache.
#[derive(Debug, Default)]
struct Steps {
    executed: BTreeSet<String>,
    cached: BTreeSet<String>,
}

impl Steps {
    fn parse(plain: &str) -> Steps {
        let mut names = std::collections::BTreeMap::new();
        let mut s = Steps::default();
        for line in plain.lines() {
            let Some(rest) = line.strip_prefix('#') else { continue };
            let Some((n, what)) = rest.split_once(' ') else { continue };
            if what == "CACHED" {
                if let Some(name) = names.get(n) {
                    s.cached.insert(String::clone(name));
                }
            } else if what.starts_with("DONE") {
                if let Some(name) = names.get(n) {
                    if !s.cached.contains(name) {
                        s.executed.insert(String::clone(name));
                    }
                }
            } else if what.starts_with('[') && !names.contains_key(n) {
                names.insert(n.to_string(), what.to_string());
            }
        }
        s
    }

    fn ran(&self, needle: &str) -> bool {
        self.executed.iter().any(|n| n.contains(needle))
    }

    fn was_cached(&self, needle: &str) -> bool {
        self.cached.iter().any(|n| n.contains(needle))
    }

    /// Steps that ran, apart from loading the context (which is checked every build).
    fn ran_steps(&self) -> Vec<&String> {
        self.executed.iter().filter(|n| !n.contains("[internal]") && !n.contains("load build context")).collect()
    }
}

fn tool(name: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {name}")).output().map(|o| o.status.success()).unwrap_or(false)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

#[test]
fn hello_builds_runs_and_passes_umoci_and_skopeo() {
    let Some(env) = Env::new() else { return };
    let ctx = context("hello");
    let ctx_s = ctx.path().to_str().unwrap();
    env.build_ok(&["-t", "hello:1", ctx_s]);

    // The image is in the local store.
    let out = env.rbuild(&["inspect", "hello:1"], None);
    assert!(out.status.success());
    let inspect: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(inspect.to_string().contains("/hello.txt"), "{inspect}");

    // An OCI layout tar that skopeo and umoci accept, whose rootfs runs the image's command.
    let t = tempfile::tempdir().unwrap();
    let tar = t.path().join("hello.tar");
    let out = env.rbuild(&["save", "--format", "oci", "-o", tar.to_str().unwrap(), "hello:1"], None);
    assert!(out.status.success());
    if tool("skopeo") {
        let o = Command::new("skopeo").arg("inspect").arg(format!("oci-archive:{}", tar.display())).output().unwrap();
        assert!(o.status.success(), "skopeo: {}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(v["Layers"].as_array().unwrap().len() >= 2, "{v}");
    } else {
        support::skip("skopeo check: skopeo is not installed (scripts/install-test-deps)");
    }
    if tool("umoci") {
        let layout = t.path().join("layout");
        std::fs::create_dir(&layout).unwrap();
        assert!(Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&layout).status().unwrap().success());
        let bundle = t.path().join("bundle");
        let o = Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:1", layout.display()))
            .arg(&bundle)
            .output()
            .unwrap();
        // The tag inside the layout is the image's name; fall back to the only image if named otherwise.
        let bundle_ok = o.status.success() || {
            let idx: serde_json::Value = serde_json::from_str(&read(&layout.join("index.json"))).unwrap();
            let name = idx["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap_or("latest")
                .to_string();
            Command::new("umoci")
                .arg("unpack")
                .arg("--image")
                .arg(format!("{}:{name}", layout.display()))
                .arg(&bundle)
                .status()
                .unwrap()
                .success()
        };
        assert!(bundle_ok, "umoci unpack failed: {}", String::from_utf8_lossy(&o.stderr));
        let rootfs = bundle.join("rootfs");
        assert_eq!(read(&rootfs.join("hello.txt")), "Hello from rbuild\n");
        let o = env.rbuild(&["debug", "run", "--rootfs", rootfs.to_str().unwrap(), "--", "cat", "/hello.txt"], None);
        assert!(o.status.success());
        assert_eq!(String::from_utf8_lossy(&o.stdout), "Hello from rbuild\n");
    } else {
        support::skip("umoci check: umoci is not installed (scripts/install-test-deps)");
    }
}

#[test]
fn multistage_cache_behaviour() {
    let Some(env) = Env::new() else { return };
    let ctx = context("multistage");
    let c = ctx.path().to_str().unwrap();

    let first = env.build_ok(&["-t", "ms", c]);
    assert!(first.ran("RUN sh build.sh"), "{first:?}");

    // A second build is all cache hits.
    let second = env.build_ok(&["-t", "ms", c]);
    assert!(second.ran_steps().is_empty(), "second build ran steps: {second:?}");

    // Changing a file a COPY reads re-runs that COPY and what follows, nothing before.
    std::fs::write(ctx.path().join("src/main.txt"), "changed source\n").unwrap();
    let third = env.build_ok(&["-t", "ms", c]);
    assert!(third.ran("COPY src/"), "{third:?}");
    assert!(third.ran("RUN sh build.sh"), "{third:?}");
    assert!(!third.ran("WORKDIR /src") && third.was_cached("WORKDIR /src"), "{third:?}");

    // Changing a file nothing reads (not under src/) re-runs nothing.
    std::fs::write(ctx.path().join("unrelated.txt"), "x\n").unwrap();
    let fourth = env.build_ok(&["-t", "ms", c]);
    assert!(fourth.ran_steps().is_empty(), "{fourth:?}");

    // Changing a build arg re-runs the steps that see it, not the COPY before it.
    let fifth = env.build_ok(&["-t", "ms", "--build-arg", "GREETING=bonjour", c]);
    assert!(fifth.ran("RUN sh build.sh"), "{fifth:?}");
    assert!(!fifth.ran("COPY src/"), "{fifth:?}");

    // The final image: config and filesystem.
    let out = env.rbuild(&["inspect", "ms"], None);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = v.to_string();
    for needle in ["APP_MODE=production", "8080/tcp", "1000:1000", "/app", "multistage"] {
        assert!(text.contains(needle), "{needle} missing in {text}");
    }
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("fs");
    env.build_ok(&["--build-arg", "GREETING=bonjour", "-o", &format!("type=local,dest={}", dest.display()), c]);
    assert_eq!(read(&dest.join("app/out.txt")), "bonjour from the build stage\nchanged source\n");
    assert!(!dest.join("src").exists(), "the build stage leaked into the final image");
}

#[test]
fn dockerignore_hides_files_and_ignored_changes_rerun_nothing() {
    let Some(env) = Env::new() else { return };
    let ctx = context("ignore");
    let c = ctx.path().to_str().unwrap();
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("fs");
    env.build_ok(&["-t", "ign", "-o", &format!("type=local,dest={}", dest.display()), c]);
    assert!(dest.join("app/src/one.txt").exists());
    assert!(dest.join("app/keep.log").exists(), "!keep.log must re-include it");
    assert!(!dest.join("app/debug.log").exists(), "*.log must be ignored");
    assert!(!dest.join("app/secret").exists(), "secret/ must be ignored");
    std::fs::write(ctx.path().join("debug.log"), "more log\n").unwrap();
    std::fs::write(ctx.path().join("secret/key"), "rotated\n").unwrap();
    let again = env.build_ok(&["-t", "ign", c]);
    assert!(again.ran_steps().is_empty(), "{again:?}");
}

#[test]
fn heredocs_cache_mounts_link_secrets_and_tmpfs() {
    let Some(env) = Env::new() else { return };
    let ctx = context("features");
    let c = ctx.path().to_str().unwrap();
    let t = tempfile::tempdir().unwrap();
    let secret = t.path().join("token");
    std::fs::write(&secret, "s3cr3t-value").unwrap();
    let secret_arg = format!("id=token,src={}", secret.display());
    let dest = t.path().join("fs");
    env.build_ok(&["--secret", &secret_arg, "-o", &format!("type=local,dest={}", dest.display()), c]);
    assert_eq!(read(&dest.join("cache-runs")).trim(), "1");
    assert_eq!(read(&dest.join("data/a.txt")), "linked data\n");
    assert_eq!(read(&dest.join("data/sub/b.txt")), "nested\n");
    assert_eq!(read(&dest.join("etc/greeting")), "hello heredoc\n");
    assert_eq!(read(&dest.join("token-len")).trim(), "12");
    assert_eq!(read(&dest.join("tmpfs-list")).trim(), "x");
    // Nothing of the secret or the mounts reaches the filesystem.
    assert!(!dest.join("run/secrets/token").exists());
    assert!(!dest.join("cache/count").exists());
    assert!(!dest.join("scratch/x").exists());
    // The seeded busybox has no /etc/hosts or /etc/resolv.conf: the ones RUN steps see must not stay.
    assert!(!dest.join("etc/hosts").exists(), "a RUN left its /etc/hosts in the image");
    assert!(!dest.join("etc/resolv.conf").exists(), "a RUN left its /etc/resolv.conf in the image");

    // The cache mount persists across builds, even without the build cache.
    let dest2 = t.path().join("fs2");
    env.build_ok(&["--no-cache", "--secret", &secret_arg, "-o", &format!("type=local,dest={}", dest2.display()), c]);
    assert_eq!(read(&dest2.join("cache-runs")).trim(), "2");
}

/// After a `-t` build (the store keeps its layers uncompressed) an OCI export compresses them straight
/// into the archive: the image is the one an export through the content store gives (manifest digest and
/// `containerimage.digest`), skopeo copies it (checking every blob), and the compressed layers are not
/// added to the state root's content store.
#[test]
fn export_after_a_tagged_build_compresses_layers_into_the_archive_only() {
    let Some(env) = Env::new() else { return };
    if !tool("skopeo") {
        support::skip("skopeo is not installed (scripts/install-test-deps)");
        return;
    }
    let ctx = context("hello");
    let c = ctx.path().to_str().unwrap();
    let t = tempfile::tempdir().unwrap();
    let (streamed, stored, meta) = (t.path().join("a.tar"), t.path().join("b.tar"), t.path().join("meta.json"));
    env.build_ok(&["-t", "exp:1", c]);
    let oci = |p: &Path| format!("type=oci,dest={},compression=zstd", p.display());
    env.build_ok(&["-t", "exp:1", "-o", &oci(&streamed), "--metadata-file", meta.to_str().unwrap(), c]);
    let raw = |p: &Path| {
        let o = Command::new("skopeo").arg("inspect").arg("--raw").arg(format!("oci-archive:{}", p.display())).output();
        let o = o.unwrap();
        assert!(o.status.success(), "skopeo inspect: {}", String::from_utf8_lossy(&o.stderr));
        o.stdout
    };
    let manifest = raw(&streamed);
    let digest = snapshotter::digest::of_bytes(&manifest).to_string();
    let m: serde_json::Value = serde_json::from_str(&read(&meta)).unwrap();
    assert_eq!(m["containerimage.digest"].as_str().unwrap(), digest);
    let v: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let blob = |d: &serde_json::Value| env.root.path().join("content/blobs/sha256").join(&d.as_str().unwrap()[7..]);
    let zstd: Vec<_> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd")
        .collect();
    assert_eq!(zstd.len(), 2, "{v}");
    assert!(zstd.iter().all(|l| !blob(&l["digest"]).exists()), "a compressed layer was kept in the store");
    let copy = t.path().join("copied");
    let o = Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci-archive:{}", streamed.display()))
        .arg(format!("oci:{}:v1", copy.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&o.stderr));

    // The same image through the content store: an image output with zstd first keeps the layers there,
    // and the archive after it copies them.
    env.build_ok(&["-o", "type=image,name=exp:z,compression=zstd", "-o", &oci(&stored), c]);
    assert_eq!(raw(&stored), manifest);
    assert!(zstd.iter().all(|l| blob(&l["digest"]).exists()));
}

#[test]
fn outputs_load_in_skopeo_and_docker_formats() {
    let Some(env) = Env::new() else { return };
    let ctx = context("hello");
    let c = ctx.path().to_str().unwrap();
    let t = tempfile::tempdir().unwrap();
    let oci = t.path().join("oci.tar");
    let docker = t.path().join("docker.tar");
    let meta = t.path().join("meta.json");
    let iid = t.path().join("iid");
    // What a killed export left (its process is gone) is removed by the next export into the directory.
    let stale = t.path().join(".rbuild-partial-999999999-abc");
    std::fs::write(&stale, "partial").unwrap();
    env.build_ok(&[
        "-t",
        "out:1",
        "-o",
        &format!("type=oci,dest={},compression=zstd", oci.display()),
        "-o",
        &format!("type=docker,dest={}", docker.display()),
        "--metadata-file",
        meta.to_str().unwrap(),
        "--iidfile",
        iid.to_str().unwrap(),
        c,
    ]);
    let m: serde_json::Value = serde_json::from_str(&read(&meta)).unwrap();
    assert!(m["containerimage.digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(!stale.exists(), "a dead export's partial file was left");
    // Exports are files like any the user writes: 0666 less the umask, not a temp file's 0600.
    let status = read(Path::new("/proc/self/status"));
    let umask =
        status.lines().find_map(|l| l.strip_prefix("Umask:")).map(|u| u32::from_str_radix(u.trim(), 8).unwrap());
    for f in [&oci, &docker] {
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(f).unwrap().permissions()) & 0o777;
        assert_eq!(mode, 0o666 & !umask.unwrap(), "{}", f.display());
    }
    assert_eq!(m["containerimage.config.digest"].as_str().unwrap(), read(&iid));
    if tool("skopeo") {
        for src in [format!("oci-archive:{}", oci.display()), format!("docker-archive:{}", docker.display())] {
            let o = Command::new("skopeo").arg("inspect").arg(&src).output().unwrap();
            assert!(o.status.success(), "skopeo inspect {src}: {}", String::from_utf8_lossy(&o.stderr));
        }
    } else {
        support::skip("skopeo checks: skopeo is not installed (scripts/install-test-deps)");
    }
    let dockerd = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/start-dockerd");
    if dockerd.exists() && Command::new(&dockerd).status().map(|s| s.success()).unwrap_or(false) {
        let o = Command::new("docker").arg("load").arg("-i").arg(&docker).output().unwrap();
        assert!(o.status.success(), "docker load: {}", String::from_utf8_lossy(&o.stderr));
        let o = Command::new("docker").args(["run", "--rm", "--network", "none", "out:1"]).output().unwrap();
        assert!(o.status.success(), "docker run: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "Hello from rbuild\n");
    } else {
        support::skip("docker load: dockerd is not available (scripts/start-dockerd)");
    }
}

#[test]
fn default_command_push_and_failures() {
    let Some(env) = Env::new() else { return };
    let ctx = context("hello");
    // `rbuild -t app .` from inside the context.
    let out = env.rbuild(&["-t", "short:1", "--progress", "plain", "."], Some(ctx.path()));
    assert!(out.status.success());

    // --push to a second registry, checked with skopeo.
    if let Some(target) = TestRegistry::empty() {
        let name = format!("127.0.0.1:{}/e2e/hello:1", target.port());
        let out =
            env.rbuild(&["build", "--progress", "plain", "-t", &name, "--push", ctx.path().to_str().unwrap()], None);
        assert!(out.status.success());
        if tool("skopeo") {
            let o = Command::new("skopeo")
                .args(["inspect", "--tls-verify=false", &format!("docker://{name}")])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        } else {
            support::skip("the skopeo check of the push: skopeo is not installed (scripts/install-test-deps)");
        }
    }

    // A failing RUN names the line, the command and the exit code.
    std::fs::write(ctx.path().join("Dockerfile"), "FROM busybox\n\nRUN echo about to fail && exit 3\n").unwrap();
    let out = env.rbuild(&["build", "--progress", "plain", ctx.path().to_str().unwrap()], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Dockerfile:3"), "{err}");
    assert!(err.contains(">>> RUN echo about to fail && exit 3"), "{err}");
    assert!(err.contains("about to fail"), "{err}");
    assert!(err.contains("exit code: 3") || err.contains("exit code 3"), "{err}");

    // A broken Dockerfile is a spanned error, not a crash.
    std::fs::write(ctx.path().join("Dockerfile"), "FROM busybox\nCOPY --frm=x a b\n").unwrap();
    let out = env.rbuild(&["build", ctx.path().to_str().unwrap()], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from"), "did-you-mean missing");
}

#[test]
fn debian_apt_get_over_the_default_network() {
    let Some(env) = Env::new() else { return };
    let ctx = context("debian");
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("fs");
    let out = env.rbuild(
        &[
            "build",
            "--progress",
            "plain",
            "-o",
            &format!("type=local,dest={}", dest.display()),
            ctx.path().to_str().unwrap(),
        ],
        None,
    );
    if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("debian:bookworm-slim") {
        support::skip("the seeded registry has no debian:bookworm-slim (scripts/seed-images)");
        return;
    }
    assert!(out.status.success());
    assert!(dest.join("usr/bin/hello").exists());
}

#[test]
fn runc_builds_and_debug_run_on_an_image() {
    let Some(env) = Env::new() else { return };
    let ctx = context("hello");
    let c = ctx.path().to_str().unwrap();
    if tool("runc") {
        env.build_ok(&["--oci-runtime", "runc", "-t", "viarunc:1", c]);
    } else {
        support::skip("the runc build: runc is not installed (scripts/install-test-deps)");
        env.build_ok(&["-t", "viarunc:1", c]);
    }
    // The image's command runs on the image, with its config as the defaults.
    let o = env.rbuild(&["debug", "run", "--image", "viarunc:1", "--network", "none", "--", "cat", "/hello.txt"], None);
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout), "Hello from rbuild\n");
    // A base image straight from the mirror, and only loopback with --network none.
    let o = env.rbuild(&["debug", "run", "--image", "busybox", "--network", "none", "--", "ip", "-o", "link"], None);
    assert!(o.status.success());
    let links = String::from_utf8_lossy(&o.stdout);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains(": lo:"), "{links}");
}

#[test]
fn add_host_reaches_run_steps_but_not_the_image() {
    let Some(env) = Env::new() else { return };
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM busybox\nRUN grep db.internal /etc/hosts > /seen\n").unwrap();
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("fs");
    let out = format!("type=local,dest={}", dest.display());
    env.build_ok(&["--add-host", "db.internal:10.1.2.3", "-o", &out, ctx.path().to_str().unwrap()]);
    assert_eq!(read(&dest.join("seen")), "10.1.2.3\tdb.internal\n");
    assert!(!dest.join("etc/hosts").exists());
    let o = env.rbuild(&["build", "--add-host", "nocolon", ctx.path().to_str().unwrap()], None);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected HOST:IP"));
}
