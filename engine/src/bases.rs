//! Base images for the frontend (their configs) and the solver (their snapshots), from the registry client
//! and the local image store.

use std::sync::Arc;

use frontend::convert::{ImageResolver, ResolveError, ResolvedImage};
use llb::Platform;
use registry::{Client, ImageStore};
use snapshotter::snapshot::Snapshotter;
use solver::op::BoxFuture;
use solver::{ImageError, ImageProvider};

/// The frontend's view of base images. Conversion is synchronous (the frontend does no I/O), so it runs on
/// a blocking thread and each lookup blocks that thread on the runtime.
pub(crate) struct RegistryResolver {
    pub(crate) handle: tokio::runtime::Handle,
    pub(crate) client: Arc<Client>,
    pub(crate) store: ImageStore,
    pub(crate) pull: bool,
}

impl ImageResolver for RegistryResolver {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<Option<ResolvedImage>, ResolveError> {
        let fut = registry::unpack::resolve_config(&self.client, &self.store, reference, platform, self.pull);
        let (pinned, config) = self.handle.block_on(fut).map_err(|e| ResolveError(Box::new(e)))?;
        Ok(Some(ResolvedImage { reference: pinned, config }))
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
