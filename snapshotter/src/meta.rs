//! The metadata database (redb): snapshots, blob records, computed layers, image names, leases and
//! last-use times. Other crates (the solver's cache) add their own tables through [`MetaDb::database`].
//!
//! Values are JSON so records can grow fields without a migration. Every write is one transaction that
//! commits only after the files it describes exist.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Blob records by digest.
pub const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");
/// Image names to their manifest descriptor.
pub const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
/// Leases by id: resources kept alive while a build runs.
pub const LEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("leases");
/// Computed layers: `<snapshot data dir>|<compression>|<epoch>` to a JSON `diff::Layer`.
pub const LAYERS: TableDefinition<&str, &[u8]> = TableDefinition::new("layers");
/// Monotonic counters (snapshot ids).
pub const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

/// The errors of the metadata database.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("cannot open metadata database {path}: {source} (is another rbuild using this root?)")]
    Open { path: PathBuf, source: Box<redb::DatabaseError> },
    #[error("metadata database: {0}")]
    Db(Box<redb::Error>),
    #[error("corrupt metadata record {key} in table {table}: {source}")]
    Decode { table: String, key: String, source: serde_json::Error },
    #[error("cannot encode metadata record {key}: {source}")]
    Encode { key: String, source: serde_json::Error },
}

/// A blob the store knows about, with its last use for GC.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    pub size: u64,
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    pub last_used: u64,
}

/// An image name's target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub created_at: u64,
}

/// A lease: while it exists, the listed resources are not collected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub created_at: u64,
    #[serde(default)]
    pub expires_at: Option<u64>,
    #[serde(default)]
    pub snapshots: Vec<String>,
    #[serde(default)]
    pub blobs: Vec<String>,
}

/// The opened database.
#[derive(Debug)]
pub struct MetaDb {
    db: Database,
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl MetaDb {
    /// Opens the database, creating it first when missing. Creation happens under a temporary name
    /// and is renamed into place once initialised, so a crash mid-creation leaves no half-made file.
    pub fn open(path: impl AsRef<Path>) -> Result<MetaDb, MetaError> {
        let path = path.as_ref();
        let open_err = |source| MetaError::Open { path: path.to_path_buf(), source: Box::new(source) };
        if !path.exists() {
            let fresh = path.with_extension("redb.new");
            let _ = std::fs::remove_file(&fresh);
            {
                let db = Database::create(&fresh).map_err(open_err)?;
                MetaDb { db }.init()?;
            }
            let io_err = |e: std::io::Error| open_err(redb::DatabaseError::Storage(redb::StorageError::Io(e)));
            std::fs::File::open(&fresh).and_then(|f| f.sync_all()).map_err(io_err)?;
            std::fs::rename(&fresh, path).map_err(io_err)?;
            if let Some(dir) = path.parent() {
                crate::root::sync_dir(dir).map_err(io_err)?;
            }
        }
        let db = Database::create(path).map_err(open_err)?;
        let m = MetaDb { db };
        m.init()?;
        Ok(m)
    }

    fn init(&self) -> Result<(), MetaError> {
        let tx = self.db.begin_write().map_err(db)?;
        {
            tx.open_table(BLOBS).map_err(db)?;
            tx.open_table(IMAGES).map_err(db)?;
            tx.open_table(LEASES).map_err(db)?;
            tx.open_table(COUNTERS).map_err(db)?;
            tx.open_table(LAYERS).map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(())
    }

    /// The underlying database, for tables owned by other crates.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Reads one JSON record.
    pub fn get<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, MetaError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(table).map_err(db)?;
        let Some(v) = t.get(key).map_err(db)? else { return Ok(None) };
        decode(table, key, v.value()).map(Some)
    }

    /// Writes one JSON record.
    pub fn put<T: Serialize>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &T,
    ) -> Result<(), MetaError> {
        let bytes = encode(key, value)?;
        let tx = self.db.begin_write().map_err(db)?;
        {
            let mut t = tx.open_table(table).map_err(db)?;
            t.insert(key, bytes.as_slice()).map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(())
    }

    /// Removes one record; true when it existed.
    pub fn delete(&self, table: TableDefinition<&str, &[u8]>, key: &str) -> Result<bool, MetaError> {
        let tx = self.db.begin_write().map_err(db)?;
        let existed = {
            let mut t = tx.open_table(table).map_err(db)?;
            let r = t.remove(key).map_err(db)?.is_some();
            r
        };
        tx.commit().map_err(db)?;
        Ok(existed)
    }

    /// Every record of a table, in key order.
    pub fn list<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<(String, T)>, MetaError> {
        let tx = self.db.begin_read().map_err(db)?;
        let t = tx.open_table(table).map_err(db)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db)? {
            let (k, v) = item.map_err(db)?;
            let key = k.value().to_string();
            let rec = decode(table, &key, v.value())?;
            out.push((key, rec));
        }
        Ok(out)
    }

