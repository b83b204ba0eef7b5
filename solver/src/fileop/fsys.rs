//! Scoped file system access for file ops: every path is resolved inside a root with
//! [`snapshotter::resolve::Root`] (openat2 RESOLVE_IN_ROOT or its portable fallback), then touched with
//! `*at` calls on a directory fd and a plain name with O_NOFOLLOW, so no symlink in a context, a base image
//! or an archive can make an op read or write outside its root.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use snapshotter::resolve::{clean, Root};
use snapshotter::sys;

/// At most this many symlinks are followed for one path (the kernel's MAXSYMLINKS).
const MAX_LINKS: usize = 40;

/// The metadata of one path, as copies and checksums use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    pub atime: (i64, i64),
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl Meta {
    // The field types differ between architectures: the casts are not no-ops everywhere.
    #[allow(clippy::unnecessary_cast)]
    pub fn from_stat(st: &rfs::Stat) -> Meta {
        Meta {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            mode: st.st_mode as u32,
            nlink: st.st_nlink as u64,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            rdev: st.st_rdev as u64,
            size: st.st_size as u64,
            atime: (st.st_atime as i64, st.st_atime_nsec as i64),
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as i64),
        }
    }

    pub fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.mode)
    }

    pub fn is_dir(&self) -> bool {
        self.file_type() == FileType::Directory
    }

    pub fn is_symlink(&self) -> bool {
        self.file_type() == FileType::Symlink
    }

    pub fn is_file(&self) -> bool {
        self.file_type() == FileType::RegularFile
    }
}

/// A directory everything is resolved in, with its canonical host path (to turn fds back into paths
/// relative to it).
#[derive(Debug)]
pub struct Tree {
    pub root: Root,
    canon: PathBuf,
}

/// A path inside a [`Tree`] split into its parent directory (an O_PATH fd) and its name; the root itself
/// is `.` in the root.
#[derive(Debug)]
pub struct At {
    /// The parent directory, or its deepest existing ancestor when `parent_exists` is false.
    pub dir: OwnedFd,
    pub parent_exists: bool,
    pub name: OsString,
    /// The real path (no symlinks) relative to the tree root: empty for the root.
    pub real: Vec<Vec<u8>>,
}

impl At {
    pub fn lstat(&self) -> io::Result<Meta> {
        self.parent()?;
        lstat(&self.dir, &self.name)
    }

    /// The parent directory's fd; NotFound when it does not exist.
    pub fn parent(&self) -> io::Result<&OwnedFd> {
        if self.parent_exists {
            Ok(&self.dir)
        } else {
            Err(io::Error::from(io::ErrorKind::NotFound))
        }
    }

    /// The real path as `/a/b` (`/` for the root).
    pub fn display(&self) -> String {
        display(&self.real)
    }
}

