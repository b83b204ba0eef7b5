//! One tar entry at a time, every path resolved inside the root.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use tar::EntryType;

use super::ApplyError;
use crate::resolve::{self, Root};
use crate::sys;

/// Entry metadata gathered from the header and its PAX records.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
}

pub(super) struct Applier {
    pub(super) root: Root,
    /// Present when applying into an overlay upperdir: the parents' trees, nearest first.
    pub(super) lowers: Option<Vec<Root>>,
    /// Paths this layer wrote (an opaque marker keeps them).
    pub(super) written: HashSet<Vec<Vec<u8>>>,
    /// Directories whose times are set at the end, after their contents stopped changing them.
    pub(super) dirs: Vec<(Vec<Vec<u8>>, i64)>,
    pub(super) is_root: bool,
    /// Reused copy buffer (large writes cost fewer syscalls than io::copy's 8 KiB).
    pub(super) buf: Vec<u8>,
}

fn copy_with(r: &mut impl Read, w: &mut File, buf: &mut [u8]) -> io::Result<()> {
    use std::io::Write;
    loop {
        let n = match r.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
    }
}

fn fd_path(fd: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    // "<fd>/." names the directory itself: the l*xattr calls do not follow a final magic link.
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    p.push(if name.is_empty() { OsStr::new(".") } else { name });
    p
}

fn exists(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<rfs::Stat>> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(e) if e == rustix::io::Errno::NOENT => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes `name` in `dir`, a whole tree if it is a directory, never following symlinks.
fn remove_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match exists(dir, name)? {
        None => Ok(()),
        Some(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            // std's remove_dir_all opens each level with O_NOFOLLOW relative to its parent.
            fs::remove_dir_all(fd_path(dir, name))
        }
        Some(_) => rfs::unlinkat(dir, name, AtFlags::empty()).map_err(Into::into),
    }
}

fn set_times(dir: BorrowedFd<'_>, name: &OsStr, mtime: i64) -> io::Result<()> {
    let t = Timespec { tv_sec: mtime, tv_nsec: 0 };
    let times = Timestamps { last_access: t, last_modification: t };
    rfs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(Into::into)
}

