//! An OCI image archive reduced to what the parity tests compare, as JSON data: the image config a
//! Dockerfile controls, the history (created_by, empty_layer, comment; not times), the layer counts and
//! the flattened filesystem relative to the base image (path, type, mode with setuid/setgid/sticky
//! bits, owner, size, content digest, link target, device numbers, xattrs, hardlink groups; not times).
//!
//! The base image's own files are left out (only what the build changed or removed is listed), so the
//! data holds no digest of the seeded busybox or debian, whose bytes depend on the machine that seeded
//! them.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Map, Value};

/// The comment BuildKit's Dockerfile frontend (and rbuild's) writes on its history entries: entries
/// before the first one carrying it belong to the base image.
const DOCKERFILE_COMMENT: &str = "buildkit.dockerfile.v0";

/// A file's content is shown as text when it is this short and printable.
const TEXT_PREVIEW: usize = 512;

/// What the parity check compares of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    /// The image config's `config` object, whole.
    pub config: Value,
    pub author: Option<String>,
    pub history: Vec<String>,
    /// Layers of the base image (the leading layers whose history entries are not the Dockerfile's).
    pub base_layers: usize,
    pub layers: usize,
    /// Paths the build added or changed, with their [`FileEntry::line`].
    pub files: BTreeMap<String, String>,
    /// Paths of the base image that the build removed.
    pub removed: Vec<String>,
    /// Groups of hardlinked regular files with at least one path in `files`.
    pub hardlinks: Vec<Vec<String>>,
    /// Malformed layer entries (a header field a strict tar reader rejects).
    pub problems: Vec<String>,
}

impl Normalized {
    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("config".into(), self.config.clone());
        if let Some(a) = &self.author {
            o.insert("author".into(), Value::String(a.clone()));
        }
        o.insert("history".into(), json!(self.history));
        o.insert("layers".into(), json!({ "base": self.base_layers, "total": self.layers }));
        o.insert("files".into(), json!(self.files));
        o.insert("removed".into(), json!(self.removed));
        o.insert("hardlinks".into(), json!(self.hardlinks));
        if !self.problems.is_empty() {
            o.insert("problems".into(), json!(self.problems));
        }
        Value::Object(o)
    }

    pub fn from_json(v: &Value) -> Result<Normalized, String> {
        let strings = |k: &str| -> Result<Vec<String>, String> {
            serde_json::from_value(v.get(k).cloned().unwrap_or(json!([]))).map_err(|e| format!("{k}: {e}"))
        };
        let count = |k: &str| v["layers"][k].as_u64().map(|n| n as usize).ok_or(format!("layers.{k} is missing"));
        Ok(Normalized {
            config: v.get("config").cloned().unwrap_or(Value::Null),
            author: v.get("author").and_then(Value::as_str).map(str::to_string),
            history: strings("history")?,
            base_layers: count("base")?,
            layers: count("total")?,
            files: serde_json::from_value(v.get("files").cloned().unwrap_or(json!({})))
                .map_err(|e| format!("files: {e}"))?,
            removed: strings("removed")?,
            hardlinks: serde_json::from_value(v.get("hardlinks").cloned().unwrap_or(json!([])))
                .map_err(|e| format!("hardlinks: {e}"))?,
            problems: strings("problems")?,
        })
    }

    /// Replaces `from` by `to` in the config and history (an address that differs between runs).
    pub fn replace_text(&mut self, from: &str, to: &str) {
        for h in &mut self.history {
            *h = h.replace(from, to);
        }
        let text = self.config.to_string().replace(from, to);
        self.config = serde_json::from_str(&text).expect("config JSON stays JSON");
    }
}

