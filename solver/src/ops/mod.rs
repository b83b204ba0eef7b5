//! The op implementations (source, exec, file, merge) and what they share: snapshot guards, commits
//! named by cache key, materialised local sources, and paths resolved inside a mounted root.
//!
//! Everything here blocks; the scheduler calls [`execute`] on tokio's blocking pool.

pub(crate) mod exec;
pub(crate) mod file;
pub(crate) mod git;
pub(crate) mod http;
pub(crate) mod merge;
pub(crate) mod source;

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt::Display;
use std::path::{Component, Path, PathBuf};

use llb::{Digest, Op, SourceOp};
use snapshotter::mount::{Mount, TempMount};
use snapshotter::snapshot::{SnapshotError, Snapshotter};

use crate::error::SolveError;
use crate::fileop::{self, SourceDir};
use crate::scheduler::{Ref, Run};

/// The vertex being executed, with what its ops need to report errors and name results.
pub(crate) struct Step<'a> {
    pub(crate) run: &'a Run,
    pub(crate) digest: Digest,
    pub(crate) key: Digest,
    pub(crate) label: String,
}

impl<'a> Step<'a> {
    pub(crate) fn err(&self, message: impl Display) -> SolveError {
        SolveError::Step { step: self.label.clone(), message: message.to_string() }
    }

    pub(crate) fn snapshotter(&self) -> &'a dyn Snapshotter {
        &*self.run.inner.worker.snapshotter
    }

    /// Where temporary mounts go (`state_dir/mnt`).
    pub(crate) fn mount_dir(&self) -> Result<PathBuf, SolveError> {
        let dir = self.run.inner.worker.state_dir.join("mnt");
        std::fs::create_dir_all(&dir)
            .map_err(|e| self.err(format!("cannot create the solver's mount directory {}: {e}", dir.display())))?;
        Ok(dir)
    }
}

/// Runs vertex `digest` whose inputs are `inputs` (the selected output of each input, in order).
pub(crate) fn execute(run: &Run, digest: Digest, key: Digest, inputs: Vec<Ref>) -> Result<Vec<Ref>, SolveError> {
    let step = Step { run, digest, key, label: run.label(&digest) };
    match &run.vertex(&digest).op {
        Op::Source(SourceOp::Image { .. }) => source::image(&step),
        Op::Source(SourceOp::Local { .. }) => {
            Err(SolveError::Internal(format!("local source {digest} reached execution")))
        }
        Op::Source(SourceOp::Http { .. }) => http::run(&step),
        Op::Source(SourceOp::Git { .. }) => git::run(&step),
        Op::Exec(e) => exec::run(&step, e, &inputs),
        Op::File(f) => file::run(&step, f, &inputs),
        Op::Merge(_) => merge::run(&step, &inputs),
        Op::Diff(_) => {
            Err(SolveError::Unsupported { step: step.label.clone(), what: "a diff op (BuildKit DiffOp)".into() })
        }
    }
}

/// A remote source resolved before keying: its cache key and, when resolving fetched it, its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolvedSource {
    /// The vertex's cache key (it replaces the definition key).
    pub(crate) key: Digest,
    /// The committed result, when resolution already produced it.
    pub(crate) snapshot: Option<String>,
    /// The commit a git reference resolved to.
    pub(crate) commit: Option<String>,
}

/// Whether source `op` must be resolved (network) before it can be keyed: http without a checksum
/// (keyed by what the URL serves now) and git (keyed by the commit a reference names now).
pub(crate) fn needs_resolving(op: &Op) -> bool {
    match op {
        Op::Source(SourceOp::Http { checksum, .. }) => checksum.is_none(),
        Op::Source(SourceOp::Git { .. }) => true,
        _ => false,
    }
}

/// Resolves remote source vertex `d` (see [`needs_resolving`]). Blocking.
pub(crate) fn resolve_source(run: &Run, d: Digest) -> Result<ResolvedSource, SolveError> {
    match &run.vertex(&d).op {
        Op::Source(SourceOp::Http { .. }) => http::resolve(run, d),
        Op::Source(SourceOp::Git { .. }) => git::resolve(run, d),
        _ => Err(SolveError::Internal(format!("{d} is not a remote source"))),
    }
}

