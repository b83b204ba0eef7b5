//! Everything of a state root opened in the right order: lock, metadata database, content store and
//! snapshotter (with their startup cleanup). This is what the CLI wires into the solver and registry.

use std::path::Path;
use std::sync::Arc;

use crate::content::{ContentError, LocalStore};
use crate::gc::Collector;
use crate::meta::{MetaDb, MetaError};
use crate::mount::{Mount, TempMount};
use crate::root::{LockWait, RootError, StateRoot};
use crate::snapshot::{NativeSnapshotter, OverlaySnapshotter, SnapshotError, Snapshotter};

/// Which snapshotter to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotterKind {
    Overlay,
    Native,
    /// Overlay when an overlay mount works on the state root's filesystem, else native.
    Auto,
}

/// The errors of opening a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Root(#[from] RootError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// An opened state root.
pub struct Store {
    pub root: StateRoot,
    pub meta: Arc<MetaDb>,
    pub content: LocalStore,
    pub snapshotter: Arc<dyn Snapshotter>,
    /// The kind in use (never `Auto`).
    pub kind: SnapshotterKind,
}

/// Whether an overlay with an upperdir mounts inside `dir` (needs root and a filesystem that can hold
/// an upperdir: not overlayfs itself, for instance).
pub fn overlay_works(dir: &Path) -> bool {
    let Ok(t) = tempfile::Builder::new().prefix("overlay-probe-").tempdir_in(dir) else { return false };
    let [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map(|d| t.path().join(d));
    for d in [&lower, &upper, &work, &merged] {
        if std::fs::create_dir(d).is_err() {
            return false;
        }
    }
    // Volatile (as `Mount::overlay` is): unmounting the probe must not sync the filesystem.
    let m = Mount::overlay(&lower, &upper, &work);
    match TempMount::new(&[m], t.path()) {
        Ok(mounted) => mounted.unmount().is_ok(),
        Err(_) => false,
    }
}

impl Store {
    /// Opens (creating) the state root at `path`, waiting for another process's lock if needed.
    pub fn open(path: &Path, kind: SnapshotterKind, on_wait: &mut dyn FnMut(&LockWait)) -> Result<Store, StoreError> {
        let root = StateRoot::open(path, on_wait)?;
        let meta = Arc::new(MetaDb::open(root.meta_path())?);
        let content = LocalStore::open(root.content_dir())?;
        let kind = match kind {
            SnapshotterKind::Auto if overlay_works(&root.tmp_dir()) => SnapshotterKind::Overlay,
            SnapshotterKind::Auto => SnapshotterKind::Native,
            k => k,
        };
        let snapshotter: Arc<dyn Snapshotter> = match kind {
            SnapshotterKind::Overlay => Arc::new(OverlaySnapshotter::new(&root, meta.clone())?),
            _ => Arc::new(NativeSnapshotter::new(&root, meta.clone())?),
        };
        Ok(Store { root, meta, content, snapshotter, kind })
    }

    /// Usage and GC over this store; cache mounts live in `<root>/cache-mounts`.
    pub fn collector(&self) -> Collector<'_, dyn Snapshotter> {
        Collector {
            snapshotter: &*self.snapshotter,
            content: &self.content,
            meta: &self.meta,
            cache_mounts: Some(self.root.path().join("cache-mounts")),
        }
    }
}
