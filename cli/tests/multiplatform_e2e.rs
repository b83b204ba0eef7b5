//! Multi-platform builds end to end (`--platform linux/amd64,linux/arm64`): one solve, one image index.
//!
//! - Cross-compilation: a `FROM --platform=$BUILDPLATFORM` build stage runs natively (it records `uname -m`)
//!   with each target's TARGETARCH; its step that does not read TARGETARCH runs once for both (a random
//!   value it writes is the same in both images, and the progress shows it once). The pushed index,
//!   read back with skopeo, names one manifest per platform, each with an attestation manifest.
//! - Every output: `type=local` and `type=tar` put each platform under `linux_amd64/`, `linux_arm64/`;
//!   `type=oci` writes an OCI layout whose index.json names the image index; `type=docker` exports the
//!   host's platform only and says so; `oci-mediatypes=false` pushes a Docker manifest list; `-t` keeps
//!   the index in the local store and `rbuild push` pushes it as held.
//! - SOURCE_DATE_EPOCH: two builds on fresh state roots push the same index bytes.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{Rbuild, TestRegistry};

const PLATFORMS: &str = "linux/amd64,linux/arm64";

/// The build stage runs on the build platform; `/shared` is written by a step that does not read
/// TARGETARCH (random, so two runs would differ).
const CROSS: &str = "FROM --platform=$BUILDPLATFORM busybox AS build\n\
                     RUN head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /shared\n\
                     ARG TARGETARCH\n\
                     RUN echo $TARGETARCH > /arch && uname -m > /built-on\n\
                     FROM scratch\n\
                     COPY --from=build /arch /shared /built-on /\n";

/// Deterministic: no random value, nothing that depends on time.
const STABLE: &str = "FROM --platform=$BUILDPLATFORM busybox AS build\n\
                      ARG TARGETARCH TARGETPLATFORM\n\
                      RUN echo $TARGETARCH > /arch && echo $TARGETPLATFORM > /platform\n\
                      FROM scratch\n\
                      COPY --from=build /arch /platform /\n";

fn setup() -> Option<(TestRegistry, Rbuild)> {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").map(|m| m.uid() != 0).unwrap_or(true) {
        support::skip("end-to-end builds need root (overlay mounts and namespaces)");
        return None;
    }
    if support::which("skopeo").is_none() {
        support::skip("skopeo is missing: run scripts/install-test-deps");
        return None;
    }
    let reg = TestRegistry::seeded()?;
    let rb = Rbuild::new(&reg);
    Some((reg, rb))
}

fn context(dir: &Path, dockerfile: &str) -> PathBuf {
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    ctx
}

fn skopeo_raw(reference: &str) -> Value {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{reference}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo inspect {reference}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn skopeo_raw_bytes(reference: &str) -> Vec<u8> {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{reference}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo inspect {reference}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The files of a pushed single-layer image, unpacked from its layer blob.
fn pushed_files(reg: &TestRegistry, repo: &str, manifest_digest: &str, into: &Path) -> Value {
    let manifest = skopeo_raw(&format!("{}/{repo}@{manifest_digest}", reg.host()));
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "one COPY layer: {manifest}");
    let blob = into.join("layer.tar.gz");
    let url = format!("http://{}/v2/{repo}/blobs/{}", reg.host(), layers[0]["digest"].as_str().unwrap());
    let st = Command::new("curl").args(["-sf", "-o"]).arg(&blob).arg(&url).status().unwrap();
    assert!(st.success(), "GET {url}");
    let st = Command::new("tar").arg("-xzf").arg(&blob).arg("-C").arg(into).status().unwrap();
    assert!(st.success(), "unpacking the layer of {manifest_digest}");
    manifest
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).trim().to_string()
}

