//! Why a step ran: every build records, per step, what went into its cache key (the solver's
//! [`KeyIngredients`](solver::progress::KeyIngredients), the step's definition, and for the files it read
//! from a context a listing of them); the next build of the same Dockerfile target compares each step it
//! ran with the same step of that record and names the first ingredient that differs:
//! `src/main.rs changed`, `build arg VERSION changed`, `base image docker.io/library/busybox changed`.
//!
//! Records live in the state root under `explain/`: one JSON file per Dockerfile target (named by a
//! digest of [`BuildRequest::explain_key`] and the target), and the file listings under `explain/files/`,
//! one per content checksum (so an unchanged context is listed once, and a no-op rebuild lists nothing).
//! Listings are read from the solver's remembered stats: no file is read again. Explaining is best
//! effort: a record that cannot be read or written costs the explanation, never the build.
//!
//! A fresh CI runner has no record of its own: an exported cache carries this target's record and its
//! listings ([`carried`], the cache record's `explain` field), and an import puts them in place when the
//! state root has none ([`adopt`]), so the runner's misses are explained against the build that exported.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use llb::file::{FileActionKind, FileSource};
use llb::{Definition, Digest, Op, SourceOp, Vertex};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use solver::fileop::SourceDir;
use solver::op::BoxFuture;
use solver::{LocalSource, SessionError, StepRecord, StepStatus};

use crate::progress::StepMiss;
use crate::request::BuildRequest;
use crate::Engine;

/// The record format; another version is ignored (the next build starts a new record).
const VERSION: u32 = 1;
/// The directory in the state root.
const DIR: &str = "explain";

/// One build of one Dockerfile target, as the next build compares with it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct History {
    version: u32,
    /// `--build-arg` names, to tell a build arg from another variable in a RUN's environment.
    build_args: BTreeSet<String>,
    steps: Vec<StepHistory>,
}

/// One step: its key and what went into it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StepHistory {
    name: String,
    /// The op kind (`exec`, `file`, `source`, `merge`, `diff`): one Dockerfile step can be two vertices of
    /// one name (`COPY --link` is a copy and a merge).
    kind: String,
    key: String,
    /// The vertex's op and platform as defined (its inputs are compared by key).
    definition: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    op: Option<String>,
    /// The keys of its inputs, and their step names.
    #[serde(default)]
    inputs: Vec<(String, String)>,
    #[serde(default)]
    content: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_key: Option<String>,
}

/// Why one step ran, as the first ingredient of its key that differs from the last build's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reason {
    /// No earlier build of this Dockerfile target on this state root.
    FirstBuild,
    /// The last build had no step of this name.
    NewStep,
    /// Its key is the one of the last build: the cache was bypassed or no longer holds the result.
    SameKey {
        no_cache: bool,
    },
    /// Files it reads from a context: changed, added, removed.
    Files {
        changed: Vec<String>,
        added: Vec<String>,
        removed: Vec<String>,
    },
    /// Files it reads changed, but the last build's listing is gone.
    FilesUnlisted,
    /// Variables of a RUN's environment: build args first.
    Variables {
        build_args: Vec<String>,
        others: Vec<String>,
    },
    BaseImage {
        name: String,
        from: String,
        to: String,
    },
    /// The command of a RUN.
    Command,
    /// Another part of the instruction, by its path in the definition (`cwd`, `mounts[1].dest`).
    Definition {
        path: String,
    },
    /// What a remote source resolved to (an http download's checksum, a git commit).
    Source {
        from: String,
        to: String,
    },
    /// A content ingredient other than files, by label.
    Content {
        label: String,
    },
    /// An input step's result differs.
    Input {
        name: String,
    },
    /// Nothing recorded differs, yet the key does (a new rbuild's key version).
    KeyFormat,
}

fn short(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    format!("sha256:{}", &hex[..hex.len().min(12)])
}

