//! Parity with BuildKit: every case under testdata/parity is built by rbuild and by dockerd's embedded
//! BuildKit from the same context, and the two images must agree on the config fields a Dockerfile sets,
//! the history (created_by, empty_layer, comment; not times), the number of layers and the flattened
//! filesystem (path, type, mode with setuid/sticky bits, owner, size, content digest, link target,
//! hardlink groups; not times).
//!
//! The reference is the BuildKit that the installed dockerd embeds (Debian's docker.io 20.10 vendors
//! BuildKit v0.8); cases that need newer syntax carry a `Dockerfile.buildkit-v0.8` for the docker side and
//! a `history.v0.24` with what BuildKit v0.24 writes (see testdata/parity/README.md).
//!
//! Also: two SOURCE_DATE_EPOCH builds in different state roots give the same manifest digest.
//!
//! Skips, saying why, without root, the seeded registry, skopeo or a running dockerd
//! (`scripts/start-dockerd` starts one).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use support::{skip, which, Rbuild, TestRegistry};

const CASES: &[&str] = &[
    "env-arg",
    "cmd-entrypoint",
    "user-workdir",
    "metadata",
    "copy-modes",
    "add-tar",
    "run-whiteouts",
    "multistage",
    "link-heredoc",
];

/// The image config fields a Dockerfile controls (BuildKit's and Docker's names).
const CONFIG_FIELDS: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "Labels",
    "ExposedPorts",
    "Volumes",
    "StopSignal",
    "Healthcheck",
    "OnBuild",
    "Shell",
];

fn parity_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/parity")
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn output_text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The docker CLI whose `docker build` talks to dockerd's embedded BuildKit: the CLI of the daemon's own
/// version (a newer CLI elsewhere on $PATH insists on the buildx plugin when DOCKER_BUILDKIT=1).
fn docker_cli() -> Option<PathBuf> {
    let mut cands: Vec<PathBuf> = Vec::new();
    if let Some(d) = which("dockerd") {
        cands.push(d.with_file_name("docker"));
    }
    cands.push(PathBuf::from("/usr/bin/docker"));
    cands.extend(which("docker"));
    cands.retain(|c| c.is_file());
    let server = |cli: &Path| {
        let o = Command::new(cli).args(["version", "--format", "{{.Server.Version}}"]).output().ok()?;
        o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let client = |cli: &Path| {
        let o = Command::new(cli).args(["version", "--format", "{{.Client.Version}}"]).output().ok()?;
        Some(String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let first = cands.first()?.clone();
    let want = server(&first)?;
    Some(cands.iter().find(|c| client(c).as_deref() == Some(want.as_str())).cloned().unwrap_or(first))
}

struct Env {
    reg: TestRegistry,
    docker: PathBuf,
}

impl Env {
    fn new() -> Option<Env> {
        if !is_root() {
            skip("parity builds need root (overlay mounts and namespaces)");
            return None;
        }
        let Some(docker) = docker_cli() else {
            skip("no dockerd answers: run scripts/start-dockerd (installs docker.io) to compare with BuildKit");
            return None;
        };
        if which("skopeo").is_none() {
            skip("skopeo is not installed: run scripts/install-test-deps");
            return None;
        }
        let reg = TestRegistry::seeded()?;
        // The same base images in dockerd as rbuild pulls from the mirror.
        for (repo, tag) in [("busybox", "latest"), ("debian", "bookworm-slim")] {
            let out = Command::new("skopeo")
                .arg("copy")
                .arg("--src-tls-verify=false")
                .arg(format!("docker://{}/library/{repo}:{tag}", reg.host()))
                .arg(format!("docker-daemon:{repo}:{tag}"))
                .output()
                .expect("run skopeo");
            assert!(out.status.success(), "skopeo copy {repo}:{tag} into dockerd: {}", output_text(&out));
        }
        Some(Env { reg, docker })
    }
}

/// A copy of a case's context with `setup.sh` run in it.
fn prepare_context(case: &str) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let src = parity_dir().join(case);
    let st = Command::new("cp").arg("-a").arg(format!("{}/.", src.display())).arg(t.path()).status().unwrap();
    assert!(st.success(), "copying {}", src.display());
    if t.path().join("setup.sh").is_file() {
        let out = Command::new("sh").arg("setup.sh").current_dir(t.path()).output().unwrap();
        assert!(out.status.success(), "{case}/setup.sh failed: {}", output_text(&out));
    }
    t
}

fn rbuild_image(rb: &Rbuild, ctx: &Path, dest: &Path, epoch: Option<&str>) -> Result<(), String> {
    let mut c = rb.command();
    c.args(["build", "--progress", "plain", "-f"]).arg(ctx.join("Dockerfile"));
    c.arg("-o").arg(format!("type=docker,dest={},compression=uncompressed", dest.display()));
    c.arg(ctx);
    match epoch {
        Some(e) => c.env("SOURCE_DATE_EPOCH", e),
        None => c.env_remove("SOURCE_DATE_EPOCH"),
    };
    let out = c.output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("rbuild build failed ({}):\n{}", out.status, output_text(&out)))
    }
}