impl Applier {
    pub(super) fn entry<R: Read>(&mut self, e: &mut tar::Entry<'_, R>) -> Result<(), ApplyError> {
        let raw = e.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let err = |source| ApplyError::Entry { path: shown.clone(), source };
        let comps = resolve::clean(&raw);
        let Some((base, parent)) = comps.split_last() else {
            // The root itself ("./"): its metadata belongs to the snapshot, not the layer.
            return Ok(());
        };
        if base == b".wh..wh..opq" {
            return self.opaque(parent).map_err(err);
        }
        if let Some(hidden) = base.strip_prefix(b".wh.") {
            if !crate::fsutil::is_plain_name(hidden) {
                return Err(ApplyError::Invalid { path: shown, field: "whiteout name" });
            }
            return self.whiteout(parent, hidden).map_err(err);
        }
        let kind = e.header().entry_type();
        let meta = self.meta(e, &shown)?;
        let dir = self.make_parent(parent).map_err(err)?;
        let name = OsStr::from_bytes(base);
        let existing = exists(dir.as_fd(), name).map_err(err)?;
        let keep_dir = kind == EntryType::Directory
            && existing.as_ref().is_some_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory);
        if existing.is_some() && !keep_dir {
            remove_at(dir.as_fd(), name).map_err(err)?;
        }
        self.written.insert(comps.clone());
        match kind {
            EntryType::Directory => {
                if !keep_dir {
                    rfs::mkdirat(&dir, name, Mode::from_raw_mode(0o700)).map_err(|e| err(e.into()))?;
                }
                self.dirs.push((comps.clone(), meta.mtime));
            }
            EntryType::Regular | EntryType::Continuous => {
                let fd = rfs::openat(
                    &dir,
                    name,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| err(e.into()))?;
                let mut f = File::from(fd);
                copy_with(e, &mut f, &mut self.buf).map_err(err)?;
                // Through the open file: no lookup of the name per attribute.
                return self.set_meta_fd(&f, &meta).map_err(err);
            }
            EntryType::Symlink => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| ApplyError::Invalid { path: shown.clone(), field: "symlink target" })?;
                rfs::symlinkat(OsStr::from_bytes(&target), &dir, name).map_err(|e| err(e.into()))?;
            }
            EntryType::Link => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| ApplyError::Invalid { path: shown.clone(), field: "hardlink target" })?
                    .into_owned();
                return self.hardlink(dir.as_fd(), name, &target, &shown);
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let ft = match kind {
                    EntryType::Char => FileType::CharacterDevice,
                    EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let h = e.header();
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                let name_str =
                    name.to_str().ok_or_else(|| ApplyError::Invalid { path: shown.clone(), field: "device name" })?;
                sys::mknodat(&dir, name_str, ft, meta.mode, major, minor).map_err(err)?;
            }
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink => {
                return Ok(());
            }
            other => return Err(ApplyError::Unsupported { path: shown, kind: format!("{other:?}") }),
        }
        self.set_meta(dir.as_fd(), name, kind == EntryType::Symlink, kind == EntryType::Directory, &meta).map_err(err)
    }

    fn meta<R: Read>(&self, e: &mut tar::Entry<'_, R>, shown: &str) -> Result<Meta, ApplyError> {
        let invalid = |field| ApplyError::Invalid { path: shown.to_string(), field };
        let h = e.header();
        let mut m = Meta {
            // Empty numeric fields (some writers leave them blank) read as 0; values that do not fit are
            // errors.
            mode: h.mode().unwrap_or(0o644) & 0o7777,
            uid: u32::try_from(h.uid().unwrap_or(0)).map_err(|_| invalid("uid"))?,
            gid: u32::try_from(h.gid().unwrap_or(0)).map_err(|_| invalid("gid"))?,
            mtime: i64::try_from(h.mtime().unwrap_or(0)).map_err(|_| invalid("mtime"))?,
            xattrs: Vec::new(),
        };
        if let Some(exts) = e.pax_extensions().map_err(|_| invalid("pax header"))? {
            for x in exts {
                let x = x.map_err(|_| invalid("pax header"))?;
                let key = x.key_bytes();
                let num =
                    || std::str::from_utf8(x.value_bytes()).ok().and_then(|v| v.split('.').next()?.parse::<i64>().ok());
                match key {
                    b"uid" => m.uid = num().and_then(|v| u32::try_from(v).ok()).ok_or_else(|| invalid("uid"))?,
                    b"gid" => m.gid = num().and_then(|v| u32::try_from(v).ok()).ok_or_else(|| invalid("gid"))?,
                    b"mtime" => m.mtime = num().ok_or_else(|| invalid("mtime"))?,
                    _ => {
                        if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                            let name = String::from_utf8(name.to_vec()).map_err(|_| invalid("xattr name"))?;
                            // Overlay's private attributes would let a layer forge whiteouts or redirects.
                            if !name.starts_with("trusted.overlay.") && !name.starts_with("user.overlay.") {
                                m.xattrs.push((name, x.value_bytes().to_vec()));
                            }
                        }
                    }
                }
            }
        }
        if m.uid == u32::MAX || m.gid == u32::MAX {
            return Err(invalid("owner"));
        }
        Ok(m)
    }

    fn set_meta(&self, dir: BorrowedFd<'_>, name: &OsStr, symlink: bool, is_dir: bool, m: &Meta) -> io::Result<()> {
        let name_str = name.to_string_lossy();
        if self.is_root {
            sys::lchownat(dir, &name_str, m.uid, m.gid)?;
        }
        for (k, v) in &m.xattrs {
            sys::set_xattr(&fd_path(dir, name), k, v)?;
        }
        if !symlink {
            // After chown, which clears setuid/setgid.
            rfs::chmodat(dir, name, Mode::from_raw_mode(m.mode), AtFlags::empty())?;
        }
        if !is_dir {
            set_times(dir, name, m.mtime)?;
        }
        Ok(())
    }

    /// [`Self::set_meta`] for a regular file this applier created and holds open.
    fn set_meta_fd(&self, f: &File, m: &Meta) -> io::Result<()> {
        if self.is_root {
            sys::fchown(f, m.uid, m.gid)?;
        }
        for (k, v) in &m.xattrs {
            rfs::fsetxattr(f, k.as_str(), v, rfs::XattrFlags::empty())?;
        }
        // After chown, which clears setuid/setgid.
        rfs::fchmod(f, Mode::from_raw_mode(m.mode))?;
        let t = Timespec { tv_sec: m.mtime, tv_nsec: 0 };
        rfs::futimens(f, &Timestamps { last_access: t, last_modification: t })?;
        Ok(())
    }

    /// Opens the parent directory, creating missing ones (copying their metadata from the lowers when
    /// writing an upperdir, so a created directory does not mask the lower one's owner and mode).
    fn make_parent(&self, parent: &[Vec<u8>]) -> io::Result<OwnedFd> {
        let lowers = self.lowers.as_deref();
        self.root.make_dirs(parent, &mut |comps, pdir, name| {
            if let Some(ls) = lowers {
                for l in ls {
                    if let Ok(src) = l.open_dir(comps) {
                        let st = rfs::fstat(&src)?;
                        let src_path = fd_path(src.as_fd(), OsStr::new(""));
                        let dst_path = fd_path(pdir, name);
                        for x in sys::list_xattrs(&src_path)? {
                            if x.starts_with("trusted.overlay.") {
                                continue;
                            }
                            if let Some(v) = sys::get_xattr(&src_path, &x)? {
                                sys::set_xattr(&dst_path, &x, &v)?;
                            }
                        }
                        let name_str = name.to_string_lossy();
                        sys::lchownat(pdir, &name_str, st.st_uid, st.st_gid)?;
                        rfs::chmodat(pdir, name, Mode::from_raw_mode(st.st_mode & 0o7777), AtFlags::empty())?;
                        return set_times(pdir, name, st.st_mtime);
                    }
                }
            }
            Ok(())
        })
    }

    fn whiteout(&mut self, parent: &[Vec<u8>], hidden: &[u8]) -> io::Result<()> {
        let name = OsStr::from_bytes(hidden);
        if self.lowers.is_some() {
            let dir = self.make_parent(parent)?;
            remove_at(dir.as_fd(), name)?;
            let name = name.to_str().ok_or_else(|| io::Error::other("whiteout name is not utf-8"))?;
            return sys::mknodat(&dir, name, FileType::CharacterDevice, 0, 0, 0);
        }
        match self.root.open_dir(parent) {
            Ok(dir) => remove_at(dir.as_fd(), name),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn opaque(&mut self, dir_comps: &[Vec<u8>]) -> io::Result<()> {
        if self.lowers.is_some() {
            let dir = self.make_parent(dir_comps)?;
            return sys::set_xattr(&fd_path(dir.as_fd(), OsStr::new("")), "trusted.overlay.opaque", b"y");
        }
        let dir = match self.root.open_dir(dir_comps) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for name in crate::fsutil::sorted_entries(&fd_path(dir.as_fd(), OsStr::new("")))? {
            let mut c = dir_comps.to_vec();
            c.push(name.as_bytes().to_vec());
            if !self.written.contains(&c) {
                remove_at(dir.as_fd(), &name)?;
            }
        }
        Ok(())
    }

    fn hardlink(&mut self, dir: BorrowedFd<'_>, name: &OsStr, target: &[u8], shown: &str) -> Result<(), ApplyError> {
        let err = |source| ApplyError::Entry { path: shown.to_string(), source };
        let missing =
            || ApplyError::LinkTarget { path: shown.to_string(), target: String::from_utf8_lossy(target).into_owned() };
        let tcomps = resolve::clean(target);
        let Some((tbase, tparent)) = tcomps.split_last() else { return Err(missing()) };
        let tname = OsStr::from_bytes(tbase);
        let tdir = match self.root.open_dir(tparent) {
            Ok(d) if exists(d.as_fd(), tname).map_err(err)?.is_some() => d,
            Ok(_) | Err(_) if self.lowers.is_some() => {
                self.copy_up(tparent, tname).map_err(err)?.ok_or_else(missing)?
            }
            _ => return Err(missing()),
        };
        rfs::linkat(&tdir, tname, dir, name, AtFlags::empty()).map_err(|e| err(e.into()))
    }

    /// Copies a lower layer's file into the upperdir so that a hardlink to it can be made there,
    /// as overlayfs itself does on link(2).
    fn copy_up(&self, parent: &[Vec<u8>], name: &OsStr) -> io::Result<Option<OwnedFd>> {
        let Some(lowers) = &self.lowers else { return Ok(None) };
        for l in lowers {
            let Ok(src_dir) = l.open_dir(parent) else { continue };
            let Some(st) = exists(src_dir.as_fd(), name)? else { continue };
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                return Ok(None);
            }
            let dst_dir = self.make_parent(parent)?;
            let src = fd_path(src_dir.as_fd(), name);
            let dst = fd_path(dst_dir.as_fd(), name);
            let m = fs::symlink_metadata(&src)?;
            if m.file_type().is_file() {
                fs::copy(&src, &dst)?;
            } else if m.file_type().is_symlink() {
                std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)?;
            } else {
                return Ok(None);
            }
            crate::fsutil::copy_metadata(&src, &dst, &m)?;
            return Ok(Some(dst_dir));
        }
        Ok(None)
    }

    /// Sets directory times last, deepest first.
    pub(super) fn finish(&mut self) -> Result<(), ApplyError> {
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.0.len()));
        for (comps, mtime) in dirs {
            let Some((base, parent)) = comps.split_last() else { continue };
            let shown = resolve::join(&comps).display().to_string();
            let dir = match self.root.open_dir(parent) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(ApplyError::Entry { path: shown, source }),
            };
            match set_times(dir.as_fd(), OsStr::from_bytes(base), mtime) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(ApplyError::Entry { path: shown, source }),
            }
        }
        Ok(())
    }
}
