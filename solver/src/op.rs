//! The seam between the scheduler and what it schedules, after BuildKit's `solver/types.go`: an [`Op`] is
//! one vertex's behaviour (what it must learn before it can be keyed, its cache map, its execution), an
//! [`OpResolver`] makes the op of a vertex, and a [`CacheStore`] links cache keys to results.
//!
//! The scheduler knows these traits and the shape of an [`llb::Definition`] (inputs, metadata), never an
//! op's payload. The worker's ops (snapshots and the sandbox, in [`crate::worker`]) implement them, and so
//! do the toy ops of the scheduler's tests, which is what lets scheduling, dedup, cancellation and cache
//! behaviour be tested without root or a filesystem.
//!
//! Results are a type parameter `R`: the worker's are snapshots or local directories, the tests' numbers.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use llb::{Digest, Metadata, Vertex};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::error::SolveError;
use crate::progress::{Event, EventKind, LogStream, ProgressSink};

/// A boxed future, as trait objects return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an op learned before keying: network lookups whose answer is part of the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared<R> {
    /// A key that stands for the result's content (an http checksum, a git commit) and replaces the key
    /// derived from the definition and the inputs.
    pub content_key: Option<Digest>,
    /// The result, when preparing already produced it (a local directory, a download that had to be
    /// fetched to be keyed, an image re-resolved by `--pull`): the op is not executed.
    pub ready: Option<Vec<R>>,
    /// Ingredients added to the key (e.g. what a moving tag resolved to), as `(label, value)`.
    pub content: Vec<(String, String)>,
}

impl<R> Default for Prepared<R> {
    fn default() -> Prepared<R> {
        Prepared { content_key: None, ready: None, content: Vec::new() }
    }
}

/// An op's cache map (BuildKit's `CacheMap`): its own identity and what it reads from inputs that are
/// known before execution. The scheduler adds the inputs' keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheMap {
    /// The op's identity: its definition with non-identity fields blanked, without its inputs.
    pub digest: Digest,
    /// Content checksums of what the op reads from ready inputs (`copy.0` -> `sha256:...`), as
    /// `(label, value)`.
    pub content: Vec<(String, String)>,
}

/// One vertex's behaviour.
pub trait Op<R>: Send + Sync {
    /// Work that must happen before the vertex can be keyed (resolve a tag, revalidate a URL, list a git
    /// reference, make a local context available). Called once per solve for every vertex, concurrently.
    fn prepare<'a>(&'a self, ctx: &'a OpContext) -> BoxFuture<'a, Result<Prepared<R>, SolveError>> {
        let _ = ctx;
        Box::pin(async { Ok(Prepared::default()) })
    }

    /// The cache map. `inputs[i]` is input `i`'s result when it is ready before execution (a local
    /// source), so the op can key by exactly what it reads from it. May block (it reads files): the
    /// scheduler calls it on the blocking pool, inputs first.
    fn cache_map(&self, ctx: &OpContext, inputs: &[Option<&R>]) -> Result<CacheMap, SolveError>;

    /// Runs the op on its inputs' results (the selected output of each input, in order) and returns its
    /// outputs. On cancellation (`ctx.cancelled()`) it stops what it runs, cleans up and returns
    /// [`SolveError::Cancelled`]; it never leaves a half-written result.
    fn exec<'a>(&'a self, ctx: &'a OpContext, inputs: Vec<R>) -> BoxFuture<'a, Result<Vec<R>, SolveError>>;
}

/// Makes the op of a vertex. One per solve, so ops can hold what the solve provides (secrets, contexts).
pub trait OpResolver<R>: Send + Sync {
    fn resolve(&self, digest: Digest, vertex: &Vertex, meta: Option<&Metadata>) -> Result<Arc<dyn Op<R>>, SolveError>;
}

/// A cache hit: the results, and where they came from when not from this machine's own cache (an imported
/// cache's reference), for progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit<R> {
    pub outputs: Vec<R>,
    pub source: Option<String>,
}

impl<R> Hit<R> {
    /// A hit from this machine's own cache.
    pub fn local(outputs: Vec<R>) -> Hit<R> {
        Hit { outputs, source: None }
    }
}

/// Links cache keys to results (BuildKit's cache storage). The worker's links in the metadata database
/// are one implementation; an imported remote cache is another.
pub trait CacheStore<R>: Send + Sync {
    /// The results linked to `key`, if every one of them can still be used. A hit counts as a use (for
    /// least-recently-used pruning).
    fn load<'a>(&'a self, key: &'a Digest) -> BoxFuture<'a, Result<Option<Hit<R>>, SolveError>>;

    /// Whether `key` has a usable result, without counting it as a use.
    fn contains<'a>(&'a self, key: &'a Digest) -> BoxFuture<'a, Result<bool, SolveError>>;

    /// Links `key` to `results`. Results that cannot be stored (a local directory) make this a no-op.
    fn save<'a>(&'a self, key: &'a Digest, results: &'a [R]) -> BoxFuture<'a, Result<(), SolveError>>;

    /// `result` is an input of a step that will run, ready while the step waits for its other inputs:
    /// the store may start making it usable in the background (fetch and unpack an imported result's
    /// layers), stopping when `cancel` fires, so the step does not wait for that later. Must not block;
    /// a failure is the step's to report when it needs the result.
    fn warm(&self, result: &R, cancel: &CancellationToken) {
        let _ = (result, cancel);
    }
}