/// The cache key of a source op that is keyed by content rather than by its definition: http with a
/// checksum (the checksum), or a resolved remote source.
pub(crate) fn source_key(op: &Op, resolved: Option<&ResolvedSource>) -> Option<Digest> {
    if let Some(r) = resolved {
        return Some(r.key);
    }
    http::Spec::of(op).and_then(|spec| http::checksum_key(&spec))
}

/// A temporary snapshot (active or view), maybe mounted on a temporary directory. Dropping it unmounts
/// it and removes the snapshot unless it was committed.
pub(crate) struct Snap<'a> {
    sn: &'a dyn Snapshotter,
    pub(crate) key: String,
    pub(crate) mounts: Vec<Mount>,
    mounted: Option<TempMount>,
    committed: bool,
}

impl<'a> Snap<'a> {
    /// A writable snapshot on `parent`.
    pub(crate) fn prepare(step: &Step<'a>, parent: Option<&str>, what: &str) -> Result<Snap<'a>, SolveError> {
        let sn = step.snapshotter();
        let key = step.run.inner.temp_name(what);
        let mounts = sn.prepare(&key, parent).map_err(|e| step.err(format!("cannot prepare a snapshot: {e}")))?;
        Ok(Snap { sn, key, mounts, mounted: None, committed: false })
    }

    /// A read-only snapshot of `parent`.
    pub(crate) fn view(step: &Step<'a>, parent: Option<&str>, what: &str) -> Result<Snap<'a>, SolveError> {
        let sn = step.snapshotter();
        let key = step.run.inner.temp_name(what);
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

    /// Unmounts (reporting failure) and commits under a name derived from the step's cache key, so equal
    /// work shares one snapshot; returns the name.
    pub(crate) fn commit(mut self, step: &Step<'_>, suffix: &str) -> Result<String, SolveError> {
        if let Some(m) = self.mounted.take() {
            m.unmount().map_err(|e| step.err(format!("cannot unmount snapshot {}: {e}", self.key)))?;
        }
        let name = format!("build-{}-{suffix}", step.key.hex());
        let name = match self.sn.commit(&name, &self.key) {
            Ok(()) => name,
            Err(SnapshotError::AlreadyExists(_)) => {
                // The same key ran before (no-cache, or a link that was lost): keep both results.
                let unique = format!("{name}-{}", step.run.inner.temp_name("again"));
                self.sn.commit(&unique, &self.key).map_err(|e| step.err(format!("cannot commit: {e}")))?;
                unique
            }
            Err(e) => return Err(step.err(format!("cannot commit snapshot {}: {e}", self.key))),
        };
        self.committed = true;
        let _ = snapshotter::gc::touch(self.sn, &name);
        Ok(name)
    }
}

impl Drop for Snap<'_> {
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
/// filesystem (a RUN mount, a file op based on it, a merge).
pub(crate) fn snapshot_of(step: &Step<'_>, r: &Ref) -> Result<Option<String>, SolveError> {
    match r {
        Ref::Snapshot(s) => Ok(s.clone()),
        Ref::Local(sd) => materialize(step, sd).map(Some),
    }
}

/// Copies a filtered local directory into a committed snapshot named by its content checksum.
fn materialize(step: &Step<'_>, sd: &SourceDir) -> Result<String, SolveError> {
    let sum = step
        .run
        .inner
        .checksums
        .tree(sd, "/")
        .map_err(|e| step.err(format!("cannot read {}: {e}", sd.path.display())))?;
    let name = format!("local-{}", sum.hex());
    let sn = step.snapshotter();
    if sn.stat(&name).is_ok() {
        let _ = snapshotter::gc::touch(sn, &name);
        return Ok(name);
    }
    let mut snap = Snap::prepare(step, None, "local")?;
    let dest = snap.mount(step)?;
    fileop::copy_dir(sd, &dest).map_err(|e| step.err(format!("cannot copy {}: {e}", sd.path.display())))?;
    if let Some(m) = snap.mounted.take() {
        m.unmount().map_err(|e| step.err(format!("cannot unmount {}: {e}", snap.key)))?;
    }
    match sn.commit(&name, &snap.key) {
        Ok(()) => snap.committed = true,
        // Another build materialised the same content first; use theirs.
        Err(SnapshotError::AlreadyExists(_)) => {}
        Err(e) => return Err(step.err(format!("cannot commit the local source: {e}"))),
    }
    let _ = snapshotter::gc::touch(sn, &name);
    Ok(name)
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
