//! Usage by kind and garbage collection, for `rbuild du` and `rbuild prune`.
//!
//! Roots are leases, image names (followed through their index, manifests, config and layer blobs)
//! and, unless `--all`, snapshots labelled [`KEEP_LABEL`]. Everything else is removed least recently
//! used first, leaves before their parents, and with `keep_storage` the loop measures what each removal
//! frees and stops only once the total is at or below the limit (BuildKit's GC overshoots its limit,
//! moby/buildkit#4218; this one does not stop early).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use crate::content::{ContentError, InfoProvider, LocalStore, Provider};
use crate::meta::{self, BlobRecord, ImageRecord, LeaseRecord, MetaDb, MetaError, BLOBS, IMAGES, LAYERS, LEASES};
use crate::snapshot::{Kind, SnapshotError, Snapshotter};
use crate::{fsutil, Digest};

/// Label holding a snapshot's last use (seconds since the epoch); set it when a build uses a snapshot.
pub const LAST_USED_LABEL: &str = "rbuild.last-used";
/// Label protecting a snapshot from a prune without `--all`.
pub const KEEP_LABEL: &str = "rbuild.keep";

/// Records that a build used snapshot `key` now, for least-recently-used ordering (a use recorded within
/// [`meta::TOUCH_EVERY`] is not written again).
pub fn touch<S: Snapshotter + ?Sized>(s: &S, key: &str) -> Result<(), SnapshotError> {
    let recorded = s.stat(key)?.labels.get(LAST_USED_LABEL).and_then(|v| v.parse::<u64>().ok());
    if recorded.is_some_and(meta::fresh_use) {
        return Ok(());
    }
    s.set_label(key, LAST_USED_LABEL, Some(&meta::now().to_string()))
}

/// The errors of usage and GC.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("cannot measure {path}: {source}")]
    Measure { path: PathBuf, source: std::io::Error },
}

/// Count and bytes of one kind of item.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Item {
    pub count: u64,
    pub size: u64,
    /// Bytes a `prune --all` could free.
    pub reclaimable: u64,
}

/// `rbuild du`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageReport {
    /// Committed snapshots.
    pub layers: Item,
    /// Active snapshots and views.
    pub snapshots: Item,
    pub cache_mounts: Item,
    pub blobs: Item,
    /// Partial downloads (ingest directories); reclaimable unless a live process is writing them.
    pub ingests: Item,
}

impl UsageReport {
    pub fn total(&self) -> u64 {
        self.layers.size + self.snapshots.size + self.cache_mounts.size + self.blobs.size + self.ingests.size
    }
}

/// `rbuild prune [--all] [--keep-storage SIZE] [--filter until=DURATION]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneOptions {
    pub all: bool,
    /// Remove least recently used items until the total is at or below this many bytes.
    pub keep_storage: Option<u64>,
    /// Only items unused for at least this long.
    pub until: Option<Duration>,
}

/// What a prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub snapshots: Vec<String>,
    pub blobs: Vec<Digest>,
    /// Partial downloads no live process was writing.
    pub ingests: Vec<PathBuf>,
    pub freed: u64,
    /// Bytes still used by the measured items afterwards.
    pub remaining: u64,
}

/// Usage and GC over one snapshotter, the content store and the metadata database.
pub struct Collector<'a, S: Snapshotter + ?Sized> {
    pub snapshotter: &'a S,
    pub content: &'a LocalStore,
    pub meta: &'a MetaDb,
    /// Directory of cache mounts (`RUN --mount=type=cache`), reported by `du`.
    pub cache_mounts: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    Snapshot(String),
    Blob(Digest),
    /// An ingest directory of the content store.
    Ingest(PathBuf),
}

struct Candidate {
    target: Target,
    size: u64,
    last_used: u64,
}

