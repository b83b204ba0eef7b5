//! What the worker's ops share: a guard for temporary snapshots (commits named by cache key, removal
//! when dropped uncommitted), materialised local sources, and paths resolved inside a mounted root.
//! Everything here blocks.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use llb::Digest;
use snapshotter::mount::{Mount, TempMount};
use snapshotter::snapshot::{SnapshotError, Snapshotter};

use super::{State, WorkerRef};
use crate::error::SolveError;
use crate::fileop::{self, SourceDir};

/// Names a step for errors and its results for commits.
pub(crate) struct Step<'a> {
    pub(crate) state: &'a State,
    pub(crate) label: &'a str,
    /// The step's cache key (results are committed as `build-<key>-<output>`).
    pub(crate) key: Digest,
}

impl Step<'_> {
    pub(crate) fn err(&self, message: impl std::fmt::Display) -> SolveError {
        SolveError::Step { step: self.label.to_string(), message: message.to_string() }
    }

    pub(crate) fn snapshotter(&self) -> &Arc<dyn Snapshotter> {
        &self.state.worker.snapshotter
    }

    pub(crate) fn mount_dir(&self) -> Result<PathBuf, SolveError> {
        self.state.mount_dir().map_err(|e| self.err(format!("cannot create the solver's mount directory: {e}")))
    }
}

/// A temporary snapshot (active or view), maybe mounted on a temporary directory. Dropping it unmounts
/// it and removes the snapshot unless it was committed.
pub(crate) struct Snap {
    sn: Arc<dyn Snapshotter>,
    pub(crate) key: String,
    pub(crate) mounts: Vec<Mount>,
    mounted: Option<TempMount>,
    committed: bool,
}

impl Snap {
    /// A writable snapshot on `parent`.
    pub(crate) fn prepare(step: &Step<'_>, parent: Option<&str>, what: &str) -> Result<Snap, SolveError> {
        let sn = step.snapshotter().clone();
        let key = step.state.temp_name(what);
        let mounts = sn.prepare(&key, parent).map_err(|e| step.err(format!("cannot prepare a snapshot: {e}")))?;
        Ok(Snap { sn, key, mounts, mounted: None, committed: false })
    }

    /// A read-only snapshot of `parent`.
    pub(crate) fn view(step: &Step<'_>, parent: Option<&str>, what: &str) -> Result<Snap, SolveError> {
        let sn = step.snapshotter().clone();
        let key = step.state.temp_name(what);
        let mounts = sn.view(&key, parent).map_err(|e| step.err(format!("cannot make a view: {e}")))?;
        Ok(Snap { sn, key, mounts, mounted: None, committed: false })
    }

    /// Mounts the snapshot on a temporary directory and returns that directory.
    pub(crate) fn mount(&mut self, step: &Step<'_>) -> Result<PathBuf, SolveError> {
        if let Some(m) = &self.mounted {
            return Ok(m.path().to_path_buf());
        }
        let m = TempMount::new(&self.mounts, &step.mount_dir()?)
            .map_err(|e| step.err(format!("cannot mount snapshot {}: {e}", self.key)))?;
        let path = m.path().to_path_buf();
        self.mounted = Some(m);
        Ok(path)
    }

    /// Unmounts, reporting failure.
    pub(crate) fn unmount(&mut self, step: &Step<'_>) -> Result<(), SolveError> {
        if let Some(m) = self.mounted.take() {
            m.unmount().map_err(|e| step.err(format!("cannot unmount snapshot {}: {e}", self.key)))?;
        }
        Ok(())
    }

    /// Unmounts and commits under a name derived from the step's cache key, so equal work shares one
    /// snapshot; returns the name.
    pub(crate) fn commit(mut self, step: &Step<'_>, suffix: &str) -> Result<String, SolveError> {
        self.unmount(step)?;
        let name = format!("build-{}-{suffix}", step.key.hex());
        let name = match self.sn.commit(&name, &self.key) {
            Ok(()) => name,
            Err(SnapshotError::AlreadyExists(_)) => {
                // The same key ran before (no-cache, or a link that was lost): keep both results.
                let unique = format!("{name}-{}", step.state.temp_name("again"));
                self.sn.commit(&unique, &self.key).map_err(|e| step.err(format!("cannot commit: {e}")))?;
                unique
            }
            Err(e) => return Err(step.err(format!("cannot commit snapshot {}: {e}", self.key))),
        };
        self.committed = true;
        let _ = snapshotter::gc::touch(&*self.sn, &name);
        Ok(name)
    }