fn list(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::FirstBuild => f.write_str("no earlier build of this Dockerfile target on this machine"),
            Reason::NewStep => f.write_str("a new step (the last build had none of this name)"),
            Reason::SameKey { no_cache: true } => f.write_str("the cache was not used (--no-cache)"),
            Reason::SameKey { no_cache: false } => {
                f.write_str("unchanged since the last build, but its result was no longer cached")
            }
            Reason::Files { changed, added, removed } => {
                let mut parts: Vec<String> = Vec::new();
                let mut shown = 0;
                for (paths, what) in [(changed, "changed"), (added, "added"), (removed, "removed")] {
                    let take: Vec<String> = paths.iter().take(3usize.saturating_sub(shown)).cloned().collect();
                    shown += take.len();
                    if !take.is_empty() {
                        parts.push(format!("{} {what}", list(&take)));
                    }
                }
                let total = changed.len() + added.len() + removed.len();
                write!(f, "{}", parts.join(", "))?;
                if total > shown {
                    write!(f, " (and {} more)", total - shown)?;
                }
                Ok(())
            }
            Reason::FilesUnlisted => f.write_str("the files it reads changed"),
            Reason::Variables { build_args, others } => {
                let mut parts = Vec::new();
                if !build_args.is_empty() {
                    let noun = if build_args.len() == 1 { "build arg" } else { "build args" };
                    parts.push(format!("{noun} {} changed", list(build_args)));
                }
                if !others.is_empty() {
                    let noun = if others.len() == 1 { "variable" } else { "variables" };
                    parts.push(format!("{noun} {} changed", list(others)));
                }
                f.write_str(&parts.join(", "))
            }
            Reason::BaseImage { name, from, to } => {
                write!(f, "base image {name} changed ({} → {})", short(from), short(to))
            }
            Reason::Command => f.write_str("the command changed"),
            Reason::Definition { path } => write!(f, "the instruction changed ({path})"),
            Reason::Source { from, to } => write!(f, "its source changed ({} → {})", short(from), short(to)),
            Reason::Content { label } => write!(f, "{label} changed"),
            Reason::Input { name } => write!(f, "input {name} changed"),
            Reason::KeyFormat => f.write_str("its cache key changed (a different rbuild version?)"),
        }
    }
}

/// The directories the build's local sources gave the solver, by source name and filters: listings read
/// these, so explaining never asks a source again (for a daemon's client, that would be a second sync).
#[derive(Default, Clone)]
pub(crate) struct Directories(Arc<Mutex<HashMap<SourceFilters, PathBuf>>>);

/// A local source's name, include and exclude patterns.
type SourceFilters = (String, Vec<String>, Vec<String>);

impl Directories {
    /// `source`, remembering what it answers under `name`.
    pub(crate) fn remember(&self, name: &str, source: Arc<dyn LocalSource>) -> Arc<dyn LocalSource> {
        Arc::new(Remembered { name: name.to_string(), source, dirs: self.clone() })
    }

    fn get(&self, name: &str, include: &[String], exclude: &[String]) -> Option<PathBuf> {
        let dirs = self.0.lock().unwrap_or_else(|e| e.into_inner());
        dirs.get(&(name.to_string(), include.to_vec(), exclude.to_vec())).cloned()
    }
}

struct Remembered {
    name: String,
    source: Arc<dyn LocalSource>,
    dirs: Directories,
}

impl LocalSource for Remembered {
    fn directory<'a>(
        &'a self,
        include: &'a [String],
        exclude: &'a [String],
        status: &'a (dyn Fn(&str, u64, Option<u64>) + Send + Sync),
    ) -> BoxFuture<'a, Result<PathBuf, SessionError>> {
        Box::pin(async move {
            let path = self.source.directory(include, exclude, status).await?;
            let key = (self.name.clone(), include.to_vec(), exclude.to_vec());
            self.dirs.0.lock().unwrap_or_else(|e| e.into_inner()).insert(key, path.clone());
            Ok(path)
        })
    }
}

