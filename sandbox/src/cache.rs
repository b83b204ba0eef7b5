//! Persistent cache directories for `RUN --mount=type=cache` (BuildKit `solver/llbsolver/mounts`
//! `cacheRefGetter`): one directory per id that outlives the build, shared between concurrent users,
//! private to each, or locked, with the same semantics across processes (flock).
//!
//! Layout under the root: `<key>/` per id, where `<key>` is a readable prefix of the id plus a digest of
//! it (so no id can name a path outside the root, and distinct ids never collide); inside, the instances
//! `0`, `1`, ... and their lock files `0.lock`, `1.lock`, .... Instance `0` is the one shared and locked
//! users get; private users take the first instance nobody holds.
//!
//! - shared: a shared lock on instance 0; any number of shared users at once (they wait only while a
//!   locked or private user holds it, as a locked one would wait for them);
//! - locked: an exclusive lock on instance 0, waiting until every other user is gone;
//! - private: an exclusive lock on the first instance that is free at that moment, creating a new one
//!   when all are in use, so concurrent private users never see each other's writes.
//!
//! An instance is created on first use with the requested mode, owner and group, filled from the seed
//! directory when one is given, under a temporary name and renamed into place, so a half-seeded cache is
//! never visible.

use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// How concurrent users of one cache id share it (`RUN --mount=type=cache,sharing=...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    /// Every user gets the same directory at the same time (BuildKit's default).
    #[default]
    Shared,
    /// A user that finds the directory in use gets another one of the same id.
    Private,
    /// A user waits until nobody else uses the directory.
    Locked,
}

impl std::str::FromStr for Sharing {
    type Err = String;
    fn from_str(s: &str) -> Result<Sharing, String> {
        match s {
            "shared" => Ok(Sharing::Shared),
            "private" => Ok(Sharing::Private),
            "locked" => Ok(Sharing::Locked),
            other => Err(format!("unknown cache sharing mode {other:?}; expected shared, private or locked")),
        }
    }
}

/// The cache directories under one root (e.g. `<state>/cache-mounts`).
#[derive(Debug, Clone)]
pub struct CacheMounts {
    root: PathBuf,
}

/// A cache directory in use; dropping it releases the lock.
#[derive(Debug)]
pub struct CacheLease {
    /// The directory to bind-mount (read-write) at the mount's destination.
    pub path: PathBuf,
    _lock: File,
}

/// The directory name for a cache id: a readable, sanitised prefix and a digest of the whole id.
pub fn key_for_id(id: &str) -> String {
    let readable: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
        .take(48)
        .collect();
    let readable = readable.trim_start_matches('.');
    let digest = hex::encode(Sha256::digest(id.as_bytes()));
    format!("{readable}-{}", &digest[..32])
}

fn flock(file: &File, op: rustix::fs::FlockOperation) -> io::Result<()> {
    loop {
        match rustix::fs::flock(file, op) {
            Err(rustix::io::Errno::INTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

fn open_lock(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)
}

impl CacheMounts {
    /// Cache directories under `root` (created on first use).
    pub fn new(root: impl Into<PathBuf>) -> CacheMounts {
        CacheMounts { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the cache directory of `id` for one run, creating it with `mode`, `uid` and `gid` (BuildKit's
    /// defaults are 0755, 0:0) and filling it from `seed` when it does not exist yet. Blocks while the
    /// sharing mode requires (see the module docs).
    pub fn acquire(
        &self,
        id: &str,
        sharing: Sharing,
        mode: u32,
        uid: u32,
        gid: u32,
        seed: Option<&Path>,
    ) -> io::Result<CacheLease> {
        use rustix::fs::FlockOperation::{LockExclusive, LockShared, NonBlockingLockExclusive};
        if id.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a cache mount needs a non-empty id"));
        }
        let dir = self.root.join(key_for_id(id));
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|e| with_path(e, &dir))?;
        let (instance, lock) = match sharing {
            Sharing::Shared | Sharing::Locked => {
                let lock = open_lock(&dir.join("0.lock")).map_err(|e| with_path(e, &dir))?;
                flock(&lock, if sharing == Sharing::Shared { LockShared } else { LockExclusive })?;
                (0, lock)
            }
            Sharing::Private => {
                let mut n = 0u32;
                loop {
                    let lock = open_lock(&dir.join(format!("{n}.lock"))).map_err(|e| with_path(e, &dir))?;
                    match flock(&lock, NonBlockingLockExclusive) {
                        Ok(()) => break (n, lock),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => n += 1,
                        Err(e) => return Err(e),
                    }
                }
            }
        };
        let path = dir.join(instance.to_string());
        if !path.is_dir() {
            create_instance(&dir, &path, mode, uid, gid, seed)?;
        }
        Ok(CacheLease { path, _lock: lock })
    }
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("cache directory {}: {e}", path.display()))
}

/// Creates `path` under a temporary name in `dir` and renames it into place; a concurrent shared user
/// that won the race leaves its directory, and ours is removed.
fn create_instance(dir: &Path, path: &Path, mode: u32, uid: u32, gid: u32, seed: Option<&Path>) -> io::Result<()> {
    let tmp = tempfile::Builder::new().prefix(".new-").tempdir_in(dir).map_err(|e| with_path(e, dir))?;
    if let Some(seed) = seed {
        copy_tree(seed, tmp.path()).map_err(|e| with_path(e, seed))?;
    }
    std::os::unix::fs::chown(tmp.path(), Some(uid), Some(gid)).map_err(|e| with_path(e, path))?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode & 0o7777))
        .map_err(|e| with_path(e, path))?;
    let tmp = tmp.keep();
    match std::fs::rename(&tmp, path) {
        Ok(()) => Ok(()),
        Err(_) if path.is_dir() => std::fs::remove_dir_all(&tmp).map_err(|e| with_path(e, &tmp)),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(with_path(e, path))
        }
    }
}

