//! The directory-per-snapshot machinery both snapshotters share: metadata in the database, data in
//! `<root>/snapshots/<backend>/<id>/{fs,work}` with short numeric ids (short paths keep overlay option
//! strings small), crash-safe creation and removal, and the startup cleanup of orphaned directories.
//!
//! Creation, after containerd's overlay snapshotter: build the directory under a temporary
//! `new-<owner>-*` name, then in one write transaction allocate the id, insert the record, rename the
//! directory to its id and commit. A crash before the commit leaves a directory without a record, which
//! [`FsSnapshotter::new`] removes. Removal renames the directory to `rm-<owner>-<id>` in the transaction
//! that deletes the record, and deletes it afterwards.
//!
//! Several processes share the snapshots (see [`crate::root`]): active snapshots and views record the
//! owner that made them, and the startup pass removes only those of dead owners, the temporary
//! directories of dead owners, and directories that no record names (looked at inside a write
//! transaction, when no create or remove of any process can be between its rename and its commit).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{ApplyTarget, DiffSource, Info, Kind, SnapshotError, Snapshotter, Usage};
use crate::fsutil;
use crate::meta::{self, MetaDb, COUNTERS};
use crate::mount::Mount;
use crate::root::{sync_dir, Owners, StateRoot};

/// What differs between overlay and native snapshots.
pub trait Backend: Send + Sync {
    /// Directory name under `<root>/snapshots` and prefix of the metadata table.
    const NAME: &'static str;
    /// Name of the metadata table.
    const TABLE: &'static str;
    /// Fills a new snapshot's `fs` directory (native copies the parent for an active snapshot;
    /// overlay leaves it empty).
    fn populate(&self, kind: Kind, fs: &Path, parent_fs: Option<&Path>) -> io::Result<()>;
    fn needs_workdir(&self) -> bool;
    /// Mounts of a snapshot given its own `fs`/`work` directories and its parents' `fs`, nearest first.
    fn mounts(&self, kind: Kind, own: &Path, work: &Path, parents: &[PathBuf]) -> Vec<Mount>;
    fn diff_source(&self, own: &Path, parents: &[PathBuf]) -> DiffSource;
    fn apply_target(&self, own: &Path, parents: &[PathBuf]) -> ApplyTarget;
}

/// A snapshot's metadata record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    id: u64,
    kind: Kind,
    parent: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    created_at: u64,
    updated_at: u64,
    /// The process (state root owner) an active snapshot or view belongs to; committed ones have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
}

/// A snapshotter storing each snapshot in its own directory.
#[derive(Debug)]
pub struct FsSnapshotter<B: Backend> {
    dir: PathBuf,
    meta: Arc<MetaDb>,
    backend: B,
    owners: Owners,
}

fn db<E: Into<redb::Error>>(e: E) -> SnapshotError {
    SnapshotError::Meta(meta::db(e))
}

impl<B: Backend + Default> FsSnapshotter<B> {
    /// The snapshotter of a state root; removes directories a crash left without a record.
    pub fn new(root: &StateRoot, meta: Arc<MetaDb>) -> Result<Self, SnapshotError> {
        Self::with_dir(root.snapshots_dir().join(B::NAME), meta, B::default(), root.owners().clone())
    }
}

impl<B: Backend> FsSnapshotter<B> {
    pub fn with_dir(dir: PathBuf, meta: Arc<MetaDb>, backend: B, owners: Owners) -> Result<Self, SnapshotError> {
        fs::create_dir_all(&dir).map_err(|source| SnapshotError::CreateDir { path: dir.clone(), source })?;
        let s = FsSnapshotter { dir, meta, backend, owners };
        s.init_table()?;
        s.cleanup()?;
        Ok(s)
    }

