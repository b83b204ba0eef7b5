//! `--cache-to`: the results of a build's steps as a cache artifact, pushed to a registry (only the blobs
//! it lacks: one HEAD each, in parallel, or none when an import of the same reference listed them) or
//! written to an OCI layout directory.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use registry::assemble::{chain_layers, convert_layer_media_type};
use registry::manifest::media;
use registry::Reference;
use serde_json::json;
use solver::{Link, StepRecord, StepStatus, CACHE_LINKS};

use super::import::ImportedCache;
use super::record::{CacheRecord, LayerEntry, ARTIFACT_TYPE, CONFIG_MEDIA_TYPE, VERSION};
use super::{layout, CacheTo, Mode};
use crate::error::ExportError;
use crate::Engine;

/// What an export did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    /// Cache entries (steps) exported.
    pub results: usize,
    /// Layers the record names.
    pub layers: usize,
    /// Blobs sent (uploaded or written), and their bytes.
    pub new: usize,
    pub bytes: u64,
}

/// The artifact written to the local content store, ready to push or copy.
struct Written {
    record: CacheRecord,
    /// Layers taken from imported caches (`imports` index, layers) that may not be local.
    foreign: Vec<(usize, Vec<LayerEntry>)>,
    /// The top object (index or manifest) as a descriptor, and every blob it uses with its size.
    top: oci_spec::image::Descriptor,
    blobs: Vec<(String, u64)>,
}

/// Exports the results of `steps` to `to` (layers written with SOURCE_DATE_EPOCH `epoch`, as the build's
/// images): those linked in the local cache, and those an imported cache
/// answered without unpacking (their entries are carried over; their blobs are mounted or fetched as the
/// target needs). `roots` are the build's results (one per platform): `mode=min` keeps only the steps whose
/// result is part of one (for a result that was never unpacked, the steps it came from). `explain` is carried in the record for
/// the next build's miss explanations.
pub async fn export(
    engine: &Arc<Engine>,
    steps: &[StepRecord],
    roots: &[String],
    to: &CacheTo,
    imports: &[Arc<ImportedCache>],
    epoch: Option<i64>,
    explain: Option<serde_json::Value>,
) -> Result<ExportReport, ExportError> {
    let (e, steps2, roots, to2, imports2) =
        (engine.clone(), steps.to_vec(), roots.to_vec(), to.clone(), imports.to_vec());
    let written = tokio::task::spawn_blocking(move || write(&e, &steps2, &roots, &to2, &imports2, epoch, explain))
        .await
        .map_err(|e| ExportError::Other(format!("the cache export failed: {e}")))??;
    let target = match to {
        CacheTo::Registry { reference, .. } => Some(
            Reference::parse(reference).map_err(|e| ExportError::Other(format!("--cache-to ref={reference}: {e}")))?,
        ),
        CacheTo::Local { .. } | CacheTo::Inline { .. } | CacheTo::Gha { .. } => None,
    };
    for (i, layers) in &written.foreign {
        imports[*i]
            .provide(layers, target.as_ref())
            .await
            .map_err(|m| ExportError::Other(format!("exporting cache to {}: {m}", to.describe())))?;
    }
    let sizes: HashMap<&str, u64> = written.blobs.iter().map(|(d, s)| (d.as_str(), *s)).collect();
    let results = written.record.results.len();
    let layers = written.record.layers.len();
    match to {
        CacheTo::Registry { reference, .. } => {
            let r = Reference::parse(reference)
                .map_err(|e| ExportError::Other(format!("--cache-to ref={reference}: {e}")))?;
            let report = engine
                .client
                .push(&engine.images, &written.top, &r)
                .await
                .map_err(ExportError::registry(format!("exporting cache to {reference}")))?;
            let bytes = report.uploaded.iter().map(|d| sizes.get(d.as_ref()).copied().unwrap_or(0)).sum();
            Ok(ExportReport { results, layers, new: report.uploaded.len(), bytes })
        }
        CacheTo::Inline { .. } => {
            Err(ExportError::Other("an inline cache is written into the image's config, not exported".into()))
        }
        CacheTo::Gha { scope, service, .. } => {
            let g = super::gha::GhaCache::new(service, scope)
                .map_err(|m| ExportError::Other(format!("exporting cache to {}: {m}", to.describe())))?;
            let (new, bytes) = g.push(engine, &written.top, &written.blobs).await?;
            Ok(ExportReport { results, layers, new, bytes })
        }
        CacheTo::Local { dest, tag, .. } => {
            let (e, dest, tag) = (engine.clone(), dest.clone(), tag.clone());
            let top = json!({
                "mediaType": written.top.media_type().to_string(),
                "digest": written.top.digest().to_string(),
                "size": written.top.size(),
            });
            let digests: Vec<String> = written.blobs.iter().map(|(d, _)| d.clone()).collect();
            let sizes2: HashMap<String, u64> = written.blobs.iter().cloned().collect();
            let (new, bytes) = tokio::task::spawn_blocking(move || {
                let copied = std::sync::Mutex::new(0u64);
                let copy = |d: &str, p: &std::path::Path| -> Result<(), String> {
                    let digest: oci_spec::image::Digest = d.parse().map_err(|e| format!("{d}: {e}"))?;
                    let bytes = e.images.read_blob(&digest).map_err(|e| e.to_string())?;
                    let tmp = p.with_extension("tmp");
                    std::fs::write(&tmp, &bytes)
                        .and_then(|_| std::fs::rename(&tmp, p))
                        .map_err(|e| format!("cannot write {}: {e}", p.display()))?;
                    *copied.lock().unwrap_or_else(|e| e.into_inner()) += sizes2.get(d).copied().unwrap_or(0);
                    Ok(())
                };
                let n = layout::update(&dest, &tag, top, &digests, &copy)
                    .map_err(|m| ExportError::Other(format!("exporting cache to {}: {m}", dest.display())))?;
                let bytes = *copied.lock().unwrap_or_else(|e| e.into_inner());
                Ok::<_, ExportError>((n, bytes))
            })
            .await
            .map_err(|e| ExportError::Other(format!("the cache export failed: {e}")))??;
            Ok(ExportReport { results, layers, new, bytes })
        }
    }
}