/// Every difference between `actual` (rbuild's) and `golden` (BuildKit's), one per line.
pub fn differences(actual: &Normalized, golden: &Normalized) -> Vec<String> {
    let mut d = Vec::new();
    for p in &actual.problems {
        d.push(format!("rbuild archive: {p}"));
    }
    let empty = Map::new();
    let (a, b) = (actual.config.as_object().unwrap_or(&empty), golden.config.as_object().unwrap_or(&empty));
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        if a.get(k) != b.get(k) {
            let show = |v: Option<&Value>| v.map(|v| v.to_string()).unwrap_or_else(|| "(unset)".into());
            d.push(format!("config {k}: rbuild {} / buildkit {}", show(a.get(k)), show(b.get(k))));
        }
    }
    if actual.author != golden.author {
        d.push(format!("author: rbuild {:?} / buildkit {:?}", actual.author, golden.author));
    }
    for i in 0..actual.history.len().max(golden.history.len()) {
        let (a, b) = (actual.history.get(i), golden.history.get(i));
        if a != b {
            let show = |h: Option<&String>| h.map(String::as_str).unwrap_or("(none)").to_string();
            d.push(format!("history[{i}]: rbuild `{}` / buildkit `{}`", show(a), show(b)));
        }
    }
    if (actual.base_layers, actual.layers) != (golden.base_layers, golden.layers) {
        d.push(format!(
            "layers (base/total): rbuild {}/{} / buildkit {}/{}",
            actual.base_layers, actual.layers, golden.base_layers, golden.layers
        ));
    }
    let paths: BTreeSet<&String> = actual.files.keys().chain(golden.files.keys()).collect();
    for p in paths {
        match (actual.files.get(p), golden.files.get(p)) {
            (Some(a), Some(b)) if a != b => d.push(format!("{p}: rbuild {a} / buildkit {b}")),
            (Some(_), Some(_)) => {}
            (Some(a), None) => d.push(format!("{p}: only in rbuild ({a})")),
            (None, Some(b)) => d.push(format!("{p}: only in buildkit ({b})")),
            (None, None) => unreachable!(),
        }
    }
    let (ra, rb): (BTreeSet<&String>, BTreeSet<&String>) =
        (actual.removed.iter().collect(), golden.removed.iter().collect());
    for p in ra.difference(&rb) {
        d.push(format!("{p}: removed only by rbuild"));
    }
    for p in rb.difference(&ra) {
        d.push(format!("{p}: removed only by buildkit"));
    }
    let (ha, hb): (BTreeSet<&Vec<String>>, BTreeSet<&Vec<String>>) =
        (actual.hardlinks.iter().collect(), golden.hardlinks.iter().collect());
    for g in ha.difference(&hb) {
        d.push(format!("hardlinks only in rbuild: {}", g.join(" = ")));
    }
    for g in hb.difference(&ha) {
        d.push(format!("hardlinks only in buildkit: {}", g.join(" = ")));
    }
    d
}

/// Reads an OCI image layout archive (`-o type=oci`) into what [`differences`] compares.
pub fn read_oci_archive(path: &Path) -> Result<Normalized, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let st = Command::new("tar").arg("-xf").arg(path).arg("-C").arg(dir.path()).status().map_err(|e| e.to_string())?;
    if !st.success() {
        return Err(format!("unpacking {} failed", path.display()));
    }
    let blob = |digest: &str| -> Result<std::path::PathBuf, String> {
        let (alg, hex) = digest.split_once(':').ok_or(format!("bad digest {digest}"))?;
        Ok(dir.path().join("blobs").join(alg).join(hex))
    };
    let read_json = |p: &Path| -> Result<Value, String> {
        serde_json::from_slice(&std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?)
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let mut desc = read_json(&dir.path().join("index.json"))?["manifests"][0].clone();
    // An index (several platforms or attestations) names the image manifest.
    loop {
        let doc = read_json(&blob(desc["digest"].as_str().ok_or("descriptor without digest")?)?)?;
        if doc.get("manifests").is_some() {
            desc = doc["manifests"]
                .as_array()
                .and_then(|m| m.iter().find(|d| d["platform"]["architecture"] != "unknown"))
                .cloned()
                .ok_or("index without an image manifest")?;
            continue;
        }
        let config = read_json(&blob(doc["config"]["digest"].as_str().ok_or("manifest without config")?)?)?;
        let layers: Vec<std::path::PathBuf> = doc["layers"]
            .as_array()
            .ok_or("manifest without layers")?
            .iter()
            .map(|l| blob(l["digest"].as_str().unwrap_or_default()))
            .collect::<Result<_, _>>()?;
        return normalize(&config, &layers);
    }
}

