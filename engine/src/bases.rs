//! Base images for the frontend (their configs) and the solver (their snapshots), from the registry client
//! and the local image store.

use std::sync::Arc;

use frontend::convert::{ImageResolver, ResolveError, ResolvedImage};
use frontend::diag::Diagnostic;
use llb::Platform;
use registry::{Client, ImageStore};
use snapshotter::snapshot::Snapshotter;
use solver::op::BoxFuture;
use solver::{ImageError, ImageProvider};

use crate::progress::{Event, EventSink};

/// The frontend's view of base images. Conversion is synchronous (the frontend does no I/O), so it runs on
/// a blocking thread and each lookup blocks that thread on the runtime.
pub(crate) struct RegistryResolver {
    pub(crate) handle: tokio::runtime::Handle,
    pub(crate) client: Arc<Client>,
    pub(crate) store: ImageStore,
    pub(crate) pull: bool,
    /// Where a base image taken from the store while its registry is unreachable is reported.
    pub(crate) events: Option<EventSink>,
}

impl ImageResolver for RegistryResolver {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<Option<ResolvedImage>, ResolveError> {
        let fut = registry::unpack::resolve_base(&self.client, &self.store, reference, platform, self.pull);
        let base = self.handle.block_on(fut).map_err(|e| ResolveError(Box::new(e)))?;
        if let (Some(offline), Some(events)) = (&base.offline, &self.events) {
            let warning = format!(
                "the registry of {reference} cannot be reached ({}); using {} as it last resolved, {}",
                offline.error,
                base.pinned,
                ago(offline.resolved_at)
            );
            let _ = events.send(Event::Warning(Diagnostic::new(warning)));
        }
        Ok(Some(ResolvedImage { reference: base.pinned, config: base.config }))
    }
}

/// `3 hours ago` for a time in seconds since the epoch.
fn ago(at: u64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(at);
    let s = now.saturating_sub(at);
    match s {
        0..60 => "just now".to_string(),
        60..7200 => format!("{} minutes ago", s / 60),
        7200..172800 => format!("{} hours ago", s / 3600),
        _ => format!("{} days ago", s / 86400),
    }
}

/// The solver's image source: pulls what is missing (async), then unpacks on the blocking pool.
pub(crate) struct RegistryImages {
    pub(crate) client: Arc<Client>,
    pub(crate) store: ImageStore,
    pub(crate) snapshotter: Arc<dyn Snapshotter>,
}

impl ImageProvider for RegistryImages {
    fn unpack<'a>(
        &'a self,
        reference: &'a str,
        platform: &'a Platform,
        pull: bool,
        status: &'a (dyn Fn(u64, Option<u64>) + Send + Sync),
    ) -> BoxFuture<'a, Result<Option<String>, ImageError>> {
        Box::pin(async move {
            let sn = &*self.snapshotter;
            let pulled = registry::unpack::pull_image(&self.client, &self.store, sn, reference, platform, pull, status)
                .await
                .map_err(|e| ImageError(Box::new(e)))?;
            let (store, sn) = (self.store.clone(), self.snapshotter.clone());
            tokio::task::spawn_blocking(move || registry::unpack::unpack_pulled(&store, &*sn, &pulled))
                .await
                .map_err(|e| ImageError(format!("unpacking {reference} failed: {e}").into()))?
                .map_err(|e| ImageError(Box::new(e)))
        })
    }
}
