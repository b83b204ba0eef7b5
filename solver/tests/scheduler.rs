//! The scheduler with toy ops (numbers, after BuildKit's solver tests): ordering, the parallelism bound,
//! dedup across solves, cancellation, cache hits skipping subtrees, and error propagation. No root, no
//! filesystem, no sandbox.
//!
//! Toy vertices are llb vertices read by a toy resolver:
//! - `local:const:N` is a source worth N; `local:ready:N` is worth N and known before execution;
//! - a merge sums its inputs;
//! - an exec's args say what it does: `sleep MS` (then its input + 1), `fail` (after 100 ms), `block` (until
//!   cancelled).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use llb::{Definition, DefinitionBuilder, Digest, ExecOp, MergeOp, Metadata, Op as LlbOp, Output, SourceOp, Vertex};
use solver::op::{BoxFuture, CacheMap, CacheStore, Hit, Op, OpContext, OpResolver, Prepared};
use solver::scheduler::{Scheduler, Solution, SolveRequest};
use solver::{Event, EventKind, SolveError, StepStatus};
use tokio_util::sync::CancellationToken;

/// What the toy ops did, shared by every op of a test.
#[derive(Default)]
struct Log {
    /// Executions per op description.
    runs: Mutex<HashMap<String, usize>>,
    /// `start NAME` / `end NAME` / `cleaned NAME`, in order.
    order: Mutex<Vec<String>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
}

impl Log {
    fn runs(&self, name: &str) -> usize {
        self.runs.lock().unwrap().get(name).copied().unwrap_or(0)
    }
    fn total_runs(&self) -> usize {
        self.runs.lock().unwrap().values().sum()
    }
    fn order(&self) -> Vec<String> {
        self.order.lock().unwrap().clone()
    }
}

enum Kind {
    Const(i64),
    Ready(i64),
    Sum,
    Sleep(u64),
    Fail,
    Block,
}

struct Toy {
    kind: Kind,
    identity: Digest,
    name: String,
    log: Arc<Log>,
}

impl Op<i64> for Toy {
    fn prepare<'a>(&'a self, _ctx: &'a OpContext) -> BoxFuture<'a, Result<Prepared<i64>, SolveError>> {
        Box::pin(async move {
            Ok(match self.kind {
                Kind::Ready(n) => Prepared { ready: Some(vec![n]), ..Prepared::default() },
                _ => Prepared::default(),
            })
        })
    }

    fn cache_map(&self, _ctx: &OpContext, inputs: &[Option<&i64>]) -> Result<CacheMap, SolveError> {
        // Like a COPY from a context: ready inputs enter the key by their content.
        let content = inputs.iter().enumerate().filter_map(|(i, r)| r.map(|v| (format!("ready.{i}"), v.to_string())));
        Ok(CacheMap { digest: self.identity, content: content.collect() })
    }

    fn exec<'a>(&'a self, ctx: &'a OpContext, inputs: Vec<i64>) -> BoxFuture<'a, Result<Vec<i64>, SolveError>> {
        Box::pin(async move {
            *self.log.runs.lock().unwrap().entry(self.name.clone()).or_default() += 1;
            self.log.order.lock().unwrap().push(format!("start {}", self.name));
            let now = self.log.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.log.max_running.fetch_max(now, Ordering::SeqCst);
            let sum: i64 = inputs.iter().sum();
            let result = match self.kind {
                Kind::Const(n) | Kind::Ready(n) => Ok(n),
                Kind::Sum => Ok(sum),
                Kind::Sleep(ms) => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok(sum + 1),
                        _ = ctx.cancelled() => Err(SolveError::Cancelled),
                    }
                }
                Kind::Fail => {
                    // Late enough for a sibling to be running when it fails.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Err(ctx.err("the toy failed"))
                }
                Kind::Block => {
                    ctx.cancelled().await;
                    // Cleaning up takes a while, and the solve must wait for it.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    self.log.order.lock().unwrap().push(format!("cleaned {}", self.name));
                    Err(SolveError::Cancelled)
                }
            };
            self.log.running.fetch_sub(1, Ordering::SeqCst);
            self.log.order.lock().unwrap().push(format!("end {}", self.name));
            result.map(|v| vec![v])
        })
    }
}

