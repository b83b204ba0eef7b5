//! Scheduling: a vertex runs once its inputs are ready, independent vertices in parallel (bounded by
//! `max_parallelism`), blocking work on tokio's blocking pool, and identical work (the same cache key)
//! once per process, even across concurrent solves.
//!
//! Evaluation is lazy from the root: a vertex first looks its key up; only a miss builds its inputs, so
//! nothing below a cache hit runs (an image under a hit is never pulled).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use llb::{Definition, Digest, Metadata, Op, SourceOp, Vertex};
use sandbox::cache::CacheMounts;
use sandbox::Cancel;
use tokio::sync::{OnceCell, Semaphore};

use crate::context::ChecksumCache;
use crate::error::SolveError;
use crate::fileop::SourceDir;
use crate::graph::{vertex_label, vertex_name, Graph};
use crate::links::{Link, Links};
use crate::progress::{Event, EventKind};
use crate::{ops, SolveOptions, Worker};

/// One output of a solved vertex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ref {
    /// A committed snapshot; `None` is the empty filesystem.
    Snapshot(Option<String>),
    /// A local directory with its filters, materialised into a snapshot only when a step needs one.
    Local(SourceDir),
}

type Outputs = Arc<Vec<Ref>>;
/// The outcome of a keyed execution, shared by every solve that asked for it; `true` when it came
/// from the cache.
type Shared = Result<(Outputs, bool), SolveError>;
type Memo = Result<Outputs, SolveError>;

/// What lives as long as the solver: the worker, the stat cache of contexts, the cache links and the
/// executions in flight.
pub(crate) struct Inner {
    pub(crate) worker: Worker,
    pub(crate) checksums: ChecksumCache,
    pub(crate) links: Links,
    pub(crate) cache_mounts: CacheMounts,
    inflight: Mutex<HashMap<Digest, Arc<OnceCell<Shared>>>>,
    seq: AtomicU64,
    started: OnceCell<()>,
}

impl Inner {
    pub(crate) fn new(worker: Worker) -> Inner {
        Inner {
            checksums: ChecksumCache::new(worker.meta.clone()),
            links: Links::new(worker.meta.clone()),
            cache_mounts: CacheMounts::new(worker.state_dir.join("cache-mounts")),
            worker,
            inflight: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0),
            started: OnceCell::new(),
        }
    }

    /// Once per process, before the first solve: creates the links table and removes the temporary
    /// snapshots an earlier process left when it died mid-step (the state root's lock makes this process
    /// the only user).
    pub(crate) async fn start(self: &Arc<Self>) -> Result<(), SolveError> {
        let inner = self.clone();
        self.started
            .get_or_try_init(|| {
                blocking(move || {
                    inner.links.ensure_table()?;
                    ops::http::ensure_table(&inner.worker.meta)?;
                    let sn = &*inner.worker.snapshotter;
                    let ours = format!("solver-{}-", std::process::id());
                    let infos = sn.walk().map_err(|e| SolveError::Cache(e.to_string()))?;
                    for info in infos {
                        let temporary = info.name.starts_with("solver-") && !info.name.starts_with(&ours);
                        if temporary && info.kind != snapshotter::snapshot::Kind::Committed {
                            // Best effort: what cannot be removed now is tried again next time.
                            let _ = sn.remove(&info.name);
                        }
                    }
                    Ok(())
                })
            })
            .await
            .map(|_| ())
    }

    /// A process-unique name for a temporary snapshot.
    pub(crate) fn temp_name(&self, what: &str) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("solver-{}-{n}-{what}", std::process::id())
    }
}

/// Counts of one solve.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) cached: AtomicUsize,
    pub(crate) executed: AtomicUsize,
    pub(crate) shared: AtomicUsize,
}

/// One solve: the definition, its keys and options, and the per-solve memo of evaluated vertices.
pub(crate) struct Run {
    pub(crate) inner: Arc<Inner>,
    pub(crate) def: Definition,
    pub(crate) keys: HashMap<Digest, Digest>,
    pub(crate) locals: HashMap<Digest, SourceDir>,
    pub(crate) resolved_images: HashMap<Digest, Option<String>>,
    /// Remote sources resolved before keying (http without a checksum, git).
    pub(crate) resolved_sources: HashMap<Digest, ops::ResolvedSource>,
    pub(crate) opts: SolveOptions,
    pub(crate) cancel: Cancel,
    pub(crate) counts: Counts,
    sem: Semaphore,
    memo: Mutex<HashMap<Digest, Arc<OnceCell<Memo>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs blocking work on the blocking pool; a panic becomes an internal error.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SolveError> + Send + 'static,
) -> Result<T, SolveError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| SolveError::Internal(format!("a blocking task failed: {e}")))?
}

