//! The build context: .dockerignore matching (a port of moby/patternmatcher) and content checksums of
//! the paths a COPY/ADD selects, remembered by stat so an unchanged context costs a stat per file.
//!
//! A checksum covers, per selected path in walk order: its name relative to the copied source, type,
//! permission bits (with setuid/setgid/sticky), uid, gid, size, link target, device numbers, xattrs and
//! content digest; never times. Content digests are remembered per root by (dev, ino, size, mtime, ctime,
//! mode, uid, gid) in one JSON record per root in the [`CHECKSUMS`] table, so a second look at an
//! unchanged tree stats every file but reads none.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use llb::Digest;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use snapshotter::meta::MetaDb;
use snapshotter::redb::TableDefinition;

use crate::fileop::fsys::{self, Meta, Tree};
use crate::fileop::select::{Filter, Selected, Source};
use crate::fileop::{FileOpError, SourceDir};

/// Remembered content digests: canonical root path to a JSON [`RootRecord`].
pub const CHECKSUMS: TableDefinition<&str, &[u8]> = TableDefinition::new("context_checksums");

pub mod ignore;

/// Reads a .dockerignore file as moby/patternmatcher/ignorefile.ReadAll does: comments and blank lines
/// dropped, patterns cleaned, `!` exceptions kept.
pub fn parse_dockerignore(contents: &str) -> Vec<String> {
    ignore::read_all(contents)
}

/// The stat a content digest was computed for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FileRecord {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    mode: u32,
    uid: u32,
    gid: u32,
    /// Hex sha256 of the content.
    digest: String,
    /// The file's extended attributes (overlay's private ones left out), sorted; `None` in records
    /// written before they were remembered. Setting an xattr changes ctime, so a record that still
    /// matches the stat spares the listxattr of every file of an unchanged context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    xattrs: Option<Vec<(String, Vec<u8>)>>,
}

impl FileRecord {
    fn matches(&self, m: &Meta) -> bool {
        self.dev == m.dev
            && self.ino == m.ino
            && self.size == m.size
            && self.mtime == m.mtime
            && self.ctime == m.ctime
            && self.mode == m.mode
            && self.uid == m.uid
            && self.gid == m.gid
    }
}

/// Everything remembered about one root: real path (`/a/b`) to its file record.
#[derive(Debug, Default, Serialize, Deserialize)]
struct RootRecord {
    files: HashMap<String, FileRecord>,
}

#[derive(Default)]
struct RootState {
    record: RootRecord,
    dirty: bool,
}

/// Content checksums of source directories, remembered per file by stat in the metadata database.
pub struct ChecksumCache {
    meta: Arc<MetaDb>,
    roots: Mutex<HashMap<String, Arc<Mutex<RootState>>>>,
    reads: AtomicU64,
    xattr_lists: AtomicU64,
}

impl ChecksumCache {
    /// A cache over `meta`; records are loaded per root on first use.
    pub fn new(meta: Arc<MetaDb>) -> ChecksumCache {
        ChecksumCache {
            meta,
            roots: Mutex::new(HashMap::new()),
            reads: AtomicU64::new(0),
            xattr_lists: AtomicU64::new(0),
        }
    }

    /// How many file contents were read to compute digests (remembered ones are not read again).
    pub fn content_reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// How many regular files' xattrs were listed (remembered ones are not listed again).
    pub fn xattr_lists(&self) -> u64 {
        self.xattr_lists.load(Ordering::Relaxed)
    }

    /// The checksum of exactly what `copy` reads from `src` (wildcards, follow_symlink, include/exclude
    /// patterns and the directory's own filters applied): type, mode, uid, gid, size, link target, xattrs and
    /// bytes of each path, never mtime.
    pub fn copy_sources(&self, src: &SourceDir, copy: &llb::file::Copy) -> Result<Digest, FileOpError> {
        let src = src.open()?;
        let sources = src.view().select(copy)?;
        self.digest(&src.tree, &sources)
    }

    /// The checksum of the tree at `path` in `src` (`/` for all of it), its final symlink followed.
    pub fn tree(&self, src: &SourceDir, path: &str) -> Result<Digest, FileOpError> {
        let src = src.open()?;
        let source = src.view().select_one(path, true, &Filter::default())?;
        self.digest(&src.tree, std::slice::from_ref(&source))
    }

