//! The worker: the real ops over the snapshotter, the sandbox and an image provider, and the local cache
//! links. [`Resolver`] makes the [`Op`](crate::op::Op) of each vertex; only the modules here read op
//! payloads. Results are [`WorkerRef`]s: committed snapshots, or local directories that steps read in place.
//!
//! Blocking work (snapshots, mounts, file copies, the sandbox, git) runs on tokio's blocking pool; network
//! work (image pulls through the provider, http downloads) is async, with one HTTP client per process.

mod content;
mod exec;
mod file;
mod git;
mod http;
pub(crate) mod links;
mod merge;
mod snap;
mod source;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use llb::{Digest, Metadata, Op as LlbOp, Platform, SourceOp, Vertex};
use sandbox::cache::CacheMounts;
use sandbox::Executor;
use snapshotter::meta::MetaDb;
use snapshotter::snapshot::Snapshotter;

use crate::context::ChecksumCache;
use crate::error::SolveError;
use crate::fileop::SourceDir;
use crate::op::{BoxFuture, CacheMap, Op, OpResolver};
use crate::session::{LocalSource, SecretSource, SshSource};
pub(crate) use snap::{scoped, snapshot_of, Snap, Step};

/// One output of a vertex run by the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerRef {
    /// A committed snapshot; `None` is the empty filesystem.
    Snapshot(Option<String>),
    /// A local directory with its filters, materialised into a snapshot only when a step needs one.
    Local(SourceDir),
    /// Layers known by digest (an imported cache entry), unpacked only when a step needs their files.
    Lazy(LazyChain),
}

/// One layer blob of a [`LazyChain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LazyLayer {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
    pub media_type: String,
    /// When the layer's snapshot was made where it was built (Unix seconds), for image history.
    pub created: Option<u64>,
    /// The SOURCE_DATE_EPOCH the blob was written with.
    pub epoch: Option<i64>,
}

/// Makes lazy layers available: as snapshots (to run steps on them) or as blobs in the content store (to
/// export them).
pub trait ChainUnpacker: Send + Sync {
    /// Fetches and unpacks `layers` (base first); returns the top snapshot.
    fn unpack<'a>(&'a self, layers: &'a [LazyLayer]) -> BoxFuture<'a, Result<Option<String>, ImageError>>;
    /// Fetches the blobs of `layers` into the content store, verified, without unpacking them.
    fn fetch<'a>(&'a self, layers: &'a [LazyLayer]) -> BoxFuture<'a, Result<(), ImageError>>;
}

/// A result known by its layers, with where to get them.
#[derive(Clone)]
pub struct LazyChain {
    pub layers: Vec<LazyLayer>,
    /// Where the layers are (the cache's reference), for messages.
    pub source: String,
    /// The registry and repository that hold the blobs, when a registry does (a push to that registry
    /// mounts them instead of uploading).
    pub origin: Option<(String, String)>,
    pub unpacker: Arc<dyn ChainUnpacker>,
}

impl std::fmt::Debug for LazyChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyChain").field("layers", &self.layers).field("source", &self.source).finish()
    }
}

impl PartialEq for LazyChain {
    fn eq(&self, other: &LazyChain) -> bool {
        self.layers == other.layers && self.source == other.source
    }
}

impl Eq for LazyChain {}

/// Unpacks the lazy inputs of a step that needs their files.
pub(crate) async fn materialize(
    ctx: &crate::op::OpContext,
    inputs: Vec<WorkerRef>,
) -> Result<Vec<WorkerRef>, SolveError> {
    let mut out = Vec::with_capacity(inputs.len());
    for r in inputs {
        out.push(match r {
            WorkerRef::Lazy(chain) => {
                let top = chain.unpacker.unpack(&chain.layers).await.map_err(|e| {
                    ctx.err(format!(
                        "cannot unpack the cached layers from {}: {}",
                        chain.source,
                        source::error_chain(&e)
                    ))
                })?;
                WorkerRef::Snapshot(top)
            }
            r => r,
        });
    }
    Ok(out)
}