/// `comps` as an absolute slash path.
pub fn display(comps: &[Vec<u8>]) -> String {
    let mut s = String::new();
    for c in comps {
        s.push('/');
        s.push_str(&String::from_utf8_lossy(c));
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

impl Tree {
    pub fn open(path: &Path) -> io::Result<Tree> {
        let canon = std::fs::canonicalize(path)?;
        Ok(Tree { root: Root::open(&canon)?, canon })
    }

    pub fn path(&self) -> &Path {
        &self.canon
    }

    /// The real components (relative to the root) of a directory fd obtained inside this tree.
    pub fn real_of(&self, fd: &OwnedFd) -> io::Result<Vec<Vec<u8>>> {
        let p = std::fs::read_link(proc_path(fd))?;
        let rel = p.strip_prefix(&self.canon).map_err(|_| {
            io::Error::other(format!("{} resolved outside its root {}", p.display(), self.canon.display()))
        })?;
        Ok(clean(rel.as_os_str().as_bytes()))
    }

    /// Opens the directory at `comps`, following symlinks inside the root.
    pub fn open_dir(&self, comps: &[Vec<u8>]) -> io::Result<OwnedFd> {
        self.root.open_dir(comps)
    }

    /// Resolves `path` to its parent directory and name; the final component is a symlink only when
    /// `follow` is false (it may not exist). Symlinks in parents are always followed inside the root.
    pub fn resolve(&self, path: &str, follow: bool) -> io::Result<At> {
        let mut comps = clean(path.as_bytes());
        for _ in 0..MAX_LINKS {
            let Some((name, parent)) = comps.split_last() else {
                let dir = self.root.fd().try_clone_to_owned()?;
                return Ok(At { dir, parent_exists: true, name: ".".into(), real: Vec::new() });
            };
            let dir = match self.open_dir(parent) {
                Ok(dir) => dir,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // Like continuity's RootPath: the missing rest of the path is taken as written.
                    let (mut k, mut fd) = (parent.len(), None);
                    while k > 0 && fd.is_none() {
                        k -= 1;
                        fd = self.open_dir(&parent[..k]).ok();
                    }
                    let dir = match fd {
                        Some(fd) => fd,
                        None => self.root.fd().try_clone_to_owned()?,
                    };
                    let mut real = self.real_of(&dir)?;
                    real.extend(comps[k..].iter().cloned());
                    let name = OsStr::from_bytes(name).to_os_string();
                    return Ok(At { dir, parent_exists: false, name, real });
                }
                Err(e) => return Err(e),
            };
            let mut real = self.real_of(&dir)?;
            let name = OsStr::from_bytes(name).to_os_string();
            if follow {
                if let Ok(m) = lstat(&dir, &name) {
                    if m.is_symlink() {
                        let target = rfs::readlinkat(&dir, name.as_os_str(), Vec::new())?;
                        let target = target.as_bytes();
                        comps = if target.first() == Some(&b'/') {
                            clean(target)
                        } else {
                            let mut joined = display(&real).into_bytes();
                            joined.push(b'/');
                            joined.extend_from_slice(target);
                            clean(&joined)
                        };
                        continue;
                    }
                }
            }
            real.push(name.as_bytes().to_vec());
            return Ok(At { dir, parent_exists: true, name, real });
        }
        Err(io::Error::from_raw_os_error(libc_eloop()))
    }

    /// Opens (creating missing ones with `made` told about each) the directory at real `comps`.
    pub fn make_dirs(&self, comps: &[Vec<u8>], made: &mut snapshotter::resolve::MadeDir<'_>) -> io::Result<OwnedFd> {
        self.root.make_dirs(comps, made)
    }
}

fn libc_eloop() -> i32 {
    rustix::io::Errno::LOOP.raw_os_error()
}

/// `/proc/self/fd/N` of an fd: lets path-only calls (xattrs) work on what the fd names.
pub fn proc_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

pub fn lstat(dir: impl AsFd, name: &OsStr) -> io::Result<Meta> {
    rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map(|s| Meta::from_stat(&s)).map_err(io::Error::from)
}

/// Opens the directory `name` in `dir` for reading, refusing symlinks.
pub fn open_dir_read(dir: impl AsFd, name: &OsStr) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rfs::openat(dir, name, flags, Mode::empty()).map_err(io::Error::from)
}

/// Opens the directory `name` in `dir` as an O_PATH fd, refusing symlinks.
pub fn open_dir_path(dir: impl AsFd, name: &OsStr) -> io::Result<OwnedFd> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rfs::openat(dir, name, flags, Mode::empty()).map_err(io::Error::from)
}

/// Opens the regular file `name` in `dir` for reading, refusing symlinks.
pub fn open_file(dir: impl AsFd, name: &OsStr) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(File::from(rfs::openat(dir, name, flags, Mode::empty())?))
}

/// Creates (exclusively) the file `name` in `dir` for writing.
pub fn create_file(dir: impl AsFd, name: &OsStr, mode: u32) -> io::Result<File> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(File::from(rfs::openat(dir, name, flags, Mode::from_raw_mode(mode))?))
}

/// The sorted names in a directory (Go's `os.ReadDir` order).
pub fn read_dir_sorted(dir: impl AsFd, name: &OsStr) -> io::Result<Vec<OsString>> {
    let fd = open_dir_read(dir, name)?;
    let mut out = Vec::new();
    let mut d = rfs::Dir::new(fd)?;
    while let Some(e) = d.read() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        out.push(OsStr::from_bytes(n).to_os_string());
    }
    out.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(out)
}

pub fn readlink(dir: impl AsFd, name: &OsStr) -> io::Result<Vec<u8>> {
    Ok(rfs::readlinkat(dir, name, Vec::new())?.into_bytes())
}

/// Extended attributes of `name` in `dir` (not following it), sorted; overlay's private ones left out.
pub fn xattrs(dir: &OwnedFd, name: &OsStr) -> io::Result<Vec<(String, Vec<u8>)>> {
    let p = proc_path(dir).join(name);
    let mut out = Vec::new();
    for key in sys::list_xattrs(&p)? {
        if key.starts_with("trusted.overlay.") {
            continue;
        }
        if let Some(v) = sys::get_xattr(&p, &key)? {
            out.push((key, v));
        }
    }
    out.sort();
    Ok(out)
}

