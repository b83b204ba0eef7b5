//! The copy action (COPY/ADD), after BuildKit's `docopy` and fsutil's `copy.Copy`: destination
//! preparation (`prepareTargetDir`), `cp -a` semantics with owner/mode/time overrides, hardlinks kept
//! within one copy, and archive unpacking for ADD.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use llb::file::Copy;
use rustix::fs::{self as rfs, AtFlags, Mode};

use super::fsys::{self, display, Meta, Tree};
use super::mode::ModeSet;
use super::reuse::{Attrs, Reuse};
use super::select::{base_name, Selected, View};
use super::{unpack, FileOpError};

/// Owner, mode and time overrides of one copy.
pub struct Overrides {
    pub owner: Option<(u32, u32)>,
    pub mode: Option<u32>,
    pub mode_set: Option<ModeSet>,
    /// `(secs, nanos)`.
    pub time: Option<(i64, i64)>,
    pub replace: bool,
}

/// The mode of the directories a copy creates on the way to its destination: `--chmod`'s permission
/// bits when it is numeric, else 0755 (fsutil's `Copy` and `prepareTargetDir` pass `CopyInfo.Mode` to
/// `MkdirAll`; special bits do not survive Go's `os.Mkdir`).
fn parent_mode(chmod: Option<u32>) -> u32 {
    chmod.map_or(0o755, |m| m & 0o777)
}

/// Creates the missing directories of real `comps` in `dest` with exactly the permission bits of `mode`
/// (buildkitd runs with umask 0; this process's umask does not count), owned by the copy's owner (root
/// without one) and with the copy's time when set (fsutil's `MkdirAll`).
pub fn mkdir_all(
    dest: &Tree,
    comps: &[Vec<u8>],
    mode: u32,
    owner: Option<(u32, u32)>,
    time: Option<(i64, i64)>,
) -> io::Result<OwnedFd> {
    match dest.open_dir(comps) {
        Err(e) if e.kind() == io::ErrorKind::NotFound && !comps.is_empty() => {
            let parent = mkdir_all(dest, &comps[..comps.len() - 1], mode, owner, time)?;
            let name = OsStr::from_bytes(&comps[comps.len() - 1]);
            match rfs::mkdirat(&parent, name, Mode::from_raw_mode(0o700)) {
                Ok(()) => {
                    let (uid, gid) = owner.unwrap_or((0, 0));
                    fsys::chown(&parent, name, uid, gid)?;
                    fsys::chmod(&parent, name, mode & 0o777)?;
                    if let Some(t) = time {
                        fsys::set_times(&parent, name, t, t)?;
                    }
                }
                Err(e) if e == rustix::io::Errno::EXIST => {}
                Err(e) => return Err(e.into()),
            }
            dest.open_dir(comps)
        }
        r => r,
    }
}

fn io_at(what: String) -> impl FnOnce(io::Error) -> FileOpError {
    move |source| FileOpError::Io { what, source }
}

