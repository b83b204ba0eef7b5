//! One solve: its ops and keys, the per-solve memo of evaluated vertices, and the reporting of steps.
//!
//! Cancellation is by dropping: the solve's evaluation futures hold [`Interest`]s in flights, and dropping
//! them (the solve was cancelled, or a sibling input failed) cancels what nobody else needs. A flight's
//! own work (looking up, building its inputs, executing) runs in a task of its own, so it outlives the
//! solve that started it when another solve still wants it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::stream::{FuturesUnordered, StreamExt};
use llb::{Definition, Digest};
use tokio::sync::{OnceCell, Semaphore};
use tokio_util::sync::CancellationToken;

use super::flight::{Failure, Flight, Flights, Joiner, Origin, Outcome, Phase};
use super::{Counts, SolveRequest};
use crate::error::SolveError;
use crate::graph::{vertex_label, vertex_name, Graph};
use crate::op::{lock, BoxFuture, CacheStore, Op, OpContext, Prepared, Watcher, Watchers};
use crate::progress::{Event, EventKind, KeyIngredients, ProgressSink, StepRecord, StepStatus};

type Memo<R> = Result<Arc<Vec<R>>, SolveError>;

// v3: file ops and RUN steps give BuildKit v0.24's results (issue 17: --chmod on created parents, ADD
// --chown of archives, root-owned contexts, supplementary groups, no /etc/hostname mount), so results
// cached under v2 keys would differ from a fresh run.
pub const KEY_VERSION: &str = "rbuild.cachekey.v3";

pub(crate) struct Run<R: Clone + Send + Sync + 'static> {
    flights: Arc<Flights<R>>,
    id: u64,
    def: Definition,
    order: Vec<Digest>,
    ops: HashMap<Digest, Arc<dyn Op<R>>>,
    keys: HashMap<Digest, Digest>,
    ingredients: HashMap<Digest, KeyIngredients>,
    ready: HashMap<Digest, Arc<Vec<R>>>,
    /// Steps whose `Started` went out while they were prepared.
    announced: HashSet<Digest>,
    cache: Arc<dyn CacheStore<R>>,
    no_cache: bool,
    sink: ProgressSink,
    sem: Semaphore,
    /// The scheduler-wide bound, if any.
    limit: Option<Arc<Semaphore>>,
    memo: Mutex<HashMap<Digest, Arc<OnceCell<Memo<R>>>>>,
    /// Vertices whose events were sent (a step is shown once even when reached twice).
    shown: Mutex<HashSet<Digest>>,
    records: Mutex<HashMap<Digest, StepRecord>>,
    counts: Mutex<Counts>,
}

/// sha256 over length-prefixed fields, so no two different key inputs hash the same bytes.
fn derive_key(op: &Digest, inputs: &[(Digest, usize)], content: &[(String, String)]) -> Digest {
    let mut buf = KEY_VERSION.as_bytes().to_vec();
    let mut field = |tag: &[u8], value: &[u8]| {
        buf.extend_from_slice(tag);
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
        buf.extend_from_slice(value);
    };
    field(b"op", op.as_bytes());
    for (key, index) in inputs {
        field(b"input", key.as_bytes());
        field(b"index", &(*index as u64).to_le_bytes());
    }
    for (label, value) in content {
        field(b"label", label.as_bytes());
        field(b"value", value.as_bytes());
    }
    Digest::of(&buf)
}

/// The watchers of a step being prepared: this solve only, announcing the step on its first event.
fn single_watcher(solve: u64, sink: &ProgressSink, vertex: Digest, name: &str) -> Arc<Watchers> {
    let w = Arc::new(Watchers::announcing());
    w.with(|v| v.push(Watcher { solve, sink: sink.clone(), vertex, name: name.to_string() }));
    w
}

struct Keyed<R> {
    keys: HashMap<Digest, Digest>,
    ingredients: HashMap<Digest, KeyIngredients>,
    ready: HashMap<Digest, Arc<Vec<R>>>,
}