    fn table() -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(B::TABLE)
    }

    fn init_table(&self) -> Result<(), SnapshotError> {
        // A write (and its sync) only when the table is missing.
        if self.meta.read(|tx| Ok::<_, SnapshotError>(tx.open_table(Self::table()).is_ok()))? {
            return Ok(());
        }
        self.meta.write(|tx| {
            tx.open_table(Self::table()).map_err(db)?;
            Ok(())
        })
    }

    /// Renames the directory of snapshot `id` out of the way (to `rm-<owner>-<id>`), for deletion after the
    /// transaction that removed its record; returns the new path.
    fn doom(&self, id: u64) -> Result<PathBuf, SnapshotError> {
        let dir = self.dir.join(id.to_string());
        let doomed = self.dir.join(format!("rm-{}-{id}", self.owners.id()));
        match fs::rename(&dir, &doomed) {
            Ok(()) => Ok(doomed),
            // Already gone (a crash after an earlier rename): nothing to delete.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(doomed),
            Err(source) => Err(SnapshotError::RemoveDir { path: dir, source }),
        }
    }

    /// The owner of a temporary directory name (`new-<owner>-*`, `rm-<owner>-<id>`); `None` for the
    /// names older versions used, which belong to nobody alive.
    fn temp_owner(name: &str) -> Option<&str> {
        let rest = name.strip_prefix("new-").or_else(|| name.strip_prefix("rm-"))?;
        // `<pid>-<16 hex digits>`, then `-` and the rest.
        let end = rest.find('-')? + 1 + 16;
        rest.get(..end)
    }

    /// Removes what dead processes left: their temporary directories, their active snapshots and views,
    /// and directories no record names. Live processes' work is left alone.
    fn cleanup(&self) -> Result<(), SnapshotError> {
        let clean_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SnapshotError::Cleanup { path, source }
        };
        let entries = fs::read_dir(&self.dir).map_err(clean_err(&self.dir))?;
        let mut unnamed = Vec::new();
        for e in entries {
            let e = e.map_err(clean_err(&self.dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("new-") || name.starts_with("rm-") {
                if Self::temp_owner(&name).is_none_or(|o| !self.owners.is_alive(o)) {
                    let p = e.path();
                    fsutil::remove_all(&p).map_err(clean_err(&p))?;
                }
            } else {
                unnamed.push(name);
            }
        }
        // Most starts find nothing to remove: a read says so without a write (and its sync). Anything that
        // looks removable is decided again below, where it is safe to.
        let clean = self.meta.read(|tx| {
            let t = match tx.open_table(Self::table()) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(unnamed.is_empty()),
                Err(e) => return Err(db(e)),
            };
            let mut ids = std::collections::HashSet::new();
            for item in t.iter().map_err(db)? {
                let (k, v) = item.map_err(db)?;
                let rec: Record = meta::decode(Self::table(), k.value(), v.value())?;
                if rec.kind != Kind::Committed && rec.owner.as_deref().is_none_or(|o| !self.owners.is_alive(o)) {
                    return Ok(false);
                }
                ids.insert(rec.id.to_string());
            }
            Ok(unnamed.iter().all(|n| ids.contains(n)))
        })?;
        if clean {
            return Ok(());
        }
        // Inside a write transaction: no process can be between renaming a new directory to its id and
        // committing its record, or between deleting a record and renaming its directory away.
        let doomed = self.meta.write(|tx| {
            let mut t = tx.open_table(Self::table()).map_err(db)?;
            let mut ids = std::collections::HashSet::new();
            let mut dead = Vec::new();
            for item in t.iter().map_err(db)? {
                let (k, v) = item.map_err(db)?;
                let rec: Record = meta::decode(Self::table(), k.value(), v.value())?;
                ids.insert(rec.id.to_string());
                // Records of older versions have no owner: an active one is a leftover of a dead process.
                let orphan =
                    rec.kind != Kind::Committed && rec.owner.as_deref().is_none_or(|o| !self.owners.is_alive(o));
                if orphan {
                    dead.push((k.value().to_string(), rec.id));
                }
            }
            let mut doomed = Vec::new();
            for (key, id) in dead {
                // Active snapshots and views have no children; a record whose removal fails stays.
                t.remove(key.as_str()).map_err(db)?;
                doomed.push(self.doom(id)?);
            }
            for name in unnamed.iter().filter(|n| !ids.contains(*n)) {
                let dir = self.dir.join(name);
                if dir.exists() {
                    let to = self.dir.join(format!("rm-{}-x{name}", self.owners.id()));
                    fs::rename(&dir, &to).map_err(clean_err(&dir))?;
                    doomed.push(to);
                }
            }
            Ok::<_, SnapshotError>(doomed)
        })?;
        for p in doomed {
            fsutil::remove_all(&p).map_err(clean_err(&p))?;
        }
        Ok(())
    }

    fn records(&self) -> Result<Vec<(String, Record)>, SnapshotError> {
        Ok(self.meta.list(Self::table())?)
    }

    fn get(&self, key: &str) -> Result<Record, SnapshotError> {
        self.meta.get(Self::table(), key)?.ok_or_else(|| SnapshotError::NotFound(key.to_string()))
    }

    fn fs_dir(&self, id: u64) -> PathBuf {
        self.dir.join(id.to_string()).join("fs")
    }

    fn work_dir(&self, id: u64) -> PathBuf {
        self.dir.join(id.to_string()).join("work")
    }

    /// The `fs` directories of the parents of `rec`, nearest first.
    fn parent_dirs(&self, key: &str, rec: &Record) -> Result<Vec<PathBuf>, SnapshotError> {
        self.meta.read(|tx| {
            let t = tx.open_table(Self::table()).map_err(db)?;
            let mut out = Vec::new();
            let mut next = rec.parent.clone();
            while let Some(p) = next {
                let v = t.get(p.as_str()).map_err(db)?.ok_or_else(|| SnapshotError::BrokenChain(key.to_string()))?;
                let r: Record = meta::decode(Self::table(), &p, v.value())?;
                out.push(self.fs_dir(r.id));
                next = r.parent;
            }
            Ok(out)
        })
    }

    fn info(name: &str, r: &Record) -> Info {
        Info {
            kind: r.kind,
            name: name.to_string(),
            parent: r.parent.clone(),
            labels: r.labels.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }

    fn mounts_of(&self, key: &str, rec: &Record) -> Result<Vec<Mount>, SnapshotError> {
        let parents = self.parent_dirs(key, rec)?;
        Ok(self.backend.mounts(rec.kind, &self.fs_dir(rec.id), &self.work_dir(rec.id), &parents))
    }

    fn create(&self, key: &str, parent: Option<&str>, kind: Kind) -> Result<Vec<Mount>, SnapshotError> {
        let parent_fs = match parent {
            Some(p) => {
                let r = self.get(p)?;
                if r.kind != Kind::Committed {
                    return Err(SnapshotError::ParentNotCommitted(p.to_string()));
                }
                Some(self.fs_dir(r.id))
            }
            None => None,
        };
        if self.meta.get::<Record>(Self::table(), key)?.is_some() {
            return Err(SnapshotError::AlreadyExists(key.to_string()));
        }
        let tmp = tempfile::Builder::new()
            .prefix(&format!("new-{}-", self.owners.id()))
            .tempdir_in(&self.dir)
            .map_err(|source| SnapshotError::CreateDir { path: self.dir.clone(), source })?;
        let fs_tmp = tmp.path().join("fs");
        fs::create_dir(&fs_tmp).map_err(|source| SnapshotError::CreateDir { path: fs_tmp.clone(), source })?;
        if self.backend.needs_workdir() {
            let w = tmp.path().join("work");
            fs::create_dir(&w).map_err(|source| SnapshotError::CreateDir { path: w, source })?;
        }
        self.backend
            .populate(kind, &fs_tmp, parent_fs.as_deref())
            .map_err(|source| SnapshotError::Copy { path: fs_tmp.clone(), source })?;

        let now = meta::now();
        let tmp_path = tmp.keep();
        let mut final_dir = None;
        // The directory is renamed to its id inside the transaction: no other process can look at the
        // records and the directories in between, because only one has the database at a time.
        let made = self.meta.write(|tx| {
            let mut t = tx.open_table(Self::table()).map_err(db)?;
            if t.get(key).map_err(db)?.is_some() {
                return Err(SnapshotError::AlreadyExists(key.to_string()));
            }
            if let Some(p) = parent {
                if t.get(p).map_err(db)?.is_none() {
                    return Err(SnapshotError::NotFound(p.to_string()));
                }
            }
            let mut c = tx.open_table(COUNTERS).map_err(db)?;
            let counter = format!("{}.snapshot_id", B::NAME);
            let id = c.get(counter.as_str()).map_err(db)?.map(|v| v.value()).unwrap_or(0) + 1;
            c.insert(counter.as_str(), id).map_err(db)?;
            let rec = Record {
                id,
                kind,
                parent: parent.map(str::to_string),
                labels: BTreeMap::new(),
                created_at: now,
                updated_at: now,
                owner: Some(self.owners.id().to_string()),
            };
            t.insert(key, meta::encode(key, &rec)?.as_slice()).map_err(db)?;
            let dir = self.dir.join(rec.id.to_string());
            fs::rename(&tmp_path, &dir).map_err(|source| SnapshotError::Rename { path: dir.clone(), source })?;
            final_dir = Some(dir.clone());
            sync_dir(&self.dir).map_err(|source| SnapshotError::Rename { path: dir, source })?;
            Ok(rec)
        });
        let rec = match made {
            Ok(rec) => rec,
            Err(e) => {
                let _ = fsutil::remove_all(final_dir.as_deref().unwrap_or(&tmp_path));
                return Err(e);
            }
        };
        self.mounts_of(key, &rec)
    }

    fn update(&self, key: &str, f: impl FnOnce(&mut Record)) -> Result<(), SnapshotError> {
        self.meta.write(|tx| {
            let mut t = tx.open_table(Self::table()).map_err(db)?;
            let mut rec: Record = {
                let v = t.get(key).map_err(db)?.ok_or_else(|| SnapshotError::NotFound(key.to_string()))?;
                meta::decode(Self::table(), key, v.value())?
            };
            f(&mut rec);
            rec.updated_at = meta::now();
            t.insert(key, meta::encode(key, &rec)?.as_slice()).map_err(db)?;
            Ok(())
        })
    }

    /// The directory holding a snapshot's own data.
    pub fn data_dir(&self, key: &str) -> Result<PathBuf, SnapshotError> {
        Ok(self.fs_dir(self.get(key)?.id))
    }
}

