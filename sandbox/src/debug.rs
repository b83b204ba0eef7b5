//! `rbuild debug run`: one command on a throwaway overlay over a rootfs directory, for debugging steps
//! and for end-to-end tests. The changes are discarded, or kept as an upper directory when asked.

use std::io;
use std::path::{Path, PathBuf};

use snapshotter::mount::Mount;

use crate::executor::{Cancel, ExecError, Executor, OutputSink, RunOutcome};
use crate::process::ProcessSpec;

#[derive(Debug, thiserror::Error)]
pub enum DebugRunError {
    #[error("rootfs {0} is not a directory; pass an unpacked root filesystem")]
    NotADirectory(PathBuf),
    #[error("--keep {0} exists and is not empty; pass a new or empty directory")]
    KeepNotEmpty(PathBuf),
    #[error("cannot prepare the overlay in {dir}: {source}")]
    Scratch { dir: PathBuf, source: io::Error },
    #[error(transparent)]
    Exec(#[from] ExecError),
}

/// One debug run.
#[derive(Debug, Clone)]
pub struct DebugRun {
    /// The read-only lower directory.
    pub rootfs: PathBuf,
    /// Keep the upper directory here instead of discarding it.
    pub keep: Option<PathBuf>,
    pub process: ProcessSpec,
}

/// The overlay's upper and work directories; the temporary ones vanish on drop.
struct Scratch {
    upper: PathBuf,
    work: PathBuf,
    _temps: Vec<tempfile::TempDir>,
}

fn scratch(keep: Option<&Path>, state_dir: &Path, in_run: Option<PathBuf>) -> Result<Scratch, DebugRunError> {
    let err = |dir: &Path| {
        let dir = dir.to_path_buf();
        move |source| DebugRunError::Scratch { dir, source }
    };
    match (keep, in_run) {
        (Some(upper), _) => {
            if upper.exists() && std::fs::read_dir(upper).map_err(err(upper))?.next().is_some() {
                return Err(DebugRunError::KeepNotEmpty(upper.to_path_buf()));
            }
            std::fs::create_dir_all(upper).map_err(err(upper))?;
            let upper = upper.canonicalize().map_err(err(upper))?;
            // overlayfs needs the work directory on the upper's filesystem.
            let parent = upper.parent().unwrap_or(Path::new("/")).to_path_buf();
            let work = tempfile::Builder::new().prefix(".rbuild-work-").tempdir_in(&parent).map_err(err(&parent))?;
            Ok(Scratch { upper, work: work.path().to_path_buf(), _temps: vec![work] })
        }
        // The executor makes them in memory for the run: nothing to make or remove on the host.
        (None, Some(dir)) => Ok(Scratch { upper: dir.join("upper"), work: dir.join("work"), _temps: Vec::new() }),
        (None, None) => {
            std::fs::create_dir_all(state_dir).map_err(err(state_dir))?;
            // Two directories, no parent of their own: each one made and removed costs on a busy filesystem.
            let temp = |prefix| tempfile::Builder::new().prefix(prefix).tempdir_in(state_dir).map_err(err(state_dir));
            let (upper, work) = (temp("debug-upper-")?, temp("debug-work-")?);
            Ok(Scratch {
                upper: upper.path().to_path_buf(),
                work: work.path().to_path_buf(),
                _temps: vec![work, upper],
            })
        }
    }
}

/// Runs `req` with `executor`; scratch directories go under `state_dir`.
pub fn debug_run(
    executor: &dyn Executor,
    req: &DebugRun,
    state_dir: &Path,
    output: &dyn OutputSink,
    cancel: &Cancel,
) -> Result<RunOutcome, DebugRunError> {
    if !req.rootfs.is_dir() {
        return Err(DebugRunError::NotADirectory(req.rootfs.clone()));
    }
    let lower =
        req.rootfs.canonicalize().map_err(|source| DebugRunError::Scratch { dir: req.rootfs.clone(), source })?;
    let s = scratch(req.keep.as_deref(), state_dir, executor.throwaway_overlay_dir())?;
    let mounts = [Mount::overlay(&lower, &s.upper, &s.work)];
    Ok(executor.run(&mounts, &req.process, output, cancel)?)
}