fn host_machine() -> String {
    let out = Command::new("uname").arg("-m").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The image entries of an index (attestation manifests left out) by `os/arch`.
fn images_of(index: &Value) -> Vec<(String, String)> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["platform"]["os"] != "unknown")
        .map(|m| {
            let p = &m["platform"];
            (
                format!("{}/{}", p["os"].as_str().unwrap(), p["architecture"].as_str().unwrap()),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn cross_compilation_runs_the_build_stage_natively_once_and_pushes_an_index() {
    let Some((reg, rb)) = setup() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(tmp.path(), CROSS);
    let name = format!("{}/test/cross:1", reg.host());
    let out = rb
        .command()
        .args(["build", "--progress=plain", "--platform", PLATFORMS, "--provenance=true", "--push", "-t", &name])
        .arg("--iidfile")
        .arg(tmp.path().join("iid"))
        .arg("--metadata-file")
        .arg(tmp.path().join("metadata.json"))
        .arg(&ctx)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The shared step started once: one line naming it, however many platforms reach it.
    let started = stderr.lines().filter(|l| l.contains("RUN head -c 16") && !l.contains("DONE")).count();
    assert_eq!(started, 1, "the step that does not read TARGETARCH runs once:\n{stderr}");
    // Step names say their stage's platform, as BuildKit's do in a multi-platform build.
    assert!(stderr.contains("[linux/amd64 build 2/4] RUN head -c 16"), "{stderr}");
    assert!(stderr.contains("[linux/arm64 stage-1 2/2] COPY --from=build"), "{stderr}");

    let index = skopeo_raw(&name);
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json", "{index}");
    let images = images_of(&index);
    assert_eq!(images.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(), ["linux/amd64", "linux/arm64"], "{index}");
    // buildx's answers for an index: the image ID and containerimage.digest are the index's digest.
    let raw = skopeo_raw_bytes(&name);
    let digest = {
        use sha2::Digest;
        format!("sha256:{:x}", sha2::Sha256::digest(&raw))
    };
    assert_eq!(read(&tmp.path().join("iid")), digest);
    let metadata: Value = serde_json::from_str(&read(&tmp.path().join("metadata.json"))).unwrap();
    assert_eq!(metadata["containerimage.digest"], digest.as_str(), "{metadata}");
    assert_eq!(metadata["containerimage.descriptor"]["mediaType"], "application/vnd.oci.image.index.v1+json");
    // One attestation manifest per image, after the images, naming its image (as BuildKit orders them).
    let attestations: Vec<&Value> =
        index["manifests"].as_array().unwrap().iter().filter(|m| m["platform"]["os"] == "unknown").collect();
    assert_eq!(attestations.len(), 2, "{index}");
    for ((_, digest), att) in images.iter().zip(&attestations) {
        assert_eq!(att["annotations"]["vnd.docker.reference.digest"], digest.as_str());
        assert_eq!(att["annotations"]["vnd.docker.reference.type"], "attestation-manifest");
    }

    let mut shared = Vec::new();
    for (platform, digest) in &images {
        let dir = tmp.path().join(platform.replace('/', "_"));
        std::fs::create_dir_all(&dir).unwrap();
        let manifest = pushed_files(&reg, "test/cross", digest, &dir);
        let arch = platform.split('/').nth(1).unwrap();
        assert_eq!(read(&dir.join("arch")), arch, "TARGETARCH of {platform}");
        assert_eq!(read(&dir.join("built-on")), host_machine(), "the build stage ran natively for {platform}");
        shared.push(read(&dir.join("shared")));
        let config = skopeo_raw(&format!("{}/test/cross@{}", reg.host(), digest));
        assert_eq!(config["config"]["digest"], manifest["config"]["digest"]);
        let out = Command::new("skopeo")
            .args(["inspect", "--config", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}/test/cross@{digest}", reg.host()))
            .output()
            .unwrap();
        let config: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(config["architecture"], arch, "the image config of {platform}");
    }
    assert_eq!(shared[0], shared[1], "the shared step ran once: both images hold its one result");
    assert_eq!(shared[0].len(), 32);
}

#[test]
fn every_output_holds_every_platform_as_buildx_lays_them_out() {
    let Some((reg, rb)) = setup() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(tmp.path(), STABLE);
    let build = |output: &str| {
        let out = rb.command().args(["build", "--platform", PLATFORMS, "-o", output]).arg(&ctx).output().unwrap();
        assert!(out.status.success(), "-o {output}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    let local = tmp.path().join("local");
    build(&format!("type=local,dest={}", local.display()));
    assert_eq!(read(&local.join("linux_amd64/arch")), "amd64");
    assert_eq!(read(&local.join("linux_arm64/arch")), "arm64");
    assert_eq!(read(&local.join("linux_arm64/platform")), "linux/arm64");

    let fs_tar = tmp.path().join("fs.tar");
    build(&format!("type=tar,dest={}", fs_tar.display()));
    let listing = Command::new("tar").arg("-tf").arg(&fs_tar).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for f in ["linux_amd64/arch", "linux_arm64/arch", "linux_arm64/platform"] {
        assert!(listing.lines().any(|l| l.trim_start_matches("./") == f), "{f} in the tar:\n{listing}");
    }

    // An OCI layout whose index.json names the image index, which names both platforms' manifests.
    let oci = tmp.path().join("oci");
    build(&format!("type=oci,dest={},tar=false", oci.display()));
    let blob = |d: &str| -> Value {
        serde_json::from_slice(&std::fs::read(oci.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap())
            .unwrap()
    };
    let top: Value = serde_json::from_slice(&std::fs::read(oci.join("index.json")).unwrap()).unwrap();
    assert_eq!(top["manifests"].as_array().unwrap().len(), 1, "{top}");
    assert_eq!(top["manifests"][0]["mediaType"], "application/vnd.oci.image.index.v1+json");
    let index = blob(top["manifests"][0]["digest"].as_str().unwrap());
    let images = images_of(&index);
    assert_eq!(images.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(), ["linux/amd64", "linux/arm64"]);
    for (platform, digest) in &images {
        let m = blob(digest);
        let config = blob(m["config"]["digest"].as_str().unwrap());
        assert_eq!(
            format!("{}/{}", config["os"].as_str().unwrap(), config["architecture"].as_str().unwrap()),
            *platform
        );
    }
    let copied =
        Command::new("skopeo").args(["inspect", "--raw"]).arg(format!("oci:{}", oci.display())).output().unwrap();
    assert!(copied.status.success(), "skopeo reads the layout: {}", String::from_utf8_lossy(&copied.stderr));

    // docker holds one platform: the host's, said so.
    let docker = tmp.path().join("docker.tar");
    let stderr = build(&format!("type=docker,dest={}", docker.display()));
    assert!(stderr.contains("holds one platform") && stderr.contains("linux/amd64"), "{stderr}");
    let manifest_json = Command::new("tar").arg("-xOf").arg(&docker).arg("manifest.json").output().unwrap();
    let entries: Value = serde_json::from_slice(&manifest_json.stdout).unwrap();
    assert_eq!(entries.as_array().unwrap().len(), 1, "{entries}");

    // oci-mediatypes=false: a Docker manifest list of Docker manifests.
    let name = format!("{}/test/list:1", reg.host());
    build(&format!("type=registry,name={name},oci-mediatypes=false"));
    let list = skopeo_raw(&name);
    assert_eq!(list["mediaType"], "application/vnd.docker.distribution.manifest.list.v2+json", "{list}");
    for m in list["manifests"].as_array().unwrap() {
        assert_eq!(m["mediaType"], "application/vnd.docker.distribution.manifest.v2+json", "{list}");
    }
    assert_eq!(images_of(&list).len(), 2);
}

#[test]
fn the_local_store_keeps_the_index_and_push_sends_it_as_held() {
    let Some((reg, rb)) = setup() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(tmp.path(), STABLE);
    let name = format!("{}/test/stored:1", reg.host());
    let d = ctx.display().to_string();
    rb.ok(&["build", "--platform", PLATFORMS, "-t", &name, &d]);
    let listed = rb.ok(&["images"]);
    assert!(listed.contains("test/stored"), "{listed}");
    let raw: Value = serde_json::from_str(&rb.ok(&["inspect", &name])).unwrap();
    assert_eq!(raw["Architecture"], "amd64", "inspect shows this machine's platform of the index: {raw}");
    let platforms: Vec<&str> =
        raw["Platforms"].as_array().unwrap().iter().map(|p| p["Platform"].as_str().unwrap()).collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{raw}");
    assert!(raw["Platforms"].as_array().unwrap().iter().all(|p| p["Held"] == true), "{raw}");
    assert_eq!(raw["IndexMediaType"], "application/vnd.oci.image.index.v1+json");

    rb.ok(&["push", &name]);
    let index = skopeo_raw(&name);
    assert_eq!(images_of(&index).iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(), ["linux/amd64", "linux/arm64"]);
    // What was pushed is readable per platform.
    for (platform, digest) in images_of(&index) {
        let dir = tmp.path().join(platform.replace('/', "_"));
        std::fs::create_dir_all(&dir).unwrap();
        pushed_files(&reg, "test/stored", &digest, &dir);
        assert_eq!(read(&dir.join("platform")), platform);
    }
}

#[test]
fn source_date_epoch_gives_the_same_index_and_manifests_twice() {
    let Some((reg, first)) = setup() else { return };
    let second = Rbuild::new(&reg);
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(tmp.path(), STABLE);
    let d = ctx.display().to_string();
    let mut pushed = Vec::new();
    // The same name: the provenance names the image it is about.
    let name = format!("{}/test/epoch:1", reg.host());
    for rb in [&first, &second] {
        rb.ok(&[
            "build",
            "--platform",
            PLATFORMS,
            "--build-arg",
            "SOURCE_DATE_EPOCH=1700000000",
            "--provenance=true",
            "--push",
            "-t",
            &name,
            &d,
        ]);
        pushed.push(skopeo_raw_bytes(&name));
    }
    assert_eq!(
        String::from_utf8_lossy(&pushed[0]),
        String::from_utf8_lossy(&pushed[1]),
        "two builds on fresh state roots push the same index"
    );
    let index: Value = serde_json::from_slice(&pushed[0]).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 4, "two images and their attestations: {index}");
}

/// Whether the seeds hold arm64 images and `rbuild debug platforms` says this host emulates linux/arm64.
fn emulates_arm64(rb: &Rbuild) -> bool {
    let seeded = support::seeded_storage().is_some_and(|s| s.join("seeded-v3").is_file());
    if !seeded {
        support::skip("the seeded registry has no arm64 images: run scripts/seed-images --force");
        return false;
    }
    let out = rb.ok(&["debug", "platforms"]);
    let ok = out.lines().any(|l| l.split_whitespace().next() == Some("linux/arm64") && l.contains("emulated:"));
    if !ok {
        support::skip(&format!("no binfmt_misc emulator for linux/arm64 ({out}): run scripts/install-test-deps"));
    }
    if ok && support::which("umoci").is_none() {
        support::skip("umoci is not installed: run scripts/install-test-deps");
        return false;
    }
    ok
}

/// The pushed image of `reference` for `arch`, copied by skopeo into a layout and unpacked by umoci.
fn unpack_pushed(reference: &str, arch: &str, dir: &Path) -> PathBuf {
    let layout = dir.join(format!("layout-{arch}"));
    let out = Command::new("skopeo")
        .args(["--override-os", "linux", "--override-arch", arch, "copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:img", layout.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo copy {arch}: {}", String::from_utf8_lossy(&out.stderr));
    let bundle = dir.join(format!("bundle-{arch}"));
    let out = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:img", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(out.status.success(), "umoci unpack {arch}: {}", String::from_utf8_lossy(&out.stderr));
    bundle.join("rootfs")
}

/// The "done when": RUN for both platforms (arm64 under QEMU), one pushed index whose images say
/// x86_64 and aarch64.
#[test]
fn run_uname_for_two_platforms_pushes_an_index_of_x86_64_and_aarch64() {
    let Some((reg, rb)) = setup() else { return };
    if !emulates_arm64(&rb) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(tmp.path(), "FROM busybox\nRUN uname -m > /arch\n");
    let name = format!("{}/test/app", reg.host());
    let d = ctx.display().to_string();
    rb.ok(&["build", "--platform", PLATFORMS, "-t", &name, "--push", &d]);
    let index = skopeo_raw(&name);
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json", "{index}");
    let images = images_of(&index);
    assert_eq!(images.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(), ["linux/amd64", "linux/arm64"]);
    for (arch, machine) in [("amd64", "x86_64"), ("arm64", "aarch64")] {
        let rootfs = unpack_pushed(&name, arch, tmp.path());
        assert_eq!(read(&rootfs.join("arch")), machine, "uname -m in the {arch} image");
    }
}

/// `rbuild serve`, killed on drop.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A build on a daemon carries every platform: the daemon pushes the index, and a `type=local` output
/// streamed back to the client has a directory per platform.
#[test]
fn a_daemon_builds_every_platform_it_is_sent() {
    let Some((reg, _)) = setup() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(tmp.path(), STABLE);
    let sock = format!("unix://{}", tmp.path().join("rbuild.sock").display());
    let log = tmp.path().join("daemon.log");
    let f = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .env_remove("RBUILD_HOST")
        .arg("--root")
        .arg(tmp.path().join("root"))
        .arg("--config")
        .arg(reg.config_path())
        .args(["serve", "--addr", &sock])
        .stdin(std::process::Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap();
    let mut daemon = Daemon(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("serving") {
        if let Ok(Some(st)) = daemon.0.try_wait() {
            panic!("the daemon exited ({st}): {}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        assert!(std::time::Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let client = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
            .env("DOCKER_CONFIG", tmp.path().join("docker-config"))
            .args(["--host", &sock])
            .args(args)
            .arg(&ctx)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let name = format!("{}/test/remote:1", reg.host());
    client(&["build", "--platform", "linux/amd64", "--platform", "linux/arm64", "--push", "-t", &name]);
    let index = skopeo_raw(&name);
    assert_eq!(images_of(&index).iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(), ["linux/amd64", "linux/arm64"]);
    let local = tmp.path().join("local");
    client(&["build", "--platform", PLATFORMS, "-o", &format!("type=local,dest={}", local.display())]);
    assert_eq!(read(&local.join("linux_amd64/arch")), "amd64");
    assert_eq!(read(&local.join("linux_arm64/arch")), "arm64");
}

/// Steps that ran (a `DONE` line, not `CACHED`), by name, from plain progress.
fn ran_steps(plain: &str) -> Vec<String> {
    let mut names = std::collections::BTreeMap::new();
    let mut ran = Vec::new();
    for line in plain.lines() {
        let Some((n, what)) = line.strip_prefix('#').and_then(|r| r.split_once(' ')) else { continue };
        if what.starts_with('[') {
            names.entry(n.to_string()).or_insert_with(|| what.to_string());
        } else if what.starts_with("DONE") {
            ran.extend(names.get(n).cloned());
        }
    }
    ran
}

/// `--cache-to` (mode=min) of a two-platform build keeps both platforms' results: a fresh state root that
/// imports it runs no RUN step for either platform.
#[test]
fn a_cache_export_holds_every_platform_result() {
    let Some((reg, first)) = setup() else { return };
    let second = Rbuild::new(&reg);
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(tmp.path(), STABLE);
    let cache = tmp.path().join("cache");
    let (d, c) = (ctx.display().to_string(), cache.display().to_string());
    let to = format!("type=local,dest={c}");
    let fs_tar = format!("type=tar,dest={}", tmp.path().join("fs.tar").display());
    first.ok(&["build", "--platform", PLATFORMS, "--cache-to", &to, "-o", &fs_tar, &d]);
    let from = format!("type=local,src={c}");
    let local = tmp.path().join("out");
    let out = second
        .command()
        .args(["build", "--progress=plain", "--platform", PLATFORMS, "--cache-from", &from])
        .arg("-o")
        .arg(format!("type=local,dest={}", local.display()))
        .arg(&ctx)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let ran: Vec<String> = ran_steps(&stderr).into_iter().filter(|s| s.contains("RUN")).collect();
    assert!(ran.is_empty(), "no RUN step runs with the imported cache: {ran:?}\n{stderr}");
    assert_eq!(read(&local.join("linux_arm64/arch")), "arm64");
    assert_eq!(read(&local.join("linux_amd64/arch")), "amd64");
}