/// Runs one copy action from `src` into `dest`.
/// With `reuse`, regular files the previous result of the same copy already has are left for
/// [`Reuse::finish`] to link (see [`super::reuse`]).
pub fn run(
    dest: &Tree,
    src: &View<'_>,
    copy: &Copy,
    owner: Option<(u32, u32)>,
    mut reuse: Option<&mut Reuse>,
) -> Result<(), FileOpError> {
    if !copy.create_dest_path {
        let at = dest.resolve(&copy.dest, true).map_err(io_at(format!("failed to stat {}", copy.dest)))?;
        if at.real.len() > 1 {
            let parent = display(&at.real[..at.real.len() - 1]);
            dest.resolve(&parent, true)
                .and_then(|p| p.lstat())
                .map_err(io_at(format!("failed to stat {}", copy.dest)))?;
        }
    }
    let mode_set = copy.mode_str.as_deref().map(ModeSet::parse).transpose()?;
    let ov = Overrides {
        owner,
        mode: if mode_set.is_some() { None } else { copy.mode },
        mode_set,
        time: copy.timestamp.map(fsys::split_nanos),
        replace: copy.always_replace_existing_dest_paths,
    };
    let sources = src.select(copy)?;
    for source in sources {
        let top = &source.entries[0];
        if copy.attempt_unpack && top.meta.is_file() {
            let mut f = fsys::open_file(&*top.dir, &top.name).map_err(io_at(format!("open {}", source.matched)))?;
            if unpack::is_archive(&mut f) {
                let at = dest.resolve(&copy.dest, true).map_err(io_at(format!("resolve {}", copy.dest)))?;
                mkdir_all(dest, &at.real, 0o755, ov.owner, ov.time)
                    .map_err(io_at(format!("create destination {}", copy.dest)))?;
                let into = Tree::open(&dest.path().join(rel_path(&at.real)))
                    .map_err(io_at(format!("open destination {}", copy.dest)))?;
                unpack::extract(&mut f, &into, &source.matched, ov.owner)?;
                continue;
            }
        }
        copy_source(dest, copy, &source.matched, &source.entries, &ov, reuse.as_deref_mut())?;
    }
    Ok(())
}

/// fsutil's `Copy` for one resolved source: ensure the destination's parents, pick the target
/// (`prepareTargetDir`), copy the entries.
fn copy_source(
    dest: &Tree,
    copy: &Copy,
    matched: &str,
    entries: &[Selected],
    ov: &Overrides,
    reuse: Option<&mut Reuse>,
) -> Result<(), FileOpError> {
    let dest_path = &copy.dest;
    let shown = dest_path.clone();
    // The destination's directory (all of it with a trailing slash) exists first.
    let ensure = if dest_path.ends_with('/') || dest_path.ends_with("/.") || dest_path == "." {
        dest_path.clone()
    } else {
        match dest_path.rfind('/') {
            Some(i) => dest_path[..=i].to_string(),
            None => String::new(),
        }
    };
    let dir_mode = parent_mode(ov.mode);
    if !ensure.is_empty() {
        let at = dest.resolve(&ensure, true).map_err(io_at(format!("resolve {shown}")))?;
        mkdir_all(dest, &at.real, dir_mode, ov.owner, ov.time).map_err(io_at(format!("create directory {ensure}")))?;
    }
    let at = dest.resolve(dest_path, true).map_err(io_at(format!("resolve {shown}")))?;
    let mut target = at.real.clone();
    let fi_dest = at.lstat().ok();
    let src_meta = entries[0].meta;
    let src_is_dir = src_meta.is_dir();
    if (!copy.dir_copy_contents && src_is_dir && fi_dest.is_some())
        || (!src_is_dir && fi_dest.is_some_and(|d| d.is_dir()))
    {
        let base = base_name(matched);
        if base != "/" {
            target.push(base.into_bytes());
        }
    }
    let parent_target: Vec<Vec<u8>> =
        if copy.dir_copy_contents && src_is_dir && fi_dest.is_none() { target.clone() } else { parent_of(&target) };
    mkdir_all(dest, &parent_target, dir_mode, ov.owner, ov.time)
        .map_err(io_at(format!("create directory {}", display(&parent_target))))?;

    let mut c = Copier { dest, ov, dirs: HashMap::new(), links: HashMap::new(), finish: Vec::new(), reuse };
    for e in entries {
        let mut comps = target.clone();
        if !e.rel.is_empty() {
            comps.extend(e.rel.split('/').map(|s| s.as_bytes().to_vec()));
        }
        c.entry(e, &comps, e.rel.is_empty())?;
    }
    for (dir, name, meta, src_dir, src_name, comps) in c.finish.iter().rev() {
        c.metadata(dir, name, meta, src_dir, src_name)
            .map_err(io_at(format!("copy metadata to {}", display(comps))))?;
    }
    Ok(())
}

fn parent_of(comps: &[Vec<u8>]) -> Vec<Vec<u8>> {
    comps[..comps.len().saturating_sub(1)].to_vec()
}

