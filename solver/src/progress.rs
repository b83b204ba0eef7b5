//! Progress events (what the solver tells a renderer about each vertex, as it happens) and step records
//! (what a solve did with each vertex, and why, once it is over).

use std::time::{Duration, SystemTime};

use llb::Digest;
use serde::{Serialize, Serializer};

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
    /// The vertex's result came from the cache: this machine's (`source` is `None`) or an imported one.
    Cached { source: Option<String> },
    /// A line of a RUN step's output (without the newline).
    Log { stream: LogStream, line: Vec<u8> },
    /// Progress of a sub-task, e.g. bytes of a layer pulled.
    Status { id: String, current: u64, total: Option<u64> },
    /// The vertex finished.
    Completed { duration: Duration },
    /// The vertex failed with this message.
    Failed { error: String },
    /// The vertex was stopped because the build was cancelled.
    Canceled,
}

/// What a solve did with one vertex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// This solve ran it.
    Executed,
    /// Its result came from the cache (found by this solve or by a concurrent one).
    Cached,
    /// A concurrent solve ran it for this one.
    Shared,
    /// Its result was known before execution (a local context, a download needed for keying).
    Ready,
    Failed,
    Canceled,
}

/// What went into a step's cache key, so a user can see why a step missed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KeyIngredients {
    /// The op's own identity (its definition with non-identity fields blanked); `None` when a content
    /// key replaced it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<Digest>,
    /// The keys of its inputs, in order, with the output index taken from each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<(Digest, usize)>,
    /// Content checksums and resolved references, `(label, value)`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<(String, String)>,
    /// A key that stands for the result's content (an http checksum, a git commit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_key: Option<Digest>,
}

/// One step of a finished solve: its name, key, what happened and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepRecord {
    pub vertex: Digest,
    pub name: String,
    pub key: Digest,
    pub status: StepStatus,
    #[serde(serialize_with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub started: Option<SystemTime>,
    #[serde(serialize_with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub completed: Option<SystemTime>,
    pub ingredients: KeyIngredients,
    /// For a step whose result came from an imported cache: that cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `2026-12-02T10:11:12.345Z`.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let base = llb::image::rfc3339(d.as_secs() as i64);
    match base.strip_suffix('Z') {
        Some(b) => format!("{b}.{:03}Z", d.subsec_millis()),
        None => base,
    }
}

fn rfc3339_opt<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&rfc3339_millis(*t)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_with_millis() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339_millis(t), "2023-11-14T22:13:20.123Z");
    }
}
