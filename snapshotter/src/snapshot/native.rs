//! Copy-based snapshots for filesystems without overlay: each snapshot is a full copy of its parent.
//! Slower to prepare and larger on disk, but the same trait, so builds still work there.

use std::io;
use std::path::{Path, PathBuf};

use super::fs::Backend;
use super::{ApplyTarget, DiffSource, Kind};
use crate::fsutil;
use crate::mount::Mount;

/// The native backend.
#[derive(Debug, Default, Clone, Copy)]
pub struct Native;

impl Backend for Native {
    const NAME: &'static str = "native";
    const TABLE: &'static str = "snapshots.native";

    fn populate(&self, kind: Kind, fs: &Path, parent_fs: Option<&Path>) -> io::Result<()> {
        match parent_fs {
            // A view never changes, so it reads its (immutable, committed) parent in place.
            Some(p) if kind == Kind::Active => fsutil::copy_tree(p, fs),
            _ => Ok(()),
        }
    }

    fn needs_workdir(&self) -> bool {
        false
    }

    fn mounts(&self, kind: Kind, own: &Path, _work: &Path, parents: &[PathBuf]) -> Vec<Mount> {
        match (kind, parents.first()) {
            (Kind::View, Some(parent)) => vec![Mount::bind(parent, true)],
            _ => vec![Mount::bind(own, kind != Kind::Active)],
        }
    }

    fn diff_source(&self, own: &Path, parents: &[PathBuf]) -> DiffSource {
        DiffSource::Trees { lower: parents.first().cloned(), upper: own.to_path_buf() }
    }

    fn apply_target(&self, own: &Path, _parents: &[PathBuf]) -> ApplyTarget {
        ApplyTarget::Tree(own.to_path_buf())
    }
}
