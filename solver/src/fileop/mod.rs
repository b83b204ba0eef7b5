//! File ops on host directories: COPY/ADD (copy actions), mkdir, mkfile, rm and symlink, with BuildKit's
//! rules. The scheduler mounts the snapshots involved and calls [`run_chain`]; this module never touches
//! the snapshotter.
//!
//! SCAFFOLDING: the signatures below are the seam the scheduler codes against; the bodies are being
//! written (issue 6).

use std::path::{Path, PathBuf};

use llb::FileOp;

/// A directory file actions read from: a mounted snapshot, or a local build context with its filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceDir {
    pub path: PathBuf,
    /// Include patterns of a local source (empty: everything).
    pub include: Vec<String>,
    /// Exclude patterns of a local source (.dockerignore).
    pub exclude: Vec<String>,
}

impl SourceDir {
    /// A directory read as is, without filters.
    pub fn plain(path: impl Into<PathBuf>) -> SourceDir {
        SourceDir { path: path.into(), include: Vec::new(), exclude: Vec::new() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FileOpError {
    #[error("{0}")]
    Unsupported(String),
}

/// The input the chain of actions producing `output` starts from (`None`: scratch).
pub fn chain_base(op: &FileOp, num_inputs: usize, output: usize) -> Result<Option<usize>, FileOpError> {
    let _ = (op, num_inputs, output);
    Err(FileOpError::Unsupported("file ops are not wired yet".into()))
}

/// The inputs the chain producing `output` reads (copy sources, and inputs whose /etc/passwd resolves a
/// `--chown` by name), other than its base.
pub fn chain_sources(op: &FileOp, num_inputs: usize, output: usize) -> Result<Vec<usize>, FileOpError> {
    let _ = (op, num_inputs, output);
    Err(FileOpError::Unsupported("file ops are not wired yet".into()))
}

/// Runs the chain producing `output` into `dest`, which already holds the chain base's content (or is
/// empty for scratch). `inputs[i]` is input `i`'s directory; those [`chain_sources`] names must be `Some`.
pub fn run_chain(op: &FileOp, output: usize, dest: &Path, inputs: &[Option<SourceDir>]) -> Result<(), FileOpError> {
    let _ = (op, output, dest, inputs);
    Err(FileOpError::Unsupported("file ops are not wired yet".into()))
}

/// Copies everything `src` shows (filters applied, owners and modes kept) into `dest`: materialises a
/// local context for RUN mounts.
pub fn copy_dir(src: &SourceDir, dest: &Path) -> Result<(), FileOpError> {
    let _ = (src, dest);
    Err(FileOpError::Unsupported("file ops are not wired yet".into()))
}
