//! The changes of a snapshot against its parent, in sorted order: read straight from an overlay
//! upperdir (never comparing whole trees), or by comparing two trees for native snapshots.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::{fsutil, sys};

/// One change, relative to the snapshot root.
#[derive(Debug, Clone)]
pub enum Change {
    /// Added or modified: write the entry found at `source`.
    Write { path: PathBuf, source: PathBuf, meta: fs::Metadata },
    /// Deleted: a `.wh.<name>` entry.
    Whiteout { path: PathBuf },
    /// The directory hides everything below it in lower layers: `.wh..wh..opq`.
    Opaque { dir: PathBuf },
}

fn is_whiteout(m: &fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

fn is_opaque(p: &Path) -> io::Result<bool> {
    Ok(sys::get_xattr(p, "trusted.overlay.opaque")?.as_deref() == Some(b"y"))
}

/// Walks an overlay upperdir: whiteout devices become deletions, opaque directories get a marker.
pub fn upper_changes(upper: &Path, f: &mut dyn FnMut(Change) -> io::Result<()>) -> io::Result<()> {
    fsutil::walk_sorted(upper, &mut |rel, m| {
        let source = upper.join(rel);
        if is_whiteout(m) {
            return f(Change::Whiteout { path: rel.to_path_buf() });
        }
        let opaque = m.is_dir() && is_opaque(&source)?;
        f(Change::Write { path: rel.to_path_buf(), source: source.clone(), meta: m.clone() })?;
        if opaque {
            f(Change::Opaque { dir: rel.to_path_buf() })?;
        }
        Ok(())
    })
}

/// Whether two entries differ in anything a layer records. Files with equal size and nanosecond
/// mtime are taken as equal (as containerd's `fs.Changes` does), except when mtime has no
/// sub-second part, where the bytes are compared.
fn differs(lp: &Path, l: &fs::Metadata, up: &Path, u: &fs::Metadata) -> io::Result<bool> {
    if l.file_type() != u.file_type()
        || l.mode() != u.mode()
        || l.uid() != u.uid()
        || l.gid() != u.gid()
        || l.rdev() != u.rdev()
    {
        return Ok(true);
    }
    let mut lx = sys::list_xattrs(lp)?;
    let mut ux = sys::list_xattrs(up)?;
    lx.sort();
    ux.sort();
    if lx != ux {
        return Ok(true);
    }
    for n in &lx {
        if sys::get_xattr(lp, n)? != sys::get_xattr(up, n)? {
            return Ok(true);
        }
    }
    if u.file_type().is_symlink() {
        return Ok(fs::read_link(lp)? != fs::read_link(up)?);
    }
    if u.is_dir() {
        return Ok(l.mtime() != u.mtime() || l.mtime_nsec() != u.mtime_nsec());
    }
    if !u.is_file() {
        return Ok(false);
    }
    if l.len() != u.len() || l.mtime() != u.mtime() || l.mtime_nsec() != u.mtime_nsec() {
        return Ok(true);
    }
    if u.mtime_nsec() != 0 {
        return Ok(false);
    }
    Ok(fs::read(lp)? != fs::read(up)?)
}

/// Compares a native snapshot's full tree with its parent's.
pub fn tree_changes(lower: Option<&Path>, upper: &Path, f: &mut dyn FnMut(Change) -> io::Result<()>) -> io::Result<()> {
    fn names(dir: Option<&Path>) -> io::Result<Vec<OsString>> {
        match dir {
            Some(d) => match fs::symlink_metadata(d) {
                Ok(m) if m.is_dir() => fsutil::sorted_entries(d),
                _ => Ok(Vec::new()),
            },
            None => Ok(Vec::new()),
        }
    }
    fn rec(
        lower: Option<&Path>,
        upper: &Path,
        rel: &Path,
        f: &mut dyn FnMut(Change) -> io::Result<()>,
    ) -> io::Result<()> {
        let ldir = lower.map(|l| l.join(rel));
        let mut all: BTreeSet<Vec<u8>> = BTreeSet::new();
        for n in names(ldir.as_deref())?.into_iter().chain(names(Some(&upper.join(rel)))?) {
            all.insert(n.as_bytes().to_vec());
        }
        for name in all {
            let r = rel.join(std::ffi::OsStr::from_bytes(&name));
            let up = upper.join(&r);
            let lp = lower.map(|l| l.join(&r));
            let u = match fs::symlink_metadata(&up) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    f(Change::Whiteout { path: r })?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let l = match &lp {
                Some(lp) => match fs::symlink_metadata(lp) {
                    Ok(m) => Some(m),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(e) => return Err(e),
                },
                None => None,
            };
            let changed = match (&l, &lp) {
                (Some(l), Some(lp)) => differs(lp, l, &up, &u)?,
                _ => true,
            };
            if changed {
                f(Change::Write { path: r.clone(), source: up.clone(), meta: u.clone() })?;
            }
            if u.is_dir() {
                let lower_is_dir = l.as_ref().is_some_and(|l| l.is_dir());
                rec(if lower_is_dir { lower } else { None }, upper, &r, f)?;
            }
        }
        Ok(())
    }
    rec(lower, upper, Path::new(""), f)
}
