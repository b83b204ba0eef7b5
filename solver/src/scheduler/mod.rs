//! Scheduling, generic over what ops produce: a vertex runs once its inputs are ready, independent
//! vertices in parallel (bounded by `max_parallelism`), and identical work (the same cache key) once per
//! scheduler, even across concurrent solves.
//!
//! A solve has two phases. Keying: every vertex's op is made by the solve's [`OpResolver`], prepared
//! (network lookups whose answer is part of the key, concurrently) and keyed from its [`CacheMap`] and its
//! inputs' keys, inputs first, before anything executes. Evaluation is lazy from the root: a vertex first
//! looks its key up in the [`CacheStore`]; only a miss builds its inputs, so nothing below a cache hit runs
//! (an image under a hit is never pulled). The steps skipped below a hit are still reported, as cached
//! where the store has them, so a fully cached build lists every step as BuildKit does.
//!
//! The scheduler knows the [`Op`] trait and the definition's shape only; it never reads an op's payload.

mod flight;
pub(crate) mod run;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use llb::Definition;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::error::SolveError;
use crate::op::{CacheStore, OpResolver};
use crate::progress::{ProgressSink, StepRecord};
use flight::Flights;
use run::Run;

/// Runs definitions. Clones share the executions in flight, so two solves that reach the same key run
/// it once; one scheduler per process (or per daemon).
pub struct Scheduler<R: Clone + Send + Sync + 'static> {
    flights: Arc<Flights<R>>,
    next_solve: Arc<AtomicU64>,
    /// Executions at once across every solve (a daemon's `--max-parallelism`), if bounded.
    limit: Option<Arc<Semaphore>>,
}

impl<R: Clone + Send + Sync + 'static> Clone for Scheduler<R> {
    fn clone(&self) -> Self {
        Scheduler { flights: self.flights.clone(), next_solve: self.next_solve.clone(), limit: self.limit.clone() }
    }
}

impl<R: Clone + Send + Sync + 'static> Default for Scheduler<R> {
    fn default() -> Self {
        Scheduler { flights: Arc::new(Flights::new()), next_solve: Arc::new(AtomicU64::new(1)), limit: None }
    }
}

/// One solve's definition and what it runs against.
pub struct SolveRequest<R> {
    pub definition: Definition,
    /// Makes each vertex's op (and holds what the solve provides: contexts, secrets).
    pub resolver: Arc<dyn OpResolver<R>>,
    /// Where cache hits come from and results are linked.
    pub cache: Arc<dyn CacheStore<R>>,
    /// How many vertices of this solve execute at once (at least one).
    pub max_parallelism: usize,
    /// Ignore every cache hit (`--no-cache`); per-vertex `ignore_cache` metadata is honoured too.
    pub no_cache: bool,
    pub progress: ProgressSink,
    /// Cancels the solve: running steps that no other solve needs are stopped and cleaned up before
    /// [`Scheduler::solve`] returns [`SolveError::Cancelled`].
    pub cancel: CancellationToken,
}

/// Counts of one solve.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Vertices whose result this solve took from the cache.
    pub cached: usize,
    /// Vertices this solve executed.
    pub executed: usize,
    /// Vertices another concurrent solve executed (or found) for this one.
    pub shared: usize,
}

/// What a solve of several roots produced (a multi-platform build: one root per platform).
#[derive(Debug, Clone)]
pub struct Solutions<R> {
    /// Each root's selected output, in the order asked.
    pub roots: Vec<R>,
    /// Every step reported once, inputs before consumers, however many roots reach it.
    pub steps: Vec<StepRecord>,
    pub counts: Counts,
}

/// What a solve produced.
#[derive(Debug, Clone)]
pub struct Solution<R> {
    /// The root's selected output; `None` when the definition has no root.
    pub root: Option<R>,
    /// Every step reported, inputs before consumers.
    pub steps: Vec<StepRecord>,
    pub counts: Counts,
}

impl<R: Clone + Send + Sync + 'static> Scheduler<R> {
    pub fn new() -> Scheduler<R> {
        Scheduler::default()
    }

    /// A scheduler that runs at most `max` executions at once across all of its solves.
    pub fn with_limit(max: usize) -> Scheduler<R> {
        Scheduler { limit: Some(Arc::new(Semaphore::new(max.max(1)))), ..Scheduler::default() }
    }

    /// Keys and evaluates `req.definition`'s root.
    pub async fn solve(&self, req: SolveRequest<R>) -> Result<Solution<R>, SolveError> {
        let roots: Vec<llb::Output> = req.definition.root.into_iter().collect();
        let s = self.solve_roots(req, roots).await?;
        Ok(Solution { root: s.roots.into_iter().next(), steps: s.steps, counts: s.counts })
    }

    /// Keys and evaluates several roots of `req.definition` in one solve: a vertex two roots reach (the
    /// same digest) is keyed, reported and evaluated once.
    pub async fn solve_roots(&self, req: SolveRequest<R>, roots: Vec<llb::Output>) -> Result<Solutions<R>, SolveError> {
        let id = self.next_solve.fetch_add(1, Ordering::Relaxed);
        let cancel = req.cancel.clone();
        let (flights, limit) = (self.flights.clone(), self.limit.clone());
        let work = async move {
            let run = Run::prepare(flights, id, req, &roots, limit).await?;
            let built = futures_util::future::try_join_all(roots.iter().map(|r| run.build(r.digest))).await?;
            let mut outs = Vec::with_capacity(roots.len());
            for (root, outputs) in roots.iter().zip(built) {
                outs.push(outputs.get(root.index).cloned().ok_or_else(|| {
                    SolveError::Internal(format!("the root {} has no output {}", root.digest, root.index))
                })?);
            }
            Ok(Solutions { roots: outs, steps: run.records(), counts: run.counts() })
        };
        // Cancelling drops the evaluation: its interests in flights go, and what no other solve needs stops.
        let result = tokio::select! {
            r = work => r,
            _ = cancel.cancelled() => Err(SolveError::Cancelled),
        };
        if cancel.is_cancelled() || result.is_err() {
            // Whatever only this solve wanted is being stopped (it was cancelled, or a step failed and
            // its siblings were dropped): wait until that has cleaned up.
            self.flights.settle().await;
        }
        if cancel.is_cancelled() {
            return Err(SolveError::Cancelled);
        }
        result
    }
}
