//! Parity with BuildKit v0.24: every case under testdata/parity is built by rbuild, and the image must
//! agree with `buildkit-v0.24.json`, the normalised image BuildKit v0.24.0 built from the same context
//! (see `parity/normalize.rs` for what is compared and testdata/parity/README.md for the case files).
//! The golden files are data: these tests need no BuildKit.
//!
//! `write_golden_from_buildkit` (ignored) writes the golden files with a running buildkitd v0.24:
//! `cargo test -p rbuild --test parity -- --ignored --nocapture write_golden_from_buildkit`, with
//! `BUILDKIT_HOST` (default `unix:///run/buildkit-v0.24/buildkitd.sock`) and `BUILDCTL` (default
//! `/opt/buildkit-v0.24/bin/buildctl`, else `buildctl` on $PATH); `PARITY_CASE=a,b` limits either test to
//! those cases.
//!
//! Also: two SOURCE_DATE_EPOCH builds in different state roots give the same manifest digest.
//!
//! The builds skip, saying why, without root or the seeded registry.

mod support;

#[path = "parity/git.rs"]
mod git;
#[path = "parity/normalize.rs"]
mod normalize;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use normalize::{differences, read_oci_archive, Normalized};
use serde_json::{json, Value};
use support::{skip, which, Rbuild, TestRegistry};

/// The golden file of a case: what BuildKit v0.24 built.
const GOLDEN: &str = "buildkit-v0.24.json";
/// Difference lines (as [`differences`] prints them) rbuild is known to have, each explained by `#` lines.
const KNOWN: &str = "differences.txt";
/// The docker.io mirror buildkitd uses when the golden files are written (scripts/local-mirror): what
/// `{registry}` stands for then.
const GOLDEN_REGISTRY: &str = "127.0.0.1:5555";
/// What a case's files say instead of the registry address.
const REGISTRY_PLACEHOLDER: &str = "{registry}";
/// What a case's files say instead of the address of the git server ([`git::GitServer`]).
const GIT_PLACEHOLDER: &str = "{git}";
/// At least this many cases (issue 17).
const MIN_CASES: usize = 60;

fn parity_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/parity")
}

/// Every case: a directory with a Dockerfile.
fn cases() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(parity_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Dockerfile").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

fn selected_cases() -> Vec<String> {
    let only = std::env::var("PARITY_CASE").ok();
    let all = cases();
    let wanted = |c: &str| only.as_deref().is_none_or(|o| o.split(',').any(|o| o.trim() == c));
    let picked: Vec<String> = all.iter().filter(|c| wanted(c)).cloned().collect();
    assert!(!picked.is_empty(), "PARITY_CASE={only:?} names no case in {all:?}");
    picked
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn output_text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A copy of a case's context with `setup.sh` run in it.
fn prepare_context(case: &str) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let src = parity_dir().join(case);
    let st = Command::new("cp").arg("-a").arg(format!("{}/.", src.display())).arg(t.path()).status().unwrap();
    assert!(st.success(), "copying {}", src.display());
    // The harness's own files are not part of the context (a golden file in it would change what it
    // describes).
    for f in [GOLDEN, KNOWN] {
        let _ = std::fs::remove_file(t.path().join(f));
    }
    if t.path().join("setup.sh").is_file() {
        let out = Command::new("sh").arg("setup.sh").current_dir(t.path()).output().unwrap();
        assert!(out.status.success(), "{case}/setup.sh failed: {}", output_text(&out));
    }
    t
}

/// The addresses a case's placeholders stand for in one run.
struct Servers<'a> {
    registry: String,
    git: Option<&'a git::GitServer>,
}

impl Servers<'_> {
    fn fill(&self, text: &str) -> String {
        let text = text.replace(REGISTRY_PLACEHOLDER, &self.registry);
        match self.git {
            Some(g) => text.replace(GIT_PLACEHOLDER, &g.host()),
            None => text,
        }
    }

    /// The addresses written back as placeholders in an image's history and config.
    fn unfill(&self, img: &mut Normalized) {
        img.replace_text(&self.registry, REGISTRY_PLACEHOLDER);
        if let Some(g) = self.git {
            img.replace_text(&g.host(), GIT_PLACEHOLDER);
        }
    }
}