    /// What [`copy_sources`](Self::copy_sources) covers, path by path: for explaining which file made a
    /// checksum differ. Uses the remembered stats, so after a solve it reads no file.
    pub fn copy_listing(&self, src: &SourceDir, copy: &llb::file::Copy) -> Result<Listing, FileOpError> {
        let src = src.open()?;
        let sources = src.view().select(copy)?;
        self.listing(&src.tree, &sources)
    }

    /// What [`tree`](Self::tree) covers, path by path.
    pub fn tree_listing(&self, src: &SourceDir, path: &str) -> Result<Listing, FileOpError> {
        let src = src.open()?;
        let source = src.view().select_one(path, true, &Filter::default())?;
        self.listing(&src.tree, std::slice::from_ref(&source))
    }

    /// Writes remembered stats back to the database (once at the end of a solve).
    pub fn flush(&self) -> Result<(), FileOpError> {
        let roots: Vec<(String, Arc<Mutex<RootState>>)> =
            self.roots.lock().map(|r| r.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default();
        for (key, state) in roots {
            let mut st = state.lock().map_err(|_| poisoned())?;
            if !st.dirty {
                continue;
            }
            self.meta.put(CHECKSUMS, &key, &st.record).map_err(|e| FileOpError::Invalid(e.to_string()))?;
            st.dirty = false;
        }
        Ok(())
    }

    fn root(&self, tree: &Tree) -> Result<Arc<Mutex<RootState>>, FileOpError> {
        let key = tree.path().to_string_lossy().into_owned();
        let mut roots = self.roots.lock().map_err(|_| poisoned())?;
        if let Some(r) = roots.get(&key) {
            return Ok(r.clone());
        }
        // A missing table, or a record from an older format, only costs a re-read.
        let record = self.meta.get::<RootRecord>(CHECKSUMS, &key).ok().flatten().unwrap_or_default();
        let r = Arc::new(Mutex::new(RootState { record, dirty: false }));
        roots.insert(key, r.clone());
        Ok(r)
    }

    fn digest(&self, tree: &Tree, sources: &[Source]) -> Result<Digest, FileOpError> {
        self.walk(tree, sources, None)
    }

    fn listing(&self, tree: &Tree, sources: &[Source]) -> Result<Listing, FileOpError> {
        let mut files = Vec::new();
        let digest = self.walk(tree, sources, Some(&mut files))?;
        Ok(Listing { digest, files })
    }

    /// The checksum of `sources`; with `files`, also each entry's own digest (of the same fields).
    fn walk(
        &self,
        tree: &Tree,
        sources: &[Source],
        mut files: Option<&mut Vec<(String, String)>>,
    ) -> Result<Digest, FileOpError> {
        let root = self.root(tree)?;
        let mut h = Sha256::new();
        for s in sources {
            field(&mut h, b"source", s.matched.as_bytes());
            for e in &s.entries {
                match files.as_deref_mut() {
                    None => self.entry(&root, &mut h, e)?,
                    Some(files) => {
                        let mut one = Sha256::new();
                        self.entry(&root, &mut Tee(&mut h, &mut one), e)?;
                        let path = e.real.trim_start_matches('/');
                        files.push((
                            if path.is_empty() { ".".into() } else { path.into() },
                            hex::encode(one.finalize()),
                        ));
                    }
                }
            }
        }
        let hex = hex::encode(h.finalize());
        format!("sha256:{hex}").parse().map_err(|e: llb::DigestError| FileOpError::Invalid(e.to_string()))
    }

    fn entry(&self, root: &Mutex<RootState>, h: &mut dyn Update, e: &Selected) -> Result<(), FileOpError> {
        let m = &e.meta;
        let fail = |what: &str| {
            let what = format!("{what} {}", e.real);
            move |source: io::Error| FileOpError::Io { what, source }
        };
        field(h, b"path", e.rel.as_bytes());
        field(h, b"type", &(m.mode & 0o170000).to_le_bytes());
        field(h, b"mode", &(m.mode & 0o7777).to_le_bytes());
        field(h, b"uid", &m.uid.to_le_bytes());
        field(h, b"gid", &m.gid.to_le_bytes());
        if m.is_symlink() {
            field(h, b"link", &fsys::readlink(&*e.dir, &e.name).map_err(fail("readlink"))?);
        } else if !m.is_dir() && !m.is_file() {
            field(h, b"rdev", &m.rdev.to_le_bytes());
        }
        if !m.is_file() {
            for (k, v) in fsys::xattrs(&e.dir, &e.name).unwrap_or_default() {
                field(h, b"xattr", k.as_bytes());
                field(h, b"value", &v);
            }
            return Ok(());
        }
        let remembered = {
            let st = root.lock().map_err(|_| poisoned())?;
            st.record.files.get(&e.real).filter(|r| r.matches(m)).map(|r| (r.digest.clone(), r.xattrs.clone()))
        };
        let (known_digest, known_xattrs) = match remembered {
            Some((d, x)) => (Some(d), x),
            None => (None, None),
        };
        let fresh_xattrs = known_xattrs.is_none();
        // A listing that fails counts as none (as before) but is not remembered; nor is one of a file whose
        // ctime is under a second old, which a coarse clock could give a second change too.
        let (xattrs, listed) = match known_xattrs {
            Some(x) => (x, true),
            None => match self.list_xattrs(e) {
                Ok(x) => (x, settled(m.ctime)),
                Err(_) => (Vec::new(), false),
            },
        };
        for (k, v) in &xattrs {
            field(h, b"xattr", k.as_bytes());
            field(h, b"value", v);
        }
        field(h, b"size", &m.size.to_le_bytes());
        let digest = match known_digest {
            Some(d) => {
                if fresh_xattrs && listed {
                    // A record from before xattrs were remembered: complete it once.
                    let mut st = root.lock().map_err(|_| poisoned())?;
                    if let Some(r) = st.record.files.get_mut(&e.real) {
                        r.xattrs = Some(xattrs);
                        st.dirty = true;
                    }
                }
                d
            }
            None => {
                let mut f = fsys::open_file(&*e.dir, &e.name).map_err(fail("open"))?;
                let mut fh = Sha256::new();
                io::copy(&mut f, &mut fh).map_err(fail("read"))?;
                self.reads.fetch_add(1, Ordering::Relaxed);
                let d = hex::encode(fh.finalize());
                let rec = FileRecord {
                    dev: m.dev,
                    ino: m.ino,
                    size: m.size,
                    mtime: m.mtime,
                    ctime: m.ctime,
                    mode: m.mode,
                    uid: m.uid,
                    gid: m.gid,
                    digest: d.clone(),
                    xattrs: listed.then_some(xattrs),
                };
                let mut st = root.lock().map_err(|_| poisoned())?;
                st.record.files.insert(e.real.clone(), rec);
                st.dirty = true;
                d
            }
        };
        field(h, b"content", digest.as_bytes());
        Ok(())
    }
}

/// The paths a checksum covers (real paths in the tree, without the leading `/`), each with the digest of
/// its own fields, in walk order; `digest` is the checksum itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub digest: Digest,
    pub files: Vec<(String, String)>,
}

