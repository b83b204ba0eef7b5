//! The metadata database (redb): snapshots, blob records, computed layers, image names, leases and
//! last-use times. Other crates (the solver's cache) add their own tables through [`MetaDb::read`] and
//! [`MetaDb::write`].
//!
//! Values are JSON so records can grow fields without a migration. Every write is one transaction that
//! commits only after the files it describes exist.
//!
//! ## Several processes on one database
//!
//! A redb file can be open in one process at a time (redb locks it), but several rbuild processes share a
//! state root: builds, `rbuild images`, a daemon. So no process keeps the database open: a process opens it
//! when one of its threads needs a transaction and hands it over when another process asks.
//!
//! - `meta.redb.lock`: whoever has the database open holds an exclusive flock on it.
//! - `meta.redb.queue`: a process that wants the database holds a shared flock on it while it waits for
//!   the lock, so the holder can see that someone waits (an exclusive non-blocking flock fails).
//! - In the holding process, every transaction is a *user*; threads share the open database. When a user
//!   ends and another process waits, the holder stops admitting new users once it has had the database
//!   for [`MIN_HOLD`] (so a busy build still gets work done per turn), closes it as soon as the last user
//!   ends, and releases the lock; its threads then queue like everyone else. An idle holder is watched
//!   by a thread that closes the database within about 10 ms of someone waiting, or after [`IDLE_CLOSE`].
//! - `meta.redb.first`: a short command ([`MetaDb::open_short`], e.g. `rbuild images`) holds a shared
//!   flock on it while it waits; a holder then hands over without waiting out [`MIN_HOLD`], and a
//!   long-running process that wins the lock race lets it go first.
//! - flock locks die with their process, so a killed holder never blocks the others; redb repairs a
//!   database that was not closed cleanly the next time it is opened.
//!
//! A transaction is short (no file data is copied inside one), so a reader such as `rbuild images` waits
//! at most for the transactions in flight, never for a build. A hand-over itself costs one fsync (the
//! closing holder's allocator state) rather than four: the file's syncs after header-only writes are
//! skipped, which is crash-safe for the reasons given in [`file`].

mod file;