/// Compares the steps a build ran with the last build of the same target, records this build for the
/// next one, and returns one explanation per step that ran. `dirs` are the local sources' directories.
pub(crate) async fn explain(
    engine: &Arc<Engine>,
    req: &BuildRequest,
    def: &Definition,
    steps: &[StepRecord],
    dirs: &Directories,
) -> Vec<StepMiss> {
    let dir = engine.store.root.path().join(DIR);
    let file = dir.join(format!("{}.json", history_id(req)));
    let current = History {
        version: VERSION,
        build_args: req.build_args.keys().cloned().collect(),
        steps: steps
            .iter()
            .filter(|s| !matches!(s.status, StepStatus::Failed | StepStatus::Canceled))
            .filter_map(|s| step_history(def, s))
            .collect(),
    };
    let listed = list_files(engine, dirs, def, steps, &dir).await;
    let defined: BTreeSet<(String, String)> =
        def.vertices.iter().map(|(d, v)| (vertex_name(def, d), v.op.kind().to_string())).collect();
    let (dir2, file2, current2) = (dir.clone(), file.clone(), current.clone());
    let previous = tokio::task::spawn_blocking(move || {
        let previous = read_history(&file2);
        // The record keeps steps this build did not reach (below a cache hit) while its definition has them.
        let mut record = current2;
        if let Some(p) = &previous {
            let have: BTreeSet<(String, String)> =
                record.steps.iter().map(|s| (s.name.clone(), s.kind.clone())).collect();
            for s in &p.steps {
                let id = (s.name.clone(), s.kind.clone());
                if !have.contains(&id) && defined.contains(&id) {
                    record.steps.push(s.clone());
                }
            }
        }
        let _ = write_history(&dir2, &file2, &record);
        previous
    })
    .await
    .ok()
    .flatten();
    let no_cache = req.cache.no_cache || !req.cache.no_cache_filter.is_empty();
    let by_name: HashMap<(&str, &str), &StepHistory> = previous
        .as_ref()
        .map(|p| p.steps.iter().map(|s| ((s.name.as_str(), s.kind.as_str()), s)).collect())
        .unwrap_or_default();
    let by_stripped: HashMap<(String, &str), &StepHistory> = previous
        .as_ref()
        .map(|p| p.steps.iter().map(|s| ((strip_counter(&s.name), s.kind.as_str()), s)).collect())
        .unwrap_or_default();
    let build_args: BTreeSet<String> =
        current.build_args.iter().chain(previous.iter().flat_map(|p| p.build_args.iter())).cloned().collect();
    let mut out = Vec::new();
    for s in steps.iter().filter(|s| s.status == StepStatus::Executed) {
        let Some(cur) = current.steps.iter().find(|c| c.key == s.key.to_string() && c.name == s.name) else {
            continue;
        };
        let reason = match &previous {
            None => Reason::FirstBuild,
            Some(_) => match by_name
                .get(&(cur.name.as_str(), cur.kind.as_str()))
                .or_else(|| by_stripped.get(&(strip_counter(&cur.name), cur.kind.as_str())))
            {
                None => Reason::NewStep,
                Some(prev) => compare(prev, cur, &build_args, no_cache, &dir, &listed),
            },
        };
        out.push(StepMiss {
            vertex: s.vertex,
            name: s.name.clone(),
            reason: reason.to_string(),
            first_build: reason == Reason::FirstBuild,
        });
    }
    let _ = tokio::task::spawn_blocking(move || gc_listings(&dir)).await;
    out
}

/// The record's file name: the request's identity of "the same Dockerfile" and the target.
pub(crate) fn history_id(req: &BuildRequest) -> String {
    let key = req.explain_key.clone().unwrap_or_else(|| req.dockerfile_name.clone());
    let target = req.target.clone().unwrap_or_default();
    let d = Digest::of(format!("{key}\0{target}").as_bytes()).to_string();
    d.trim_start_matches("sha256:").to_string()
}

/// `[build 2/4] RUN make` -> `[build] RUN make`: a step keeps its identity when lines are added above it.
fn strip_counter(name: &str) -> String {
    let Some(rest) = name.strip_prefix('[') else { return name.to_string() };
    let Some((inside, after)) = rest.split_once(']') else { return name.to_string() };
    let kept: Vec<&str> =
        inside.split(' ').filter(|w| !(w.contains('/') && w.split('/').all(|n| n.parse::<u32>().is_ok()))).collect();
    format!("[{}]{after}", kept.join(" "))
}

fn vertex_name(def: &Definition, d: &Digest) -> String {
    let v = def.vertices.get(d);
    def.metadata_of(d)
        .and_then(|m| m.description.clone())
        .or_else(|| v.map(Vertex::summary))
        .unwrap_or_else(|| d.short())
}

