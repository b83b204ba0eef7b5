//! The daemon's side of context sync: per client and context, a mirror directory of the client's files and
//! a record of each file's stat and content hash.
//!
//! A sync asks the client for its stat records (after the build's filters), compares them with the record,
//! and asks for hashes of the files whose stat changed; a file whose content the mirror already holds (under
//! any path) is copied locally, the rest are asked for and stream zstd-compressed. Unchanged files cost a
//! stat record. Builds read a mirror under a read lock; a sync that must change it takes the write lock, so
//! a build never sees files move under it. Every path from the client is checked to be relative and clean,
//! and its parents to be real directories of the mirror, so a client cannot write outside its mirror.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use solver::op::BoxFuture;
use tokio::sync::{mpsc, OwnedRwLockReadGuard, RwLock};

use crate::proto::{FileData, FileStat};
use crate::walk::{is_clean, kind, listing_digest};

/// A client's answer to "which files are in this context?".
#[derive(Debug)]
pub(crate) enum Listing {
    /// The listing has the digest the query gave: the mirror already holds it.
    Unchanged,
    /// The stat record of every entry, parents before children.
    Entries(Vec<FileStat>),
}

/// The client end of a sync.
pub(crate) trait Peer: Send + Sync {
    /// Stat records of context `key` after the filters, or [`Listing::Unchanged`] when their
    /// [`listing_digest`] is `known`.
    fn stats<'a>(
        &'a self,
        key: &'a str,
        include: &'a [String],
        exclude: &'a [String],
        known: Option<&'a [u8]>,
    ) -> BoxFuture<'a, Result<Listing, String>>;
    /// The sha256 of each of `paths`, in order.
    fn hashes<'a>(&'a self, key: &'a str, paths: Vec<String>) -> BoxFuture<'a, Result<Vec<Vec<u8>>, String>>;
    /// The contents of `paths`, as FileData messages ending with one whose `done` is set.
    fn files<'a>(
        &'a self,
        key: &'a str,
        paths: Vec<String>,
    ) -> BoxFuture<'a, Result<mpsc::UnboundedReceiver<FileData>, String>>;
}

/// What a sync did, for progress and the daemon's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SyncReport {
    /// Files (and links, directories) in the context.
    pub(crate) entries: u64,
    /// Files whose content came over the wire.
    pub(crate) files_sent: u64,
    /// Bytes received: stat and hash records and compressed file data.
    pub(crate) bytes: u64,
}

/// One file as the record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime_ns: i64,
    /// 0 in records written before ctimes were kept: such an entry matches no stat, so its file is hashed
    /// once more (and sent only if its content changed).
    #[serde(default)]
    ctime_ns: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    link: String,
    /// Hex sha256 of a regular file's content.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    sha256: String,
}

impl Entry {
    fn same_stat(&self, s: &FileStat) -> bool {
        self.mode == s.mode
            && self.uid == s.uid
            && self.gid == s.gid
            && self.size == s.size
            && self.mtime_ns == s.mtime_ns
            && self.ctime_ns == s.ctime_ns
            && self.link == s.link_target
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Record {
    files: BTreeMap<String, Entry>,
    /// Hex [`listing_digest`] of the client listing the mirror equals; empty when not known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    listing: String,
}

/// Every mirror of a daemon, under `<state>/contexts`.
pub(crate) struct Mirrors {
    root: PathBuf,
    open: Mutex<HashMap<String, Arc<Mirror>>>,
}

/// One client's context.
pub(crate) struct Mirror {
    dir: PathBuf,
    lock: Arc<RwLock<()>>,
    record: Mutex<Option<Record>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Mirrors {
    pub(crate) fn new(root: PathBuf) -> Mirrors {
        Mirrors { root, open: Mutex::new(HashMap::new()) }
    }

    /// The mirror of `client`'s context `key`.
    pub(crate) fn get(&self, client: &str, key: &str) -> Arc<Mirror> {
        let id = hex::encode(&Sha256::digest(format!("{client}\0{key}").as_bytes())[..16]);
        lock(&self.open)
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(Mirror { dir: self.root.join(id), lock: Arc::new(RwLock::new(())), record: Mutex::new(None) })
            })
            .clone()
    }
}

/// A synced mirror, held for reading while a build uses it.
pub(crate) struct Synced {
    pub(crate) path: PathBuf,
    pub(crate) _guard: OwnedRwLockReadGuard<()>,
    pub(crate) report: SyncReport,
}

/// What must change for the mirror to equal the client's listing.
#[derive(Default)]
struct Diff {
    remove: Vec<String>,
    /// Directories and symlinks to (re)create or re-own.
    meta: Vec<FileStat>,
    /// Regular files whose stat changed or that are new.
    files: Vec<FileStat>,
}

impl Diff {
    fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.meta.is_empty() && self.files.is_empty()
    }