/// The snapshots of the chain ending at `top`.
fn chain_names(engine: &Engine, top: Option<&str>) -> Result<HashSet<String>, ExportError> {
    let sn = &*engine.store.snapshotter;
    let mut out = HashSet::new();
    let mut next = top.map(str::to_string);
    while let Some(name) = next {
        let info = sn.stat(&name).map_err(|e| ExportError::Other(format!("reading snapshot {name}: {e}")))?;
        next = info.parent.clone();
        out.insert(name);
    }
    Ok(out)
}

/// What a record is made of, beside the steps.
pub(crate) struct RecordOptions {
    pub(crate) mode: Mode,
    pub(crate) compression: snapshotter::diff::Compression,
    pub(crate) oci_mediatypes: bool,
    pub(crate) epoch: Option<i64>,
}

/// The record of `steps`: entries of the steps linked in the local cache (their layers written as `opts`
/// asks) and of those an imported cache answered without unpacking (their layers as the import has them,
/// listed in the second value by import). Blocking.
#[allow(clippy::type_complexity)]
pub(crate) fn build_record(
    engine: &Engine,
    steps: &[StepRecord],
    roots: &[String],
    opts: &RecordOptions,
    imports: &[Arc<ImportedCache>],
) -> Result<(CacheRecord, Vec<(usize, Vec<LayerEntry>)>), ExportError> {
    let epoch = opts.epoch;
    let mut in_result = HashSet::new();
    for root in roots {
        in_result.extend(chain_names(engine, Some(root))?);
    }
    let meta = &engine.store.meta;
    let mut record =
        CacheRecord { version: VERSION, keys: Some(solver::CACHE_KEY_VERSION.to_string()), ..Default::default() };
    let mut foreign = Vec::new();
    let mut seen = BTreeSet::new();
    // A result never unpacked has no chain here: mode=min then keeps the root step's entry.
    let root_key = steps.last().map(|s| s.key.to_string());
    for step in steps {
        if !matches!(step.status, StepStatus::Executed | StepStatus::Cached | StepStatus::Shared) {
            continue;
        }
        let key = step.key.to_string();
        if !seen.insert(key.clone()) {
            continue;
        }
        let link = meta.get::<Link>(CACHE_LINKS, &key).map_err(|e| ExportError::Other(e.to_string()))?;
        let Some(link) = link else {
            // Answered by an imported cache without unpacking: carry its entry over.
            if opts.mode == Mode::Min && Some(&key) != root_key.as_ref() {
                continue;
            }
            if let Some((i, entry)) = imports.iter().enumerate().find_map(|(i, c)| c.entry(&key).map(|e| (i, e))) {
                let mut outputs = Vec::new();
                for out in entry {
                    outputs.push(out.map(|layers| {
                        foreign.push((i, layers.clone()));
                        layers.into_iter().map(|l| record.layer_index(l)).collect()
                    }));
                }
                record.results.insert(key, outputs);
            }
            continue;
        };
        if opts.mode == Mode::Min && !link.outputs.iter().flatten().any(|s| in_result.contains(s)) {
            continue;
        }
        let mut outputs = Vec::new();
        for out in &link.outputs {
            let Some(top) = out else {
                outputs.push(None);
                continue;
            };
            let chain =
                chain_layers(&engine.images, &*engine.store.snapshotter, meta, Some(top), opts.compression, epoch)
                    .map_err(ExportError::registry(format!("computing the layers of {}", step.name)))?;
            let indexes = chain
                .into_iter()
                .map(|c| {
                    record.layer_index(LayerEntry {
                        digest: c.layer.digest.to_string(),
                        diff_id: c.layer.diff_id.to_string(),
                        size: c.layer.size,
                        media_type: convert_layer_media_type(&c.layer.media_type, opts.oci_mediatypes),
                        created: Some(c.created_at),
                        epoch,
                    })
                })
                .collect();
            outputs.push(Some(indexes));
        }
        record.results.insert(key, outputs);
    }
    Ok((record, foreign))
}