fn step_history(def: &Definition, s: &StepRecord) -> Option<StepHistory> {
    let v = def.vertices.get(&s.vertex)?;
    let mut definition = serde_json::json!({ "op": serde_json::to_value(&v.op).ok()? });
    if let Some(p) = &v.platform {
        definition["platform"] = serde_json::to_value(p).ok()?;
    }
    let inputs = s
        .ingredients
        .inputs
        .iter()
        .zip(v.inputs.iter().map(|i| vertex_name(def, &i.digest)).chain(std::iter::repeat(String::new())))
        .map(|((key, _), name)| (key.to_string(), name))
        .collect();
    Some(StepHistory {
        name: s.name.clone(),
        kind: v.op.kind().to_string(),
        key: s.key.to_string(),
        definition,
        op: s.ingredients.op.map(|d| d.to_string()),
        inputs,
        content: s.ingredients.content.clone(),
        content_key: s.ingredients.content_key.map(|d| d.to_string()),
    })
}

fn read_history(file: &Path) -> Option<History> {
    let bytes = std::fs::read(file).ok()?;
    serde_json::from_slice::<History>(&bytes).ok().filter(|h| h.version == VERSION)
}

fn write_atomic(dir: &Path, file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(file).map_err(|e| e.error)?;
    Ok(())
}

fn write_history(dir: &Path, file: &Path, h: &History) -> std::io::Result<()> {
    // In a stable order, so an unchanged build carries byte-identical records in its cache exports.
    let mut h = h.clone();
    h.steps.sort_by(|a, b| (&a.name, &a.kind, &a.key).cmp(&(&b.name, &b.kind, &b.key)));
    write_atomic(dir, file, &serde_json::to_vec(&h).map_err(std::io::Error::other)?)
}

/// The listings a carried record may hold in all: a context of many thousand files is carried without
/// them (its misses then say "the files it reads changed").
const CARRIED_LISTINGS_MAX: usize = 4 << 20;

/// A record as an exported cache carries it.
#[derive(Debug, Serialize, Deserialize)]
struct Carried {
    /// The [`history_id`] it belongs to.
    id: String,
    history: History,
    /// Listings by content checksum.
    #[serde(default)]
    files: BTreeMap<String, Vec<(String, String)>>,
}

/// This target's record with its listings, for a cache export (the cache record's `explain` field), read
/// after [`explain`] has written this build's. Blocking.
pub(crate) fn carried(engine: &Engine, id: &str) -> Option<Value> {
    carried_from(&engine.store.root.path().join(DIR), id)
}

fn carried_from(dir: &Path, id: &str) -> Option<Value> {
    let history = read_history(&dir.join(format!("{id}.json")))?;
    let mut files = BTreeMap::new();
    let mut size = 0;
    'steps: for s in &history.steps {
        for (_, value) in s.content.iter().filter(|(l, _)| is_files_label(l)) {
            if files.contains_key(value) {
                continue;
            }
            let Some(listing) = read_listing(dir, value) else { continue };
            size += listing.iter().map(|(p, d)| p.len() + d.len() + 8).sum::<usize>();
            if size > CARRIED_LISTINGS_MAX {
                files.clear();
                break 'steps;
            }
            files.insert(value.clone(), listing);
        }
    }
    serde_json::to_value(Carried { id: id.to_string(), history, files }).ok()
}

/// Puts a record an imported cache carried in place, when this state root has none for the target (its
/// own is newer). Blocking; best effort.
pub(crate) fn adopt(engine: &Engine, id: &str, carried: &Value) {
    adopt_into(&engine.store.root.path().join(DIR), id, carried)
}

fn adopt_into(dir: &Path, id: &str, carried: &Value) {
    let Ok(c) = serde_json::from_value::<Carried>(carried.clone()) else { return };
    if c.id != id || c.history.version != VERSION {
        return;
    }
    let file = dir.join(format!("{id}.json"));
    if file.exists() {
        return;
    }
    for (value, listing) in &c.files {
        let Some(path) = listing_path(dir, value) else { continue };
        if let Ok(bytes) = serde_json::to_vec(listing) {
            let _ = write_atomic(&dir.join("files"), &path, &bytes);
        }
    }
    let _ = write_history(dir, &file, &c.history);
}