fn build_args_text(case: &str) -> String {
    std::fs::read_to_string(parity_dir().join(case).join("build-args")).unwrap_or_default()
}

/// Whether a case builds from the git server.
fn needs_git(case: &str) -> bool {
    build_args_text(case).contains(GIT_PLACEHOLDER)
}

/// `build-args`: `KEY=VALUE` lines, `{registry}` and `{git}` standing for the servers' addresses;
/// SOURCE_DATE_EPOCH=0 always, so both engines stamp the same times.
fn build_args(case: &str, servers: &Servers<'_>) -> Vec<String> {
    let mut args = vec!["SOURCE_DATE_EPOCH=0".to_string()];
    args.extend(
        build_args_text(case).lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).map(|l| servers.fill(l)),
    );
    args
}

/// The git server, started for the first case that needs it.
fn git_server(slot: &mut Option<git::GitServer>) -> Result<&git::GitServer, String> {
    if slot.is_none() {
        *slot = Some(git::GitServer::start()?);
    }
    Ok(slot.as_ref().expect("just started"))
}

/// `target`: the stage to build, when not the last.
fn target(case: &str) -> Option<String> {
    std::fs::read_to_string(parity_dir().join(case).join("target")).ok().map(|t| t.trim().to_string())
}

/// The normalised image, or the build's error (its last line).
type Built = Result<Normalized, String>;

fn rbuild_image(rb: &Rbuild, servers: &Servers<'_>, case: &str, ctx: &Path, dest: &Path) -> Built {
    let mut c = rb.command();
    c.args(["build", "--progress", "plain", "-f"]).arg(ctx.join("Dockerfile"));
    for a in build_args(case, servers) {
        c.arg("--build-arg").arg(a);
    }
    if let Some(t) = target(case) {
        c.arg("--target").arg(t);
    }
    c.arg("-o").arg(format!("type=oci,dest={}", dest.display()));
    c.arg(ctx).env_remove("SOURCE_DATE_EPOCH");
    let out = c.output().unwrap();
    if !out.status.success() {
        return Err(last_error_line(&out));
    }
    let mut img = read_oci_archive(dest).unwrap_or_else(|e| panic!("{case}: reading rbuild's image: {e}"));
    servers.unfill(&mut img);
    Ok(img)
}

/// The error a failed build printed: its `ERROR:`/`error:` line, else its last line.
fn last_error_line(out: &Output) -> String {
    let text = output_text(out);
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let error = lines.iter().rev().find(|l| l.to_ascii_lowercase().starts_with("error:"));
    error.or(lines.last()).copied().unwrap_or("").to_string()
}

fn read_golden(case: &str) -> Value {
    let path = parity_dir().join(case).join(GOLDEN);
    let text = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (write it: see testdata/parity/README.md)", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `differences.txt`: difference lines rbuild is known to have, each explained by a `#` comment in the
/// file. Every listed line must still occur, so the list cannot go stale.
fn known_differences(case: &str) -> Vec<String> {
    std::fs::read_to_string(parity_dir().join(case).join(KNOWN))
        .map(|t| t.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).map(str::to_string).collect())
        .unwrap_or_default()
}

fn compare_case(case: &str, built: &Built, golden: &Value) -> Vec<String> {
    match (built, golden.get("error").and_then(Value::as_str)) {
        (Ok(img), None) => {
            let want = Normalized::from_json(golden).unwrap_or_else(|e| panic!("{case}/{GOLDEN}: {e}"));
            differences(img, &want)
        }
        (Err(e), None) => vec![format!("build: rbuild failed: {e}")],
        (Ok(_), Some(_)) => vec!["build: rbuild succeeded / buildkit failed".to_string()],
        (Err(_), Some(_)) => Vec::new(),
    }
}

