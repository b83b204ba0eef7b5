//! Cache keys, computed top-down without executing anything (BuildKit's `CacheMap`).
//!
//! key(v) = sha256 of the vertex's [`cache_identity`](llb::Vertex::cache_identity) with every input
//! digest replaced by that input's key, followed by content checksums of the local sources the vertex
//! reads: for a COPY/ADD from a local source exactly the selected paths
//! ([`ChecksumCache::copy_sources`]), for an exec mount of a local source the mounted subtree, for any
//! other use of a local source its whole (filtered) tree. Remote sources are keyed by content: an http
//! source by its checksum or by what the URL serves now, a git source by the commit its reference
//! names now (resolved before keying, see `ops::resolve_source`). A local source's own key covers only its name
//! and filters, so the content enters exactly the keys of the steps that read it. Copies from another
//! stage use that stage's key. Secrets never enter a key: ops carry secret ids only.

use std::collections::HashMap;

use llb::file::{FileActionKind, FileSource, UserOpt};
use llb::{Definition, Digest, Op, Vertex};
use sha2::{Digest as _, Sha256};

use crate::context::ChecksumCache;
use crate::error::SolveError;
use crate::fileop::SourceDir;
use crate::graph::{vertex_label, Graph};

const KEY_VERSION: &[u8] = b"rbuild.cachekey.v1\n";

/// What key computation needs to know beyond the definition.
pub(crate) struct KeyInputs<'a> {
    /// Local source vertices and the directories they stand for.
    pub locals: &'a HashMap<Digest, SourceDir>,
    /// Image sources resolved before keying (`--pull` of an unpinned reference): their top snapshot.
    pub resolved_images: &'a HashMap<Digest, Option<String>>,
    pub checksums: &'a ChecksumCache,
    /// Remote sources resolved before keying (http without a checksum, git).
    pub sources: &'a HashMap<Digest, crate::ops::ResolvedSource>,
}

/// The key of every vertex in `graph`.
pub(crate) fn compute(
    def: &Definition,
    graph: &Graph,
    inputs: &KeyInputs<'_>,
) -> Result<HashMap<Digest, Digest>, SolveError> {
    let mut keys: HashMap<Digest, Digest> = HashMap::new();
    for d in graph.order() {
        let v = &def.vertices[d];
        if let Some(k) = crate::ops::source_key(&v.op, inputs.sources.get(d)) {
            keys.insert(*d, k);
            continue;
        }
        let step = || vertex_label(v, def.metadata_of(d));
        let parts = content_parts(v, inputs).map_err(|message| SolveError::Step { step: step(), message })?;
        let mut extra = parts;
        if let Some(top) = inputs.resolved_images.get(d) {
            extra.push(("resolved".into(), top.clone().unwrap_or_default()));
        }
        keys.insert(*d, key_of(v, &keys, &extra));
    }
    Ok(keys)
}

/// sha256 over the blanked vertex with input keys and the extra parts.
fn key_of(v: &Vertex, keys: &HashMap<Digest, Digest>, extra: &[(String, String)]) -> Digest {
    let mut id = v.cache_identity();
    for input in &mut id.inputs {
        // Inputs are keyed before their consumers (topological order).
        input.digest = keys[&input.digest];
    }
    let mut h = Sha256::new();
    h.update(KEY_VERSION);
    h.update(id.canonical_bytes());
    for (label, value) in extra {
        h.update(b"\n");
        h.update(label.as_bytes());
        h.update(b"=");
        h.update(value.as_bytes());
    }
    Digest::of(&h.finalize())
}

/// Content checksums of the local sources `v` reads, labelled by how they are read.
fn content_parts(v: &Vertex, inputs: &KeyInputs<'_>) -> Result<Vec<(String, String)>, String> {
    let local = |i: usize| v.inputs.get(i).and_then(|inp| inputs.locals.get(&inp.digest));
    let tree =
        |sd: &SourceDir, path: &str| inputs.checksums.tree(sd, path).map(|d| d.to_string()).map_err(|e| e.to_string());
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
                                let sum = inputs.checksums.copy_sources(sd, c).map_err(|e| e.to_string())?;
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

#[cfg(test)]
mod tests {
    use llb::{DefinitionBuilder, ExecOp, Metadata, SourceOp};

    use super::*;

    fn keys_of(def: &Definition) -> HashMap<Digest, Digest> {
        let dir = tempfile::tempdir().unwrap();
        let meta = std::sync::Arc::new(snapshotter::meta::MetaDb::open(dir.path().join("m.redb")).unwrap());
        let checksums = ChecksumCache::new(meta);
        let (locals, resolved, sources) = (HashMap::new(), HashMap::new(), HashMap::new());
        let g = Graph::load(def).unwrap();
        let inputs =
            KeyInputs { locals: &locals, resolved_images: &resolved, checksums: &checksums, sources: &sources };
        compute(def, &g, &inputs).unwrap()
    }

    fn run_on_image(reference: &str, args: &[&str], proxy: Option<&str>, description: &str) -> (Definition, Digest) {
        let mut b = DefinitionBuilder::new();
        let base = b.source(SourceOp::image(reference, None), None, Metadata::default()).unwrap();
        let mut e = ExecOp::new(args.iter().map(|s| s.to_string()).collect(), Some(0));
        e.meta.proxy_env = proxy.map(|p| llb::ProxyEnv { http_proxy: Some(p.into()), ..llb::ProxyEnv::default() });
        let run = b.add_op(Op::Exec(e), &[base], None, Metadata::described(description)).unwrap();
        (b.finish(Some(run)).unwrap(), run.digest)
    }

    #[test]
    fn keys_ignore_metadata_and_proxy_settings_but_not_commands_or_inputs() {
        let (a, ra) = run_on_image("docker.io/library/busybox:latest", &["true"], None, "one");
        let (b, rb) = run_on_image("docker.io/library/busybox:latest", &["true"], Some("http://p"), "two");
        let (c, rc) = run_on_image("docker.io/library/busybox:latest", &["false"], None, "one");
        let (d, rd) = run_on_image("docker.io/library/alpine:latest", &["true"], None, "one");
        let (ka, kb, kc, kd) = (keys_of(&a)[&ra], keys_of(&b)[&rb], keys_of(&c)[&rc], keys_of(&d)[&rd]);
        assert_ne!(ra, rb, "proxy settings are part of the digest");
        assert_eq!(ka, kb, "but not of the cache key");
        assert_ne!(ka, kc);
        assert_ne!(ka, kd);
    }
}