/// The first ingredient of `cur`'s key that differs from `prev`'s: the instruction, then the content it
/// reads, then its inputs.
fn compare(
    prev: &StepHistory,
    cur: &StepHistory,
    build_args: &BTreeSet<String>,
    no_cache: bool,
    dir: &Path,
    listed: &HashMap<String, Vec<(String, String)>>,
) -> Reason {
    if prev.key == cur.key {
        return Reason::SameKey { no_cache };
    }
    if prev.op != cur.op || prev.definition != cur.definition {
        if let Some(r) = definition_change(&prev.definition, &cur.definition, build_args) {
            return r;
        }
    }
    for (label, value) in &cur.content {
        let before = prev.content.iter().find(|(l, _)| l == label).map(|(_, v)| v);
        match before {
            Some(b) if b == value => continue,
            None => return Reason::Content { label: label.clone() },
            Some(b) if is_files_label(label) => {
                let old = read_listing(dir, b);
                let new = listed.get(value).cloned().or_else(|| read_listing(dir, value));
                return match (old, new) {
                    (Some(old), Some(new)) => files_change(&old, &new),
                    _ => Reason::FilesUnlisted,
                };
            }
            Some(_) => return Reason::Content { label: label.clone() },
        }
    }
    if prev.content_key != cur.content_key {
        if let (Some(from), Some(to)) = (&prev.content_key, &cur.content_key) {
            return Reason::Source { from: from.clone(), to: to.clone() };
        }
    }
    for (i, (key, name)) in cur.inputs.iter().enumerate() {
        if prev.inputs.get(i).map(|(k, _)| k) != Some(key) {
            return Reason::Input { name: name.clone() };
        }
    }
    Reason::KeyFormat
}

/// What differs in the step's own definition.
fn definition_change(prev: &Value, cur: &Value, build_args: &BTreeSet<String>) -> Option<Reason> {
    let (p, c) = (&prev["op"], &cur["op"]);
    if let (Some(from), Some(to)) =
        (p["source"]["image"]["reference"].as_str(), c["source"]["image"]["reference"].as_str())
    {
        if from != to {
            let (name, to_digest) = to.split_once('@').unwrap_or((to, to));
            let from_digest = from.split_once('@').map(|(_, d)| d).unwrap_or(from);
            return Some(Reason::BaseImage { name: name.to_string(), from: from_digest.into(), to: to_digest.into() });
        }
    }
    let (pe, ce) = (&p["exec"], &c["exec"]);
    if pe.is_object() && ce.is_object() {
        let vars = |v: &Value| -> BTreeMap<String, String> {
            v["meta"]["env"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|e| {
                    e.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).unwrap_or((e.into(), "".into()))
                })
                .collect()
        };
        let (pv, cv) = (vars(pe), vars(ce));
        let changed: Vec<String> = pv
            .keys()
            .chain(cv.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|k| pv.get(*k) != cv.get(*k))
            .cloned()
            .collect();
        if !changed.is_empty() {
            let (args, others): (Vec<String>, Vec<String>) = changed.into_iter().partition(|k| build_args.contains(k));
            return Some(Reason::Variables { build_args: args, others });
        }
        if pe["meta"]["args"] != ce["meta"]["args"] {
            return Some(Reason::Command);
        }
    }
    first_difference(prev, cur, String::new()).map(|path| Reason::Definition { path })
}

/// The path of the first place two JSON values differ (`op.exec.meta.cwd`, `op.file.actions[0].action.src`).
fn first_difference(a: &Value, b: &Value, path: String) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => first_difference(u, v, p),
                    (None, None) => None,
                    _ => Some(p),
                }
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (u, v))| first_difference(u, v, format!("{path}[{i}]")))
        }
        _ if a == b => None,
        _ => Some(readable(&path)),
    }
}

/// `op.exec.meta.cwd` -> `cwd`: the op's own path, without its envelope.
fn readable(path: &str) -> String {
    let p = path.strip_prefix("op.").unwrap_or(path);
    for envelope in ["exec.meta.", "exec.", "file.", "source.", "merge.", "diff."] {
        if let Some(rest) = p.strip_prefix(envelope) {
            return rest.to_string();
        }
    }
    p.to_string()
}

/// Labels of content checksums of files read from a context (see solver's worker content parts).
fn is_files_label(label: &str) -> bool {
    ["copy.", "mount.", "input."].iter().any(|p| label.starts_with(p))
}

