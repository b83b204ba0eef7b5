//! The state root: its layout, the processes that use it, and the startup cleanup of what dead ones left.
//!
//! Several processes use one root at once (builds, `rbuild images`, a daemon). Each registers as an
//! *owner*: a file `owners/<id>` it holds an exclusive flock on for its whole life, so any process can
//! tell whether an owner is alive (the lock cannot be taken) or dead (it can: flock locks die with their
//! process, even under SIGKILL). What a process makes for itself belongs to its owner id and is removed
//! by whoever finds the owner dead: its scratch directory `tmp/<id>/` (mount points, sandbox state,
//! export scratch), and its active snapshots (see `snapshot::fs`). Shared state is the metadata database
//! (see [`crate::meta`] for how processes take turns on it), the content store (ingests are locked per
//! reference) and cache mounts (flock per instance).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::sys;

/// Default state root when neither `--root` nor `RBUILD_ROOT` says otherwise.
pub const DEFAULT_ROOT: &str = "/var/lib/rbuild";

/// The errors of opening a state root.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("cannot create state root {path}: {source} (pass --root or RBUILD_ROOT to use another directory)")]
    Create { path: PathBuf, source: io::Error },
    #[error("state root {0} contains ':' or ',' which overlay mount options cannot carry; choose another --root")]
    BadPath(PathBuf),
    #[error("cannot open lock file {path}: {source}")]
    OpenLock { path: PathBuf, source: io::Error },
    #[error("cannot lock {path}: {source}")]
    Lock { path: PathBuf, source: io::Error },
    #[error("cannot record our pid in {path}: {source}")]
    WritePid { path: PathBuf, source: io::Error },
    #[error("cannot clean temporary directory {path}: {source}")]
    Clean { path: PathBuf, source: io::Error },
    #[error("cannot register this process in {path}: {source}")]
    Owner { path: PathBuf, source: io::Error },
}

/// Told to the caller (who prints it) when opening has to wait for another process. Several processes
/// share a root, so nothing waits today; the callback stays for callers that show it.
#[derive(Debug, Clone)]
pub struct LockWait {
    pub root: PathBuf,
    pub pid: Option<u32>,
}

impl std::fmt::Display for LockWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "waiting for lock on {} held by pid {pid}", self.root.display()),
            None => write!(f, "waiting for lock on {} held by another process", self.root.display()),
        }
    }
}

/// The processes using a state root: this one's id, and whether another's is alive.
#[derive(Debug, Clone)]
pub struct Owners {
    dir: PathBuf,
    id: String,
}

impl Owners {
    /// This process's owner id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the owner `id` is a live process (this one included). Unknown ids are dead.
    pub fn is_alive(&self, id: &str) -> bool {
        if id == self.id {
            return true;
        }
        if !valid_owner_id(id) {
            return false;
        }
        let Ok(f) = File::open(self.dir.join(id)) else { return false };
        match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockShared) {
            Ok(()) => false,
            // Held (WOULDBLOCK), or a lock we cannot even ask about: alive, never delete its state.
            Err(_) => true,
        }
    }
}

/// Owner ids are `<pid>-<16 hex digits>`.
fn valid_owner_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(pid, r)| {
        !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && r.len() == 16
            && r.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// A fresh owner id: the pid (for people reading the directory) and 64 random bits.
fn new_owner_id() -> String {
    let mut bytes = [0u8; 8];
    if File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        bytes = (t as u64 ^ u64::from(std::process::id()).rotate_left(32)).to_le_bytes();
    }
    format!("{}-{}", std::process::id(), hex::encode(bytes))
}

/// An opened state root, registered as one of its owners until this is dropped.
#[derive(Debug)]
pub struct StateRoot {
    path: PathBuf,
    owners: Owners,
    _owner_lock: File,
}

