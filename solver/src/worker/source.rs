//! Image and local sources. An image is made available by the worker's [`ImageProvider`](super::ImageProvider)
//! (pull what is missing, unpack each layer once); its result is the image's top snapshot. A local source
//! is ready before keying: the session's [`LocalSource`](crate::session::LocalSource) gives a directory
//! that the steps reading it use in place, so it never executes.

use llb::{Op as LlbOp, Platform, ResolveMode, SourceOp};

use super::{blocking, Base, WorkerRef};
use crate::error::SolveError;
use crate::fileop::SourceDir;
use crate::op::{BoxFuture, CacheMap, Op, OpContext, Prepared};

pub(crate) struct ImageOp(pub(crate) Base);

impl ImageOp {
    fn fields(&self) -> Result<(&str, Platform, Option<u32>, bool), SolveError> {
        let v = &self.0.vertex;
        let LlbOp::Source(SourceOp::Image { reference, platform, layer_limit, resolve_mode }) = &v.op else {
            return Err(SolveError::Internal("not an image source".into()));
        };
        let platform = platform.clone().or_else(|| v.platform.clone()).unwrap_or_else(Platform::host);
        let pull = self.0.session.pull || *resolve_mode == ResolveMode::Pull;
        Ok((reference, platform, *layer_limit, pull))
    }

    /// Unpacks the image (re-resolving its tag when `pull`) and returns the snapshot the op stands for.
    async fn unpack(&self, ctx: &OpContext, pull: bool) -> Result<Option<String>, SolveError> {
        let (reference, platform, limit, _) = self.fields()?;
        let id = format!("pulling {reference}");
        let status = |current: u64, total: Option<u64>| ctx.status(&id, current, total);
        let image_err = |message: String| SolveError::Image {
            step: ctx.label().to_string(),
            reference: reference.to_string(),
            message,
        };
        let top = self
            .0
            .state
            .worker
            .images
            .unpack(reference, &platform, pull, &status)
            .await
            .map_err(|e| image_err(error_chain(&e)))?;
        let Some(limit) = limit else { return Ok(top) };
        // `image.layerlimit`: the snapshot of the first `limit` layers.
        let (state, step, reference) = (self.0.state.clone(), ctx.label().to_string(), reference.to_string());
        blocking(move || {
            let image_err =
                |message: String| SolveError::Image { step: step.clone(), reference: reference.clone(), message };
            let sn = &*state.worker.snapshotter;
            let mut chain = Vec::new();
            let mut cur = top;
            while let Some(name) = cur {
                let info = sn.stat(&name).map_err(|e| image_err(e.to_string()))?;
                chain.push(name);
                cur = info.parent;
            }
            chain.reverse();
            Ok(match limit as usize {
                0 => None,
                n => chain.get(n.min(chain.len()).wrapping_sub(1)).cloned(),
            })
        })
        .await
    }
}

/// `error: cause: cause`, as the CLI prints anyhow chains.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

impl Op<WorkerRef> for ImageOp {
    /// `--pull` of a tag: what the tag points at now is part of the key, so it is resolved (and unpacked)
    /// before keying.
    fn prepare<'a>(&'a self, ctx: &'a OpContext) -> BoxFuture<'a, Result<Prepared<WorkerRef>, SolveError>> {
        Box::pin(async move {
            let (reference, _, _, pull) = self.fields()?;
            if !pull || reference.contains('@') {
                return Ok(Prepared::default());
            }
            let top = self.unpack(ctx, true).await?;
            Ok(Prepared {
                content_key: None,
                content: vec![("resolved".into(), top.clone().unwrap_or_default())],
                ready: Some(vec![WorkerRef::Snapshot(top)]),
            })
        })
    }

    fn cache_map(&self, ctx: &OpContext, inputs: &[Option<&WorkerRef>]) -> Result<CacheMap, SolveError> {
        self.0.cache_map(inputs).map_err(|m| ctx.err(m))
    }

    fn exec<'a>(
        &'a self,
        ctx: &'a OpContext,
        _inputs: Vec<WorkerRef>,
    ) -> BoxFuture<'a, Result<Vec<WorkerRef>, SolveError>> {
        Box::pin(async move {
            let (_, _, _, pull) = self.fields()?;
            let top = self.unpack(ctx, pull).await?;
            Ok(vec![WorkerRef::Snapshot(top)])
        })
    }
}

pub(crate) struct LocalOp(pub(crate) Base);

impl Op<WorkerRef> for LocalOp {
    fn prepare<'a>(&'a self, ctx: &'a OpContext) -> BoxFuture<'a, Result<Prepared<WorkerRef>, SolveError>> {
        Box::pin(async move {
            let LlbOp::Source(SourceOp::Local { name, include_patterns, exclude_patterns, .. }) = &self.0.vertex.op
            else {
                return Err(SolveError::Internal("not a local source".into()));
            };
            let source = self
                .0
                .session
                .locals
                .get(name)
                .ok_or_else(|| SolveError::MissingLocal { step: ctx.label().to_string(), name: name.clone() })?;
            let status = |what: &str, current: u64, total: Option<u64>| ctx.status(what, current, total);
            let path = source
                .directory(include_patterns, exclude_patterns, &status)
                .await
                .map_err(|e| ctx.err(format!("context {name:?}: {}", error_chain(&e))))?;
            let dir = SourceDir::local(path, include_patterns.clone(), exclude_patterns.clone());
            Ok(Prepared { ready: Some(vec![WorkerRef::Local(dir)]), ..Prepared::default() })
        })
    }

    fn cache_map(&self, ctx: &OpContext, inputs: &[Option<&WorkerRef>]) -> Result<CacheMap, SolveError> {
        self.0.cache_map(inputs).map_err(|m| ctx.err(m))
    }

    fn exec<'a>(
        &'a self,
        ctx: &'a OpContext,
        _inputs: Vec<WorkerRef>,
    ) -> BoxFuture<'a, Result<Vec<WorkerRef>, SolveError>> {
        Box::pin(async move { Err(SolveError::Internal(format!("local source {} reached execution", ctx.vertex()))) })
    }
}