    /// Every path whose times applying this diff may move: the entries it writes and the parent
    /// directories of everything it writes or removes.
    fn touched(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let written = self.meta.iter().chain(&self.files).map(|s| s.path.as_str());
        for path in written.clone().chain(self.remove.iter().map(String::as_str)) {
            let mut p = path;
            while let Some((parent, _)) = p.rsplit_once('/') {
                if !out.insert(parent.to_string()) {
                    break;
                }
                p = parent;
            }
        }
        out.extend(written.map(str::to_string));
        out
    }
}

fn diff(record: &Record, listing: &[FileStat]) -> Diff {
    let mut d = Diff::default();
    let listed: BTreeMap<&str, &FileStat> = listing.iter().map(|s| (s.path.as_str(), s)).collect();
    for (path, e) in &record.files {
        match listed.get(path.as_str()) {
            None => d.remove.push(path.clone()),
            Some(s) if kind(s.mode) != kind(e.mode) => d.remove.push(path.clone()),
            _ => {}
        }
    }
    for s in listing {
        if record.files.get(&s.path).is_some_and(|e| e.same_stat(s)) {
            continue;
        }
        match kind(s.mode) {
            Some('f') => d.files.push(s.clone()),
            _ => d.meta.push(s.clone()),
        }
    }
    d
}

/// The size of a StatBatch that says "unchanged".
const UNCHANGED_REPLY: u64 = 8;

fn encoded(stats: &[FileStat]) -> u64 {
    stats.iter().map(|s| prost::Message::encoded_len(s) as u64).sum()
}

impl Mirror {
    fn tree(&self) -> PathBuf {
        self.dir.join("tree")
    }

    fn record_path(&self) -> PathBuf {
        self.dir.join("record.json")
    }

    /// `f` of the record, read from disk on first use.
    fn with_record<R>(&self, f: impl FnOnce(&Record) -> R) -> R {
        let mut r = lock(&self.record);
        let record = r.get_or_insert_with(|| {
            // A missing or unreadable record only costs a full transfer.
            std::fs::read(self.record_path())
                .ok()
                .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
                .filter(|_| self.tree().is_dir())
                .unwrap_or_default()
        });
        f(record)
    }

    fn load(&self) -> Record {
        self.with_record(Record::clone)
    }

    /// The digest of the listing the mirror holds, if known.
    fn known_listing(&self) -> Option<Vec<u8>> {
        self.with_record(|r| hex::decode(&r.listing).ok().filter(|d| !d.is_empty()))
    }

