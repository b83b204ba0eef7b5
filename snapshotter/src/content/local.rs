//! The local content store, after containerd's `core/content/local/store.go`: writes go to a per-reference
//! ingest directory, are fsynced, verified against size and digest, then renamed into `blobs/sha256/`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

use super::{ContentError, ContentWriter, Info, InfoProvider, Ingester, Provider};
use crate::digest::{self, sha256_hex};
use crate::root::sync_dir;
use crate::{sys, Digest};

/// How long an abandoned ingest is kept for resumption before the startup pass removes it.
pub const DEFAULT_INGEST_EXPIRY: Duration = Duration::from_secs(24 * 3600);

/// Blobs in a directory (`<root>/content`).
#[derive(Debug, Clone)]
pub struct LocalStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

impl LocalStore {
    /// Opens the store in `dir`, removing abandoned ingests older than [`DEFAULT_INGEST_EXPIRY`].
    pub fn open(dir: impl AsRef<Path>) -> Result<LocalStore, ContentError> {
        Self::open_with_expiry(dir, DEFAULT_INGEST_EXPIRY)
    }

    /// Opens the store, removing abandoned (unlocked) ingests older than `expiry`.
    pub fn open_with_expiry(dir: impl AsRef<Path>, expiry: Duration) -> Result<LocalStore, ContentError> {
        let dir = dir.as_ref();
        let s = LocalStore { blobs: dir.join("blobs").join("sha256"), ingest: dir.join("ingest") };
        for d in [&s.blobs, &s.ingest] {
            fs::create_dir_all(d).map_err(|source| ContentError::List { path: d.clone(), source })?;
        }
        s.clean_ingests(expiry)?;
        Ok(s)
    }

    fn clean_ingests(&self, expiry: Duration) -> Result<(), ContentError> {
        let now = SystemTime::now();
        for p in self.ingests()? {
            let Some(lock) = claim_abandoned(&p) else { continue };
            let age = fs::metadata(p.join("data"))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or(Duration::MAX);
            if lock.is_none() || age >= expiry {
                fs::remove_dir_all(&p).map_err(|source| ContentError::Clean { path: p.clone(), source })?;
            }
        }
        Ok(())
    }

    /// Whether a live writer holds the ingest directory `dir` (one of [`LocalStore::ingests`]). A
    /// writer's lock dies with its process, so the leftover of a killed pull is not held.
    pub fn ingest_held(&self, dir: &Path) -> bool {
        claim_abandoned(dir).is_none()
    }

    /// Removes the ingest directory `dir` unless a live writer holds it; true when it was removed (or
    /// was already gone).
    pub fn remove_abandoned_ingest(&self, dir: &Path) -> Result<bool, ContentError> {
        // The lock is held while the directory goes: a writer that opened the lock file before waits,
        // then sees that the file it locked is no longer the one at the path, and starts over.
        let Some(_lock) = claim_abandoned(dir) else { return Ok(false) };
        match fs::remove_dir_all(dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(source) => Err(ContentError::Clean { path: dir.to_path_buf(), source }),
        }
    }

    /// Where a committed blob lives.
    pub fn blob_path(&self, d: &Digest) -> Result<PathBuf, ContentError> {
        Ok(self.blobs.join(sha256_hex(d)?))
    }

    fn ingest_dir(&self, reference: &str) -> PathBuf {
        self.ingest.join(&hex::encode(Sha256::digest(reference.as_bytes()))[..32])
    }

    /// Paths of the ingests currently on disk (for tests and `du`).
    pub fn ingests(&self) -> Result<Vec<PathBuf>, ContentError> {
        let entries =
            fs::read_dir(&self.ingest).map_err(|source| ContentError::List { path: self.ingest.clone(), source })?;
        Ok(entries.flatten().map(|e| e.path()).collect())
    }
}

/// Locks an ingest directory that no live writer holds: `Some` with its lock (`None` inside for a directory
/// without a lock file, the leftover of a crash in commit's cleanup, or of a writer that has not made its
/// lock yet and will start over when it finds the directory gone), `None` while a writer holds it.
fn claim_abandoned(dir: &Path) -> Option<Option<File>> {
    let Ok(lock) = File::open(dir.join("lock")) else { return Some(None) };
    sys::flock_exclusive(&lock, true).unwrap_or(false).then_some(Some(lock))
}

impl Provider for LocalStore {
    type Reader = File;

    fn reader(&self, d: &Digest) -> Result<File, ContentError> {
        let path = self.blob_path(d)?;
        File::open(&path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => ContentError::NotFound(d.clone()),
            _ => ContentError::Read { path, source },
        })
    }
}

impl InfoProvider for LocalStore {
    fn info(&self, d: &Digest) -> Result<Info, ContentError> {
        let path = self.blob_path(d)?;
        let m = fs::symlink_metadata(&path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => ContentError::NotFound(d.clone()),
            _ => ContentError::Read { path: path.clone(), source },
        })?;
        Ok(Info { digest: d.clone(), size: m.len(), created_at: m.mtime().max(0) as u64 })
    }

    fn list(&self) -> Result<Vec<Info>, ContentError> {
        let entries =
            fs::read_dir(&self.blobs).map_err(|source| ContentError::List { path: self.blobs.clone(), source })?;
        let mut out = Vec::new();
        for e in entries {
            let e = e.map_err(|source| ContentError::List { path: self.blobs.clone(), source })?;
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let d = digest::from_hex(name);
            if sha256_hex(&d).ok() != Some(name) {
                continue;
            }
            match self.info(&d) {
                Ok(i) => out.push(i),
                Err(ContentError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.digest.as_ref().cmp(b.digest.as_ref()));
        Ok(out)
    }

    fn delete(&self, d: &Digest) -> Result<(), ContentError> {
        let path = self.blob_path(d)?;
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.blobs).map_err(|source| ContentError::Delete { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ContentError::NotFound(d.clone())),
            Err(source) => Err(ContentError::Delete { path, source }),
        }
    }
}