fn normalize(config: &Value, layers: &[std::path::PathBuf]) -> Result<Normalized, String> {
    let entries: Vec<&Value> = config["history"].as_array().map(|h| h.iter().collect()).unwrap_or_default();
    let history = entries
        .iter()
        .map(|e| {
            format!(
                "{} | empty_layer={} | comment={}",
                mask_pointers(e["created_by"].as_str().unwrap_or("")),
                e["empty_layer"].as_bool().unwrap_or(false),
                e["comment"].as_str().unwrap_or("")
            )
        })
        .collect();
    let base_layers = entries
        .iter()
        .take_while(|e| e["comment"].as_str() != Some(DOCKERFILE_COMMENT))
        .filter(|e| !e["empty_layer"].as_bool().unwrap_or(false))
        .count()
        .min(layers.len());
    let mut fs = Flattened::default();
    for l in &layers[..base_layers] {
        fs.apply(l)?;
    }
    let base = fs.files.clone();
    for l in &layers[base_layers..] {
        fs.apply(l)?;
    }
    let mut files = BTreeMap::new();
    let mut changed_inodes = BTreeSet::new();
    for (p, f) in fs.files.iter().filter(|(p, _)| !git_internal(p)) {
        if base.get(p).is_none_or(|b| b.line() != f.line()) {
            files.insert(p.clone(), f.line());
            changed_inodes.insert(f.inode);
        }
    }
    let removed = base.keys().filter(|p| !fs.files.contains_key(*p)).cloned().collect();
    let mut groups: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (p, f) in &fs.files {
        if f.kind == 'f' && changed_inodes.contains(&f.inode) {
            groups.entry(f.inode).or_default().push(p.clone());
        }
    }
    let mut hardlinks: Vec<Vec<String>> = groups.into_values().filter(|g| g.len() > 1).collect();
    hardlinks.sort();
    Ok(Normalized {
        config: config["config"].clone(),
        author: config["author"].as_str().map(str::to_string),
        history,
        base_layers,
        layers: layers.len(),
        files,
        removed,
        hardlinks,
        problems: fs.problems,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileEntry {
    kind: char,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    digest: String,
    text: Option<String>,
    link: String,
    device: Option<(u32, u32)>,
    xattrs: BTreeMap<String, String>,
    /// Which hardlink group (an index into a per-image table) the file belongs to.
    inode: usize,
}

impl FileEntry {
    fn line(&self) -> String {
        let mut s = format!("{} {:04o} {}:{}", self.kind, self.mode, self.uid, self.gid);
        if self.kind == 'f' {
            s.push_str(&format!(" size={} sha256:{}", self.size, self.digest));
        }
        if let Some(t) = &self.text {
            s.push(' ');
            s.push_str(&serde_json::to_string(t).expect("a string serializes"));
        }
        if !self.link.is_empty() {
            s.push_str(&format!(" -> {}", self.link));
        }
        if let Some((major, minor)) = self.device {
            s.push_str(&format!(" dev={major}:{minor}"));
        }
        for (k, v) in &self.xattrs {
            s.push_str(&format!(" xattr:{k}={v}"));
        }
        s
    }
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
    entry: FileEntry,
    hardlink_to: Option<String>,
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

fn printable(data: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(data).ok()?;
    (data.len() <= TEXT_PREVIEW && s.chars().all(|c| c == '\n' || c == '\t' || !c.is_control())).then(|| s.to_string())
}

fn layer_bytes(layer: &Path) -> Result<Vec<u8>, String> {
    let mut raw = Vec::new();
    std::fs::File::open(layer)
        .and_then(|mut f| f.read_to_end(&mut raw))
        .map_err(|e| format!("{}: {e}", layer.display()))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let out = Command::new("gzip").arg("-dc").arg(layer).output().map_err(|e| format!("gzip -dc: {e}"))?;
        if !out.status.success() {
            return Err(format!("gzip -dc {} failed", layer.display()));
        }
        raw = out.stdout;
    } else if raw.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let out = Command::new("zstd").arg("-dc").arg(layer).output().map_err(|e| format!("zstd -dc: {e}"))?;
        if !out.status.success() {
            return Err(format!("zstd -dc {} failed", layer.display()));
        }
        raw = out.stdout;
    }
    Ok(raw)
}

impl Flattened {
    fn read_layer(&mut self, layer: &Path) -> Result<Vec<RawEntry>, String> {
        let raw = layer_bytes(layer)?;
        let shown = layer.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut entries = Vec::new();
        let mut archive = tar::Archive::new(raw.as_slice());
        for e in archive.entries().map_err(|e| format!("{shown}: {e}"))? {
            let mut e = e.map_err(|e| format!("{shown}: {e}"))?;
            let h = e.header().clone();
            let path = clean(&e.path().map_err(|e| format!("{shown}: {e}"))?.to_string_lossy());
            let link = e.link_name().ok().flatten().map(|l| l.to_string_lossy().into_owned()).unwrap_or_default();
            let kind = match h.entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => 'f',
                tar::EntryType::Directory => 'd',
                tar::EntryType::Symlink => 'l',
                tar::EntryType::Link => 'h',
                tar::EntryType::Char => 'c',
                tar::EntryType::Block => 'b',
                tar::EntryType::Fifo => 'p',
                other => return Err(format!("{shown}: unexpected tar entry type {other:?} for {path}")),
            };
            let mut xattrs = BTreeMap::new();
            if let Ok(Some(exts)) = e.pax_extensions() {
                for ext in exts.flatten() {
                    if let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                        xattrs.insert(name.to_string(), hex_bytes(ext.value_bytes()));
                    }
                }
            }
            let mut data = Vec::new();
            if kind == 'f' {
                e.read_to_end(&mut data).map_err(|e| format!("{shown}: {path}: {e}"))?;
            }
            let mut numeric = |what: &str, v: std::io::Result<u64>| {
                v.unwrap_or_else(|e| {
                    self.problems.push(format!("layer {shown}: {path}: bad {what} field: {e}"));
                    0
                })
            };
            let mode = numeric("mode", h.mode().map(u64::from)) as u32 & 0o7777;
            let uid = numeric("uid", h.uid());
            let gid = numeric("gid", h.gid());
            let device = matches!(kind, 'c' | 'b')
                .then(|| (h.device_major().ok().flatten().unwrap_or(0), h.device_minor().ok().flatten().unwrap_or(0)));
            let entry = FileEntry {
                kind,
                mode,
                uid,
                gid,
                size: data.len() as u64,
                digest: if kind == 'f' { llb::Digest::of(&data).hex().to_string() } else { String::new() },
                text: if kind == 'f' { printable(&data) } else { None },
                link: if kind == 'l' { link.clone() } else { String::new() },
                device,
                xattrs,
                inode: 0,
            };
            let hardlink_to = (kind == 'h').then(|| clean(&link));
            entries.push(RawEntry { path, entry, hardlink_to });
        }
        Ok(entries)
    }

    fn apply(&mut self, layer: &Path) -> Result<(), String> {
        let entries = self.read_layer(layer)?;
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
            let entry = match &e.hardlink_to {
                Some(target) => {
                    let mut t = self
                        .files
                        .get(target)
                        .cloned()
                        .ok_or_else(|| format!("{}: hardlink {} to missing {target}", layer.display(), e.path))?;
                    t.mode = e.entry.mode;
                    t
                }
                None => {
                    self.inodes += 1;
                    FileEntry { inode: self.inodes, ..e.entry }
                }
            };
            // A non-directory replaces whatever was there; a directory over a directory keeps its contents.
            if entry.kind != 'd' {
                self.files.retain(|p, _| !under(p, &e.path));
            }
            self.files.insert(e.path, entry);
        }
        Ok(())
    }
}

/// A path inside a `.git` directory other than its `HEAD` (`ADD --keep-git-dir`): what else git writes
/// there (hooks, config, index, refs, loose or packed objects) depends on the git client and the fetch
/// strategy, not on the Dockerfile. The directory itself and the commit its HEAD names are compared.
fn git_internal(p: &str) -> bool {
    match p.split_once("/.git/") {
        Some((_, rest)) => rest != "HEAD",
        None => false,
    }
}

/// Go pointer values (`0xc000d798c0`) printed into a history entry, as `0x…`: they differ on every run
/// (BuildKit v0.24.0's EXPOSE entry prints a struct holding one).
fn mask_pointers(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("0x") {
        let digits = rest[i + 2..].bytes().take_while(u8::is_ascii_hexdigit).count();
        out.push_str(&rest[..i + 2]);
        if digits >= 8 {
            out.push('…');
        } else {
            out.push_str(&rest[i + 2..i + 2 + digits]);
        }
        rest = &rest[i + 2 + digits..];
    }
    out.push_str(rest);
    out
}

fn hex_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