fn docker_image(env: &Env, case: &str, ctx: &Path, dest: &Path) -> Result<(), String> {
    let legacy = ctx.join("Dockerfile.buildkit-v0.8");
    let dockerfile = if legacy.is_file() { legacy } else { ctx.join("Dockerfile") };
    let tag = format!("rbuild-parity/{case}:latest");
    let out = Command::new(&env.docker)
        .env("DOCKER_BUILDKIT", "1")
        .args(["build", "--progress", "plain", "--network", "host", "-t", &tag, "-f"])
        .arg(&dockerfile)
        .arg(ctx)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(format!("docker build failed ({}):\n{}", out.status, output_text(&out)));
    }
    let out = Command::new(&env.docker).args(["save", "-o"]).arg(dest).arg(&tag).output().unwrap();
    let _ = Command::new(&env.docker).args(["rmi", "-f", &tag]).output();
    if !out.status.success() {
        return Err(format!("docker save failed: {}", output_text(&out)));
    }
    Ok(())
}

/// What the parity check compares of one image.
#[derive(Debug)]
struct Image {
    config: BTreeMap<String, Value>,
    history: Vec<String>,
    layers: usize,
    files: BTreeMap<String, FileEntry>,
    hardlinks: BTreeSet<Vec<String>>,
    /// Malformed layer entries (e.g. a header field a strict tar reader rejects).
    problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileEntry {
    kind: char,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    digest: String,
    link: String,
    /// Which hardlink group (an index into a per-image table) the file belongs to.
    inode: usize,
}

impl FileEntry {
    fn line(&self) -> String {
        format!(
            "{} {:04o} {}:{} size={} {}{}",
            self.kind,
            self.mode,
            self.uid,
            self.gid,
            self.size,
            if self.digest.is_empty() { String::new() } else { format!("sha256:{}", &self.digest[..16]) },
            if self.link.is_empty() { String::new() } else { format!(" -> {}", self.link) }
        )
    }
}

/// Reads a docker-archive (`docker save` layout) into what [`Image`] compares.
fn read_docker_archive(path: &Path) -> Image {
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new("tar").arg("-xf").arg(path).arg("-C").arg(dir.path()).status().unwrap();
    assert!(st.success(), "unpacking {}", path.display());
    let manifest: Value = serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    let m = &manifest[0];
    let config: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(m["Config"].as_str().unwrap())).unwrap()).unwrap();
    let mut fields = BTreeMap::new();
    for f in CONFIG_FIELDS {
        match &config["config"][*f] {
            Value::Null => {}
            v => {
                fields.insert(f.to_string(), v.clone());
            }
        }
    }
    let history = config["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|e| {
                    format!(
                        "{} | empty_layer={} | comment={}",
                        e["created_by"].as_str().unwrap_or(""),
                        e["empty_layer"].as_bool().unwrap_or(false),
                        e["comment"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let layers: Vec<PathBuf> =
        m["Layers"].as_array().unwrap().iter().map(|l| dir.path().join(l.as_str().unwrap())).collect();
    let mut fs = Flattened::default();
    for l in &layers {
        fs.apply(l);
    }
    let problems = std::mem::take(&mut fs.problems);
    let (files, hardlinks) = fs.finish();
    Image { config: fields, history, layers: layers.len(), files, hardlinks, problems }
}

/// Layers applied in order, with OCI whiteouts, into one listing.
#[derive(Default)]
struct Flattened {
    files: BTreeMap<String, FileEntry>,
    inodes: usize,
    problems: Vec<String>,
}

struct RawEntry {
    path: String,
    kind: char,
    mode: u32,
    uid: u64,
    gid: u64,
    data: Vec<u8>,
    link: String,
}

fn clean(p: &str) -> String {
    let parts: Vec<&str> = p.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
    format!("/{}", parts.join("/"))
}

fn parent(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &p[..i],
    }
}

fn under(p: &str, dir: &str) -> bool {
    dir == "/" || p.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

impl Flattened {
    fn apply(&mut self, layer: &Path) {
        let mut raw = Vec::new();
        std::fs::File::open(layer).unwrap().read_to_end(&mut raw).unwrap();
        if raw.starts_with(&[0x1f, 0x8b]) {
            let out = Command::new("gzip")
                .arg("-dc")
                .arg(layer)
                .output()
                .unwrap_or_else(|e| panic!("gzip -dc {}: {e}", layer.display()));
            assert!(out.status.success(), "gzip -dc {}", layer.display());
            raw = out.stdout;
        }
        let mut entries = Vec::new();
        let mut archive = tar::Archive::new(raw.as_slice());
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let path = clean(&e.path().unwrap().to_string_lossy());
            let link = e.link_name().unwrap().map(|l| l.to_string_lossy().into_owned()).unwrap_or_default();
            let kind = match h.entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => 'f',
                tar::EntryType::Directory => 'd',
                tar::EntryType::Symlink => 'l',
                tar::EntryType::Link => 'h',
                tar::EntryType::Char => 'c',
                tar::EntryType::Block => 'b',
                tar::EntryType::Fifo => 'p',
                other => panic!("{}: unexpected tar entry type {other:?} for {path}", layer.display()),
            };
            let mut data = Vec::new();
            if kind == 'f' {
                e.read_to_end(&mut data).unwrap();
            }
            let mut numeric = |what: &str, v: std::io::Result<u64>| {
                v.unwrap_or_else(|e| {
                    self.problems.push(format!("layer {}: {path}: bad {what} field: {e}", layer.display()));
                    0
                })
            };
            let mode = numeric("mode", h.mode().map(u64::from)) as u32 & 0o7777;
            let uid = numeric("uid", h.uid());
            let gid = numeric("gid", h.gid());
            entries.push(RawEntry { path, kind, mode, uid, gid, data, link });
        }
        // Whiteouts apply to the layers below, before this layer's own entries.
        for e in &entries {
            let name = e.path.rsplit('/').next().unwrap_or("");
            let dir = parent(&e.path).to_string();
            if name == ".wh..wh..opq" {
                self.files.retain(|p, _| !under(p, &dir));
            } else if let Some(gone) = name.strip_prefix(".wh.") {
                let gone = clean(&format!("{dir}/{gone}"));
                self.files.retain(|p, _| *p != gone && !under(p, &gone));
            }
        }
        for e in entries {
            let name = e.path.rsplit('/').next().unwrap_or("");
            if name.starts_with(".wh.") || e.path == "/" {
                continue;
            }
            let entry = if e.kind == 'h' {
                let target = clean(&e.link);
                let mut t = self
                    .files
                    .get(&target)
                    .cloned()
                    .unwrap_or_else(|| panic!("{}: hardlink {} to missing {target}", layer.display(), e.path));
                t.mode = e.mode;
                t
            } else {
                self.inodes += 1;
                FileEntry {
                    kind: e.kind,
                    mode: e.mode,
                    uid: e.uid,
                    gid: e.gid,
                    size: e.data.len() as u64,
                    digest: if e.kind == 'f' { llb::Digest::of(&e.data).hex() } else { String::new() },
                    link: e.link,
                    inode: self.inodes,
                }
            };
            // A non-directory replaces whatever was there; a directory over a directory keeps its contents.
            if entry.kind != 'd' {
                self.files.retain(|p, _| !under(p, &e.path));
            }
            self.files.insert(e.path, entry);
        }
    }

    fn finish(self) -> (BTreeMap<String, FileEntry>, BTreeSet<Vec<String>>) {
        let mut groups: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for (p, f) in &self.files {
            if f.kind == 'f' {
                groups.entry(f.inode).or_default().push(p.clone());
            }
        }
        let hardlinks = groups.into_values().filter(|g| g.len() > 1).collect();
        (self.files, hardlinks)
    }
}

