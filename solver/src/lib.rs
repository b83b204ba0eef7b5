//! The solver: runs an [`llb::Definition`] with content-addressed caching and returns the committed
//! snapshot of its root.
//!
//! Three parts, kept apart as in BuildKit's solver: the seam ([`op`]: the [`Op`](op::Op) trait, its
//! [`CacheMap`](op::CacheMap), the [`CacheStore`](op::CacheStore)); the [`scheduler`], generic over what
//! ops produce, which keys every vertex before anything runs, evaluates lazily from the root (a cache hit
//! skips its whole subtree), runs independent vertices in parallel and identical work once across
//! concurrent solves, and cancels cleanly; and the worker (private), whose ops run on the snapshotter, the
//! sandbox and an [`ImageProvider`]. The scheduler never reads an op's payload; the worker never
//! schedules. [`Solver`] puts the scheduler and the worker together.
//!
//! Cache keys: an op's identity (its definition with non-identity fields blanked), its inputs' keys, and
//! content checksums of what it reads from local sources; remote sources are keyed by content (an http
//! source by its checksum or by what the URL serves after revalidation, a git source by the commit its
//! reference names). No host path, inode, mtime or hostname enters a key. [`context`] holds .dockerignore
//! matching and content checksums of build-context paths; [`fileop`] COPY/ADD and friends on host
//! directories; [`session`] the providers a build brings (contexts, secrets, ssh agents).

pub mod context;
mod error;
pub mod fileop;
mod graph;
pub mod op;
pub mod progress;
pub mod scheduler;
pub mod session;
mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

pub use error::{RunFailure, SolveError};
pub use progress::{Event, EventKind, ProgressSink, StepRecord, StepStatus};
/// The scheme of cache keys (changes when a step's result for the same inputs changes): a cache written
/// under another scheme cannot hit.
pub use scheduler::run::KEY_VERSION as CACHE_KEY_VERSION;
pub use session::{LocalDir, LocalSource, SecretSource, SessionError, SshSockets, SshSource, StaticSecrets};
pub use snapshotter::LAYER_LABEL;
pub use worker::links::{Link, CACHE_LINKS};
pub use worker::{ChainUnpacker, ImageError, ImageProvider, LazyChain, LazyLayer, Worker, WorkerRef};

use scheduler::{Scheduler, SolveRequest};
use worker::links::{Layered, LocalCache};
use worker::{blocking, Resolver, Session, State};

/// Per-build inputs that are not part of the definition.
#[derive(Clone)]
pub struct SolveOptions {
    /// Local sources by name (`context`, named contexts).
    pub locals: BTreeMap<String, Arc<dyn LocalSource>>,
    /// Secrets by id. Never logged, hashed or stored.
    pub secrets: Arc<dyn SecretSource>,
    /// ssh agents by id.
    pub ssh: Arc<dyn SshSource>,
    /// Ignore every cache hit (`--no-cache`); per-stage filtering is in the definition's metadata.
    pub no_cache: bool,
    /// Re-resolve image sources against their registries (`--pull`).
    pub pull: bool,
    /// How many vertices run at once (`--max-parallelism`, default [`default_max_parallelism`]).
    pub max_parallelism: usize,
    /// The network of RUN steps that ask for the default (`--network`).
    pub network: sandbox::NetworkMode,
    /// Whether `RUN --network=host` may run (the `network.host` entitlement).
    pub allow_network_host: bool,
    /// Caches imported for this build (`--cache-from`), asked after this machine's own cache, in order.
    pub imports: Vec<Arc<dyn op::CacheStore<WorkerRef>>>,
    /// Where progress events go.
    pub progress: ProgressSink,
    /// Cancels the solve: running steps are stopped and cleaned up before `solve` returns
    /// [`SolveError::Cancelled`].
    pub cancel: CancellationToken,
}

/// Steps at once when `--max-parallelism` is not given: four per core. BuildKit bounds nothing by default;
/// a bound of one per core left a core idle at the end of uneven CPU-bound stages (four stages of 2.1 to
/// 2.6 s on two cores ran as two pairs, 0.3 s longer than the kernel sharing both cores among all four),
/// and beyond a few processes per core more at once only adds memory.
pub fn default_max_parallelism() -> usize {
    4 * std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

impl SolveOptions {
    /// No contexts, secrets or agents, the cache used, four steps per core, progress to `progress`.
    pub fn new(progress: ProgressSink) -> SolveOptions {
        SolveOptions {
            locals: BTreeMap::new(),
            secrets: Arc::new(StaticSecrets::default()),
            ssh: Arc::new(SshSockets::default()),
            no_cache: false,
            pull: false,
            max_parallelism: default_max_parallelism(),
            network: sandbox::NetworkMode::Default,
            allow_network_host: false,
            imports: Vec::new(),
            progress,
            cancel: CancellationToken::new(),
        }
    }
}

/// What a solve produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Solved {
    /// The committed snapshot of the definition's root; `None` is an empty filesystem (or no root).
    pub root: Option<String>,
    /// Vertices whose result this solve took from the cache.
    pub cached: usize,
    /// Vertices this solve executed.
    pub executed: usize,
    /// Vertices another concurrent solve executed (or found) for this one.
    pub shared: usize,
    /// Every step reported, inputs first: name, key, cached or run, times, what went into the key.
    pub steps: Vec<StepRecord>,
    /// When the result came from an imported cache and no step needed its files: its layers, not unpacked
    /// (`root` is then `None`); an exporter fetches or unpacks them as it needs.
    pub lazy_root: Option<LazyChain>,
}

