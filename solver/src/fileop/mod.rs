//! File ops on host directories: COPY/ADD (copy actions), mkdir, mkfile, rm and symlink, with BuildKit's
//! rules. The scheduler mounts the snapshots involved and calls [`run_chain`]; this module never touches
//! the snapshotter.
//!
//! Action indices follow BuildKit: an action's `input` names a vertex input below `num_inputs` and an
//! earlier action's result above it. The chain producing an output starts at its base (an input or
//! scratch) and runs in `dest`; copies read their secondary input, and `--chown` by name reads
//! `/etc/passwd` and `/etc/group` of the filesystem it names (the destination itself when that is the
//! chain). Paths are resolved inside their roots ([`fsys`]), never with string joins on the host.

mod actions;
mod copy;
pub mod fsys;
mod mode;
pub mod reuse;
pub mod select;
mod unpack;
mod users;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use llb::file::FileSource;
use llb::{FileActionKind, FileOp, UserOpt};

pub use mode::ModeSet;
pub use reuse::{Donor, DonorRecord, Reuse, Reused, SourceStat};

use crate::context::ignore::PatternError;
use fsys::Tree;
use select::{Filter, View};

/// A directory file actions read from: a mounted snapshot, or a local build context with its filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceDir {
    /// The directory on the host.
    pub path: PathBuf,
    /// Include patterns of a local source (empty: everything).
    pub include: Vec<String>,
    /// Exclude patterns of a local source (.dockerignore).
    pub exclude: Vec<String>,
    /// Every file reads as owned by root (uid and gid 0), whatever its owner on the host: a local
    /// source, as BuildKit's client sends one (`resetUIDAndGID` in client/solve.go), so COPY, ADD and
    /// RUN mounts of the context see root:root and the host's owners never reach an image or a key.
    pub root_owned: bool,
}

impl SourceDir {
    /// A directory read as is, without filters.
    pub fn plain(path: impl Into<PathBuf>) -> SourceDir {
        SourceDir { path: path.into(), include: Vec::new(), exclude: Vec::new(), root_owned: false }
    }

    /// A local source (a build context): filtered, and owned by root.
    pub fn local(path: impl Into<PathBuf>, include: Vec<String>, exclude: Vec<String>) -> SourceDir {
        SourceDir { path: path.into(), include, exclude, root_owned: true }
    }
}

/// The errors of file ops; messages name the Dockerfile-level path.
#[derive(Debug, thiserror::Error)]
pub enum FileOpError {
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("{path:?}: not found (check the path, and that .dockerignore does not exclude it)")]
    NotFound { path: String },
    #[error("no source files were specified: {pattern:?} matched nothing")]
    NoMatch { pattern: String },
    #[error("invalid pattern: {0}")]
    Pattern(#[from] PatternError),
}

/// A [`SourceDir`] opened for reading: [`OpenDir::view`] is what copies and checksums walk.
pub(crate) struct OpenDir {
    pub tree: Tree,
    pub filter: Filter,
    pub root_owned: bool,
}

impl OpenDir {
    pub fn view(&self) -> View<'_> {
        View { tree: &self.tree, filter: &self.filter, root_owned: self.root_owned }
    }
}

impl SourceDir {
    pub(crate) fn open(&self) -> Result<OpenDir, FileOpError> {
        let tree = Tree::open(&self.path).map_err(|source| FileOpError::Io {
            what: format!("open source directory {}", self.path.display()),
            source,
        })?;
        Ok(OpenDir { tree, filter: Filter::new(&self.include, &self.exclude)?, root_owned: self.root_owned })
    }
}

/// The actions producing `output`, base first, and the chain's base.
fn chain(op: &FileOp, num_inputs: usize, output: usize) -> Result<(Vec<usize>, Option<usize>), FileOpError> {
    let last = op
        .actions
        .iter()
        .position(|a| a.output == Some(output))
        .ok_or_else(|| FileOpError::Invalid(format!("file op has no action producing output {output}")))?;
    let mut out = vec![last];
    let mut cur = last;
    loop {
        match FileSource::resolve(op.actions[cur].input, num_inputs) {
            FileSource::Scratch => break,
            FileSource::Input(i) => {
                out.reverse();
                return Ok((out, Some(i)));
            }
            FileSource::Action(j) if j < cur => {
                out.push(j);
                cur = j;
            }
            FileSource::Action(j) => {
                return Err(FileOpError::Invalid(format!(
                    "file action {cur} reads action {j}, which does not come before it"
                )))
            }
        }
    }
    out.reverse();
    Ok((out, None))
}

/// The input the chain of actions producing `output` starts from (`None`: scratch).
pub fn chain_base(op: &FileOp, num_inputs: usize, output: usize) -> Result<Option<usize>, FileOpError> {
    chain(op, num_inputs, output).map(|(_, base)| base)
}