struct Resolver(Arc<Log>);

impl OpResolver<i64> for Resolver {
    fn resolve(&self, _d: Digest, v: &Vertex, meta: Option<&Metadata>) -> Result<Arc<dyn Op<i64>>, SolveError> {
        let kind = match &v.op {
            LlbOp::Source(SourceOp::Local { name, .. }) => match name.split_once(':') {
                Some(("const", n)) => Kind::Const(n.parse().unwrap()),
                Some(("ready", n)) => Kind::Ready(n.parse().unwrap()),
                _ => panic!("unknown toy source {name}"),
            },
            LlbOp::Merge(_) => Kind::Sum,
            LlbOp::Exec(e) => match e.meta.args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                ["sleep", ms] => Kind::Sleep(ms.parse().unwrap()),
                ["fail"] => Kind::Fail,
                ["block"] => Kind::Block,
                ref other => panic!("unknown toy exec {other:?}"),
            },
            other => panic!("no toy for {other:?}"),
        };
        let mut id = v.cache_identity();
        id.inputs.clear();
        let name = meta.and_then(|m| m.description.clone()).unwrap_or_else(|| v.summary());
        Ok(Arc::new(Toy { kind, identity: id.digest(), name, log: self.0.clone() }))
    }
}

#[derive(Default)]
struct MemCache(Mutex<HashMap<Digest, Vec<i64>>>, Mutex<Vec<i64>>);

impl CacheStore<i64> for MemCache {
    fn load<'a>(&'a self, key: &'a Digest) -> BoxFuture<'a, Result<Option<Hit<i64>>, SolveError>> {
        Box::pin(async move { Ok(self.0.lock().unwrap().get(key).cloned().map(Hit::local)) })
    }
    fn contains<'a>(&'a self, key: &'a Digest) -> BoxFuture<'a, Result<bool, SolveError>> {
        Box::pin(async move { Ok(self.0.lock().unwrap().contains_key(key)) })
    }
    fn save<'a>(&'a self, key: &'a Digest, results: &'a [i64]) -> BoxFuture<'a, Result<(), SolveError>> {
        Box::pin(async move {
            self.0.lock().unwrap().insert(*key, results.to_vec());
            Ok(())
        })
    }
    fn warm(&self, result: &i64, cancel: &CancellationToken) {
        assert!(!cancel.is_cancelled());
        self.1.lock().unwrap().push(*result);
    }
}

/// A toy definition under construction.
struct Def(DefinitionBuilder);

impl Def {
    fn new() -> Def {
        Def(DefinitionBuilder::new())
    }
    fn source(&mut self, name: &str, description: &str) -> Output {
        self.0.source(SourceOp::local(name), None, Metadata::described(description)).unwrap()
    }
    fn exec(&mut self, args: &[&str], input: Option<Output>, description: &str) -> Output {
        let e = ExecOp::new(args.iter().map(|s| s.to_string()).collect(), input.map(|_| 0));
        let inputs: Vec<Output> = input.into_iter().collect();
        self.0.add_op(LlbOp::Exec(e), &inputs, None, Metadata::described(description)).unwrap()
    }
    fn sum(&mut self, inputs: &[Output], description: &str) -> Output {
        self.0.add_op(LlbOp::Merge(MergeOp {}), inputs, None, Metadata::described(description)).unwrap()
    }
    fn finish(self, root: Output) -> Definition {
        self.0.finish(Some(root)).unwrap()
    }
}

struct Env {
    scheduler: Scheduler<i64>,
    log: Arc<Log>,
    cache: Arc<MemCache>,
}

type Events = tokio::sync::mpsc::UnboundedReceiver<Event>;

impl Env {
    fn new() -> Env {
        Env { scheduler: Scheduler::new(), log: Arc::default(), cache: Arc::default() }
    }

    fn request(&self, def: &Definition, max: usize) -> (SolveRequest<i64>, Events, CancellationToken) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let req = SolveRequest {
            definition: def.clone(),
            resolver: Arc::new(Resolver(self.log.clone())),
            cache: self.cache.clone(),
            max_parallelism: max,
            no_cache: false,
            progress: tx,
            cancel: cancel.clone(),
        };
        (req, rx, cancel)
    }

    async fn solve(&self, def: &Definition) -> (Result<Solution<i64>, SolveError>, Vec<Event>) {
        let (req, mut rx, _) = self.request(def, 4);
        let r = self.scheduler.solve(req).await;
        (r, drain(&mut rx))
    }
}