/// Every difference between the two images, one per line; empty when they agree.
fn compare(rb: &Image, bk: &Image, history_v024: Option<&[String]>) -> Vec<String> {
    let mut d = Vec::new();
    for p in &rb.problems {
        d.push(format!("rbuild archive: {p}"));
    }
    for f in CONFIG_FIELDS {
        let (a, b) = (rb.config.get(*f), bk.config.get(*f));
        if a != b {
            let show = |v: Option<&Value>| v.map(|v| v.to_string()).unwrap_or_else(|| "(unset)".into());
            d.push(format!("config {f}: rbuild {} / buildkit {}", show(a), show(b)));
        }
    }
    let want_history = history_v024.unwrap_or(&bk.history);
    for i in 0..rb.history.len().max(want_history.len()) {
        let (a, b) = (rb.history.get(i), want_history.get(i));
        if a != b {
            let show = |h: Option<&String>| h.map(String::as_str).unwrap_or("(none)").to_string();
            d.push(format!("history[{i}]: rbuild `{}` / buildkit `{}`", show(a), show(b)));
        }
    }
    if rb.layers != bk.layers {
        d.push(format!("layers: rbuild {} / buildkit {}", rb.layers, bk.layers));
    }
    let paths: BTreeSet<&String> = rb.files.keys().chain(bk.files.keys()).collect();
    for p in paths {
        match (rb.files.get(p), bk.files.get(p)) {
            (Some(a), Some(b)) => {
                let (mut a, mut b) = (a.clone(), b.clone());
                a.inode = 0;
                b.inode = 0;
                if a != b {
                    d.push(format!("{p}: rbuild {} / buildkit {}", a.line(), b.line()));
                }
            }
            (Some(a), None) => d.push(format!("{p}: only in rbuild ({})", a.line())),
            (None, Some(b)) => d.push(format!("{p}: only in buildkit ({})", b.line())),
            (None, None) => unreachable!(),
        }
    }
    for g in rb.hardlinks.difference(&bk.hardlinks) {
        d.push(format!("hardlinks only in rbuild: {}", g.join(" = ")));
    }
    for g in bk.hardlinks.difference(&rb.hardlinks) {
        d.push(format!("hardlinks only in buildkit: {}", g.join(" = ")));
    }
    d
}

