//! Reusing the previous result of the same COPY: when `COPY . /app` runs again because one file of a
//! 10,000-file context changed, the other 9,999 files are hardlinked from the snapshot the previous run
//! committed instead of copied, so the step costs about one file.
//!
//! A destination file is taken from the previous result (the *donor*) only when all of this holds:
//! - the copy is the same file op (same vertex: same sources, filters, destination and overrides), a
//!   single copy action reading a local source; the worker finds the donor by that vertex;
//! - the source file has exactly the stat (device, inode, size, mtime, ctime) it had when the donor copied
//!   it: the context checksum trusts the same stat to skip rehashing, and any write, chmod, chown or
//!   xattr change moves ctime;
//! - the donor's file is a regular file whose owner, mode, size, mtime and xattrs are what this copy
//!   would give the file;
//! - the destination name does not exist yet and its directory is already in the new snapshot's own
//!   (upper) directory, so linking there after the overlay is unmounted is what writing through the
//!   overlay would have left.
//!
//! The link itself is made after the destination overlay is unmounted (an overlay's upper directory must
//! not change under a mount), then the directory's times are put back as the copy left them. A donor file
//! that has gone (collected meanwhile) is copied from the source instead.
//!
//! The shared inode is safe: committed snapshots are never written, and a later step that changes the
//! file does so through its own overlay, whose copy-up gives it a new inode (metacopy is off).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use rustix::fs::{self as rfs, AtFlags};
use serde::{Deserialize, Serialize};

use super::fsys::{self, display, Meta, Tree};
use super::select::Selected;
use super::FileOpError;

/// What identifies a source file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl SourceStat {
    pub fn of(m: &Meta) -> SourceStat {
        SourceStat { dev: m.dev, ino: m.ino, size: m.size, mtime: m.mtime, ctime: m.ctime }
    }
}

/// The previous result of the same copy: the committed snapshot's own directory and, per destination
/// path (`/app/x`), the stat of the source file it was copied from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Donor {
    pub dir: PathBuf,
    pub files: HashMap<String, SourceStat>,
}

/// Owner, mode, times and xattrs a copied file ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attrs {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub atime: (i64, i64),
    pub mtime: (i64, i64),
    pub xattrs: Vec<(String, Vec<u8>)>,
}

struct Deferred {
    comps: Vec<Vec<u8>>,
    donor: PathBuf,
    src_dir: Arc<OwnedFd>,
    src_name: OsString,
    attrs: Attrs,
}

/// One copy's reuse: offered every regular file the copy writes, it defers those the donor has and
/// records the stat of every one for the next run. See the module documentation.
pub struct Reuse {
    /// The new snapshot's own directory (its overlay upper).
    upper: PathBuf,
    upper_tree: Option<Tree>,
    donor: Option<Donor>,
    donor_tree: Option<Tree>,
    upper_dirs: HashMap<Vec<Vec<u8>>, bool>,
    deferred: Vec<Deferred>,
    record: HashMap<String, SourceStat>,
    /// Set when the copy was one this module can serve (a single copy action from a local source).
    pub(crate) active: bool,
}

/// What [`Reuse::finish`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reused {
    /// Files hardlinked from the donor.
    pub linked: usize,
    /// Deferred files the donor no longer had, copied from the source.
    pub copied: usize,
}

impl Reuse {
    /// Reuse into the snapshot whose own directory is `upper`, from `donor` when there is one.
    pub fn new(upper: PathBuf, donor: Option<Donor>) -> Reuse {
        Reuse {
            upper,
            upper_tree: None,
            donor,
            donor_tree: None,
            upper_dirs: HashMap::new(),
            deferred: Vec::new(),
            record: HashMap::new(),
            active: false,
        }
    }

    /// Called for a regular file about to be created at real `comps` (which does not exist yet) from
    /// `e`, ending with `attrs`: records it, and returns true when it was deferred (to be linked from the
    /// donor by [`Reuse::finish`]) so the caller writes nothing.
    pub(crate) fn offer(&mut self, comps: &[Vec<u8>], e: &Selected, attrs: &Attrs) -> bool {
        let path = display(comps);
        let stat = SourceStat::of(&e.meta);
        self.record.insert(path.clone(), stat);
        let Some(donor) = &self.donor else { return false };
        if donor.files.get(&path) != Some(&stat) || comps.is_empty() {
            return false;
        }
        let parent = &comps[..comps.len() - 1];
        if !self.in_upper(parent) {
            return false;
        }
        let Some(dpath) = self.donor_file(comps, attrs) else { return false };
        self.deferred.push(Deferred {
            comps: comps.to_vec(),
            donor: dpath,
            src_dir: e.dir.clone(),
            src_name: e.name.clone(),
            attrs: attrs.clone(),
        });
        true
    }