impl<B: Backend> Snapshotter for FsSnapshotter<B> {
    fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
        Ok(Self::info(key, &self.get(key)?))
    }

    fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
        let dir = self.fs_dir(self.get(key)?.id);
        let (size, inodes) = fsutil::disk_usage(&dir).map_err(|source| SnapshotError::Usage { path: dir, source })?;
        Ok(Usage { size, inodes })
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError> {
        let rec = self.get(key)?;
        self.mounts_of(key, &rec)
    }

    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>, SnapshotError> {
        self.create(key, parent, Kind::Active)
    }

    fn view(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>, SnapshotError> {
        self.create(key, parent, Kind::View)
    }

    fn commit(&self, name: &str, key: &str) -> Result<(), SnapshotError> {
        self.meta.write(|tx| {
            let mut t = tx.open_table(Self::table()).map_err(db)?;
            let mut rec: Record = {
                let v = t.get(key).map_err(db)?.ok_or_else(|| SnapshotError::NotFound(key.to_string()))?;
                meta::decode(Self::table(), key, v.value())?
            };
            if rec.kind != Kind::Active {
                return Err(SnapshotError::NotActive { key: key.to_string(), kind: rec.kind });
            }
            if t.get(name).map_err(db)?.is_some() {
                return Err(SnapshotError::AlreadyExists(name.to_string()));
            }
            rec.kind = Kind::Committed;
            rec.updated_at = meta::now();
            // A committed snapshot belongs to nobody: it outlives the process that made it.
            rec.owner = None;
            t.remove(key).map_err(db)?;
            t.insert(name, meta::encode(name, &rec)?.as_slice()).map_err(db)?;
            Ok(())
        })
    }

    fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        // The directory is renamed out of the way inside the transaction (a crash leaves an `rm-` directory
        // of this process, which the next startup removes) and deleted after it.
        let doomed = self.meta.write(|tx| {
            let mut t = tx.open_table(Self::table()).map_err(db)?;
            let rec: Record = {
                let v = t.get(key).map_err(db)?.ok_or_else(|| SnapshotError::NotFound(key.to_string()))?;
                meta::decode(Self::table(), key, v.value())?
            };
            for item in t.iter().map_err(db)? {
                let (k, v) = item.map_err(db)?;
                let child: Record = meta::decode(Self::table(), k.value(), v.value())?;
                if child.parent.as_deref() == Some(key) {
                    return Err(SnapshotError::HasChildren(key.to_string()));
                }
            }
            t.remove(key).map_err(db)?;
            self.doom(rec.id)
        })?;
        fsutil::remove_all(&doomed).map_err(|source| SnapshotError::RemoveDir { path: doomed, source })
    }

    fn walk(&self) -> Result<Vec<Info>, SnapshotError> {
        Ok(self.records()?.iter().map(|(k, r)| Self::info(k, r)).collect())
    }

    fn diff_source(&self, key: &str) -> Result<DiffSource, SnapshotError> {
        let rec = self.get(key)?;
        let parents = self.parent_dirs(key, &rec)?;
        Ok(self.backend.diff_source(&self.fs_dir(rec.id), &parents))
    }

    fn set_label(&self, key: &str, label: &str, value: Option<&str>) -> Result<(), SnapshotError> {
        self.update(key, |r| {
            match value {
                Some(v) => r.labels.insert(label.to_string(), v.to_string()),
                None => r.labels.remove(label),
            };
        })
    }

    fn apply_target(&self, key: &str) -> Result<ApplyTarget, SnapshotError> {
        let rec = self.get(key)?;
        if rec.kind != Kind::Active {
            return Err(SnapshotError::NotActive { key: key.to_string(), kind: rec.kind });
        }
        let parents = self.parent_dirs(key, &rec)?;
        Ok(self.backend.apply_target(&self.fs_dir(rec.id), &parents))
    }
}
