//! The image commands through the real binary against a real docker-registry seeded with busybox and
//! debian:bookworm-slim and configured as the docker.io mirror (see `support`): pull, tag, images,
//! inspect, history, rmi, push (cross-repository mount, then nothing to upload), save (checked with
//! `docker load`, `skopeo` and `umoci`) and load.

mod support;

use std::process::Command;

use support::{which, Rbuild, TestRegistry};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// Runs a tool, panicking with its output when it fails.
fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn docker_answers() -> bool {
    which("docker").is_some()
        && Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
}

#[test]
fn pull_through_the_docker_io_mirror() {
    let Some(reg) = TestRegistry::seeded() else { return };
    let rb = Rbuild::new(&reg);
    let out = rb.ok(&["pull", "busybox"]);
    assert!(out.contains("Digest: sha256:"), "{out}");
    assert!(out.contains("docker.io/library/busybox:latest"), "{out}");
    let again = rb.ok(&["pull", "busybox"]);
    assert!(again.contains("Image is up to date"), "{again}");

    let out = rb.ok(&["pull", "debian:bookworm-slim"]);
    assert!(out.contains("Digest: sha256:"), "{out}");
    let list = rb.ok(&["images"]);
    let rows: Vec<&str> = list.lines().collect();
    assert!(rows[0].starts_with("REPOSITORY") && rows[0].contains("IMAGE ID"), "{list}");
    assert!(rows.iter().any(|r| r.starts_with("busybox ") && r.contains("latest")), "{list}");
    assert!(rows.iter().any(|r| r.starts_with("debian ") && r.contains("bookworm-slim")), "{list}");

    // Straight from the registry (no mirror, so no fallback to the real docker.io).
    let missing = rb.run(&["pull", &format!("{}/no/such-image:1", reg.host())]);
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("no/such-image"), "{err}");
}