impl<R: Clone + Send + Sync + 'static> Run<R> {
    /// Makes, prepares and keys every vertex the root needs.
    pub(crate) async fn prepare(
        flights: Arc<Flights<R>>,
        id: u64,
        req: SolveRequest<R>,
        roots: &[llb::Output],
        limit: Option<Arc<Semaphore>>,
    ) -> Result<Arc<Run<R>>, SolveError> {
        let def = req.definition.pruned_to(roots);
        let order = Graph::load_roots(&def, roots)?.order().to_vec();
        let mut ops = HashMap::new();
        for d in &order {
            ops.insert(*d, req.resolver.resolve(*d, &def.vertices[d], def.metadata_of(d))?);
        }
        let ctx = |d: &Digest, cancel: &CancellationToken| {
            let (v, m) = (&def.vertices[d], def.metadata_of(d));
            let name = vertex_name(v, m);
            let watchers = single_watcher(id, &req.progress, *d, &name);
            OpContext::new(*d, None, name, vertex_label(v, m), watchers, cancel.clone())
        };
        let contexts: HashMap<Digest, OpContext> = order.iter().map(|d| (*d, ctx(d, &req.cancel))).collect();
        let mut pending: FuturesUnordered<_> = order
            .iter()
            .map(|d| {
                let (op, ctx, d) = (ops[d].clone(), contexts[d].clone(), *d);
                async move { (d, op.prepare(&ctx).await) }
            })
            .collect();
        let mut prepared: HashMap<Digest, Prepared<R>> = HashMap::new();
        while let Some((d, p)) = pending.next().await {
            prepared.insert(d, p?);
        }
        drop(pending);
        let announced: HashSet<Digest> = contexts.iter().filter(|(_, c)| c.announced()).map(|(d, _)| *d).collect();
        let (def, order, ops, keyed) = {
            let job = move || -> Result<_, SolveError> {
                let keyed = key_all(&def, &order, &ops, &contexts, prepared)?;
                Ok((def, order, ops, keyed))
            };
            tokio::task::spawn_blocking(job)
                .await
                .map_err(|e| SolveError::Internal(format!("keying the definition failed: {e}")))??
        };
        let max = req.max_parallelism.max(1);
        Ok(Arc::new(Run {
            flights,
            id,
            def,
            order,
            ops,
            keys: keyed.keys,
            ingredients: keyed.ingredients,
            ready: keyed.ready,
            announced,
            cache: req.cache,
            no_cache: req.no_cache,
            sink: req.progress,
            sem: Semaphore::new(max),
            limit,
            memo: Mutex::new(HashMap::new()),
            shown: Mutex::new(HashSet::new()),
            records: Mutex::new(HashMap::new()),
            counts: Mutex::new(Counts::default()),
        }))
    }

    pub(crate) fn records(&self) -> Vec<StepRecord> {
        let records = lock(&self.records);
        self.order.iter().filter_map(|d| records.get(d).cloned()).collect()
    }

    pub(crate) fn counts(&self) -> Counts {
        *lock(&self.counts)
    }

    fn name(&self, d: &Digest) -> String {
        vertex_name(&self.def.vertices[d], self.def.metadata_of(d))
    }

    fn emit(&self, d: Digest, kind: EventKind) {
        let _ = self.sink.send(Event { vertex: d, time: SystemTime::now(), kind });
    }

    /// `Started`, unless it went out while the step was prepared.
    fn start(&self, d: Digest) {
        if !self.announced.contains(&d) {
            self.emit(d, EventKind::Started { name: self.name(&d) });
        }
    }

    /// Claims the right to show `d`'s events: true the first time only.
    fn show(&self, d: Digest) -> bool {
        lock(&self.shown).insert(d)
    }

    fn record(&self, d: Digest, status: StepStatus, started: Option<SystemTime>, error: Option<String>) {
        let record = StepRecord {
            vertex: d,
            name: self.name(&d),
            key: self.keys[&d],
            status,
            started,
            completed: Some(SystemTime::now()),
            ingredients: self.ingredients.get(&d).cloned().unwrap_or_default(),
            cache_source: None,
            error,
        };
        lock(&self.records).entry(d).or_insert(record);
    }

    /// The outputs of vertex `d`, evaluated at most once per solve.
    pub(crate) fn build(self: &Arc<Self>, d: Digest) -> BoxFuture<'static, Memo<R>> {
        let run = self.clone();
        Box::pin(async move {
            let cell = lock(&run.memo).entry(d).or_default().clone();
            cell.get_or_init(|| run.clone().evaluate(d)).await.clone()
        })
    }

    async fn evaluate(self: Arc<Self>, d: Digest) -> Memo<R> {
        if let Some(ready) = self.ready.get(&d) {
            if self.show(d) {
                self.start(d);
                self.emit(d, EventKind::Completed { duration: Duration::ZERO });
            }
            self.record(d, StepStatus::Ready, Some(SystemTime::now()), None);
            return Ok(ready.clone());
        }
        let key = self.keys[&d];
        let ignore = self.no_cache || self.def.metadata_of(&d).is_some_and(|m| m.ignore_cache);
        let joiner = Joiner { solve: self.id, vertex: d, name: self.name(&d), sink: self.sink.clone() };
        let run = self.clone();
        let interest = self.flights.join((key, ignore), joiner, move |flight| {
            tokio::spawn(async move {
                let outcome = run.clone().fly(d, key, ignore, flight.clone()).await;
                run.flights.finish(&flight, outcome);
            });
        });
        let mut rx = interest.flight.phase.subscribe();
        let joined_done = matches!(&*rx.borrow(), Phase::Done(_));
        let initiated = interest.flight.initiator == self.id;
        let outcome = loop {
            if let Phase::Done(o) = &*rx.borrow_and_update() {
                break o.clone();
            }
            if rx.changed().await.is_err() {
                break Err(Failure {
                    error: SolveError::Internal(format!("the execution of {d} ended without a result")),
                    own: true,
                    ran: false,
                });
            }
        };
        drop(interest);
        // `Started` reached this solve from the flight iff it ran while this solve watched.
        let saw_start = |ran: bool| ran && !joined_done;
        match outcome {
            Ok((outputs, Origin::Cache(source))) => {
                self.report_below(d).await;
                if self.show(d) {
                    self.start(d);
                    self.emit(d, EventKind::Cached { source: source.clone() });
                    self.emit(d, EventKind::Completed { duration: Duration::ZERO });
                }
                let mut counts = lock(&self.counts);
                if initiated {
                    counts.cached += 1;
                } else {
                    counts.shared += 1;
                }
                drop(counts);
                self.record(d, StepStatus::Cached, Some(SystemTime::now()), None);
                if let Some(r) = lock(&self.records).get_mut(&d) {
                    r.cache_source = source;
                }
                Ok(outputs)
            }
            Ok((outputs, Origin::Execution(started))) => {
                lock(&self.shown).insert(d);
                if !saw_start(true) {
                    self.emit(d, EventKind::Started { name: self.name(&d) });
                }
                let duration = SystemTime::now().duration_since(started).unwrap_or_default();
                self.emit(d, EventKind::Completed { duration });
                let status = if initiated { StepStatus::Executed } else { StepStatus::Shared };
                let mut counts = lock(&self.counts);
                if initiated {
                    counts.executed += 1;
                } else {
                    counts.shared += 1;
                }
                drop(counts);
                self.record(d, status, Some(started), None);
                Ok(outputs)
            }
            Err(f) => {
                if f.own {
                    lock(&self.shown).insert(d);
                    if !saw_start(f.ran) {
                        self.emit(d, EventKind::Started { name: self.name(&d) });
                    }
                    let (kind, status) = match &f.error {
                        SolveError::Cancelled => (EventKind::Canceled, StepStatus::Canceled),
                        e => (EventKind::Failed { error: e.to_string() }, StepStatus::Failed),
                    };
                    self.emit(d, kind);
                    self.record(d, status, None, Some(f.error.to_string()));
                }
                Err(f.error)
            }
        }
    }

    /// A flight's work: look the key up, else build the inputs, wait for a slot and execute. Everything
    /// before execution stops as soon as the flight is cancelled; an execution is awaited to its end
    /// (the op stops it and cleans up), so nothing is left behind.
    async fn fly(self: Arc<Self>, d: Digest, key: Digest, ignore: bool, flight: Arc<Flight<R>>) -> Outcome<R> {
        let own = |error: SolveError, ran: bool| Failure { error, own: true, ran };
        let before = async {
            if !ignore {
                match self.cache.load(&key).await {
                    Ok(Some(hit)) => return Ok(Err(hit)),
                    Ok(None) => {}
                    Err(e) => return Err(own(e, false)),
                }
            }
            let inputs = self.build_inputs(d, &flight.cancel).await.map_err(|error| Failure {
                error,
                own: false,
                ran: false,
            })?;
            let closed = || own(SolveError::Internal("the scheduler's semaphore closed".into()), false);
            let permit = self.sem.acquire().await.map_err(|_| closed())?;
            let global = match &self.limit {
                Some(l) => Some(l.clone().acquire_owned().await.map_err(|_| closed())?),
                None => None,
            };
            Ok(Ok((inputs, (permit, global))))
        };
        let ready = tokio::select! {
            r = before => r?,
            _ = flight.cancel.cancelled() => return Err(own(SolveError::Cancelled, false)),
        };
        let (inputs, _permit) = match ready {
            Err(hit) => return Ok((Arc::new(hit.outputs), Origin::Cache(hit.source))),
            Ok(x) => x,
        };
        let (v, m) = (&self.def.vertices[&d], self.def.metadata_of(&d));
        let ctx = OpContext::new(
            d,
            Some(key),
            vertex_name(v, m),
            vertex_label(v, m),
            flight.watchers.clone(),
            flight.cancel.clone(),
        );
        let started = flight.start();
        let outputs = self.ops[&d].exec(&ctx, inputs).await.map_err(|e| own(e, true))?;
        self.cache.save(&key, &outputs).await.map_err(|e| own(e, true))?;
        Ok((Arc::new(outputs), Origin::Execution(started)))
    }

    /// Builds every input of `d` concurrently; returns the selected output of each, in input order. The
    /// first failure returns at once, dropping (and so cancelling, unless another solve needs them) the
    /// other inputs, as BuildKit cancels the rest of a failed build. An input ready while others are still
    /// building is handed to the cache store to warm (an imported result is unpacked meanwhile).
    async fn build_inputs(self: &Arc<Self>, d: Digest, cancel: &CancellationToken) -> Result<Vec<R>, SolveError> {
        let inputs = self.def.vertices[&d].inputs.clone();
        let mut unique: Vec<Digest> = inputs.iter().map(|i| i.digest).collect();
        unique.sort_unstable();
        unique.dedup();
        let mut pending: FuturesUnordered<_> = unique
            .iter()
            .map(|u| {
                let (u, f) = (*u, self.build(*u));
                async move { (u, f.await) }
            })
            .collect();
        let mut done: HashMap<Digest, Arc<Vec<R>>> = HashMap::new();
        while let Some((u, r)) = pending.next().await {
            let outputs = r?;
            if !pending.is_empty() {
                for i in inputs.iter().filter(|i| i.digest == u) {
                    if let Some(result) = outputs.get(i.output_index) {
                        self.cache.warm(result, cancel);
                    }
                }
            }
            done.insert(u, outputs);
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

    /// Reports the steps below a cache hit that this solve did not evaluate: as cached where the store
    /// has their result, as done where they were ready; steps whose result is gone are not shown.
    async fn report_below(self: &Arc<Self>, d: Digest) {
        let below = self.def.reachable_from(&d);
        for v in self.order.iter().filter(|v| **v != d && below.contains(v)) {
            if lock(&self.memo).contains_key(v) || lock(&self.shown).contains(v) {
                continue;
            }
            let status = if self.ready.contains_key(v) {
                StepStatus::Ready
            } else if matches!(self.cache.contains(&self.keys[v]).await, Ok(true)) {
                StepStatus::Cached
            } else {
                continue;
            };
            if !self.show(*v) {
                continue;
            }
            self.start(*v);
            if status == StepStatus::Cached {
                self.emit(*v, EventKind::Cached { source: None });
            }
            self.emit(*v, EventKind::Completed { duration: Duration::ZERO });
            self.record(*v, status, Some(SystemTime::now()), None);
        }
    }
}

/// Keys every vertex, inputs first: a content key where preparing found one, else the cache map's
/// digest with the inputs' keys and the content ingredients. Blocking (cache maps read files).
fn key_all<R: Clone + Send + Sync + 'static>(
    def: &Definition,
    order: &[Digest],
    ops: &HashMap<Digest, Arc<dyn Op<R>>>,
    contexts: &HashMap<Digest, OpContext>,
    mut prepared: HashMap<Digest, Prepared<R>>,
) -> Result<Keyed<R>, SolveError> {
    let mut keys = HashMap::new();
    let mut ingredients = HashMap::new();
    let mut ready = HashMap::new();
    for d in order {
        let p = prepared.remove(d).unwrap_or_default();
        if let Some(r) = p.ready {
            ready.insert(*d, Arc::new(r));
        }
        if let Some(k) = p.content_key {
            keys.insert(*d, k);
            ingredients.insert(*d, KeyIngredients { content_key: Some(k), content: p.content, ..Default::default() });
            continue;
        }
        let v = &def.vertices[d];
        let views: Vec<Option<&R>> =
            v.inputs.iter().map(|i| ready.get(&i.digest).and_then(|r: &Arc<Vec<R>>| r.get(i.output_index))).collect();
        let map = ops[d].cache_map(&contexts[d], &views)?;
        let inputs: Vec<(Digest, usize)> = v.inputs.iter().map(|i| (keys[&i.digest], i.output_index)).collect();
        let mut content = p.content;
        content.extend(map.content);
        keys.insert(*d, derive_key(&map.digest, &inputs, &content));
        ingredients.insert(*d, KeyIngredients { op: Some(map.digest), inputs, content, content_key: None });
    }
    Ok(Keyed { keys, ingredients, ready })
}
