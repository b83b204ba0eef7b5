//! The content ingredients of a cache key: checksums of exactly what an op reads from local sources.
//!
//! For a COPY/ADD from a local source: the selected paths ([`ChecksumCache::copy_sources`]); for an exec
//! mount of a local source: the mounted subtree; for any other use of a local source (the base of a file
//! chain, `--chown` by name, a merge): its whole filtered tree. A local source's own key covers only its
//! name and filters, so the content enters exactly the keys of the steps that read it. Checksums cover
//! names, types, modes, owners, sizes, link targets, xattrs and bytes; never a host path, inode or mtime,
//! so the same project in two checkouts, or on two machines, keys the same.

use llb::file::{FileActionKind, FileSource, UserOpt};
use llb::{Op, Vertex};

use super::WorkerRef;
use crate::context::ChecksumCache;
use crate::fileop::SourceDir;

/// Content checksums of the local sources `v` reads (`inputs[i]` is input `i` when it is ready before
/// execution), labelled by how they are read.
pub(crate) fn parts(
    v: &Vertex,
    inputs: &[Option<&WorkerRef>],
    checksums: &ChecksumCache,
) -> Result<Vec<(String, String)>, String> {
    let local = |i: usize| match inputs.get(i) {
        Some(Some(WorkerRef::Local(sd))) => Some(sd),
        _ => None,
    };
    let tree = |sd: &SourceDir, path: &str| checksums.tree(sd, path).map(|d| d.to_string()).map_err(|e| e.to_string());
    let n = v.inputs.len();
    let mut parts = Vec::new();
    match &v.op {
        Op::File(f) => {
            let mut whole: Vec<usize> = Vec::new();
            for (a, action) in f.actions.iter().enumerate() {
                if let FileSource::Input(i) = FileSource::resolve(action.input, n) {
                    whole.push(i);
                }
                let owner = match &action.action {
                    FileActionKind::Copy(c) => {
                        if let FileSource::Input(i) = FileSource::resolve(action.secondary_input, n) {
                            if let Some(sd) = local(i) {
                                let sum = checksums.copy_sources(sd, c).map_err(|e| e.to_string())?;
                                parts.push((format!("copy.{a}"), sum.to_string()));
                            }
                        }
                        c.owner.as_ref()
                    }
                    FileActionKind::Mkdir(m) => m.owner.as_ref(),
                    FileActionKind::Mkfile(m) => m.owner.as_ref(),
                    FileActionKind::Symlink(s) => s.owner.as_ref(),
                    FileActionKind::Rm(_) => None,
                };
                for u in owner.iter().flat_map(|o| [&o.user, &o.group]).flatten() {
                    if let UserOpt::ByName { input, .. } = u {
                        if let FileSource::Input(i) = FileSource::resolve(*input, n) {
                            whole.push(i);
                        }
                    }
                }
            }
            whole.sort_unstable();
            whole.dedup();
            for i in whole {
                if let Some(sd) = local(i) {
                    parts.push((format!("input.{i}"), tree(sd, "/")?));
                }
            }
        }
        Op::Exec(e) => {
            for (m, mount) in e.mounts.iter().enumerate() {
                if let Some(sd) = mount.input.and_then(local) {
                    let sel = if mount.selector.is_empty() { "/" } else { mount.selector.as_str() };
                    parts.push((format!("mount.{m}"), tree(sd, sel)?));
                }
            }
        }
        Op::Merge(_) | Op::Diff(_) => {
            for i in 0..n {
                if let Some(sd) = local(i) {
                    parts.push((format!("input.{i}"), tree(sd, "/")?));
                }
            }
        }
        Op::Source(_) => {}
    }
    Ok(parts)
}
