//! Snapshots: the Snapshotter trait (after containerd's `core/snapshots/snapshotter.go`) and its two
//! implementations, overlayfs and a native copy-based one for filesystems without overlay.
//!
//! Lifecycle: `prepare(key, parent)` makes an active, writable snapshot on a committed parent;
//! `commit(name, key)` turns it into a committed, immutable one (metadata only); `view` makes a
//! read-only one; `remove` deletes a snapshot that has no children. Mounts are returned as data.

mod fs;
mod native;
mod overlay;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use self::fs::{Backend, FsSnapshotter};
pub use native::Native;
pub use overlay::Overlay;

use crate::meta::MetaError;
use crate::mount::Mount;

/// Overlay snapshotter over a state root.
pub type OverlaySnapshotter = FsSnapshotter<Overlay>;
/// Copy-based snapshotter over a state root.
pub type NativeSnapshotter = FsSnapshotter<Native>;

/// What state a snapshot is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// Read-only, made by `view`.
    View,
    /// Writable, made by `prepare`.
    Active,
    /// Immutable, made by `commit`.
    Committed,
}

/// What the snapshotter knows about a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub kind: Kind,
    pub name: String,
    pub parent: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub created_at: u64,
    pub updated_at: u64,
}

/// Disk use of a snapshot's own data (not its parents').
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub size: u64,
    pub inodes: u64,
}

/// How a snapshot's changes against its parent can be read, for the differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffSource {
    /// An overlay upperdir: exactly the changes, deletions as char-device 0/0 whiteouts and opaque
    /// directories marked with `trusted.overlay.opaque=y`.
    Upper(PathBuf),
    /// Two full trees to compare (native snapshots); `lower` is `None` for a base snapshot.
    Trees { lower: Option<PathBuf>, upper: PathBuf },
}

/// Where a layer is unpacked into, for the applier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyTarget {
    /// Write into an overlay upperdir: deletions become whiteout devices, opaque markers xattrs.
    /// `lowers` (nearest first) supply directory metadata and hardlink targets to copy up.
    Upper { upper: PathBuf, lowers: Vec<PathBuf> },
    /// Write into a full tree: deletions remove files.
    Tree(PathBuf),
}

/// The errors of snapshot operations.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {0} does not exist")]
    NotFound(String),
    #[error("snapshot {0} already exists; remove it first or use another key")]
    AlreadyExists(String),
    #[error("parent {0} is not a committed snapshot; commit it before preparing on it")]
    ParentNotCommitted(String),
    #[error("snapshot {key} is {kind:?}, but this needs an active snapshot")]
    NotActive { key: String, kind: Kind },
    #[error("snapshot {key} is {kind:?}, but this needs a committed snapshot")]
    NotCommitted { key: String, kind: Kind },
    #[error("snapshot {0} has children; remove them first")]
    HasChildren(String),
    #[error("snapshot chain of {0} is broken: a parent record is missing (the metadata database is corrupt)")]
    BrokenChain(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("cannot create snapshot directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot copy parent tree into {path}: {source}")]
    Copy { path: PathBuf, source: io::Error },
    #[error("cannot move snapshot directory to {path}: {source}")]
    Rename { path: PathBuf, source: io::Error },
    #[error("cannot remove snapshot directory {path}: {source}")]
    RemoveDir { path: PathBuf, source: io::Error },
    #[error("cannot measure usage of {path}: {source}")]
    Usage { path: PathBuf, source: io::Error },
    #[error("cannot clean orphaned snapshot directory {path}: {source}")]
    Cleanup { path: PathBuf, source: io::Error },
}

/// Snapshot storage. Implementations keep their own metadata and never mount anything.
pub trait Snapshotter: Send + Sync {
    fn stat(&self, key: &str) -> Result<Info, SnapshotError>;
    /// Disk use of the snapshot's own data.
    fn usage(&self, key: &str) -> Result<Usage, SnapshotError>;
    /// The mounts of an active snapshot or view.
    fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError>;
    /// A new writable snapshot on `parent` (which must be committed).
    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>, SnapshotError>;
    /// A new read-only snapshot of `parent`.
    fn view(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>, SnapshotError>;
    /// Commits the active snapshot `key` as `name`. Metadata only: no data is copied.
    fn commit(&self, name: &str, key: &str) -> Result<(), SnapshotError>;
    /// Removes a snapshot without children.
    fn remove(&self, key: &str) -> Result<(), SnapshotError>;
    /// Every snapshot, sorted by name.
    fn walk(&self) -> Result<Vec<Info>, SnapshotError>;
    /// How to read the changes of a committed or active snapshot against its parent.
    fn diff_source(&self, key: &str) -> Result<DiffSource, SnapshotError>;
    /// Where to unpack a layer into an active snapshot.
    fn apply_target(&self, key: &str) -> Result<ApplyTarget, SnapshotError>;
    /// Sets (or with `None` removes) a label, e.g. [`crate::gc::LAST_USED_LABEL`] or
    /// [`crate::gc::KEEP_LABEL`].
    fn set_label(&self, key: &str, label: &str, value: Option<&str>) -> Result<(), SnapshotError>;
}