type Finish = (Arc<OwnedFd>, Vec<u8>, Meta, Arc<OwnedFd>, std::ffi::OsString, Vec<Vec<u8>>);

struct Copier<'a> {
    dest: &'a Tree,
    ov: &'a Overrides,
    dirs: HashMap<Vec<Vec<u8>>, Arc<OwnedFd>>,
    links: HashMap<(u64, u64), (Arc<OwnedFd>, Vec<u8>)>,
    finish: Vec<Finish>,
    reuse: Option<&'a mut Reuse>,
}

impl Copier<'_> {
    fn parent(&mut self, comps: &[Vec<u8>]) -> io::Result<Arc<OwnedFd>> {
        let p = parent_of(comps);
        if let Some(fd) = self.dirs.get(&p) {
            return Ok(fd.clone());
        }
        let fd = Arc::new(self.dest.open_dir(&p)?);
        self.dirs.insert(p, fd.clone());
        Ok(fd)
    }

    fn entry(&mut self, e: &Selected, comps: &[Vec<u8>], top: bool) -> Result<(), FileOpError> {
        let shown = display(comps);
        let fail = |what: &str| {
            let what = format!("{what} {shown}");
            move |source: io::Error| FileOpError::Io { what, source }
        };
        let Some(last) = comps.last() else {
            // The destination root itself: only a directory's contents can go there.
            if e.meta.is_dir() {
                if !top {
                    let root = Arc::new(self.dest.root.fd().try_clone_to_owned().map_err(fail("open"))?);
                    self.finish.push((root, b".".to_vec(), e.meta, e.dir.clone(), e.name.clone(), Vec::new()));
                }
                return Ok(());
            }
            return Err(FileOpError::Invalid(format!("cannot copy {} over the root directory", e.real)));
        };
        let dir = self.parent(comps).map_err(fail("open parent of"))?;
        let name = OsStr::from_bytes(last);
        let existing = fsys::lstat(&*dir, name).ok();
        let absent = existing.is_none();
        let m = e.meta;
        if m.is_dir() {
            let mut created = false;
            match existing {
                None => created = true,
                Some(x) if x.is_dir() => {}
                Some(_) if self.ov.replace => {
                    fsys::remove_all(dir.as_fd(), name).map_err(fail("replace"))?;
                    created = true;
                }
                Some(_) => return Err(FileOpError::Invalid(format!("cannot copy to non-directory: {shown}"))),
            }
            if created {
                rfs::mkdirat(&*dir, name, Mode::from_raw_mode(0o700))
                    .map_err(io::Error::from)
                    .map_err(fail("mkdir"))?;
            }
            self.dirs.remove(comps);
            if created || !top {
                self.finish.push((dir, last.clone(), m, e.dir.clone(), e.name.clone(), comps.to_vec()));
            }
            return Ok(());
        }
        if let Some(x) = existing {
            if x.is_dir() {
                if !self.ov.replace {
                    return Err(FileOpError::Invalid(format!("cannot replace to directory {shown} with file")));
                }
                fsys::remove_all(dir.as_fd(), name).map_err(fail("replace"))?;
            } else {
                rfs::unlinkat(&*dir, name, AtFlags::empty()).map_err(io::Error::from).map_err(fail("replace"))?;
            }
        }
        if m.is_file() {
            if m.nlink > 1 {
                if let Some((ldir, lname)) = self.links.get(&(m.dev, m.ino)) {
                    rfs::linkat(&**ldir, OsStr::from_bytes(lname), &*dir, name, AtFlags::empty())
                        .map_err(io::Error::from)
                        .map_err(fail("hardlink"))?;
                    return Ok(());
                }
                self.links.insert((m.dev, m.ino), (dir.clone(), last.clone()));
            }
            let mut from = fsys::open_file(&*e.dir, &e.name).map_err(fail(&format!("open {} for", e.real)))?;
            // Read and set through the fds: a path call per attribute costs a lookup each (and the xattr
            // calls a walk through /proc/self/fd), which a copy of thousands of small files feels.
            let attrs = self.attrs_with(&m, fsys::fd_xattrs(&from).unwrap_or_default());
            if m.nlink <= 1 && absent && self.reuse.as_deref_mut().is_some_and(|r| r.offer(comps, e, &attrs)) {
                return Ok(());
            }
            let mut to = fsys::create_file(&*dir, name, 0o600).map_err(fail("create"))?;
            io::copy(&mut from, &mut to).map_err(fail("write"))?;
            let a = attrs;
            return fsys::set_fd_attrs(&to, a.uid, a.gid, &a.xattrs, a.mode, a.atime, a.mtime)
                .map_err(fail("copy metadata to"));
        } else if m.is_symlink() {
            let target = fsys::readlink(&*e.dir, &e.name).map_err(fail(&format!("readlink {} for", e.real)))?;
            rfs::symlinkat(OsStr::from_bytes(&target), &*dir, name)
                .map_err(io::Error::from)
                .map_err(fail("symlink"))?;
        } else if matches!(
            m.file_type(),
            rfs::FileType::CharacterDevice | rfs::FileType::BlockDevice | rfs::FileType::Fifo
        ) {
            fsys::mknod(&*dir, name, &m).map_err(fail("mknod"))?;
        } else if top {
            // A socket named by the instruction: what was asked cannot be in an image.
            return Err(FileOpError::Unsupported(format!(
                "{}: is a unix socket, which an image cannot hold; copy something else, or add it to \
                 .dockerignore if it is in the build context by accident",
                e.real
            )));
        } else {
            // A socket inside a copied directory: an empty file with its permissions, as BuildKit v0.24
            // writes (its context transfer sends sockets as empty regular files).
            let file = fsys::create_file(&*dir, name, 0o600).map_err(fail("create"))?;
            drop(file);
        }
        self.metadata(&dir, last, &m, &e.dir, &e.name).map_err(fail("copy metadata to"))
    }

    /// fsutil's `copyFileInfo` and `copyXAttrs`: owner, mode, xattrs, times.
    fn metadata(&self, dir: &OwnedFd, name: &[u8], m: &Meta, src_dir: &OwnedFd, src_name: &OsStr) -> io::Result<()> {
        let name = OsStr::from_bytes(name);
        let a = self.attrs(m, src_dir, src_name);
        fsys::chown(dir, name, a.uid, a.gid)?;
        fsys::set_xattrs(dir, name, &a.xattrs);
        if !m.is_symlink() {
            fsys::chmod(dir, name, a.mode)?;
        }
        fsys::set_times(dir, name, a.atime, a.mtime)
    }

    /// What an entry copied from `m` ends with: the overrides applied to the source's attributes.
    fn attrs(&self, m: &Meta, src_dir: &OwnedFd, src_name: &OsStr) -> Attrs {
        self.attrs_with(m, fsys::xattrs(src_dir, src_name).unwrap_or_default())
    }

    /// [`Copier::attrs`] with the source's xattrs already read.
    fn attrs_with(&self, m: &Meta, xattrs: Vec<(String, Vec<u8>)>) -> Attrs {
        let (uid, gid) = self.ov.owner.unwrap_or((m.uid, m.gid));
        // A numeric --chmod is the whole mode, special bits included (fsutil's copyFileInfo).
        let mode = if let Some(mode) = self.ov.mode {
            mode & 0o7777
        } else if let Some(set) = &self.ov.mode_set {
            set.apply(m.mode, m.is_dir())
        } else {
            m.mode & 0o7777
        };
        let (atime, mtime) = match self.ov.time {
            Some(t) => (t, t),
            None => (m.atime, m.mtime),
        };
        Attrs { uid, gid, mode, atime, mtime, xattrs }
    }
}

/// `comps` as a relative host path.
pub fn rel_path(comps: &[Vec<u8>]) -> std::path::PathBuf {
    snapshotter::resolve::join(comps)
}
