//! Image sources: the worker's [`ImageProvider`](crate::ImageProvider) pulls what is missing and unpacks
//! each layer once; the result is the image's top snapshot. (Local sources never execute: the scheduler
//! hands their directories to the steps that read them.)

use llb::{Digest, Op, Platform, ResolveMode, SourceOp};

use super::Step;
use crate::error::SolveError;
use crate::progress::EventKind;
use crate::scheduler::{Ref, Run};

/// Unpacks the image of source vertex `d`; `pull` re-resolves its tag first. Emits pull progress.
pub(crate) fn unpack_image(run: &Run, d: Digest, pull: bool) -> Result<Option<String>, SolveError> {
    let v = run.vertex(&d);
    let Op::Source(SourceOp::Image { reference, platform, layer_limit, .. }) = &v.op else {
        return Err(SolveError::Internal(format!("{d} is not an image source")));
    };
    let platform = platform.clone().or_else(|| v.platform.clone()).unwrap_or_else(Platform::host);
    let status = |current: u64, total: Option<u64>| {
        run.emit(d, EventKind::Status { id: format!("pulling {reference}"), current, total });
    };
    let image_err = |message: String| SolveError::Image { step: run.label(&d), reference: reference.clone(), message };
    let top = run.inner.worker.images.unpack(reference, &platform, pull, &status).map_err(image_err)?;
    let Some(limit) = layer_limit else { return Ok(top) };
    // `image.layerlimit`: the snapshot of the first `limit` layers.
    let sn = &*run.inner.worker.snapshotter;
    let mut chain = Vec::new();
    let mut cur = top;
    while let Some(name) = cur {
        let info = sn.stat(&name).map_err(|e| image_err(e.to_string()))?;
        chain.push(name);
        cur = info.parent;
    }
    chain.reverse();
    Ok(match *limit as usize {
        0 => None,
        n => chain.get(n.min(chain.len()).wrapping_sub(1)).cloned(),
    })
}

/// Runs an image source vertex.
pub(crate) fn image(step: &Step<'_>) -> Result<Vec<Ref>, SolveError> {
    let run = step.run;
    if let Some(top) = run.resolved_images.get(&step.digest) {
        return Ok(vec![Ref::Snapshot(top.clone())]);
    }
    let mode_pull =
        matches!(&run.vertex(&step.digest).op, Op::Source(SourceOp::Image { resolve_mode: ResolveMode::Pull, .. }));
    let top = unpack_image(run, step.digest, run.opts.pull || mode_pull)?;
    Ok(vec![Ref::Snapshot(top)])
}