impl StateRoot {
    /// The root to use: `RBUILD_ROOT` when set, else [`DEFAULT_ROOT`].
    pub fn default_path() -> PathBuf {
        std::env::var_os("RBUILD_ROOT")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT))
    }

    /// Creates the layout, registers this process as an owner, and removes what dead owners left in
    /// `tmp/`. Other processes may use the root at the same time; `on_wait` is kept for callers that
    /// report waits (nothing waits today).
    pub fn open(path: impl AsRef<Path>, _on_wait: &mut dyn FnMut(&LockWait)) -> Result<StateRoot, RootError> {
        let path = path.as_ref().to_path_buf();
        let s = path.to_string_lossy();
        if s.contains(':') || s.contains(',') {
            return Err(RootError::BadPath(path));
        }
        for d in ["", "content/blobs/sha256", "content/ingest", "snapshots", "tmp", "owners"] {
            let p = path.join(d);
            fs::create_dir_all(&p).map_err(|source| RootError::Create { path: p, source })?;
        }
        let path = fs::canonicalize(&path).map_err(|source| RootError::Create { path: path.clone(), source })?;
        let owners_dir = path.join("owners");
        let id = new_owner_id();
        let owner_err = |source| RootError::Owner { path: owners_dir.clone(), source };
        // Locked before it gets its name, so no other process can find it unlocked and take it for dead.
        let fresh = owners_dir.join(format!(".new-{id}"));
        let mut lock = OpenOptions::new().read(true).write(true).create_new(true).open(&fresh).map_err(owner_err)?;
        let registered = sys::flock_exclusive(&lock, false)
            .and_then(|_| write!(lock, "{}", std::process::id()))
            .and_then(|()| fs::rename(&fresh, owners_dir.join(&id)));
        if let Err(e) = registered {
            let _ = fs::remove_file(&fresh);
            return Err(owner_err(e));
        }
        let root = StateRoot { path, owners: Owners { dir: owners_dir, id }, _owner_lock: lock };
        root.sweep()?;
        let tmp = root.tmp_dir();
        fs::create_dir_all(&tmp).map_err(|source| RootError::Create { path: tmp, source })?;
        Ok(root)
    }

    /// Removes the scratch directories and owner files of dead owners (and scratch of no owner at all,
    /// which older versions left directly in `tmp/`).
    fn sweep(&self) -> Result<(), RootError> {
        let owners_dir = &self.owners.dir;
        let entries =
            fs::read_dir(owners_dir).map_err(|source| RootError::Clean { path: owners_dir.clone(), source })?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".new-") {
                // A registration that died before its rename (or is in it right now: only remove old ones).
                let old = e.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
                if old.is_some_and(|a| a > std::time::Duration::from_secs(60)) {
                    let _ = fs::remove_file(e.path());
                }
                continue;
            }
            let Ok(f) = File::open(e.path()) else { continue };
            // Taking the lock proves the owner dead; holding it while cleaning keeps the verdict true.
            if name == self.owners.id || !sys::flock_exclusive(&f, true).unwrap_or(false) {
                continue;
            }
            let tmp = self.path.join("tmp").join(&name);
            if tmp.exists() {
                detach_mounts_below(&tmp).map_err(|source| RootError::Clean { path: tmp.clone(), source })?;
                fs::remove_dir_all(&tmp).map_err(|source| RootError::Clean { path: tmp.clone(), source })?;
            }
            let _ = fs::remove_file(e.path());
        }
        let tmp_root = self.path.join("tmp");
        let entries = fs::read_dir(&tmp_root).map_err(|source| RootError::Clean { path: tmp_root.clone(), source })?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if self.owners.dir.join(&name).exists() {
                continue;
            }
            let p = e.path();
            let clean = || -> io::Result<()> {
                if e.file_type()?.is_dir() {
                    detach_mounts_below(&p)?;
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                }
            };
            match clean() {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(RootError::Clean { path: p, source }),
            }
        }
        Ok(())
    }

    /// The owners of this root (this process's id, liveness of others).
    pub fn owners(&self) -> &Owners {
        &self.owners
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn meta_path(&self) -> PathBuf {
        self.path.join("meta.redb")
    }

    pub fn content_dir(&self) -> PathBuf {
        self.path.join("content")
    }

    pub fn snapshots_dir(&self) -> PathBuf {
        self.path.join("snapshots")
    }

    /// This process's scratch space (`tmp/<owner>`), on the same filesystem as everything else (so renames
    /// out of it are atomic); removed when this process ends or, if it dies, by the next one to open the
    /// root.
    pub fn tmp_dir(&self) -> PathBuf {
        self.path.join("tmp").join(&self.owners.id)
    }
}