/// Copies the contents of `src` into the existing directory `dst`: directories, regular files and symlinks
/// with their modes, owners and modification times (the seed of a cache mount, `from=`/`source=`).
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let meta = std::fs::symlink_metadata(&from)?;
        let ft = meta.file_type();
        if ft.is_dir() {
            std::fs::create_dir(&to)?;
            copy_tree(&from, &to)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else if ft.is_file() {
            std::fs::copy(&from, &to)?;
        } else {
            // Devices, fifos and sockets are not cache content.
            continue;
        }
        std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid()))?;
        if !ft.is_symlink() {
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
            let mtime = std::fs::FileTimes::new().set_modified(meta.modified()?);
            std::fs::File::open(&to)?.set_times(mtime)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn keys_are_safe_and_distinct() {
        let a = key_for_id("../../etc");
        assert!(!a.contains('/') && !a.starts_with('.'), "{a}");
        assert_ne!(key_for_id("a/b"), key_for_id("a_b"));
        assert!(key_for_id(&"x".repeat(500)).len() < 100);
        assert!(key_for_id("/root/.cache/go-build").starts_with("_root_.cache_go-build-"));
    }

    #[test]
    fn created_with_mode_owner_and_seed_once() {
        let root = tempfile::tempdir().unwrap();
        let seed = tempfile::tempdir().unwrap();
        std::fs::create_dir(seed.path().join("sub")).unwrap();
        std::fs::write(seed.path().join("sub/f"), "seeded").unwrap();
        std::os::unix::fs::symlink("sub/f", seed.path().join("link")).unwrap();
        let caches = CacheMounts::new(root.path().join("caches"));
        let uid = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        let lease = caches.acquire("go", Sharing::Shared, 0o750, uid, gid, Some(seed.path())).unwrap();
        let meta = std::fs::metadata(&lease.path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o750);
        assert_eq!(std::fs::read_to_string(lease.path.join("link")).unwrap(), "seeded");
        std::fs::write(lease.path.join("sub/f"), "changed").unwrap();
        drop(lease);
        // The second use finds the directory as the first left it: no re-seeding, same mode.
        let lease = caches.acquire("go", Sharing::Locked, 0o700, uid, gid, Some(seed.path())).unwrap();
        assert_eq!(std::fs::read_to_string(lease.path.join("sub/f")).unwrap(), "changed");
        assert_eq!(std::fs::metadata(&lease.path).unwrap().mode() & 0o7777, 0o750);
        // Nothing temporary is left beside the instances.
        let names: Vec<String> = std::fs::read_dir(lease.path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with(".new-")), "{names:?}");
        assert!(caches.acquire("", Sharing::Shared, 0o755, 0, 0, None).is_err());
    }

    #[test]
    fn shared_users_share_and_private_users_do_not() {
        let root = tempfile::tempdir().unwrap();
        let caches = CacheMounts::new(root.path());
        let a = caches.acquire("id", Sharing::Shared, 0o755, 0, 0, None).unwrap();
        let b = caches.acquire("id", Sharing::Shared, 0o755, 0, 0, None).unwrap();
        assert_eq!(a.path, b.path);
        drop((a, b));
        let p1 = caches.acquire("id", Sharing::Private, 0o755, 0, 0, None).unwrap();
        let p2 = caches.acquire("id", Sharing::Private, 0o755, 0, 0, None).unwrap();
        assert_ne!(p1.path, p2.path);
        assert_eq!(p1.path.parent(), p2.path.parent());
        let first = p1.path.clone();
        drop(p1);
        // A free instance is reused.
        let p3 = caches.acquire("id", Sharing::Private, 0o755, 0, 0, None).unwrap();
        assert_eq!(p3.path, first);
        // Other ids are other directories.
        let other = caches.acquire("other", Sharing::Private, 0o755, 0, 0, None).unwrap();
        assert_ne!(other.path.parent(), p3.path.parent());
    }

    #[test]
    fn locked_waits_until_free() {
        let root = tempfile::tempdir().unwrap();
        let caches = CacheMounts::new(root.path());
        let held = caches.acquire("id", Sharing::Shared, 0o755, 0, 0, None).unwrap();
        let (tx, rx) = mpsc::channel();
        let c2 = caches.clone();
        let t = std::thread::spawn(move || {
            let lease = c2.acquire("id", Sharing::Locked, 0o755, 0, 0, None).unwrap();
            tx.send(lease.path.clone()).unwrap();
        });
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "locked must wait for the shared user");
        drop(held);
        assert!(rx.recv_timeout(Duration::from_secs(10)).is_ok(), "locked must go once the cache is free");
        t.join().unwrap();
    }
}