impl Run {
    /// Loads and keys `def` (blocking work: context checksums, `--pull` of unpinned images).
    pub(crate) async fn prepare(
        inner: Arc<Inner>,
        def: &Definition,
        opts: SolveOptions,
    ) -> Result<Arc<Run>, SolveError> {
        let def = def.pruned();
        let graph = Graph::load(&def)?;
        let mut locals = HashMap::new();
        for d in graph.order() {
            let v = &def.vertices[d];
            if let Op::Source(SourceOp::Local { name, include_patterns, exclude_patterns, .. }) = &v.op {
                let path = opts.locals.get(name).ok_or_else(|| SolveError::MissingLocal {
                    step: vertex_label(v, def.metadata_of(d)),
                    name: name.clone(),
                })?;
                let sd = SourceDir {
                    path: path.clone(),
                    include: include_patterns.clone(),
                    exclude: exclude_patterns.clone(),
                };
                locals.insert(*d, sd);
            }
        }
        let max = opts.max_parallelism.max(1);
        let run = Run {
            inner,
            def,
            keys: HashMap::new(),
            locals,
            resolved_images: HashMap::new(),
            resolved_sources: HashMap::new(),
            opts,
            cancel: Cancel::default(),
            counts: Counts::default(),
            sem: Semaphore::new(max),
            memo: Mutex::new(HashMap::new()),
        };
        let run = Arc::new(run);
        let r = run.clone();
        let (resolved, sources, keys) = blocking(move || {
            // `--pull` of a tag: what the tag points at now is part of the key, so resolve it first.
            let mut resolved = HashMap::new();
            for d in graph.order() {
                if let Op::Source(SourceOp::Image { reference, resolve_mode, .. }) = &r.def.vertices[d].op {
                    let pull = r.opts.pull || *resolve_mode == llb::ResolveMode::Pull;
                    if pull && !reference.contains('@') {
                        resolved.insert(*d, ops::source::unpack_image(&r, *d, true)?);
                    }
                }
            }
            // Remote sources keyed by what they serve now: revalidate or fetch them first.
            let mut sources = HashMap::new();
            for d in graph.order() {
                if ops::needs_resolving(&r.def.vertices[d].op) {
                    sources.insert(*d, ops::resolve_source(&r, *d)?);
                }
            }
            let inputs = crate::cachekey::KeyInputs {
                locals: &r.locals,
                resolved_images: &resolved,
                checksums: &r.inner.checksums,
                sources: &sources,
            };
            let keys = crate::cachekey::compute(&r.def, &graph, &inputs)?;
            Ok((resolved, sources, keys))
        })
        .await?;
        let mut run =
            Arc::into_inner(run).ok_or_else(|| SolveError::Internal("run still shared after keying".into()))?;
        run.keys = keys;
        run.resolved_images = resolved;
        run.resolved_sources = sources;
        Ok(Arc::new(run))
    }

    pub(crate) fn vertex(&self, d: &Digest) -> &Vertex {
        &self.def.vertices[d]
    }

    pub(crate) fn metadata(&self, d: &Digest) -> Option<&Metadata> {
        self.def.metadata_of(d)
    }

    /// The step's name with its Dockerfile location, for errors.
    pub(crate) fn label(&self, d: &Digest) -> String {
        vertex_label(self.vertex(d), self.metadata(d))
    }

    pub(crate) fn emit(&self, vertex: Digest, kind: EventKind) {
        // A closed receiver means nobody watches; the build goes on.
        let _ = self.opts.progress.send(Event { vertex, time: SystemTime::now(), kind });
    }