fn files_change(old: &[(String, String)], new: &[(String, String)]) -> Reason {
    let o: BTreeMap<&str, &str> = old.iter().map(|(p, d)| (p.as_str(), d.as_str())).collect();
    let n: BTreeMap<&str, &str> = new.iter().map(|(p, d)| (p.as_str(), d.as_str())).collect();
    let mut changed = Vec::new();
    let mut added = Vec::new();
    for (p, d) in &n {
        match o.get(p) {
            Some(od) if od == d => {}
            Some(_) => changed.push(p.to_string()),
            None => added.push(p.to_string()),
        }
    }
    let removed = o.keys().filter(|p| !n.contains_key(*p)).map(|p| p.to_string()).collect();
    Reason::Files { changed, added, removed }
}

fn listing_path(dir: &Path, value: &str) -> Option<PathBuf> {
    let hex = value.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| dir.join("files").join(format!("{hex}.json")))
}

fn read_listing(dir: &Path, value: &str) -> Option<Vec<(String, String)>> {
    serde_json::from_slice(&std::fs::read(listing_path(dir, value)?).ok()?).ok()
}

/// What a files label of a step reads: a local source and what of it.
struct Reads {
    source: String,
    include: Vec<String>,
    exclude: Vec<String>,
    what: Selection,
}

enum Selection {
    Copy(Box<llb::file::Copy>),
    Tree(String),
}

/// The local sources each files label of `v` reads, as the solver's content parts label them.
fn reads(def: &Definition, v: &Vertex) -> Vec<(String, Reads)> {
    let local = |i: usize| -> Option<(String, Vec<String>, Vec<String>)> {
        let input = v.inputs.get(i)?;
        match &def.vertices.get(&input.digest)?.op {
            Op::Source(SourceOp::Local { name, include_patterns, exclude_patterns, .. }) => {
                Some((name.clone(), include_patterns.clone(), exclude_patterns.clone()))
            }
            _ => None,
        }
    };
    let n = v.inputs.len();
    let mut out = Vec::new();
    let mut push = |label: String, i: usize, what: Selection| {
        if let Some((source, include, exclude)) = local(i) {
            out.push((label, Reads { source, include, exclude, what }));
        }
    };
    match &v.op {
        Op::File(f) => {
            let mut whole = Vec::new();
            for (a, action) in f.actions.iter().enumerate() {
                if let FileSource::Input(i) = FileSource::resolve(action.input, n) {
                    whole.push(i);
                }
                if let FileActionKind::Copy(c) = &action.action {
                    if let FileSource::Input(i) = FileSource::resolve(action.secondary_input, n) {
                        push(format!("copy.{a}"), i, Selection::Copy(Box::new(c.clone())));
                    }
                }
            }
            whole.sort_unstable();
            whole.dedup();
            for i in whole {
                push(format!("input.{i}"), i, Selection::Tree("/".into()));
            }
        }
        Op::Exec(e) => {
            for (m, mount) in e.mounts.iter().enumerate() {
                if let Some(i) = mount.input {
                    let sel = if mount.selector.is_empty() { "/".to_string() } else { mount.selector.clone() };
                    push(format!("mount.{m}"), i, Selection::Tree(sel));
                }
            }
        }
        Op::Merge(_) | Op::Diff(_) => {
            for i in 0..n {
                push(format!("input.{i}"), i, Selection::Tree("/".into()));
            }
        }
        Op::Source(_) => {}
    }
    out
}