fn drain(rx: &mut Events) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

/// The names of the steps that got `kind`, in event order.
fn with_kind(events: &[Event], names: &HashMap<Digest, String>, pred: impl Fn(&EventKind) -> bool) -> Vec<String> {
    events.iter().filter(|e| pred(&e.kind)).map(|e| names.get(&e.vertex).cloned().unwrap_or_default()).collect()
}

fn names(events: &[Event]) -> HashMap<Digest, String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Started { name } => Some((e.vertex, name.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn inputs_run_before_their_consumers_and_values_flow() {
    let env = Env::new();
    let mut d = Def::new();
    let a = d.source("const:2", "a");
    let b = d.source("const:3", "b");
    let slow = d.exec(&["sleep", "30"], Some(a), "slow");
    let sum = d.sum(&[slow, b], "sum");
    let (r, events) = env.solve(&d.finish(sum)).await;
    let solution = r.unwrap();
    assert_eq!(solution.root, Some(2 + 1 + 3));
    let order = env.log.order();
    let pos = |s: &str| order.iter().position(|x| x == s).unwrap_or_else(|| panic!("{s} missing in {order:?}"));
    assert!(pos("end a") < pos("start slow"), "{order:?}");
    assert!(pos("end slow") < pos("start sum") && pos("end b") < pos("start sum"), "{order:?}");
    assert_eq!(solution.counts.executed, 4);
    let steps: Vec<(&str, StepStatus)> = solution.steps.iter().map(|s| (s.name.as_str(), s.status)).collect();
    assert_eq!(steps.len(), 4, "{steps:?}");
    assert!(steps.iter().all(|(_, s)| *s == StepStatus::Executed), "{steps:?}");
    assert_eq!(solution.steps.last().unwrap().name, "sum", "records are in dependency order");
    let started = with_kind(&events, &names(&events), |k| matches!(k, EventKind::Started { .. }));
    assert_eq!(started.len(), 4, "{events:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_most_max_parallelism_steps_run_at_once() {
    let env = Env::new();
    let mut d = Def::new();
    let base = d.source("const:0", "base");
    let branches: Vec<Output> =
        (0..6).map(|i| d.exec(&["sleep", &format!("{}", 40 + i)], Some(base), &format!("branch {i}"))).collect();
    let sum = d.sum(&branches, "sum");
    let def = d.finish(sum);
    let (req, _rx, _) = env.request(&def, 2);
    let solution = env.scheduler.solve(req).await.unwrap();
    assert_eq!(solution.root, Some(6));
    assert_eq!(env.log.max_running.load(Ordering::SeqCst), 2, "{:?}", env.log.order());

    // With room for all of them, independent branches overlap.
    let env = Env::new();
    let (req, _rx, _) = env.request(&def, 8);
    env.scheduler.solve(req).await.unwrap();
    assert!(env.log.max_running.load(Ordering::SeqCst) >= 4, "{:?}", env.log.order());
}

/// A slow step whose proxy setting differs: a different vertex digest, the same cache key.
fn shared_slow(proxy: &str, ms: u64, description: &str) -> Definition {
    let mut b = DefinitionBuilder::new();
    let base = b.source(SourceOp::local("const:1"), None, Metadata::described("base")).unwrap();
    let mut e = ExecOp::new(vec!["sleep".into(), ms.to_string()], Some(0));
    e.meta.proxy_env = Some(llb::ProxyEnv { http_proxy: Some(proxy.into()), ..llb::ProxyEnv::default() });
    let slow = b.add_op(LlbOp::Exec(e), &[base], None, Metadata::described(description)).unwrap();
    b.finish(Some(slow)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_solves_reaching_the_same_key_run_it_once() {
    let env = Env::new();
    let one = shared_slow("http://a", 200, "slow in one");
    let two = shared_slow("http://b", 200, "slow in two");
    assert_ne!(one.root, two.root, "the vertices differ");
    let (r1, r2) = tokio::join!(env.solve(&one), env.solve(&two));
    let (s1, s2) = (r1.0.unwrap(), r2.0.unwrap());
    assert_eq!((s1.root, s2.root), (Some(2), Some(2)));
    assert_eq!(env.log.runs("slow in one") + env.log.runs("slow in two"), 1, "{:?}", env.log.order());
    let (c1, c2) = (s1.counts, s2.counts);
    assert_eq!(c1.executed + c2.executed, 2, "base and slow, once each: {c1:?} {c2:?}");
    assert!(c1.shared + c2.shared >= 1, "one solve waited for the other's execution: {c1:?} {c2:?}");
    // Each solve saw its own step start and finish, under its own name, and logs of the shared run.
    for (events, name) in [(&r1.1, "slow in one"), (&r2.1, "slow in two")] {
        let n = names(events);
        assert!(with_kind(events, &n, |k| matches!(k, EventKind::Completed { .. })).iter().any(|s| s == name));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_stops_the_running_step_and_waits_for_its_cleanup() {
    let env = Env::new();
    let mut d = Def::new();
    let base = d.source("const:1", "base");
    let block = d.exec(&["block"], Some(base), "block");
    let def = d.finish(block);
    let (req, mut rx, cancel) = env.request(&def, 4);
    let solve = tokio::spawn({
        let s = env.scheduler.clone();
        async move { s.solve(req).await }
    });
    while !env.log.order().contains(&"start block".to_string()) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t = Instant::now();
    cancel.cancel();
    let r = solve.await.unwrap();
    assert!(matches!(r, Err(SolveError::Cancelled)), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(
        env.log.order().contains(&"cleaned block".to_string()),
        "the solve returned before the step cleaned up: {:?}",
        env.log.order()
    );
    let events = drain(&mut rx);
    let n = names(&events);
    assert_eq!(with_kind(&events, &n, |k| *k == EventKind::Canceled), ["block"], "{events:#?}");
    // The next solve starts afresh.
    let (req, _rx, cancel) = env.request(&def, 4);
    let again = tokio::spawn({
        let s = env.scheduler.clone();
        async move { s.solve(req).await }
    });
    while env.log.runs("block") < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cancel.cancel();
    assert!(matches!(again.await.unwrap(), Err(SolveError::Cancelled)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_one_solve_keeps_the_work_another_still_needs() {
    let env = Env::new();
    let one = shared_slow("http://a", 300, "slow in one");
    let two = shared_slow("http://b", 300, "slow in two");
    let (req1, mut rx1, cancel1) = env.request(&one, 4);
    let (req2, _rx2, _) = env.request(&two, 4);
    let s = env.scheduler.clone();
    let first = tokio::spawn(async move { s.solve(req1).await });
    while env.log.order().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let s = env.scheduler.clone();
    let second = tokio::spawn(async move { s.solve(req2).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    cancel1.cancel();
    assert!(matches!(first.await.unwrap(), Err(SolveError::Cancelled)));
    let two = second.await.unwrap().unwrap();
    assert_eq!(two.root, Some(2), "the shared step was cancelled for the solve that still needed it");
    assert_eq!(env.log.runs("slow in one") + env.log.runs("slow in two"), 1, "{:?}", env.log.order());
    let events = drain(&mut rx1);
    assert!(events.iter().any(|e| e.kind == EventKind::Canceled), "the cancelled solve was not told: {events:#?}");
}

#[tokio::test]
async fn a_cache_hit_skips_its_subtree_and_every_step_is_reported_cached() {
    let env = Env::new();
    let mut d = Def::new();
    let a = d.source("const:2", "[1/3] FROM a");
    let slow = d.exec(&["sleep", "1"], Some(a), "[2/3] RUN slow");
    let b = d.source("ready:5", "[internal] load build context");
    let sum = d.sum(&[slow, b], "[3/3] COPY . .");
    let def = d.finish(sum);
    let (first, _) = env.solve(&def).await;
    assert_eq!(first.unwrap().root, Some(8));
    assert_eq!(env.log.total_runs(), 3, "the ready source never executes: {:?}", env.log.order());

    let (again, events) = env.solve(&def).await;
    let again = again.unwrap();
    assert_eq!(again.root, Some(8));
    assert_eq!(env.log.total_runs(), 3, "a step under the hit ran: {:?}", env.log.order());
    assert_eq!(again.counts.cached, 1, "one lookup answered the root: {:?}", again.counts);
    let n = names(&events);
    let cached = with_kind(&events, &n, |k| *k == EventKind::Cached { source: None });
    assert_eq!(cached, ["[1/3] FROM a", "[2/3] RUN slow", "[3/3] COPY . ."], "{events:#?}");
    let statuses: Vec<(String, StepStatus)> = again.steps.iter().map(|s| (s.name.clone(), s.status)).collect();
    assert_eq!(statuses.len(), 4, "{statuses:?}");
    assert!(statuses.contains(&("[internal] load build context".into(), StepStatus::Ready)), "{statuses:?}");

    // The ready source's content is in its consumer's key: a change re-runs the consumer only.
    let mut d = Def::new();
    let a = d.source("const:2", "[1/3] FROM a");
    let slow = d.exec(&["sleep", "1"], Some(a), "[2/3] RUN slow");
    let b = d.source("ready:6", "[internal] load build context");
    let sum = d.sum(&[slow, b], "[3/3] COPY . .");
    let (changed, _) = env.solve(&d.finish(sum)).await;
    let changed = changed.unwrap();
    assert_eq!(changed.root, Some(9));
    assert_eq!((env.log.runs("[3/3] COPY . ."), env.log.runs("[2/3] RUN slow")), (2, 1));
    let copy = changed.steps.iter().find(|s| s.name == "[3/3] COPY . .").unwrap();
    assert!(copy.ingredients.content.contains(&("ready.1".into(), "6".into())), "{:?}", copy.ingredients);
    assert_eq!(copy.ingredients.inputs.len(), 2);

    // --no-cache runs everything again.
    let (mut req, _rx, _) = env.request(&def, 4);
    req.no_cache = true;
    env.scheduler.solve(req).await.unwrap();
    assert_eq!(env.log.runs("[2/3] RUN slow"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failure_names_its_step_stops_its_consumers_and_cancels_its_siblings() {
    let env = Env::new();
    let mut d = Def::new();
    let a = d.source("const:1", "a");
    let bad = d.exec(&["fail"], Some(a), "[2/3] RUN false");
    let block = d.exec(&["block"], Some(a), "[b 2/2] RUN sleep");
    let sum = d.sum(&[bad, block], "[3/3] COPY --from=b");
    let (r, events) = env.solve(&d.finish(sum)).await;
    let err = r.unwrap_err();
    assert!(matches!(&err, SolveError::Step { step, .. } if step == "[2/3] RUN false"), "{err:?}");
    assert!(err.to_string().contains("the toy failed"), "{err}");
    assert_eq!(env.log.runs("[3/3] COPY --from=b"), 0, "the consumer of a failed step ran");
    assert!(env.log.order().contains(&"cleaned [b 2/2] RUN sleep".into()), "{:?}", env.log.order());
    let n = names(&events);
    assert_eq!(
        with_kind(&events, &n, |k| matches!(k, EventKind::Failed { .. })),
        ["[2/3] RUN false"],
        "only the step that failed reports a failure: {events:#?}"
    );
    // The failure is not cached: the next solve tries again.
    let (r, _) = env.solve(&Def::failing()).await;
    assert!(r.is_err());
    assert_eq!(env.log.runs("[2/3] RUN false"), 2);
}

impl Def {
    fn failing() -> Definition {
        let mut d = Def::new();
        let a = d.source("const:1", "a");
        let bad = d.exec(&["fail"], Some(a), "[2/3] RUN false");
        d.finish(bad)
    }
}

#[tokio::test]
async fn keys_follow_inputs_and_ignore_descriptions() {
    let env = Env::new();
    let key_of_root = |def: &Definition| {
        let (env, def) = (&env, def.clone());
        async move {
            let (s, _) = env.solve(&def).await;
            s.unwrap().steps.last().unwrap().key
        }
    };
    let build = |n: i64, description: &str| {
        let mut d = Def::new();
        let a = d.source(&format!("const:{n}"), "a");
        let s = d.exec(&["sleep", "1"], Some(a), description);
        d.finish(s)
    };
    let k1 = key_of_root(&build(1, "one")).await;
    let k2 = key_of_root(&build(1, "two")).await;
    let k3 = key_of_root(&build(2, "one")).await;
    assert_eq!(k1, k2, "a description is not part of a key");
    assert_ne!(k1, k3, "an input's key is");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduler_wide_limit_bounds_every_solve_together() {
    let env = Env { scheduler: Scheduler::with_limit(2), log: Arc::default(), cache: Arc::default() };
    let def = |tag: &str| {
        let mut d = Def::new();
        let base = d.source(&format!("const:{}", tag.len()), "base");
        let branches: Vec<Output> =
            (0..3).map(|i| d.exec(&["sleep", &format!("{}", 60 + i)], Some(base), &format!("{tag} {i}"))).collect();
        let sum = d.sum(&branches, "sum");
        d.finish(sum)
    };
    let (one, two) = (def("a"), def("bb"));
    let (r1, _rx1, _) = env.request(&one, 8);
    let (r2, _rx2, _) = env.request(&two, 8);
    let (a, b) = tokio::join!(env.scheduler.solve(r1), env.scheduler.solve(r2));
    assert_eq!((a.unwrap().root, b.unwrap().root), (Some(3 + 3), Some(2 * 3 + 3)));
    assert_eq!(env.log.max_running.load(Ordering::SeqCst), 2, "{:?}", env.log.order());
}

/// Two roots over one definition (a multi-platform build's platforms): the step both reach runs once,
/// is reported once, and each root gets its own value.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_roots_of_one_solve_run_a_shared_step_once() {
    let env = Env::new();
    let build = |target: &str| {
        let mut d = Def::new();
        let base = d.source("const:1", "base");
        let shared = d.exec(&["sleep", "100"], Some(base), "[build 1/1] shared");
        let own = d.source(&format!("const:{target}"), &format!("target {target}"));
        let root = d.sum(&[shared, own], &format!("[{target} 1/1] sum"));
        d.finish(root)
    };
    let (amd64, arm64) = (build("10"), build("20"));
    let mut def = amd64.clone();
    def.vertices.extend(arm64.vertices.clone());
    def.metadata.extend(arm64.metadata.clone());
    let roots = vec![amd64.root.unwrap(), arm64.root.unwrap()];
    let (req, mut rx, _) = env.request(&def, 4);
    let solved = env.scheduler.solve_roots(req, roots).await.unwrap();
    assert_eq!(solved.roots, vec![12, 22]);
    assert_eq!(env.log.runs("[build 1/1] shared"), 1, "{:?}", env.log.order());
    let shared: Vec<_> = solved.steps.iter().filter(|s| s.name == "[build 1/1] shared").collect();
    assert_eq!(shared.len(), 1, "one record of the shared step");
    assert_eq!(shared[0].status, StepStatus::Executed);
    let events = drain(&mut rx);
    let n = names(&events);
    let started = with_kind(&events, &n, |k| matches!(k, EventKind::Started { .. }));
    assert_eq!(started.iter().filter(|s| *s == "[build 1/1] shared").count(), 1, "{started:?}");
    // Base, shared, the two targets and the two sums: each executed once.
    assert_eq!(solved.counts.executed, 6, "{:?}", solved.counts);
}

#[tokio::test]
async fn an_input_ready_before_its_siblings_is_warmed_while_they_build() {
    let env = Env::new();
    let mut d = Def::new();
    let quick = d.source("const:7", "[a 1/1] FROM a");
    let base = d.source("const:1", "[b 1/2] FROM b");
    let slow = d.exec(&["sleep", "300"], Some(base), "[b 2/2] RUN slow");
    let sum = d.sum(&[quick, slow], "[3/3] COPY --from=b");
    let (r, _) = env.solve(&d.finish(sum)).await;
    assert_eq!(r.unwrap().root, Some(9));
    // `quick` waited for `slow`: warmed. `slow` was the last input, and `base` the only input of its step:
    // nothing to overlap with, so neither is.
    assert_eq!(*env.cache.1.lock().unwrap(), [7]);
}