    /// The outputs of vertex `d`, evaluated at most once per solve.
    pub(crate) fn build(self: &Arc<Self>, d: Digest) -> Pin<Box<dyn Future<Output = Memo> + Send + 'static>> {
        let run = self.clone();
        Box::pin(async move {
            let cell = lock(&run.memo).entry(d).or_default().clone();
            cell.get_or_init(|| run.clone().evaluate(d)).await.clone()
        })
    }

    async fn evaluate(self: Arc<Self>, d: Digest) -> Memo {
        if let Some(sd) = self.locals.get(&d) {
            // A local source is read in place by the steps that use it.
            self.emit(d, EventKind::Started { name: vertex_name(self.vertex(&d), self.metadata(&d)) });
            self.emit(d, EventKind::Completed { duration: std::time::Duration::ZERO });
            return Ok(Arc::new(vec![Ref::Local(sd.clone())]));
        }
        let key = self.keys[&d];
        let shared = lock(&self.inner.inflight).entry(key).or_default().clone();
        let mut here = false;
        let result = shared
            .get_or_init(|| {
                here = true;
                self.clone().lookup_or_execute(d, key)
            })
            .await
            .clone();
        {
            let mut inflight = lock(&self.inner.inflight);
            if inflight.get(&key).is_some_and(|c| Arc::ptr_eq(c, &shared)) {
                // Done: later solves find the result through the cache links.
                inflight.remove(&key);
            }
        }
        if !here {
            // Another solve ran (or found) it for us.
            let name = vertex_name(self.vertex(&d), self.metadata(&d));
            self.emit(d, EventKind::Started { name });
            match &result {
                Ok((_, cached)) => {
                    if *cached {
                        self.emit(d, EventKind::Cached);
                    }
                    self.counts.shared.fetch_add(1, Ordering::Relaxed);
                    self.emit(d, EventKind::Completed { duration: std::time::Duration::ZERO });
                }
                Err(e) => self.emit(d, EventKind::Failed { error: e.to_string() }),
            }
        }
        result.map(|(outputs, _)| outputs)
    }

    async fn lookup_or_execute(self: Arc<Self>, d: Digest, key: Digest) -> Shared {
        let name = vertex_name(self.vertex(&d), self.metadata(&d));
        let ignore = self.opts.no_cache || self.metadata(&d).is_some_and(|m| m.ignore_cache);
        if !ignore {
            let inner = self.inner.clone();
            let hit = blocking(move || {
                let Some(link) = inner.links.lookup(&key, &*inner.worker.snapshotter)? else { return Ok(None) };
                for s in link.outputs.iter().flatten() {
                    // Best effort: a missing label only makes GC's order less exact.
                    let _ = snapshotter::gc::touch(&*inner.worker.snapshotter, s);
                }
                Ok(Some(link))
            })
            .await?;
            if let Some(link) = hit {
                self.emit(d, EventKind::Started { name });
                self.emit(d, EventKind::Cached);
                self.emit(d, EventKind::Completed { duration: std::time::Duration::ZERO });
                self.counts.cached.fetch_add(1, Ordering::Relaxed);
                let outputs = link.outputs.into_iter().map(Ref::Snapshot).collect();
                return Ok((Arc::new(outputs), true));
            }
        }
        let inputs = self.build_inputs(d).await?;
        let _permit =
            self.sem.acquire().await.map_err(|_| SolveError::Internal("the scheduler's semaphore closed".into()))?;
        self.emit(d, EventKind::Started { name });
        let started = Instant::now();
        let run = self.clone();
        let result = blocking(move || {
            let outputs = ops::execute(&run, d, key, inputs)?;
            let link = Link {
                outputs: outputs
                    .iter()
                    .map(|r| match r {
                        Ref::Snapshot(s) => s.clone(),
                        Ref::Local(_) => None,
                    })
                    .collect(),
            };
            if outputs.iter().all(|r| matches!(r, Ref::Snapshot(_))) {
                run.inner.links.store(&key, &link)?;
            }
            Ok(outputs)
        })
        .await;
        match result {
            Ok(outputs) => {
                self.counts.executed.fetch_add(1, Ordering::Relaxed);
                self.emit(d, EventKind::Completed { duration: started.elapsed() });
                Ok((Arc::new(outputs), false))
            }
            Err(e) => {
                self.emit(d, EventKind::Failed { error: e.to_string() });
                Err(e)
            }
        }
    }

    /// Builds every input of `d` in parallel; returns the selected output of each, in input order. The
    /// first failure returns at once; the other inputs go on in the background (their results are
    /// cached, and another build may be sharing them).
    async fn build_inputs(self: &Arc<Self>, d: Digest) -> Result<Vec<Ref>, SolveError> {
        let inputs = self.vertex(&d).inputs.clone();
        let mut unique: Vec<Digest> = inputs.iter().map(|i| i.digest).collect();
        unique.sort_unstable();
        unique.dedup();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for digest in &unique {
            let (tx, task) = (tx.clone(), self.build(*digest));
            let digest = *digest;
            tokio::spawn(async move {
                let _ = tx.send((digest, task.await));
            });
        }
        drop(tx);
        let mut done: HashMap<Digest, Outputs> = HashMap::new();
        while done.len() < unique.len() {
            match rx.recv().await {
                Some((digest, Ok(outputs))) => {
                    done.insert(digest, outputs);
                }
                Some((_, Err(e))) => return Err(e),
                None => return Err(SolveError::Internal(format!("an input task of {d} ended without a result"))),
            }
        }
        inputs
            .iter()
            .map(|i| {
                done[&i.digest]
                    .get(i.output_index)
                    .cloned()
                    .ok_or_else(|| SolveError::Internal(format!("{} has no output {}", i.digest, i.output_index)))
            })
            .collect()
    }
}