impl Ingester for LocalStore {
    type Writer = LocalWriter;

    fn writer(&self, reference: &str, expected_size: Option<u64>) -> Result<LocalWriter, ContentError> {
        let dir = self.ingest_dir(reference);
        let open_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ContentError::OpenIngest { path, source }
        };
        // Lock the ingest; if the directory was committed and removed while we waited, start over.
        let lock = loop {
            fs::create_dir_all(&dir).map_err(open_err(&dir))?;
            let lock_path = dir.join("lock");
            let lock = match OpenOptions::new().write(true).create(true).truncate(false).open(&lock_path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(open_err(&lock_path)(e)),
            };
            sys::flock_exclusive(&lock, false).map_err(open_err(&lock_path))?;
            let held = lock.metadata().map_err(open_err(&lock_path))?;
            match fs::metadata(&lock_path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => break lock,
                _ => continue,
            }
        };
        fs::write(dir.join("ref"), reference).map_err(open_err(&dir))?;
        let data_path = dir.join("data");
        let mut data = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&data_path)
            .map_err(open_err(&data_path))?;
        let resume_err = |source| ContentError::Resume { path: data_path.clone(), source };
        let mut len = data.metadata().map_err(resume_err)?.len();
        if expected_size.is_some_and(|n| len > n) {
            data.set_len(0).map_err(resume_err)?;
            len = 0;
        }
        // Re-hash what a previous writer left so the final digest covers all of it.
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut done = 0u64;
        while done < len {
            let n = data.read(&mut buf).map_err(resume_err)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            done += n as u64;
        }
        data.set_len(done).map_err(resume_err)?;
        data.seek(SeekFrom::Start(done)).map_err(resume_err)?;
        Ok(LocalWriter {
            reference: reference.to_string(),
            dir,
            data: BufWriter::with_capacity(1 << 20, data),
            hasher,
            offset: done,
            writeback_from: done,
            blobs: self.blobs.clone(),
            _lock: lock,
        })
    }
}

/// Writeback of a blob being written is started every this many bytes, so that commit's fsync of a
/// 200 MB layer waits for the last few megabytes rather than all of them.
const WRITEBACK_CHUNK: u64 = 8 << 20;

/// A write into the local store; dropping it without commit keeps the ingest for resumption.
#[derive(Debug)]
pub struct LocalWriter {
    reference: String,
    dir: PathBuf,
    data: BufWriter<File>,
    hasher: Sha256,
    offset: u64,
    /// Where writeback has not been started yet (see [`WRITEBACK_CHUNK`]).
    writeback_from: u64,
    blobs: PathBuf,
    _lock: File,
}

impl LocalWriter {
    fn discard(&self) {
        // Best effort: the ingest is invalid, and a leftover is cleaned at the next startup anyway.
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.data.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.offset += n as u64;
        let in_file = self.offset - self.data.buffer().len() as u64;
        if in_file - self.writeback_from >= WRITEBACK_CHUNK {
            // A hint only: a failure here shows up, if it matters, in commit's fsync.
            let _ =
                crate::sys::start_writeback(self.data.get_ref(), self.writeback_from, in_file - self.writeback_from);
            self.writeback_from = in_file;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.data.flush()
    }
}

impl ContentWriter for LocalWriter {
    fn offset(&self) -> u64 {
        self.offset
    }

    fn digest(&self) -> Digest {
        digest::from_hasher(self.hasher.clone())
    }

    fn commit(mut self, expected_size: Option<u64>, expected: Option<&Digest>) -> Result<Digest, ContentError> {
        let data_path = self.dir.join("data");
        let sync_err = |source| ContentError::Sync { path: data_path.clone(), source };
        self.data.flush().map_err(sync_err)?;
        if let Some(n) = expected_size {
            if n != self.offset {
                self.discard();
                return Err(ContentError::SizeMismatch {
                    reference: self.reference.clone(),
                    expected: n,
                    actual: self.offset,
                });
            }
        }
        let actual = digest::from_hasher(self.hasher.clone());
        if let Some(e) = expected {
            if *e != actual {
                self.discard();
                return Err(ContentError::DigestMismatch { expected: e.clone(), actual });
            }
        }
        let file = self.data.get_ref();
        file.set_permissions(fs::Permissions::from_mode(0o444)).map_err(sync_err)?;
        file.sync_all().map_err(sync_err)?;
        let target = self.blobs.join(sha256_hex(&actual)?);
        if target.exists() {
            // Another writer committed the same content first; ours is identical, drop it.
            self.discard();
            return Ok(actual);
        }
        fs::rename(&data_path, &target).map_err(|source| ContentError::Rename { path: target.clone(), source })?;
        sync_dir(&self.blobs).map_err(|source| ContentError::Rename { path: target.clone(), source })?;
        self.discard();
        Ok(actual)
    }
}
