//! The engine: "run one build" as a library, used in-process by the CLI and (to come) by the daemon.
//!
//! A [`BuildRequest`] (the Dockerfile, its options, contexts, secrets and ssh agents as providers,
//! outputs, cache options, network and entitlements) goes in; [`Engine::build`] returns a [`BuildHandle`]
//! with a stream of progress [`Event`]s, a cancellation handle and, at the end, a [`BuildResult`] (the
//! image, buildx's metadata keys, and a record of every step with its cache key and why).
//!
//! The engine wires the concrete parts: the registry client as the frontend's image resolver and the
//! solver's image provider, the executor, the state root's stores, and the [`export`]ers. It prints
//! nothing: a caller renders events and errors.

pub mod attest;
mod bases;
mod build;
pub mod cache;
mod check;
mod error;
mod explain;
pub mod export;
pub mod images;
mod platforms;
mod progress;
mod request;
mod result;
pub mod run_settings;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use registry::{Client, ImageStore};
use snapshotter::store::{SnapshotterKind, Store};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use check::{result_txt as check_result_txt, Call};
pub use error::{BuildError, EngineError, ExportError};
pub use progress::{CacheEvent, Event, EventSink, ExportEvent, StepMiss};
pub use request::{BuildRequest, CacheOptions, Entitlement, NamedContext, UnknownEntitlement};
pub use result::{BuildResult, ExportedImage};
pub use run_settings::{RunSettingError, RunSettings};
pub use solver::{LocalDir, LocalSource, SecretSource, SessionError, SshSockets, SshSource, StaticSecrets};

/// How to open an engine.
pub struct EngineOptions {
    /// The state root (`/var/lib/rbuild`): content store, snapshots, metadata, cache.
    pub root: PathBuf,
    /// The registry client (configuration and credentials already loaded).
    pub client: Arc<Client>,
    /// What runs RUN steps: `namespace`, or an OCI runtime (`runc`, `crun`, a path).
    pub oci_runtime: String,
    /// Steps running at once across every build of this engine (a daemon's `--max-parallelism`); each build
    /// has its own bound too.
    pub max_parallelism: Option<usize>,
}

/// One state root's build machinery. Holds the root's lock while it lives; builds share its cache and run
/// identical steps once.
pub struct Engine {
    store: Store,
    images: ImageStore,
    client: Arc<Client>,
    solver: solver::Solver,
}

/// The executor `runtime` names: rbuild's namespace executor, or an OCI runtime (`runc`, `crun`, a path)
/// run on a bundle of the same spec.
pub fn executor(runtime: &str, state_dir: &Path) -> Result<Arc<dyn sandbox::Executor>, EngineError> {
    if runtime == "namespace" {
        return Ok(Arc::new(sandbox::NamespaceExecutor::new(state_dir)));
    }
    let runc = sandbox::RuncExecutor::new(state_dir).with_runtime(runtime);
    runc.version().map_err(|e| EngineError::Runtime { runtime: runtime.to_string(), message: e.to_string() })?;
    Ok(Arc::new(runc))
}

impl Engine {
    /// Opens the state root, waiting for its lock (`on_wait` is told why), and sets up the solver. Blocks.
    pub fn open(
        opts: EngineOptions,
        on_wait: &mut dyn FnMut(&snapshotter::root::LockWait),
    ) -> Result<Arc<Engine>, EngineError> {
        let store = Store::open(&opts.root, SnapshotterKind::Auto, on_wait)
            .map_err(|source| EngineError::Store { path: opts.root.clone(), source })?;
        let images = ImageStore::new(store.content.clone(), store.meta.clone());
        let worker = solver::Worker {
            snapshotter: store.snapshotter.clone(),
            meta: store.meta.clone(),
            executor: executor(&opts.oci_runtime, &store.root.tmp_dir().join("sandbox"))?,
            images: Arc::new(bases::RegistryImages {
                client: opts.client.clone(),
                store: images.clone(),
                snapshotter: store.snapshotter.clone(),
            }),
            state_dir: store.root.path().to_path_buf(),
            scratch_dir: store.root.tmp_dir(),
        };
        let solver = match opts.max_parallelism {
            Some(max) => solver::Solver::with_max_parallelism(worker, max)?,
            None => solver::Solver::new(worker)?,
        };
        Ok(Arc::new(Engine { store, images, client: opts.client, solver }))
    }

    /// The state root's stores.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The local image store.
    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    /// The registry client.
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// Starts a build on the current tokio runtime.
    pub fn build(self: &Arc<Self>, req: BuildRequest) -> BuildHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(build::run(self.clone(), req, tx, cancel.clone()));
        BuildHandle { events: Some(rx), cancel: Canceller(cancel), task }
    }
}

/// Cancels a build: running steps are stopped, mounts removed, nothing half-committed.
#[derive(Clone, Debug)]
pub struct Canceller(CancellationToken);

impl Canceller {
    pub fn cancel(&self) {
        self.0.cancel()
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.is_cancelled()
    }
}

/// A running build.
pub struct BuildHandle {
    events: Option<mpsc::UnboundedReceiver<Event>>,
    cancel: Canceller,
    task: tokio::task::JoinHandle<Result<BuildResult, BuildError>>,
}

impl BuildHandle {
    /// The build's progress events (once; later calls get `None`). The stream ends with the build.
    pub fn events(&mut self) -> Option<mpsc::UnboundedReceiver<Event>> {
        self.events.take()
    }

    /// A handle that cancels the build.
    pub fn canceller(&self) -> Canceller {
        self.cancel.clone()
    }

    /// Waits for the build to end.
    pub async fn wait(self) -> Result<BuildResult, BuildError> {
        self.task.await.map_err(|e| BuildError::Internal(format!("the build task failed: {e}")))?
    }
}