    /// Brings the mirror up to date with the client's context and returns it, held for reading.
    pub(crate) async fn sync(
        self: &Arc<Self>,
        peer: &dyn Peer,
        key: &str,
        include: &[String],
        exclude: &[String],
    ) -> Result<Synced, String> {
        let known = self.known_listing();
        let listing = match peer.stats(key, include, exclude, known.as_deref()).await? {
            Listing::Entries(listing) => listing,
            Listing::Unchanged => {
                let guard = self.lock.clone().read_owned().await;
                let held = self.with_record(|r| {
                    (known.as_deref().is_some_and(|k| hex::encode(k) == r.listing)).then_some(r.files.len() as u64)
                });
                if let Some(entries) = held {
                    let report = SyncReport { entries, files_sent: 0, bytes: UNCHANGED_REPLY };
                    return Ok(Synced { path: self.tree(), _guard: guard, report });
                }
                // Another build of this context changed the mirror meanwhile: ask for the entries.
                drop(guard);
                match peer.stats(key, include, exclude, None).await? {
                    Listing::Entries(listing) => listing,
                    Listing::Unchanged => {
                        return Err("the client answered \"unchanged\" to a query without a digest".into())
                    }
                }
            }
        };
        if let Some(bad) = listing.iter().find(|s| !is_clean(&s.path) || kind(s.mode).is_none()) {
            return Err(format!("the client sent an invalid entry {:?}", bad.path));
        }
        let digest = hex::encode(listing_digest(&listing));
        let mut report = SyncReport { entries: listing.len() as u64, files_sent: 0, bytes: encoded(&listing) };
        {
            let guard = self.lock.clone().read_owned().await;
            if self.with_record(|r| r.listing == digest) {
                return Ok(Synced { path: self.tree(), _guard: guard, report });
            }
        }
        let guard = self.lock.clone().write_owned().await;
        let mut record = self.load();
        let d = diff(&record, &listing);
        let touched = d.touched();
        if !d.is_empty() {
            // Until this sync is saved, the record must not vouch for what it changes (nor its listing
            // digest for the mirror): a sync that fails or is killed half way costs those paths again, never
            // a stale file. Paths to remove stay, so a later sync removes them again.
            let mut safe = record.clone();
            for s in d.meta.iter().chain(&d.files) {
                safe.files.remove(&s.path);
            }
            safe.listing.clear();
            self.save(&safe)?;
            *lock(&self.record) = Some(safe);
        }
        let (sent, bytes) = self.apply(peer, key, &mut record, d).await?;
        // The client's times, so an export of the build is the same as a build from the client's files:
        // COPY keeps modification times. Only on what this sync changed and the directories holding it
        // (deepest first, after their entries): setting a time moves ctime, and an unchanged file's ctime
        // is what lets the context checksum skip rehashing it and a rerun COPY hardlink its previous copy.
        for s in listing.iter().rev().filter(|s| touched.contains(s.path.as_str())) {
            set_mtime(&self.tree().join(&s.path), s.mtime_ns)?;
        }
        report.files_sent = sent;
        report.bytes += bytes;
        record.listing = digest;
        self.save(&record)?;
        *lock(&self.record) = Some(record);
        Ok(Synced { path: self.tree(), _guard: guard.downgrade(), report })
    }

    fn save(&self, record: &Record) -> Result<(), String> {
        let json = serde_json::to_vec(record).map_err(|e| e.to_string())?;
        let tmp = self.dir.join("record.json.tmp");
        std::fs::create_dir_all(&self.dir)
            .and_then(|_| std::fs::write(&tmp, json))
            .and_then(|_| std::fs::rename(&tmp, self.record_path()))
            .map_err(|e| format!("cannot save the mirror record: {e}"))
    }