    /// Commits under exactly `name`, or, when another step committed that name first, keeps theirs (the
    /// same content by construction) and removes this one.
    pub(crate) fn commit_as(mut self, step: &Step<'_>, name: &str) -> Result<String, SolveError> {
        self.unmount(step)?;
        match self.sn.commit(name, &self.key) {
            Ok(()) => self.committed = true,
            Err(SnapshotError::AlreadyExists(_)) => {}
            Err(e) => return Err(step.err(format!("cannot commit snapshot {name}: {e}"))),
        }
        let _ = snapshotter::gc::touch(&*self.sn, name);
        Ok(name.to_string())
    }
}

impl Drop for Snap {
    fn drop(&mut self) {
        if let Some(m) = self.mounted.take() {
            // Drop cannot report; a leftover mount is detached at the next startup.
            let _ = m.unmount();
        }
        if !self.committed {
            let _ = self.sn.remove(&self.key);
        }
    }
}

/// The committed snapshot of an input, materialising a local source when a step needs it as a
/// filesystem (a RUN mount, a file op based on it, a merge, the root of a build).
pub(crate) fn snapshot_of(step: &Step<'_>, r: &WorkerRef) -> Result<Option<String>, SolveError> {
    match r {
        WorkerRef::Snapshot(s) => Ok(s.clone()),
        WorkerRef::Local(sd) => materialize(step, sd).map(Some),
        WorkerRef::Lazy(_) => Err(SolveError::Internal(format!("{}: a lazy input reached a blocking op", step.label))),
    }
}

/// Copies a filtered local directory into a committed snapshot named by its content checksum.
pub(crate) fn materialize(step: &Step<'_>, sd: &SourceDir) -> Result<String, SolveError> {
    let sum =
        step.state.checksums.tree(sd, "/").map_err(|e| step.err(format!("cannot read {}: {e}", sd.path.display())))?;
    let name = format!("local-{}", sum.hex());
    let sn = step.snapshotter();
    if sn.stat(&name).is_ok() {
        let _ = snapshotter::gc::touch(&**sn, &name);
        return Ok(name);
    }
    let mut snap = Snap::prepare(step, None, "local")?;
    let dest = snap.mount(step)?;
    fileop::copy_dir(sd, &dest).map_err(|e| step.err(format!("cannot copy {}: {e}", sd.path.display())))?;
    snap.commit_as(step, &name)
}

/// `selector` resolved inside `root` the way a chroot would: `..` stops at the root and symlinks are
/// followed with absolute targets taken relative to the root, so the result never leaves `root`.
pub(crate) fn scoped(root: &Path, selector: &str) -> PathBuf {
    let mut parts: Vec<OsString> = Vec::new();
    let mut pending: VecDeque<OsString> = comps(Path::new(selector));
    let mut links = 0;
    while let Some(c) = pending.pop_front() {
        if c == ".." {
            parts.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&parts);
        candidate.push(&c);
        match std::fs::symlink_metadata(&candidate) {
            Ok(md) if md.file_type().is_symlink() && links < 40 => {
                links += 1;
                let Ok(target) = std::fs::read_link(&candidate) else {
                    parts.push(c);
                    continue;
                };
                if target.is_absolute() {
                    parts.clear();
                }
                for t in comps(&target).into_iter().rev() {
                    pending.push_front(t);
                }
            }
            _ => parts.push(c),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&parts);
    out
}

fn comps(p: &Path) -> VecDeque<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_paths_stay_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::os::unix::fs::symlink("/a", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../..", root.join("a/up")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert_eq!(scoped(root, "/a/b"), root.join("a/b"));
        assert_eq!(scoped(root, "../../a"), root.join("a"));
        assert_eq!(scoped(root, "abs/b"), root.join("a/b"));
        assert_eq!(scoped(root, "a/up/etc"), root.join("etc"));
        assert_eq!(scoped(root, ""), root.to_path_buf());
        assert!(scoped(root, "loop").starts_with(root));
    }
}
