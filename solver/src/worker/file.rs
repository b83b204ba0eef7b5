//! File ops (COPY, ADD, WORKDIR, heredoc files): for each output, an active snapshot on the chain's
//! base, the inputs it reads mounted read-only (local sources read in place with their filters), then
//! [`fileop::run_chain`] and a commit. Blocking, on the blocking pool.

use llb::{FileOp as LlbFile, Op as LlbOp};

use super::snap::Step;
use super::{blocking, snapshot_of, Base, Snap, WorkerRef};
use crate::error::SolveError;
use crate::fileop::{self, SourceDir};
use crate::op::{BoxFuture, CacheMap, Op, OpContext};

pub(crate) struct FileOp(pub(crate) Base);

impl Op<WorkerRef> for FileOp {
    fn cache_map(&self, ctx: &OpContext, inputs: &[Option<&WorkerRef>]) -> Result<CacheMap, SolveError> {
        self.0.cache_map(inputs).map_err(|m| ctx.err(m))
    }

    fn exec<'a>(
        &'a self,
        ctx: &'a OpContext,
        inputs: Vec<WorkerRef>,
    ) -> BoxFuture<'a, Result<Vec<WorkerRef>, SolveError>> {
        let (state, vertex, owned) = (self.0.state.clone(), self.0.vertex.clone(), ctx.clone());
        Box::pin(async move {
            let inputs = super::materialize(ctx, inputs).await?;
            blocking(move || {
                let ctx = owned;
                let LlbOp::File(f) = &vertex.op else { return Err(SolveError::Internal("not a file op".into())) };
                let key = ctx.key().ok_or_else(|| SolveError::Internal("a file op ran without a key".into()))?;
                run(&Step { state: &state, label: ctx.label(), key }, &ctx, f, &inputs)
            })
            .await
        })
    }
}

fn run(step: &Step<'_>, ctx: &OpContext, f: &LlbFile, inputs: &[WorkerRef]) -> Result<Vec<WorkerRef>, SolveError> {
    let n = inputs.len();
    let mut outputs = Vec::with_capacity(f.num_outputs());
    for o in 0..f.num_outputs() {
        let base = fileop::chain_base(f, n, o).map_err(|e| step.err(e))?;
        let sources = fileop::chain_sources(f, n, o).map_err(|e| step.err(e))?;
        let parent = match base {
            Some(i) => snapshot_of(step, &inputs[i])?,
            None => None,
        };
        let mut dest = Snap::prepare(step, parent.as_deref(), "file")?;
        let dest_dir = dest.mount(step)?;
        let mut views = Vec::new();
        let mut dirs: Vec<Option<SourceDir>> = vec![None; n];
        for i in sources {
            dirs[i] = Some(match &inputs[i] {
                WorkerRef::Local(sd) => sd.clone(),
                WorkerRef::Lazy(_) => return Err(SolveError::Internal("a lazy input reached a file op".into())),
                WorkerRef::Snapshot(s) => {
                    let mut view = Snap::view(step, s.as_deref(), "file-src")?;
                    let path = view.mount(step)?;
                    views.push(view);
                    SourceDir::plain(path)
                }
            });
        }
        fileop::run_chain(f, o, &dest_dir, &dirs).map_err(|e| step.err(e))?;
        drop(views);
        // Nothing is committed for a step that was cancelled: the guard removes the snapshot.
        ctx.check_cancelled()?;
        outputs.push(WorkerRef::Snapshot(Some(dest.commit(step, &o.to_string())?)));
    }
    Ok(outputs)
}