use std::cell::Cell;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use redb::{Database, ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
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
    #[error("cannot open metadata database {path}: {source}")]
    Open { path: PathBuf, source: Box<redb::DatabaseError> },
    #[error("cannot lock metadata database {path}: {source}")]
    Lock { path: PathBuf, source: std::io::Error },
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

/// How long a process keeps the database once it has it, while others wait, before it stops admitting
/// new transactions.
pub const MIN_HOLD: Duration = Duration::from_millis(20);
/// How long an idle process keeps the database open when nobody else asks for it.
pub const IDLE_CLOSE: Duration = Duration::from_secs(2);
/// How often the idle watcher looks for waiting processes.
const WATCH_EVERY: Duration = Duration::from_millis(10);

/// The metadata database of a state root, shared with other processes (see the module docs).
#[derive(Debug)]
pub struct MetaDb {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    lock_path: PathBuf,
    /// `meta.redb.lock`: exclusive while this process has the database open.
    lock: File,
    /// `meta.redb.queue`: shared while this process waits for the database.
    queue: File,
    /// The same file opened again, to ask whether others wait: flock locks belong to an open file, so a
    /// probe through `queue` itself would convert (and on failure drop) the shared lock a thread of this
    /// process holds on it while it waits.
    queue_probe: File,
    /// `meta.redb.first`: shared while a short command's handle waits for a turn.
    first: File,
    /// This handle is a short command's ([`MetaDb::open_short`]): its turns come first.
    short: bool,
    state: Mutex<DbState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct DbState {
    db: Option<Arc<Database>>,
    /// Transactions in flight.
    users: usize,
    /// A thread is opening the database.
    opening: bool,
    /// Another process waits: no new users until the database is handed over.
    draining: bool,
    opened_at: Option<Instant>,
    idle_since: Option<Instant>,
    watcher: bool,
    /// The tables exist (created once per handle).
    initialized: bool,
    /// When this process last handed the database to a waiting one: it lets that one take the lock
    /// before it asks again (flock does not queue fairly, and this process would often win the race).
    handed_over: Option<Instant>,
}

/// How long a process that handed the database over waits for the other to take it.
const HAND_OVER: Duration = Duration::from_millis(200);

thread_local! {
    /// Database users the current thread holds (a nested transaction must not wait for a drain).
    static HELD: Cell<usize> = const { Cell::new(0) };
}

/// How close last-used times are kept: a use within this many seconds of the recorded one writes nothing,
/// so a build that only reads (all cache hits) commits no transaction for them. Pruning by age works in
/// hours and days; ten minutes of slack orders nothing differently that matters.
pub const TOUCH_EVERY: u64 = 600;

/// Whether a last-used time recorded at `last` is recent enough not to be written again now.
pub fn fresh_use(last: u64) -> bool {
    now().saturating_sub(last) < TOUCH_EVERY
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn flock(f: &File, op: rustix::fs::FlockOperation) -> std::io::Result<()> {
    loop {
        match rustix::fs::flock(f, op) {
            Err(rustix::io::Errno::INTR) => continue,
            other => return other.map_err(std::io::Error::from),
        }
    }
}

fn open_lock_file(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)
}

/// An open database, in use by one transaction.
struct Use<'a> {
    inner: &'a Arc<Inner>,
    db: Option<Arc<Database>>,
}

impl Use<'_> {
    fn db(&self) -> Result<&Database, MetaError> {
        self.db.as_deref().ok_or_else(|| MetaError::Db(Box::new(redb::Error::DatabaseAlreadyOpen)))
    }
}