/// An image provider failed.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ImageError(pub Box<dyn std::error::Error + Send + Sync>);

/// Makes images available as snapshots. The engine backs it with the registry client and content store.
pub trait ImageProvider: Send + Sync {
    /// Makes `reference` (normalised, usually pinned `name@sha256:...`) for `platform` available as a chain
    /// of committed snapshots, one per layer, and returns the top one's name (`None` for an image without
    /// layers). Pulls only missing blobs (`pull` re-resolves a tag against the registry first), unpacks each
    /// layer once, and labels each snapshot with [`snapshotter::LAYER_LABEL`]. `status(current, total)`
    /// reports bytes fetched.
    fn unpack<'a>(
        &'a self,
        reference: &'a str,
        platform: &'a Platform,
        pull: bool,
        status: &'a (dyn Fn(u64, Option<u64>) + Send + Sync),
    ) -> BoxFuture<'a, Result<Option<String>, ImageError>>;
}

/// The concrete parts the worker runs ops against.
#[derive(Clone)]
pub struct Worker {
    pub snapshotter: Arc<dyn Snapshotter>,
    pub meta: Arc<MetaDb>,
    pub executor: Arc<dyn Executor>,
    pub images: Arc<dyn ImageProvider>,
    /// Space owned by the solver and shared by every process on the state root: cache mounts
    /// (`state_dir/cache-mounts`), git mirrors.
    pub state_dir: PathBuf,
    /// This process's scratch space (the state root's `tmp/<owner>`): mount points. What a killed process
    /// leaves there (mounts included) is removed by the next process to open the root.
    pub scratch_dir: PathBuf,
}

/// What lives as long as the worker: its parts, the stat cache of contexts, the cache links, cache
/// mounts and the HTTP client (made on first use: loading the host's CA certificates costs a few ms that a
/// build without `ADD <url>` should not wait for).
pub(crate) struct State {
    pub(crate) worker: Worker,
    pub(crate) checksums: ChecksumCache,
    pub(crate) links: links::Links,
    pub(crate) cache_mounts: CacheMounts,
    http: std::sync::OnceLock<reqwest::Client>,
    seq: AtomicU64,
}

impl State {
    pub(crate) fn new(worker: Worker) -> Result<State, SolveError> {
        Ok(State {
            checksums: ChecksumCache::new(worker.meta.clone()),
            links: links::Links::new(worker.meta.clone(), worker.snapshotter.clone()),
            cache_mounts: CacheMounts::new(worker.state_dir.join("cache-mounts")),
            http: std::sync::OnceLock::new(),
            worker,
            seq: AtomicU64::new(0),
        })
    }

