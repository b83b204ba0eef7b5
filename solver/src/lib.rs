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
//! directories) and the private exec/source/merge ops. Remote sources are keyed by content: an http source
//! by its checksum or, without one, by what the URL serves after revalidation (ETag / Last-Modified); a
//! git source by the commit its reference resolves to (`git ls-remote`). Both are resolved before keying. [`context`] holds .dockerignore matching and content
//! checksums of build-context paths.

mod cachekey;
pub mod context;
mod error;
pub mod fileop;
mod graph;
mod links;
mod ops;
pub mod progress;
mod scheduler;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use llb::Platform;
use sandbox::Executor;
use snapshotter::meta::MetaDb;
use snapshotter::snapshot::Snapshotter;

pub use error::{RunFailure, SolveError};
pub use links::{Link, CACHE_LINKS};
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

/// What a solve produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Solved {
    /// The committed snapshot of the definition's root; `None` is an empty filesystem (or no root).
    pub root: Option<String>,
    /// Vertices whose result came from the cache.
    pub cached: usize,
    /// Vertices this solve executed.
    pub executed: usize,
    /// Vertices another concurrent solve executed (or found) for this one.
    pub shared: usize,
}

/// Runs definitions against one worker. One per process: clones share the cache of executions in
/// flight, so two builds that reach the same step run it once.
#[derive(Clone)]
pub struct Solver {
    inner: Arc<scheduler::Inner>,
}

impl Solver {
    /// A solver over `worker`.
    pub fn new(worker: Worker) -> Solver {
        Solver { inner: Arc::new(scheduler::Inner::new(worker)) }
    }

    /// The worker this solver runs on.
    pub fn worker(&self) -> &Worker {
        &self.inner.worker
    }

    /// Builds the root of `def` and returns its committed snapshot. Progress goes to `opts.progress`.
    pub async fn solve(&self, def: &llb::Definition, opts: SolveOptions) -> Result<Solved, SolveError> {
        self.inner.start().await?;
        let run = scheduler::Run::prepare(self.inner.clone(), def, opts).await?;
        let result = match run.def.root {
            None => Ok(None),
            Some(root) => match run.build(root.digest).await {
                Ok(outputs) => match outputs.get(root.index) {
                    Some(scheduler::Ref::Snapshot(s)) => Ok(s.clone()),
                    Some(r @ scheduler::Ref::Local(_)) => {
                        let (run2, r) = (run.clone(), r.clone());
                        scheduler::blocking(move || {
                            let step = ops::Step {
                                run: &run2,
                                digest: root.digest,
                                key: run2.keys[&root.digest],
                                label: run2.label(&root.digest),
                            };
                            ops::snapshot_of(&step, &r)
                        })
                        .await
                    }
                    None => Err(SolveError::Internal(format!("the root has no output {}", root.index))),
                },
                Err(e) => Err(e),
            },
        };
        let inner = self.inner.clone();
        // The stat cache is an optimisation: failing to save it costs a re-read next time, not the build.
        let _ =
            scheduler::blocking(move || inner.checksums.flush().map_err(|e| SolveError::Cache(e.to_string()))).await;
        let root = result?;
        let c = &run.counts;
        Ok(Solved {
            root,
            cached: c.cached.load(std::sync::atomic::Ordering::Relaxed),
            executed: c.executed.load(std::sync::atomic::Ordering::Relaxed),
            shared: c.shared.load(std::sync::atomic::Ordering::Relaxed),
        })
    }
}