/// The record for an image's config (`--cache-to type=inline`): mode=min, its layers the image's own.
pub(crate) fn inline_record(
    engine: &Engine,
    steps: &[StepRecord],
    root: Option<&str>,
    imports: &[Arc<ImportedCache>],
    compression: snapshotter::diff::Compression,
    oci_mediatypes: bool,
    epoch: Option<i64>,
) -> Result<serde_json::Value, ExportError> {
    let opts = RecordOptions { mode: Mode::Min, compression, oci_mediatypes, epoch };
    let roots: Vec<String> = root.map(str::to_string).into_iter().collect();
    let (record, _) = build_record(engine, steps, &roots, &opts, imports)?;
    serde_json::to_value(&record).map_err(|e| ExportError::Other(e.to_string()))
}

/// Builds the record and writes config, manifest (and index) into the content store. Blocking.
fn write(
    engine: &Engine,
    steps: &[StepRecord],
    roots: &[String],
    to: &CacheTo,
    imports: &[Arc<ImportedCache>],
    epoch: Option<i64>,
    explain: Option<serde_json::Value>,
) -> Result<Written, ExportError> {
    let opts = to.options();
    let ropts =
        RecordOptions { mode: opts.mode, compression: opts.compression, oci_mediatypes: opts.oci_mediatypes, epoch };
    let (mut record, foreign) = build_record(engine, steps, roots, &ropts, imports)?;
    record.explain = explain;
    let config = serde_json::to_vec(&record).map_err(|e| ExportError::Other(e.to_string()))?;
    let config_digest = engine
        .images
        .write_bytes(&config, CONFIG_MEDIA_TYPE)
        .map_err(ExportError::registry("writing the cache record"))?;
    let manifest_type = if opts.oci_mediatypes { media::OCI_MANIFEST } else { media::DOCKER_MANIFEST };
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest.to_string(), "size": config.len()},
        "layers": record.layers.iter().map(|l| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size})).collect::<Vec<_>>(),
    });
    if opts.oci_mediatypes {
        manifest["artifactType"] = json!(ARTIFACT_TYPE);
    }
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| ExportError::Other(e.to_string()))?;
    let manifest_digest = engine
        .images
        .write_bytes(&manifest_bytes, manifest_type)
        .map_err(ExportError::registry("writing the cache manifest"))?;
    let mut blobs: Vec<(String, u64)> = vec![(config_digest.to_string(), config.len() as u64)];
    blobs.extend(record.layers.iter().map(|l| (l.digest.clone(), l.size)));
    blobs.push((manifest_digest.to_string(), manifest_bytes.len() as u64));
    let descriptor = |mt: &str, d: oci_spec::image::Digest, size: usize| {
        oci_spec::image::Descriptor::new(oci_spec::image::MediaType::from(mt), size as u64, d)
    };
    let top = if opts.image_manifest {
        descriptor(manifest_type, manifest_digest, manifest_bytes.len())
    } else {
        let index_type = if opts.oci_mediatypes { media::OCI_INDEX } else { media::DOCKER_MANIFEST_LIST };
        let mut entry =
            json!({"mediaType": manifest_type, "digest": manifest_digest.to_string(), "size": manifest_bytes.len()});
        if opts.oci_mediatypes {
            entry["artifactType"] = json!(ARTIFACT_TYPE);
        }
        let index = json!({"schemaVersion": 2, "mediaType": index_type, "manifests": [entry]});
        let index_bytes = serde_json::to_vec_pretty(&index).map_err(|e| ExportError::Other(e.to_string()))?;
        let index_digest = engine
            .images
            .write_bytes(&index_bytes, index_type)
            .map_err(ExportError::registry("writing the cache index"))?;
        blobs.push((index_digest.to_string(), index_bytes.len() as u64));
        descriptor(index_type, index_digest, index_bytes.len())
    };
    Ok(Written { record, foreign, top, blobs })
}
