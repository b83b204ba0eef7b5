//! File ops (COPY, ADD, WORKDIR, heredoc files): for each output, an active snapshot on the chain's
//! base, the inputs it reads mounted read-only (local sources read in place with their filters), then
//! [`fileop::run_chain`] and a commit. Blocking, on the blocking pool.

use llb::{FileOp as LlbFile, Op as LlbOp};

use super::snap::Step;
use super::{blocking, snapshot_of, Base, Snap, WorkerRef};
use crate::error::SolveError;
use crate::fileop::{self, Donor, DonorRecord, Reuse, SourceDir};
use crate::op::{BoxFuture, CacheMap, Op, OpContext};
use snapshotter::redb::TableDefinition;
use snapshotter::snapshot::{ApplyTarget, DiffSource, Kind};

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
        let donor_key = format!("{}/{o}", ctx.vertex());
        let mut reuse = reuse_for(step, &dest, &donor_key);
        fileop::run_chain(f, o, &dest_dir, &dirs, reuse.as_mut()).map_err(|e| step.err(e))?;
        drop(views);
        // Nothing is committed for a step that was cancelled: the guard removes the snapshot.
        ctx.check_cancelled()?;
        let reuse = reuse.filter(|r| r.active);
        let mut record = None;
        if let Some(mut r) = reuse {
            // Links go into the upper directory, which must not change under a mounted overlay.
            dest.unmount(step)?;
            r.finish().map_err(|e| step.err(e))?;
            record = Some(r.into_record());
        }
        let name = dest.commit(step, &o.to_string())?;
        if let Some(files) = record.filter(|f| !f.is_empty()) {
            // Only an optimisation for the next run: a record that cannot be written costs a full copy then.
            let _ = step.state.worker.meta.put(COPY_DONORS, &donor_key, &DonorRecord { snapshot: name.clone(), files });
        }
        outputs.push(WorkerRef::Snapshot(Some(name)));
    }
    Ok(outputs)
}

/// The donor records of copies (see [`fileop::reuse`]), by `<vertex>/<output>`: the committed result of
/// the last run of that copy and the source stats of its files.
pub(crate) const COPY_DONORS: TableDefinition<&str, &[u8]> = TableDefinition::new("copy_donors");

/// Reuse for the copy writing into `dest`: its own directory, and the last result of the same copy as
/// the donor when that is still a committed overlay snapshot.
fn reuse_for(step: &Step<'_>, dest: &Snap, donor_key: &str) -> Option<Reuse> {
    let sn = step.snapshotter();
    let upper = match sn.apply_target(&dest.key).ok()? {
        ApplyTarget::Upper { upper, .. } => upper,
        ApplyTarget::Tree(own) => own,
    };
    let donor = step.state.worker.meta.get::<DonorRecord>(COPY_DONORS, donor_key).ok().flatten().and_then(|rec| {
        let info = sn.stat(&rec.snapshot).ok()?;
        if info.kind != Kind::Committed {
            return None;
        }
        // Only overlay snapshots have their own directory of just the copied files.
        match sn.diff_source(&rec.snapshot).ok()? {
            DiffSource::Upper(dir) => Some(Donor { dir, files: rec.files }),
            DiffSource::Trees { .. } => None,
        }
    });
    Some(Reuse::new(upper, donor))
}
