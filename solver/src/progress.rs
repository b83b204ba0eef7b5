//! Progress events: what the solver tells a renderer about each vertex.

use std::time::{Duration, SystemTime};

use llb::Digest;

/// Where events go; a closed receiver is ignored.
pub type ProgressSink = tokio::sync::mpsc::UnboundedSender<Event>;

/// One thing that happened to one vertex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub vertex: Digest,
    pub time: SystemTime,
    pub kind: EventKind,
}

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The vertex started (or was found in the cache right away); `name` is its description
    /// (`[build 2/4] RUN make`) or a summary of the op.
    Started { name: String },
    /// The vertex's result came from the cache.
    Cached,
    /// A line of a RUN step's output (without the newline).
    Log { stream: LogStream, line: Vec<u8> },
    /// Progress of a sub-task, e.g. bytes of a layer pulled.
    Status { id: String, current: u64, total: Option<u64> },
    /// The vertex finished.
    Completed { duration: Duration },
    /// The vertex failed with this message.
    Failed { error: String },
}