#[test]
fn tag_inspect_history_rmi() {
    let Some(reg) = TestRegistry::seeded() else { return };
    let rb = Rbuild::new(&reg);
    rb.ok(&["pull", "busybox"]);
    let base = json(&rb.ok(&["inspect", "busybox"]));
    rb.ok(&["tag", "busybox", "myapp:v1"]);
    let tagged = json(&rb.ok(&["inspect", "myapp:v1"]));
    assert_eq!(tagged["Digest"], base["Digest"]);
    assert_eq!(tagged["Config"]["config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(tagged["Layers"].as_array().map(Vec::len), Some(1));
    let tags = tagged["RepoTags"].as_array().unwrap();
    assert!(tags.iter().any(|t| t == "docker.io/library/myapp:v1"), "{tags:?}");

    let history = rb.ok(&["history", "myapp:v1"]);
    assert!(history.starts_with("IMAGE"), "{history}");
    assert!(history.contains("seed-images"), "{history}");

    let out = rb.ok(&["rmi", "myapp:v1"]);
    assert!(out.contains("Untagged: myapp:v1"), "{out}");
    let gone = rb.run(&["inspect", "myapp:v1"]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("myapp:v1"));
    // The other name still works.
    rb.ok(&["inspect", "busybox"]);
}

/// `(uploaded, mounted, existing)` from push's summary line.
fn push_counts(out: &str) -> (usize, usize, usize) {
    let line = out.lines().find(|l| l.contains("uploaded")).unwrap_or_else(|| panic!("no summary in:\n{out}"));
    let inner = &line[line.rfind('(').unwrap() + 1..line.rfind(')').unwrap()];
    let n: Vec<usize> = inner.split(", ").map(|p| p.split(' ').next().unwrap().parse().unwrap()).collect();
    (n[0], n[1], n[2])
}

#[test]
fn push_to_another_repository_mounts_then_uploads_nothing() {
    let Some(reg) = TestRegistry::seeded() else { return };
    let rb = Rbuild::new(&reg);
    rb.ok(&["pull", "debian:bookworm-slim"]);
    let dst = format!("{}/team/debian:v1", reg.host());
    rb.ok(&["tag", "debian:bookworm-slim", &dst]);
    let first = rb.ok(&["push", &dst]);
    assert_eq!(push_counts(&first), (0, 2, 0), "config and layer mounted from library/debian:\n{first}");
    let second = rb.ok(&["push", &dst]);
    assert_eq!(push_counts(&second), (0, 0, 2), "{second}");

    // What we pushed pulls back with the same digest, into a fresh root.
    let fresh = Rbuild::new(&reg);
    let pulled = fresh.ok(&["pull", &dst]);
    let digest = json(&rb.ok(&["inspect", &dst]))["Digest"].as_str().unwrap().to_string();
    assert!(pulled.contains(&digest), "{pulled}");
}

#[test]
fn save_loads_in_docker_skopeo_umoci_and_back() {
    let Some(reg) = TestRegistry::seeded() else { return };
    let rb = Rbuild::new(&reg);
    rb.ok(&["pull", "busybox"]);
    let name = format!("rbuild-test/busybox-{}:v1", std::process::id());
    rb.ok(&["tag", "busybox", &name]);
    let digest = json(&rb.ok(&["inspect", &name]))["Digest"].as_str().unwrap().to_string();
    let dir = reg.scratch();
    let archive = dir.join("busybox.tar");
    let oci = dir.join("busybox-oci.tar");
    rb.ok(&["save", &name, "-o", archive.to_str().unwrap()]);
    rb.ok(&["save", "--format", "oci", &name, "-o", oci.to_str().unwrap()]);

    if which("skopeo").is_some() {
        let copied = dir.join("copied");
        tool(
            "skopeo",
            &[
                "copy",
                "--quiet",
                &format!("docker-archive:{}", archive.display()),
                &format!("oci:{}:x", copied.display()),
            ],
        );
        let v = json(&tool("skopeo", &["inspect", &format!("oci-archive:{}", oci.display())]));
        assert_eq!(v["Digest"], digest.as_str());
        assert_eq!(v["Layers"].as_array().map(Vec::len), Some(1));
    } else {
        support::skip("skopeo is not installed: run scripts/install-test-deps");
    }
    if which("umoci").is_some() {
        let layout = dir.join("layout");
        std::fs::create_dir_all(&layout).unwrap();
        tool("tar", &["-xf", oci.to_str().unwrap(), "-C", layout.to_str().unwrap()]);
        let bundle = dir.join("bundle");
        tool(
            "umoci",
            &["unpack", "--rootless", "--image", &format!("{}:v1", layout.display()), bundle.to_str().unwrap()],
        );
        assert!(bundle.join("rootfs/bin/busybox").is_file());
        assert_eq!(std::fs::read_link(bundle.join("rootfs/bin/sh")).unwrap().to_str(), Some("/bin/busybox"));
    } else {
        support::skip("umoci is not installed: run scripts/install-test-deps");
    }
    if docker_answers() {
        let out = tool("docker", &["load", "-i", archive.to_str().unwrap()]);
        assert!(out.contains(&name), "{out}");
        let ran = tool("docker", &["image", "inspect", "--format", "{{json .Config.Cmd}}", &name]);
        let _ = Command::new("docker").args(["rmi", &name]).output();
        assert_eq!(ran.trim(), r#"["sh"]"#);
    } else {
        support::skip("no docker daemon answers: run scripts/start-dockerd (scripts/test does)");
    }

    // Both archives load back into a fresh root with the same digest.
    for file in [&archive, &oci] {
        let fresh = Rbuild::new(&reg);
        let out = fresh.ok(&["load", "-i", file.to_str().unwrap()]);
        assert!(out.contains("Loaded image"), "{out}");
        let back = json(&fresh.ok(&["inspect", &name]));
        assert_eq!(back["Digest"], digest.as_str(), "{}", file.display());
    }
}

/// `rbuild build -t` keeps the layers it built uncompressed in the local store (nothing to recompress on a
/// rebuild); `rbuild push` compresses them (gzip) into exactly the image `build --push` gives, with the
/// same image ID, and a second push compresses and uploads nothing.
#[test]
fn built_layers_stay_uncompressed_until_push() {
    let Some(reg) = TestRegistry::seeded() else { return };
    let rb = Rbuild::new(&reg);
    let ctx = reg.scratch().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY data /data\nRUN echo built > /built\n").unwrap();
    let data: String = (0..300_000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(ctx.join("data"), data).unwrap();
    let (local, pushed) = (format!("{}/app/local:v1", reg.host()), format!("{}/app/pushed:v1", reg.host()));
    rb.ok(&["build", "-q", "-t", &local, ctx.to_str().unwrap()]);
    let inspected = json(&rb.ok(&["inspect", &local]));
    let types: Vec<&str> =
        inspected["LayersData"].as_array().unwrap().iter().map(|l| l["MIMEType"].as_str().unwrap()).collect();
    assert_eq!(types.len(), 3, "{inspected}");
    assert!(types[0].ends_with("+gzip"), "the base layer stays as pulled: {types:?}");
    assert!(types[1..].iter().all(|t| *t == "application/vnd.oci.image.layer.v1.tar"), "{types:?}");

    let first = rb.ok(&["push", &local]);
    assert_eq!(push_counts(&first), (3, 1, 0), "two built layers and the config uploaded, busybox mounted:\n{first}");
    let second = rb.ok(&["push", &local]);
    assert_eq!(push_counts(&second), (0, 0, 4), "{second}");
    // The same build pushed by the build itself: the same manifest, bit for bit.
    rb.ok(&["build", "-q", "--push", "-t", &pushed, ctx.to_str().unwrap()]);
    let manifest = |r: &str| tool("skopeo", &["inspect", "--raw", "--tls-verify=false", &format!("docker://{r}")]);
    let (a, b) = (manifest(&local), manifest(&pushed));
    assert_eq!(a, b);
    let m = json(&a);
    assert_eq!(m["config"]["digest"], inspected["Id"], "the image ID does not change");
    let layers = m["layers"].as_array().unwrap();
    assert!(layers.iter().all(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"), "{m}");
    // skopeo copies it, decompressing each layer against its diffID.
    let out = reg.scratch().join("copied");
    tool(
        "skopeo",
        &["copy", "--src-tls-verify=false", &format!("docker://{local}"), &format!("oci:{}:x", out.display())],
    );
}
