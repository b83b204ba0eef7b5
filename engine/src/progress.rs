//! What a build tells its caller while it runs.

use frontend::diag::Diagnostic;

/// One progress event of a build.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Progress of one step (a vertex of the build definition), as the solver reports it.
    Step(solver::Event),
    /// A warning about the Dockerfile (e.g. a build arg nothing consumed), with its line when it has one.
    Warning(Diagnostic),
    /// What an exporter did.
    Export(ExportEvent),
    /// A cache import or export (`--cache-from`, `--cache-to`).
    Cache(CacheEvent),
    /// Why a step ran (sent after the steps, one per step that ran).
    Miss(StepMiss),
}

/// Why a step ran: the first ingredient of its cache key that differs from the last build of the same
/// Dockerfile target on this state root (`src/main.rs changed`, `build arg VERSION changed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepMiss {
    pub vertex: llb::Digest,
    /// The step's name (`[3/7] COPY src/ /app`).
    pub name: String,
    pub reason: String,
    /// There was no earlier build to compare with (every step of a first build says so).
    pub first_build: bool,
}

/// What a cache import or export did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheEvent {
    /// Reading a cache's manifest and record.
    Importing { from: String },
    /// The cache was read: it holds this many results.
    Imported { from: String, results: usize },
    /// The cache could not be read; the build goes on without it.
    ImportFailed { from: String, error: String },
    /// An entry of the cache could not be used (a blob gone or corrupted); its step runs.
    Miss { from: String, key: String, error: String },
    /// Layer blobs of the cache were fetched because a step or an output needed them (blobs already held
    /// are not counted).
    Fetched { from: String, blobs: usize, bytes: u64 },
    /// Writing a cache.
    Exporting { to: String },
    /// The cache was written: its results and layers, and the blobs and bytes that had to be sent.
    Exported { to: String, results: usize, layers: usize, new: usize, bytes: u64 },
    /// The export failed and `ignore-error=true` let the build succeed.
    ExportFailed { to: String, error: String },
}

/// What an exporter did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportEvent {
    /// The image was named in the local store.
    Named { reference: String },
    /// The image was pushed: how many blobs went up, were mounted from another repository, or were there.
    Pushed { reference: String, uploaded: usize, mounted: usize, existed: usize },
}

/// Where a build's events go; a closed receiver is ignored.
pub type EventSink = tokio::sync::mpsc::UnboundedSender<Event>;
