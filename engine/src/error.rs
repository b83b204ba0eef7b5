//! What a build can fail with. A caller renders these: a Dockerfile diagnostic against the Dockerfile's
//! lines, a failed RUN with its output, the rest as one line that says what to do.

use frontend::diag::Diagnostic;
use registry::RegistryError;
use solver::SolveError;
use std::path::PathBuf;

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The request itself is inconsistent (e.g. `--push` without a name).
    #[error("{0}")]
    Request(String),
    /// The Dockerfile does not parse or convert; the diagnostic has the line.
    #[error("{filename}: {}", .diagnostic.message)]
    Dockerfile { filename: String, diagnostic: Diagnostic },
    /// A step failed (the error names it).
    #[error("failed to solve: {0}")]
    Solve(#[source] SolveError),
    /// An output could not be written.
    #[error("{output}: {source}")]
    Export {
        /// What was being exported, e.g. `exporting to oci image format`.
        output: String,
        #[source]
        source: ExportError,
    },
    /// The build was cancelled before it finished; nothing half-written was kept.
    #[error("the build was cancelled")]
    Cancelled,
    /// An engine task ended abnormally (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why an exporter failed: what it was doing, and the error of the part that failed (its message is part
/// of this one's, so it is not repeated as a source).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{what}: {cause}")]
    Registry { what: String, cause: Box<RegistryError> },
    #[error("{what}: {cause}")]
    Io { what: String, cause: std::io::Error },
    #[error("{what}: {cause}")]
    Snapshot { what: String, cause: Box<snapshotter::export::ExportError> },
    #[error("{0}")]
    Other(String),
}

impl ExportError {
    pub(crate) fn registry(what: impl Into<String>) -> impl FnOnce(RegistryError) -> ExportError {
        let what = what.into();
        move |cause| ExportError::Registry { what, cause: Box::new(cause) }
    }

    pub(crate) fn snapshot(what: impl Into<String>) -> impl FnOnce(snapshotter::export::ExportError) -> ExportError {
        let what = what.into();
        move |cause| ExportError::Snapshot { what, cause: Box::new(cause) }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ExportError {
        let what = what.into();
        move |cause| ExportError::Io { what, cause }
    }
}

impl From<SolveError> for BuildError {
    fn from(e: SolveError) -> BuildError {
        match e {
            SolveError::Cancelled => BuildError::Cancelled,
            e => BuildError::Solve(e),
        }
    }
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("opening state root {path}: {source}")]
    Store { path: PathBuf, source: snapshotter::store::StoreError },
    #[error("--oci-runtime {runtime}: {message}")]
    Runtime { runtime: String, message: String },
    #[error(transparent)]
    Solver(#[from] SolveError),
}