impl Drop for Use<'_> {
    fn drop(&mut self) {
        // Our handle goes first, so that a close in release() really closes the file.
        self.db = None;
        HELD.with(|h| h.set(h.get().saturating_sub(1)));
        self.inner.release();
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, DbState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether another process waits for the database (holds the queue lock shared).
    fn others_wait(&self) -> bool {
        use rustix::fs::FlockOperation::{NonBlockingLockExclusive, Unlock};
        match rustix::fs::flock(&self.queue_probe, NonBlockingLockExclusive) {
            Ok(()) => {
                let _ = flock(&self.queue_probe, Unlock);
                false
            }
            Err(_) => true,
        }
    }

    /// Closes the database and lets the next process have it. Called with no user left.
    fn close(&self, st: &mut DbState) {
        st.handed_over = Some(Instant::now());
        // Dropping the last handle closes the file (redb writes its allocator state); only then may
        // another process open it.
        st.db = None;
        st.draining = false;
        st.opened_at = None;
        st.idle_since = None;
        let _ = flock(&self.lock, rustix::fs::FlockOperation::Unlock);
        self.changed.notify_all();
    }

    fn acquire(self: &Arc<Self>) -> Result<Use<'_>, MetaError> {
        let nested = HELD.with(|h| h.get()) > 0;
        let mut st = self.state();
        loop {
            if let Some(db) = &st.db {
                if !st.draining || nested {
                    let db = db.clone();
                    st.users += 1;
                    st.idle_since = None;
                    HELD.with(|h| h.set(h.get() + 1));
                    return Ok(Use { inner: self, db: Some(db) });
                }
            } else if !st.opening && !st.draining {
                if st.handed_over.is_some_and(|t| t.elapsed() < HAND_OVER) && self.others_wait() {
                    drop(st);
                    std::thread::sleep(Duration::from_millis(1));
                    st = self.state();
                    continue;
                }
                st.handed_over = None;
                st.opening = true;
                let initialized = st.initialized;
                drop(st);
                let opened = self.open(initialized);
                st = self.state();
                st.opening = false;
                self.changed.notify_all();
                st.db = Some(Arc::new(opened?));
                st.initialized = true;
                st.opened_at = Some(Instant::now());
                continue;
            }
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn release(self: &Arc<Self>) {
        let mut st = self.state();
        st.users = st.users.saturating_sub(1);
        // A short command does not wait out MIN_HOLD: it makes a transaction or two and exits.
        let held_long = st.opened_at.is_none_or(|t| t.elapsed() >= MIN_HOLD) || self.first_turn_waits();
        if st.users == 0 {
            if st.draining || (held_long && self.others_wait()) {
                self.close(&mut st);
            } else {
                st.idle_since = Some(Instant::now());
                if !st.watcher {
                    st.watcher = true;
                    let weak = Arc::downgrade(self);
                    let spawned =
                        std::thread::Builder::new().name("rbuild-meta-watch".into()).spawn(move || watch(weak));
                    if spawned.is_err() {
                        // Without a watcher nobody would hand the database over: close it now.
                        st.watcher = false;
                        self.close(&mut st);
                    }
                }
            }
        } else if !st.draining && held_long && self.others_wait() {
            st.draining = true;
        }
    }

    /// Whether a short command waits for a turn (holds the first-turn lock shared).
    fn first_turn_waits(&self) -> bool {
        use rustix::fs::FlockOperation::{NonBlockingLockExclusive, Unlock};
        match rustix::fs::flock(&self.first, NonBlockingLockExclusive) {
            Ok(()) => {
                let _ = flock(&self.first, Unlock);
                false
            }
            Err(_) => true,
        }
    }

    /// Waits for the database (queue, then lock) and opens it, creating it first when missing. A short
    /// command's turn comes before the long-running processes' next ones: flock wakes waiters in no order,
    /// so without this `rbuild images` could lose the race to eight busy builds for seconds.
    fn open(&self, initialized: bool) -> Result<Database, MetaError> {
        use rustix::fs::FlockOperation::{LockExclusive, LockShared, Unlock};
        let lock_err = |source| MetaError::Lock { path: self.lock_path.clone(), source };
        flock(&self.queue, LockShared).map_err(lock_err)?;
        let first = self.short;
        if first {
            flock(&self.first, LockShared).map_err(lock_err)?;
        }
        let locked = loop {
            let locked = flock(&self.lock, LockExclusive);
            if locked.is_err() || first || !self.first_turn_waits() {
                break locked;
            }
            // A short command waits: let it have the turn.
            let _ = flock(&self.lock, Unlock);
            std::thread::sleep(Duration::from_millis(1));
        };
        if first {
            let _ = flock(&self.first, Unlock);
        }
        let _ = flock(&self.queue, Unlock);
        locked.map_err(lock_err)?;
        let opened = open_retrying(&self.path).and_then(|db| {
            if !initialized {
                init(&db)?;
            }
            Ok(db)
        });
        if opened.is_err() {
            let _ = flock(&self.lock, Unlock);
        }
        opened
    }
}

/// Closes an idle database when another process asks for it, or after [`IDLE_CLOSE`].
fn watch(weak: Weak<Inner>) {
    loop {
        std::thread::sleep(WATCH_EVERY);
        let Some(inner) = weak.upgrade() else { return };
        let mut st = inner.state();
        let idle = match (&st.db, st.users, st.idle_since) {
            (Some(_), 0, Some(since)) => since.elapsed(),
            (Some(_), _, _) => continue,
            (None, _, _) => {
                st.watcher = false;
                return;
            }
        };
        if idle >= IDLE_CLOSE || inner.others_wait() {
            inner.close(&mut st);
            st.watcher = false;
            return;
        }
    }
}

/// How long a process that has the lock waits for redb's own lock on the file to go.
const EXIT_GRACE: Duration = Duration::from_secs(10);

/// [`create_or_open`], waiting while redb's own lock on the file is still held: a process that exits
/// (or is killed) with the database open loses its locks as the kernel closes its files, in the order of
/// their descriptors, so `meta.redb.lock` (opened first) is free a moment before the database file is.
fn open_retrying(path: &Path) -> Result<Database, MetaError> {
    let started = Instant::now();
    loop {
        match create_or_open(path) {
            Err(MetaError::Open { source, .. })
                if matches!(*source, redb::DatabaseError::DatabaseAlreadyOpen) && started.elapsed() < EXIT_GRACE =>
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            other => return other,
        }
    }
}

/// Opens the database file, creating it first when missing: under a temporary name, renamed into place
/// once initialised, so a crash mid-creation leaves no half-made file.
fn create_or_open(path: &Path) -> Result<Database, MetaError> {
    let open_err = |source| MetaError::Open { path: path.to_path_buf(), source: Box::new(source) };
    if !path.exists() {
        let fresh = path.with_extension("redb.new");
        let _ = std::fs::remove_file(&fresh);
        {
            let db = Database::create(&fresh).map_err(open_err)?;
            init(&db)?;
        }
        let io_err = |e: std::io::Error| open_err(redb::DatabaseError::Storage(redb::StorageError::Io(e)));
        std::fs::File::open(&fresh).and_then(|f| f.sync_all()).map_err(io_err)?;
        std::fs::rename(&fresh, path).map_err(io_err)?;
        if let Some(dir) = path.parent() {
            crate::root::sync_dir(dir).map_err(io_err)?;
        }
    }
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).map_err(|e| open_err(e.into()))?;
    redb::Builder::new().create_with_backend(file::DbFile::new(file).map_err(open_err)?).map_err(open_err)
}