    /// Whether the directory at `comps` exists in the new snapshot's own directory.
    fn in_upper(&mut self, comps: &[Vec<u8>]) -> bool {
        if let Some(&known) = self.upper_dirs.get(comps) {
            return known;
        }
        if self.upper_tree.is_none() {
            self.upper_tree = Tree::open(&self.upper).ok();
        }
        let there = self.upper_tree.as_ref().is_some_and(|t| t.open_dir(comps).is_ok());
        self.upper_dirs.insert(comps.to_vec(), there);
        there
    }

    /// The donor's file at `comps` when it is exactly what the copy would write.
    fn donor_file(&mut self, comps: &[Vec<u8>], attrs: &Attrs) -> Option<PathBuf> {
        let donor = self.donor.as_ref()?;
        if self.donor_tree.is_none() {
            self.donor_tree = Some(Tree::open(&donor.dir).ok()?);
        }
        let tree = self.donor_tree.as_ref()?;
        let (name, parent) = comps.split_last()?;
        let dir = tree.open_dir(parent).ok()?;
        let name = OsStr::from_bytes(name);
        let m = fsys::lstat(&dir, name).ok()?;
        let stat = donor.files.get(&display(comps))?;
        let same = m.is_file()
            && m.size == stat.size
            && m.uid == attrs.uid
            && m.gid == attrs.gid
            && m.mode & 0o7777 == attrs.mode
            && m.mtime == attrs.mtime
            && fsys::xattrs(&dir, name).unwrap_or_default() == attrs.xattrs;
        // A path the linker opens again later: the donor's directory is a committed snapshot (never
        // written) and the components are real (no symlinks), so the join names the file checked here.
        same.then(|| donor.dir.join(super::copy::rel_path(comps)))
    }

    /// Links the deferred files into the new snapshot's own directory (after its overlay is unmounted),
    /// copying from the source any that the donor lost, and puts each directory's times back.
    pub fn finish(&mut self) -> Result<Reused, FileOpError> {
        let mut done = Reused::default();
        if self.deferred.is_empty() {
            return Ok(done);
        }
        let upper = Tree::open(&self.upper).map_err(io_at(format!("open {}", self.upper.display())))?;
        let mut by_dir: HashMap<Vec<Vec<u8>>, Vec<Deferred>> = HashMap::new();
        for d in self.deferred.drain(..) {
            by_dir.entry(d.comps[..d.comps.len() - 1].to_vec()).or_default().push(d);
        }
        for (parent, files) in by_dir {
            let shown = display(&parent);
            let dir = upper.open_dir(&parent).map_err(io_at(format!("open {shown} in the new snapshot")))?;
            let before = rfs::fstat(&dir).map_err(io::Error::from).map_err(io_at(format!("stat {shown}")))?;
            let before = Meta::from_stat(&before);
            for d in files {
                let name = OsStr::from_bytes(&d.comps[d.comps.len() - 1]);
                match rfs::linkat(rfs::CWD, &d.donor, &dir, name, AtFlags::empty()) {
                    Ok(()) => done.linked += 1,
                    Err(e) if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::MLINK => {
                        copy_file(&dir, name, &d).map_err(io_at(format!("copy {}", display(&d.comps))))?;
                        done.copied += 1;
                    }
                    Err(e) => {
                        return Err(FileOpError::Io {
                            what: format!("link {} from the previous result", display(&d.comps)),
                            source: e.into(),
                        })
                    }
                }
            }
            fsys::set_times(&dir, OsStr::new("."), before.atime, before.mtime)
                .map_err(io_at(format!("restore the times of {shown}")))?;
        }
        Ok(done)
    }

    /// The stat of every file this copy wrote, by destination path: the next run's donor.
    pub fn into_record(self) -> HashMap<String, SourceStat> {
        self.record
    }
}

/// Writes a deferred file from its source with its attributes (the donor's copy is gone).
fn copy_file(dir: &OwnedFd, name: &OsStr, d: &Deferred) -> io::Result<()> {
    let mut from = fsys::open_file(&*d.src_dir, &d.src_name)?;
    let mut to = fsys::create_file(dir.as_fd(), name, 0o600)?;
    io::copy(&mut from, &mut to)?;
    drop(to);
    fsys::chown(dir, name, d.attrs.uid, d.attrs.gid)?;
    fsys::set_xattrs(dir, name, &d.attrs.xattrs);
    fsys::chmod(dir, name, d.attrs.mode)?;
    fsys::set_times(dir, name, d.attrs.atime, d.attrs.mtime)
}

fn io_at(what: String) -> impl FnOnce(io::Error) -> FileOpError {
    move |source| FileOpError::Io { what, source }
}

/// The donor record of a copy's result kept by the worker: the committed snapshot and the file stats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DonorRecord {
    pub snapshot: String,
    pub files: HashMap<String, SourceStat>,
}
