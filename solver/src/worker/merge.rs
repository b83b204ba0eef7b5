//! Merge ops (`COPY --link`): the first input's snapshot as the base, then every further input's
//! snapshot chain re-applied on top, one snapshot per layer so the layers stay separate in the image.

use std::io::{BufReader, Seek, SeekFrom};

use snapshotter::apply::apply_layer;
use snapshotter::diff::{write_layer, Compression, DiffOptions};

use super::snap::Step;
use super::{blocking, snapshot_of, Base, Snap, WorkerRef};
use crate::error::SolveError;
use crate::op::{BoxFuture, CacheMap, Op, OpContext};

pub(crate) struct MergeOp(pub(crate) Base);

impl Op<WorkerRef> for MergeOp {
    fn cache_map(&self, ctx: &OpContext, inputs: &[Option<&WorkerRef>]) -> Result<CacheMap, SolveError> {
        self.0.cache_map(inputs).map_err(|m| ctx.err(m))
    }

    fn exec<'a>(
        &'a self,
        ctx: &'a OpContext,
        inputs: Vec<WorkerRef>,
    ) -> BoxFuture<'a, Result<Vec<WorkerRef>, SolveError>> {
        let (state, owned) = (self.0.state.clone(), ctx.clone());
        Box::pin(async move {
            let inputs = super::materialize(ctx, inputs).await?;
            blocking(move || {
                let ctx = owned;
                let key = ctx.key().ok_or_else(|| SolveError::Internal("a merge ran without a key".into()))?;
                run(&Step { state: &state, label: ctx.label(), key }, &ctx, &inputs)
            })
            .await
        })
    }
}

/// The committed chain ending at `top`, base first.
fn chain(step: &Step<'_>, top: &str) -> Result<Vec<(String, Option<String>)>, SolveError> {
    let mut out = Vec::new();
    let mut cur = Some(top.to_string());
    while let Some(name) = cur {
        let info = step.snapshotter().stat(&name).map_err(|e| step.err(format!("cannot read snapshot {name}: {e}")))?;
        cur = info.parent.clone();
        out.push((name, info.parent));
    }
    out.reverse();
    Ok(out)
}

/// Runs a merge op.
fn run(step: &Step<'_>, ctx: &OpContext, inputs: &[WorkerRef]) -> Result<Vec<WorkerRef>, SolveError> {
    let snaps = inputs.iter().map(|r| snapshot_of(step, r)).collect::<Result<Vec<_>, _>>()?;
    let Some((first, rest)) = snaps.split_first() else { return Ok(vec![WorkerRef::Snapshot(None)]) };
    let sn = step.snapshotter();
    let mut top = first.clone();
    let mut n = 0;
    for layer_top in rest.iter().flatten() {
        for (layer, parent) in chain(step, layer_top)? {
            if parent == top {
                // The layer already sits on exactly this base (e.g. a merge onto scratch): reuse it.
                top = Some(layer);
                continue;
            }
            let source = sn.diff_source(&layer).map_err(|e| step.err(format!("cannot read layer {layer}: {e}")))?;
            let mut tar = tempfile::tempfile_in(step.mount_dir()?)
                .map_err(|e| step.err(format!("cannot create a temporary layer file: {e}")))?;
            let opts = DiffOptions { compression: Compression::None, source_date_epoch: None };
            write_layer(&source, &mut tar, opts).map_err(|e| step.err(format!("cannot diff layer {layer}: {e}")))?;
            tar.seek(SeekFrom::Start(0)).map_err(|e| step.err(format!("cannot read back layer {layer}: {e}")))?;
            let snap = Snap::prepare(step, top.as_deref(), "merge")?;
            ctx.check_cancelled()?;
            let target = sn.apply_target(&snap.key).map_err(|e| step.err(e))?;
            apply_layer(&target, BufReader::new(tar))
                .map_err(|e| step.err(format!("cannot apply layer {layer} onto the merge: {e}")))?;
            top = Some(snap.commit(step, &format!("m{n}"))?);
            n += 1;
        }
    }
    Ok(vec![WorkerRef::Snapshot(top)])
}