/// Creates the tables that are missing (a write, and so a sync, only when one is).
fn init(database: &Database) -> Result<(), MetaError> {
    {
        let tx = database.begin_read().map_err(db)?;
        let have = [BLOBS, IMAGES, LEASES, LAYERS].iter().all(|t| tx.open_table(*t).is_ok());
        if have && tx.open_table(COUNTERS).is_ok() {
            return Ok(());
        }
    }
    let tx = database.begin_write().map_err(db)?;
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

impl MetaDb {
    /// Opens the database at `path` (creating it when missing) for this process; it is shared with other
    /// processes as the module docs describe.
    pub fn open(path: impl AsRef<Path>) -> Result<MetaDb, MetaError> {
        Self::open_with(path.as_ref(), false)
    }

    /// [`MetaDb::open`] for a short command (`rbuild images`, `inspect`): each of its turns comes before
    /// the long-running processes' next ones, and a holder hands over to it without waiting out
    /// [`MIN_HOLD`], so it answers while builds run.
    pub fn open_short(path: impl AsRef<Path>) -> Result<MetaDb, MetaError> {
        Self::open_with(path.as_ref(), true)
    }

    fn open_with(path: &Path, short: bool) -> Result<MetaDb, MetaError> {
        let path = path.to_path_buf();
        let side = |ext: &str| {
            let mut p = path.clone().into_os_string();
            p.push(ext);
            PathBuf::from(p)
        };
        let (lock_path, queue_path, first_path) = (side(".lock"), side(".queue"), side(".first"));
        let lock_err = |p: &Path| {
            let p = p.to_path_buf();
            move |source| MetaError::Lock { path: p, source }
        };
        let lock = open_lock_file(&lock_path).map_err(lock_err(&lock_path))?;
        let queue = open_lock_file(&queue_path).map_err(lock_err(&queue_path))?;
        let queue_probe = open_lock_file(&queue_path).map_err(lock_err(&queue_path))?;
        let first = open_lock_file(&first_path).map_err(lock_err(&first_path))?;
        let m = MetaDb {
            inner: Arc::new(Inner {
                path,
                lock_path,
                lock,
                queue,
                queue_probe,
                first,
                short,
                state: Mutex::new(DbState::default()),
                changed: Condvar::new(),
            }),
        };
        // Create the file and the tables now, so a bad path fails here.
        m.inner.acquire().map(drop)?;
        Ok(m)
    }

    /// Runs `f` in a read transaction.
    pub fn read<T, E: From<MetaError>>(&self, f: impl FnOnce(&ReadTransaction) -> Result<T, E>) -> Result<T, E> {
        let u = self.inner.acquire()?;
        let tx = u.db()?.begin_read().map_err(db)?;
        f(&tx)
    }

    /// Runs `f` in a write transaction, committed when `f` succeeds (and aborted when it fails).
    pub fn write<T, E: From<MetaError>>(&self, f: impl FnOnce(&WriteTransaction) -> Result<T, E>) -> Result<T, E> {
        let u = self.inner.acquire()?;
        let tx = u.db()?.begin_write().map_err(db)?;
        let out = f(&tx)?;
        tx.commit().map_err(db)?;
        Ok(out)
    }

    /// Whether this process has the database open right now (for tests and diagnostics).
    pub fn is_open(&self) -> bool {
        self.inner.state().db.is_some()
    }

    /// Reads one JSON record.
    pub fn get<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, MetaError> {
        self.read(|tx| {
            let t = tx.open_table(table).map_err(db)?;
            let Some(v) = t.get(key).map_err(db)? else { return Ok(None) };
            decode(table, key, v.value()).map(Some)
        })
    }

    /// Writes one JSON record.
    pub fn put<T: Serialize>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &T,
    ) -> Result<(), MetaError> {
        let bytes = encode(key, value)?;
        self.write(|tx| {
            let mut t = tx.open_table(table).map_err(db)?;
            t.insert(key, bytes.as_slice()).map_err(db)?;
            Ok(())
        })
    }

    /// Removes one record; true when it existed.
    pub fn delete(&self, table: TableDefinition<&str, &[u8]>, key: &str) -> Result<bool, MetaError> {
        self.write(|tx| {
            let mut t = tx.open_table(table).map_err(db)?;
            let existed = t.remove(key).map_err(db)?.is_some();
            Ok(existed)
        })
    }

    /// Every record of a table, in key order.
    pub fn list<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<(String, T)>, MetaError> {
        self.read(|tx| {
            let t = tx.open_table(table).map_err(db)?;
            let mut out = Vec::new();
            for item in t.iter().map_err(db)? {
                let (k, v) = item.map_err(db)?;
                let key = k.value().to_string();
                let rec = decode(table, &key, v.value())?;
                out.push((key, rec));
            }
            Ok(out)
        })
    }

    /// Records that a blob was used now (creating its record when missing); a record that already says
    /// this, used within [`TOUCH_EVERY`], is left as it is.
    pub fn touch_blob(&self, digest: &str, size: u64, media_type: Option<&str>) -> Result<(), MetaError> {
        let old: Option<BlobRecord> = self.get(BLOBS, digest)?;
        if let Some(r) = &old {
            let same_type = media_type.is_none_or(|m| r.media_type.as_deref() == Some(m));
            if r.size == size && same_type && fresh_use(r.last_used) {
                return Ok(());
            }
        }
        let mut rec = old.unwrap_or_default();
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

    /// Two handles on one file contend as two processes do (flock locks belong to open files).
    fn pair() -> (tempfile::TempDir, Arc<MetaDb>, Arc<MetaDb>) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("meta.redb");
        let a = Arc::new(MetaDb::open(&p).unwrap());
        let b = Arc::new(MetaDb::open(&p).unwrap());
        (dir, a, b)
    }

    #[test]
    fn handles_take_turns_and_every_write_lands() {
        let (_dir, a, b) = pair();
        let threads: Vec<_> = [a.clone(), a.clone(), b.clone(), b.clone()]
            .into_iter()
            .enumerate()
            .map(|(t, m)| {
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let rec = ImageRecord {
                            digest: format!("sha256:{t}-{i}"),
                            media_type: "m".into(),
                            size: i,
                            created_at: 0,
                        };
                        m.set_image(&format!("img-{t}-{i}"), &rec).unwrap();
                        assert_eq!(m.image(&format!("img-{t}-{i}")).unwrap().unwrap(), rec);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(a.list::<ImageRecord>(IMAGES).unwrap().len(), 200);
        assert_eq!(b.list::<ImageRecord>(IMAGES).unwrap().len(), 200);
    }

    #[test]
    fn an_idle_holder_hands_the_database_over_at_once() {
        let (_dir, a, b) = pair();
        a.touch_blob("sha256:aa", 1, None).unwrap();
        assert!(a.is_open(), "an idle holder keeps the database while nobody asks");
        let t = std::time::Instant::now();
        assert!(b.get::<BlobRecord>(BLOBS, "sha256:aa").unwrap().is_some());
        assert!(t.elapsed() < Duration::from_millis(500), "{:?}", t.elapsed());
        assert!(!a.is_open());
    }

    #[test]
    fn a_reader_is_not_starved_by_a_busy_writer() {
        let (_dir, a, b) = pair();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers: Vec<_> = (0..3)
            .map(|w| {
                let (a, stop) = (a.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        a.touch_blob(&format!("sha256:{w}-{i}"), i, None).unwrap();
                        i += 1;
                    }
                    i
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let mut worst = Duration::ZERO;
        for _ in 0..20 {
            let t = std::time::Instant::now();
            b.list::<BlobRecord>(BLOBS).unwrap();
            worst = worst.max(t.elapsed());
            // Reads come now and then, as `rbuild images` does, not back to back.
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let written: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
        // Three threads committing durably without pause, as no build does: the read waits for their turn
        // (MIN_HOLD and the commits in flight) and the hand-over, never for IDLE_CLOSE. (`rbuild images`
        // during eight builds, within a second, is cli/tests/hostile.rs.)
        assert!(worst < Duration::from_secs(2), "a read waited {worst:?} for a busy writer");
        assert!(written > 20, "the writer made progress too: {written}");
    }

    #[test]
    fn a_short_command_goes_before_busy_writers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("meta.redb");
        let writers: Vec<_> = (0..3).map(|_| Arc::new(MetaDb::open(&p).unwrap())).collect();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads: Vec<_> = writers
            .iter()
            .enumerate()
            .map(|(w, m)| {
                let (m, stop) = (m.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        m.touch_blob(&format!("sha256:{w}-{i}"), i, None).unwrap();
                        i += 1;
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let mut worst = Duration::ZERO;
        for _ in 0..10 {
            // A fresh short handle each time, as each `rbuild images` is a process of its own.
            let t = std::time::Instant::now();
            let short = MetaDb::open_short(&p).unwrap();
            short.list::<BlobRecord>(BLOBS).unwrap();
            drop(short);
            worst = worst.max(t.elapsed());
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        // Three other processes committing without pause: the short command waits for the commits in
        // flight and a hand-over, not for their turns (MIN_HOLD each).
        assert!(worst < Duration::from_millis(500), "a short command waited {worst:?}");
    }

    #[test]
    fn nested_transactions_do_not_wait_for_a_hand_over() {
        let (_dir, a, b) = pair();
        a.touch_blob("sha256:aa", 1, None).unwrap();
        let waiter = {
            let b = b.clone();
            std::thread::spawn(move || b.get::<BlobRecord>(BLOBS, "sha256:aa").unwrap())
        };
        // Inside a transaction, with another handle waiting: an inner one still runs.
        let inner = a
            .read(|_tx| {
                std::thread::sleep(Duration::from_millis(50));
                a.get::<BlobRecord>(BLOBS, "sha256:aa")
            })
            .unwrap();
        assert!(inner.is_some());
        assert!(waiter.join().unwrap().is_some());
    }
}
