//! `--cache-from`: a cache artifact read as a [`CacheStore`] the solver asks after its own. Importing reads
//! the manifest and the record only; a hit fetches the chain's blobs (from the registry, or the layout
//! directory) into the content store, verified against their digests, and unpacks them as snapshots named
//! by chainID. A blob that is gone or does not verify makes the hit a miss: the step runs.

use std::path::PathBuf;
use std::sync::Arc;

use llb::Digest;
use oci_spec::image::{Descriptor, MediaType};
use registry::manifest::{media, Parsed, RawManifest};
use registry::unpack::PulledImage;
use registry::Reference;
use snapshotter::content::{ContentWriter, Ingester};
use solver::op::{BoxFuture, CacheStore, Hit};
use solver::{SolveError, WorkerRef};

use super::record::{CacheRecord, CONFIG_MEDIA_TYPE};
use super::{layout, CacheFrom};
use crate::progress::{CacheEvent, Event, EventSink};
use crate::Engine;

enum Source {
    Registry(Reference),
    Local(PathBuf),
}

/// An imported cache.
pub struct ImportedCache {
    name: String,
    record: CacheRecord,
    source: Source,
    engine: Arc<Engine>,
    events: EventSink,
    /// One chain at a time: chains share their base layers.
    unpacking: tokio::sync::Mutex<()>,
}

impl ImportedCache {
    /// The entries the record holds.
    pub fn results(&self) -> usize {
        self.record.results.len()
    }

    /// The blobs the record names (an export to the same place need not send them again).
    pub fn blobs(&self) -> Vec<String> {
        self.record.layers.iter().map(|l| l.digest.clone()).collect()
    }
}

fn oci_digest(s: &str) -> Result<oci_spec::image::Digest, String> {
    s.parse().map_err(|e| format!("invalid digest {s}: {e}"))
}

/// Reads the manifest and the record of `from`.
pub async fn import(engine: &Arc<Engine>, from: &CacheFrom, events: EventSink) -> Result<ImportedCache, String> {
    let name = from.describe();
    let (record, source) = match from {
        CacheFrom::Registry { reference } => {
            let r = Reference::parse(reference).map_err(|e| e.to_string())?;
            let client = &engine.client;
            let (ep, top) = client.resolve(&r).await.map_err(|e| e.to_string())?;
            let manifest = match top.parse().map_err(|e| e.to_string())? {
                Parsed::Manifest(m) => *m,
                Parsed::Index(ix) => {
                    let entry = ix
                        .manifests()
                        .iter()
                        .find(|d| media::is_manifest(d.media_type().as_ref()))
                        .ok_or_else(|| format!("{reference} is an index without a manifest"))?;
                    let raw =
                        client.fetch_manifest(&ep, &r, entry.digest().as_ref()).await.map_err(|e| e.to_string())?;
                    match raw.parse().map_err(|e| e.to_string())? {
                        Parsed::Manifest(m) => *m,
                        Parsed::Index(_) => {
                            return Err(format!("{reference} nests indexes; it is not an rbuild cache"))
                        }
                    }
                }
            };
            let config = manifest.config().clone();
            check_config_type(&config, reference)?;
            let pinned = r.digest_only(top.digest.clone());
            client
                .fetch_missing(&pinned, std::slice::from_ref(&config), &engine.images, None)
                .await
                .map_err(|e| e.to_string())?;
            let bytes = engine.images.read_blob(config.digest()).map_err(|e| e.to_string())?;
            (CacheRecord::parse(&bytes)?, Source::Registry(pinned))
        }
        CacheFrom::Local { src, tag } => {
            let (src2, tag) = (src.clone(), tag.clone());
            let record = tokio::task::spawn_blocking(move || read_local(&src2, &tag))
                .await
                .map_err(|e| format!("reading the cache failed: {e}"))??;
            (record, Source::Local(src.clone()))
        }
    };
    Ok(ImportedCache { name, record, source, engine: engine.clone(), events, unpacking: tokio::sync::Mutex::new(()) })
}

fn check_config_type(config: &Descriptor, what: &str) -> Result<(), String> {
    if config.media_type().as_ref() != CONFIG_MEDIA_TYPE {
        return Err(format!(
            "{what} is not an rbuild cache (its config is {}, not {CONFIG_MEDIA_TYPE})",
            config.media_type()
        ));
    }
    Ok(())
}

