//! `--cache-to` / `--cache-from` across "runners": two empty state roots and a real registry (or a layout
//! directory), as a CI job on a fresh machine sees them.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{skip, TestRegistry};

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The project: two stages, a COPY of one source file, RUNs before and after it.
const DOCKERFILE: &str = "FROM busybox AS build\n\
    RUN echo tools > /tools\n\
    COPY src/main.txt /src/main.txt\n\
    RUN tr a-z A-Z < /src/main.txt > /out.txt\n\
    FROM busybox\n\
    RUN echo runtime > /runtime\n\
    ARG FLAVOR=plain\n\
    RUN echo $FLAVOR > /flavor\n\
    COPY --from=build /out.txt /app/out.txt\n";

struct Env {
    reg: TestRegistry,
    tmp: tempfile::TempDir,
    ctx: PathBuf,
    runner: usize,
}

impl Env {
    fn new(logging: bool) -> Option<Env> {
        if !is_root() {
            skip("cache tests build images: they need root (overlay mounts and namespaces)");
            return None;
        }
        let reg = if logging { TestRegistry::seeded_logging()? } else { TestRegistry::seeded()? };
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path().join("project");
        std::fs::create_dir_all(ctx.join("src")).unwrap();
        std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
        std::fs::write(ctx.join("src/main.txt"), "hello\n").unwrap();
        Some(Env { reg, tmp, ctx, runner: 0 })
    }

    fn cache_ref(&self, name: &str) -> String {
        format!("127.0.0.1:{}/cache/{name}", self.reg.port())
    }

    /// A build on a fresh state root (a new runner), from `dir`: (output, steps that ran, image id).
    fn build_on_fresh_runner(&mut self, args: &[&str]) -> (Output, Vec<String>, Option<String>) {
        self.runner += 1;
        let root = self.tmp.path().join(format!("runner-{}", self.runner));
        self.build_on(&root, args)
    }

    fn build_on(&self, root: &Path, args: &[&str]) -> (Output, Vec<String>, Option<String>) {
        let iid = root.with_extension("iid");
        let _ = std::fs::remove_file(&iid);
        let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
            .arg("--root")
            .arg(root)
            .arg("--config")
            .arg(self.reg.config_path())
            .env("DOCKER_CONFIG", self.tmp.path().join("docker-config"))
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env_remove("RBUILD_HOST")
            .args(["build", "--progress", "plain", "--iidfile"])
            .arg(&iid)
            .args(args)
            .arg(&self.ctx)
            .output()
            .unwrap();
        let ran = ran_steps(&String::from_utf8_lossy(&out.stderr));
        (out, ran, std::fs::read_to_string(&iid).ok())
    }
}

/// Steps that ran (not cached, not loading a context), from plain progress.
fn ran_steps(plain: &str) -> Vec<String> {
    let mut names = std::collections::BTreeMap::new();
    let mut cached = std::collections::BTreeSet::new();
    let mut ran = Vec::new();
    for line in plain.lines() {
        let Some((n, what)) = line.strip_prefix('#').and_then(|r| r.split_once(' ')) else { continue };
        if what.starts_with("CACHED") {
            cached.insert(n.to_string());
        } else if what.starts_with("DONE") && !cached.contains(n) {
            if let Some(name) = names.get(n) {
                ran.push(String::clone(name));
            }
        } else if what.starts_with('[') && !names.contains_key(n) {
            names.insert(n.to_string(), what.to_string());
        }
    }
    ran.retain(|n| !n.contains("[internal]") && !n.contains("[context"));
    ran
}

fn ok(o: &(Output, Vec<String>, Option<String>)) {
    assert!(o.0.status.success(), "build failed:\n{}", text(&o.0));
}