#[test]
fn images_match_buildkit_v024() {
    if !is_root() {
        skip("parity builds need root (overlay mounts and namespaces)");
        return;
    }
    let Some(reg) = TestRegistry::seeded() else { return };
    // One state root for all cases: later cases also check that cache hits give the same image.
    let rb = Rbuild::new(&reg);
    let report_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("parity");
    std::fs::create_dir_all(&report_dir).unwrap();
    let mut failures = String::new();
    let mut git = None;
    for case in selected_cases() {
        let golden = read_golden(&case);
        let ctx = prepare_context(&case);
        let out = tempfile::tempdir().unwrap();
        let git = if needs_git(&case) {
            if which("git").is_none() {
                skip(&format!("{case}: git is not installed: run scripts/install-test-deps"));
                continue;
            }
            Some(git_server(&mut git).unwrap_or_else(|e| panic!("{case}: {e}")))
        } else {
            None
        };
        let servers = Servers { registry: reg.host(), git };
        let built = rbuild_image(&rb, &servers, &case, ctx.path(), &out.path().join("image.tar"));
        let shown = match &built {
            Ok(img) => img.to_json(),
            Err(e) => json!({ "error": e }),
        };
        std::fs::write(report_dir.join(format!("{case}.json")), serde_json::to_string_pretty(&shown).unwrap()).unwrap();
        let diff = compare_case(&case, &built, &golden);
        let known = known_differences(&case);
        let mut report: Vec<String> = diff.iter().filter(|l| !known.contains(l)).cloned().collect();
        for k in known.iter().filter(|k| !diff.contains(k)) {
            report.push(format!("listed in {case}/{KNOWN} but no longer different: {k}"));
        }
        if !report.is_empty() {
            writeln!(failures, "=== {case}\n{}", report.join("\n")).unwrap();
        }
    }
    assert!(
        failures.is_empty(),
        "images differ from BuildKit v0.24's (rbuild's side is in {}):\n{failures}",
        report_dir.display()
    );
}

#[test]
fn every_case_has_golden_data() {
    let all = cases();
    assert!(all.len() >= MIN_CASES, "testdata/parity holds {} cases, fewer than {MIN_CASES}", all.len());
    for case in &all {
        let golden = read_golden(case);
        assert!(
            golden.get("error").is_some() || Normalized::from_json(&golden).is_ok(),
            "{case}/{GOLDEN} is neither an image nor an error"
        );
    }
}

/// buildctl, and the address of the buildkitd v0.24 it talks to.
fn buildctl() -> Option<(PathBuf, String)> {
    let bin = std::env::var_os("BUILDCTL")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/opt/buildkit-v0.24/bin/buildctl")).filter(|p| p.is_file()))
        .or_else(|| which("buildctl"))?;
    let addr =
        std::env::var("BUILDKIT_HOST").unwrap_or_else(|_| "unix:///run/buildkit-v0.24/buildkitd.sock".to_string());
    Some((bin, addr))
}