/// Where an op's progress goes: every solve waiting for the execution, each under its own vertex digest
/// and name (two solves share one execution by cache key, and their vertices may differ in non-identity
/// fields such as descriptions).
#[derive(Default)]
pub(crate) struct Watchers {
    sinks: Mutex<Vec<Watcher>>,
    /// Announce the step (`Started`) before its first event: set while an op is prepared, before the
    /// scheduler has started the step (a context transfer, a pull for `--pull`).
    announce: Option<std::sync::atomic::AtomicBool>,
}

pub(crate) struct Watcher {
    pub(crate) solve: u64,
    pub(crate) sink: ProgressSink,
    pub(crate) vertex: Digest,
    pub(crate) name: String,
}

impl Watchers {
    /// Runs `f` on the watchers under their lock.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut Vec<Watcher>) -> T) -> T {
        f(&mut lock(&self.sinks))
    }

    /// Removes the watcher of `vertex` in `solve` and returns it.
    pub(crate) fn remove(&self, solve: u64, vertex: Digest) -> Option<Watcher> {
        let mut sinks = lock(&self.sinks);
        let i = sinks.iter().position(|w| w.solve == solve && w.vertex == vertex)?;
        Some(sinks.remove(i))
    }

    /// Watchers that announce the step before its first event.
    pub(crate) fn announcing() -> Watchers {
        Watchers { sinks: Mutex::default(), announce: Some(std::sync::atomic::AtomicBool::new(false)) }
    }

    /// Whether the step was announced.
    pub(crate) fn announced(&self) -> bool {
        self.announce.as_ref().is_some_and(|a| a.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn emit(&self, kind: EventKind) {
        let time = SystemTime::now();
        let first = self.announce.as_ref().is_some_and(|a| !a.swap(true, std::sync::atomic::Ordering::SeqCst));
        for w in lock(&self.sinks).iter() {
            if first {
                let _ =
                    w.sink.send(Event { vertex: w.vertex, time, kind: EventKind::Started { name: w.name.clone() } });
            }
            // A closed receiver means nobody watches; the build goes on.
            let _ = w.sink.send(Event { vertex: w.vertex, time, kind: kind.clone() });
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What an op is told about the step it runs: its names for messages, its key, where progress goes and
/// whether it was cancelled. Cheap to clone, so blocking work can take a copy.
#[derive(Clone)]
pub struct OpContext {
    inner: Arc<CtxInner>,
}

struct CtxInner {
    vertex: Digest,
    key: Option<Digest>,
    name: String,
    label: String,
    watchers: Arc<Watchers>,
    cancel: CancellationToken,
}

impl OpContext {
    pub(crate) fn new(
        vertex: Digest,
        key: Option<Digest>,
        name: String,
        label: String,
        watchers: Arc<Watchers>,
        cancel: CancellationToken,
    ) -> OpContext {
        OpContext { inner: Arc::new(CtxInner { vertex, key, name, label, watchers, cancel }) }
    }

    /// A context for calling an op outside a solve (tests, tools): progress goes to `sink`.
    pub fn detached(vertex: Digest, name: &str, sink: Option<ProgressSink>) -> OpContext {
        let watchers = Arc::new(Watchers::default());
        if let Some(sink) = sink {
            watchers.with(|w| w.push(Watcher { solve: 0, sink, vertex, name: name.to_string() }));
        }
        OpContext::new(vertex, None, name.to_string(), name.to_string(), watchers, CancellationToken::new())
    }

    /// The vertex (of the solve that started the execution).
    pub fn vertex(&self) -> Digest {
        self.inner.vertex
    }

    /// The step's cache key; `None` while the op is being prepared or keyed.
    pub fn key(&self) -> Option<Digest> {
        self.inner.key
    }

    /// The step's name, e.g. `[build 2/4] RUN make`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The name with its Dockerfile location (`Dockerfile:6 [build 2/4] RUN make`), for errors.
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// An error of this step.
    pub fn err(&self, message: impl std::fmt::Display) -> SolveError {
        SolveError::Step { step: self.inner.label.clone(), message: message.to_string() }
    }

    /// A line of the step's output.
    pub fn log(&self, stream: LogStream, line: Vec<u8>) {
        self.inner.watchers.emit(EventKind::Log { stream, line });
    }

    /// Progress of a sub-task (bytes of a layer pulled, of a context transferred).
    pub fn status(&self, id: &str, current: u64, total: Option<u64>) {
        self.inner.watchers.emit(EventKind::Status { id: id.to_string(), current, total });
    }

    /// Whether the step was announced (`Started`) by an event sent while it was prepared.
    pub(crate) fn announced(&self) -> bool {
        self.inner.watchers.announced()
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Resolves when the step is cancelled (every solve that wanted it was).
    pub async fn cancelled(&self) {
        self.inner.cancel.cancelled().await
    }

    /// [`SolveError::Cancelled`] if the step was cancelled: call before committing a result.
    pub fn check_cancelled(&self) -> Result<(), SolveError> {
        if self.is_cancelled() {
            return Err(SolveError::Cancelled);
        }
        Ok(())
    }
}
