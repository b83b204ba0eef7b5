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