impl Drop for StateRoot {
    fn drop(&mut self) {
        // Best effort; what stays is removed by the next process to open the root.
        let tmp = self.tmp_dir();
        if detach_mounts_below(&tmp).is_ok() {
            let _ = fs::remove_dir_all(&tmp);
        }
        let _ = fs::remove_file(self.owners.dir.join(&self.owners.id));
    }
}

/// Lazily unmounts every mount point at or below `dir` (deepest first), as listed in
/// /proc/self/mountinfo.
fn detach_mounts_below(dir: &Path) -> io::Result<()> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else { return Ok(()) };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        // Stacked mounts on one point come off one at a time.
        while sys::unmount(&p, true).is_ok() {}
    }
    Ok(())
}

/// mountinfo escapes space, tab, newline and backslash as octal `\ooo`.
fn unescape_mountinfo(s: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// fsyncs a directory so that a rename or unlink inside it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_share_a_root_each_with_its_own_scratch() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateRoot::open(dir.path(), &mut |_| panic!("must not wait")).unwrap();
        let second = StateRoot::open(dir.path(), &mut |_| panic!("must not wait")).unwrap();
        assert_ne!(first.owners().id(), second.owners().id());
        assert_ne!(first.tmp_dir(), second.tmp_dir());
        fs::write(first.tmp_dir().join("in-use"), b"x").unwrap();
        // A third open sweeps only the dead: both live owners keep their scratch.
        let third = StateRoot::open(dir.path(), &mut |_| {}).unwrap();
        assert!(first.tmp_dir().join("in-use").exists());
        assert!(third.owners().is_alive(first.owners().id()) && third.owners().is_alive(second.owners().id()));
        let gone = first.owners().id().to_string();
        drop(first);
        assert!(!third.owners().is_alive(&gone));
        assert!(!third.owners().is_alive("not-an-owner"));
        assert!(!dir.path().join("tmp").join(&gone).exists(), "a clean exit removes its scratch");
    }

    #[test]
    fn a_dead_owners_scratch_is_removed_and_a_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let r = StateRoot::open(dir.path(), &mut |_| {}).unwrap();
        // A dead owner: its file exists but nobody holds the lock (as after SIGKILL).
        let dead = "4242-00112233445566ff";
        fs::write(dir.path().join("owners").join(dead), "4242").unwrap();
        fs::create_dir_all(dir.path().join("tmp").join(dead).join("a/b")).unwrap();
        // Scratch of no owner at all (an older version's tmp files).
        fs::write(dir.path().join("tmp").join("stray"), b"x").unwrap();
        fs::write(r.tmp_dir().join("mine"), b"x").unwrap();
        let other = StateRoot::open(dir.path(), &mut |_| {}).unwrap();
        assert!(!dir.path().join("tmp").join(dead).exists());
        assert!(!dir.path().join("owners").join(dead).exists());
        assert!(!dir.path().join("tmp/stray").exists());
        assert!(r.tmp_dir().join("mine").exists());
        assert!(!other.owners().is_alive(dead));
    }

    #[test]
    fn startup_detaches_leftover_mounts_instead_of_deleting_through_them() {
        if !rustix::process::geteuid().is_root() {
            testkit::skip("startup_detaches_leftover_mounts: needs root to mount");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("snapshot-data");
        fs::create_dir(&data).unwrap();
        fs::write(data.join("precious"), b"keep").unwrap();
        let root = dir.path().join("root");
        drop(StateRoot::open(&root, &mut |_| {}).unwrap());
        // A process that died with a snapshot mounted in its scratch: its owner file is unlocked.
        let dead = "4242-00112233445566ff";
        fs::write(root.join("owners").join(dead), "4242").unwrap();
        let mnt = root.join("tmp").join(dead).join("mnt-crashed");
        fs::create_dir_all(&mnt).unwrap();
        sys::bind_mount(&data, &mnt, false, false).unwrap();
        let _r = StateRoot::open(&root, &mut |_| {}).unwrap();
        assert!(!root.join("tmp").join(dead).exists());
        assert_eq!(fs::read(data.join("precious")).unwrap(), b"keep");
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b\\134c"), PathBuf::from("/a b\\c"));
    }
}
