//! Per-blob progress events for the renderer.

use std::sync::Arc;

/// What is happening to a blob or manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressKind {
    /// Bytes are being fetched; `current` of `total` done.
    Downloading,
    /// Bytes are being sent.
    Uploading,
    /// Already present (locally for a pull, remotely for a push): nothing transferred.
    Exists,
    /// Mounted from another repository of the same registry: nothing transferred.
    Mounted,
    /// Finished and verified.
    Done,
}

/// One event: `id` is the blob digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub id: String,
    pub kind: ProgressKind,
    pub current: u64,
    pub total: u64,
}

/// The callback that receives events; called from transfer tasks, so it must be cheap.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;