/// The record of the layout at `dir`, tag `tag`. Blocking.
fn read_local(dir: &std::path::Path, tag: &str) -> Result<CacheRecord, String> {
    let read = |digest: &str| {
        let p = layout::blob_path(dir, digest)?;
        std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let top = layout::lookup(dir, tag)?;
    let digest = top["digest"].as_str().ok_or("index.json entry without a digest")?;
    let media_type = top["mediaType"].as_str().unwrap_or(media::OCI_MANIFEST).to_string();
    let mut raw = RawManifest::new(Some(&media_type), read(digest)?);
    if let Parsed::Index(ix) = raw.parse().map_err(|e| e.to_string())? {
        let entry = ix.manifests().first().ok_or("the cache index is empty")?;
        raw = RawManifest::new(Some(entry.media_type().as_ref()), read(entry.digest().as_ref())?);
    }
    let Parsed::Manifest(m) = raw.parse().map_err(|e| e.to_string())? else {
        return Err("the cache index nests another index".into());
    };
    check_config_type(m.config(), &dir.display().to_string())?;
    CacheRecord::parse(&read(m.config().digest().as_ref())?)
}

impl ImportedCache {
    fn warn(&self, key: &Digest, message: String) {
        let e = CacheEvent::Miss { from: self.name.clone(), key: key.to_string(), error: message };
        let _ = self.events.send(Event::Cache(e));
    }

    /// Makes a chain available as snapshots; returns the top one.
    async fn unpack(&self, chain: &[usize]) -> Result<Option<String>, String> {
        let layers = chain.iter().map(|i| &self.record.layers[*i]).collect::<Vec<_>>();
        let descs = layers
            .iter()
            .map(|l| Ok(Descriptor::new(MediaType::from(l.media_type.as_str()), l.size, oci_digest(&l.digest)?)))
            .collect::<Result<Vec<_>, String>>()?;
        let diff_ids = layers.iter().map(|l| oci_digest(&l.diff_id)).collect::<Result<Vec<_>, String>>()?;
        let _one = self.unpacking.lock().await;
        let e = &self.engine;
        match &self.source {
            Source::Registry(r) => {
                e.client.fetch_missing(r, &descs, &e.images, None).await.map_err(|e| e.to_string())?;
            }
            Source::Local(dir) => {
                let (e, dir, descs) = (e.clone(), dir.clone(), descs.clone());
                tokio::task::spawn_blocking(move || copy_in(&e, &dir, &descs))
                    .await
                    .map_err(|e| format!("copying cache blobs failed: {e}"))??;
            }
        }
        let (e, name) = (e.clone(), self.name.clone());
        let pulled = PulledImage::new(name, descs, diff_ids);
        tokio::task::spawn_blocking(move || registry::unpack::unpack_pulled(&e.images, &*e.store.snapshotter, &pulled))
            .await
            .map_err(|e| format!("unpacking cache layers failed: {e}"))?
            .map_err(|e| e.to_string())
    }
}

/// Copies the blobs a layout holds into the content store, each verified against its digest. Blocking.
fn copy_in(engine: &Engine, dir: &std::path::Path, descs: &[Descriptor]) -> Result<(), String> {
    for d in descs {
        if engine.images.has_blob(d.digest()).map_err(|e| e.to_string())? {
            continue;
        }
        let p = layout::blob_path(dir, d.digest().as_ref())?;
        let mut f = std::fs::File::open(&p).map_err(|e| format!("blob {} is gone: {e}", d.digest()))?;
        let content = engine.images.content();
        let mut w = content.writer(&format!("cache-{}", d.digest()), Some(d.size())).map_err(|e| e.to_string())?;
        std::io::copy(&mut f, &mut w).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        w.commit(Some(d.size()), Some(d.digest())).map_err(|e| format!("blob {}: {e}", d.digest()))?;
    }
    Ok(())
}

impl CacheStore<WorkerRef> for ImportedCache {
    fn load<'a>(&'a self, key: &'a Digest) -> BoxFuture<'a, Result<Option<Hit<WorkerRef>>, SolveError>> {
        Box::pin(async move {
            let Some(outputs) = self.record.results.get(&key.to_string()) else { return Ok(None) };
            let mut refs = Vec::new();
            for out in outputs {
                let top = match out {
                    None => None,
                    Some(chain) => match self.unpack(chain).await {
                        Ok(top) => top,
                        Err(m) => {
                            // A blob that is gone or does not verify: a miss, and the step runs.
                            self.warn(key, m);
                            return Ok(None);
                        }
                    },
                };
                refs.push(WorkerRef::Snapshot(top));
            }
            Ok(Some(Hit { outputs: refs, source: Some(self.name.clone()) }))
        })
    }

    fn contains<'a>(&'a self, key: &'a Digest) -> BoxFuture<'a, Result<bool, SolveError>> {
        Box::pin(async move { Ok(self.record.results.contains_key(&key.to_string())) })
    }

    fn save<'a>(&'a self, _key: &'a Digest, _results: &'a [WorkerRef]) -> BoxFuture<'a, Result<(), SolveError>> {
        // Read only: results go to this machine's cache, and to a `--cache-to` at the end.
        Box::pin(async { Ok(()) })
    }
}