    /// Applies `d` to the mirror and the record; returns the files sent and the bytes received.
    async fn apply(&self, peer: &dyn Peer, key: &str, record: &mut Record, d: Diff) -> Result<(u64, u64), String> {
        let tree = self.tree();
        std::fs::create_dir_all(&tree).map_err(|e| format!("cannot create {}: {e}", tree.display()))?;
        let mut bytes = 0;
        // Deepest first, so a directory goes after what it holds.
        for path in d.remove.iter().rev() {
            let p = tree.join(path);
            let _ = match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
                Ok(_) => std::fs::remove_file(&p),
                Err(_) => Ok(()),
            };
            record.files.remove(path);
        }
        for s in &d.meta {
            let p = inside(&tree, &s.path)?;
            match kind(s.mode) {
                Some('d') => {
                    if !p.is_dir() {
                        let _ = std::fs::remove_file(&p);
                        std::fs::create_dir(&p).map_err(|e| format!("cannot create {}: {e}", s.path))?;
                    }
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(s.mode & 0o7777))
                        .map_err(|e| format!("cannot chmod {}: {e}", s.path))?;
                }
                _ => {
                    let _ = std::fs::remove_file(&p);
                    std::os::unix::fs::symlink(&s.link_target, &p)
                        .map_err(|e| format!("cannot link {}: {e}", s.path))?;
                }
            }
            std::os::unix::fs::lchown(&p, Some(s.uid), Some(s.gid))
                .map_err(|e| format!("cannot chown {}: {e}", s.path))?;
            record.files.insert(s.path.clone(), entry(s, String::new()));
        }
        if d.files.is_empty() {
            return Ok((0, bytes));
        }
        let paths: Vec<String> = d.files.iter().map(|s| s.path.clone()).collect();
        let hashes = peer.hashes(key, paths).await?;
        if hashes.len() != d.files.len() {
            return Err("the client answered a different number of hashes".into());
        }
        bytes += hashes.iter().map(|h| h.len() as u64 + 8).sum::<u64>();
        // Content the mirror already holds, by hash: copied locally, never sent.
        let mut held: HashMap<String, String> = HashMap::new();
        for (path, e) in &record.files {
            if !e.sha256.is_empty() {
                held.entry(e.sha256.clone()).or_insert_with(|| path.clone());
            }
        }
        let mut wanted: BTreeMap<String, (FileStat, String)> = BTreeMap::new();
        for (s, h) in d.files.iter().zip(hashes) {
            let hex = hex::encode(&h);
            let dest = inside(&tree, &s.path)?;
            if record.files.get(&s.path).is_some_and(|e| e.sha256 == hex) && dest.is_file() {
                // The same content in place: only the stat changed.
                finish_in_place(&dest, s)?;
                record.files.insert(s.path.clone(), entry(s, hex));
                continue;
            }
            if let Some(src) = held.get(&hex).map(|p| tree.join(p)) {
                let tmp = temp_of(&dest);
                // Verified while copying: an earlier copy of this sync may have replaced the source.
                if copy_verified(&src, &tmp, &hex) {
                    finish(&tmp, &dest, s)?;
                    record.files.insert(s.path.clone(), entry(s, hex));
                    continue;
                }
                let _ = std::fs::remove_file(&tmp);
            }
            wanted.insert(s.path.clone(), (s.clone(), hex));
        }
        if wanted.is_empty() {
            return Ok((0, bytes));
        }
        let mut rx = peer.files(key, wanted.keys().cloned().collect()).await?;
        let mut open: Option<(String, std::fs::File, PathBuf, Sha256)> = None;
        let mut sent = 0;
        while let Some(chunk) = rx.recv().await {
            if !chunk.error.is_empty() {
                return Err(chunk.error);
            }
            bytes += prost::Message::encoded_len(&chunk) as u64;
            if !chunk.path.is_empty() {
                if open.as_ref().is_none_or(|(p, ..)| *p != chunk.path) {
                    if !wanted.contains_key(&chunk.path) {
                        return Err(format!("the client sent {:?}, which was not asked for", chunk.path));
                    }
                    let dest = inside(&tree, &chunk.path)?;
                    let tmp = temp_of(&dest);
                    let f = std::fs::File::create(&tmp).map_err(|e| format!("cannot write {}: {e}", chunk.path))?;
                    open = Some((chunk.path.clone(), f, tmp, Sha256::new()));
                }
                let (path, f, _, h) = open.as_mut().ok_or("no file is open")?;
                if !chunk.zstd.is_empty() {
                    let data = zstd::decode_all(&chunk.zstd[..]).map_err(|e| format!("{path}: bad zstd data: {e}"))?;
                    h.update(&data);
                    f.write_all(&data).map_err(|e| format!("cannot write {path}: {e}"))?;
                }
                if chunk.eof {
                    let (path, f, tmp, h) = open.take().ok_or("no file is open")?;
                    drop(f);
                    let (s, hex) = &wanted[&path];
                    if hex::encode(h.finalize()) != *hex {
                        let _ = std::fs::remove_file(&tmp);
                        return Err(format!("{path} changed while it was sent; build again"));
                    }
                    finish(&tmp, &inside(&tree, &path)?, s)?;
                    record.files.insert(path.clone(), entry(s, hex.clone()));
                    sent += 1;
                }
            }
            if chunk.done {
                break;
            }
        }
        if let Some((path, _, tmp, _)) = open {
            let _ = std::fs::remove_file(tmp);
            return Err(format!("the transfer of {path} was cut off"));
        }
        if sent as usize != wanted.len() {
            return Err(format!("the client sent {sent} of {} files", wanted.len()));
        }
        Ok((sent, bytes))
    }
}

