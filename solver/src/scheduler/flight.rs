//! Executions in flight, shared by cache key across every solve of one [`Scheduler`](super::Scheduler).
//!
//! A flight is one lookup-or-execution of one key. Each solve that needs the key holds an [`Interest`] in
//! it; when the last interest goes (every solve that wanted it was cancelled, or failed elsewhere) the
//! flight is cancelled: its op is told (`OpContext::cancelled`), kills what it runs and cleans up, and the
//! flight moves to the dying list until it has. A solve that is cancelled waits for the dying list to
//! empty ([`Flights::settle`]), so when it returns no process, mount or half-written result is left.
//! Work another solve still needs is never cancelled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use llb::Digest;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::error::SolveError;
use crate::op::{lock, Watchers};
use crate::progress::{Event, EventKind, ProgressSink};

/// Where a result came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// From a cache; the source when it was an imported one.
    Cache(Option<String>),
    /// Executed, starting at this time.
    Execution(SystemTime),
}

/// Why a flight produced no result.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) error: SolveError,
    /// The step itself failed (rather than one of its inputs).
    pub(crate) own: bool,
    /// The step had started executing (its watchers were told `Started`).
    pub(crate) ran: bool,
}

pub(crate) type Outcome<R> = Result<(Arc<Vec<R>>, Origin), Failure>;

#[derive(Clone)]
pub(crate) enum Phase<R> {
    /// Looking the key up, building inputs, waiting for a slot.
    Pending,
    /// Executing since this time.
    Running(SystemTime),
    Done(Outcome<R>),
}

/// A flight's identity: the key, and whether cached results are acceptable (a `--no-cache` solve must
/// not share a flight that may answer from the cache).
pub(crate) type FlightKey = (Digest, bool);

pub(crate) struct Flight<R> {
    /// The solve that started it (its op executes).
    pub(crate) initiator: u64,
    pub(crate) cancel: CancellationToken,
    pub(crate) watchers: Arc<Watchers>,
    pub(crate) phase: watch::Sender<Phase<R>>,
    /// Guarded by [`Flights::map`]'s lock: every change of interest happens under it.
    interest: Mutex<usize>,
}

impl<R: Clone + Send + Sync + 'static> Flight<R> {
    /// Marks the flight running and tells its watchers, each under its own vertex and name.
    pub(crate) fn start(&self) -> SystemTime {
        let now = SystemTime::now();
        self.watchers.with(|sinks| {
            self.phase.send_replace(Phase::Running(now));
            for w in sinks {
                let _ = w.sink.send(Event {
                    vertex: w.vertex,
                    time: now,
                    kind: EventKind::Started { name: w.name.clone() },
                });
            }
        });
        now
    }
}

struct Map<R> {
    active: HashMap<FlightKey, Arc<Flight<R>>>,
    dying: Vec<Arc<Flight<R>>>,
}

/// Every flight of a scheduler.
pub(crate) struct Flights<R> {
    map: Mutex<Map<R>>,
    dying_changed: Notify,
}

/// A solve's claim on a flight; dropping the last one cancels the flight.
pub(crate) struct Interest<R: Clone + Send + Sync + 'static> {
    flights: Arc<Flights<R>>,
    pub(crate) flight: Arc<Flight<R>>,
    solve: u64,
    vertex: Digest,
}

impl<R: Clone + Send + Sync + 'static> Drop for Interest<R> {
    fn drop(&mut self) {
        self.flights.release(&self.flight, self.solve, self.vertex);
    }
}

/// Who joins a flight, and how it is told about progress.
pub(crate) struct Joiner {
    pub(crate) solve: u64,
    pub(crate) vertex: Digest,
    pub(crate) name: String,
    pub(crate) sink: ProgressSink,
}

impl<R: Clone + Send + Sync + 'static> Flights<R> {
    pub(crate) fn new() -> Flights<R> {
        Flights { map: Mutex::new(Map { active: HashMap::new(), dying: Vec::new() }), dying_changed: Notify::new() }
    }

    /// Joins the flight of `key`, or starts one with `start` (given the new flight; it must spawn the
    /// work and call [`Flights::finish`] at the end). Returns the interest and whether the flight was new.
    pub(crate) fn join(
        self: &Arc<Self>,
        key: FlightKey,
        who: Joiner,
        start: impl FnOnce(Arc<Flight<R>>),
    ) -> Interest<R> {
        let mut map = lock(&self.map);
        let existing = map.active.get(&key).cloned();
        let flight = match existing {
            Some(f) => f,
            None => {
                let (phase, _) = watch::channel(Phase::Pending);
                let f = Arc::new(Flight {
                    initiator: who.solve,
                    cancel: CancellationToken::new(),
                    watchers: Arc::new(Watchers::default()),
                    phase,
                    interest: Mutex::new(0),
                });
                map.active.insert(key, f.clone());
                start(f.clone());
                f
            }
        };
        *lock(&flight.interest) += 1;
        // Under the watchers' lock, so `Started` reaches this joiner exactly once: from the flight when
        // it starts later, or here when it is running already.
        flight.watchers.with(|sinks| {
            if let Phase::Running(t) = &*flight.phase.borrow() {
                let started = EventKind::Started { name: who.name.clone() };
                let _ = who.sink.send(Event { vertex: who.vertex, time: *t, kind: started });
            }
            sinks.push(crate::op::Watcher {
                solve: who.solve,
                sink: who.sink.clone(),
                vertex: who.vertex,
                name: who.name,
            });
        });
        drop(map);
        Interest { flights: self.clone(), flight, solve: who.solve, vertex: who.vertex }
    }

    fn release(&self, flight: &Arc<Flight<R>>, solve: u64, vertex: Digest) {
        let mut map = lock(&self.map);
        let watcher = flight.watchers.remove(solve, vertex);
        if let (Some(w), Phase::Running(_)) = (watcher, &*flight.phase.borrow()) {
            // This solve stops waiting for a running step (it was cancelled, or a sibling failed).
            let _ = w.sink.send(Event { vertex, time: SystemTime::now(), kind: EventKind::Canceled });
        }
        let mut interest = lock(&flight.interest);
        *interest -= 1;
        if *interest > 0 || matches!(&*flight.phase.borrow(), Phase::Done(_)) {
            return;
        }
        drop(interest);
        // Nobody wants it any more: cancel it, and let a later solve start afresh.
        flight.cancel.cancel();
        map.active.retain(|_, f| !Arc::ptr_eq(f, flight));
        map.dying.push(flight.clone());
    }

    /// Records the outcome of `flight` and wakes its waiters.
    pub(crate) fn finish(&self, flight: &Arc<Flight<R>>, outcome: Outcome<R>) {
        let mut map = lock(&self.map);
        map.active.retain(|_, f| !Arc::ptr_eq(f, flight));
        let before = map.dying.len();
        map.dying.retain(|f| !Arc::ptr_eq(f, flight));
        flight.phase.send_replace(Phase::Done(outcome));
        if map.dying.len() != before {
            self.dying_changed.notify_waiters();
        }
    }

    /// Waits until every cancelled flight has finished cleaning up.
    pub(crate) async fn settle(&self) {
        loop {
            let changed = self.dying_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if lock(&self.map).dying.is_empty() {
                return;
            }
            changed.await;
        }
    }
}