    /// The client of `ADD <url>` downloads, made on the first call.
    pub(crate) fn http(&self) -> Result<reqwest::Client, SolveError> {
        if let Some(c) = self.http.get() {
            return Ok(c.clone());
        }
        // reqwest honours HTTP_PROXY, HTTPS_PROXY and NO_PROXY from the environment by default.
        let c = reqwest::Client::builder()
            .user_agent(concat!("rbuild/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| SolveError::Internal(format!("cannot create an HTTP client: {e}")))?;
        Ok(self.http.get_or_init(|| c).clone())
    }

    /// Once per process, before the first solve: creates the tables. (The temporary snapshots of a process
    /// that died mid-step are the snapshotter's to remove: it knows which process owns them, and other
    /// processes may be building on the same root right now.) Blocking.
    pub(crate) fn start(&self) -> Result<(), SolveError> {
        self.links.ensure_table()?;
        http::ensure_table(&self.worker.meta)
    }

    /// A process-unique name for a temporary snapshot.
    pub(crate) fn temp_name(&self, what: &str) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("solver-{}-{n}-{what}", std::process::id())
    }

    /// Where temporary mounts go (`scratch_dir/mnt`).
    pub(crate) fn mount_dir(&self) -> std::io::Result<PathBuf> {
        let dir = self.worker.scratch_dir.join("mnt");
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }
}

/// What one solve provides to its ops.
pub(crate) struct Session {
    pub(crate) locals: BTreeMap<String, Arc<dyn LocalSource>>,
    pub(crate) secrets: Arc<dyn SecretSource>,
    pub(crate) ssh: Arc<dyn SshSource>,
    /// The network of RUN steps that ask for the default.
    pub(crate) network: sandbox::NetworkMode,
    /// `RUN --network=host` is allowed (the `network.host` entitlement).
    pub(crate) allow_network_host: bool,
    /// Re-resolve image sources against their registries.
    pub(crate) pull: bool,
}

impl Session {
    /// A secret the step needs; a missing one is an error unless `optional`.
    pub(crate) async fn secret(&self, step: &str, id: &str) -> Result<Option<Vec<u8>>, SolveError> {
        self.secrets
            .secret(id)
            .await
            .map_err(|e| SolveError::Step { step: step.to_string(), message: format!("secret {id:?}: {e}") })
    }
}

/// What every op of the worker holds: the worker, the solve's session and its own vertex.
#[derive(Clone)]
pub(crate) struct Base {
    pub(crate) state: Arc<State>,
    pub(crate) session: Arc<Session>,
    pub(crate) vertex: Vertex,
    pub(crate) meta: Option<Metadata>,
}

impl Base {
    /// The op's identity for its cache map: the definition with non-identity fields blanked, without its
    /// inputs (the scheduler adds their keys).
    pub(crate) fn identity(&self) -> Digest {
        let mut id = self.vertex.cache_identity();
        id.inputs.clear();
        id.digest()
    }

    /// The cache map of an op keyed by its definition and by the content of the local inputs it reads.
    pub(crate) fn cache_map(&self, inputs: &[Option<&WorkerRef>]) -> Result<CacheMap, String> {
        let content = content::parts(&self.vertex, inputs, &self.state.checksums)?;
        Ok(CacheMap { digest: self.identity(), content })
    }
}

/// Runs blocking work on the blocking pool; a panic becomes an internal error.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SolveError> + Send + 'static,
) -> Result<T, SolveError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| SolveError::Internal(format!("a blocking task failed: {e}")))?
}

/// Makes the worker's op of each vertex for one solve.
pub(crate) struct Resolver {
    pub(crate) state: Arc<State>,
    pub(crate) session: Arc<Session>,
}

impl OpResolver<WorkerRef> for Resolver {
    fn resolve(
        &self,
        _digest: Digest,
        vertex: &Vertex,
        meta: Option<&Metadata>,
    ) -> Result<Arc<dyn Op<WorkerRef>>, SolveError> {
        let base = Base {
            state: self.state.clone(),
            session: self.session.clone(),
            vertex: vertex.clone(),
            meta: meta.cloned(),
        };
        let label = || crate::graph::vertex_label(vertex, meta);
        Ok(match &vertex.op {
            LlbOp::Source(SourceOp::Image { .. }) => Arc::new(source::ImageOp(base)),
            LlbOp::Source(SourceOp::Local { .. }) => Arc::new(source::LocalOp(base)),
            LlbOp::Source(SourceOp::Http { .. }) => Arc::new(http::HttpOp(base)),
            LlbOp::Source(SourceOp::Git { .. }) => Arc::new(git::GitOp::new(base)),
            LlbOp::Exec(_) => Arc::new(exec::ExecOp(base)),
            LlbOp::File(_) => Arc::new(file::FileOp(base)),
            LlbOp::Merge(_) => Arc::new(merge::MergeOp(base)),
            LlbOp::Diff(_) => {
                return Err(SolveError::Unsupported { step: label(), what: "a diff op (BuildKit DiffOp)".into() })
            }
        })
    }
}
