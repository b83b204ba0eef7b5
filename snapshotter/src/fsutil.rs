//! Tree helpers: sorted walks, faithful copies (native snapshots), removal and disk usage.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Timespec, Timestamps};

use crate::sys;

/// Removes a file or a whole tree; a missing path is not an error.
pub fn remove_all(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => match fs::remove_dir_all(path) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                // A mount left by a crashed process: detach it and retry.
                let _ = crate::mount::unmount_all(path);
                fs::remove_dir_all(path)
            }
            r => r,
        },
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Entries of a directory sorted by name (bytewise), as tar writers and walkers need.
pub fn sorted_entries(dir: &Path) -> io::Result<Vec<OsString>> {
    let mut names: Vec<OsString> = fs::read_dir(dir)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// Visits every path below `root` depth-first in sorted order, parents before children. `f` gets the
/// path relative to `root` and its lstat.
pub fn walk_sorted(root: &Path, f: &mut dyn FnMut(&Path, &fs::Metadata) -> io::Result<()>) -> io::Result<()> {
    fn rec(root: &Path, rel: &Path, f: &mut dyn FnMut(&Path, &fs::Metadata) -> io::Result<()>) -> io::Result<()> {
        for name in sorted_entries(&root.join(rel))? {
            let r = rel.join(&name);
            let m = fs::symlink_metadata(root.join(&r))?;
            f(&r, &m)?;
            if m.is_dir() {
                rec(root, &r, f)?;
            }
        }
        Ok(())
    }
    rec(root, Path::new(""), f)
}

/// Bytes on disk and inodes used by a tree, hardlinked inodes counted once.
pub fn disk_usage(root: &Path) -> io::Result<(u64, u64)> {
    let mut seen = std::collections::HashSet::new();
    let m = fs::symlink_metadata(root)?;
    let (mut size, mut inodes) = (m.blocks() * 512, 1u64);
    walk_sorted(root, &mut |_, m| {
        if seen.insert((m.dev(), m.ino())) {
            size += m.blocks() * 512;
            inodes += 1;
        }
        Ok(())
    })?;
    Ok((size, inodes))
}

/// Copies the metadata that survives into images: owner, mode (with setuid/setgid/sticky), xattrs
/// (except overlay's private ones) and times, without following a final symlink.
pub fn copy_metadata(src: &Path, dst: &Path, m: &fs::Metadata) -> io::Result<()> {
    let parent = dst.parent().unwrap_or(Path::new("/"));
    let dir = File::open(parent)?;
    let name = dst.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // chown clears security.capability and setuid/setgid, so xattrs and the mode go after it.
    sys::lchownat(&dir, &name, m.uid(), m.gid())?;
    for name in sys::list_xattrs(src)? {
        if name.starts_with("trusted.overlay.") {
            continue;
        }
        if let Some(v) = sys::get_xattr(src, &name)? {
            sys::set_xattr(dst, &name, &v)?;
        }
    }
    if !m.file_type().is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(m.mode() & 0o7777))?;
    }
    let times = Timestamps {
        last_access: Timespec { tv_sec: m.atime(), tv_nsec: m.atime_nsec() as _ },
        last_modification: Timespec { tv_sec: m.mtime(), tv_nsec: m.mtime_nsec() as _ },
    };
    rustix::fs::utimensat(&dir, name.as_str(), &times, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// Copies `src` into the existing directory `dst` faithfully: file types, hardlinks, devices, owners,
/// modes, xattrs and times. Used by the native snapshotter.
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut dirs: Vec<(PathBuf, fs::Metadata)> = Vec::new();
    walk_sorted(src, &mut |rel, m| {
        let (s, d) = (src.join(rel), dst.join(rel));
        let ft = m.file_type();
        if !ft.is_dir() && m.nlink() > 1 {
            if let Some(first) = links.get(&(m.dev(), m.ino())) {
                return fs::hard_link(first, &d);
            }
            links.insert((m.dev(), m.ino()), d.clone());
        }
        if ft.is_dir() {
            fs::create_dir(&d)?;
            dirs.push((d, m.clone()));
            return Ok(());
        } else if ft.is_file() {
            fs::copy(&s, &d)?;
        } else if ft.is_symlink() {
            symlink(fs::read_link(&s)?, &d)?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let kind = if ft.is_char_device() {
                FileType::CharacterDevice
            } else if ft.is_block_device() {
                FileType::BlockDevice
            } else {
                FileType::Fifo
            };
            let (maj, min) = sys::dev_numbers(m.rdev());
            let parent = File::open(d.parent().unwrap_or(dst))?;
            let name = d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            sys::mknodat(&parent, &name, kind, m.mode(), maj, min)?;
        } else {
            // Sockets are not content; skip them as tar writers do.
            return Ok(());
        }
        copy_metadata(&s, &d, m)
    })?;
    // Directory times last, after their contents stopped changing them; deepest first.
    for (d, m) in dirs.iter().rev() {
        let rel = d.strip_prefix(dst).unwrap_or(d);
        copy_metadata(&src.join(rel), d, m)?;
    }
    let root_meta = fs::symlink_metadata(src)?;
    copy_metadata(src, dst, &root_meta)?;
    Ok(())
}

/// Whether `name` as bytes is a plain single path component.
pub fn is_plain_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}
