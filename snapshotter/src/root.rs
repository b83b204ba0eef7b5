//! The state root: its layout, the process-level lock and the startup cleanup of temporary files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
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
}

/// Told to the caller (who prints it) when another process holds the root.
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

/// An opened, locked state root. The lock is held until this is dropped.
#[derive(Debug)]
pub struct StateRoot {
    path: PathBuf,
    _lock: File,
}

impl StateRoot {
    /// The root to use: `RBUILD_ROOT` when set, else [`DEFAULT_ROOT`].
    pub fn default_path() -> PathBuf {
        std::env::var_os("RBUILD_ROOT")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT))
    }

    /// Creates the layout, takes the process lock (calling `on_wait` once and blocking when another
    /// process holds it) and empties `tmp/`.
    pub fn open(path: impl AsRef<Path>, on_wait: &mut dyn FnMut(&LockWait)) -> Result<StateRoot, RootError> {
        let path = path.as_ref().to_path_buf();
        let s = path.to_string_lossy();
        if s.contains(':') || s.contains(',') {
            return Err(RootError::BadPath(path));
        }
        for d in ["", "content/blobs/sha256", "content/ingest", "snapshots", "tmp"] {
            let p = path.join(d);
            fs::create_dir_all(&p).map_err(|source| RootError::Create { path: p, source })?;
        }
        let path = fs::canonicalize(&path).map_err(|source| RootError::Create { path: path.clone(), source })?;
        let lock_path = path.join("lock");
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|source| RootError::OpenLock { path: lock_path.clone(), source })?;
        let got =
            sys::flock_exclusive(&lock, true).map_err(|source| RootError::Lock { path: lock_path.clone(), source })?;
        if !got {
            let mut s = String::new();
            let pid = lock.read_to_string(&mut s).ok().and_then(|_| s.trim().parse().ok());
            on_wait(&LockWait { root: path.clone(), pid });
            sys::flock_exclusive(&lock, false).map_err(|source| RootError::Lock { path: lock_path.clone(), source })?;
        }
        let write_pid = |lock: &mut File| -> io::Result<()> {
            lock.set_len(0)?;
            lock.seek(SeekFrom::Start(0))?;
            write!(lock, "{}", std::process::id())?;
            lock.flush()
        };
        write_pid(&mut lock).map_err(|source| RootError::WritePid { path: lock_path, source })?;
        let root = StateRoot { path, _lock: lock };
        let tmp = root.tmp_dir();
        clean_dir(&tmp).map_err(|source| RootError::Clean { path: tmp, source })?;
        Ok(root)
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

    /// Scratch space on the same filesystem as everything else (so renames out of it are atomic).
    pub fn tmp_dir(&self) -> PathBuf {
        self.path.join("tmp")
    }
}

/// Removes everything inside `dir`. Mounts a crashed process left there (a snapshot mounted on a
/// scratch directory) are detached first: removing through them would delete snapshot data.
pub fn clean_dir(dir: &Path) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            detach_mounts_below(&p)?;
            fs::remove_dir_all(&p)?;
        } else {
            fs::remove_file(&p)?;
        }
    }
    Ok(())
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
    fn second_open_waits_with_pid_message() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateRoot::open(dir.path(), &mut |_| panic!("first open must not wait")).unwrap();
        let p = dir.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let _second = StateRoot::open(&p, &mut |w| tx.send(w.to_string()).unwrap()).unwrap();
        });
        let msg = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        let want = format!(
            "waiting for lock on {} held by pid {}",
            fs::canonicalize(dir.path()).unwrap().display(),
            std::process::id()
        );
        assert_eq!(msg, want);
        drop(first);
        t.join().unwrap();
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
        let r = StateRoot::open(dir.path().join("root"), &mut |_| {}).unwrap();
        let mnt = r.tmp_dir().join("mnt-crashed");
        fs::create_dir(&mnt).unwrap();
        sys::bind_mount(&data, &mnt, false, false).unwrap();
        drop(r);
        let r = StateRoot::open(dir.path().join("root"), &mut |_| {}).unwrap();
        assert_eq!(fs::read_dir(r.tmp_dir()).unwrap().count(), 0);
        assert_eq!(fs::read(data.join("precious")).unwrap(), b"keep");
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b\\134c"), PathBuf::from("/a b\\c"));
    }

    #[test]
    fn startup_empties_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let r = StateRoot::open(dir.path(), &mut |_| {}).unwrap();
        fs::create_dir_all(r.tmp_dir().join("a/b")).unwrap();
        fs::write(r.tmp_dir().join("a/b/c"), b"x").unwrap();
        drop(r);
        let r = StateRoot::open(dir.path(), &mut |_| {}).unwrap();
        assert_eq!(fs::read_dir(r.tmp_dir()).unwrap().count(), 0);
    }
}