    /// Records that a blob was used now (creating its record when missing).
    pub fn touch_blob(&self, digest: &str, size: u64, media_type: Option<&str>) -> Result<(), MetaError> {
        let mut rec: BlobRecord = self.get(BLOBS, digest)?.unwrap_or_default();
        rec.size = size;
        if let Some(m) = media_type {
            rec.media_type = Some(m.to_string());
        }
        rec.last_used = now();
        self.put(BLOBS, digest, &rec)
    }

    /// Creates (or replaces) a lease that keeps the listed snapshots and blobs from GC until it is
    /// deleted or `ttl` passes.
    pub fn create_lease(&self, id: &str, ttl: Option<std::time::Duration>) -> Result<(), MetaError> {
        let now = now();
        let rec = LeaseRecord {
            created_at: now,
            expires_at: ttl.map(|t| now + t.as_secs()),
            snapshots: Vec::new(),
            blobs: Vec::new(),
        };
        self.put(LEASES, id, &rec)
    }

    /// Adds a snapshot key or blob digest to a lease (a missing lease is created without expiry).
    pub fn add_to_lease(&self, id: &str, snapshot: Option<&str>, blob: Option<&str>) -> Result<(), MetaError> {
        let mut rec: LeaseRecord =
            self.get(LEASES, id)?.unwrap_or_else(|| LeaseRecord { created_at: now(), ..Default::default() });
        if let Some(s) = snapshot {
            if !rec.snapshots.iter().any(|x| x == s) {
                rec.snapshots.push(s.to_string());
            }
        }
        if let Some(b) = blob {
            if !rec.blobs.iter().any(|x| x == b) {
                rec.blobs.push(b.to_string());
            }
        }
        self.put(LEASES, id, &rec)
    }

    /// Ends a lease; true when it existed.
    pub fn delete_lease(&self, id: &str) -> Result<bool, MetaError> {
        self.delete(LEASES, id)
    }

    /// Names an image.
    pub fn set_image(&self, name: &str, rec: &ImageRecord) -> Result<(), MetaError> {
        self.put(IMAGES, name, rec)
    }

    pub fn image(&self, name: &str) -> Result<Option<ImageRecord>, MetaError> {
        self.get(IMAGES, name)
    }
}

/// Wraps any redb failure.
pub fn db(e: impl Into<redb::Error>) -> MetaError {
    MetaError::Db(Box::new(e.into()))
}

pub(crate) fn decode<T: DeserializeOwned>(
    table: TableDefinition<&str, &[u8]>,
    key: &str,
    v: &[u8],
) -> Result<T, MetaError> {
    serde_json::from_slice(v).map_err(|source| MetaError::Decode {
        table: redb::TableHandle::name(&table).to_string(),
        key: key.to_string(),
        source,
    })
}

pub(crate) fn encode<T: Serialize>(key: &str, v: &T) -> Result<Vec<u8>, MetaError> {
    serde_json::to_vec(v).map_err(|source| MetaError::Encode { key: key.to_string(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("meta.redb");
        {
            let m = MetaDb::open(&p).unwrap();
            m.touch_blob("sha256:aa", 3, Some("application/octet-stream")).unwrap();
            let img = ImageRecord { digest: "sha256:bb".into(), media_type: "m".into(), size: 1, created_at: 2 };
            m.set_image("app:latest", &img).unwrap();
        }
        let m = MetaDb::open(&p).unwrap();
        let b: BlobRecord = m.get(BLOBS, "sha256:aa").unwrap().unwrap();
        assert_eq!(b.size, 3);
        assert_eq!(m.image("app:latest").unwrap().unwrap().digest, "sha256:bb");
        assert!(m.delete(IMAGES, "app:latest").unwrap());
        m.add_to_lease("build", Some("snap"), Some("sha256:aa")).unwrap();
        m.add_to_lease("build", Some("snap"), None).unwrap();
        let l: LeaseRecord = m.get(LEASES, "build").unwrap().unwrap();
        assert_eq!((l.snapshots.len(), l.blobs.len(), l.expires_at), (1, 1, None));
        assert!(m.delete_lease("build").unwrap());
        assert!(m.image("app:latest").unwrap().is_none());
    }
}