/// The layers of a pushed image that a state root's content store holds.
fn layers_held(root: &Path, image: &str) -> Vec<String> {
    let out = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut files = Vec::new();
    let mut stack = vec![root.join("content")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                files.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    v["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str())
        .filter(|l| files.iter().any(|f| l.ends_with(f.as_str())))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_fresh_runner_hits_every_step_and_pushes_without_pulling_a_blob() {
    let Some(mut env) = Env::new(false) else { return };
    let cache = env.cache_ref("app:main");
    let to = format!("type=registry,ref={cache},mode=max");
    let a = env.build_on_fresh_runner(&["-t", "app", "--cache-to", &to]);
    ok(&a);
    assert!(text(&a.0).contains(&format!("exporting cache to {cache}")), "{}", text(&a.0));

    let pushed = format!("127.0.0.1:{}/team/app:b", env.reg.port());
    let push = format!("type=registry,name={pushed}");
    let b = env.build_on_fresh_runner(&["--cache-from", &cache, "-o", &push]);
    ok(&b);
    assert!(b.1.is_empty(), "runner B ran {:?}:\n{}", b.1, text(&b.0));
    assert!(text(&b.0).contains(&format!("importing cache manifest from {cache}")), "{}", text(&b.0));
    assert_eq!(a.2, b.2, "runner B made another image");
    let root_b = env.tmp.path().join(format!("runner-{}", env.runner));
    assert_eq!(layers_held(&root_b, &pushed), Vec::<String>::new(), "runner B pulled layers it only pushed");

    // One source file changes: only the steps after the COPY that reads it run.
    std::fs::write(env.ctx.join("src/main.txt"), "changed\n").unwrap();
    let c = env.build_on_fresh_runner(&["--cache-from", &cache, "-t", "app"]);
    ok(&c);
    let ran: Vec<&str> = c.1.iter().map(String::as_str).collect();
    assert!(ran.iter().any(|s| s.contains("COPY src/main.txt")), "{ran:?}");
    assert!(ran.iter().any(|s| s.contains("RUN tr a-z A-Z")), "{ran:?}");
    assert!(!ran.iter().any(|s| s.contains("RUN echo tools") || s.contains("RUN echo runtime")), "{ran:?}");
}

#[test]
fn an_intermediate_stage_hits_from_a_max_cache_and_misses_from_a_min_cache() {
    let Some(mut env) = Env::new(false) else { return };
    let (min, max) = (env.cache_ref("app:min"), env.cache_ref("app:max"));
    let a = env.build_on_fresh_runner(&[
        "-t",
        "app",
        "--cache-to",
        &format!("type=registry,ref={min},mode=min"),
        "--cache-to",
        &format!("type=registry,ref={max},mode=max"),
    ]);
    ok(&a);
    // The final stage changes (a build arg it alone reads): the build stage's steps are needed again.
    let from_max = env.build_on_fresh_runner(&["--cache-from", &max, "--build-arg", "FLAVOR=spicy", "-t", "app"]);
    ok(&from_max);
    assert!(!from_max.1.iter().any(|s| s.contains("RUN tr a-z A-Z")), "max cache: {:?}", from_max.1);
    assert!(from_max.1.iter().any(|s| s.contains("RUN echo $FLAVOR")), "{:?}", from_max.1);
    let from_min = env.build_on_fresh_runner(&["--cache-from", &min, "--build-arg", "FLAVOR=spicy", "-t", "app"]);
    ok(&from_min);
    assert!(from_min.1.iter().any(|s| s.contains("RUN tr a-z A-Z")), "min cache: {:?}", from_min.1);
}

/// Blob uploads the registry completed (a PUT that ends an upload session), from its access log.
fn uploads(log: &str) -> usize {
    log.lines().filter(|l| l.contains("\"PUT /v2/") && l.contains("/blobs/uploads/")).count()
}

#[test]
fn re_exporting_an_unchanged_build_uploads_no_blob() {
    let Some(mut env) = Env::new(true) else { return };
    let cache = env.cache_ref("app:ci");
    let to = format!("type=registry,ref={cache},mode=max");
    ok(&env.build_on_fresh_runner(&["-t", "app", "--cache-from", &cache, "--cache-to", &to]));
    let before = uploads(&env.reg.log());
    assert!(before > 0, "the first export uploaded nothing:\n{}", env.reg.log());
    // The next CI job: a fresh runner, the same project.
    let b = env.build_on_fresh_runner(&["-t", "app", "--cache-from", &cache, "--cache-to", &to]);
    ok(&b);
    assert!(b.1.is_empty(), "{:?}", b.1);
    assert_eq!(uploads(&env.reg.log()), before, "the unchanged export uploaded blobs");
    assert!(text(&b.0).contains("0 new, 0B sent"), "{}", text(&b.0));
}

#[test]
fn a_local_cache_round_trips_and_a_corrupted_blob_is_rebuilt() {
    let Some(mut env) = Env::new(false) else { return };
    let dir = env.tmp.path().join("cache-dir");
    let to = format!("type=local,dest={},mode=max", dir.display());
    let from = format!("type=local,src={}", dir.display());
    let a = env.build_on_fresh_runner(&["-t", "app", "--cache-to", &to]);
    ok(&a);
    assert!(dir.join("index.json").is_file() && dir.join("oci-layout").is_file());
    let b = env.build_on_fresh_runner(&["-t", "app", "--cache-from", &from]);
    ok(&b);
    assert!(b.1.is_empty(), "{:?}", b.1);
    assert_eq!(a.2, b.2);

    // Every layer blob of the cache corrupted: each entry is a miss with a warning, and the steps run.
    let blobs = dir.join("blobs/sha256");
    let mut corrupted = 0;
    for e in std::fs::read_dir(&blobs).unwrap().flatten() {
        let bytes = std::fs::read(e.path()).unwrap();
        if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut bad = bytes.clone();
            let n = bad.len();
            bad[n / 2] ^= 0xff;
            std::fs::write(e.path(), bad).unwrap();
            corrupted += 1;
        }
    }
    assert!(corrupted > 0);
    let c = env.build_on_fresh_runner(&["-t", "app", "--cache-from", &from]);
    ok(&c);
    assert!(text(&c.0).contains("cannot be used"), "{}", text(&c.0));
    assert!(c.1.iter().any(|s| s.contains("RUN tr a-z A-Z")), "{:?}", c.1);
    assert_eq!(a.2, c.2, "the rebuilt image differs");
}

#[test]
fn an_image_manifest_cache_is_accepted_and_read_back() {
    let Some(mut env) = Env::new(false) else { return };
    let cache = env.cache_ref("app:manifest");
    let to = format!("type=registry,ref={cache},mode=max,image-manifest=true");
    ok(&env.build_on_fresh_runner(&["-t", "app", "--cache-to", &to]));
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{cache}"))
        .output()
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json", "{manifest}");
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.rbuild.cache.config.v1+json");
    let b = env.build_on_fresh_runner(&["-t", "app", "--cache-from", &cache]);
    ok(&b);
    assert!(b.1.is_empty(), "{:?}", b.1);
}

#[test]
fn ignore_error_decides_whether_a_failed_export_fails_the_build_and_a_missing_import_only_warns() {
    let Some(mut env) = Env::new(false) else { return };
    let dead = "type=registry,ref=127.0.0.1:1/cache/app:x";
    let failed = env.build_on_fresh_runner(&["-t", "app", "--cache-to", dead]);
    assert!(!failed.0.status.success(), "a failed export did not fail the build");
    assert!(text(&failed.0).contains("127.0.0.1:1/cache/app:x"), "{}", text(&failed.0));
    let ignored = env.build_on_fresh_runner(&["-t", "app", "--cache-to", &format!("{dead},ignore-error=true")]);
    ok(&ignored);
    assert!(
        text(&ignored.0).contains("WARNING: exporting cache to 127.0.0.1:1/cache/app:x failed"),
        "{}",
        text(&ignored.0)
    );
    let missing = env.cache_ref("nothing:here");
    let imported = env.build_on_fresh_runner(&["-t", "app", "--cache-from", &missing]);
    ok(&imported);
    assert!(
        text(&imported.0).contains(&format!("WARNING: cannot import cache from {missing}")),
        "{}",
        text(&imported.0)
    );
}

#[test]
fn an_image_pushed_with_an_inline_cache_is_a_cache_source() {
    let Some(mut env) = Env::new(false) else { return };
    let image = format!("127.0.0.1:{}/team/app:inline", env.reg.port());
    let a = env.build_on_fresh_runner(&["--cache-to", "type=inline", "-o", &format!("type=registry,name={image}")]);
    ok(&a);
    assert!(text(&a.0).contains("exporting cache to the image (inline)"), "{}", text(&a.0));
    let b = env.build_on_fresh_runner(&["--cache-from", &image, "-t", "app"]);
    ok(&b);
    assert!(b.1.is_empty(), "{:?}\n{}", b.1, text(&b.0));
    // Without an inline cache, an image is not a cache source: a warning, and the build runs.
    let plain = format!("127.0.0.1:{}/team/app:plain", env.reg.port());
    ok(&env.build_on_fresh_runner(&["-o", &format!("type=registry,name={plain}")]));
    let c = env.build_on_fresh_runner(&["--cache-from", &plain, "-t", "app"]);
    ok(&c);
    assert!(text(&c.0).contains("without an inline cache"), "{}", text(&c.0));
    assert!(!c.1.is_empty());
}