/// One root's result in [`SolvedRoots`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SolvedRoot {
    /// The committed snapshot; `None` is an empty filesystem (or a lazy result).
    pub root: Option<String>,
    /// A result from an imported cache, not unpacked (see [`Solved::lazy_root`]).
    pub lazy_root: Option<LazyChain>,
}

/// What a solve of several roots produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SolvedRoots {
    /// Each root's result, in the order asked.
    pub roots: Vec<SolvedRoot>,
    pub cached: usize,
    pub executed: usize,
    pub shared: usize,
    /// Every step once, however many roots reach it.
    pub steps: Vec<StepRecord>,
}

/// Runs definitions against one worker. One per process (or daemon): clones share the executions in
/// flight, so two builds that reach the same step run it once.
#[derive(Clone)]
pub struct Solver {
    state: Arc<State>,
    scheduler: Scheduler<WorkerRef>,
    started: Arc<OnceCell<()>>,
}

impl Solver {
    /// A solver over `worker`.
    pub fn new(worker: Worker) -> Result<Solver, SolveError> {
        Ok(Solver { state: Arc::new(State::new(worker)?), scheduler: Scheduler::new(), started: Arc::default() })
    }

    /// A solver over `worker` that runs at most `max` steps at once across all of its solves.
    pub fn with_max_parallelism(worker: Worker, max: usize) -> Result<Solver, SolveError> {
        let scheduler = Scheduler::with_limit(max);
        Ok(Solver { state: Arc::new(State::new(worker)?), scheduler, started: Arc::default() })
    }

    /// The worker this solver runs on.
    pub fn worker(&self) -> &Worker {
        &self.state.worker
    }

    /// Builds the root of `def` and returns its committed snapshot. Progress goes to `opts.progress`.
    pub async fn solve(&self, def: &llb::Definition, opts: SolveOptions) -> Result<Solved, SolveError> {
        let roots: Vec<llb::Output> = def.root.into_iter().collect();
        let s = self.solve_roots(def, &roots, opts).await?;
        let SolvedRoot { root, lazy_root } = s.roots.into_iter().next().unwrap_or_default();
        Ok(Solved { root, cached: s.cached, executed: s.executed, shared: s.shared, steps: s.steps, lazy_root })
    }

    /// Builds several roots of `def` in one solve (a multi-platform build: one root per platform), so a
    /// step they share (a `FROM --platform=$BUILDPLATFORM` stage that does not read the target) runs once.
    pub async fn solve_roots(
        &self,
        def: &llb::Definition,
        roots: &[llb::Output],
        opts: SolveOptions,
    ) -> Result<SolvedRoots, SolveError> {
        let state = self.state.clone();
        self.started.get_or_try_init(|| blocking(move || state.start())).await?;
        let session = Session {
            locals: opts.locals,
            secrets: opts.secrets,
            ssh: opts.ssh,
            network: opts.network,
            allow_network_host: opts.allow_network_host,
            pull: opts.pull,
        };
        let req = SolveRequest {
            definition: def.clone(),
            resolver: Arc::new(Resolver { state: self.state.clone(), session: Arc::new(session) }),
            cache: Arc::new(Layered { local: LocalCache(self.state.clone()), imports: opts.imports }),
            max_parallelism: opts.max_parallelism,
            no_cache: opts.no_cache,
            progress: opts.progress,
            cancel: opts.cancel,
        };
        let solution = self.scheduler.solve_roots(req, roots.to_vec()).await;
        let state = self.state.clone();
        // The stat cache is an optimisation: failing to save it costs a re-read next time, not the build.
        let _ = blocking(move || state.checksums.flush().map_err(|e| SolveError::Cache(e.to_string()))).await;
        let solution = solution?;
        let mut out = Vec::with_capacity(solution.roots.len());
        for r in solution.roots {
            out.push(match r {
                WorkerRef::Snapshot(s) => SolvedRoot { root: s, lazy_root: None },
                WorkerRef::Lazy(chain) => SolvedRoot { root: None, lazy_root: Some(chain) },
                r @ WorkerRef::Local(_) => {
                    // The build's result is a context itself: commit it so it can be exported.
                    let state = self.state.clone();
                    let root = blocking(move || {
                        let step = worker::Step { state: &state, label: "the build result", key: llb::Digest::of(b"") };
                        worker::snapshot_of(&step, &r)
                    })
                    .await?;
                    SolvedRoot { root, lazy_root: None }
                }
            });
        }
        let c = solution.counts;
        Ok(SolvedRoots { roots: out, cached: c.cached, executed: c.executed, shared: c.shared, steps: solution.steps })
    }
}
