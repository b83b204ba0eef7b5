//! File ops (COPY, ADD, WORKDIR, heredoc files): for each output, an active snapshot on the chain's
//! base, the inputs it reads mounted read-only (local sources read in place with their filters), then
//! [`fileop::run_chain`] and a commit.

use llb::FileOp;

use super::{snapshot_of, Snap, Step};
use crate::error::SolveError;
use crate::fileop::{self, SourceDir};
use crate::scheduler::Ref;

/// Runs a file op.
pub(crate) fn run(step: &Step<'_>, f: &FileOp, inputs: &[Ref]) -> Result<Vec<Ref>, SolveError> {
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
                Ref::Local(sd) => sd.clone(),
                Ref::Snapshot(s) => {
                    let mut view = Snap::view(step, s.as_deref(), "file-src")?;
                    let path = view.mount(step)?;
                    views.push(view);
                    SourceDir::plain(path)
                }
            });
        }
        fileop::run_chain(f, o, &dest_dir, &dirs).map_err(|e| step.err(e))?;
        drop(views);
        outputs.push(Ref::Snapshot(Some(dest.commit(step, &o.to_string())?)));
    }
    Ok(outputs)
}