/// The inputs the chain producing `output` reads besides the content of its base: every copy's
/// secondary input (including the base itself when a copy reads it, since `dest` changes as the chain
/// runs), and inputs whose /etc/passwd resolves a `--chown` by name unless that is the base (read from
/// `dest`). Sorted, without duplicates.
pub fn chain_sources(op: &FileOp, num_inputs: usize, output: usize) -> Result<Vec<usize>, FileOpError> {
    let (actions, base) = chain(op, num_inputs, output)?;
    let mut out = Vec::new();
    for &i in &actions {
        let a = &op.actions[i];
        if let FileActionKind::Copy(_) = &a.action {
            match FileSource::resolve(a.secondary_input, num_inputs) {
                FileSource::Input(s) => out.push(s),
                FileSource::Scratch => {}
                FileSource::Action(j) => return Err(copy_from_action(i, j)),
            }
        }
        for u in owners(&a.action) {
            if let UserOpt::ByName { input, .. } = u {
                if let FileSource::Input(s) = FileSource::resolve(*input, num_inputs) {
                    if Some(s) != base {
                        out.push(s);
                    }
                }
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn copy_from_action(i: usize, j: usize) -> FileOpError {
    FileOpError::Unsupported(format!(
        "file action {i} copies from the result of action {j}: copying from an intermediate action result is not supported"
    ))
}

fn owners(a: &FileActionKind) -> Vec<&UserOpt> {
    let o = match a {
        FileActionKind::Copy(c) => c.owner.as_ref(),
        FileActionKind::Mkdir(m) => m.owner.as_ref(),
        FileActionKind::Mkfile(m) => m.owner.as_ref(),
        FileActionKind::Symlink(s) => s.owner.as_ref(),
        FileActionKind::Rm(_) => None,
    };
    o.map(|o| o.user.iter().chain(o.group.iter()).collect()).unwrap_or_default()
}

/// Runs the chain producing `output` into `dest`, which already holds the chain base's content (or is
/// empty for scratch). `inputs[i]` is input `i`'s directory; those [`chain_sources`] names must be `Some`.
///
/// `reuse` serves a chain that is one copy from a local source (the rest run without it; its
/// `active` flag says whether it served): see [`reuse`].
pub fn run_chain(
    op: &FileOp,
    output: usize,
    dest: &Path,
    inputs: &[Option<SourceDir>],
    mut reuse: Option<&mut Reuse>,
) -> Result<(), FileOpError> {
    let num_inputs = inputs.len();
    let (actions, base) = chain(op, num_inputs, output)?;
    let single_local_copy = match actions.as_slice() {
        [only] => match (&op.actions[*only].action, FileSource::resolve(op.actions[*only].secondary_input, num_inputs))
        {
            (FileActionKind::Copy(_), FileSource::Input(s)) => {
                inputs.get(s).and_then(Option::as_ref).is_some_and(|d| d.root_owned)
            }
            _ => false,
        },
        _ => false,
    };
    if !single_local_copy {
        reuse = None;
    }
    if let Some(r) = reuse.as_deref_mut() {
        r.active = true;
    }
    let dest_tree = Tree::open(dest)
        .map_err(|source| FileOpError::Io { what: format!("open destination {}", dest.display()), source })?;
    let input_dir = |i: usize| -> Result<&SourceDir, FileOpError> {
        inputs
            .get(i)
            .and_then(Option::as_ref)
            .ok_or_else(|| FileOpError::Invalid(format!("file op input {i} was not provided (chain_sources names it)")))
    };
    for &ai in &actions {
        let a = &op.actions[ai];
        // A by-name owner is looked up in the named input, or in `dest` when that is the chain itself.
        let tree_for = |input: Option<usize>| -> Result<Tree, FileOpError> {
            match FileSource::resolve(input, num_inputs) {
                FileSource::Input(i) if Some(i) != base => Ok(input_dir(i)?.open()?.tree),
                _ => Tree::open(dest).map_err(|source| FileOpError::Io { what: "open destination".into(), source }),
            }
        };
        match &a.action {
            FileActionKind::Copy(c) => {
                let owner = users::resolve_owner(c.owner.as_ref(), &tree_for)?;
                match FileSource::resolve(a.secondary_input, num_inputs) {
                    FileSource::Input(s) => {
                        copy::run(&dest_tree, &input_dir(s)?.open()?.view(), c, owner, reuse.as_deref_mut())?
                    }
                    FileSource::Scratch => {
                        let empty = EmptyDir::new()?;
                        copy::run(&dest_tree, &SourceDir::plain(empty.path()).open()?.view(), c, owner, None)?;
                    }
                    FileSource::Action(j) => return Err(copy_from_action(ai, j)),
                }
            }
            FileActionKind::Mkdir(m) => {
                actions::mkdir(&dest_tree, m, users::resolve_owner(m.owner.as_ref(), &tree_for)?)?
            }
            FileActionKind::Mkfile(m) => {
                actions::mkfile(&dest_tree, m, users::resolve_owner(m.owner.as_ref(), &tree_for)?)?
            }
            FileActionKind::Rm(r) => actions::rm(&dest_tree, r)?,
            FileActionKind::Symlink(s) => {
                actions::symlink(&dest_tree, s, users::resolve_owner(s.owner.as_ref(), &tree_for)?)?
            }
        }
    }
    Ok(())
}

/// Copies everything `src` shows (filters applied, owners as it shows them, modes, times and xattrs kept)
/// into `dest`: materialises a local context for RUN mounts.
pub fn copy_dir(src: &SourceDir, dest: &Path) -> Result<(), FileOpError> {
    let src = src.open()?;
    let dest_tree = Tree::open(dest)
        .map_err(|source| FileOpError::Io { what: format!("open destination {}", dest.display()), source })?;
    let c = llb::file::Copy {
        src: "/".into(),
        dest: "/".into(),
        dir_copy_contents: true,
        create_dest_path: true,
        ..Default::default()
    };
    copy::run(&dest_tree, &src.view(), &c, None, None)
}

/// An empty directory that a copy from scratch reads, removed on drop.
struct EmptyDir(PathBuf);

impl EmptyDir {
    fn new() -> Result<EmptyDir, FileOpError> {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "rbuild-scratch-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p)
            .map_err(|source| FileOpError::Io { what: format!("create {}", p.display()), source })?;
        Ok(EmptyDir(p))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for EmptyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}