impl<S: Snapshotter + ?Sized> Collector<'_, S> {
    /// Blobs reachable from image names and leases (following index -> manifest -> config/layers).
    fn referenced_blobs(&self, leases: &[LeaseRecord]) -> Result<HashSet<String>, GcError> {
        let mut todo: Vec<String> = self.meta.list::<ImageRecord>(IMAGES)?.into_iter().map(|(_, r)| r.digest).collect();
        todo.extend(leases.iter().flat_map(|l| l.blobs.iter().cloned()));
        let mut seen = HashSet::new();
        while let Some(d) = todo.pop() {
            if !seen.insert(d.clone()) {
                continue;
            }
            let Ok(digest) = d.parse::<Digest>() else { continue };
            let Ok(info) = self.content.info(&digest) else { continue };
            // Only small JSON documents can reference other blobs.
            if info.size > 4 << 20 {
                continue;
            }
            let mut buf = Vec::new();
            if self.content.reader(&digest)?.read_to_end(&mut buf).is_err() {
                continue;
            }
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&buf) else { continue };
            let mut push = |v: &serde_json::Value| {
                if let Some(s) = v.get("digest").and_then(|d| d.as_str()) {
                    todo.push(s.to_string());
                }
            };
            if let Some(c) = v.get("config") {
                push(c);
            }
            for key in ["layers", "manifests"] {
                for item in v.get(key).and_then(|l| l.as_array()).into_iter().flatten() {
                    push(item);
                }
            }
        }
        Ok(seen)
    }

    fn leases(&self) -> Result<Vec<LeaseRecord>, GcError> {
        let now = meta::now();
        Ok(self
            .meta
            .list::<LeaseRecord>(LEASES)?
            .into_iter()
            .map(|(_, l)| l)
            .filter(|l| l.expires_at.is_none_or(|e| e > now))
            .collect())
    }

    /// `rbuild du`.
    pub fn usage(&self) -> Result<UsageReport, GcError> {
        let mut r = UsageReport::default();
        let (cands, _) = self.candidates(true)?;
        let reclaim: HashMap<Target, u64> = cands.into_iter().map(|c| (c.target, c.size)).collect();
        for i in self.snapshotter.walk()? {
            let u = self.snapshotter.usage(&i.name)?;
            let item = if i.kind == Kind::Committed { &mut r.layers } else { &mut r.snapshots };
            item.count += 1;
            item.size += u.size;
            item.reclaimable += reclaim.get(&Target::Snapshot(i.name)).copied().unwrap_or(0);
        }
        for b in self.content.list()? {
            r.blobs.count += 1;
            r.blobs.size += b.size;
            r.blobs.reclaimable += reclaim.get(&Target::Blob(b.digest)).copied().unwrap_or(0);
        }
        for (dir, size) in self.ingests()? {
            r.ingests.count += 1;
            r.ingests.size += size;
            r.ingests.reclaimable += reclaim.get(&Target::Ingest(dir)).copied().unwrap_or(0);
        }
        if let Some(dir) = &self.cache_mounts {
            if dir.is_dir() {
                for e in std::fs::read_dir(dir).map_err(|source| GcError::Measure { path: dir.clone(), source })? {
                    let p = e.map_err(|source| GcError::Measure { path: dir.clone(), source })?.path();
                    let (size, _) = fsutil::disk_usage(&p).map_err(|source| GcError::Measure { path: p, source })?;
                    r.cache_mounts.count += 1;
                    r.cache_mounts.size += size;
                }
            }
        }
        Ok(r)
    }

    /// Every removable item with its size and last use, and the total size of all measured items.
    fn candidates(&self, all: bool) -> Result<(Vec<Candidate>, u64), GcError> {
        let leases = self.leases()?;
        let leased_snaps: HashSet<&str> = leases.iter().flat_map(|l| l.snapshots.iter().map(String::as_str)).collect();
        let blob_roots = self.referenced_blobs(&leases)?;
        let mut total = 0;
        let mut out = Vec::new();
        for i in self.snapshotter.walk()? {
            let size = self.snapshotter.usage(&i.name)?.size;
            total += size;
            let kept = leased_snaps.contains(i.name.as_str()) || (!all && i.labels.contains_key(KEEP_LABEL));
            if !kept {
                let last_used = i.labels.get(LAST_USED_LABEL).and_then(|v| v.parse().ok()).unwrap_or(i.updated_at);
                out.push(Candidate { target: Target::Snapshot(i.name), size, last_used });
            }
        }
        let records: BTreeMap<String, BlobRecord> = self.meta.list(BLOBS)?.into_iter().collect();
        for b in self.content.list()? {
            total += b.size;
            if blob_roots.contains(b.digest.as_ref()) {
                continue;
            }
            let last_used = records.get(b.digest.as_ref()).map(|r| r.last_used).unwrap_or(b.created_at);
            out.push(Candidate { target: Target::Blob(b.digest), size: b.size, last_used });
        }
        // Nothing refers to a partial download: one no live process writes is garbage (resuming it is
        // worth less than the space, which is what a prune asks for).
        for (dir, size) in self.ingests()? {
            total += size;
            if self.content.ingest_held(&dir) {
                continue;
            }
            let last_used = std::fs::metadata(dir.join("data"))
                .or_else(|_| std::fs::metadata(&dir))
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            out.push(Candidate { target: Target::Ingest(dir), size, last_used });
        }
        Ok((out, total))
    }

    /// The ingest directories with their sizes on disk.
    fn ingests(&self) -> Result<Vec<(PathBuf, u64)>, GcError> {
        let mut out = Vec::new();
        for dir in self.content.ingests()? {
            match fsutil::disk_usage(&dir) {
                Ok((size, _)) => out.push((dir, size)),
                // Committed (and so removed) while we looked.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(GcError::Measure { path: dir, source }),
            }
        }
        Ok(out)
    }

    /// `rbuild prune`: removes unreferenced items, least recently used first.
    pub fn prune(&self, opts: PruneOptions) -> Result<PruneReport, GcError> {
        let (mut cands, mut total) = self.candidates(opts.all)?;
        if let Some(until) = opts.until {
            let cutoff = meta::now().saturating_sub(until.as_secs());
            cands.retain(|c| c.last_used <= cutoff);
        }
        cands.sort_by(|a, b| a.last_used.cmp(&b.last_used).then(a.size.cmp(&b.size).reverse()));
        let mut report = PruneReport::default();
        let mut removed: HashSet<Target> = HashSet::new();
        loop {
            if opts.keep_storage.is_some_and(|limit| total <= limit) {
                break;
            }
            // The least recently used candidate that can go now: snapshots only once childless.
            let parents: HashSet<String> = self.snapshotter.walk()?.into_iter().filter_map(|i| i.parent).collect();
            let next = cands.iter().position(|c| {
                !removed.contains(&c.target)
                    && match &c.target {
                        Target::Snapshot(k) => !parents.contains(k),
                        Target::Blob(_) | Target::Ingest(_) => true,
                    }
            });
            let Some(idx) = next else { break };
            let c = &cands[idx];
            match &c.target {
                Target::Snapshot(k) => {
                    self.snapshotter.remove(k)?;
                    report.snapshots.push(k.clone());
                }
                Target::Blob(d) => {
                    match self.content.delete(d) {
                        Ok(()) | Err(ContentError::NotFound(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                    self.meta.delete(BLOBS, d.as_ref())?;
                    report.blobs.push(d.clone());
                }
                Target::Ingest(dir) => {
                    if !self.content.remove_abandoned_ingest(dir)? {
                        // A process resumed it since the candidates were listed: it stays.
                        removed.insert(c.target.clone());
                        continue;
                    }
                    report.ingests.push(dir.clone());
                }
            }
            total = total.saturating_sub(c.size);
            report.freed += c.size;
            removed.insert(c.target.clone());
        }
        // Remembered layers whose blob or snapshot is gone are stale (the key starts with the
        // snapshot's data directory, whose numeric id is never reused).
        let gone: HashSet<String> = report.blobs.iter().map(|d| d.to_string()).collect();
        for (k, l) in self.meta.list::<crate::diff::Layer>(LAYERS)? {
            let snapshot_dir = k.split('|').next().map(PathBuf::from);
            if gone.contains(l.digest.as_ref()) || snapshot_dir.is_some_and(|d| !d.exists()) {
                self.meta.delete(LAYERS, &k)?;
            }
        }
        report.remaining = total;
        Ok(report)
    }
}