/// Where checksum fields go: one hasher, or two at once.
trait Update {
    fn update(&mut self, bytes: &[u8]);
}

impl Update for Sha256 {
    fn update(&mut self, bytes: &[u8]) {
        sha2::Digest::update(self, bytes);
    }
}

struct Tee<'a>(&'a mut Sha256, &'a mut Sha256);

impl Update for Tee<'_> {
    fn update(&mut self, bytes: &[u8]) {
        sha2::Digest::update(self.0, bytes);
        sha2::Digest::update(self.1, bytes);
    }
}

/// One length-prefixed field, so no two different trees hash the same byte stream.
fn field(h: &mut dyn Update, tag: &[u8], value: &[u8]) {
    h.update(tag);
    h.update(&(value.len() as u64).to_le_bytes());
    h.update(value);
}

impl ChecksumCache {
    fn list_xattrs(&self, e: &Selected) -> io::Result<Vec<(String, Vec<u8>)>> {
        self.xattr_lists.fetch_add(1, Ordering::Relaxed);
        fsys::xattrs(&e.dir, &e.name)
    }
}

/// Whether a ctime is at least a second in the past (so a change within the same clock tick after it would
/// still be seen).
fn settled(ctime: (i64, i64)) -> bool {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64);
    now.is_ok_and(|now| ctime.0 < now - 1)
}

fn poisoned() -> FileOpError {
    FileOpError::Invalid("checksum cache lock poisoned by an earlier panic".into())
}