/// Copies `src` to `tmp` and checks that the content has sha256 `hex`.
fn copy_verified(src: &Path, tmp: &Path, hex: &str) -> bool {
    let Ok(mut from) = std::fs::File::open(src) else { return false };
    let Ok(mut to) = std::fs::File::create(tmp) else { return false };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match std::io::Read::read(&mut from, &mut buf) {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
                if to.write_all(&buf[..n]).is_err() {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    hex::encode(h.finalize()) == hex
}

/// Sets a path's modification (and access) time without following a symlink.
fn set_mtime(p: &Path, ns: i64) -> Result<(), String> {
    let t = rustix::fs::Timespec { tv_sec: ns.div_euclid(1_000_000_000), tv_nsec: ns.rem_euclid(1_000_000_000) as _ };
    let times = rustix::fs::Timestamps { last_access: t, last_modification: t };
    rustix::fs::utimensat(rustix::fs::CWD, p, &times, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| format!("cannot set the time of {}: {e}", p.display()))
}

fn entry(s: &FileStat, sha256: String) -> Entry {
    Entry {
        mode: s.mode,
        uid: s.uid,
        gid: s.gid,
        size: s.size,
        mtime_ns: s.mtime_ns,
        ctime_ns: s.ctime_ns,
        link: s.link_target.clone(),
        sha256,
    }
}

fn temp_of(dest: &Path) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dest.with_file_name(format!(".{name}.rbuild-sync-{}", N.fetch_add(1, Ordering::Relaxed)))
}

/// Mode and owner on the new file, then renamed over the old one.
fn finish(tmp: &Path, dest: &Path, s: &FileStat) -> Result<(), String> {
    finish_in_place(tmp, s)?;
    if dest.is_dir() {
        std::fs::remove_dir_all(dest).map_err(|e| format!("cannot replace {}: {e}", s.path))?;
    }
    std::fs::rename(tmp, dest).map_err(|e| format!("cannot write {}: {e}", s.path))
}

fn finish_in_place(p: &Path, s: &FileStat) -> Result<(), String> {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(s.mode & 0o7777))
        .map_err(|e| format!("cannot chmod {}: {e}", s.path))?;
    std::os::unix::fs::lchown(p, Some(s.uid), Some(s.gid)).map_err(|e| format!("cannot chown {}: {e}", s.path))
}

