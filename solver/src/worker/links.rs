//! The local cache store: links from cache keys to committed snapshots, in the metadata database. One
//! implementation of [`CacheStore`]; an imported remote cache can be another.

use std::sync::Arc;

use llb::Digest;
use serde::{Deserialize, Serialize};
use snapshotter::meta::MetaDb;
use snapshotter::redb::TableDefinition;
use snapshotter::snapshot::{SnapshotError, Snapshotter};
use tokio_util::sync::CancellationToken;

use super::{blocking, State, WorkerRef};
use crate::error::SolveError;
use crate::op::{BoxFuture, CacheStore, Hit};

/// Cache key (`sha256:...`) -> [`Link`] as JSON.
pub const CACHE_LINKS: TableDefinition<&str, &[u8]> = TableDefinition::new("solver_cache_links");

/// The result of one keyed vertex: per output index, its committed snapshot (`None`: empty filesystem).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub outputs: Vec<Option<String>>,
}

/// Reads and writes links.
pub(crate) struct Links {
    meta: Arc<MetaDb>,
    snapshotter: Arc<dyn Snapshotter>,
}

impl Links {
    pub(crate) fn new(meta: Arc<MetaDb>, snapshotter: Arc<dyn Snapshotter>) -> Links {
        Links { meta, snapshotter }
    }

    /// Creates the links table if needed (a read of a missing redb table fails).
    pub(crate) fn ensure_table(&self) -> Result<(), SolveError> {
        ensure(&self.meta, CACHE_LINKS)
    }

    /// The result linked to `key` if every snapshot it names still exists; a stale link is dropped.
    pub(crate) fn lookup(&self, key: &Digest) -> Result<Option<Link>, SolveError> {
        let snapshotter = &*self.snapshotter;
        let cache_err = |e: snapshotter::meta::MetaError| SolveError::Cache(e.to_string());
        let Some(link) = self.meta.get::<Link>(CACHE_LINKS, &key.to_string()).map_err(cache_err)? else {
            return Ok(None);
        };
        for name in link.outputs.iter().flatten() {
            match snapshotter.stat(name) {
                Ok(_) => {}
                Err(SnapshotError::NotFound(_)) => {
                    // Pruned by GC: the link leads nowhere any more.
                    self.meta.delete(CACHE_LINKS, &key.to_string()).map_err(cache_err)?;
                    return Ok(None);
                }
                Err(e) => return Err(SolveError::Cache(e.to_string())),
            }
        }
        Ok(Some(link))
    }

    pub(crate) fn store(&self, key: &Digest, link: &Link) -> Result<(), SolveError> {
        self.meta.put(CACHE_LINKS, &key.to_string(), link).map_err(|e| SolveError::Cache(e.to_string()))
    }
}

/// The worker's links as the scheduler's cache store.
pub(crate) struct LocalCache(pub(crate) Arc<State>);

impl CacheStore<WorkerRef> for LocalCache {
    fn load<'a>(&'a self, key: &'a Digest) -> BoxFuture<'a, Result<Option<Hit<WorkerRef>>, SolveError>> {
        let (state, key) = (self.0.clone(), *key);
        Box::pin(blocking(move || {
            let Some(link) = state.links.lookup(&key)? else { return Ok(None) };
            for s in link.outputs.iter().flatten() {
                // Best effort: a missing label only makes GC's order less exact.
                let _ = snapshotter::gc::touch(&*state.worker.snapshotter, s);
            }
            Ok(Some(Hit::local(link.outputs.into_iter().map(WorkerRef::Snapshot).collect())))
        }))
    }

    fn contains<'a>(&'a self, key: &'a Digest) -> BoxFuture<'a, Result<bool, SolveError>> {
        let (state, key) = (self.0.clone(), *key);
        Box::pin(blocking(move || Ok(state.links.lookup(&key)?.is_some())))
    }

    fn save<'a>(&'a self, key: &'a Digest, results: &'a [WorkerRef]) -> BoxFuture<'a, Result<(), SolveError>> {
        let outputs: Option<Vec<Option<String>>> = results
            .iter()
            .map(|r| match r {
                WorkerRef::Snapshot(s) => Some(s.clone()),
                WorkerRef::Local(_) | WorkerRef::Lazy(_) => None,
            })
            .collect();
        let (state, key) = (self.0.clone(), *key);
        Box::pin(async move {
            let Some(outputs) = outputs else { return Ok(()) };
            blocking(move || state.links.store(&key, &Link { outputs })).await
        })
    }
}

/// This machine's links first, then imported caches in order; a hit of an imported cache is linked here
/// too, so the next build finds it locally.
pub(crate) struct Layered {
    pub(crate) local: LocalCache,
    pub(crate) imports: Vec<Arc<dyn CacheStore<WorkerRef>>>,
}

impl CacheStore<WorkerRef> for Layered {
    fn load<'a>(&'a self, key: &'a Digest) -> BoxFuture<'a, Result<Option<Hit<WorkerRef>>, SolveError>> {
        Box::pin(async move {
            if let Some(hit) = self.local.load(key).await? {
                return Ok(Some(hit));
            }
            for import in &self.imports {
                if let Some(hit) = import.load(key).await? {
                    // Best effort: a failed link costs an import lookup next time.
                    let _ = self.local.save(key, &hit.outputs).await;
                    return Ok(Some(hit));
                }
            }
            Ok(None)
        })
    }

    fn contains<'a>(&'a self, key: &'a Digest) -> BoxFuture<'a, Result<bool, SolveError>> {
        Box::pin(async move {
            if self.local.contains(key).await? {
                return Ok(true);
            }
            for import in &self.imports {
                if import.contains(key).await? {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    fn save<'a>(&'a self, key: &'a Digest, results: &'a [WorkerRef]) -> BoxFuture<'a, Result<(), SolveError>> {
        self.local.save(key, results)
    }

    /// Unpacks an imported result's layers in the background; the step that needs them later finds the
    /// snapshots made (or, if this failed, unpacks them itself and reports why).
    fn warm(&self, result: &WorkerRef, cancel: &CancellationToken) {
        let WorkerRef::Lazy(chain) = result else { return };
        let (chain, cancel) = (chain.clone(), cancel.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = chain.unpacker.unpack(&chain.layers) => {}
                _ = cancel.cancelled() => {}
            }
        });
    }
}

/// Creates `table` when it is missing; a read, not a write (and its sync), when it is there.
pub(crate) fn ensure(meta: &MetaDb, table: TableDefinition<&str, &[u8]>) -> Result<(), SolveError> {
    let err = |e: snapshotter::meta::MetaError| SolveError::Cache(e.to_string());
    if meta.read(|tx| Ok::<_, snapshotter::meta::MetaError>(tx.open_table(table).is_ok())).map_err(err)? {
        return Ok(());
    }
    meta.write(|tx| tx.open_table(table).map(drop).map_err(snapshotter::meta::db)).map_err(err)
}