/// Lists the files behind every files label of `steps` that has no listing yet, and stores the listings;
/// returns them by checksum.
async fn list_files(
    engine: &Arc<Engine>,
    dirs: &Directories,
    def: &Definition,
    steps: &[StepRecord],
    dir: &Path,
) -> HashMap<String, Vec<(String, String)>> {
    let mut todo = Vec::new();
    for s in steps {
        let Some(v) = def.vertices.get(&s.vertex) else { continue };
        let wanted: BTreeMap<&str, &str> = s
            .ingredients
            .content
            .iter()
            .filter(|(l, _)| is_files_label(l))
            .map(|(l, v)| (l.as_str(), v.as_str()))
            .collect();
        if wanted.is_empty() {
            continue;
        }
        for (label, r) in reads(def, v) {
            let Some(value) = wanted.get(label.as_str()) else { continue };
            let Some(path) = listing_path(dir, value) else { continue };
            if !path.exists() {
                todo.push((value.to_string(), path, r));
            }
        }
    }
    let mut out = HashMap::new();
    for (value, path, r) in todo {
        // A source the solve did not open (its steps hit the cache) is not opened for a listing either.
        let Some(root) = dirs.get(&r.source, &r.include, &r.exclude) else { continue };
        let meta = engine.store.meta.clone();
        let (dir2, value2) = (dir.to_path_buf(), value.clone());
        let listed = tokio::task::spawn_blocking(move || {
            let checksums = solver::context::ChecksumCache::new(meta);
            let sd = SourceDir::local(root, r.include, r.exclude);
            let listing = match &r.what {
                Selection::Copy(c) => checksums.copy_listing(&sd, c),
                Selection::Tree(p) => checksums.tree_listing(&sd, p),
            }
            .ok()?;
            // The files changed since the solve read them: this listing is not the one of that checksum.
            if listing.digest.to_string() != value2 {
                return None;
            }
            let bytes = serde_json::to_vec(&listing.files).ok()?;
            write_atomic(&dir2.join("files"), &path, &bytes).ok()?;
            Some(listing.files)
        })
        .await
        .ok()
        .flatten();
        if let Some(files) = listed {
            out.insert(value, files);
        }
    }
    out
}