fn buildctl_image(
    bin: &Path,
    addr: &str,
    servers: &Servers<'_>,
    case: &str,
    ctx: &Path,
    dest: &Path,
) -> Result<Value, String> {
    let dockerfile = if ctx.join("Dockerfile.buildkit").is_file() { "Dockerfile.buildkit" } else { "Dockerfile" };
    let mut c = Command::new(bin);
    c.args(["--addr", addr, "build", "--progress", "plain", "--frontend", "dockerfile.v0"]);
    c.arg("--local").arg(format!("context={}", ctx.display()));
    c.arg("--local").arg(format!("dockerfile={}", ctx.display()));
    c.arg("--opt").arg(format!("filename={dockerfile}"));
    for a in build_args(case, servers) {
        c.arg("--opt").arg(format!("build-arg:{a}"));
    }
    if let Some(t) = target(case) {
        c.arg("--opt").arg(format!("target={t}"));
    }
    c.arg("--output").arg(format!("type=oci,dest={}", dest.display()));
    let out = c.output().map_err(|e| format!("running {}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(last_error_line(&out));
    }
    let mut img = read_oci_archive(dest)?;
    servers.unfill(&mut img);
    Ok(img.to_json())
}

/// Writes `testdata/parity/*/buildkit-v0.24.json` from BuildKit v0.24 (see the module comment).
#[test]
#[ignore = "needs buildkitd v0.24 and the docker.io mirror on 127.0.0.1:5555; writes the golden files"]
fn write_golden_from_buildkit() {
    let (bin, addr) = buildctl().expect("buildctl not found: set BUILDCTL");
    let version = Command::new(&bin).arg("--version").output().expect("buildctl --version");
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    assert!(version.contains(" v0.24."), "golden data comes from BuildKit v0.24, not {version}");
    let who = format!("{} (buildctl build --frontend dockerfile.v0, OCI worker)", version.replacen("buildctl ", "", 1));
    let mut git = None;
    for case in selected_cases() {
        let ctx = prepare_context(&case);
        let out = tempfile::tempdir().unwrap();
        let git = needs_git(&case).then(|| git_server(&mut git).unwrap_or_else(|e| panic!("{case}: {e}")));
        let servers = Servers { registry: GOLDEN_REGISTRY.to_string(), git };
        let mut doc = json!({ "reference": who });
        match buildctl_image(&bin, &addr, &servers, &case, ctx.path(), &out.path().join("image.tar")) {
            Ok(Value::Object(m)) => doc.as_object_mut().unwrap().extend(m),
            Ok(other) => panic!("{case}: unexpected {other}"),
            Err(e) => {
                eprintln!("{case}: BuildKit failed: {e}");
                // Cache ref ids (`p7mr9…::zywk…`) differ on every run.
                let words: Vec<String> = e
                    .split(' ')
                    .map(|w| {
                        if w.contains("::") {
                            format!("…{}", if w.ends_with(':') { ":" } else { "" })
                        } else {
                            w.into()
                        }
                    })
                    .collect();
                doc["error"] = Value::String(words.join(" "));
            }
        }
        let path = parity_dir().join(&case).join(GOLDEN);
        std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
        eprintln!("wrote {}", path.display());
    }
}

#[test]
fn source_date_epoch_builds_are_bit_for_bit_equal() {
    if !is_root() {
        skip("builds need root (overlay mounts and namespaces)");
        return;
    }
    let Some(reg) = TestRegistry::seeded() else { return };
    // Context files (copy-modes) and files that RUN writes at build time (run-whiteouts).
    for case in ["copy-modes", "run-whiteouts"] {
        let mut digests = Vec::new();
        for i in 0..2 {
            // Two contexts made at different times, two state roots: nothing may leak their differences.
            let ctx = prepare_context(case);
            if i == 1 {
                std::thread::sleep(std::time::Duration::from_millis(1100));
                let st = Command::new("touch").arg(ctx.path().join("Dockerfile")).status().unwrap();
                assert!(st.success());
            }
            let rb = Rbuild::new(&reg);
            let out = tempfile::tempdir().unwrap();
            let meta = out.path().join("metadata.json");
            let mut c = rb.command();
            c.args(["build", "--progress", "plain", "--metadata-file"]).arg(&meta);
            c.arg("-o").arg(format!("type=oci,dest={}", out.path().join("image.tar").display()));
            c.arg(ctx.path()).env("SOURCE_DATE_EPOCH", "1700000000");
            let o = c.output().unwrap();
            assert!(o.status.success(), "{case}: rbuild build failed:\n{}", output_text(&o));
            let m: Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
            let digest = m["containerimage.digest"].as_str().expect("containerimage.digest in metadata").to_string();
            let tar_bytes = std::fs::read(out.path().join("image.tar")).unwrap();
            digests.push((digest, llb::Digest::of(&tar_bytes)));
        }
        assert_eq!(digests[0].0, digests[1].0, "{case}: manifest digests differ between two SOURCE_DATE_EPOCH builds");
        assert_eq!(digests[0].1, digests[1].1, "{case}: the OCI archives differ between two SOURCE_DATE_EPOCH builds");
    }
}