/// [`xattrs`] of an open file: `flistxattr`/`fgetxattr` on the fd, without the path walk through
/// `/proc/self/fd` that the path form costs for every file of a copy.
pub fn fd_xattrs(fd: impl AsFd) -> io::Result<Vec<(String, Vec<u8>)>> {
    let fd = fd.as_fd();
    let unsupported = |e: rustix::io::Errno| e == rustix::io::Errno::NOTSUP;
    let mut names = [0u8; 1024];
    let mut big = Vec::new();
    let list: &[u8] = match rfs::flistxattr(fd, &mut names[..]) {
        Ok(n) => &names[..n],
        Err(e) if unsupported(e) => return Ok(Vec::new()),
        Err(e) if e == rustix::io::Errno::RANGE => loop {
            big.resize(rfs::flistxattr_query(fd)?.max(big.len() * 2).max(names.len() * 2), 0);
            match rfs::flistxattr(fd, &mut big[..]) {
                Ok(n) => break &big[..n],
                Err(e) if e == rustix::io::Errno::RANGE => continue, // grew meanwhile
                Err(e) => return Err(e.into()),
            }
        },
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for key in list.split(|b| *b == 0).filter(|k| !k.is_empty()) {
        let key = String::from_utf8_lossy(key).into_owned();
        if key.starts_with("trusted.overlay.") {
            continue;
        }
        let mut value = vec![0u8; 256];
        loop {
            match rfs::fgetxattr(fd, key.as_str(), &mut value[..]) {
                Ok(n) => {
                    value.truncate(n);
                    out.push((key, value));
                    break;
                }
                Err(e) if e == rustix::io::Errno::RANGE => {
                    let need = rfs::fgetxattr_query(fd, key.as_str())?;
                    value.resize(need.max(value.len() * 2), 0);
                }
                Err(e) if e == rustix::io::Errno::NODATA || unsupported(e) => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Owner, xattrs, mode and times of an open regular file, in the order of [`chown`], [`set_xattrs`],
/// [`chmod`] and [`set_times`] (chown clears set-id bits, so the mode comes after it); xattrs the file
/// system refuses are skipped as there.
pub fn set_fd_attrs(
    fd: impl AsFd,
    uid: u32,
    gid: u32,
    xattrs: &[(String, Vec<u8>)],
    mode: u32,
    atime: (i64, i64),
    mtime: (i64, i64),
) -> io::Result<()> {
    let fd = fd.as_fd();
    if uid == u32::MAX || gid == u32::MAX {
        // rustix's id constructors assert the id is not -1 (meaning "unchanged"), as in sys::lchownat.
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "uid or gid 4294967295 is reserved"));
    }
    rfs::fchown(fd, Some(rfs::Uid::from_raw(uid)), Some(rfs::Gid::from_raw(gid)))?;
    for (k, v) in xattrs {
        let _ = rfs::fsetxattr(fd, k.as_str(), v, rfs::XattrFlags::empty());
    }
    rfs::fchmod(fd, Mode::from_raw_mode(mode & 0o7777))?;
    let ts = |t: (i64, i64)| Timespec { tv_sec: t.0, tv_nsec: t.1 as _ };
    rfs::futimens(fd, &Timestamps { last_access: ts(atime), last_modification: ts(mtime) })?;
    Ok(())
}

/// Sets extended attributes, skipping those the file system refuses (BuildKit logs and goes on).
pub fn set_xattrs(dir: &OwnedFd, name: &OsStr, attrs: &[(String, Vec<u8>)]) {
    let p = proc_path(dir).join(name);
    for (k, v) in attrs {
        let _ = sys::set_xattr(&p, k, v);
    }
}

pub fn chown(dir: impl AsFd, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    sys::lchownat(dir, &name.to_string_lossy(), uid, gid)
}

/// chmod of a non-symlink (`name` is checked not to be one: chmod follows links).
pub fn chmod(dir: impl AsFd, name: &OsStr, mode: u32) -> io::Result<()> {
    let m = lstat(dir.as_fd(), name)?;
    if m.is_symlink() {
        return Ok(());
    }
    rfs::chmodat(dir, name, Mode::from_raw_mode(mode & 0o7777), AtFlags::empty()).map_err(io::Error::from)
}

/// Sets atime and mtime of `name` without following it; `(secs, nanos)` pairs.
pub fn set_times(dir: impl AsFd, name: &OsStr, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let ts = |t: (i64, i64)| Timespec { tv_sec: t.0, tv_nsec: t.1 as _ };
    let times = Timestamps { last_access: ts(atime), last_modification: ts(mtime) };
    rfs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(io::Error::from)
}

/// Nanoseconds since the epoch as `(secs, nanos)`.
pub fn split_nanos(ns: i64) -> (i64, i64) {
    (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}

/// Removes `name` in `dir` and everything below it, never following symlinks.
pub fn remove_all(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let m = match lstat(dir, name) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        r => r?,
    };
    if m.is_dir() {
        let sub = open_dir_path(dir, name)?;
        for child in read_dir_sorted(&sub, OsStr::new("."))? {
            remove_all(sub.as_fd(), &child)?;
        }
        rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    } else {
        rfs::unlinkat(dir, name, AtFlags::empty())?;
    }
    Ok(())
}

/// Creates a device or fifo node like `src`.
pub fn mknod(dir: impl AsFd, name: &OsStr, m: &Meta) -> io::Result<()> {
    let (maj, min) = sys::dev_numbers(m.rdev);
    sys::mknodat(dir, &name.to_string_lossy(), m.file_type(), m.mode & 0o7777, maj, min)
}