/// Removes the listings no record names.
fn gc_listings(dir: &Path) {
    let mut keep = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "json") {
            // A record that cannot be read keeps nothing: its next build starts over.
            if let Some(h) = read_history(&p) {
                for s in h.steps {
                    keep.extend(s.content.into_iter().filter(|(l, _)| is_files_label(l)).map(|(_, v)| v));
                }
            }
        }
    }
    let Ok(files) = std::fs::read_dir(dir.join("files")) else { return };
    for e in files.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(hex) = name.strip_suffix(".json") else { continue };
        if !keep.contains(&format!("sha256:{hex}")) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(name: &str, key: &str) -> StepHistory {
        StepHistory {
            name: name.into(),
            kind: "exec".into(),
            key: key.into(),
            definition: json!({"op": {"exec": {"meta": {"args": ["/bin/sh", "-c", "make"], "env": ["PATH=/bin", "V=1"], "cwd": "/"}}}}),
            op: Some("sha256:op".into()),
            inputs: vec![("sha256:in".into(), "[1/2] FROM busybox".into())],
            content: vec![],
            content_key: None,
        }
    }

    fn explain(prev: &StepHistory, cur: &StepHistory) -> String {
        let args = BTreeSet::from(["V".to_string()]);
        compare(prev, cur, &args, false, Path::new("/nonexistent"), &HashMap::new()).to_string()
    }

    #[test]
    fn names_a_changed_build_arg_or_variable() {
        let prev = step("[2/2] RUN make", "k1");
        let mut cur = step("[2/2] RUN make", "k2");
        cur.definition["op"]["exec"]["meta"]["env"] = json!(["PATH=/bin", "V=2"]);
        cur.op = Some("sha256:op2".into());
        assert_eq!(explain(&prev, &cur), "build arg V changed");
        cur.definition["op"]["exec"]["meta"]["env"] = json!(["PATH=/usr/bin", "V=1"]);
        assert_eq!(explain(&prev, &cur), "variable PATH changed");
    }

    #[test]
    fn names_the_command_another_field_an_input_or_the_base_image() {
        let prev = step("[2/2] RUN make", "k1");
        let mut cur = step("[2/2] RUN make", "k2");
        cur.definition["op"]["exec"]["meta"]["args"] = json!(["/bin/sh", "-c", "make all"]);
        assert_eq!(explain(&prev, &cur), "the command changed");
        let mut cur = step("[2/2] RUN make", "k2");
        cur.definition["op"]["exec"]["meta"]["cwd"] = json!("/src");
        assert_eq!(explain(&prev, &cur), "the instruction changed (cwd)");
        let mut cur = step("[2/2] RUN make", "k2");
        cur.inputs[0].0 = "sha256:other".into();
        assert_eq!(explain(&prev, &cur), "input [1/2] FROM busybox changed");
        assert_eq!(
            explain(&prev, &step("[2/2] RUN make", "k1")),
            "unchanged since the last build, but its result was no longer cached"
        );

        let image = |r: &str| {
            let mut s = step("[1/2] FROM busybox", "k");
            s.kind = "source".into();
            s.definition = json!({"op": {"source": {"image": {"reference": r}}}});
            s
        };
        let a = format!("docker.io/library/busybox@sha256:{}", "a".repeat(64));
        let mut b = image(&format!("docker.io/library/busybox@sha256:{}", "b".repeat(64)));
        b.key = "k2".into();
        assert_eq!(
            explain(&image(&a), &b),
            "base image docker.io/library/busybox changed (sha256:aaaaaaaaaaaa → sha256:bbbbbbbbbbbb)"
        );
    }

    #[test]
    fn names_changed_added_and_removed_files() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        let (v1, v2) = (format!("sha256:{}", "1".repeat(64)), format!("sha256:{}", "2".repeat(64)));
        let old = vec![("src/main.rs".to_string(), "a".to_string()), ("src/lib.rs".into(), "b".into())];
        let new = vec![("src/main.rs".to_string(), "c".to_string()), ("src/new.rs".into(), "d".into())];
        write_atomic(&dir.join("files"), &listing_path(dir, &v1).unwrap(), &serde_json::to_vec(&old).unwrap()).unwrap();
        let mut prev = step("[3/4] COPY src/ /app", "k1");
        prev.kind = "file".into();
        prev.content = vec![("copy.0".into(), v1.clone())];
        let mut cur = prev.clone();
        cur.key = "k2".into();
        cur.content = vec![("copy.0".into(), v2.clone())];
        let listed = HashMap::from([(v2.clone(), new)]);
        let r = compare(&prev, &cur, &BTreeSet::new(), false, dir, &listed);
        assert_eq!(r.to_string(), "src/main.rs changed, src/new.rs added, src/lib.rs removed");
        let unlisted = compare(&prev, &cur, &BTreeSet::new(), false, dir, &HashMap::new());
        assert_eq!(unlisted, Reason::FilesUnlisted);
        let many = Reason::Files { changed: (0..5).map(|i| format!("f{i}")).collect(), added: vec![], removed: vec![] };
        assert_eq!(many.to_string(), "f0, f1 and f2 changed (and 2 more)");
    }

    #[test]
    fn a_carried_record_is_adopted_only_where_there_is_none() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let v = format!("sha256:{}", "3".repeat(64));
        let files = vec![("src/main.rs".to_string(), "d1".to_string())];
        write_atomic(
            &a.path().join("files"),
            &listing_path(a.path(), &v).unwrap(),
            &serde_json::to_vec(&files).unwrap(),
        )
        .unwrap();
        let mut s = step("[2/2] COPY src/ /app", "k1");
        s.content = vec![("copy.0".into(), v.clone())];
        let h = History { version: VERSION, build_args: BTreeSet::new(), steps: vec![s] };
        write_history(a.path(), &a.path().join("id1.json"), &h).unwrap();
        let carried = carried_from(a.path(), "id1").unwrap();
        assert!(carried_from(a.path(), "other").is_none());

        adopt_into(b.path(), "id2", &carried);
        assert!(read_history(&b.path().join("id2.json")).is_none(), "another target's record was adopted");
        adopt_into(b.path(), "id1", &carried);
        let got = read_history(&b.path().join("id1.json")).unwrap();
        assert_eq!(got.steps, h.steps);
        assert_eq!(read_listing(b.path(), &v), Some(files));

        // The state root's own record is newer than any carried one.
        let mut mine = h.clone();
        mine.steps[0].key = "k2".into();
        write_history(b.path(), &b.path().join("id1.json"), &mine).unwrap();
        adopt_into(b.path(), "id1", &carried);
        assert_eq!(read_history(&b.path().join("id1.json")).unwrap().steps[0].key, "k2");
    }

    #[test]
    fn counters_are_stripped_from_step_names() {
        assert_eq!(strip_counter("[build 2/4] RUN make"), "[build] RUN make");
        assert_eq!(strip_counter("[3/7] COPY src/ /app"), "[] COPY src/ /app");
        assert_eq!(strip_counter("[internal] load build context"), "[internal] load build context");
    }
}
