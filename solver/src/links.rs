//! The cache store: links from cache keys to committed snapshots, in the metadata database.

use std::sync::Arc;

use llb::Digest;
use serde::{Deserialize, Serialize};
use snapshotter::meta::MetaDb;
use snapshotter::redb::TableDefinition;
use snapshotter::snapshot::{SnapshotError, Snapshotter};

use crate::error::SolveError;

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
}

impl Links {
    pub(crate) fn new(meta: Arc<MetaDb>) -> Links {
        Links { meta }
    }

    /// Creates the links table if needed (a read of a missing redb table fails).
    pub(crate) fn ensure_table(&self) -> Result<(), SolveError> {
        let err = |e: snapshotter::redb::Error| SolveError::Cache(e.to_string());
        let tx = self.meta.database().begin_write().map_err(|e| err(e.into()))?;
        tx.open_table(CACHE_LINKS).map_err(|e| err(e.into()))?;
        tx.commit().map_err(|e| err(e.into()))?;
        Ok(())
    }

    /// The result linked to `key` if every snapshot it names still exists; a stale link is dropped.
    pub(crate) fn lookup(&self, key: &Digest, snapshotter: &dyn Snapshotter) -> Result<Option<Link>, SolveError> {
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
