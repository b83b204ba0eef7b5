//! The solver: runs an [`llb::Definition`] against a [`Worker`] (snapshotter, executor, image provider)
//! and returns the committed snapshot of its root.
//!
//! The definition is loaded into a petgraph DAG (private); vertices are scheduled on tokio, independent
//! ones in parallel, identical ones (same digest) once per process. Every vertex gets a cache key (the op's
//! definition with non-identity fields blanked, plus its inputs' keys, or for COPY/ADD sources the checksum
//! of exactly the selected paths); keys are links in the metadata database to committed snapshots, so a hit
//! skips the vertex and everything below it.
//!
//! Op payloads are interpreted only in the op modules: [`fileop`] (COPY/ADD/mkdir/mkfile/rm/symlink on host
//! directories) and the private exec/source/merge ops. [`context`] holds .dockerignore matching and content
//! checksums of build-context paths.

pub mod context;
pub mod fileop;
pub mod progress;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use llb::Platform;
use sandbox::Executor;
use snapshotter::meta::MetaDb;
use snapshotter::snapshot::Snapshotter;

pub use progress::{Event, EventKind, ProgressSink};

pub use snapshotter::LAYER_LABEL;

/// Makes images available as snapshots. The CLI backs it with the registry client and content store.
pub trait ImageProvider: Send + Sync {
    /// Makes `reference` (normalised, usually pinned `name@sha256:...`) for `platform` available as a chain
    /// of committed snapshots, one per layer, and returns the top one's name (`None` for an image without
    /// layers). Pulls only missing blobs (`pull` re-resolves a tag against the registry first), unpacks each
    /// layer once, and labels each snapshot with [`LAYER_LABEL`]. Blocking: called from a blocking thread.
    /// `status(current, total)` reports bytes fetched.
    fn unpack(
        &self,
        reference: &str,
        platform: &Platform,
        pull: bool,
        status: &dyn Fn(u64, Option<u64>),
    ) -> Result<Option<String>, String>;
}

/// The concrete parts the solver runs ops against.
#[derive(Clone)]
pub struct Worker {
    pub snapshotter: Arc<dyn Snapshotter>,
    pub meta: Arc<MetaDb>,
    pub executor: Arc<dyn Executor>,
    pub images: Arc<dyn ImageProvider>,
    /// Scratch space owned by the solver: mount points, cache mounts (`state_dir/cache-mounts`).
    pub state_dir: PathBuf,
}

/// Per-build inputs that are not part of the definition.
#[derive(Clone)]
pub struct SolveOptions {
    /// Local sources by name (`context`, `dockerfile`, named contexts): host directories.
    pub locals: BTreeMap<String, PathBuf>,
    /// Secrets by id (`--secret id=x,src=...|env=...`), already read. Never logged, hashed or stored.
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// ssh-agent sockets by id (`--ssh default=$SSH_AUTH_SOCK`).
    pub ssh: BTreeMap<String, PathBuf>,
    /// Ignore every cache hit (`--no-cache`); per-stage filtering is in the definition's metadata.
    pub no_cache: bool,
    /// Re-resolve image sources against their registries (`--pull`).
    pub pull: bool,
    /// How many vertices run at once (`--max-parallelism`, default: the number of cores).
    pub max_parallelism: usize,
    /// The network of RUN steps that ask for the default (`--network`).
    pub network: sandbox::NetworkMode,
    /// SOURCE_DATE_EPOCH: file timestamps written by ops are clamped to it.
    pub source_date_epoch: Option<i64>,
    /// Where progress events go.
    pub progress: ProgressSink,
}