/// `buildkit-v0.8.diff`: difference lines that come from BuildKit v0.8 (dockerd's) behaving unlike v0.24,
/// each explained by a `#` comment with a source link in the file. Every listed line must still occur, so
/// the list cannot go stale.
fn known_v08_differences(case: &str) -> Vec<String> {
    std::fs::read_to_string(parity_dir().join(case).join("buildkit-v0.8.diff"))
        .map(|t| t.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).map(str::to_string).collect())
        .unwrap_or_default()
}

/// `history.v0.24.json`: the history entries (a JSON array of strings in the form [`compare`] prints) that
/// BuildKit v0.24 writes for this case's own steps, for a case dockerd's BuildKit cannot build as written.
fn expected_history(case: &str) -> Option<Vec<String>> {
    let path = parity_dir().join(case).join("history.v0.24.json");
    let text = std::fs::read(&path).ok()?;
    Some(serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn run_case(env: &Env, case: &str) -> Result<(), String> {
    let ctx = prepare_context(case);
    let out = tempfile::tempdir().unwrap();
    let rb = Rbuild::new(&env.reg);
    rbuild_image(&rb, ctx.path(), &out.path().join("rbuild.tar"), None)?;
    docker_image(env, case, ctx.path(), &out.path().join("docker.tar"))?;
    let a = read_docker_archive(&out.path().join("rbuild.tar"));
    let b = read_docker_archive(&out.path().join("docker.tar"));
    let base_history = expected_history(case);
    let expected = base_history.map(|tail| {
        // The file lists this case's own steps; the base image's entries come first.
        let mut h: Vec<String> = b.history.iter().take(b.history.len().saturating_sub(tail.len())).cloned().collect();
        h.extend(tail);
        h
    });
    let known = known_v08_differences(case);
    let diff = compare(&a, &b, expected.as_deref());
    let mut report: Vec<String> = diff.iter().filter(|l| !known.contains(l)).cloned().collect();
    for k in known.iter().filter(|k| !diff.contains(k)) {
        report.push(format!("listed in {case}/buildkit-v0.8.diff but no longer different: {k}"));
    }
    if report.is_empty() {
        Ok(())
    } else {
        Err(report.join("\n"))
    }
}

#[test]
fn images_match_buildkit() {
    let Some(env) = Env::new() else { return };
    let only = std::env::var("PARITY_CASE").ok();
    let mut failures = String::new();
    let mut ran = 0;
    for case in CASES.iter().filter(|c| only.as_deref().is_none_or(|o| o == **c)) {
        ran += 1;
        if let Err(e) = run_case(&env, case) {
            writeln!(failures, "=== {case}\n{e}").unwrap();
        }
    }
    assert!(ran > 0, "PARITY_CASE={only:?} names no case in {CASES:?}");
    assert!(failures.is_empty(), "images differ from BuildKit's:\n{failures}");
}

#[test]
fn every_case_is_listed() {
    let mut on_disk: Vec<String> = std::fs::read_dir(parity_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Dockerfile").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = CASES.iter().map(|c| c.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "testdata/parity and CASES in cli/tests/parity.rs disagree");
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