/// `rel` inside `root`, its parents real directories (never symlinks), so nothing lands outside the mirror.
fn inside(root: &Path, rel: &str) -> Result<PathBuf, String> {
    if !is_clean(rel) {
        return Err(format!("the client sent an invalid path {rel:?}"));
    }
    let mut p = root.to_path_buf();
    let comps: Vec<&str> = rel.split('/').collect();
    for c in &comps[..comps.len() - 1] {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            _ => return Err(format!("{rel}: its parent {} is not a directory in the context", p.display())),
        }
    }
    p.push(comps[comps.len() - 1]);
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client over a real directory, counting what it is asked.
    #[derive(Default)]
    struct Dir {
        root: PathBuf,
        /// Per listing query: whether it carried the digest of a held listing.
        listed: Mutex<Vec<bool>>,
        hashed: Mutex<Vec<String>>,
        sent: Mutex<Vec<String>>,
        /// Fail the next file transfer after this many files.
        cut_after: Mutex<Option<usize>>,
    }

    fn dir(root: &Path) -> Dir {
        Dir { root: root.to_path_buf(), ..Dir::default() }
    }

    impl Peer for Dir {
        fn stats<'a>(
            &'a self,
            _key: &'a str,
            include: &'a [String],
            exclude: &'a [String],
            known: Option<&'a [u8]>,
        ) -> BoxFuture<'a, Result<Listing, String>> {
            Box::pin(async move {
                lock(&self.listed).push(known.is_some());
                let listing = crate::walk::list(&self.root, include, exclude)?;
                Ok(match known {
                    Some(k) if listing_digest(&listing) == k => Listing::Unchanged,
                    _ => Listing::Entries(listing),
                })
            })
        }
        fn hashes<'a>(&'a self, _key: &'a str, paths: Vec<String>) -> BoxFuture<'a, Result<Vec<Vec<u8>>, String>> {
            Box::pin(async move {
                lock(&self.hashed).extend(paths.clone());
                Ok(paths.iter().map(|p| Sha256::digest(std::fs::read(self.root.join(p)).unwrap()).to_vec()).collect())
            })
        }
        fn files<'a>(
            &'a self,
            _key: &'a str,
            paths: Vec<String>,
        ) -> BoxFuture<'a, Result<mpsc::UnboundedReceiver<FileData>, String>> {
            Box::pin(async move {
                let (tx, rx) = mpsc::unbounded_channel();
                let cut = lock(&self.cut_after).take();
                for (i, p) in paths.into_iter().enumerate() {
                    if cut == Some(i) {
                        tx.send(FileData { error: "the client went away".into(), ..Default::default() }).unwrap();
                        return Ok(rx);
                    }
                    lock(&self.sent).push(p.clone());
                    let data = std::fs::read(self.root.join(&p)).unwrap();
                    let zstd = zstd::encode_all(&data[..], 3).unwrap();
                    tx.send(FileData { path: p, zstd, eof: true, ..Default::default() }).unwrap();
                }
                tx.send(FileData { done: true, ..Default::default() }).unwrap();
                Ok(rx)
            })
        }
    }

    fn tree_of(p: &Path) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = crate::walk::list(p, &[], &[])
            .unwrap()
            .into_iter()
            .map(|s| {
                let content = if kind(s.mode) == Some('f') {
                    std::fs::read_to_string(p.join(&s.path)).unwrap()
                } else {
                    s.link_target.clone()
                };
                (format!("{} {:o}", s.path, s.mode), content)
            })
            .collect();
        out.sort();
        out
    }

    #[tokio::test]
    async fn only_changed_content_is_sent_and_the_mirror_equals_the_client() {
        let client = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let c = client.path();
        std::fs::create_dir_all(c.join("src")).unwrap();
        std::fs::write(c.join("src/a"), "one").unwrap();
        std::fs::write(c.join("src/b"), "two").unwrap();
        std::os::unix::fs::symlink("src/a", c.join("link")).unwrap();
        let peer = dir(c);
        let mirrors = Mirrors::new(state.path().to_path_buf());
        let m = mirrors.get("client", "ctx");
        let s = m.sync(&peer, "ctx", &[], &[]).await.unwrap();
        assert_eq!(s.report.files_sent, 2);
        assert_eq!(tree_of(&s.path), tree_of(c));
        drop(s);

        // Nothing changed: the client says so (its listing has the held digest); no hash asked, nothing sent.
        let s = m.sync(&peer, "ctx", &[], &[]).await.unwrap();
        assert_eq!((s.report.files_sent, s.report.entries, lock(&peer.hashed).len()), (0, 4, 2));
        assert_eq!(s.report.bytes, UNCHANGED_REPLY);
        assert_eq!(*lock(&peer.listed), [false, true]);
        drop(s);

        // A copy of known content is not sent; a changed file is; a removed one goes.
        std::fs::write(c.join("src/c"), "one").unwrap();
        std::fs::write(c.join("src/b"), "three").unwrap();
        std::fs::remove_file(c.join("link")).unwrap();
        let s = m.sync(&peer, "ctx", &[], &[]).await.unwrap();
        assert_eq!(*lock(&peer.sent), ["src/a", "src/b", "src/b"]);
        assert_eq!(tree_of(&s.path), tree_of(c));
        drop(s);

        // A new daemon process reads the record: still nothing to send, nor any listing.
        let again = Mirrors::new(state.path().to_path_buf()).get("client", "ctx");
        let s = again.sync(&peer, "ctx", &[], &[]).await.unwrap();
        assert_eq!((s.report.files_sent, s.report.bytes), (0, UNCHANGED_REPLY));
    }

    /// A client whose listing query is overtaken: before it answers, another sync (of another checkout
    /// under the same client and key) changes the mirror.
    struct Overtaken {
        inner: Dir,
        other: Dir,
        mirror: Arc<Mirror>,
        raced: Mutex<bool>,
    }

    impl Peer for Overtaken {
        fn stats<'a>(
            &'a self,
            key: &'a str,
            include: &'a [String],
            exclude: &'a [String],
            known: Option<&'a [u8]>,
        ) -> BoxFuture<'a, Result<Listing, String>> {
            Box::pin(async move {
                let race = !std::mem::replace(&mut *lock(&self.raced), true);
                if race {
                    drop(self.mirror.sync(&self.other, key, include, exclude).await?);
                }
                self.inner.stats(key, include, exclude, known).await
            })
        }
        fn hashes<'a>(&'a self, key: &'a str, paths: Vec<String>) -> BoxFuture<'a, Result<Vec<Vec<u8>>, String>> {
            self.inner.hashes(key, paths)
        }
        fn files<'a>(
            &'a self,
            key: &'a str,
            paths: Vec<String>,
        ) -> BoxFuture<'a, Result<mpsc::UnboundedReceiver<FileData>, String>> {
            self.inner.files(key, paths)
        }
    }

    /// "Unchanged" is trusted only while the mirror still holds the listing the query named; when another
    /// sync changed it meanwhile, the entries are asked for and the mirror is brought back.
    #[tokio::test]
    async fn an_unchanged_answer_overtaken_by_another_sync_asks_for_the_entries() {
        let (a, b, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(a.path().join("f"), "from a").unwrap();
        std::fs::write(b.path().join("f"), "from b, longer").unwrap();
        std::fs::write(b.path().join("g"), "only in b").unwrap();
        let m = Mirrors::new(state.path().to_path_buf()).get("client", "ctx");
        drop(m.sync(&dir(a.path()), "ctx", &[], &[]).await.unwrap());
        let peer = Overtaken { inner: dir(a.path()), other: dir(b.path()), mirror: m.clone(), raced: Mutex::default() };
        let s = m.sync(&peer, "ctx", &[], &[]).await.unwrap();
        assert_eq!(tree_of(&s.path), tree_of(a.path()));
        assert_eq!(*lock(&peer.inner.listed), [true, false], "the entries were not asked for again");
    }

    fn ctime_of(p: &Path) -> (i64, i64) {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(p).unwrap();
        (m.ctime(), m.ctime_nsec())
    }

    /// What the stat records promise: any write to a file is seen, even one that keeps its size and puts its
    /// modification time back (the write moves ctime, which user space cannot set), through the digest fast
    /// path too; and a sync touches only what changed in the mirror, so an unchanged file keeps its ctime
    /// there (what the context checksum and a rerun COPY's reuse trust).
    #[tokio::test]
    async fn a_rewrite_keeping_size_and_mtime_is_seen_and_nothing_else_is_touched() {
        let client = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let c = client.path();
        std::fs::create_dir_all(c.join("d")).unwrap();
        std::fs::write(c.join("d/same"), "unchanged").unwrap();
        std::fs::write(c.join("d/victim"), "aaaa").unwrap();
        let peer = dir(c);
        let m = Mirrors::new(state.path().to_path_buf()).get("client", "ctx");
        let s = m.sync(&peer, "ctx", &[], &[]).await.unwrap();
        let mirror = s.path.clone();
        drop(s);
        let before = ctime_of(&mirror.join("d/same"));

        let t = std::fs::symlink_metadata(c.join("d/victim")).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(c.join("d/victim"), "bbbb").unwrap();
        std::fs::File::options().write(true).open(c.join("d/victim")).unwrap().set_modified(t).unwrap();
        let s = m.sync(&peer, "ctx", &[], &[]).await.unwrap();
        assert_eq!(std::fs::read_to_string(s.path.join("d/victim")).unwrap(), "bbbb");
        assert_eq!(s.report.files_sent, 1);
        assert_eq!(tree_of(&s.path), tree_of(c));
        let mt = |p: &Path| std::fs::symlink_metadata(p).unwrap().modified().unwrap();
        assert_eq!(mt(&s.path.join("d/victim")), t);
        assert_eq!(mt(&s.path.join("d")), mt(&c.join("d")));
        assert_eq!(ctime_of(&mirror.join("d/same")), before, "an unchanged file of the mirror was touched");
    }

    /// A sync cut off half way leaves a record that vouches only for what it did not change, so the next
    /// one (the client unchanged, its digest the one the mirror was being brought to) still completes it.
    #[tokio::test]
    async fn a_sync_cut_off_half_way_is_completed_by_the_next() {
        let client = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let c = client.path();
        for f in ["a", "b", "c"] {
            std::fs::write(c.join(f), format!("{f}1")).unwrap();
        }
        let peer = dir(c);
        let m = Mirrors::new(state.path().to_path_buf()).get("client", "ctx");
        drop(m.sync(&peer, "ctx", &[], &[]).await.unwrap());
        for f in ["a", "b", "c"] {
            std::fs::write(c.join(f), format!("{f}22")).unwrap();
        }
        *lock(&peer.cut_after) = Some(1);
        assert!(m.sync(&peer, "ctx", &[], &[]).await.is_err());
        // The same daemon, and a restarted one, both finish the job.
        let s = m.sync(&peer, "ctx", &[], &[]).await.unwrap();
        assert_eq!(tree_of(&s.path), tree_of(c));
        drop(s);
        std::fs::write(c.join("b"), "b333").unwrap();
        *lock(&peer.cut_after) = Some(0);
        assert!(m.sync(&peer, "ctx", &[], &[]).await.is_err());
        let again = Mirrors::new(state.path().to_path_buf()).get("client", "ctx");
        let s = again.sync(&peer, "ctx", &[], &[]).await.unwrap();
        assert_eq!(tree_of(&s.path), tree_of(c));
    }

    #[test]
    fn paths_cannot_leave_the_mirror() {
        let t = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", t.path().join("out")).unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        assert!(inside(t.path(), "out/passwd").is_err());
        assert!(inside(t.path(), "../x").is_err());
        assert!(inside(t.path(), "/etc/passwd").is_err());
        assert_eq!(inside(t.path(), "d/x").unwrap(), t.path().join("d/x"));
    }
}
