//! Paths resolved inside a root, never outside it: `..` stops at the root and absolute symlinks are
//! taken relative to it, as if the root were `/`. Uses openat2(RESOLVE_IN_ROOT) where the kernel has it
//! and an equivalent component-by-component resolver (O_NOFOLLOW at each step) elsewhere.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};

use crate::sys;

/// At most this many symlinks are followed in one resolution (as the kernel's MAXSYMLINKS).
const MAX_LINKS: usize = 40;

static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Splits `p` into normal components as if it were rooted at `/`: empty and `.` parts dropped, `..`
/// removing the previous component but never going above the root.
pub fn clean(p: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for c in p.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            c => out.push(c.to_vec()),
        }
    }
    out
}

/// Joins components back into a relative path.
pub fn join(comps: &[Vec<u8>]) -> PathBuf {
    let mut p = PathBuf::new();
    for c in comps {
        p.push(OsStr::from_bytes(c));
    }
    p
}

/// Told about each directory [`Root::make_dirs`] creates: its components, parent fd and name.
pub type MadeDir<'a> = dyn FnMut(&[Vec<u8>], BorrowedFd<'_>, &OsStr) -> io::Result<()> + 'a;

/// A directory everything is resolved in.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
    force_manual: bool,
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = rfs::open(path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(Root { fd, path: path.to_path_buf(), force_manual: false })
    }

    /// Uses the portable resolver even where openat2 exists (to test it).
    pub fn with_manual_resolver(mut self) -> Root {
        self.force_manual = true;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens the directory at `comps` (following symlinks, all inside the root) as an O_PATH fd.
    pub fn open_dir(&self, comps: &[Vec<u8>]) -> io::Result<OwnedFd> {
        if !self.force_manual && !NO_OPENAT2.load(Ordering::Relaxed) {
            let p = join(comps);
            let s = p.to_str().map(str::to_string);
            let r = match s {
                Some(s) => sys::open_in_root(&self.fd, &s, OFlags::PATH | OFlags::DIRECTORY),
                None => self.manual(comps),
            };
            match r {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
                r => return r,
            }
        }
        self.manual(comps)
    }

    /// Opens the directory at `comps`, creating missing directories; `made` is told each directory it
    /// creates (relative components, the parent fd and the name) so the caller can set its metadata.
    pub fn make_dirs(&self, comps: &[Vec<u8>], made: &mut MadeDir<'_>) -> io::Result<OwnedFd> {
        match self.open_dir(comps) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && !comps.is_empty() => {
                let parent = self.make_dirs(&comps[..comps.len() - 1], made)?;
                let name = OsStr::from_bytes(&comps[comps.len() - 1]);
                match rfs::mkdirat(&parent, name, Mode::from_raw_mode(0o755)) {
                    Ok(()) => made(comps, parent.as_fd(), name)?,
                    Err(e) if e == rustix::io::Errno::EXIST => {}
                    Err(e) => return Err(e.into()),
                }
                self.open_dir(comps)
            }
            r => r,
        }
    }

    /// The component-by-component resolver: each step opens one name with O_NOFOLLOW, symlinks are
    /// read and re-resolved from the root (absolute) or the current directory (relative).
    fn manual(&self, comps: &[Vec<u8>]) -> io::Result<OwnedFd> {
        let dup = |fd: &OwnedFd| fd.try_clone();
        let mut stack: Vec<OwnedFd> = vec![dup(&self.fd)?];
        let mut todo: VecDeque<Vec<u8>> = comps.iter().cloned().collect();
        let mut links = 0;
        while let Some(c) = todo.pop_front() {
            match c.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    if stack.len() > 1 {
                        stack.pop();
                    }
                    continue;
                }
                _ => {}
            }
            let cur = stack.last().ok_or_else(|| io::Error::other("resolver lost its root"))?;
            let name = OsStr::from_bytes(&c);
            let st = rfs::statat(cur, name, AtFlags::SYMLINK_NOFOLLOW)?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = rfs::readlinkat(cur, name, Vec::new())?;
                let target = target.as_bytes();
                if target.first() == Some(&b'/') {
                    stack.truncate(1);
                }
                for part in target.split(|b| *b == b'/').rev() {
                    todo.push_front(part.to_vec());
                }
                continue;
            }
            let next = rfs::openat(
                cur,
                name,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            stack.push(next);
        }
        stack.pop().ok_or_else(|| io::Error::other("resolver lost its root"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn clean_stays_below_root() {
        assert_eq!(clean(b"../../etc/passwd"), vec![b"etc".to_vec(), b"passwd".to_vec()]);
        assert_eq!(clean(b"/a/./b/../c/"), vec![b"a".to_vec(), b"c".to_vec()]);
        assert!(clean(b"..").is_empty());
    }

    fn escapes(manual: bool) {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        symlink("/", r.join("abs")).unwrap();
        symlink("../../../../..", r.join("up")).unwrap();
        symlink(outside.path(), r.join("out")).unwrap();
        symlink("loop", r.join("loop")).unwrap();
        let mut root = Root::open(r).unwrap();
        if manual {
            root = root.with_manual_resolver();
        }
        let at = |p: &[u8]| {
            let fd = root.open_dir(&clean(p)).unwrap();
            std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd))).unwrap()
        };
        let canon = std::fs::canonicalize(r).unwrap();
        assert_eq!(at(b"abs/etc"), canon.join("etc"));
        assert_eq!(at(b"up/etc"), canon.join("etc"));
        assert_eq!(at(b"up"), canon);
        // An absolute symlink to a host directory resolves to that path inside the root: missing.
        assert!(root.open_dir(&clean(b"out")).is_err());
        assert!(root.open_dir(&clean(b"loop")).is_err());
    }

    #[test]
    fn symlinks_cannot_escape_openat2() {
        escapes(false);
    }

    #[test]
    fn symlinks_cannot_escape_manual() {
        escapes(true);
    }
}
