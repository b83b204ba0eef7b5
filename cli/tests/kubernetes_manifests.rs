//! deploy/kubernetes: the kustomize base and its example overlay render with `kubectl kustomize`, and every
//! object they make passes PyPI's kubernetes-validate (strict: unknown fields are errors) for current
//! Kubernetes versions. No cluster is needed; what one would add is in README.md, "Running a fleet".

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{skip, which};

/// Kubernetes versions the manifests must be valid for: the newest kubernetes-validate knows, and the
/// oldest minor release still supported upstream when this was written.
const VERSIONS: [&str; 2] = ["1.37.0", "1.35.0"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The tools, or a skip saying what to install.
fn tools() -> Option<(PathBuf, PathBuf)> {
    let Some(kubectl) = which("kubectl") else {
        skip("kubectl is not installed (it renders the kustomizations): install kubectl");
        return None;
    };
    let Some(validate) = which("kubernetes-validate") else {
        skip("kubernetes-validate is not installed: run scripts/install-test-deps (as root)");
        return None;
    };
    Some((kubectl, validate))
}

fn render(kubectl: &Path, dir: &str) -> String {
    let out = Command::new(kubectl).args(["kustomize", dir]).current_dir(repo()).output().unwrap();
    assert!(out.status.success(), "kubectl kustomize {dir}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs kubernetes-validate on `yaml` for `version`: success, and what it printed.
fn validate(tool: &Path, yaml: &str, version: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(tool).args(["--strict", "-k", version]).arg(&file).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The `kind/name` of every object in a rendered stream.
fn objects(yaml: &str) -> Vec<String> {
    let mut out = Vec::new();
    for doc in yaml.split("\n---\n") {
        let kind = doc.lines().find_map(|l| l.strip_prefix("kind: ")).unwrap_or("?");
        let name = doc
            .split("\nmetadata:\n")
            .nth(1)
            .and_then(|m| m.lines().take_while(|l| l.starts_with(' ')).find_map(|l| l.trim().strip_prefix("name: ")))
            .unwrap_or("?");
        out.push(format!("{kind}/{name}"));
    }
    out
}

#[test]
fn base_and_example_overlay_render_and_validate() {
    let Some((kubectl, tool)) = tools() else { return };
    for dir in ["deploy/kubernetes/base", "deploy/kubernetes/overlays/example"] {
        let yaml = render(&kubectl, dir);
        let mut kinds: Vec<String> =
            objects(&yaml).into_iter().map(|o| o.split('/').next().unwrap().to_string()).collect();
        kinds.sort();
        let mut want = vec!["ConfigMap", "PodDisruptionBudget", "Service", "StatefulSet"];
        if dir.ends_with("example") {
            want.push("Namespace");
            want.sort();
        }
        assert_eq!(kinds, want, "{dir}: objects {:?}", objects(&yaml));
        for version in VERSIONS {
            let (ok, text) = validate(&tool, &yaml, version);
            assert!(ok, "{dir} against Kubernetes {version}:\n{text}");
            // One line per object that passed: none was left out.
            assert_eq!(text.matches(" passed for resource ").count(), kinds.len(), "{dir} {version}:\n{text}");
        }
    }
}

#[test]
fn the_overlay_sets_what_the_readme_says() {
    let Some((kubectl, _)) = tools() else { return };
    let yaml = render(&kubectl, "deploy/kubernetes/overlays/example");
    for want in [
        "namespace: builds",
        "replicas: 5",
        "image: registry.example.com/tools/rbuild:0.1.0",
        "storage: 200Gi",
        "storageClassName: fast-ssd",
        "clusterIP: None",
        "privileged: true",
        "terminationGracePeriodSeconds: 3600",
        "secretName: rbuild-daemon-tls",
        "path: /readyz",
        "path: /healthz",
        "- --health-addr=0.0.0.0:9090",
        "cache-backend = \"type=registry,ref=registry.example.com/builds/rbuild-cache\"",
    ] {
        assert!(yaml.contains(want), "the overlay lacks {want:?}:\n{yaml}");
    }
    // The generated ConfigMap's name (with its hash) is the one the pods mount.
    let cm = objects(&yaml).into_iter().find(|o| o.starts_with("ConfigMap/")).unwrap();
    let name = cm.strip_prefix("ConfigMap/").unwrap();
    assert!(name.starts_with("rbuild-config-") && yaml.contains(&format!("name: {name}\n")), "{cm}");
}

/// The check can fail: a StatefulSet with a misspelt field or a wrong type is rejected.
#[test]
fn the_validator_rejects_broken_objects() {
    let Some((kubectl, tool)) = tools() else { return };
    let yaml = render(&kubectl, "deploy/kubernetes/base");
    for (from, to) in [
        ("terminationGracePeriodSeconds: 3600", "terminationGracePeriodSecond: 3600"),
        ("replicas: 3", "replicas: three"),
        ("clusterIP: None", "clusterIP: [None]"),
    ] {
        assert!(yaml.contains(from), "{from}");
        let (ok, text) = validate(&tool, &yaml.replacen(from, to, 1), VERSIONS[0]);
        assert!(!ok, "{to:?} passed:\n{text}");
    }
}

/// The container's arguments are ones `rbuild serve` takes, and the ConfigMap's rbuild.toml loads: run with
/// the same flags (paths moved into a temporary directory, addresses onto loopback port 0), the daemon
/// opens its root, reads the fleet cache from the file, and stops only at the TLS files, which are absent.
#[test]
fn the_container_args_are_what_rbuild_serve_takes() {
    let Some((kubectl, _)) = tools() else { return };
    if !rustix::process::geteuid().is_root() {
        skip("opening a state root needs root");
        return;
    }
    let yaml = render(&kubectl, "deploy/kubernetes/overlays/example");
    let args: Vec<String> = yaml
        .split("\n      - args:\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| l.starts_with("        - "))
        .map(|l| l.trim_start_matches("        - ").trim_matches('"').to_string())
        .collect();
    assert_eq!(args.first().map(String::as_str), Some("serve"), "{args:?}");
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("rbuild.toml");
    std::fs::copy(repo().join("deploy/kubernetes/overlays/example/rbuild.toml"), &toml).unwrap();
    let local: Vec<String> = args
        .iter()
        .map(|a| match a.split_once('=') {
            Some(("--config", _)) => format!("--config={}", toml.display()),
            Some(("--root", _)) => format!("--root={}", dir.path().join("root").display()),
            Some(("--addr", _)) => "--addr=tcp://127.0.0.1:0".to_string(),
            Some(("--health-addr", _)) => "--health-addr=127.0.0.1:0".to_string(),
            Some((flag @ ("--tlscacert" | "--tlscert" | "--tlskey"), v)) => {
                format!("{flag}={}", dir.path().join(v.trim_start_matches('/')).display())
            }
            _ => a.clone(),
        })
        .collect();
    assert!(local.iter().any(|a| a.starts_with("--tlskey=")), "{local:?}");
    let out = Command::new(env!("CARGO_BIN_EXE_rbuild")).args(&local).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(!err.contains("Usage:"), "a flag was refused: {err}");
    assert!(
        err.contains("fleet cache: every build imports from and exports to registry.example.com/builds/rbuild-cache"),
        "{err}"
    );
    assert!(err.contains("tls/ca.crt") || err.contains("tls/tls.crt"), "not stopped at the TLS files: {err}");
}
